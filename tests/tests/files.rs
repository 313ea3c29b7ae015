//! Files through real processes: `ferry server`s, balancers, and the file
//! commands (put, get, ls, share, unshare, rm) as two users.

use ferry_tests::{
    assert_fails, assert_ok, noise, path_str, start_balancer, start_server_with, via_server,
    wait_connectable, wait_until, Cluster, Proc, Run, User,
};
use std::path::{Path, PathBuf};

const PASSWORD: &str = "correct horse battery";

/// Registers and logs in `name` through `user`'s balancer.
fn sign_up(user: &User, name: &str) {
    let run = user.with_password(&["register", name], PASSWORD);
    assert!(run.status.success(), "{run:?}");
    let run = user.with_password(&["login", name], PASSWORD);
    assert!(run.status.success(), "{run:?}");
}

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

/// The file names in a `ferry ls` table (the first column, header skipped).
fn listed(run: &Run) -> Vec<String> {
    assert!(run.status.success(), "{run:?}");
    if run.stdout.trim() == "no files" {
        return Vec::new();
    }
    run.stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// The regular files in a directory (none if it does not exist).
fn files_in(dir: &Path) -> Vec<(String, u64)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let meta = e.metadata().ok()?;
            meta.is_file()
                .then(|| (e.file_name().to_string_lossy().into_owned(), meta.len()))
        })
        .collect()
}

/// Two servers, each behind a balancer of its own, so that a user of one
/// balancer always goes through that server; and a user of each (homes
/// under `homes`), named `home_1` and `home_2`.
struct TwoWays {
    // Kept alive for the test; dropping them stops the processes.
    _cluster: Cluster,
    _balancers: [Proc; 2],
    users: [User; 2],
}

fn two_ways(data: &Path, homes: &Path, home_1: &str, home_2: &str) -> TwoWays {
    let cluster = Cluster::start(2, data);
    let (b1, via_1) = start_balancer(&[(1, cluster.addr(1))]);
    let (b2, via_2) = start_balancer(&[(2, cluster.addr(2))]);
    wait_connectable(&via_1);
    wait_connectable(&via_2);
    let users = [
        User::new(&homes.join(home_1), &via_1),
        User::new(&homes.join(home_2), &via_2),
    ];
    for u in &users {
        std::fs::create_dir_all(&u.home).unwrap();
    }
    TwoWays {
        _cluster: cluster,
        _balancers: [b1, b2],
        users,
    }
}

#[test]
fn alice_shares_through_one_server_and_bob_downloads_through_another() {
    let data = tempfile::tempdir().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Alice always goes through server 1, bob through server 2.
    let ways = two_ways(data.path(), homes.path(), "alice", "bob");
    let [alice, bob] = &ways.users;
    sign_up(alice, "alice");
    sign_up(bob, "bob");

    let files = [
        ("random.bin", noise(1, 3 * 1024 * 1024 + 123)),
        ("empty.txt", Vec::new()),
        ("pages.bin", noise(2, 4 * 4096)),
    ];
    for (name, content) in &files {
        let local = write(work.path(), name, content);
        let run = alice.run(&["put", path_str(&local)]);
        assert!(run.status.success(), "{run:?}");
        assert_eq!(via_server(&run), 1);
        assert!(
            run.stdout.starts_with(&format!("stored {name} (")),
            "{run:?}"
        );
        assert!(run.stdout.contains(&format!(", {} bytes)", content.len())));
        assert_ok(
            &alice.run(&["share", name, "bob"]),
            &format!("shared {name} with bob"),
        );
    }
    let mut names: Vec<String> = files.iter().map(|(n, _)| n.to_string()).collect();
    names.sort();
    let mut mine = listed(&alice.run(&["ls"]));
    mine.sort();
    assert_eq!(mine, names);
    let table = alice.run(&["ls"]).stdout;
    assert!(table.starts_with("NAME "), "{table}");
    assert!(table.contains("3.0 MiB"), "{table}");
    assert!(table.contains("bob"), "shared-with column: {table}");

    // Server 2 learns of the files as it applies the log.
    wait_until("bob's server lists alice's files", || {
        listed(&bob.run(&["ls"])).len() == files.len()
    });
    let downloads = work.path().join("bob");
    std::fs::create_dir(&downloads).unwrap();
    for (name, content) in &files {
        let run = bob.run(&["get", name, path_str(&downloads), "--owner", "alice"]);
        assert!(run.status.success(), "{run:?}");
        assert_eq!(via_server(&run), 2);
        assert_eq!(
            &std::fs::read(downloads.join(name)).unwrap(),
            content,
            "{name}"
        );
    }
    // Nothing but the downloads in bob's directory: no partial files.
    let mut got: Vec<String> = files_in(&downloads).into_iter().map(|f| f.0).collect();
    got.sort();
    assert_eq!(got, names);
    // Without --owner, bob asks for a file of his own: there is none.
    assert_fails(
        &bob.run(&["get", "pages.bin", path_str(&work.path().join("x"))]),
        "no such file",
    );

    // Unsharing is enforced on bob's server.
    assert_ok(
        &alice.run(&["unshare", "random.bin", "bob"]),
        "random.bin is no longer shared with bob",
    );
    wait_until("bob's server applies the unshare", || {
        !listed(&bob.run(&["ls"])).contains(&"random.bin".to_string())
    });
    let dest = work.path().join("again.bin");
    assert_fails(
        &bob.run(&["get", "random.bin", path_str(&dest), "--owner", "alice"]),
        "no such file (or it is not shared with you)",
    );
    assert!(!dest.exists());
    assert_fails(
        &alice.run(&["unshare", "random.bin", "bob"]),
        "not shared with that user",
    );

    // Deleting removes the file for everyone, and its content everywhere.
    assert_ok(&alice.run(&["rm", "random.bin"]), "deleted random.bin");
    assert!(!listed(&alice.run(&["ls"])).contains(&"random.bin".to_string()));
    assert_fails(
        &alice.run(&["get", "random.bin", path_str(&dest)]),
        "no such file",
    );
    assert_fails(&alice.run(&["rm", "random.bin"]), "no such file");
    let size = files[0].1.len() as u64;
    for id in [1, 2] {
        let blobs = data.path().join(format!("server-{id}/blobs"));
        wait_until(&format!("server {id} removes the content"), || {
            files_in(&blobs).iter().all(|(_, len)| *len != size)
        });
    }
    // The others are still there for bob.
    assert_eq!(listed(&bob.run(&["ls"])).len(), 2);
}

