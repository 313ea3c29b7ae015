//! Transfer throughput and memory, printed as figures (not a timed test).
//!
//! ```text
//! cargo bench -p ferry --bench transfer
//! FERRY_BENCH_BYTES=268435456 cargo bench -p ferry --bench transfer
//! ```
//!
//! Makes a file of `FERRY_BENCH_BYTES` (default 1 GiB) of noise under
//! `FERRY_BENCH_DIR` (default: a temporary directory), then, all over
//! loopback:
//!
//! - **raw copy**: a plain TCP file-to-file copy with 256 KiB buffers
//!   (read, send, receive, write), with and without an fsync at the end;
//! - **bare stop-and-wait**: 4 KiB sent, a 1-byte ack awaited, for as many
//!   chunks as the file has (no files involved);
//! - **ferry put / get** for windows 1, 16 and 256: a one-server cluster
//!   (`ferry server --window W` and `ferry balancer`), `ferry put --window
//!   W` and `ferry get`, each a process, timed from start to exit, with the
//!   peak RSS of the client (from `wait4`) and of the server (VmHWM; the
//!   login, whose password hash takes 19 MiB by design, is done on an
//!   earlier server process).
//!
//! At W = 1 each put and get is also compared with a bare loop run just
//! before it (the VM's speed drifts over a run).
//!
//! - **cluster put / get**: the same at the default window on a cluster
//!   of `FERRY_BENCH_CLUSTER` (default 3; 0 skips it) separate `ferry
//!   server` processes, where a put is answered only once its content is
//!   durable on a majority of the servers.
//!
//! `FERRY_BENCH_WINDOWS=1,16,256` picks the windows. Every figure is the
//! median of `FERRY_BENCH_REPEATS` runs (default 3), each started after a
//! `sync` so that no run pays for the last one's writeback. Ratios are
//! printed against the references.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cluster::{wait, Cluster};

const PASSWORD: &str = "benchmark password";
const RAW_BUFFER: usize = 256 * 1024;
const CHUNK: usize = 4096;

