use super::*;
use std::io::Read;

/// Runs `net` until it has an input, and returns what `f` makes of it.
fn next<T>(net: &mut Net, f: impl Fn(Input<'_>) -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        let now = Instant::now();
        if let Some(got) = net.next_input(now).and_then(&f) {
            return got;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "no input");
        net.flush();
        net.wait(Some(now + Duration::from_millis(100)), now)
            .unwrap();
    }
}

#[test]
fn a_peer_that_leaves_too_much_unread_is_reported_closed() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut net = Net::new("test");
    net.listen(listener);
    // Never reads.
    let mut peer = std::net::TcpStream::connect(addr).unwrap();
    let conn = next(&mut net, |input| match input {
        Input::Accepted { conn, .. } => Some(conn),
        _ => None,
    });
    // Far more than the socket buffers and the bound (1 MiB in tests)
    // hold together.
    for _ in 0..(32 << 20) / (64 << 10) {
        net.transmit(conn, vec![7; 64 << 10]);
        net.flush();
    }
    let closed = next(&mut net, |input| match input {
        Input::Closed { conn } => Some(conn),
        Input::Received { .. } => None,
        other => panic!("unexpected {other:?}"),
    });
    assert_eq!(closed, conn);
    // The node was told; the socket is gone, and the peer sees the end
    // after what made it through.
    drop(net);
    let mut got = Vec::new();
    let _ = peer.read_to_end(&mut got);
    assert!(got.len() < 32 << 20, "{} bytes", got.len());
    assert!(got.iter().all(|&b| b == 7));
}