#[test]
fn names_and_replacing_are_checked_with_clear_errors() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_server, server) = start_server_with(1, data.path(), &[]);
    let (_balancer, balancer) = start_balancer(&[(1, &server)]);
    let user = User::new(home.path(), &balancer);

    // Before login: clear, and nothing is sent.
    let local = write(work.path(), "a.txt", b"first");
    assert_fails(&user.run(&["put", path_str(&local)]), "not logged in");
    sign_up(&user, "carol");

    for bad in ["a//b", "a/", "a/../b", "..", "/etc/passwd", "."] {
        let run = user.run(&["put", path_str(&local), "--as", bad]);
        assert_fails(&run, "bad file name");
    }
    assert_fails(
        &user.run(&["put", path_str(&local), "--as", &"x".repeat(256)]),
        "at most 255 bytes",
    );
    assert_fails(
        &user.run(&["put", path_str(&work.path().join("missing"))]),
        "no such file",
    );
    assert_fails(&user.run(&["put", path_str(work.path())]), "is a directory");
    assert_fails(&user.run(&["get", "../x"]), "bad file name");
    assert_eq!(listed(&user.run(&["ls"])), Vec::<String>::new());

    assert_ok(
        &user.run(&["put", path_str(&local), "--as", "notes"]),
        "stored notes (5 B, 5 bytes)",
    );
    let second = write(work.path(), "b.txt", b"second version");
    assert_fails(
        &user.run(&["put", path_str(&second), "--as", "notes"]),
        "exists (use --force to replace it)",
    );
    let dest = work.path().join("notes.out");
    assert!(user
        .run(&["get", "notes", path_str(&dest)])
        .status
        .success());
    assert_eq!(std::fs::read(&dest).unwrap(), b"first");
    assert_ok(
        &user.run(&["put", path_str(&second), "--as", "notes", "--force"]),
        "stored notes (14 B, 14 bytes)",
    );
    // An existing destination is kept unless --force.
    assert_fails(
        &user.run(&["get", "notes", path_str(&dest)]),
        "exists; use --force to replace it",
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"first");
    assert!(user
        .run(&["get", "notes", path_str(&dest), "--force"])
        .status
        .success());
    assert_eq!(std::fs::read(&dest).unwrap(), b"second version");
    assert_eq!(listed(&user.run(&["ls"])), ["notes"]);
    assert_fails(&user.run(&["share", "notes", "nobody"]), "no such user");
    assert_fails(&user.run(&["share", "notes", "carol"]), "you own that file");
    assert_fails(&user.run(&["share", "nothing", "carol"]), "no such file");
}

