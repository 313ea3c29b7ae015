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