fn main() {
    // `cargo bench` passes `--bench`; nothing else is understood.
    let size: u64 = env_or("FERRY_BENCH_BYTES", 1 << 30);
    let repeats = env_or("FERRY_BENCH_REPEATS", 3).max(1) as usize;
    let windows: Vec<u64> = std::env::var("FERRY_BENCH_WINDOWS")
        .ok()
        .map(|v| v.split(',').filter_map(|w| w.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 16, 256]);
    let _temp;
    let dir = match std::env::var_os("FERRY_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => {
            _temp = tempfile::tempdir().expect("temporary directory");
            _temp.path().to_path_buf()
        }
    };
    std::fs::create_dir_all(&dir).expect("bench directory");
    println!("ferry transfer benchmark");
    println!("machine: {}", machine());
    println!("file: {} ({size} bytes) in {}", mib(size), dir.display());

    let source = dir.join("source.bin");
    make_file(&source, size);

    let raw_out = dir.join("raw.out");
    let raw = median(repeats, || raw_copy(&source, &raw_out, false));
    let raw_sync = median(repeats, || raw_copy(&source, &raw_out, true));
    let _ = std::fs::remove_file(&raw_out);
    println!(
        "raw TCP copy, 256 KiB buffers:   {:>8.1} MB/s   with fsync: {:>8.1} MB/s",
        mbps(size, raw),
        mbps(size, raw_sync)
    );
    let bare = median(repeats, || stop_and_wait(size));
    println!(
        "bare stop-and-wait, 4 KiB + ack: {:>8.1} MB/s   ({:.1} µs per chunk)",
        mbps(size, bare),
        bare.as_secs_f64() * 1e6 / (size.div_ceil(CHUNK as u64).max(1)) as f64
    );

    let ferry = &common::ferry_binary(env!("CARGO_BIN_EXE_ferry"));
    common::use_authority(ferry, &dir);
    let data = dir.join("cluster");
    let home = dir.join("home");
    std::fs::create_dir_all(&home).expect("home directory");
    let dest = dir.join("download.bin");
    {
        // The account, once: the password hash takes 19 MiB of the server
        // by design, which is not what is measured here.
        let up = Up::start(ferry, &data, 256);
        let run = |args: &[&str]| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--balancer", &up.balancer, "--password-stdin"]);
            run_ferry(ferry, &all, &home, Some(PASSWORD))
        };
        let r = run(&["register", "bench"]);
        // Registered before, in a kept FERRY_BENCH_DIR: fine.
        assert!(
            r.ok || r.stderr.contains("username taken"),
            "register: {}",
            r.stderr
        );
        let r = run(&["login", "bench"]);
        assert!(r.ok, "login: {}", r.stderr);
    }
    println!();
    println!(
        "{:>5}  {:>10} {:>7} {:>7} {:>9}  {:>10} {:>7} {:>7} {:>9}  {:>10}",
        "W",
        "put MB/s",
        "/raw",
        "/fsync",
        "client",
        "get MB/s",
        "/raw",
        "/fsync",
        "client",
        "server"
    );
    for &w in &windows {
        let up = Up::start(ferry, &data, w);
        let run = |args: &[&str], input: Option<&str>| {
            let mut all: Vec<&str> = args.to_vec();
            all.extend(["--balancer", &up.balancer]);
            run_ferry(ferry, &all, &home, input)
        };
        up.reset_peak();
        let ws = w.to_string();
        let mut puts = Vec::new();
        let mut gets = Vec::new();
        // At W = 1, each put and get is paired with a bare loop run just
        // before it: the VM's speed drifts over a run, and the ratio is
        // then taken under the same conditions on both sides.
        let mut paired_put = Vec::new();
        let mut paired_get = Vec::new();
        for r in 0..repeats {
            // A new upload every time: the content is removed in between
            // (a server keeps one copy of identical content).
            let name = format!("bench-w{w}-{r}");
            let bare_put = (w == 1).then(|| stop_and_wait(size));
            sync();
            let before = up.cpu();
            let mut args = common::put_as(ferry, path_str(&source), &name);
            args.extend(["--window", &ws]);
            let mut put = run(&args, None);
            put.server_cpu = up.cpu().saturating_sub(before);
            assert!(put.ok, "put: {}", put.stderr);
            if let Some(b) = bare_put {
                paired_put.push(ratio(b, put.took));
            }
            puts.push(put);
            let bare_get = (w == 1).then(|| stop_and_wait(size));
            sync();
            let before = up.cpu();
            let mut get = run(&["get", &name, path_str(&dest), "--force"], None);
            get.server_cpu = up.cpu().saturating_sub(before);
            assert!(get.ok, "get: {}", get.stderr);
            if let Some(b) = bare_get {
                paired_get.push(ratio(b, get.took));
            }
            let got = std::fs::metadata(&dest).map(|m| m.len()).unwrap_or(0);
            assert_eq!(got, size, "downloaded size");
            gets.push(get);
            let _ = std::fs::remove_file(&dest);
            let rm = run(&["rm", &name], None);
            assert!(rm.ok, "rm: {}", rm.stderr);
        }
        let cpu = |runs: &[Ran]| {
            let mut both: Vec<Duration> = runs.iter().map(|r| r.cpu + r.server_cpu).collect();
            both.sort();
            both[both.len() / 2].as_secs_f64() * GIB / size as f64
        };
        let (put_cpu, get_cpu) = (cpu(&puts), cpu(&gets));
        let (put, get) = (middle(puts), middle(gets));
        let server_peak = up.peak_kib();
        println!(
            "{:>5}  {:>10.1} {:>7.2} {:>7.2} {:>9}  {:>10.1} {:>7.2} {:>7.2} {:>9}  {:>10}",
            w,
            mbps(size, put.took),
            ratio(raw, put.took),
            ratio(raw_sync, put.took),
            kib(put.peak_kib),
            mbps(size, get.took),
            ratio(raw, get.took),
            ratio(raw_sync, get.took),
            kib(get.peak_kib),
            kib(server_peak),
        );
        println!(
            "       CPU per GiB, client and server together (median): put {put_cpu:.2} s, get {get_cpu:.2} s"
        );
        if w == 1 {
            println!(
                "       W=1 vs bare stop-and-wait: put {:.2}x, get {:.2}x",
                ratio(bare, put.took),
                ratio(bare, get.took)
            );
            println!(
                "       paired with a bare run just before each: put {}, get {}",
                spread(&mut paired_put),
                spread(&mut paired_get)
            );
        }
    }
    let servers = env_or("FERRY_BENCH_CLUSTER", 3) as usize;
    if servers > 0 {
        cluster_row(
            ferry,
            &dir,
            servers,
            repeats,
            &source,
            size,
            (raw, raw_sync),
        );
    }
    println!();
    println!("MB/s are 10^6 bytes per second; /raw and /fsync are ferry's speed over the raw");
    println!("copy's (without and with fsync: ferry makes every file durable); client and");
    println!("server are peak RSS.");
}

