//! Running out of a resource: the process pauses and recovers, it neither
//! dies nor spins.

use ferry_tests::{start_balancer, start_server_with_fd_limit, wait_connectable, DEADLINE, POLL};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// CPU time (user + system) of process `pid` so far, in clock ticks.
fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc stat");
    // Fields after the command name, which is in parentheses and may hold
    // spaces: state is field 3, utime 14 and stime 15.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    field(14).unwrap_or(0) + field(15).unwrap_or(0)
}

#[test]
fn a_server_out_of_file_descriptors_pauses_accepting_and_recovers() {
    let data = tempfile::tempdir().unwrap();
    let (mut server, addr) = start_server_with_fd_limit(1, data.path(), 48);
    let (_balancer, balancer_addr) = start_balancer(&[(1, &addr)]);
    assert_eq!(wait_connectable(&balancer_addr).0, 1);

    // More connections than the server has descriptors left: the kernel
    // completes them all (the listen backlog), the server accepts until
    // `accept` fails.
    let hogs: Vec<TcpStream> = (0..100)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let deadline = Instant::now() + DEADLINE;
    while !server.stderr().contains("accept failed") {
        assert!(Instant::now() < deadline, "the server never ran out");
        assert!(server.is_running(), "the server died");
        std::thread::sleep(POLL);
    }

    // Out of descriptors it waits between tries instead of spinning on a
    // listener that stays readable: over a second, far less than a core.
    let before = cpu_ticks(server.pid());
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let spent = cpu_ticks(server.pid()) - before;
    let ticks_per_second = 100; // USER_HZ on Linux
    let elapsed = start.elapsed().as_secs_f64();
    assert!(
        (spent as f64) < 0.5 * ticks_per_second as f64 * elapsed,
        "{spent} ticks of CPU in {elapsed:.2} s while out of descriptors"
    );
    assert!(server.is_running(), "the server died");

    // Said once, not at every retry.
    assert_eq!(server.stderr().matches("accept failed").count(), 1);

    // Once the connections go, it serves again.
    drop(hogs);
    assert_eq!(wait_connectable(&balancer_addr).0, 1);
    assert!(server.is_running());
    assert!(server.stderr().contains("accepting connections again"));
}
