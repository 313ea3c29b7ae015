//! A real client's `ferry ls` while one source floods the cluster, printed
//! as figures (not a timed test).
//!
//! ```text
//! cargo bench -p ferry --bench flood
//! FERRY_BENCH_RUNS=50 cargo bench -p ferry --bench flood
//! ```
//!
//! Three `ferry server` processes and a `ferry balancer` on loopback, with
//! default limits. A user is registered and logged in and stores a few
//! files. Then `ferry ls` runs `FERRY_BENCH_RUNS` times (default 30), each a
//! process from 127.0.0.1, quiet, and as many times while one source
//! (127.0.0.2, see `ferry_tests::flood`) floods: two threads ask the
//! balancer for a server back to back, and for every server 100
//! connections that send nothing and 100 idle sessions (HELLO with a code
//! the balancer gave, ACK, then silence) are kept open, each opened again
//! as soon as the server closes it. Quiet and flooded runs alternate in
//! `FERRY_BENCH_ROUNDS` rounds (default 3), so that both see the same
//! background load of a shared machine; each flood runs 2 s before its
//! runs are timed. The flooder's threads run at nice 19: on one machine
//! they stand for another machine, and what is measured is what the flood
//! costs the cluster's processes, not the CPU the flooder takes from them
//! (`FERRY_BENCH_NICE=0` runs them at the usual priority).
//! Prints the median and p90 of both, their ratio (target: the flooded
//! median under 3× the quiet one), and what the flood did.

use ferry_tests::flood::{Flood, Plan, Tally};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cluster::{wait, Cluster};

const PASSWORD: &str = "benchmark password";

const PLAN: Plan = Plan {
    requesters: 2,
    half_open: 100,
    idle: 100,
    nice: true,
};

fn main() {
    let runs = env_or("FERRY_BENCH_RUNS", 30);
    let rounds = env_or("FERRY_BENCH_ROUNDS", 3).min(runs);
    let plan = Plan {
        nice: std::env::var("FERRY_BENCH_NICE").map_or(true, |v| v.trim() != "0"),
        ..PLAN
    };
    let ferry = &common::ferry_binary(env!("CARGO_BIN_EXE_ferry"));
    let dir = tempfile::tempdir().expect("temporary directory");
    common::use_authority(ferry, dir.path());
    let cluster = Cluster::start(ferry, dir.path(), 3, None);
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
    std::fs::write(&file, vec![7u8; 64 * 1024]).expect("a file to put");
    let file = file.to_str().expect("UTF-8 path").to_string();
    for i in 0..5 {
        let name = format!("file-{i}");
        assert!(client(&common::put_as(ferry, &file, &name), None));
    }
    let ls = || {
        let start = Instant::now();
        let ok = client(&["ls"], None);
        (start.elapsed(), ok)
    };
    for _ in 0..3 {
        ls();
    }

    println!(
        "ferry flood benchmark: `ferry ls` from 127.0.0.1, {runs} runs quiet and {runs} \
         flooded, in {rounds} rounds; the flooder at nice {}",
        if plan.nice { 19 } else { 0 }
    );
    let (mut quiet, mut flooded) = (Runs::default(), Runs::default());
    let mut tally = Tally::default();
    for round in 0..rounds {
        // This round's share of the runs.
        let n = runs * (round + 1) / rounds - runs * round / rounds;
        quiet.add(measure(n, &ls));
        let flood = Flood::start(&balancer, cluster.addrs(), plan);
        // Let the flood take what it may hold before measuring.
        std::thread::sleep(Duration::from_secs(2));
        flooded.add(measure(n, &ls));
        tally.add(&flood.stop());
        // What the flood held is let go before the next quiet runs.
        std::thread::sleep(Duration::from_secs(1));
    }
    report("quiet", &mut quiet);
    report("flooded", &mut flooded);
    print_flood(&tally);
    let ratio = median(&flooded.times).as_secs_f64() / median(&quiet.times).as_secs_f64();
    println!("flooded / quiet median: {ratio:.2}x (target: under 3x)");
}

fn env_or(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
        .max(1)
}

#[derive(Default)]
struct Runs {
    times: Vec<Duration>,
    failed: usize,
}

impl Runs {
    fn add(&mut self, more: Runs) {
        self.times.extend(more.times);
        self.failed += more.failed;
    }
}

fn measure(runs: usize, ls: &impl Fn() -> (Duration, bool)) -> Runs {
    let mut times = Vec::new();
    let mut failed = 0;
    for _ in 0..runs {
        let (t, ok) = ls();
        if ok {
            times.push(t);
        } else {
            failed += 1;
        }
    }
    Runs { times, failed }
}

fn median(sorted: &[Duration]) -> Duration {
    sorted[sorted.len() / 2]
}

fn p90(sorted: &[Duration]) -> Duration {
    sorted[(sorted.len() * 9 / 10).min(sorted.len() - 1)]
}

fn report(what: &str, r: &mut Runs) {
    assert!(!r.times.is_empty(), "{what}: every ls failed");
    r.times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    println!(
        "{what:>8}: median {:.1} ms, p90 {:.1} ms, min {:.1} ms, max {:.1} ms; {} failed",
        ms(median(&r.times)),
        ms(p90(&r.times)),
        ms(r.times[0]),
        ms(r.times[r.times.len() - 1]),
        r.failed
    );
}

fn print_flood(t: &Tally) {
    println!(
        "   flood: {} balancer requests ({} assigned, {} told to wait, {} other); \
         {} silent connections opened ({} closed by the servers); \
         {} HELLOs, {} sessions taken ({} closed by the servers); {} connect errors",
        t.requests,
        t.assigned,
        t.told_to_wait,
        t.other_answers,
        t.half_open,
        t.half_open_closed,
        t.hellos,
        t.sessions,
        t.sessions_closed,
        t.connect_errors
    );
}

/// Runs `ferry ARGS` with `home` as FERRY_HOME; true if it succeeded.
fn run(ferry: &Path, args: &[&str], home: &Path, input: Option<&str>) -> bool {
    use std::io::Write;
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