/// Put and get at the default window on a cluster of `servers` separate
/// server processes; `refs`: the raw copy without and with fsync.
fn cluster_row(
    ferry: &Path,
    dir: &Path,
    servers: usize,
    repeats: usize,
    source: &Path,
    size: u64,
    refs: (Duration, Duration),
) {
    let root = dir.join(format!("cluster-of-{servers}"));
    let _ = std::fs::remove_dir_all(&root);
    std::fs::create_dir_all(&root).expect("cluster directory");
    let cluster = Cluster::start(ferry, &root, servers, None);
    let home = root.join("home");
    std::fs::create_dir_all(&home).expect("home directory");
    let run = |args: &[&str], input: Option<&str>| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(["--balancer", &cluster.balancer]);
        run_ferry(ferry, &all, &home, input)
    };
    wait("a server of the cluster", || run(&["connect"], None).ok);
    let pw = format!("{PASSWORD}\n");
    let r = run(&["register", "bench", "--password-stdin"], Some(&pw));
    assert!(r.ok, "register: {}", r.stderr);
    let r = run(&["login", "bench", "--password-stdin"], Some(&pw));
    assert!(r.ok, "login: {}", r.stderr);
    let dest = root.join("download.bin");
    let (mut puts, mut gets) = (Vec::new(), Vec::new());
    for r in 0..repeats {
        let name = format!("bench-cluster-{r}");
        sync();
        let put = run(&common::put_as(ferry, path_str(source), &name), None);
        assert!(put.ok, "put: {}", put.stderr);
        puts.push(put);
        sync();
        let get = run(&["get", &name, path_str(&dest), "--force"], None);
        assert!(get.ok, "get: {}", get.stderr);
        gets.push(get);
        let _ = std::fs::remove_file(&dest);
        let rm = run(&["rm", &name], None);
        assert!(rm.ok, "rm: {}", rm.stderr);
    }
    let (put, get) = (middle(puts), middle(gets));
    let (raw, raw_sync) = refs;
    println!(
        "{:>5}  {:>10.1} {:>7.2} {:>7.2} {:>9}  {:>10.1} {:>7.2} {:>7.2} {:>9}  {:>10}",
        format!("{servers}srv"),
        mbps(size, put.took),
        ratio(raw, put.took),
        ratio(raw_sync, put.took),
        kib(put.peak_kib),
        mbps(size, get.took),
        ratio(raw, get.took),
        ratio(raw_sync, get.took),
        kib(get.peak_kib),
        "-",
    );
    println!(
        "       {servers} servers at the default window: put {:.2} s, get {:.2} s",
        put.took.as_secs_f64(),
        get.took.as_secs_f64()
    );
}

/// The median of `n` timings, each after a `sync`.
fn median(n: usize, mut f: impl FnMut() -> Duration) -> Duration {
    let mut all: Vec<Duration> = (0..n)
        .map(|_| {
            sync();
            f()
        })
        .collect();
    all.sort();
    all[all.len() / 2]
}

