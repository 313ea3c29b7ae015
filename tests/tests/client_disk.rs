//! The client's disk (docs/security.md): what `get --force` may replace
//! and how, what a killed `get` leaves, and `put` of a file whose size is
//! not known in advance — through real `ferry` processes.

use ferry_tests::{
    assert_fails, noise, path_str, start_balancer, start_server_with, wait_until, Proc, User,
};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

const PASSWORD: &str = "correct horse battery";

/// One server (with `extra` flags), its balancer, and a user signed up as
/// `name`.
fn one_server(data: &Path, home: &Path, name: &str, extra: &[&str]) -> ([Proc; 2], User) {
    let (server, addr) = start_server_with(1, data, extra);
    let (balancer, via) = start_balancer(&[(1, &addr)]);
    let user = User::new(home, &via);
    for cmd in ["register", "login"] {
        let run = user.with_password(&[cmd, name], PASSWORD);
        assert!(run.status.success(), "{cmd}: {run:?}");
    }
    ([server, balancer], user)
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success());
}

fn is_root() -> bool {
    let out = Command::new("id").arg("-u").output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == "0"
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn put(user: &User, local: &Path, name: &str) -> String {
    let run = user.run(&["put", path_str(local), "--as", name]);
    assert!(run.status.success(), "{run:?}");
    run.stdout
}

#[test]
fn get_force_replaces_only_a_regular_file_or_a_link_keeping_mode_and_owner() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, user) = one_server(data.path(), home.path(), "gina", &[]);
    let local = work.path().join("notes.src");
    std::fs::write(&local, b"downloaded").unwrap();
    put(&user, &local, "notes");
    let get = |dest: &Path| user.run(&["get", "notes", path_str(dest), "--force"]);

    // A FIFO: refused before anything is downloaded (the command ends: no
    // hang on the FIFO), and left a FIFO.
    let fifo = work.path().join("fifo");
    mkfifo(&fifo);
    assert_fails(
        &get(&fifo),
        "is a FIFO; --force replaces only a regular file",
    );
    assert!(fifo.symlink_metadata().unwrap().file_type().is_fifo());

    // A socket.
    let sock = work.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    assert_fails(&get(&sock), "is a socket");
    assert!(sock.symlink_metadata().unwrap().file_type().is_socket());

    // A device, where one can be made (root): like /dev/null.
    if is_root() {
        let null = work.path().join("null");
        let made = Command::new("mknod")
            .args([path_str(&null), "c", "1", "3"])
            .status()
            .unwrap();
        assert!(made.success());
        assert_fails(&get(&null), "is a character device");
        assert!(null
            .symlink_metadata()
            .unwrap()
            .file_type()
            .is_char_device());
    } else {
        eprintln!("device case skipped: not root");
    }

    // A directory as DEST: the file goes inside it; an entry inside that
    // is a directory itself is refused.
    let dir = work.path().join("dir");
    std::fs::create_dir(&dir).unwrap();
    assert!(get(&dir).status.success());
    assert_eq!(std::fs::read(dir.join("notes")).unwrap(), b"downloaded");
    std::fs::remove_file(dir.join("notes")).unwrap();
    std::fs::create_dir(dir.join("notes")).unwrap();
    assert_fails(&get(&dir), "is a directory");
    assert!(dir.join("notes").is_dir());

    // A link: the link itself is replaced; its old target is untouched.
    let target = work.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    let link = work.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert!(get(&link).status.success());
    assert!(link.symlink_metadata().unwrap().is_file());
    assert_eq!(std::fs::read(&link).unwrap(), b"downloaded");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");

    // A 0600 file stays 0600.
    let private = work.path().join("private");
    std::fs::write(&private, b"old").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(get(&private).status.success());
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&private).unwrap(), b"downloaded");
    // And its owner, where the test may give it another (root).
    if is_root() {
        std::os::unix::fs::chown(&private, Some(1234), Some(4321)).unwrap();
        assert!(get(&private).status.success());
        let meta = std::fs::metadata(&private).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        assert_eq!(meta.mode() & 0o7777, 0o600);
    }

    // Without --force an existing DEST is refused, as before.
    assert_fails(
        &user.run(&["get", "notes", path_str(&private)]),
        "exists; use --force to replace it",
    );
    // Nothing but what the test made.
    assert_eq!(
        names_in(work.path()),
        [
            "dir",
            "fifo",
            "link",
            "notes.src",
            "null",
            "private",
            "sock",
            "target"
        ]
        .into_iter()
        .filter(|n| *n != "null" || is_root())
        .collect::<Vec<_>>()
    );
}

