//! Folders through real processes: `ferry put -r`, `ls FOLDER`, `get -r`,
//! `rm -r`, and a folder shared with another user, who sees what is put
//! under it after the share.

use ferry_tests::{assert_fails, balancer_with_alice, noise, path_str, start_server, Run, User};
use std::collections::BTreeMap;
use std::path::Path;

const PASSWORD: &str = "correct horse battery";

fn alice(data: &Path, home: &Path) -> (Vec<ferry_tests::Proc>, User) {
    let (server, addr) = start_server(1, data);
    let (balancer, alice) = balancer_with_alice(&[(1, addr)], home, PASSWORD);
    (vec![server, balancer], alice)
}

/// Another user of `alice`'s cluster, registered and logged in.
fn other(alice: &User, home: &Path, name: &str) -> User {
    let user = User::new(home, &alice.balancer);
    for cmd in ["register", "login"] {
        let run = user.with_password(&[cmd, name], PASSWORD);
        assert!(run.status.success(), "{cmd} {name}: {run:?}");
    }
    user
}

/// The names `ls --json` lists, in its order.
fn listed(run: &Run) -> Vec<String> {
    assert!(run.status.success(), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("ls --json");
    doc["files"]
        .as_array()
        .expect("files")
        .iter()
        .map(|f| f["name"].as_str().expect("name").to_string())
        .collect()
}

/// Every regular file under `root`, by its path below it ('/'-joined),
/// with its content; and every directory, so that the shapes compare.
fn tree(root: &Path) -> (BTreeMap<String, Vec<u8>>, Vec<String>) {
    fn walk(dir: &Path, rel: &str, files: &mut BTreeMap<String, Vec<u8>>, dirs: &mut Vec<String>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap())
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().into_string().expect("UTF-8 name");
            let rel = match rel {
                "" => name,
                _ => format!("{rel}/{name}"),
            };
            let kind = e.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(rel.clone());
                walk(&e.path(), &rel, files, dirs);
            } else {
                assert!(kind.is_file(), "{rel} is neither a file nor a directory");
                files.insert(rel, std::fs::read(e.path()).unwrap());
            }
        }
    }
    let (mut files, mut dirs) = (BTreeMap::new(), Vec::new());
    walk(root, "", &mut files, &mut dirs);
    (files, dirs)
}

