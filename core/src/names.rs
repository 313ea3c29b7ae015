//! File names: what a name may be, the one form it travels and is stored
//! in, and how it is shown on a terminal.
//!
//! Names that look the same must be the same name, and a name must not
//! hide anything from the person reading it. So:
//!
//! - **One form.** A name is stored and compared in Unicode NFC. Clients
//!   normalize what they send ([`normalize`]); servers and peers refuse a
//!   name that is not NFC ([`check_name`]), so `café` typed with a
//!   precomposed `é` and with `e` + U+0301 is one name.
//! - **Nothing invisible.** Control characters (Cc), format characters (Cf:
//!   zero-width spaces and joiners, bidirectional controls, the BOM, the
//!   soft hyphen, invisible operators, tag characters, …), line and
//!   paragraph separators, noncharacters, the other default-ignorable
//!   fillers (U+034F, Hangul fillers, …) and spaces other than U+0020 and
//!   the ideographic space U+3000 are refused, the error naming the
//!   character as U+XXXX.
//! - **Emoji stay possible.** Variation selectors are accepted right after
//!   a character they can vary (not at the start, not after an ASCII
//!   letter, not after another selector); U+200D ZERO WIDTH JOINER only
//!   between two pictographic characters, as in 👩‍💻.
//! - **No invisible ends.** A name does not start or end with a space, and
//!   does not start with a combining mark (which would join whatever a
//!   terminal printed before it).
//!
//! Names shown on a terminal go through [`shown`], which escapes whatever
//! [`check_name`] would refuse: names stored before these rules, or sent by
//! something that does not check, are shown with their hidden characters
//! visible as `\u{…}`.

use unicode_normalization::char::is_combining_mark;
use unicode_normalization::{is_nfc, UnicodeNormalization};

/// Longest file name, in bytes.
pub const MAX_NAME: usize = 255;

/// Longest path (a name inside folders: `photos/2024/a.jpg`), in bytes:
/// Linux's `PATH_MAX` less room for the directory a `get -r` writes into.
pub const MAX_PATH: usize = 1024;

/// Most components a path may have: deep enough for real trees, shallow
/// enough that walking a path's folders (`Catalogue::can_read` looks at
/// each for a folder share) stays cheap.
pub const MAX_DEPTH: usize = 32;

/// `raw` in Unicode NFC, the form names are sent, stored and compared in.
/// Clients call this on every name a person gives them.
pub fn normalize(raw: &str) -> String {
    if is_nfc(raw) {
        raw.to_string()
    } else {
        raw.nfc().collect()
    }
}

/// Why `name` cannot name a file, if it cannot. Names are single path
/// components (no separators, no `.` or `..`), in Unicode NFC, with no
/// control or invisible characters (see the module's documentation). A
/// name shared with someone else is shown on their terminal, where U+202E
/// would make `gpj.exe` read as `exe.jpg` and U+200B would make two names
/// look alike.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("the name is empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("names are at most {MAX_NAME} bytes"));
    }
    if name == "." || name == ".." {
        return Err(format!("{name:?} is not a file name"));
    }
    let chars: Vec<char> = name.chars().collect();
    for (i, &c) in chars.iter().enumerate() {
        if let Some(what) = refused(c) {
            return Err(format!("names may not contain {} ({what})", code(c)));
        }
        let before = i.checked_sub(1).map(|j| chars[j]);
        if is_variation_selector(c) && !before.is_some_and(takes_variation) {
            return Err(format!(
                "names may not contain {} (a variation selector) except right after a \
                 symbol or letter it varies",
                code(c)
            ));
        }
        if c == ZWJ && !(before.is_some_and(joins) && chars.get(i + 1).is_some_and(|n| joins(*n))) {
            return Err(format!(
                "names may not contain {} (ZERO WIDTH JOINER) except between two emoji",
                code(c)
            ));
        }
    }
    let (first, last) = (chars[0], chars[chars.len() - 1]);
    if let Some(c) = [first, last].into_iter().find(|c| c.is_whitespace()) {
        return Err(format!(
            "names may not start or end with a space ({})",
            code(c)
        ));
    }
    if is_combining_mark(first) {
        return Err(format!(
            "names may not start with a combining mark ({})",
            code(first)
        ));
    }
    if !is_nfc(name) {
        return Err(
            "the name is not in Unicode NFC form; clients normalize names \
                    before sending them"
                .into(),
        );
    }
    Ok(())
}