#[test]
fn a_get_killed_with_9_leaves_only_its_private_partial_file_and_stale_partials_are_removed() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    // Stop-and-wait, so that the download is slow enough to catch.
    let (_procs, user) = one_server(data.path(), home.path(), "hank", &["--window", "1"]);
    let big = work.path().join("big.src");
    std::fs::write(&big, vec![1u8; 64 << 20]).unwrap();
    put(&user, &big, "big.bin");

    let dir = work.path().join("downloads");
    std::fs::create_dir(&dir).unwrap();
    let mut get = user.spawn(&["get", "big.bin", path_str(&dir)]);
    // Under way: bytes in its partial file, hidden beside DEST and
    // readable by its owner only (the content may be private).
    let part = dir.join(".big.bin.ferry-part");
    wait_until("the download is under way", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 0)
    });
    get.kill();
    assert_eq!(names_in(&dir), [".big.bin.ferry-part"], "kept to resume");
    let mode = std::fs::metadata(&part).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // A partial a killed get left where it had to use a named file (an
    // older ferry, or a filesystem without O_TMPFILE): removed by the
    // next get once its process is gone; one of a live process is kept.
    let mut gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    gone.wait().unwrap();
    let stale = dir.join(format!(".big.bin.ferry-partial-{gone_pid}"));
    std::fs::write(&stale, b"left behind").unwrap();
    let live = dir.join(format!(".other.ferry-partial-{}", std::process::id()));
    std::fs::write(&live, b"still being written").unwrap();
    let run = user.run(&["get", "big.bin", path_str(&dir)]);
    assert!(run.status.success(), "{run:?}");
    let live_name = live.file_name().unwrap().to_string_lossy().into_owned();
    assert_eq!(names_in(&dir), [live_name, "big.bin".to_string()]);
    assert_eq!(
        std::fs::metadata(dir.join("big.bin")).unwrap().len(),
        64 << 20
    );
}

/// The bytes of file `name` as downloaded.
fn fetch(user: &User, name: &str, work: &Path) -> Vec<u8> {
    let dest: PathBuf = work.join(format!("{name}.fetched"));
    let run = user.run(&["get", name, path_str(&dest)]);
    assert!(run.status.success(), "{run:?}");
    std::fs::read(&dest).unwrap()
}

/// "stored NAME (…, N bytes)" → N.
fn stored_bytes(stdout: &str) -> u64 {
    let tail = stdout.rsplit(", ").next().unwrap();
    tail.trim_end()
        .trim_end_matches(" bytes)")
        .parse()
        .unwrap_or_else(|_| panic!("{stdout}"))
}

#[test]
fn put_of_a_file_of_unknown_size_stores_exactly_what_was_read() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, user) = one_server(data.path(), home.path(), "ida", &[]);

    // A FIFO fed with known bytes.
    let fifo = work.path().join("fifo");
    mkfifo(&fifo);
    let sent = noise(7, 1_234_567);
    let feeder = {
        let (fifo, sent) = (fifo.clone(), sent.clone());
        std::thread::spawn(move || std::fs::write(&fifo, &sent).unwrap())
    };
    let stdout = put(&user, &fifo, "piped");
    feeder.join().unwrap();
    assert_eq!(stored_bytes(&stdout), sent.len() as u64, "{stdout}");
    assert_eq!(fetch(&user, "piped", work.path()), sent);

    // /proc says 0 bytes; what is stored is what was read, not nothing.
    let stdout = put(&user, Path::new("/proc/self/status"), "status");
    let got = fetch(&user, "status", work.path());
    assert!(!got.is_empty());
    assert_eq!(stored_bytes(&stdout), got.len() as u64);
    assert!(String::from_utf8_lossy(&got).contains("Name:"));
    // Nothing left in the temporary directory by the copies.
    let leftovers: Vec<String> = names_in(&std::env::temp_dir())
        .into_iter()
        .filter(|n| n.starts_with(".ferry-spool-"))
        .collect();
    assert_eq!(leftovers, Vec::<String>::new());
}

#[test]
fn a_file_that_grows_during_its_put_is_stored_whole_and_consistent() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (_procs, user) = one_server(data.path(), home.path(), "jody", &[]);
    let log = work.path().join("log");
    let start = noise(9, 32 << 20);
    std::fs::write(&log, &start).unwrap();
    // Stop-and-wait: slow enough that the file grows while it is sent.
    let mut putting = user.spawn(&["put", path_str(&log), "--as", "log", "--window", "1"]);
    let mut appended = 0;
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
        while putting.is_running() && appended < 64 << 20 {
            f.write_all(&[b'+'; 4096]).unwrap();
            appended += 4096;
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }
    assert!(putting.wait_exit().success(), "{}", putting.stderr());
    assert!(appended > 0, "the file grew during the put");
    assert!(
        putting.stderr().contains("changed while it was being sent"),
        "the change was seen: {}",
        putting.stderr()
    );
    let got = fetch(&user, "log", work.path());
    let now = std::fs::read(&log).unwrap();
    // Not cut at the size it had when the put began: a copy read to its
    // end, a prefix of the file as it is now, stored whole (its digest
    // checked by the server).
    assert!(got.len() > start.len(), "{} bytes", got.len());
    assert_eq!(&now[..got.len()], &got[..]);
}
