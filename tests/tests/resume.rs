//! Resuming an interrupted `ferry put` and `ferry get`, through real
//! processes: a client killed with -9 in the middle of 512 MiB, the same
//! command run again, which says "resuming at" and moves only the rest;
//! the file stored and downloaded byte for byte, and nothing partial left.

use ferry_tests::{path_str, wait_until, Proc, User};
use std::io::{BufWriter, Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";
const MIB: u64 = 1 << 20;
/// A command moving hundreds of MiB through a debug build of three
/// servers on two cores may take longer than the usual deadline.
const PATIENCE: Duration = Duration::from_secs(120);

/// A directory for big files: in memory where the machine has one.
fn scratch() -> tempfile::TempDir {
    match Path::new("/dev/shm").is_dir() {
        true => tempfile::tempdir_in("/dev/shm").unwrap(),
        false => tempfile::tempdir().unwrap(),
    }
}

/// Writes `mib` MiB of noise that differs in every MiB to `path`; its
/// BLAKE3.
fn big_file(path: &Path, mib: u64) -> blake3::Hash {
    let mut block = ferry_tests::noise(7, MIB as usize);
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut hasher = blake3::Hasher::new();
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_le_bytes());
        out.write_all(&block).unwrap();
        hasher.update(&block);
    }
    out.flush().unwrap();
    hasher.finalize()
}

fn digest_of(path: &Path) -> blake3::Hash {
    let mut file = std::fs::File::open(path).unwrap();
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0; 1 << 20];
    loop {
        let n = file.read(&mut buf).unwrap();
        if n == 0 {
            return hasher.finalize();
        }
        hasher.update(&buf[..n]);
    }
}

/// `ferry up` with `servers` servers, its data in `data`, and `extra`
/// arguments; its balancer.
fn up(servers: u32, data: &Path, extra: &[&str]) -> (Proc, String) {
    let n = servers.to_string();
    let mut args = vec!["up", "--servers", &n, "--listen", "127.0.0.1:0", "--data"];
    args.push(path_str(data));
    args.extend(extra);
    let mut up = Proc::spawn("ferry up", &args, &[]);
    let line = up.wait_for_line("balancer listening on");
    (up, ferry_tests::listening_addr(&line))
}

/// `ferry up` with one server that sends and acknowledges chunk by chunk
/// (window 1), so that transfers are cut off well before their end; its
/// balancer.
fn up_stop_and_wait(data: &Path) -> (Proc, String) {
    up(1, data, &["--window", "1"])
}

/// [`up_stop_and_wait`] with its data in `work/data`, and `name` signed
/// up through it, their FERRY_HOME in `work/home`.
fn stop_and_wait_user(work: &Path, name: &str) -> (Proc, User) {
    let home = work.join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (cluster, balancer) = up_stop_and_wait(&work.join("data"));
    let user = User::new(&home, &balancer);
    sign_up(&user, name);
    (cluster, user)
}

fn sign_up(user: &User, name: &str) {
    for cmd in ["register", "login"] {
        let run = user.with_password(&[cmd, name], PASSWORD);
        assert!(run.status.success(), "{cmd}: {run:?}");
    }
}

/// The largest temporary file of the servers under `data` (an upload
/// under way, or a copy of it).
fn largest_upload(data: &Path) -> u64 {
    let mut largest = 0;
    for server in std::fs::read_dir(data).unwrap().flatten() {
        let Ok(tmp) = std::fs::read_dir(server.path().join("tmp")) else {
            continue;
        };
        for f in tmp.flatten() {
            largest = largest.max(f.metadata().map_or(0, |m| m.len()));
        }
    }
    largest
}

/// The server a command went through, from its `-v` line.
fn via(stderr: &str) -> String {
    let line = stderr.lines().find(|l| l.starts_with("via server "));
    line.unwrap_or_else(|| panic!("no 'via server' line in {stderr}"))
        .to_string()
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn a_put_and_a_get_killed_mid_way_resume_and_the_file_arrives_byte_identical() {
    let work = scratch();
    let data = work.path().join("data");
    let home = work.path().join("home");
    std::fs::create_dir_all(&home).unwrap();
    let (mut cluster, balancer) = up(3, &data, &[]);
    let user = User::new(&home, &balancer);
    sign_up(&user, "rosa");
    let big = work.path().join("big.bin");
    let size = 512 * MIB;
    let want = big_file(&big, 512);

    // The put, killed once its server holds more than half of the file.
    let mut put = user.spawn(&["put", path_str(&big)]);
    wait_until("half of the upload on a server", || {
        largest_upload(&data) > size / 2
    });
    put.kill();
    let first = via(&put.stderr());
    // The server keeps what arrived, whatever is cut off with it.
    wait_until("the server keeps the part that arrived", || {
        cluster.stderr().contains("(upload cut off) to resume")
    });
    assert!(cluster.is_running());

    let started = Instant::now();
    let again = user.run_within(&["put", path_str(&big)], None, PATIENCE);
    let took = started.elapsed();
    assert!(again.status.success(), "{again:?}");
    assert!(again.stdout.contains("stored big.bin"), "{again:?}");
    assert!(again.stderr.contains("resuming at"), "{again:?}");
    assert_eq!(via(&again.stderr), first, "back to the server that kept it");
    eprintln!(
        "resumed put of 512 MiB: {took:?} ({})",
        again
            .stderr
            .lines()
            .find(|l| l.contains("resuming"))
            .unwrap_or("")
    );
    // Nothing partial left on any server once stored.
    wait_until("no temporary file left of the upload", || {
        largest_upload(&data) == 0
    });

    // The get, killed once half is in its partial file.
    let dir = work.path().join("downloads");
    std::fs::create_dir(&dir).unwrap();
    let part = dir.join(".big.bin.ferry-part");
    let mut get = user.spawn(&["get", "big.bin", path_str(&dir)]);
    wait_until("half of the download in its partial file", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > size / 2)
    });
    get.kill();
    assert_eq!(names_in(&dir), [".big.bin.ferry-part"], "kept to resume");

    let started = Instant::now();
    let again = user.run_within(&["get", "big.bin", path_str(&dir)], None, PATIENCE);
    let took = started.elapsed();
    assert!(again.status.success(), "{again:?}");
    assert!(again.stderr.contains("resuming at"), "{again:?}");
    eprintln!(
        "resumed get of 512 MiB: {took:?} ({})",
        again
            .stderr
            .lines()
            .find(|l| l.contains("resuming"))
            .unwrap_or("")
    );
    assert_eq!(names_in(&dir), ["big.bin"], "no partial file left");
    assert_eq!(digest_of(&dir.join("big.bin")), want, "byte-identical");
}

