//! Many small files in one command, beside an rsync daemon on the same
//! machine and the same filesystem, printed as figures (not a timed test).
//!
//! ```text
//! cargo bench -p ferry --bench small_files
//! FERRY_BENCH_FILES=1000 FERRY_BENCH_FILE_BYTES=4096 FERRY_BENCH_SERVERS=3 \
//!   FERRY_BENCH_DIR=/dev/shm/small cargo bench -p ferry --bench small_files
//! ```
//!
//! `FERRY_BENCH_FILES` files (default 1000) of `FERRY_BENCH_FILE_BYTES`
//! bytes each (default 4096, noise, new each round) are uploaded with one `ferry put
//! FILE...` and downloaded with one `ferry get NAME... DIR`, against a
//! cluster of `FERRY_BENCH_SERVERS` `ferry server` processes (default 3)
//! and a balancer on loopback; and with `rsync -a` to and from an rsync
//! daemon (`rsync --daemon`, a module on a directory beside the servers'
//! data). Everything lives under `FERRY_BENCH_DIR` (default: a temporary
//! directory; /dev/shm puts it all on tmpfs). Each side runs
//! `FERRY_BENCH_REPEATS` times (default 3) alternately, into fresh
//! destinations (a new ferry user each time); medians are printed, and
//! ferry's time over rsync's (the issue's target: at most 1; goal 0.4).
//! Then, in the same run, one big file of `FERRY_BENCH_BIG_MIB` MiB
//! (default 1024; 0 skips it) goes up and down both ways, as throughput
//! (new content each repeat, so that no server has it already). Without
//! rsync on the PATH, only ferry's figures are printed.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

mod common;
use common::cluster::{wait, Cluster};

const PASSWORD: &str = "benchmark password";

