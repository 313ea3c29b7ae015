//! Clear failures, never panics: missing peers, missing or bad secrets, bad
//! addresses.

use ferry_tests::{connect, ferry, unused_addr, Proc};
use std::io::{Read, Write};
use std::net::TcpListener;

fn assert_no_panic(stderr: &str) {
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn connect_without_a_balancer_fails_naming_the_balancer() {
    let addr = unused_addr();
    let run = connect(&addr);
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(
        run.stderr.starts_with("error: cannot reach the balancer"),
        "{run:?}"
    );
    assert!(run.stderr.contains(&addr), "{run:?}");
}

#[test]
fn balancer_without_a_secret_refuses_to_start() {
    let mut p = Proc::spawn(
        "balancer",
        &[
            "balancer",
            "--listen",
            "127.0.0.1:0",
            "--servers",
            "127.0.0.1:1",
        ],
        &[],
    );
    let status = p.wait_exit();
    assert_eq!(status.code(), Some(2));
    assert!(
        p.stderr()
            .contains("error: no cluster secret: pass --secret-file PATH or set FERRY_SECRET"),
        "{}",
        p.stderr()
    );
}

#[test]
fn server_refuses_a_short_secret_and_reads_a_trimmed_secret_file() {
    let data = tempfile::tempdir().unwrap();
    let data_s = ferry_tests::path_str(data.path());
    let args = [
        "server",
        "--id",
        "1",
        "--listen",
        "127.0.0.1:0",
        "--data",
        data_s,
    ];
    let run = ferry(&args, &[("FERRY_SECRET", "too-short")]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("at least 16"), "{run:?}");

    // 16 bytes once the newline is trimmed: accepted.
    let file = data.path().join("secret");
    std::fs::write(&file, "0123456789abcdef\n").unwrap();
    let mut with_file: Vec<&str> = args.to_vec();
    with_file.extend(["--secret-file", ferry_tests::path_str(&file)]);
    let mut p = Proc::spawn("server", &with_file, &[]);
    p.wait_listening();

    // 15 bytes once trimmed: refused, naming the file.
    std::fs::write(&file, "  0123456789abcde \n").unwrap();
    let run = ferry(&with_file, &[]);
    assert_eq!(run.status.code(), Some(2), "{run:?}");
    assert!(run.stderr.contains("secret file"), "{run:?}");
    assert!(run.stderr.contains("15 bytes"), "{run:?}");
}

#[test]
fn bad_arguments_are_usage_errors_not_panics() {
    for args in [
        &["connect", "--balancer", "no-port"][..],
        &[
            "balancer",
            "--listen",
            "127.0.0.1:0",
            "--servers",
            "1=a:1,1=b:2",
        ],
        &[
            "server",
            "--id",
            "x",
            "--listen",
            "127.0.0.1:0",
            "--data",
            ".",
        ],
        &["up", "--listen", "127.0.0.1"],
        // Peers without a master, a master that is no peer, a peer without
        // an id.
        &[
            "server",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data",
            ".",
            "--peers",
            "2=127.0.0.1:1",
        ],
        &[
            "server",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data",
            ".",
            "--master",
            "3",
            "--peers",
            "2=127.0.0.1:1",
        ],
        &[
            "server",
            "--id",
            "1",
            "--listen",
            "127.0.0.1:0",
            "--data",
            ".",
            "--master",
            "1",
            "--peers",
            "127.0.0.1:1",
        ],
    ] {
        let run = ferry(args, &[("FERRY_SECRET", ferry_tests::SECRET)]);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {run:?}");
        assert!(run.stderr.contains("error"), "{args:?}: {run:?}");
        assert_no_panic(&run.stderr);
    }
}

#[test]
fn listen_address_in_use_is_a_clear_error() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let run = ferry(
        &["balancer", "--listen", &addr, "--servers", "127.0.0.1:1"],
        &[("FERRY_SECRET", ferry_tests::SECRET)],
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("error: cannot listen on {addr}")),
        "{run:?}"
    );
}

/// A "balancer" that does not speak TLS, answering the client's hello with
/// a cleartext NO SERVER frame, is refused with a clear error and no panic.
/// (Numbers that do not add up in a real NO SERVER are the core client
/// tests' business.)
#[test]
fn connect_refuses_a_balancer_without_tls() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let fake = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut request = [0u8; 64];
        let _ = s.read(&mut request);
        // Frame: u32 LE length 17, tag 3 (NoServer), probed 0, busy 1,
        // no master 2, catching up 0.
        let mut frame = vec![17, 0, 0, 0, 3];
        for n in [0u32, 1, 2, 0] {
            frame.extend(n.to_le_bytes());
        }
        s.write_all(&frame).unwrap();
    });
    let run = connect(&addr);
    fake.join().unwrap();
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.starts_with("error: the balancer is not trusted"),
        "{run:?}"
    );
    assert_no_panic(&run.stderr);
}

#[test]
fn two_servers_on_one_data_directory_is_a_clear_error() {
    let data = tempfile::tempdir().unwrap();
    let (_first, _) = ferry_tests::start_server(1, data.path());
    let dir = data.path().join("server-1");
    let run = ferry(
        &[
            "server",
            "--id",
            "2",
            "--listen",
            "127.0.0.1:0",
            "--data",
            ferry_tests::path_str(&dir),
        ],
        &[("FERRY_SECRET", ferry_tests::SECRET)],
    );
    assert_eq!(run.status.code(), Some(1), "{run:?}");
    assert!(
        run.stderr.contains("is in use by another ferry server"),
        "{run:?}"
    );
    assert_no_panic(&run.stderr);
}