/// "median (min–max)" of ratios.
fn spread(ratios: &mut [f64]) -> String {
    ratios.sort_by(f64::total_cmp);
    match (ratios.first(), ratios.get(ratios.len() / 2), ratios.last()) {
        (Some(lo), Some(mid), Some(hi)) => format!("{mid:.2}x ({lo:.2}–{hi:.2})"),
        _ => "-".into(),
    }
}

/// The run of median time (peak RSS: the largest of all runs).
fn middle(mut runs: Vec<Ran>) -> Ran {
    let peak = runs.iter().map(|r| r.peak_kib).max().unwrap_or(0);
    runs.sort_by_key(|r| r.took);
    let mut m = runs.swap_remove(runs.len() / 2);
    m.peak_kib = peak;
    m
}

fn sync() {
    // SAFETY: sync(2) has no arguments and cannot fail.
    unsafe { libc::sync() };
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} cores, {model}")
}

fn mbps(bytes: u64, took: Duration) -> f64 {
    bytes as f64 / took.as_secs_f64().max(1e-9) / 1e6
}

/// How fast `took` is relative to `reference` (2.0: twice as fast).
fn ratio(reference: Duration, took: Duration) -> f64 {
    reference.as_secs_f64() / took.as_secs_f64().max(1e-9)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1 << 20) as f64)
}

fn kib(k: u64) -> String {
    format!("{:.1} MiB", k as f64 / 1024.0)
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("bench paths are UTF-8")
}

/// Noise, fast: xorshift64* words.
fn make_file(path: &Path, size: u64) {
    let mut f = File::create(path).expect("create the source file");
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut block = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for word in block.chunks_exact_mut(8) {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            word.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
        let n = left.min(block.len() as u64) as usize;
        f.write_all(&block[..n]).expect("write the source file");
        left -= n as u64;
    }
    f.sync_all().expect("sync the source file");
}

/// File → socket → file over loopback, one thread each side.
fn raw_copy(source: &Path, dest: &Path, fsync: bool) -> Duration {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let dest = dest.to_path_buf();
    // Truncating the last run's copy frees its pages and blocks, which
    // takes a while: not part of a copy, and not what ferry pays (its
    // downloads land in a new file).
    let _ = std::fs::remove_file(&dest);
    let start = Instant::now();
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut out = File::create(&dest).expect("create");
        let mut buf = vec![0u8; RAW_BUFFER];
        loop {
            let n = s.read(&mut buf).expect("receive");
            if n == 0 {
                break;
            }
            out.write_all(&buf[..n]).expect("write");
        }
        if fsync {
            out.sync_all().expect("fsync");
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    let mut input = File::open(source).expect("open");
    let mut buf = vec![0u8; RAW_BUFFER];
    loop {
        let n = input.read(&mut buf).expect("read");
        if n == 0 {
            break;
        }
        s.write_all(&buf[..n]).expect("send");
    }
    drop(s);
    receiver.join().expect("receiver");
    start.elapsed()
}

/// 4 KiB out, one byte back, for every chunk of a file of `size`.
fn stop_and_wait(size: u64) -> Duration {
    let chunks = size.div_ceil(CHUNK as u64);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("address");
    let receiver = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        s.set_nodelay(true).expect("nodelay");
        let mut buf = [0u8; CHUNK];
        for _ in 0..chunks {
            s.read_exact(&mut buf).expect("receive");
            s.write_all(&[1]).expect("ack");
        }
    });
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let chunk = [7u8; CHUNK];
    let mut ack = [0u8; 1];
    let start = Instant::now();
    for _ in 0..chunks {
        s.write_all(&chunk).expect("send");
        s.read_exact(&mut ack).expect("ack");
    }
    let took = start.elapsed();
    receiver.join().expect("receiver");
    took
}

const GIB: f64 = (1u64 << 30) as f64;