fn main() {
    let files = env_or("FERRY_BENCH_FILES", 1000) as usize;
    let bytes = env_or("FERRY_BENCH_FILE_BYTES", 4096) as usize;
    let servers = env_or("FERRY_BENCH_SERVERS", 3) as usize;
    let repeats = env_or("FERRY_BENCH_REPEATS", 3).max(1) as usize;
    let big_mib = env_or("FERRY_BENCH_BIG_MIB", 1024);
    let ferry = &common::ferry_binary(env!("CARGO_BIN_EXE_ferry"));
    let temp = tempfile::tempdir().expect("temporary directory");
    let dir = match std::env::var_os("FERRY_BENCH_DIR") {
        Some(d) => PathBuf::from(d),
        None => temp.path().to_path_buf(),
    };
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("the bench directory");
    common::use_authority(ferry, &dir);

    let source = dir.join("source");
    std::fs::create_dir_all(&source).expect("source directory");
    let names: Vec<String> = (0..files).map(|i| format!("f{i:05}")).collect();
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let paths: Vec<String> = names
        .iter()
        .map(|n| source.join(n).display().to_string())
        .collect();

    println!("ferry small-files benchmark");
    println!(
        "{files} files of {bytes} bytes in {}; {servers} server(s); medians of {repeats}",
        dir.display()
    );

    let cluster = Cluster::start(ferry, &dir, servers, None);
    let rsync = Rsyncd::start(&dir);
    if rsync.is_none() {
        println!("rsync not found: ferry's figures only");
    }
    let (mut put, mut get, mut rs_up, mut rs_down) = (vec![], vec![], vec![], vec![]);
    let mut big: [Vec<Duration>; 4] = Default::default();
    let (mut put_cpu, mut get_cpu) = (vec![], vec![]);
    for r in 0..repeats {
        // New content each round (a server that holds a blob already
        // keeps it and throws the upload's bytes away, which costs less).
        for name in &names {
            let content = noise(&mut x, bytes);
            std::fs::write(source.join(name), content).expect("write a source file");
        }
        // A fresh user: fresh names, nothing to replace.
        let home = dir.join(format!("home-{r}"));
        std::fs::create_dir_all(&home).expect("home directory");
        let client = |args: &[&str], input: Option<&str>| {
            let mut all = args.to_vec();
            all.extend(["--balancer", &cluster.balancer]);
            run(ferry, &all, &home, input)
        };
        let user = format!("bench{r}");
        wait("the cluster takes a registration", || {
            client(&["register", &user, "--password-stdin"], Some(PASSWORD)).0
        });
        assert!(client(&["login", &user, "--password-stdin"], Some(PASSWORD)).0);

        let mut args = vec!["put"];
        args.extend(paths.iter().map(String::as_str));
        let before = Cpu::now(&cluster.pids());
        let (ok, took) = client(&args, None);
        assert!(ok, "ferry put failed");
        put.push(took);
        put_cpu.push(Cpu::now(&cluster.pids()).since(&before));

        let back = dir.join(format!("back-{r}"));
        std::fs::create_dir_all(&back).expect("download directory");
        let mut args = vec!["get"];
        args.extend(names.iter().map(String::as_str));
        let back_str = back.display().to_string();
        args.push(&back_str);
        let before = Cpu::now(&cluster.pids());
        let (ok, took) = client(&args, None);
        assert!(ok, "ferry get failed");
        get.push(took);
        get_cpu.push(Cpu::now(&cluster.pids()).since(&before));
        let got = std::fs::read_dir(&back).map(|d| d.count()).unwrap_or(0);
        assert_eq!(got, files, "every file downloaded");

        if let Some(rsync) = &rsync {
            let (up, down) = rsync.round(&source, &dir, r);
            rs_up.push(up);
            rs_down.push(down);
        }

        if big_mib > 0 {
            let big_dir = dir.join(format!("big-{r}"));
            std::fs::create_dir_all(&big_dir).expect("big file directory");
            let file = big_dir.join("big.bin");
            write_big(&file, big_mib, r as u64);
            let file_str = file.display().to_string();
            let (ok, took) = client(&["put", &file_str], None);
            assert!(ok, "ferry put of the big file failed");
            big[0].push(took);
            let back = big_dir.join("back");
            std::fs::create_dir_all(&back).expect("download directory");
            let back_str = back.display().to_string();
            let (ok, took) = client(&["get", "big.bin", &back_str], None);
            assert!(ok, "ferry get of the big file failed");
            big[1].push(took);
            let _ = std::fs::remove_dir_all(&back);
            // Three servers' copies of it are not kept for the next round.
            let (ok, _) = client(&["rm", "big.bin"], None);
            assert!(ok, "ferry rm of the big file failed");
            if let Some(rsync) = &rsync {
                let (up, down) = rsync.round(&big_dir, &dir, repeats + r);
                big[2].push(up);
                big[3].push(down);
                rsync.forget(&dir, repeats + r);
            }
            let _ = std::fs::remove_dir_all(&big_dir);
        }
    }
    let (put, get) = (median(put), median(get));
    let per = |d: Duration| d.as_secs_f64() * 1e6 / files as f64;
    println!();
    println!("              upload               download");
    let per_file = |d: Duration| format!("{:>7.0} µs/file", per(d));
    row("ferry", put, get, &per_file);
    if rsync.is_some() {
        let rsync = (median(rs_up), median(rs_down));
        beside_rsync((put, get), rsync, &per_file, "   (target ≤ 1, goal 0.4)");
    }
    println!();
    println!("CPU time (medians)   client      servers, busiest first");
    for (what, mut cpu) in [("upload", put_cpu), ("download", get_cpu)] {
        let client = median(cpu.iter().map(|c| c.client).collect());
        // The busiest is whichever served the command: rank, not server.
        cpu.iter_mut()
            .for_each(|c| c.servers.sort_by(|a, b| b.cmp(a)));
        let servers: Vec<String> = (0..cpu.first().map_or(0, |c| c.servers.len()))
            .map(|i| median(cpu.iter().map(|c| c.servers[i]).collect()))
            .map(|d| format!("{:.3} s", d.as_secs_f64()))
            .collect();
        println!(
            "{what:<16} {:>8.3} s      {}",
            client.as_secs_f64(),
            servers.join("  ")
        );
    }
    if big_mib > 0 {
        let mb_s = |d: Duration| (big_mib << 20) as f64 / 1e6 / d.as_secs_f64();
        let [put, get, up, down] = big.map(median);
        println!();
        println!("one file of {big_mib} MiB   upload               download");
        let speed = |d: Duration| format!("{:>7.0} MB/s     ", mb_s(d));
        row("ferry", put, get, &speed);
        if rsync.is_some() {
            beside_rsync((put, get), (up, down), &speed, "");
        }
    }
    println!();
    println!(
        "Times are whole commands (processes), as a user runs them; ferry's \
         include its TLS handshakes and login proof, and every file is made \
         durable on a majority of the servers before it is acknowledged."
    );
}

/// One line of figures: the upload's and the download's time, each with
/// `figure` of it.
fn row(label: &str, up: Duration, down: Duration, figure: &dyn Fn(Duration) -> String) {
    println!(
        "{label:<9} {:>8.3} s {}  {:>8.3} s {}",
        up.as_secs_f64(),
        figure(up),
        down.as_secs_f64(),
        figure(down)
    );
}

/// rsync's row, and ferry's times over rsync's, with `note` after them.
fn beside_rsync(
    (put, get): (Duration, Duration),
    (up, down): (Duration, Duration),
    figure: &dyn Fn(Duration) -> String,
    note: &str,
) {
    row("rsync", up, down, figure);
    println!(
        "ferry/rsync  {:>6.2}×                  {:>6.2}×{note}",
        put.as_secs_f64() / up.as_secs_f64(),
        get.as_secs_f64() / down.as_secs_f64()
    );
}

