//! `ferry status` against three real `ferry server` processes: one master
//! and two followers, all answering at one commit position after some
//! puts; the user's own file count and bytes; then a follower killed
//! (kill -9) shows as not answering within a bounded time, and so does the
//! master once killed in turn, after the others elect a new one. Its JSON
//! is read with a real parser.

use ferry_tests::{balancer_with_alice, path_str, Cluster, Run, User, DEADLINE, POLL};
use serde_json::Value;
use std::path::Path;
use std::time::{Duration, Instant};

const PASSWORD: &str = "correct horse battery";

/// How long a status may take when a server is down: the servers' patience
/// (1.5 s) with room for a loaded machine, well short of a hang.
const BOUNDED: Duration = Duration::from_secs(8);

fn cluster_with_alice(data: &Path, home: &Path) -> (Cluster, ferry_tests::Proc, User) {
    let cluster = Cluster::start(3, data);
    let addrs: Vec<(u32, String)> = (1..=3)
        .map(|id| (id, cluster.addr(id).to_string()))
        .collect();
    let (balancer, alice) = balancer_with_alice(&addrs, home, PASSWORD);
    (cluster, balancer, alice)
}

fn json(run: &Run) -> Value {
    assert!(run.status.success(), "{run:?}");
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:?}"))
}

/// The server `id` of a status document.
fn server(doc: &Value, id: u64) -> &Value {
    doc["servers"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id))
        .unwrap_or_else(|| panic!("no server {id} in {doc}"))
}

/// `ferry status --json`, timed.
fn status(alice: &User) -> (Value, Duration) {
    let began = Instant::now();
    let run = alice.run(&["status", "--json"]);
    (json(&run), began.elapsed())
}

/// Polls `ferry status --json` until `ok` holds of its document, failing
/// at the deadline with the last one.
fn status_until(alice: &User, what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let run = alice.run(&["status", "--json"]);
        if run.status.success() {
            let doc = json(&run);
            if ok(&doc) {
                return doc;
            }
            assert!(Instant::now() < deadline, "{what}: last status {doc}");
        } else {
            // No server to ask (an election): the no-server exit code.
            assert_eq!(run.status.code(), Some(5), "{run:?}");
            assert!(Instant::now() < deadline, "{what}: {run:?}");
        }
        std::thread::sleep(POLL);
    }
}

fn roles(doc: &Value) -> Vec<String> {
    let servers = doc["servers"].as_array().into_iter().flatten();
    servers
        .map(|s| s["role"].as_str().unwrap_or("-").to_string())
        .collect()
}

#[test]
fn status_shows_the_cluster_and_who_is_down() {
    let (data, home, work) = (
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
        tempfile::tempdir().unwrap(),
    );
    let (mut cluster, _balancer, alice) = cluster_with_alice(data.path(), home.path());
    let sizes = [1000usize, 20_000, 333];
    for (i, size) in sizes.iter().enumerate() {
        let path = work.path().join(format!("f{i}"));
        std::fs::write(&path, vec![i as u8; *size]).unwrap();
        let run = alice.run(&["put", path_str(&path)]);
        assert!(run.status.success(), "{run:?}");
    }

    // All three answer, at one commit position once the last commit has
    // reached the followers (a heartbeat away).
    let doc = status_until(&alice, "three servers at one commit", |d| {
        let commits: Vec<&Value> = (1..=3).map(|id| &server(d, id)["commit"]).collect();
        commits.iter().all(|c| c.is_u64() && *c == commits[0])
            && (1..=3).all(|id| server(d, id)["behind"] == 0)
    });
    assert_eq!(roles(&doc), ["master", "follower", "follower"], "{doc}");
    for id in 1..=3 {
        let s = server(&doc, id);
        assert_eq!(s["answering"], true, "{doc}");
        assert_eq!(s["addr"], cluster.addr(id as u32), "{doc}");
        assert!(s["free_disk"].as_u64().is_some_and(|f| f > 0), "{doc}");
        assert!(s["sessions"].as_u64().is_some(), "{doc}");
        assert!(
            s["applied"] == s["commit"] && s["last_index"] == s["commit"],
            "{doc}"
        );
    }
    let total: usize = sizes.iter().sum();
    assert_eq!(doc["user"]["user"], "alice", "{doc}");
    assert_eq!(doc["user"]["files"], 3, "{doc}");
    assert_eq!(doc["user"]["bytes"], total, "{doc}");

    let (_, took) = status(&alice);
    eprintln!("status with every server up: {took:?}");

    // The table for people says the same.
    let run = alice.run(&["status"]);
    assert!(run.status.success(), "{run:?}");
    assert!(run.stdout.starts_with("SERVER"), "{run:?}");
    assert!(run.stdout.contains("3 of 3 servers answered"), "{run:?}");
    let me = format!("alice (user 1): 3 file(s), 20.8 KiB ({total} bytes)");
    assert!(run.stdout.contains(&me), "{run:?}");

    // A follower dies: the others still answer, at once or within the
    // patience, and it shows as not answering.
    cluster.kill(3);
    let (doc, took) = status(&alice);
    eprintln!("status with a follower killed: {took:?}");
    assert!(took < BOUNDED, "status took {took:?} with a server down");
    assert_eq!(server(&doc, 3)["answering"], false, "{doc}");
    assert_eq!(server(&doc, 3)["role"], Value::Null, "{doc}");
    assert_eq!(roles(&doc)[..2], ["master", "follower"], "{doc}");
    let run = alice.run(&["status"]);
    assert!(run.stdout.contains("2 of 3 servers answered"), "{run:?}");

    // Then the master, once 3 is back (two of three make a majority): one
    // of the others is elected, and the old master shows as not answering.
    cluster.restart(3);
    status_until(&alice, "server 3 back", |d| {
        server(d, 3)["answering"] == true
    });
    cluster.kill(Cluster::MASTER);
    let doc = status_until(&alice, "a new master, the old one not answering", |d| {
        server(d, 1)["answering"] == false && roles(d).iter().any(|r| r == "master")
    });
    assert_eq!(doc["servers"].as_array().map(Vec::len), Some(3), "{doc}");
    let (_, took) = status(&alice);
    eprintln!("status with the old master killed: {took:?}");
    assert!(
        took < BOUNDED,
        "status took {took:?} with the old master down"
    );

    // No server at all: nothing to ask, the "no server" exit code.
    cluster.kill(2);
    cluster.kill(3);
    let run = alice.run(&["status"]);
    assert_eq!(run.status.code(), Some(5), "{run:?}");
    assert!(run.stderr.contains("no server available"), "{run:?}");
}