#[test]
fn a_tree_with_odd_names_goes_up_with_put_r_and_comes_back_whole_with_get_r() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, alice) = alice(data.path(), home.path());

    // Spaces, a leading dash, non-ASCII (one directory named in NFD, as
    // macOS writes names), emoji, an empty file, five levels deep, an
    // empty directory, a link out of the tree and a FIFO.
    let src = work.path().join("my photos");
    let nfd_cafe = "cafe\u{301}";
    let files: Vec<(String, Vec<u8>)> = vec![
        ("a.txt".into(), noise(1, 5000)),
        ("-dash.bin".into(), noise(2, 70_000)),
        (format!("{nfd_cafe}/日本 語.txt"), noise(3, 4097)),
        ("emoji 🚀.txt".into(), Vec::new()),
        ("deep/1/2/3/4/deep.bin".into(), noise(4, 1)),
        ("deep/1/side.txt".into(), noise(5, 300)),
    ];
    for (rel, content) in &files {
        let path = src.join(rel);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, content).unwrap();
    }
    std::fs::create_dir_all(src.join("empty dir")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", src.join("link")).unwrap();
    std::os::unix::fs::symlink("..", src.join("deep/up")).unwrap();
    let fifo = src.join("fifo");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let outside = work.path().join("other.txt");
    std::fs::write(&outside, b"not in the folder").unwrap();
    assert!(alice.run(&["put", path_str(&outside)]).status.success());

    let run = alice.run(&["put", "-r", path_str(&src)]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout
            .lines()
            .filter(|l| l.starts_with("stored "))
            .count(),
        files.len(),
        "{run:?}"
    );
    assert!(
        run.stdout
            .contains("stored my photos/café/日本 語.txt (4.0 KiB, 4097 bytes)"),
        "stored under its NFC name: {run:?}"
    );
    for (what, why) in [
        ("link", "a symbolic link, not followed"),
        ("deep/up", "a symbolic link, not followed"),
        ("fifo", "not a regular file"),
        ("empty dir", "no regular file under it"),
    ] {
        let line = format!("skipped {}: {why}", path_str(&src.join(what)));
        assert!(run.stderr.contains(&line), "{line}: {run:?}");
    }

    // ls FOLDER lists what is under it, at any depth, and nothing else.
    let mut all: Vec<String> = files
        .iter()
        .map(|(rel, _)| format!("my photos/{}", rel.replace(nfd_cafe, "café")))
        .collect();
    all.sort();
    assert_eq!(
        listed(&alice.run(&["ls", "--json", "my photos"])),
        all,
        "everything under the folder"
    );
    assert_eq!(
        listed(&alice.run(&["ls", "--json", "my photos/deep/"])),
        [
            "my photos/deep/1/2/3/4/deep.bin",
            "my photos/deep/1/side.txt"
        ]
    );
    assert!(listed(&alice.run(&["ls", "--json", "my"])).is_empty());
    let text = alice.run(&["ls", "my photos/deep/1/2"]);
    assert!(text.status.success(), "{text:?}");
    assert_eq!(
        text.stdout.lines().count(),
        2,
        "a header and one file: {text:?}"
    );

    // Back into a fresh directory: the same files, byte for byte, in the
    // same shape (but the empty directory, the links and the FIFO).
    let fresh = work.path().join("fresh");
    std::fs::create_dir(&fresh).unwrap();
    let run = alice.run(&["get", "-r", "my photos", path_str(&fresh)]);
    assert!(run.status.success(), "{run:?}");
    let (got, dirs) = tree(&fresh.join("my photos"));
    let want: BTreeMap<String, Vec<u8>> = files
        .iter()
        .map(|(rel, c)| (rel.replace(nfd_cafe, "café"), c.clone()))
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>()
    );
    assert!(got == want, "the contents differ");
    assert_eq!(
        dirs,
        [
            "café",
            "deep",
            "deep/1",
            "deep/1/2",
            "deep/1/2/3",
            "deep/1/2/3/4"
        ]
    );
    assert_eq!(
        std::fs::read_dir(&fresh).unwrap().count(),
        1,
        "only the folder"
    );
    // Again into the same place, as after a `get -r` cut off: the files
    // there as `get` wrote them are left alone, those missing are
    // fetched (one cut off, with its partial file beside it), and one
    // changed since is refused without --force.
    let root = fresh.join("my photos");
    let again = alice.run(&["get", "-r", "my photos", path_str(&fresh)]);
    assert!(again.status.success(), "{again:?}");
    assert_eq!(
        again.stdout.matches("unchanged ").count(),
        files.len(),
        "{again:?}"
    );
    std::fs::remove_file(root.join("a.txt")).unwrap();
    std::fs::write(root.join(".a.txt.ferry-part"), b"").unwrap();
    let again = alice.run(&["get", "-r", "my photos", path_str(&fresh), "--json"]);
    assert!(again.status.success(), "{again:?}");
    let doc: serde_json::Value = serde_json::from_str(again.stdout.trim()).unwrap();
    assert_eq!(doc["downloaded"].as_array().unwrap().len(), 1, "{again:?}");
    assert_eq!(doc["unchanged"].as_array().unwrap().len(), files.len() - 1);
    assert!(tree(&root).0 == want, "whole again, no partial file left");
    std::fs::write(root.join("deep/1/side.txt"), b"mine now").unwrap();
    let again = alice.run(&["get", "-r", "my photos", path_str(&fresh)]);
    assert_eq!(again.status.code(), Some(6), "a conflict: {again:?}");
    assert!(
        again
            .stderr
            .contains("side.txt exists and is not the file on the server; use --force"),
        "{again:?}"
    );
    assert!(alice
        .run(&["get", "-r", "--force", "my photos", path_str(&fresh)])
        .status
        .success());
    assert_eq!(
        std::fs::read(root.join("deep/1/side.txt")).unwrap(),
        noise(5, 300)
    );

    // Files of a folder, got as files, land under their own names.
    let flat = work.path().join("flat");
    std::fs::create_dir(&flat).unwrap();
    let run = alice.run(&[
        "get",
        "my photos/a.txt",
        "my photos/deep/1/side.txt",
        path_str(&flat),
    ]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(std::fs::read(flat.join("side.txt")).unwrap(), noise(5, 300));
    assert_eq!(std::fs::read_dir(&flat).unwrap().count(), 2);

    // A name is a file or a folder, never both.
    let clash = alice.run(&["put", path_str(&outside), "--as", "my photos"]);
    assert_eq!(clash.status.code(), Some(6), "a conflict: {clash:?}");
    assert!(clash.stderr.contains("my photos is a folder"), "{clash:?}");
    let clash = alice.run(&["put", path_str(&outside), "--as", "other.txt/x"]);
    assert_eq!(clash.status.code(), Some(6), "a conflict: {clash:?}");
    // A directory without -r is refused, saying what to do.
    assert_fails(&alice.run(&["put", path_str(&src)]), "ferry put -r");

    // rm of a folder needs -r; rm -r takes everything under it.
    let run = alice.run(&["rm", "my photos"]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("ferry rm -r my photos"), "{run:?}");
    let run = alice.run(&["rm", "-r", "my photos"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        run.stdout.trim(),
        format!("deleted folder my photos ({} files)", files.len())
    );
    assert_eq!(listed(&alice.run(&["ls", "--json"])), ["other.txt"]);
    let run = alice.run(&["rm", "-r", "my photos"]);
    assert_eq!(run.status.code(), Some(3), "gone: {run:?}");
}

#[test]
fn a_shared_folder_shares_what_is_put_under_it_later_until_unshared() {
    let data = tempfile::tempdir().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    std::fs::create_dir(homes.path().join("alice")).unwrap();
    std::fs::create_dir(homes.path().join("bob")).unwrap();
    let (_procs, alice) = alice(data.path(), &homes.path().join("alice"));
    let bob = other(&alice, &homes.path().join("bob"), "bob");

    let docs = work.path().join("docs");
    std::fs::create_dir_all(docs.join("2026")).unwrap();
    std::fs::write(docs.join("2026/plan.txt"), b"the plan").unwrap();
    assert!(alice.run(&["put", "-r", path_str(&docs)]).status.success());
    let private = work.path().join("private.txt");
    std::fs::write(&private, b"mine alone").unwrap();
    assert!(alice
        .run(&["put", path_str(&private), "--as", "docs-private"])
        .status
        .success());

    let run = alice.run(&["share", "docs/", "bob"]);
    assert_eq!(run.stdout.trim(), "shared docs with bob", "{run:?}");
    // Put under the folder after the share: bob may read it too.
    let later = work.path().join("later.txt");
    std::fs::write(&later, noise(9, 10_000)).unwrap();
    assert!(alice
        .run(&["put", path_str(&later), "--as", "docs/new/later.txt"])
        .status
        .success());

    assert_eq!(
        listed(&bob.run(&["ls", "--json", "docs"])),
        ["docs/2026/plan.txt", "docs/new/later.txt"]
    );
    let mine = bob.run(&["ls", "--json"]);
    assert!(!listed(&mine).contains(&"docs-private".to_string()));
    // Alice's listing says who may read each file under the folder.
    let doc: serde_json::Value =
        serde_json::from_str(alice.run(&["ls", "--json", "docs"]).stdout.trim()).unwrap();
    for f in doc["files"].as_array().unwrap() {
        assert_eq!(f["shared_with"], serde_json::json!(["bob"]), "{f}");
    }

    let into = work.path().join("bob");
    std::fs::create_dir(&into).unwrap();
    let run = bob.run(&["get", "-r", "docs", path_str(&into), "--owner", "alice"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(
        std::fs::read(into.join("docs/2026/plan.txt")).unwrap(),
        b"the plan"
    );
    assert_eq!(
        std::fs::read(into.join("docs/new/later.txt")).unwrap(),
        noise(9, 10_000)
    );
    let one = work.path().join("one.txt");
    let run = bob.run(&[
        "get",
        "docs/new/later.txt",
        path_str(&one),
        "--owner",
        "alice",
    ]);
    assert!(run.status.success(), "{run:?}");
    // Not alice's other files, and not as the owner.
    let run = bob.run(&[
        "get",
        "docs-private",
        path_str(&work.path().join("x")),
        "--owner",
        "alice",
    ]);
    assert_eq!(run.status.code(), Some(3), "{run:?}");
    let run = bob.run(&["rm", "-r", "docs"]);
    assert_eq!(
        run.status.code(),
        Some(3),
        "bob has no folder docs: {run:?}"
    );

    let run = alice.run(&["unshare", "docs", "bob"]);
    assert_eq!(
        run.stdout.trim(),
        "docs is no longer shared with bob",
        "{run:?}"
    );
    let run = bob.run(&[
        "get",
        "docs/2026/plan.txt",
        path_str(&work.path().join("y")),
        "--owner",
        "alice",
    ]);
    assert_eq!(run.status.code(), Some(3), "unshared: {run:?}");
    let run = bob.run(&[
        "get",
        "-r",
        "docs",
        path_str(&into),
        "--owner",
        "alice",
        "--force",
    ]);
    assert_eq!(run.status.code(), Some(3), "unshared: {run:?}");
}