/// Names that look the same are one name: a file named `café` in NFD on
/// the client's disk is stored under the NFC name, which `get`, `put` and
/// `rm` find however `café` is typed, and `ls` shows once. An invisible
/// character is refused, named as U+XXXX.
#[test]
fn names_are_stored_in_one_form_and_invisible_characters_are_refused() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_server, server) = start_server_with(1, data.path(), &[]);
    let (_balancer, balancer) = start_balancer(&[(1, &server)]);
    let user = User::new(home.path(), &balancer);
    sign_up(&user, "dora");
    let (nfd, nfc) = ("cafe\u{301}", "caf\u{e9}");

    // Stored under its name on disk, which is NFD.
    let local = write(work.path(), nfd, b"menu");
    assert_ok(
        &user.run(&["put", path_str(&local)]),
        &format!("stored {nfc} (4 B, 4 bytes)"),
    );
    // The NFC name is the same name: replacing it needs --force.
    let other = write(work.path(), "other", b"menu 2");
    assert_fails(&user.run(&["put", path_str(&other), "--as", nfc]), "exists");
    assert_eq!(listed(&user.run(&["ls"])), [nfc]);

    // Typed in NFC or in NFD, `get` finds it.
    for (typed, out) in [(nfc, "one"), (nfd, "two")] {
        let dest = work.path().join(out);
        assert_ok(
            &user.run(&["get", typed, path_str(&dest)]),
            &format!("downloaded {nfc} (4 B, 4 bytes) to {}", dest.display()),
        );
        assert_eq!(std::fs::read(&dest).unwrap(), b"menu");
    }

    // Zero-width characters name nothing, and say which character.
    for args in [
        vec!["put", path_str(&other), "--as", "pay\u{200B}pal"],
        vec!["get", "caf\u{e9}\u{200B}"],
        vec!["rm", "\u{FEFF}x"],
    ] {
        let run = user.run(&args);
        assert_fails(&run, "bad file name");
        let hidden = if args[0] == "rm" { "U+FEFF" } else { "U+200B" };
        assert_fails(&run, hidden);
        // The name in the error shows where the character hides.
        assert!(run.stderr.contains("\\u{"), "{run:?}");
    }

    assert_ok(&user.run(&["rm", nfd]), &format!("deleted {nfc}"));
    assert_eq!(listed(&user.run(&["ls"])), Vec::<String>::new());
}

#[test]
fn an_interrupted_put_leaves_only_its_part_to_resume_and_the_server_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server_with(1, data.path(), &[]);
    let (_balancer, balancer) = start_balancer(&[(1, &addr)]);
    let user = User::new(home.path(), &balancer);
    sign_up(&user, "dave");
    let tmp = data.path().join("server-1/tmp");

    // Stop-and-wait makes the upload slow enough to catch midway.
    let big = write(work.path(), "big.bin", &vec![7u8; 64 << 20]);
    let mut put = user.spawn(&["put", path_str(&big), "--window", "1"]);
    wait_until("the upload is under way on the server", || {
        files_in(&tmp).iter().any(|(_, len)| *len > 0)
    });
    put.kill();

    // The server keeps what arrived, for the same put to resume (see
    // tests/tests/resume.rs), and never lists it.
    wait_until("the server keeps the partial upload", || {
        server.stderr().contains("(upload cut off) to resume")
    });
    assert_eq!(files_in(&tmp).len(), 1);
    assert!(files_in(&data.path().join("server-1/blobs")).is_empty());
    assert_eq!(listed(&user.run(&["ls"])), Vec::<String>::new());
    assert!(server.is_running());
    let small = write(work.path(), "small.bin", b"still serving");
    assert!(user.run(&["put", path_str(&small)]).status.success());
    assert_eq!(listed(&user.run(&["ls"])), ["small.bin"]);
}

#[test]
fn an_interrupted_get_keeps_only_its_partial_file_and_the_next_resumes() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // The server sends stop-and-wait, so the download is slow enough to
    // interrupt.
    let (_server, addr) = start_server_with(1, data.path(), &["--window", "1"]);
    let (_balancer, balancer) = start_balancer(&[(1, &addr)]);
    let user = User::new(home.path(), &balancer);
    sign_up(&user, "erin");
    let big = write(work.path(), "big.bin", &vec![1u8; 64 << 20]);
    assert!(user.run(&["put", path_str(&big)]).status.success());

    let dir = work.path().join("downloads");
    std::fs::create_dir(&dir).unwrap();
    let mut get = user.spawn(&["get", "big.bin", path_str(&dir)]);
    // Under way: bytes in its partial file, hidden beside DEST.
    let part = dir.join(".big.bin.ferry-part");
    wait_until("the download is under way", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    get.signal("INT");
    let status = get.wait_exit();
    assert_eq!(status.code(), Some(130), "{}", get.stderr());
    assert!(
        get.stderr()
            .contains("interrupted; run the same command again to resume"),
        "{}",
        get.stderr()
    );
    let names: Vec<String> = files_in(&dir).into_iter().map(|(n, _)| n).collect();
    assert_eq!(names, [".big.bin.ferry-part"]);
    let again = user.run(&["get", "big.bin", path_str(&dir)]);
    assert!(again.status.success(), "{again:?}");
    assert!(again.stderr.contains("resuming at"), "{again:?}");
    assert_eq!(files_in(&dir), [("big.bin".to_string(), 64 << 20)]);
}

