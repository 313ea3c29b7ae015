//! `ferry up`: a whole cluster in one process.

use ferry_tests::{assert_fails, assert_ok, connect_ok, path_str, Proc, User};
use std::collections::BTreeSet;

#[test]
fn up_serves_clients_from_all_its_servers() {
    let data = tempfile::tempdir().unwrap();
    let mut up = Proc::spawn(
        "ferry up",
        &[
            "up",
            "--servers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path_str(data.path()),
        ],
        &[],
    );
    let line = up.wait_for_line("balancer listening on");
    assert!(line.ends_with("with 2 servers"), "{line}");
    let balancer = ferry_tests::listening_addr(&line);

    let mut ids = BTreeSet::new();
    for _ in 0..4 {
        let (id, addr) = connect_ok(&balancer);
        assert!(addr.starts_with("127.0.0.1:"), "{addr}");
        ids.insert(id);
    }
    assert_eq!(
        ids,
        BTreeSet::from([1, 2]),
        "round-robin reaches both servers"
    );
    for id in 1..=2 {
        assert!(data.path().join(format!("server-{id}")).is_dir());
    }
    assert!(up.is_running());
}

fn start_up(data: &std::path::Path) -> (Proc, String) {
    let mut up = Proc::spawn(
        "ferry up",
        &[
            "up",
            "--servers",
            "3",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path_str(data),
        ],
        &[],
    );
    let line = up.wait_for_line("balancer listening on");
    assert!(line.ends_with("with 3 servers"), "{line}");
    let balancer = ferry_tests::listening_addr(&line);
    (up, balancer)
}

#[test]
fn up_runs_accounts_end_to_end_and_resumes_from_its_data() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let (mut up, balancer) = start_up(data.path());
    let user = User::new(home.path(), &balancer);
    let password = "up and running";
    assert_ok(
        &user.with_password(&["register", "carol"], password),
        "registered carol as user 1",
    );
    assert_ok(
        &user.with_password(&["login", "Carol"], password),
        "logged in as carol (user 1)",
    );
    assert_ok(&user.run(&["whoami"]), "carol (user 1)");

    // Again on the same data: the same cluster, with carol and her session
    // (the made-up cluster secret was kept with the data).
    up.kill();
    let (_up, balancer) = start_up(data.path());
    let user = User::new(home.path(), &balancer);
    assert_ok(&user.run(&["whoami"]), "carol (user 1)");
    assert_fails(
        &user.with_password(&["register", "carol"], password),
        "username taken",
    );
}

/// Without an authority given, `ferry up` keeps its own in its data
/// directory; a client trusts it on first use, remembers it, and refuses
/// a cluster at that address vouched for by another.
#[test]
fn up_keeps_its_own_authority_and_clients_trust_it_on_first_use() {
    let data = tempfile::tempdir().unwrap();
    let home = tempfile::tempdir().unwrap();
    let no_ca = [("FERRY_CA", ""), ("FERRY_CA_KEY", "")];
    let mut up = Proc::spawn(
        "ferry up",
        &[
            "up",
            "--servers",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data",
            path_str(data.path()),
        ],
        &no_ca,
    );
    let line = up.wait_for_line("balancer listening on");
    let balancer = ferry_tests::listening_addr(&line);
    let said = up.wait_for_line("cluster authority");
    let fp = said
        .split_whitespace()
        .find(|w| w.starts_with("blake3:"))
        .expect("the authority's fingerprint")
        .to_string();
    assert!(data.path().join("tls/ca.pem").is_file() && data.path().join("tls/ca.key").is_file());
    let envs = [("FERRY_CA", ""), ("FERRY_HOME", path_str(home.path()))];
    let connect = || ferry_tests::ferry(&["connect", "--balancer", &balancer], &envs);
    let first = connect();
    assert!(first.status.success(), "{first:?}");
    assert!(
        first.stderr.contains("on first use") && first.stderr.contains(&fp),
        "{first:?}"
    );
    let known = std::fs::read_to_string(home.path().join("known_hosts")).unwrap();
    assert_eq!(known.trim(), format!("{balancer} {fp}"));
    let again = connect();
    assert!(
        again.status.success() && !again.stderr.contains("first use"),
        "{again:?}"
    );
    // Another authority remembered for this address: refused, saying so.
    let other = format!("{balancer} blake3:{}\n", "ab".repeat(32));
    std::fs::write(home.path().join("known_hosts"), other).unwrap();
    let refused = connect();
    assert_eq!(refused.status.code(), Some(1), "{refused:?}");
    assert!(
        refused.stderr.contains("authority has changed"),
        "{refused:?}"
    );
    assert!(refused.stderr.contains("known_hosts"), "{refused:?}");
    assert!(up.is_running());
}
