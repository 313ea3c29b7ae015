//! The module layering of `lib.rs`, checked: a module names only modules of
//! the layers below its own (or itself), and a scenario never names another
//! scenario. A `use` that breaks the order fails here rather than growing
//! into an import circle.

use std::path::Path;

/// The top-level modules, bottom layer first, as `lib.rs` lists them.
const LAYERS: [&[&str]; 8] = [
    &["trace", "seeds", "sweep"],
    &["disk"],
    &["driver"],
    &["server_host"],
    &["harness"],
    &["clients"],
    &["checkers"],
    &["scenarios"],
];

fn layer(module: &str) -> Option<usize> {
    LAYERS.iter().position(|l| l.contains(&module))
}

/// Every `crate::a` or `crate::scenarios::b` that the code of `text` names
/// (comments may point anywhere: a doc link is no import).
fn named(text: &str) -> Vec<(String, Option<String>)> {
    let code: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect();
    let text = code.join("\n");
    let word = |s: &str| {
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        s[..end].to_string()
    };
    text.match_indices("crate::")
        .map(|(i, k)| {
            let rest = &text[i + k.len()..];
            let top = word(rest);
            let sub = rest[top.len()..].strip_prefix("::").map(word);
            (top, sub)
        })
        .collect()
}

fn visit(dir: &Path, found: &mut Vec<String>) {
    let entries = std::fs::read_dir(dir).expect("the source directory reads");
    for entry in entries {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            visit(&path, found);
        } else if path.extension().is_some_and(|e| e == "rs") {
            found.push(path.to_string_lossy().into_owned());
        }
    }
}

#[test]
fn modules_name_only_the_layers_below_them() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    visit(&src, &mut files);
    files.sort();
    let mut wrong = Vec::new();
    let mut checked = 0;
    for file in &files {
        let rel = file[src.to_string_lossy().len() + 1..].to_string();
        let mut parts = rel.trim_end_matches(".rs").split('/');
        let own = parts.next().unwrap_or_default().to_string();
        let own_sub = parts.next().map(str::to_string);
        let Some(own_layer) = layer(&own) else {
            continue; // lib.rs, main.rs, this file
        };
        checked += 1;
        let text = std::fs::read_to_string(file).expect("a source file reads");
        for (top, sub) in named(&text) {
            let fine = match layer(&top) {
                None => true,
                Some(_) if top == own && own == "scenarios" => sub.is_none() || sub == own_sub,
                Some(_) if top == own => true,
                Some(l) => l < own_layer,
            };
            if !fine {
                let sub = sub.map(|s| format!("::{s}")).unwrap_or_default();
                wrong.push(format!("{rel} names crate::{top}{sub}"));
            }
        }
    }
    assert!(
        checked > 20,
        "only {checked} files checked: is the layout as expected?"
    );
    assert!(
        wrong.is_empty(),
        "imports against the layering:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_check_catches_an_upward_and_a_sideways_import() {
    let n = named("use crate::scenarios::files::x;\nuse crate::disk::Disk; // crate::harness\n/// [`crate::sweep`]");
    assert_eq!(
        n,
        vec![
            ("scenarios".to_string(), Some("files".to_string())),
            ("disk".to_string(), Some("Disk".to_string())),
            ("harness".to_string(), None),
        ]
    );
    assert!(layer("scenarios") > layer("harness"));
}
