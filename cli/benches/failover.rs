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

use std::fs::OpenOptions;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const PASSWORD: &str = "benchmark password";
const SECRET: &str = "ferry-bench-cluster-secret-0123456789";
/// How long any one wait may take before the benchmark gives up.
const PATIENCE: Duration = Duration::from_secs(30);

fn main() {
    let runs = std::env::var("FERRY_BENCH_RUNS")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(20usize)
        .max(1);
    let ferry = Path::new(env!("CARGO_BIN_EXE_ferry"));
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut cluster = Cluster::start(ferry, dir.path());
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
    assert!(client(&["put", &file, "warm-up"], None));

    println!("ferry failover benchmark: kill -9 the master, time to the first successful put");
    let mut took = Vec::new();
    for i in 1..=runs {
        let master = cluster.master();
        cluster.kill(master);
        let killed = Instant::now();
        let mut tries = 0;
        let name = format!("after-kill-{i}");
        while !client(&["put", &file, &name, "--force"], None) {
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

/// Polls `ok` until it holds, for at most [`PATIENCE`].
fn wait(what: &str, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < PATIENCE,
            "{what}: not within {PATIENCE:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("address").to_string()
}

struct Cluster {
    ferry: PathBuf,
    dir: PathBuf,
    addrs: Vec<String>,
    servers: Vec<Option<Child>>,
    balancer: String,
    _balancer: Child,
}

impl Cluster {
    fn start(ferry: &Path, dir: &Path) -> Cluster {
        let addrs: Vec<String> = (0..3).map(|_| free_addr()).collect();
        let balancer = free_addr();
        let list = addrs.join(",");
        let balancer_proc = Command::new(ferry)
            .args(["balancer", "--listen", &balancer, "--servers", &list])
            .env("FERRY_SECRET", SECRET)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the balancer");
        let mut c = Cluster {
            ferry: ferry.to_path_buf(),
            dir: dir.to_path_buf(),
            addrs,
            servers: vec![None, None, None],
            balancer,
            _balancer: balancer_proc,
        };
        for id in 1..=3 {
            c.spawn(id);
        }
        c
    }

    fn log(&self, id: u32) -> PathBuf {
        self.dir.join(format!("server-{id}.log"))
    }

    fn spawn(&mut self, id: u32) {
        let peers: Vec<String> = self
            .addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(id))
            .expect("server log");
        let data = self.dir.join(format!("server-{id}"));
        let child = Command::new(&self.ferry)
            .args(["server", "--id", &id.to_string(), "--listen"])
            .arg(&self.addrs[id as usize - 1])
            .arg("--data")
            .arg(&data)
            .args(["--master", "1", "--peers", &peers.join(",")])
            .env("FERRY_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start a server");
        self.servers[id as usize - 1] = Some(child);
    }

    fn kill(&mut self, id: u32) {
        if let Some(mut c) = self.servers[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts server `id` on its data and waits until it follows a
    /// master again.
    fn restart(&mut self, id: u32) {
        let from = std::fs::metadata(self.log(id)).map_or(0, |m| m.len()) as usize;
        self.spawn(id);
        let path = self.log(id);
        wait("the restarted server to follow a master", || {
            std::fs::read_to_string(&path)
                .map(|s| s.get(from..).unwrap_or("").contains("following server"))
                .unwrap_or(false)
        });
    }

    /// The server elected in the highest view, from the logs; server 1
    /// (the first master) before any election.
    fn master(&self) -> u32 {
        let mut best = (1, 1);
        for id in 1..=3u32 {
            let Ok(text) = std::fs::read_to_string(self.log(id)) else {
                continue;
            };
            for line in text.lines() {
                let Some(rest) = line.split("elected master of view ").nth(1) else {
                    continue;
                };
                let view: u64 = rest
                    .split(|c: char| !c.is_ascii_digit())
                    .next()
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                if view > best.0 {
                    best = (view, id);
                }
            }
        }
        best.1
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for id in 1..=3 {
            self.kill(id);
        }
        let _ = self._balancer.kill();
    }
}