/// `len` bytes of xorshift noise, from and advancing `x`.
fn noise(x: &mut u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|_| {
            *x ^= *x << 13;
            *x ^= *x >> 7;
            *x ^= *x << 17;
            *x as u8
        })
        .collect()
}

/// Writes `mib` MiB of noise to `path`, each MiB stamped with its number
/// and `seed` (a new seed: content no server has).
fn write_big(path: &Path, mib: u64, seed: u64) {
    use std::io::Write;
    let mut block = noise(&mut (0x2545_f491_4f6c_dd1du64 ^ seed), 1 << 20);
    let mut out = std::io::BufWriter::new(std::fs::File::create(path).expect("the big file"));
    for i in 0..mib {
        block[..8].copy_from_slice(&i.to_le_bytes());
        block[8..16].copy_from_slice(&seed.to_le_bytes());
        out.write_all(&block).expect("write the big file");
    }
    out.flush().expect("write the big file");
}

/// An rsync daemon with a writable module `bench` on `DIR/rsync`.
struct Rsyncd {
    child: Child,
    url: String,
    module: PathBuf,
}

impl Rsyncd {
    fn start(dir: &Path) -> Option<Rsyncd> {
        let have = Command::new("rsync")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !have {
            return None;
        }
        let module = dir.join("rsync");
        std::fs::create_dir_all(&module).expect("rsync module directory");
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let conf = dir.join("rsyncd.conf");
        // As whoever runs the benchmark (a daemon started by root would
        // otherwise write as nobody).
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        std::fs::write(
            &conf,
            format!(
                "use chroot = no\nreverse lookup = no\nport = {port}\naddress = 127.0.0.1\npid file = {}\n\
                 uid = {uid}\ngid = {gid}\n[bench]\npath = {}\nread only = no\n",
                dir.join("rsyncd.pid").display(),
                module.display()
            ),
        )
        .expect("rsyncd.conf");
        let child = Command::new("rsync")
            .args(["--daemon", "--no-detach", "--config"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the rsync daemon");
        let url = format!("rsync://127.0.0.1:{port}/bench");
        wait("the rsync daemon listens", || {
            std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        });
        Some(Rsyncd { child, url, module })
    }

    /// Uploads `source` into a fresh directory of the module, then
    /// downloads it into a fresh local directory: the two times.
    fn round(&self, source: &Path, dir: &Path, r: usize) -> (Duration, Duration) {
        let up_to = format!("{}/up-{r}/", self.url);
        let from = format!("{}/", source.display());
        let up = timed(Command::new("rsync").args(["-a", &from, &up_to]));
        let down_to = dir.join(format!("rsync-back-{r}"));
        let down = timed(
            Command::new("rsync")
                .args(["-a", &up_to])
                .arg(format!("{}/", down_to.display())),
        );
        let got = std::fs::read_dir(self.module.join(format!("up-{r}")))
            .map(|d| d.count())
            .unwrap_or(0);
        assert!(got > 0, "rsync uploaded nothing");
        (up, down)
    }
}

impl Rsyncd {
    /// Removes what round `r` left in the module and locally.
    fn forget(&self, dir: &Path, r: usize) {
        let _ = std::fs::remove_dir_all(self.module.join(format!("up-{r}")));
        let _ = std::fs::remove_dir_all(dir.join(format!("rsync-back-{r}")));
    }
}

impl Drop for Rsyncd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn timed(cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let out = cmd.stdin(Stdio::null()).output().expect("run rsync");
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "rsync failed: {cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

/// Runs `ferry ARGS` as the user whose FERRY_HOME is `home`: whether it
/// succeeded, and how long it took.
fn run(ferry: &Path, args: &[&str], home: &Path, input: Option<&str>) -> (bool, Duration) {
    let start = Instant::now();
    let (mut child, stderr) = common::client(ferry, args, home, input);
    let ok = child.wait().is_ok_and(|s| s.success());
    if !ok {
        eprint!("{stderr}");
    }
    (ok, start.elapsed())
}

/// CPU time used so far by this process's reaped children (the client
/// commands, each waited for) and by each server process (all threads).
struct Cpu {
    client: Duration,
    servers: Vec<Duration>,
}

impl Cpu {
    fn now(servers: &[u32]) -> Cpu {
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) };
        let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
        Cpu {
            client: tv(usage.ru_utime) + tv(usage.ru_stime),
            servers: servers.iter().map(|&pid| threads_cpu(pid)).collect(),
        }
    }

    fn since(&self, before: &Cpu) -> Cpu {
        Cpu {
            client: self.client.saturating_sub(before.client),
            servers: (self.servers.iter().zip(&before.servers))
                .map(|(a, b)| a.saturating_sub(*b))
                .collect(),
        }
    }
}

/// The CPU time of every thread of process `pid`, in nanoseconds from
/// schedstat (clock ticks would be too coarse for a tenth of a second).
fn threads_cpu(pid: u32) -> Duration {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    let ns: u64 = tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum();
    Duration::from_nanos(ns)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}
