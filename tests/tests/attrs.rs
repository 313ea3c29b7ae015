//! Files' modification times and modes through real processes: `ferry put`
//! reads them from the source files, `ferry get` gives them back (to the
//! nanosecond, the `rwx` bits exactly), one file, several, a folder with
//! `-r`; `--no-preserve` and standard output take neither, and a file from
//! standard input has none.

use ferry_tests::{balancer_with_alice, path_str, start_server, Run, User};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

const PASSWORD: &str = "correct horse battery";

fn alice(data: &Path, home: &Path) -> (Vec<ferry_tests::Proc>, User) {
    let (server, addr) = start_server(1, data);
    let (balancer, alice) = balancer_with_alice(&[(1, addr)], home, PASSWORD);
    (vec![server, balancer], alice)
}

/// A file's modification time (seconds, nanoseconds) and permission bits
/// (set-ID and sticky included, to see that they are not there).
fn stamp(path: &Path) -> (i64, i64, u32) {
    let meta = std::fs::metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (meta.mtime(), meta.mtime_nsec(), meta.mode() & 0o7777)
}

/// Writes `content` to `path` and gives it this mode and modification time.
fn make(path: &Path, content: &[u8], mode: u32, secs: u64, nanos: u32) -> PathBuf {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(path, content).unwrap();
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(UNIX_EPOCH + Duration::new(secs, nanos))
        .unwrap();
    file.set_permissions(std::fs::Permissions::from_mode(mode))
        .unwrap();
    path.to_path_buf()
}

fn ok(run: Run) -> Run {
    assert!(run.status.success(), "{run:?}");
    run
}

/// `ls --json`'s file objects, by name.
fn listed(alice: &User) -> serde_json::Map<String, serde_json::Value> {
    let run = ok(alice.run(&["ls", "--json"]));
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).expect("ls --json");
    (doc["files"].as_array().expect("files").iter())
        .map(|f| (f["name"].as_str().expect("name").to_string(), f.clone()))
        .collect()
}

/// The mode a file made now in `dir` gets (0666 less the umask, which the
/// commands this test runs inherit).
fn default_mode(dir: &Path) -> u32 {
    let probe = dir.join(".mode-probe");
    std::fs::write(&probe, b"").unwrap();
    let mode = stamp(&probe).2;
    std::fs::remove_file(probe).unwrap();
    mode
}

/// Was this modification time within the last minute (a download's own)?
fn recent(secs: i64) -> bool {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    (now - 60..=now + 1).contains(&secs)
}

#[test]
fn get_gives_back_the_time_and_mode_put_read_one_file_or_several() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_procs, alice) = alice(data.path(), home.path());
    let src = work.path().join("src");
    // 2001-09-09T01:46:40.123456789Z, and two others.
    let a = make(
        &src.join("a.txt"),
        b"alpha",
        0o640,
        1_000_000_000,
        123_456_789,
    );
    let b = make(&src.join("b.sh"), b"#!/bin/sh\n", 0o755, 1_500_000_000, 1);
    let c = make(&src.join("c"), b"", 0o600, 1_234_567_890, 999_999_999);
    // One file (an upload of its own), then two (a batch).
    ok(alice.run(&["put", path_str(&a)]));
    ok(alice.run(&["put", path_str(&b), path_str(&c)]));

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    ok(alice.run(&["get", "a.txt", "b.sh", "c", path_str(&out)]));
    for (name, src) in [("a.txt", &a), ("b.sh", &b), ("c", &c)] {
        assert_eq!(stamp(&out.join(name)), stamp(src), "{name}");
    }
    // One file to a path of its own.
    let single = out.join("again.txt");
    ok(alice.run(&["get", "a.txt", path_str(&single)]));
    assert_eq!(stamp(&single), (1_000_000_000, 123_456_789, 0o640));
    // Over a file, with --force: it keeps its own mode (a private file
    // stays private) and takes the time.
    ok(alice.run(&["get", "--force", "a.txt", path_str(&out.join("c"))]));
    assert_eq!(stamp(&out.join("c")), (1_000_000_000, 123_456_789, 0o600));

    // ls --json: `modified` is the file's time, `uploaded` the upload's.
    let files = listed(&alice);
    assert_eq!(files["a.txt"]["modified"], "2001-09-09T01:46:40Z");
    assert_eq!(files["a.txt"]["mode"], "0640");
    assert_eq!(files["b.sh"]["mode"], "0755");
    assert_ne!(files["a.txt"]["uploaded"], files["a.txt"]["modified"]);
    assert!(files["a.txt"]["uploaded"]
        .as_str()
        .is_some_and(|u| u.ends_with('Z')));

    // --no-preserve: the time of the download, the mode of a new file.
    let plain = work.path().join("plain");
    std::fs::create_dir(&plain).unwrap();
    ok(alice.run(&["get", "--no-preserve", "a.txt", "b.sh", path_str(&plain)]));
    let default = default_mode(&plain);
    for name in ["a.txt", "b.sh"] {
        let (secs, _, mode) = stamp(&plain.join(name));
        assert!(recent(secs), "{name}: {secs}");
        assert_eq!(mode, default, "{name}");
    }
    // Standard output takes neither, and gets the content.
    let run = ok(alice.run(&["get", "a.txt", "-"]));
    assert_eq!(run.stdout, "alpha");
}