/// Why `path` cannot name a file, if it cannot. A path is one name
/// ([`check_name`]) or several joined by `/`: the folders it is in, then
/// its own name. So no leading or trailing `/`, no empty component (`a//b`),
/// no `.` or `..`, at most [`MAX_PATH`] bytes and [`MAX_DEPTH`] components.
/// Servers check every uploaded name with this; clients check every name a
/// server lists before making it a local path.
pub fn check_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("the name is empty".into());
    }
    if path.len() > MAX_PATH {
        return Err(format!("paths are at most {MAX_PATH} bytes"));
    }
    if path.starts_with('/') {
        return Err("a name may not start with / (names are relative to your files)".into());
    }
    if path.ends_with('/') {
        return Err("a name may not end with / (name the file, or the folder without it)".into());
    }
    let mut depth = 0;
    for component in path.split('/') {
        depth += 1;
        if depth > MAX_DEPTH {
            return Err(format!("paths are at most {MAX_DEPTH} folders deep"));
        }
        if component.is_empty() {
            return Err("a name may not hold an empty folder name (`//`)".into());
        }
        check_name(component).map_err(|reason| match path.contains('/') {
            true => format!("{reason} (in \"{}\")", shown(component)),
            false => reason,
        })?;
    }
    Ok(())
}

/// The folders `path` is in, innermost last: `a/b/c` is in `a` and `a/b`.
pub fn folders_of(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Is `path` inside folder `folder` (at any depth)?
pub fn is_under(path: &str, folder: &str) -> bool {
    path.len() > folder.len() + 1
        && path.starts_with(folder)
        && path.as_bytes()[folder.len()] == b'/'
}

/// `name` fit for a terminal: every character [`check_name`] refuses
/// wherever it stands (but `/`, which is visible), a space at either end
/// and a combining mark at the start escaped as `\u{hex}`, and a backslash
/// as `\\`, so that what is shown reads back as one name. Names that pass
/// `check_name` are shown as they are.
pub fn shown(name: &str) -> String {
    let count = name.chars().count();
    let mut out = String::with_capacity(name.len());
    for (i, c) in name.chars().enumerate() {
        let at_end = i == 0 || i + 1 == count;
        if c == '\\' {
            out.push_str("\\\\");
        } else if (c != '/' && refused(c).is_some())
            || (at_end && c.is_whitespace())
            || (i == 0 && is_combining_mark(c))
        {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

const ZWJ: char = '\u{200D}';

/// `c` as U+XXXX, with the character itself when it is visible.
fn code(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("U+{:04X} {c:?}", c as u32)
    } else {
        format!("U+{:04X}", c as u32)
    }
}

/// What `c` is, if it is never allowed in a name.
fn refused(c: char) -> Option<&'static str> {
    Some(match c {
        '/' | '\\' => "a path separator",
        c if c.is_control() => "a control character",
        c if is_bidi_control(c) => "a bidirectional control",
        // Allowed in context (`check_name`).
        ZWJ => return None,
        c if is_format(c) => "an invisible format character",
        '\u{2028}' | '\u{2029}' => "a line or paragraph separator",
        '\u{00A0}' | '\u{1680}' | '\u{2000}'..='\u{200A}' | '\u{202F}' | '\u{205F}' => {
            "a space other than U+0020"
        }
        '\u{034F}' | '\u{115F}' | '\u{1160}' | '\u{17B4}' | '\u{17B5}' | '\u{3164}'
        | '\u{FFA0}' => "an invisible filler",
        c if is_noncharacter(c) => "a Unicode noncharacter",
        // Default-ignorable code points not assigned yet: whatever they
        // become, they will not be visible.
        '\u{2065}' | '\u{FFF0}'..='\u{FFF8}' => "a reserved invisible code point",
        c if ('\u{E0000}'..='\u{E0FFF}').contains(&c) && !is_variation_selector(c) => {
            "a reserved invisible code point"
        }
        _ => return None,
    })
}

/// The Unicode bidirectional formatting characters (embeddings, overrides,
/// isolates and marks), which reorder how the rest of a line is displayed.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200E}' | '\u{200F}' | '\u{061C}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// General category Cf (format): Unicode 14 with the Egyptian hieroglyph
/// format controls U+13439–U+1343F of Unicode 15.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}'
        | '\u{0600}'..='\u{0605}'
        | '\u{061C}'
        | '\u{06DD}'
        | '\u{070F}'
        | '\u{0890}'..='\u{0891}'
        | '\u{08E2}'
        | '\u{180E}'
        | '\u{200B}'..='\u{200F}'
        | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}'
        | '\u{2066}'..='\u{206F}'
        | '\u{FEFF}'
        | '\u{FFF9}'..='\u{FFFB}'
        | '\u{110BD}'
        | '\u{110CD}'
        | '\u{13430}'..='\u{1343F}'
        | '\u{1BCA0}'..='\u{1BCA3}'
        | '\u{1D173}'..='\u{1D17A}'
        | '\u{E0001}'
        | '\u{E0020}'..='\u{E007F}')
}

