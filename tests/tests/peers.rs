//! `ferry peer` processes against a cluster of three `ferry server`
//! processes: each peer registers through a different server and hears
//! every other in UPDATE; peers connect, PUT and GET files byte for byte;
//! names that leave the directory are refused and nothing outside it is
//! touched; a peer that quits leaves everyone's list.

use ferry_tests::{noise, path_str, start_balancer, wait_connectable, Cluster, Proc, User};
use std::path::{Path, PathBuf};

struct Peer {
    proc: Proc,
    dir: PathBuf,
    addr: String,
}

/// `ferry peer` for `user`, sharing `root/NAME`; its listening address.
fn start_peer(user: &User, root: &Path, name: &str) -> Peer {
    let dir = root.join(name);
    let mut proc = Proc::spawn_interactive(
        &format!("peer {name}"),
        &["peer", "--dir", path_str(&dir), "--listen", "127.0.0.1:0"],
        &[("FERRY_HOME", path_str(&user.home))],
    );
    let line = proc.wait_for_line("peer listening on ");
    let addr = (line.strip_prefix("peer listening on "))
        .and_then(|rest| rest.split(',').next())
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string();
    Peer { proc, dir, addr }
}

fn host_and_port(addr: &str) -> String {
    let (host, port) = addr.rsplit_once(':').expect("HOST:PORT");
    format!("{host} {port}")
}

fn registered_user(home: &Path, balancer: &str, name: &str) -> User {
    let user = User::new(home, balancer);
    for cmd in ["register", "login"] {
        let run = user.with_password(&[cmd, name], "correct horse");
        assert!(run.status.success(), "{cmd} {name}: {run:?}");
    }
    user
}

/// Three servers, a balancer, and alice, bob and carol, each a
/// registered user running `ferry peer` registered through server 1, 2
/// and 3 respectively.
struct World {
    cluster: Cluster,
    balancer: (Proc, String),
    dirs: PathBuf,
    peers: Vec<Peer>,
}

fn three_peers(data: &Path) -> World {
    let cluster = Cluster::start(3, &data.join("servers"));
    let servers: Vec<(u32, &str)> = (1..=3).map(|id| (id, cluster.addr(id))).collect();
    let (balancer_proc, balancer) = start_balancer(&servers);
    wait_connectable(&balancer);
    let dirs = data.join("peers");
    let mut peers: Vec<Peer> = ["alice", "bob", "carol"]
        .iter()
        .map(|name| {
            let home = data.join(format!("home-{name}"));
            let user = registered_user(&home, &balancer, name);
            start_peer(&user, &dirs, name)
        })
        .collect();
    // Each registers through its own server.
    for (i, p) in peers.iter_mut().enumerate() {
        let server = cluster.addr(i as u32 + 1).to_string();
        p.proc.say(&format!("register {}", host_and_port(&server)));
        p.proc.wait_for_line("REGISTER OK");
    }
    World {
        cluster,
        balancer: (balancer_proc, balancer),
        dirs,
        peers,
    }
}