#[test]
fn put_r_and_get_r_give_each_file_of_a_tree_its_own() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_procs, alice) = alice(data.path(), home.path());
    let tree = work.path().join("tree");
    let files = [
        ("top.txt", 0o644, 1_100_000_000, 5),
        ("bin/run", 0o750, 1_200_000_000, 500_000_000),
        ("deep/er/still/notes", 0o400, 1_300_000_000, 42),
        // Set-user-ID: the bit is dropped, the rest kept.
        ("bin/suid", 0o4755, 1_400_000_000, 7),
    ];
    for (name, mode, secs, nanos) in files {
        make(&tree.join(name), name.as_bytes(), mode, secs, nanos);
    }
    ok(alice.run(&["put", "-r", path_str(&tree)]));
    let listed = listed(&alice);
    assert_eq!(listed["tree/bin/suid"]["mode"], "0755");
    assert_eq!(listed["tree/deep/er/still/notes"]["mode"], "0400");

    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    ok(alice.run(&["get", "-r", "tree", path_str(&out)]));
    for (name, mode, secs, nanos) in files {
        let got = out.join("tree").join(name);
        assert_eq!(
            stamp(&got),
            (secs as i64, i64::from(nanos), mode & 0o777),
            "{name}"
        );
        assert_eq!(std::fs::read(&got).unwrap(), name.as_bytes());
    }
}

#[test]
fn a_file_from_standard_input_has_no_time_or_mode_of_its_own() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (_procs, alice) = alice(data.path(), home.path());
    ok(alice.run_with_input(&["put", "-", "--as", "piped"], Some("from a pipe")));
    let files = listed(&alice);
    assert_eq!(files["piped"]["mode"], serde_json::Value::Null);
    assert_eq!(files["piped"]["modified"], files["piped"]["uploaded"]);
    let dest = work.path().join("piped");
    ok(alice.run(&["get", "piped", path_str(&dest)]));
    let (secs, _, mode) = stamp(&dest);
    assert!(recent(secs), "{secs}");
    assert_eq!(mode, default_mode(work.path()));
    assert_eq!(std::fs::read(&dest).unwrap(), b"from a pipe");
}

/// A data directory written by a ferry of protocol 6 (before attributes:
/// its log's uploads are tags 3 and 18, its store has no attrs table)
/// opens under this one, which lists and serves its files without
/// attributes, rebuilds a server that lost its data from that log, and
/// keeps new files' attributes beside them. Run with the old binary:
/// `FERRY_OLD_BIN=/path/to/ferry cargo test -p ferry-tests --test attrs --
/// --ignored`.
#[test]
#[ignore = "needs FERRY_OLD_BIN, a ferry binary of protocol 6"]
fn a_data_directory_of_protocol_6_still_serves() {
    let old = PathBuf::from(std::env::var_os("FERRY_OLD_BIN").expect("FERRY_OLD_BIN"));
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let up_args = [
        "up",
        "--listen",
        "127.0.0.1:0",
        "--data",
        path_str(data.path()),
    ];
    let start = |bin: &Path| {
        let mut up = ferry_tests::Proc::spawn_of(bin, "ferry up", &up_args, &[]);
        let line = up.wait_for_line("balancer listening on");
        (up, ferry_tests::listening_addr(&line))
    };
    let src = work.path().join("src");
    let one = make(&src.join("one"), b"one", 0o644, 1_000_000_000, 0);
    let two = make(&src.join("two"), b"two", 0o644, 1_000_000_000, 0);
    let deep = make(&src.join("tree/sub/deep"), b"deep", 0o644, 1_000_000_000, 0);
    let home_env = [("FERRY_HOME", path_str(home.path()))];
    {
        let (_up, balancer) = start(&old);
        let run = |args: &[&str], input: Option<&str>| {
            let mut args = args.to_vec();
            args.extend(["--balancer", &balancer]);
            ok(ferry_tests::ferry_of(&old, &args, &home_env, input))
        };
        let pw = format!("{PASSWORD}\n");
        run(&["register", "alice", "--password-stdin"], Some(&pw));
        run(&["login", "alice", "--password-stdin"], Some(&pw));
        // A single upload, a batch, a folder: PutFile and PutFiles.
        run(&["put", path_str(&one)], None);
        run(&["put", path_str(&two), path_str(&deep)], None);
        run(&["put", "-r", path_str(&src.join("tree"))], None);
    }
    // Server 3 loses its data: it is rebuilt from the old entries.
    std::fs::remove_dir_all(data.path().join("server-3")).unwrap();
    let (_up, balancer) = start(ferry_tests::ferry_bin());
    let alice = User::new(home.path(), &balancer);
    let files = listed(&alice);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["deep", "one", "tree/sub/deep", "two"]);
    assert!(files.values().all(|f| f["mode"].is_null()));
    let out = work.path().join("out");
    std::fs::create_dir(&out).unwrap();
    // Through every server, the rebuilt one among them.
    for _ in 0..3 {
        ok(alice.run(&["get", "--force", "one", "two", path_str(&out)]));
        assert_eq!(std::fs::read(out.join("two")).unwrap(), b"two");
        assert!(recent(stamp(&out.join("one")).0));
    }
    let run = ok(alice.run(&["status", "--json"]));
    let status: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    for s in status["servers"].as_array().unwrap() {
        assert_eq!(s["behind"], 0, "{s}");
    }
    // New files keep theirs, beside the old ones.
    let new = make(&src.join("new"), b"new", 0o751, 1_234_567_890, 5);
    ok(alice.run(&["put", path_str(&new)]));
    ok(alice.run(&["get", "new", path_str(&out)]));
    assert_eq!(stamp(&out.join("new")), (1_234_567_890, 5, 0o751));
}
