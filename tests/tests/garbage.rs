//! Garbage on the wire: the peer is cut off, the process keeps serving.

use ferry_tests::{
    connect_ok, noise, send_and_expect_close, send_over_tls_and_expect_close, start_balancer,
    start_server,
};

/// Four kinds of rubbish: random bytes, a length prefix far over the frame
/// limit, a plausible frame with an unknown tag, and a frame that claims
/// more content than it holds.
fn rubbish() -> Vec<(&'static str, Vec<u8>)> {
    let mut unknown_tag = 16u32.to_le_bytes().to_vec();
    unknown_tag.push(0xee);
    unknown_tag.extend(noise(2, 15));
    let mut truncated = 5u32.to_le_bytes().to_vec();
    truncated.push(20); // HELLO, for a server; unknown to the balancer
    truncated.extend(u32::MAX.to_le_bytes());
    vec![
        ("random bytes", noise(1, 1024)),
        ("oversized length prefix", u32::MAX.to_le_bytes().to_vec()),
        ("unknown tag", unknown_tag),
        ("truncated message", truncated),
    ]
}

#[test]
fn garbage_is_cut_off_and_the_cluster_keeps_serving() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, server_addr) = start_server(1, data.path());
    let (mut balancer, balancer_addr) = start_balancer(&[(1, &server_addr)]);
    // The random bytes start with a length prefix over the 256 KiB limit.
    let prefix = noise(1, 4);
    assert!(u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) > 256 * 1024);

    for (what, bytes) in rubbish() {
        for addr in [&balancer_addr, &server_addr] {
            // Outside TLS: the handshake fails; at most a TLS alert
            // record (content type 21) comes back.
            let answer = send_and_expect_close(addr, &bytes);
            assert!(
                answer.is_empty() || answer[0] == 21,
                "{what} to {addr}: {answer:?}"
            );
            // Inside a TLS session: the node itself cuts it off.
            let answer = send_over_tls_and_expect_close(addr, &bytes);
            // A refusal is a framed message; a reset may swallow it, but
            // whatever arrived must be framed.
            if answer.len() >= 4 {
                let len = u32::from_le_bytes([answer[0], answer[1], answer[2], answer[3]]);
                assert_eq!(len as usize, answer.len() - 4, "{what} to {addr}");
            }
        }
        assert!(balancer.is_running() && server.is_running(), "{what}");
        assert_eq!(
            connect_ok(&balancer_addr),
            (1, server_addr.clone()),
            "{what}"
        );
    }
}
