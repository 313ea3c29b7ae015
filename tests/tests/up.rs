//! `ferry up`: a whole cluster in one process.

use ferry_tests::{connect_ok, path_str, Proc};
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
