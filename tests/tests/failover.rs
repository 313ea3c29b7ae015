//! Three `ferry server` processes and a balancer on loopback: the master is
//! killed (kill -9), the others elect another and take uploads; the old
//! master comes back on its data, follows, catches up, and serves what was
//! put while it was down.

use ferry_tests::{
    balancer_with_alice, noise, path_str, via_server, Cluster, User, DEADLINE, POLL,
};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

fn write(dir: &Path, name: &str, content: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, content).unwrap();
    path
}

#[test]
fn killing_the_master_elects_another_and_it_rejoins_as_a_follower() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let work = tempfile::tempdir().unwrap();
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let before = noise(1, 50_000);
    let run = alice.run(&["put", path_str(&write(work.path(), "before.bin", &before))]);
    assert!(run.status.success(), "{run:?}");

    cluster.kill(Cluster::MASTER);
    let killed = Instant::now();
    let after = noise(2, 70_000);
    let local = write(work.path(), "after.bin", &after);
    // A put fails (no server, no master yet) until a new master is
    // elected; then it must succeed, within 10 s of the kill.
    let mut tries = Vec::new();
    loop {
        let run = alice.run(&["put", path_str(&local)]);
        if run.status.success() {
            break;
        }
        tries.push(run.stderr.clone());
        assert!(
            killed.elapsed() < Duration::from_secs(10),
            "no put within 10 s of killing the master: {tries:#?}"
        );
        std::thread::sleep(POLL);
    }
    let took = killed.elapsed();
    eprintln!(
        "first put {took:?} after the kill, {} failed tries",
        tries.len()
    );
    for t in &tries {
        assert!(
            t.contains("no server available") || t.contains("unavailable"),
            "a clear error while the cluster elects: {t}"
        );
    }

    // The old master restarts on its data and, following the new one,
    // serves what was put while it was down.
    cluster.restart(Cluster::MASTER);
    let deadline = Instant::now() + DEADLINE;
    let dest = work.path().join("got.bin");
    loop {
        let _ = std::fs::remove_file(&dest);
        let run = alice.run(&["get", "after.bin", path_str(&dest), "--force"]);
        if run.status.success() && via_server(&run) == Cluster::MASTER {
            assert_eq!(std::fs::read(&dest).unwrap(), after);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the old master never served after.bin: {run:?}"
        );
        std::thread::sleep(POLL);
    }
    let run = alice.run(&["get", "before.bin", path_str(&dest), "--force"]);
    assert!(run.status.success(), "{run:?}");
    assert_eq!(std::fs::read(&dest).unwrap(), before);
}

/// A cluster of three servers and a balancer, alice registered and logged
/// in: what the tests below start from.
fn cluster_with_alice(data: &Path, home: &Path) -> (Cluster, ferry_tests::Proc, User) {
    let cluster = Cluster::start(3, data);
    let addrs: Vec<(u32, String)> = (1..=3)
        .map(|id| (id, cluster.addr(id).to_string()))
        .collect();
    let (balancer, alice) = balancer_with_alice(&addrs, home, PASSWORD);
    (cluster, balancer, alice)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().unwrap()
}

/// The server of a running command's first session, from its `-v` line.
fn first_via(stderr: &str) -> Option<u32> {
    stderr.lines().find_map(|l| {
        l.strip_prefix("via server ")?
            .split(' ')
            .next()?
            .parse::<u32>()
            .ok()
    })
}

/// "stored" means on a majority of disks: killing the server that took
/// the upload right after its answer loses nothing, and `get` works
/// through the others (after an election, if it was the master).
#[test]
fn a_stored_file_survives_losing_the_server_that_took_it() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let content = noise(3, 300_000);
    let run = alice.run(&["put", path_str(&write(work.path(), "kept.bin", &content))]);
    assert!(run.status.success(), "{run:?}");
    let took = via_server(&run);
    cluster.kill(took);

    let dest = work.path().join("got.bin");
    let deadline = Instant::now() + DEADLINE;
    loop {
        let run = alice.run(&["get", "kept.bin", path_str(&dest), "--force"]);
        if run.status.success() {
            assert_ne!(via_server(&run), took);
            assert_eq!(std::fs::read(&dest).unwrap(), content);
            break;
        }
        // Only while a new master is elected (the one killed led).
        assert!(
            run.stderr.contains("no server available") || run.stderr.contains("unavailable"),
            "{run:?}"
        );
        assert!(
            Instant::now() < deadline,
            "kept.bin never came back: {run:?}"
        );
        std::thread::sleep(POLL);
    }
}

