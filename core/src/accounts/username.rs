//! The username policy.
//!
//! Usernames are case-insensitive: they are folded to lower case before they
//! are checked, stored or compared, so "Alice" and "alice" are one account.
//! After folding: 3 to 32 characters from `a-z`, `0-9`, `_`, `-`, `.`,
//! starting with a letter or digit. Anything else is refused with the reason.

pub const MIN_LEN: usize = 3;
pub const MAX_LEN: usize = 32;

/// Returns the canonical form of `raw`, or why it is not a valid username.
pub fn normalize(raw: &str) -> Result<String, String> {
    let name = raw.to_ascii_lowercase();
    if !name.is_ascii() {
        return Err("usernames are ASCII letters, digits, '_', '-' and '.'".into());
    }
    if name.len() < MIN_LEN || name.len() > MAX_LEN {
        return Err(format!(
            "usernames are {MIN_LEN} to {MAX_LEN} characters long (got {})",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
    {
        return Err(format!(
            "usernames may not contain {c:?}; use letters, digits, '_', '-' and '.'"
        ));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("usernames start with a letter or a digit".into());
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folds_case_and_accepts_the_allowed_alphabet() {
        assert_eq!(normalize("Alice").unwrap(), "alice");
        assert_eq!(normalize("bob_2.x-y").unwrap(), "bob_2.x-y");
    }

    #[test]
    fn refuses_with_a_reason() {
        for bad in [
            "ab",
            &"a".repeat(33),
            "al ice",
            "al/ice",
            "../x",
            ".alice",
            "ålice",
            "a\0b",
            "",
        ] {
            assert!(normalize(bad).is_err(), "{bad:?} should be refused");
        }
        assert!(normalize("a b c").unwrap_err().contains("' '"));
    }
}