/// A finished `ferry` client command.
struct Ran {
    ok: bool,
    stderr: String,
    took: Duration,
    peak_kib: u64,
    /// The client's CPU time (user and system).
    cpu: Duration,
    /// The server's CPU time during the command (set by the caller).
    server_cpu: Duration,
}

// The child is reaped by `wait4` (for its peak RSS), which clippy cannot see.
#[allow(clippy::zombie_processes)]
fn run_ferry(ferry: &Path, args: &[&str], home: &Path, input: Option<&str>) -> Ran {
    let start = Instant::now();
    let (child, stderr) = common::client(ferry, args, home, input);
    let (status, peak_kib, cpu) = wait_with_peak(&child);
    Ran {
        ok: status == 0,
        stderr,
        took: start.elapsed(),
        peak_kib,
        cpu,
        server_cpu: Duration::ZERO,
    }
}

/// Reaps `child` and returns its exit status, peak RSS in KiB and CPU time.
fn wait_with_peak(child: &Child) -> (i32, u64, Duration) {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value to be overwritten.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our unreaped child; the pointers are valid.
    let r = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(r, pid, "wait4: {}", std::io::Error::last_os_error());
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        -1
    };
    let time = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    let cpu = time(usage.ru_utime) + time(usage.ru_stime);
    (code, usage.ru_maxrss as u64, cpu)
}

/// A one-server cluster: `ferry server` and `ferry balancer` processes on
/// free ports, killed when dropped.
struct Up {
    server: Child,
    balancer_proc: Child,
    balancer: String,
}

const SECRET: &str = "ferry-bench-cluster-secret-0123456789";

/// Starts `ferry ARGS` and returns it with the address of its
/// `listening on ADDR` line.
fn start_listening(ferry: &Path, args: &[&str]) -> (Child, String) {
    let mut child = Command::new(ferry)
        .args(args)
        .env_remove("RUST_LOG")
        .env("FERRY_SECRET", SECRET)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start ferry");
    let stdout = child.stdout.take().expect("stdout");
    let mut addr = None;
    for line in BufReader::new(stdout).lines() {
        let Ok(line) = line else { break };
        if let Some((_, rest)) = line.split_once("listening on ") {
            addr = rest.split_whitespace().next().map(str::to_string);
            break;
        }
    }
    let addr = addr.unwrap_or_else(|| panic!("ferry {args:?} did not start"));
    (child, addr)
}

impl Up {
    fn start(ferry: &Path, data: &Path, window: u64) -> Up {
        let w = window.to_string();
        let (server, addr) = start_listening(
            ferry,
            &[
                "server",
                "--id",
                "1",
                "--listen",
                "127.0.0.1:0",
                "--data",
                path_str(data),
                "--window",
                &w,
            ],
        );
        let servers = format!("1={addr}");
        let (balancer_proc, balancer) = start_listening(
            ferry,
            &["balancer", "--listen", "127.0.0.1:0", "--servers", &servers],
        );
        Up {
            server,
            balancer_proc,
            balancer,
        }
    }

    /// Resets the server's peak RSS to what it uses now.
    fn reset_peak(&self) {
        let path = format!("/proc/{}/clear_refs", self.server.id());
        if let Err(e) = std::fs::write(&path, "5") {
            eprintln!("cannot reset the server's peak RSS ({path}: {e})");
        }
    }

    /// The server's CPU time so far (user and system), from /proc.
    fn cpu(&self) -> Duration {
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", self.server.id())).unwrap_or_default();
        // Fields after the command's closing parenthesis; utime and stime
        // are the 14th and 15th of the line, in clock ticks.
        let fields: Vec<&str> = stat
            .rsplit_once(')')
            .map(|(_, rest)| rest.split_whitespace().collect())
            .unwrap_or_default();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        // SAFETY: sysconf has no memory effects.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
        Duration::from_millis(ticks * 1000 / hz)
    }

    fn peak_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.server.id()))
            .unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Up {
    fn drop(&mut self) {
        for child in [&mut self.server, &mut self.balancer_proc] {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
