//! Failover time, printed as figures (not a timed test).
//!
//! ```text
//! cargo bench -p ferry --bench failover
//! FERRY_BENCH_RUNS=50 cargo bench -p ferry --bench failover
//! ```
//!
//! Three `ferry server` processes and a `ferry balancer` on loopback, with
//! default timeouts. Each run: find the master (the servers' logs say who
//! was elected last; server 1 before any election), kill -9 it, and time
//! `ferry put` attempts, each a process, until one succeeds: the time from
//! the kill to that success. Then the killed server restarts on its data and
//! the next run waits until it follows the new master, so that every run
//! starts from three servers. Prints every run and the median, minimum and
//! maximum over `FERRY_BENCH_RUNS` (default 20).

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cluster::{wait, Cluster, PATIENCE};

const PASSWORD: &str = "benchmark password";

fn main() {
    let runs = std::env::var("FERRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(20usize)
        .max(1);
    let ferry = &common::ferry_binary(env!("CARGO_BIN_EXE_ferry"));
    let dir = tempfile::tempdir().expect("temporary directory");
    common::use_authority(ferry, dir.path());
    let mut cluster = Cluster::start(ferry, dir.path(), 3, None);
    let home = dir.path().join("home");
    std::fs::create_dir_all(&home).expect("home directory");
    let balancer = cluster.balancer.clone();
    let client = |args: &[&str], input: Option<&str>| {
        let mut all = args.to_vec();
        all.extend(["--balancer", &balancer]);
        run(ferry, &all, &home, input)
    };
    wait("a server for the client", || client(&["connect"], None));
    let pw = format!("{PASSWORD}\n");
    assert!(client(
        &["register", "bench", "--password-stdin"],
        Some(&pw)
    ));
    assert!(client(&["login", "bench", "--password-stdin"], Some(&pw)));
    let file = dir.path().join("file.bin");
    std::fs::write(&file, vec![7u8; 64 * 1024]).expect("the file to put");
    let file = file.to_str().expect("UTF-8 path").to_string();
    assert!(client(&common::put_as(ferry, &file, "warm-up"), None));

    println!("ferry failover benchmark: kill -9 the master, time to the first successful put");
    let mut took = Vec::new();
    for i in 1..=runs {
        let master = cluster.master();
        cluster.kill(master);
        let killed = Instant::now();
        let mut tries = 0;
        let name = format!("after-kill-{i}");
        let mut put = common::put_as(ferry, &file, &name);
        put.push("--force");
        while !client(&put, None) {
            tries += 1;
            assert!(
                killed.elapsed() < PATIENCE,
                "no put {PATIENCE:?} after the kill"
            );
        }
        let t = killed.elapsed();
        println!(
            "run {i:>2}: killed server {master}, first put after {:>7.1} ms ({tries} failed tries)",
            t.as_secs_f64() * 1e3
        );
        took.push(t);
        cluster.restart(master);
    }
    took.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "median {:.1} ms, min {:.1} ms, max {:.1} ms over {runs} runs (target: at most 2000 ms)",
        ms(took[took.len() / 2]),
        ms(took[0]),
        ms(took[took.len() - 1])
    );
}

/// Runs `ferry ARGS` with `home` as FERRY_HOME; true if it succeeded.
fn run(ferry: &Path, args: &[&str], home: &Path, input: Option<&str>) -> bool {
    let mut child = Command::new(ferry)
        .args(args)
        .env("FERRY_HOME", home)
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run ferry");
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        let _ = stdin.write_all(text.as_bytes());
    }
    child.wait().is_ok_and(|s| s.success())
}
