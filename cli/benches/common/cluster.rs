//! A cluster of separate `ferry server` processes and a `ferry balancer`
//! on loopback, for the benchmarks that need more than one server.

use std::fs::OpenOptions;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SECRET: &str = "ferry-bench-cluster-secret-0123456789";
/// How long any one wait may take before the benchmark gives up.
pub const PATIENCE: Duration = Duration::from_secs(30);

/// Polls `ok` until it holds, for at most [`PATIENCE`].
pub fn wait(what: &str, mut ok: impl FnMut() -> bool) {
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

pub struct Cluster {
    ferry: PathBuf,
    dir: PathBuf,
    addrs: Vec<String>,
    servers: Vec<Option<Child>>,
    /// `--window` of every server, if not the default.
    window: Option<u64>,
    pub balancer: String,
    balancer_proc: Child,
}

impl Cluster {
    /// `n` servers (server 1 the first master) with their data and logs
    /// under `dir`.
    pub fn start(ferry: &Path, dir: &Path, n: usize, window: Option<u64>) -> Cluster {
        let addrs: Vec<String> = (0..n).map(|_| free_addr()).collect();
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
            servers: (0..n).map(|_| None).collect(),
            window,
            balancer,
            balancer_proc,
        };
        for id in 1..=n as u32 {
            c.spawn(id);
        }
        c
    }

    /// The servers' addresses, server 1's first.
    pub fn addrs(&self) -> &[String] {
        &self.addrs
    }

    /// The running servers' process ids, server 1's first.
    pub fn pids(&self) -> Vec<u32> {
        self.servers.iter().flatten().map(Child::id).collect()
    }

    pub fn log(&self, id: u32) -> PathBuf {
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
        let mut cmd = Command::new(&self.ferry);
        cmd.args(["server", "--id", &id.to_string(), "--listen"])
            .arg(&self.addrs[id as usize - 1])
            .arg("--data")
            .arg(&data)
            .args(["--master", "1", "--peers", &peers.join(",")]);
        if let Some(w) = self.window {
            cmd.args(["--window", &w.to_string()]);
        }
        let child = cmd
            .env("FERRY_SECRET", SECRET)
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start a server");
        self.servers[id as usize - 1] = Some(child);
    }

    pub fn kill(&mut self, id: u32) {
        if let Some(mut c) = self.servers[id as usize - 1].take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Restarts server `id` on its data and waits until it follows a
    /// master again.
    pub fn restart(&mut self, id: u32) {
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
    pub fn master(&self) -> u32 {
        let mut best = (1, 1);
        for id in 1..=self.servers.len() as u32 {
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
        for id in 1..=self.servers.len() as u32 {
            self.kill(id);
        }
        let _ = self.balancer_proc.kill();
        let _ = self.balancer_proc.wait();
    }
}
