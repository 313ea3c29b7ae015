//! A balancer and two servers, each its own process, sharing a secret.

use ferry_tests::{connect_ok, start_balancer, start_server};

#[test]
fn balancer_alternates_servers_and_routes_around_a_dead_one() {
    let data = tempfile::tempdir().unwrap();
    let (_s1, a1) = start_server(1, data.path());
    let (mut s2, a2) = start_server(2, data.path());
    let (_balancer, balancer) = start_balancer(&[(1, &a1), (2, &a2)]);

    let got: Vec<(u32, String)> = (0..4).map(|_| connect_ok(&balancer)).collect();
    let ids: Vec<u32> = got.iter().map(|(id, _)| *id).collect();
    assert_eq!(ids, [1, 2, 1, 2], "round-robin: {got:?}");
    for (id, addr) in &got {
        assert_eq!(addr, if *id == 1 { &a1 } else { &a2 });
    }

    s2.kill();
    for _ in 0..4 {
        assert_eq!(connect_ok(&balancer), (1, a1.clone()));
    }
}
