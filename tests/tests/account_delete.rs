//! `ferry account delete` against three real servers: alice shares a file
//! with bob and deletes her account; bob no longer lists or downloads it,
//! alice can no longer log in, and her name can be registered again.

use ferry_tests::{balancer_with_alice, path_str, wait_until, Cluster, User};

const PASSWORD: &str = "correct horse battery";
const BOB: &str = "bob's own password";

#[test]
fn a_deleted_account_is_gone_with_its_files_and_its_name_is_free() {
    let (data, alice_home, bob_home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let cluster = Cluster::start(3, data.path());
    let addrs: Vec<(u32, String)> = (1..=3)
        .map(|id| (id, cluster.addr(id).to_string()))
        .collect();
    let (_balancer, alice) = balancer_with_alice(&addrs, alice_home.path(), PASSWORD);
    let bob = User::new(bob_home.path(), &alice.balancer);
    for cmd in ["register", "login"] {
        let run = bob.with_password(&[cmd, "bob"], BOB);
        assert!(run.status.success(), "{cmd}: {run:?}");
    }
    let notes = work.path().join("notes.txt");
    std::fs::write(&notes, "Meet at noon.\n").unwrap();
    for args in [
        &["put", path_str(&notes)][..],
        &["share", "notes.txt", "bob"],
    ] {
        let run = alice.run(args);
        assert!(run.status.success(), "{run:?}");
    }
    let run = bob.run(&["ls"]);
    assert!(run.stdout.contains("notes.txt"), "{run:?}");

    let blobs: Vec<_> = (1..=3)
        .map(|id| data.path().join(format!("server-{id}")))
        .collect();
    let digest = blake3::hash(b"Meet at noon.\n").to_hex().to_string();
    wait_until("the content on every server", || {
        blobs.iter().all(|dir| holds(dir, &digest))
    });

    // A wrong password: "not allowed", and nothing changes.
    let run = alice.with_password(&["account", "delete"], "not the password");
    assert_eq!(run.status.code(), Some(4), "{run:?}");
    assert!(run.stderr.contains("the password is wrong"), "{run:?}");
    assert!(alice.session_file().exists(), "still logged in");

    let run = alice.with_password(&["account", "delete"], PASSWORD);
    assert!(run.status.success(), "{run:?}");
    assert!(
        run.stdout.contains("deleted the account alice (user 1)"),
        "{run:?}"
    );
    assert!(
        !alice.session_file().exists(),
        "the saved login is forgotten"
    );

    // Every server answers bob the same: whichever the balancer picks, the
    // file is gone (each server answers once it has applied the deletion).
    for _ in 0..3 {
        let run = bob.run(&["ls", "--json"]);
        assert!(run.status.success(), "{run:?}");
        assert!(!run.stdout.contains("notes.txt"), "{run:?}");
    }
    let into = work.path().join("from-alice.txt");
    let run = bob.run(&["get", "notes.txt", "--owner", "alice", path_str(&into)]);
    assert_eq!(run.status.code(), Some(3), "not found: {run:?}");
    assert!(!into.exists());

    let run = alice.with_password(&["login", "alice"], PASSWORD);
    assert_eq!(run.status.code(), Some(4), "{run:?}");

    // The name is free again: a new user, a new id, nothing of the old.
    let run = alice.with_password(&["register", "alice"], "a new alice's password");
    assert!(run.status.success(), "{run:?}");
    assert!(run.stdout.contains("as user 3"), "{run:?}");
    let run = alice.with_password(&["login", "alice"], "a new alice's password");
    assert!(run.status.success(), "{run:?}");
    let run = alice.run(&["status", "--json"]);
    assert!(run.status.success(), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(doc["user"]["files"], 0, "{doc}");

    // Her content is collected on every server's disk, in a while.
    wait_until("alice's content collected everywhere", || {
        blobs.iter().all(|dir| !holds(dir, &digest))
    });
}

/// True if a file named `name` is anywhere under `dir`.
fn holds(dir: &std::path::Path, name: &str) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|e| {
        let path = e.path();
        e.file_name().to_str() == Some(name) || (path.is_dir() && holds(&path, name))
    })
}