/// A `get` whose server is killed while it runs asks the balancer once more
/// and gets the file from another server.
#[test]
fn a_download_whose_server_dies_is_tried_once_more_through_the_balancer() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let content = noise(4, 32 << 20);
    let run = alice.run(&["put", path_str(&write(work.path(), "big.bin", &content))]);
    assert!(run.status.success(), "{run:?}");
    let dest = work.path().join("got.bin");
    // The download may beat the kill, or go through the master (whose
    // loss means an election first): then another try.
    for _ in 0..6 {
        let _ = std::fs::remove_file(&dest);
        let mut get = alice.spawn(&["get", "big.bin", path_str(&dest)]);
        let mut via = None;
        ferry_tests::wait_until("the get's 'via server' line", || {
            via = first_via(&get.stderr());
            via.is_some() || !get.is_running()
        });
        let Some(via) = via.filter(|v| *v != Cluster::MASTER) else {
            get.wait_exit();
            continue;
        };
        cluster.kill(via);
        let status = get.wait_exit();
        let stderr = get.stderr();
        assert!(status.success(), "{stderr}");
        assert_eq!(std::fs::read(&dest).unwrap(), content);
        if stderr.contains("trying once more through the balancer") {
            let again = stderr
                .lines()
                .filter(|l| l.starts_with("via server "))
                .nth(1);
            assert!(
                again.is_some_and(|l| !l.starts_with(&format!("via server {via} "))),
                "{stderr}"
            );
            return;
        }
        // Done before the kill: bring the server back and try again.
        cluster.restart(via);
    }
    panic!("no download was cut by the kill of its server in 6 tries");
}

/// A `get` of many files whose server is killed once some have landed
/// asks the balancer once more, and the second try lands every file:
/// those the first try put in place are its own to replace, not
/// destinations that "exist".
#[test]
fn a_batch_of_downloads_whose_server_dies_midway_lands_every_file() {
    let (data, home, work) = (tempdir(), tempdir(), tempdir());
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let files: Vec<(String, Vec<u8>)> = (0..24)
        .map(|i| (format!("part-{i:02}.bin"), noise(100 + i, 2 << 20)))
        .collect();
    let mut put = vec!["put".to_string()];
    for (name, content) in &files {
        put.push(path_str(&write(work.path(), name, content)).to_string());
    }
    let put: Vec<&str> = put.iter().map(String::as_str).collect();
    let run = alice.run(&put);
    assert!(run.status.success(), "{run:?}");
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    let landed = |dir: &Path| names.iter().filter(|n| dir.join(n).exists()).count();
    for attempt in 0..6 {
        let out = work.path().join(format!("out-{attempt}"));
        std::fs::create_dir(&out).unwrap();
        let mut args = vec!["get"];
        args.extend(&names);
        args.push(path_str(&out));
        let mut get = alice.spawn(&args);
        let mut via = None;
        ferry_tests::wait_until("the get's 'via server' line and a file landed", || {
            via = first_via(&get.stderr());
            (via.is_some() && landed(&out) > 0) || !get.is_running()
        });
        let Some(via) = via.filter(|v| *v != Cluster::MASTER && landed(&out) < files.len()) else {
            get.wait_exit();
            continue;
        };
        cluster.kill(via);
        let status = get.wait_exit();
        let stderr = get.stderr();
        assert!(status.success(), "{stderr}");
        for (name, content) in &files {
            assert_eq!(&std::fs::read(out.join(name)).unwrap(), content, "{name}");
        }
        if stderr.contains("trying once more through the balancer") {
            return;
        }
        // Done before the kill: bring the server back and try again.
        cluster.restart(via);
    }
    panic!("no batch of downloads was cut by the kill of its server in 6 tries");
}

/// A `put` of a folder loses its server after two batches were stored:
/// the command runs again through another server (after an election, if
/// that was the master) and ends with every file stored once, and told so.
/// (The second try used to number its batches by the transactions they
/// ordered: those of the first try, there already, ordered none, so the
/// later batches took the numbers of batches applied before, and were
/// answered "stored" without being applied, or "username taken".)
#[test]
fn a_put_of_many_files_that_loses_its_server_midway_stores_each_once() {
    let (data, home, work) = (tempdir(), tempdir(), tempdir());
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let tree = work.path().join("many");
    std::fs::create_dir(&tree).unwrap();
    for i in 0..3000 {
        std::fs::write(tree.join(format!("f{i:04}")), i.to_string()).unwrap();
    }
    let mut put = alice.spawn(&["put", "-r", path_str(&tree)]);
    let deadline = Instant::now() + DEADLINE;
    let mut via = None;
    // Two batches are answered: then their server goes.
    let answered = |log: &str| log.matches("UploadMany on").count();
    loop {
        via = via.or_else(|| first_via(&put.stderr()));
        if let Some(id) = via {
            if answered(&cluster.stderr_of(id)) >= 2 {
                cluster.kill(id);
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no batch stored: {}",
            put.stderr()
        );
        std::thread::sleep(POLL);
    }
    let status = put.wait_exit();
    assert!(status.success(), "{}", put.stderr());
    let stderr = put.stderr();
    assert!(stderr.contains("trying once more"), "{stderr}");
    // The second try sends what the first was not answered, not the
    // command again: of its 12 batches (256 files each), at least the
    // first went through the server killed.
    let again: usize = (1..=3).map(|id| answered(&cluster.stderr_of(id))).sum();
    let batches = 3000usize.div_ceil(ferry_core::replication::entry::BATCH_FILES);
    assert!(again < batches, "{again} of {batches} batches sent again");
    let run = alice.run(&["ls", "--json", "many"]);
    assert!(run.status.success(), "{run:?}");
    let doc: serde_json::Value = serde_json::from_str(run.stdout.trim()).unwrap();
    assert_eq!(
        doc["files"].as_array().unwrap().len(),
        3000,
        "every file, once"
    );
}