#[test]
fn over_quota_or_a_full_disk_fails_the_put_and_keeps_nothing() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server_with(1, data.path(), &["--quota", "1000000"]);
    let (_balancer, balancer) = start_balancer(&[(1, &addr)]);
    let user = User::new(home.path(), &balancer);
    sign_up(&user, "frank");

    let big = write(work.path(), "big.bin", &noise(3, 1_500_000));
    assert_fails(
        &user.run(&["put", path_str(&big)]),
        "over quota: 0 of 1000000 bytes used, 1500000 more needed",
    );
    let small = write(work.path(), "small.bin", &noise(4, 600_000));
    assert!(user.run(&["put", path_str(&small)]).status.success());
    assert_fails(
        &user.run(&["put", path_str(&small), "--as", "again.bin"]),
        "over quota: 600000 of 1000000 bytes used, 600000 more needed",
    );

    // A full disk: every temporary file the server opens is /dev/full.
    let tmp = data.path().join("server-1/tmp");
    let full_disk = cfg!(target_os = "linux") && Path::new("/dev/full").exists();
    if full_disk {
        for n in 1..=200 {
            std::os::unix::fs::symlink("/dev/full", tmp.join(n.to_string())).unwrap();
        }
        let tiny = write(work.path(), "tiny.bin", b"no room for me");
        assert_fails(
            &user.run(&["put", path_str(&tiny)]),
            "not enough space: the disk is full",
        );
        for n in 1..=200 {
            let _ = std::fs::remove_file(tmp.join(n.to_string()));
        }
        assert!(user.run(&["put", path_str(&tiny)]).status.success());
    }
    let mut names = listed(&user.run(&["ls"]));
    names.sort();
    let expect: Vec<&str> = if full_disk {
        vec!["small.bin", "tiny.bin"]
    } else {
        vec!["small.bin"]
    };
    assert_eq!(names, expect);
    assert!(files_in(&tmp).is_empty());
    assert!(server.is_running());
}

#[test]
fn content_damaged_on_a_servers_disk_is_refused_then_replaced_from_another() {
    let data = tempfile::tempdir().unwrap();
    let homes = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let ways = two_ways(data.path(), homes.path(), "a1", "a2");
    let [alice, alice_2] = &ways.users;
    sign_up(alice, "alice");
    let run = alice_2.with_password(&["login", "alice"], PASSWORD);
    assert!(run.status.success(), "{run:?}");

    // An odd size, so its blob is the only file of that size on a disk.
    let content = noise(9, 700_001);
    let local = write(work.path(), "scan.tif", &content);
    assert!(alice.run(&["put", path_str(&local)]).status.success());
    let blobs = data.path().join("server-2/blobs");
    let blob = || {
        files_in(&blobs)
            .into_iter()
            .find(|(_, len)| *len == content.len() as u64)
            .map(|(name, _)| blobs.join(name))
    };
    wait_until("server 2 fetches the content", || blob().is_some());
    let Some(path) = blob() else {
        unreachable!("waited for above");
    };
    // One bit flips on server 2's disk.
    let mut rotten = std::fs::read(&path).unwrap();
    rotten[350_000] ^= 0x01;
    std::fs::write(&path, &rotten).unwrap();

    let dest = work.path().join("copy.tif");
    assert_fails(
        &alice_2.run(&["get", "scan.tif", path_str(&dest)]),
        "the content arrived damaged (digest mismatch); nothing was kept; the server now checks its copy, try again shortly",
    );
    assert!(!dest.exists(), "nothing kept");
    // Server 2 checks its copy, finds it damaged, and fetches it again.
    wait_until("server 2 holds a sound copy again", || {
        std::fs::read(&path).is_ok_and(|b| b == content)
    });
    let run = alice_2.run(&["get", "scan.tif", path_str(&dest)]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(via_server(&run), 2);
    assert_eq!(std::fs::read(&dest).unwrap(), content);
}
