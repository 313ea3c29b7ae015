//! The README's walkthrough, run as written against a real `ferry up`: the
//! block after the `<!-- walkthrough` marker in README.md, by bash, with
//! `ferry` on the PATH, in an empty directory. Every `# "…"` comment in it
//! is output the command must print; so the README cannot drift from the
//! program.

use ferry_tests::{listening_addr, path_str, shell, Proc};

/// The walkthrough block of README.md.
fn walkthrough() -> String {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../README.md"))
        .expect("README.md");
    let (_, after) = readme
        .split_once("<!-- walkthrough")
        .expect("README.md has a walkthrough marker");
    let (_, block) = after.split_once("```sh\n").expect("a sh block after it");
    let (block, _) = block.split_once("```").expect("the block ends");
    block.to_string()
}

/// The outputs the block's comments promise: the first `"…"` of each
/// comment.
fn promised(block: &str) -> Vec<String> {
    block
        .lines()
        .filter_map(|line| line.split_once(" # ").map(|(_, comment)| comment))
        .filter_map(|comment| comment.split('"').nth(1))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_readme_walkthrough_runs_as_written() {
    let block = walkthrough();
    let promises = promised(&block);
    assert!(promises.len() >= 6, "{promises:?}");
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // As a new user has it: an authority `ferry up` makes, trusted by the
    // client on first use.
    let no_ca = [("FERRY_CA", ""), ("FERRY_CA_KEY", "")];
    let mut up = Proc::spawn(
        "ferry up",
        &[
            "up",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path_str(data.path()),
        ],
        &no_ca,
    );
    let balancer = listening_addr(&up.wait_for_line("balancer listening on"));
    up.wait_for_line("cluster authority");
    let run = shell(
        &block,
        work.path(),
        &[
            ("FERRY_CA", ""),
            ("FERRY_BALANCER", &balancer),
            ("FERRY_HOME", path_str(home.path())),
        ],
    );
    assert!(run.status.success(), "the walkthrough failed: {run:?}");
    for promise in &promises {
        assert!(
            run.stdout.contains(promise.as_str()),
            "the README promises {promise:?}; the output was:\n{}",
            run.stdout
        );
    }
    assert!(run.stderr.contains("on first use"), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(work.path().join("from-alice.txt")).unwrap(),
        "Meet at noon.\n"
    );
}

#[test]
fn a_broken_walkthrough_is_caught() {
    // The checker itself: a promise the program does not keep is found.
    let block = "echo 'stored x' # \"stored y\"\n";
    let promises = promised(block);
    assert_eq!(promises, ["stored y"]);
    let dir = tempfile::tempdir().unwrap();
    let run = shell(block, dir.path(), &[]);
    assert!(run.status.success());
    assert!(!run.stdout.contains(promises[0].as_str()));
}