#[test]
fn a_changed_file_starts_over_and_arrives_as_it_is_now() {
    let work = scratch();
    let data = work.path().join("data");
    let (cluster, user) = stop_and_wait_user(work.path(), "sam");
    let file = work.path().join("f.bin");
    big_file(&file, 24);
    let mut put = user.spawn(&["put", path_str(&file), "--window", "1"]);
    wait_until("part of the upload on the server", || {
        largest_upload(&data) > 4 * MIB
    });
    put.kill();
    wait_until("the server keeps the part that arrived", || {
        cluster.stderr().contains("(upload cut off) to resume")
    });
    // The same name and size, other content: what the server kept is not
    // this file's.
    let mut changed = std::fs::read(&file).unwrap();
    changed[1000] ^= 0xff;
    std::fs::write(&file, &changed).unwrap();
    let again = user.run_within(&["put", path_str(&file)], None, PATIENCE);
    assert!(again.status.success(), "{again:?}");
    assert!(again.stderr.contains("starting over"), "{again:?}");
    assert!(!again.stderr.contains("resuming at"), "{again:?}");

    // A get cut off, of a file replaced on the server meanwhile: it
    // starts over too, and arrives as the server has it now.
    let dir = work.path().join("downloads");
    std::fs::create_dir(&dir).unwrap();
    let part = dir.join(".f.bin.ferry-part");
    let mut get = user.spawn(&["get", "f.bin", path_str(&dir)]);
    wait_until("part of the download in its partial file", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 4 * MIB)
    });
    get.kill();
    changed[2000] ^= 0xff;
    std::fs::write(&file, &changed).unwrap();
    let replaced = user.run_within(&["put", "--force", path_str(&file)], None, PATIENCE);
    assert!(replaced.status.success(), "{replaced:?}");
    let again = user.run_within(&["get", "f.bin", path_str(&dir)], None, PATIENCE);
    assert!(again.status.success(), "{again:?}");
    assert!(again.stderr.contains("starting over"), "{again:?}");
    assert_eq!(names_in(&dir), ["f.bin"], "no partial file left");
    assert_eq!(digest_of(&dir.join("f.bin")), blake3::hash(&changed));
}

#[test]
fn a_get_of_several_files_killed_mid_way_resumes_each_file_it_had_begun() {
    let work = scratch();
    let (cluster, user) = stop_and_wait_user(work.path(), "ada");
    let (a, b) = (work.path().join("a.bin"), work.path().join("b.bin"));
    let (want_a, want_b) = (big_file(&a, 24), big_file(&b, 20));
    let put = user.run_within(&["put", path_str(&a), path_str(&b)], None, PATIENCE);
    assert!(put.status.success(), "{put:?}");

    // One batch for both; killed once part of a.bin is in its partial
    // file.
    let dir = work.path().join("downloads");
    std::fs::create_dir(&dir).unwrap();
    let part = dir.join(".a.bin.ferry-part");
    let mut get = user.spawn(&["get", "a.bin", "b.bin", path_str(&dir)]);
    wait_until("part of a.bin in its partial file", || {
        std::fs::metadata(&part).is_ok_and(|m| m.len() > 4 * MIB)
    });
    get.kill();
    assert!(names_in(&dir).contains(&".a.bin.ferry-part".to_string()));
    assert!(!names_in(&dir).contains(&"a.bin".to_string()));

    let again = user.run_within(&["get", "a.bin", "b.bin", path_str(&dir)], None, PATIENCE);
    assert!(again.status.success(), "{again:?}");
    assert!(
        again.stderr.contains("a.bin: resuming at"),
        "the begun file resumes: {again:?}"
    );
    assert_eq!(names_in(&dir), ["a.bin", "b.bin"], "no partial file left");
    assert_eq!(digest_of(&dir.join("a.bin")), want_a, "byte-identical");
    assert_eq!(digest_of(&dir.join("b.bin")), want_b, "byte-identical");
    drop(cluster);
}