#[test]
fn peers_registered_through_three_servers_see_each_other_and_move_files() {
    let data = tempfile::tempdir().unwrap();
    let World {
        cluster: _cluster,
        balancer,
        dirs,
        mut peers,
    } = three_peers(data.path());

    for p in &mut peers {
        p.proc.wait_for_line("UPDATE: 3 peer(s)");
        p.proc.say("peers");
        for user in ["alice", "bob", "carol"] {
            p.proc.wait_for_line(&format!(" {user} 127.0.0.1:"));
        }
    }

    // alice connects to bob: connection 1 on both sides.
    let bob_addr = peers[1].addr.clone();
    peers[0]
        .proc
        .say(&format!("connect {}", host_and_port(&bob_addr)));
    peers[0].proc.wait_for_line("CONNECT OK 1");
    peers[1].proc.wait_for_line("connection 1: peer");

    // PUT: alice's file lands in bob's directory byte for byte, with a
    // name that needs escaping when shown.
    let content = noise(7, 300_000 + 123);
    let name = "report 2026 (final).bin";
    std::fs::write(peers[0].dir.join(name), &content).unwrap();
    peers[0].proc.say(&format!("put 1 {name}"));
    peers[0]
        .proc
        .wait_for_line("PUT OK 1 report 2026 (final).bin");
    peers[1]
        .proc
        .wait_for_line("received report 2026 (final).bin");
    assert_eq!(std::fs::read(peers[1].dir.join(name)).unwrap(), content);

    // The same name again: PUT FAIL, bob's copy untouched.
    std::fs::write(peers[0].dir.join(name), b"other").unwrap();
    peers[0].proc.say(&format!("put 1 {name}"));
    let line = peers[0].proc.wait_for_line("PUT FAIL 1");
    assert!(line.contains("already"), "{line}");
    assert_eq!(std::fs::read(peers[1].dir.join(name)).unwrap(), content);

    // GET: bob's file comes to alice; an empty file too.
    let theirs = noise(8, 4096 * 3);
    std::fs::write(peers[1].dir.join("from-bob"), &theirs).unwrap();
    std::fs::write(peers[1].dir.join("empty"), b"").unwrap();
    peers[0].proc.say("get 1 from-bob");
    peers[0].proc.wait_for_line("GET OK 1 from-bob");
    assert_eq!(
        std::fs::read(peers[0].dir.join("from-bob")).unwrap(),
        theirs
    );
    peers[0].proc.say("GET 1 empty");
    peers[0].proc.wait_for_line("GET OK 1 empty");
    assert_eq!(std::fs::read(peers[0].dir.join("empty")).unwrap(), b"");

    // Names that leave the directory are refused, and a missing file is
    // GET FAIL; nothing outside either directory is read or written.
    std::fs::write(dirs.join("x"), b"outside").unwrap();
    for bad in ["../x", "/etc/passwd", ".."] {
        peers[0].proc.say(&format!("get 1 {bad}"));
        peers[0].proc.wait_for_line("GET FAIL 1");
    }
    peers[0].proc.say("put 1 ../x");
    peers[0].proc.wait_for_line("PUT FAIL 1");
    peers[0].proc.say("get 1 no-such-file");
    let line = peers[0].proc.wait_for_line("GET FAIL 1 no-such-file");
    assert!(line.contains("no such file"), "{line}");
    assert_eq!(std::fs::read(dirs.join("x")).unwrap(), b"outside");
    let mut outside: Vec<String> = std::fs::read_dir(&dirs)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    outside.sort();
    assert_eq!(outside, ["alice", "bob", "carol", "x"]);

    // A peer that is not registered cannot connect.
    let stranger_home = data.path().join("home-dave");
    let dave = registered_user(&stranger_home, &balancer.1, "dave");
    let mut stranger = start_peer(&dave, &dirs, "dave");
    stranger
        .proc
        .say(&format!("connect {}", host_and_port(&bob_addr)));
    let line = stranger.proc.wait_for_line("CONNECT FAIL 1");
    assert!(line.contains("not registered"), "{line}");

    // carol quits: the others' lists lose her.
    peers[2].proc.say("quit");
    peers[2].proc.wait_for_line("bye");
    for p in &mut peers[..2] {
        p.proc.wait_for_line("UPDATE: 2 peer(s)");
    }
    // bob is killed (-9): his tracker link closes with him, and he leaves
    // alice's list too.
    peers[1].proc.kill();
    peers[0].proc.wait_for_line("UPDATE: 1 peer(s)");
}

/// The regular files of `dir` (not the temporaries' directory), by name.
fn files_of(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(String, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_type().unwrap().is_file())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, std::fs::read(e.path()).unwrap())
        })
        .collect();
    v.sort();
    v
}

fn write_at_time(path: &Path, content: &[u8], secs: u64) {
    std::fs::write(path, content).unwrap();
    let f = std::fs::File::options().write(true).open(path).unwrap();
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs);
    f.set_modified(t).unwrap();
}

#[test]
fn a_sync_round_leaves_three_directories_identical_with_a_conflict_kept_as_two_files() {
    let data = tempfile::tempdir().unwrap();
    // The cluster and the balancer live as long as `world`.
    let mut world = three_peers(data.path());
    let peers = &mut world.peers;
    for p in peers.iter_mut() {
        p.proc.wait_for_line("UPDATE: 3 peer(s)");
    }
    // Each has files of its own; alice and bob hold different "plan.txt",
    // bob's newer; carol's big file crosses in many chunks.
    write_at_time(
        &peers[0].dir.join("plan.txt"),
        b"alice's plan",
        1_700_000_000,
    );
    write_at_time(
        &peers[1].dir.join("plan.txt"),
        b"bob's plan, newer",
        1_700_000_100,
    );
    write_at_time(&peers[0].dir.join("a.txt"), b"only alice", 1_700_000_000);
    write_at_time(&peers[1].dir.join("empty"), b"", 1_700_000_000);
    write_at_time(
        &peers[2].dir.join("big.bin"),
        &noise(3, 1_000_003),
        1_700_000_000,
    );

    peers[1].proc.say("sync");
    peers[1].proc.wait_for_line("SYNC: round");
    // alice's version loses the name: she keeps it aside herself.
    peers[0]
        .proc
        .wait_for_line("kept plan.txt as plan.txt.conflict-");
    for p in peers.iter_mut() {
        p.proc.wait_for_line("SYNC END");
    }
    let want = files_of(&peers[0].dir);
    assert_eq!(files_of(&peers[1].dir), want);
    assert_eq!(files_of(&peers[2].dir), want);
    let names: Vec<&str> = want.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names.len(), 5, "{names:?}");
    assert!(names.contains(&"big.bin") && names.contains(&"empty") && names.contains(&"a.txt"));
    // The conflict: bob's newer version keeps the name, alice's is kept
    // beside it, on every peer.
    for p in peers.iter() {
        assert_eq!(
            std::fs::read(p.dir.join("plan.txt")).unwrap(),
            b"bob's plan, newer"
        );
        let aside: Vec<&(String, Vec<u8>)> = (want.iter())
            .filter(|(n, _)| n.starts_with("plan.txt.conflict-"))
            .collect();
        assert_eq!(aside.len(), 1, "{names:?}");
        assert_eq!(aside[0].1, b"alice's plan");
    }
}