/// U+FDD0..U+FDEF and the last two code points of every plane.
fn is_noncharacter(c: char) -> bool {
    ('\u{FDD0}'..='\u{FDEF}').contains(&c) || (c as u32) & 0xFFFE == 0xFFFE
}

/// VS1–VS256 and the Mongolian free variation selectors.
fn is_variation_selector(c: char) -> bool {
    matches!(c, '\u{FE00}'..='\u{FE0F}' | '\u{E0100}'..='\u{E01EF}' | '\u{180B}'..='\u{180D}' | '\u{180F}')
}

/// Can a variation selector follow `c`? Not after nothing, a space,
/// another selector, or an ASCII character other than those with an emoji
/// form (the keycaps' `0`–`9`, `#`, `*`): `a` + U+FE0F would look like `a`.
fn takes_variation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_digit() || c == '#' || c == '*';
    }
    !(c.is_whitespace() || is_variation_selector(c) || refused(c).is_some() || c == ZWJ)
}

/// Can U+200D join `c` to its neighbour? Pictographs (and, before the
/// joiner, the variation selector that makes one an emoji): what emoji ZWJ
/// sequences are made of.
fn joins(c: char) -> bool {
    matches!(c,
        '\u{00A9}' | '\u{00AE}' | '\u{203C}' | '\u{2049}' | '\u{2122}' | '\u{2139}'
        | '\u{2190}'..='\u{2BFF}'
        | '\u{3030}' | '\u{303D}' | '\u{3297}' | '\u{3299}'
        | '\u{FE0F}'
        | '\u{1F000}'..='\u{1FAFF}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_names_are_accepted() {
        for ok in [
            "a",
            "report 2026.pdf",
            "naïve—ñ.txt",
            &"x".repeat(255),
            "..hidden",
            "a..b",
            ".profile",
            "ünïcødé 🚀",
            "مرحبا.txt",
            "שלום.txt",
            "写真 2026.jpg",
            "会議\u{3000}資料.docx",
            "Привет, мир!.txt",
            "नमस्ते.txt",
            "it's (1) [final] {v2} #3 & co; 50% = ok~.md",
            "café",
            "Å.txt",
            // Emoji with variation selectors, skin tones, ZWJ sequences,
            // keycaps.
            "❤\u{FE0F} notes",
            "\u{2764}\u{FE0E}",
            "👍🏽.png",
            "👩\u{200D}💻 work",
            "🏳\u{FE0F}\u{200D}🌈",
            "👨\u{200D}👩\u{200D}👧\u{200D}👦",
            "1\u{FE0F}\u{20E3} first",
            // An ideographic variation sequence (葛 in its Katsuragi form).
            "葛\u{E0100}城市",
            "e\u{301}x".nfc().collect::<String>().as_str(),
            "\u{E000} private use",
            "a\u{FFFD}b",
        ] {
            assert_eq!(check_name(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn unsafe_names_are_refused_naming_the_character() {
        for (bad, says) in [
            ("", "empty"),
            (".", "not a file name"),
            ("..", "not a file name"),
            ("a/b", "U+002F '/'"),
            ("/etc/passwd", "path separator"),
            ("..\\x", "U+005C"),
            ("a\0b", "U+0000 (a control character)"),
            ("a\nb", "U+000A"),
            ("a\tb", "U+0009"),
            ("a\u{85}b", "U+0085"),
            ("\u{1b}]0;owned\u{7}", "U+001B"),
            ("a\u{7F}", "U+007F"),
            ("photo\u{202E}gpj.exe", "U+202E (a bidirectional control)"),
            ("a\u{2066}b", "U+2066"),
            ("a\u{200E}b", "U+200E"),
            ("a\u{061C}b", "U+061C"),
            ("pay\u{200B}pal", "U+200B (an invisible format character)"),
            ("a\u{200C}b", "U+200C"),
            ("a\u{2060}b", "U+2060"),
            ("\u{FEFF}bom.txt", "U+FEFF"),
            ("soft\u{AD}hyphen", "U+00AD"),
            ("x\u{2061}y", "U+2061"),
            ("x\u{2064}y", "U+2064"),
            ("x\u{206F}y", "U+206F"),
            ("flag\u{E0067}\u{E007F}", "U+E0067"),
            ("a\u{E0001}", "U+E0001"),
            ("a\u{FFF9}b", "U+FFF9"),
            ("a\u{180E}b", "U+180E"),
            ("a\u{2028}b", "U+2028 (a line or paragraph separator)"),
            ("a\u{2029}b", "U+2029"),
            ("a\u{A0}b", "U+00A0 (a space other than U+0020)"),
            ("a\u{2003}b", "U+2003"),
            ("a\u{200A}b", "U+200A"),
            ("a\u{202F}b", "U+202F"),
            ("a\u{205F}b", "U+205F"),
            ("a\u{1680}b", "U+1680"),
            ("a\u{3164}b", "U+3164 (an invisible filler)"),
            ("\u{115F}", "U+115F"),
            ("a\u{FFA0}", "U+FFA0"),
            ("a\u{34F}b", "U+034F"),
            ("a\u{17B4}", "U+17B4"),
            ("a\u{FFFE}", "U+FFFE (a Unicode noncharacter)"),
            ("a\u{FFFF}", "U+FFFF"),
            ("a\u{FDD0}", "U+FDD0"),
            ("a\u{10FFFF}", "U+10FFFF"),
            ("a\u{2065}", "U+2065"),
            ("a\u{E0080}", "U+E0080"),
            // Variation selectors and the joiner out of place.
            ("\u{FE0F}", "U+FE0F (a variation selector)"),
            ("a\u{FE0F}.txt", "U+FE0F"),
            ("❤\u{FE0F}\u{FE0F}", "U+FE0F"),
            ("a \u{FE0E}", "U+FE0E"),
            ("x\u{E0100}", "U+E0100"),
            ("a\u{200D}b", "U+200D (ZERO WIDTH JOINER)"),
            ("写\u{200D}真", "U+200D"),
            ("👩\u{200D}", "U+200D"),
            ("\u{200D}💻", "U+200D"),
            ("👩\u{200D}\u{200D}💻", "U+200D"),
            // Ends and starts.
            (" report.pdf", "start or end with a space (U+0020)"),
            ("report.pdf ", "U+0020"),
            ("資料\u{3000}", "U+3000"),
            ("\u{301}abc", "start with a combining mark (U+0301)"),
            // Not NFC.
            ("cafe\u{301}", "not in Unicode NFC"),
            ("\u{212B}.txt", "not in Unicode NFC"),
            ("\u{1100}\u{1161}", "not in Unicode NFC"),
            (&"x".repeat(256), "at most 255 bytes"),
        ] {
            let err = check_name(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err:?} should say {says:?}");
        }
    }

    #[test]
    fn paths_are_names_joined_by_slashes() {
        let deepest = vec!["d"; MAX_DEPTH].join("/");
        // Four longest-but-one names and a short one: exactly MAX_PATH.
        let longest = format!("{}/yyyy", vec!["x".repeat(254); 4].join("/"));
        for ok in [
            "a",
            "photos/2024/a.jpg",
            "my photos/summer trip/beach day.jpg",
            "-rf/--help/-",
            "写真/2024年/海 🏖.jpg",
            "👩\u{200D}💻/❤\u{FE0F}/x",
            "..hidden/.profile/a..b",
            &normalize("cafe\u{301}/re\u{301}sume\u{301}.pdf"),
            &deepest,
            &longest,
        ] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
        assert_eq!(longest.len(), MAX_PATH);
    }

    #[test]
    fn bad_paths_are_refused_saying_why() {
        let too_deep = vec!["d"; MAX_DEPTH + 1].join("/");
        let too_long = format!("{}/yyyyy", vec!["x".repeat(254); 4].join("/"));
        let long_component = format!("a/{}", "x".repeat(256));
        for (bad, says) in [
            ("", "empty"),
            ("/etc/passwd", "may not start with /"),
            ("/", "may not start with /"),
            ("photos/", "may not end with /"),
            ("a//b", "empty folder name"),
            ("..", "not a file name"),
            ("../x", "not a file name"),
            ("a/../../etc/passwd", "\"..\" is not a file name"),
            ("a/./b", "\".\" is not a file name"),
            ("a/..", "not a file name"),
            ("a\\..\\b", "path separator"),
            ("a/b\u{200B}c/d", "U+200B"),
            ("a/ b", "start or end with a space"),
            ("a/b /c", "start or end with a space"),
            ("a/\u{301}x", "combining mark"),
            ("ok/cafe\u{301}", "not in Unicode NFC"),
            ("a/b\0/c", "U+0000"),
            (&too_deep, "at most 32 folders deep"),
            (&too_long, "at most 1024 bytes"),
            (&long_component, "at most 255 bytes"),
        ] {
            let err = check_path(bad).expect_err(bad);
            assert!(err.contains(says), "{bad:?}: {err:?} should say {says:?}");
        }
        // The component at fault is named, escaped.
        let err = check_path("a/pay\u{200B}pal/x").unwrap_err();
        assert!(err.contains("pay\\u{200b}pal"), "{err}");
    }

    #[test]
    fn folders_of_a_path_and_what_is_under_a_folder() {
        assert_eq!(folders_of("a/b/c").collect::<Vec<_>>(), ["a", "a/b"]);
        assert_eq!(folders_of("a").count(), 0);
        assert!(is_under("a/b", "a"));
        assert!(is_under("a/b/c", "a"));
        assert!(is_under("a/b/c", "a/b"));
        assert!(!is_under("a", "a"));
        assert!(!is_under("ab/c", "a"));
        assert!(!is_under("a/", "a"));
        assert!(!is_under("b/a/c", "a"));
    }

    #[test]
    fn names_differing_only_by_normalization_normalize_to_one() {
        let nfc = "caf\u{E9}";
        let nfd = "cafe\u{301}";
        assert_ne!(nfc, nfd);
        assert_eq!(normalize(nfd), nfc);
        assert_eq!(normalize(nfc), nfc);
        assert_eq!(check_name(&normalize(nfd)), Ok(()));
        // The Angstrom sign is canonically the letter Å.
        assert_eq!(normalize("\u{212B}"), "\u{C5}");
        // Hangul jamo compose into a syllable.
        assert_eq!(normalize("\u{1100}\u{1161}"), "\u{AC00}");
        // Whatever is normalized is NFC.
        for raw in ["e\u{301}\u{323}", "\u{1E0B}\u{323}", "ñ", "\u{0958}"] {
            assert!(is_nfc(&normalize(raw)), "{raw:?}");
        }
    }

    #[test]
    fn shown_names_escape_what_is_hidden_and_keep_the_rest() {
        for (name, seen) in [
            ("report.pdf", "report.pdf"),
            ("it's \"x\".txt", "it's \"x\".txt"),
            ("写真🚀 👩\u{200D}💻", "写真🚀 👩\u{200D}💻"),
            ("❤\u{FE0F}", "❤\u{FE0F}"),
            ("e\u{301}te\u{301}", "e\u{301}te\u{301}"),
            ("pay\u{200B}pal", "pay\\u{200b}pal"),
            ("photo\u{202E}gpj.exe", "photo\\u{202e}gpj.exe"),
            ("\u{1b}]0;owned\u{7}", "\\u{1b}]0;owned\\u{7}"),
            ("a\nb", "a\\u{a}b"),
            ("a\\u{41}", "a\\\\u{41}"),
            ("a/b", "a/b"),
            (" x ", "\\u{20}x\\u{20}"),
            ("a b", "a b"),
            ("\u{301}x", "\\u{301}x"),
            ("a\u{A0}b\u{2028}", "a\\u{a0}b\\u{2028}"),
            ("tag\u{E0041}", "tag\\u{e0041}"),
            ("", ""),
        ] {
            assert_eq!(shown(name), seen, "{name:?}");
        }
    }

    #[test]
    fn every_name_shown_is_free_of_what_check_name_refuses_per_character() {
        // Every character of the planes in use, alone and inside a name:
        // what is shown holds no character `refused` flags.
        for cp in (0..0x3_0000).chain(0xE_0000..0xE_1000) {
            let Some(c) = char::from_u32(cp) else {
                continue;
            };
            let s = shown(&format!("a{c}b"));
            assert!(
                s.chars()
                    .all(|c| refused(c).is_none() || c == '\\' || c == '/'),
                "{cp:X}"
            );
            if refused(c).is_some() {
                assert!(check_name(&format!("a{c}b")).is_err(), "{cp:X}");
            }
        }
    }
}
