//! `ferry completions` and `ferry man`: what they print is usable.

use ferry_tests::{ferry, path_str};

#[test]
fn completions_and_manual_pages_are_generated() {
    let bash = ferry(&["completions", "bash"], &[]);
    assert!(bash.status.success(), "{bash:?}");
    assert!(bash.stdout.contains("complete -F _ferry"), "{bash:?}");
    assert!(bash.stdout.contains("--as"), "put's options are completed");
    let zsh = ferry(&["completions", "zsh"], &[]);
    assert!(zsh.stdout.starts_with("#compdef ferry"), "{zsh:?}");
    assert_eq!(ferry(&["completions", "tcsh"], &[]).status.code(), Some(2));

    let man = ferry(&["man"], &[]);
    assert!(man.status.success(), "{man:?}");
    assert!(man.stdout.contains(".TH ferry 1"), "{man:?}");
    let dir = tempfile::tempdir().unwrap();
    let pages = dir.path().join("man1");
    let run = ferry(&["man", "--dir", path_str(&pages)], &[]);
    assert!(run.status.success(), "{run:?}");
    for page in ["ferry.1", "ferry-put.1", "ferry-get.1", "ferry-ca-issue.1"] {
        let text = std::fs::read_to_string(pages.join(page)).unwrap_or_default();
        assert!(text.contains(".TH"), "{page}: {text:.80}");
    }
}
