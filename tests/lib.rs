//! Helpers for the black-box tests in `tests/`: they start real `ferry`
//! processes and talk to them over loopback TCP.
//!
//! **Finding the binary.** This crate cannot see `CARGO_BIN_EXE_ferry` (that
//! exists only for the `ferry` package's own tests), so [`ferry_bin`] runs
//! `cargo build -p ferry --bin ferry` once per test binary, with the same
//! cargo, target directory and profile as the tests themselves (read off
//! `current_exe()`, which lives in `<target>/<profile>/deps/`). When the
//! binary is fresh that is a no-op taking a fraction of a second, and it
//! means `cargo test -p ferry-tests` never runs a stale `ferry`. Set
//! `FERRY_BIN=/path/to/ferry` to test a prebuilt binary instead.
//!
//! **No sleeps for synchronisation.** Long-running processes print a
//! `listening on ADDR` line once they accept connections; tests wait for that
//! line. Every wait has a deadline, and every child is killed on drop.

pub mod flood;
pub mod netns;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How long any one wait in a test may take.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// A cluster secret for tests that run a balancer and servers separately.
pub const SECRET: &str = "ferry-tests-cluster-secret-0123456789";

/// Environment variables of the test's own environment that would change
/// how `ferry` behaves; children never inherit them.
const SCRUBBED_ENV: &[&str] = &[
    "FERRY_SECRET",
    "FERRY_BALANCER",
    "FERRY_HOME",
    "XDG_CONFIG_HOME",
    "RUST_LOG",
    "FERRY_CA",
    "FERRY_CA_KEY",
    "FERRY_CERT",
    "FERRY_KEY",
];

/// The cluster authority every process of these tests trusts, made once
/// per test binary by `ferry ca init`: members get `FERRY_CA` and
/// `FERRY_CA_KEY` (each issues itself a certificate at start), clients
/// `FERRY_CA`. A test passes `("FERRY_CA", "")` to run without one (a
/// client then trusts on first use).
pub fn test_authority() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("ferry-tests-ca-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let out = Command::new(ferry_bin())
            .args(["ca", "init", "--dir"])
            .arg(&dir)
            .output()
            .expect("run ferry ca init");
        assert!(out.status.success(), "ferry ca init: {out:?}");
        dir
    })
}

/// How often a test re-checks a condition it polls for (a poll interval,
/// never a stand-in for synchronisation: every poll has a deadline).
pub const POLL: Duration = Duration::from_millis(50);

/// The `ferry` binary, built if needed (see the crate docs).
pub fn ferry_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| match std::env::var_os("FERRY_BIN") {
        Some(bin) => PathBuf::from(bin),
        None => build_ferry(),
    })
}

fn build_ferry() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test executable is in <target>/<profile>/deps");
    let target_dir = profile_dir.parent().expect("target directory");
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .expect("profile directory name");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let manifest = Path::new(env!("CARGO_MANIFEST_DIR")).join("../Cargo.toml");
    let mut cmd = Command::new(cargo);
    cmd.args(["build", "--quiet", "-p", "ferry", "--bin", "ferry"])
        .arg("--manifest-path")
        .arg(&manifest)
        .arg("--target-dir")
        .arg(target_dir);
    match profile {
        "debug" => {}
        "release" => {
            cmd.arg("--release");
        }
        other => {
            cmd.args(["--profile", other]);
        }
    }
    let status = cmd.status().expect("run cargo build for the ferry binary");
    assert!(status.success(), "cargo build of the ferry binary failed");
    profile_dir.join(format!("ferry{}", std::env::consts::EXE_SUFFIX))
}

fn ferry_command(args: &[&str], envs: &[(&str, &str)]) -> Command {
    ferry_command_of(ferry_bin(), args, envs)
}

fn ferry_command_of(bin: &Path, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(args);
    prepare(&mut cmd, envs);
    cmd
}

/// `ferry ARGS` run through `sh` with at most `limit` open file descriptors
/// (`ulimit -n`), for tests of running out of them.
fn ferry_command_with_fd_limit(limit: u32, args: &[&str], envs: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new("sh");
    cmd.arg("-c")
        .arg(format!("ulimit -n {limit} && exec \"$0\" \"$@\""))
        .arg(ferry_bin())
        .args(args);
    prepare(&mut cmd, envs);
    cmd
}

pub(crate) fn prepare(cmd: &mut Command, envs: &[(&str, &str)]) {
    for var in SCRUBBED_ENV {
        cmd.env_remove(var);
    }
    let ca = test_authority();
    cmd.env("FERRY_CA", ca.join("ca.pem"));
    cmd.env("FERRY_CA_KEY", ca.join("ca.key"));
    for (name, value) in envs {
        if value.is_empty() && name.starts_with("FERRY_C") {
            cmd.env_remove(name);
        } else {
            cmd.env(name, value);
        }
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

/// Collects a pipe's text on a thread, which ends when the pipe closes.
fn collect(mut pipe: impl Read + Send + 'static) -> (Arc<Mutex<String>>, JoinHandle<()>) {
    let text = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&text);
    let reader = thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                break;
            }
            let chunk = String::from_utf8_lossy(&buf[..n]);
            sink.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push_str(&chunk);
        }
    });
    (text, reader)
}

fn text_of(text: &Arc<Mutex<String>>) -> String {
    text.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A long-running `ferry` process, killed when dropped. Its stdout is read
/// line by line; its stderr (the logs) is kept and printed if the test fails.
pub struct Proc {
    name: String,
    child: Child,
    /// Standard input, for processes that read commands
    /// ([`Proc::spawn_interactive`]).
    stdin: Option<std::process::ChildStdin>,
    lines: Receiver<String>,
    stdout_seen: Vec<String>,
    stderr: Arc<Mutex<String>>,
    stderr_reader: Option<JoinHandle<()>>,
}

impl Proc {
    pub fn spawn(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Proc::start(name, ferry_command(args, envs))
    }

    /// Like [`Proc::spawn`], another build of ferry (`bin`): for tests of
    /// what an earlier version left.
    pub fn spawn_of(bin: &Path, name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        Proc::start(name, ferry_command_of(bin, args, envs))
    }

    /// Like [`Proc::spawn`], with at most `limit` open file descriptors.
    pub fn spawn_with_fd_limit(
        name: &str,
        limit: u32,
        args: &[&str],
        envs: &[(&str, &str)],
    ) -> Proc {
        Proc::start(name, ferry_command_with_fd_limit(limit, args, envs))
    }

    /// Like [`Proc::spawn`], with standard input a pipe that
    /// [`Proc::say`] writes lines to.
    pub fn spawn_interactive(name: &str, args: &[&str], envs: &[(&str, &str)]) -> Proc {
        let mut cmd = ferry_command(args, envs);
        cmd.stdin(Stdio::piped());
        Proc::start(name, cmd)
    }

    /// Writes `line` to the process's standard input.
    pub fn say(&mut self, line: &str) {
        use std::io::Write;
        let stdin = (self.stdin.as_mut()).unwrap_or_else(|| panic!("{}: no stdin", self.name));
        let written = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        written.unwrap_or_else(|e| panic!("{}: cannot write {line:?}: {e}", self.name));
    }

    /// Closes the process's standard input (end of input).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    pub(crate) fn start(name: &str, mut cmd: Command) -> Proc {
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("piped stdout");
        let (stderr, stderr_reader) = collect(child.stderr.take().expect("piped stderr"));
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc {
            name: name.to_string(),
            child,
            stdin,
            lines,
            stdout_seen: Vec::new(),
            stderr,
            stderr_reader: Some(stderr_reader),
        }
    }

    /// Waits for a stdout line containing `needle` and returns it.
    pub fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.stdout_seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "{}: no line with {needle:?} within {DEADLINE:?}; stdout so far: {:?}",
                    self.name, self.stdout_seen
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "{}: stdout closed before a line with {needle:?} (exit: {:?}); stdout: {:?}",
                    self.name,
                    self.child.try_wait(),
                    self.stdout_seen
                ),
            }
        }
    }

    /// Waits for the `listening on ADDR` line and returns ADDR.
    pub fn wait_listening(&mut self) -> String {
        let line = self.wait_for_line("listening on ");
        listening_addr(&line)
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Waits for the process to exit by itself; its stderr is then complete.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let status = wait_with_deadline(&mut self.child, &self.name);
        // The process is gone, so its stderr pipe is closed and the reader ends.
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        status
    }

    pub fn stderr(&self) -> String {
        text_of(&self.stderr)
    }

    /// The process id (the `ferry` process itself: `sh` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends the process a signal by name (`INT`, `TERM`), with kill(1).
    pub fn signal(&mut self, name: &str) {
        let status = Command::new("kill")
            .args(["-s", name, &self.child.id().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {name} {}", self.name);
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if thread::panicking() {
            eprintln!("---- {} stderr ----\n{}", self.name, self.stderr());
        }
    }
}

fn wait_with_deadline(child: &mut Child, name: &str) -> ExitStatus {
    wait_within(child, name, DEADLINE)
}

fn wait_within(child: &mut Child, name: &str, patience: Duration) -> ExitStatus {
    let deadline = Instant::now() + patience;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return status,
            Ok(None) if Instant::now() < deadline => {
                // Polling interval for the exit status, not a synchronisation.
                thread::sleep(Duration::from_millis(5));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("{name} did not exit within {patience:?}");
            }
            Err(e) => panic!("{name}: wait failed: {e}"),
        }
    }
}

/// Runs `script` with bash (`-e -o pipefail`: the first failing command
/// fails it) in `dir`, with `ferry` on its PATH and `envs` set; as a user
/// would type it, for tests of the README's examples.
pub fn shell(script: &str, dir: &Path, envs: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new("bash");
    cmd.args(["-e", "-o", "pipefail", "-c", script])
        .current_dir(dir);
    prepare(&mut cmd, envs);
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs = vec![ferry_on_path().to_path_buf()];
    dirs.extend(std::env::split_paths(&path));
    cmd.env("PATH", std::env::join_paths(dirs).expect("a PATH"));
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("start bash");
    let stdout = read_to_end(child.stdout.take().expect("piped stdout"));
    let stderr = read_to_end(child.stderr.take().expect("piped stderr"));
    let status = wait_with_deadline(&mut child, "bash");
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

/// A directory where `ferry` is the binary under test: its own, or one
/// made to hold a link named `ferry` to it.
fn ferry_on_path() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let bin = ferry_bin();
        if let (Some("ferry"), Some(dir)) = (bin.file_name().and_then(|n| n.to_str()), bin.parent())
        {
            return dir.to_path_buf();
        }
        let dir = std::env::temp_dir().join(format!("ferry-tests-bin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a directory for ferry");
        let link = dir.join("ferry");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink(ferry_bin(), &link).expect("link ferry");
        dir
    })
}

/// A finished `ferry` command.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `ferry ARGS` to completion (killed and failed past the deadline).
pub fn ferry(args: &[&str], envs: &[(&str, &str)]) -> Run {
    ferry_with_input(args, envs, None)
}

/// Like [`ferry`], with `input` on its standard input (else none).
pub fn ferry_with_input(args: &[&str], envs: &[(&str, &str)], input: Option<&str>) -> Run {
    ferry_of(ferry_bin(), args, envs, input)
}

/// Like [`ferry_with_input`], another build of ferry (`bin`).
pub fn ferry_of(bin: &Path, args: &[&str], envs: &[(&str, &str)], input: Option<&str>) -> Run {
    ferry_of_within(bin, args, envs, input, DEADLINE)
}

/// Like [`ferry_with_input`], killed and failed past `patience` (for
/// commands that move hundreds of MiB through a debug build).
pub fn ferry_within(
    args: &[&str],
    envs: &[(&str, &str)],
    input: Option<&str>,
    patience: Duration,
) -> Run {
    ferry_of_within(ferry_bin(), args, envs, input, patience)
}

/// Like [`ferry`], with at most `limit` open file descriptors (`ulimit
/// -n`).
pub fn ferry_with_fd_limit(limit: u32, args: &[&str], envs: &[(&str, &str)]) -> Run {
    let cmd = ferry_command_with_fd_limit(limit, args, envs);
    run_to_end(cmd, args, None, DEADLINE)
}

fn ferry_of_within(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    input: Option<&str>,
    patience: Duration,
) -> Run {
    let cmd = ferry_command_of(bin, args, envs);
    run_to_end(cmd, args, input, patience)
}

fn run_to_end(mut cmd: Command, args: &[&str], input: Option<&str>, patience: Duration) -> Run {
    let name = format!("ferry {}", args.join(" "));
    if input.is_some() {
        cmd.stdin(Stdio::piped());
    }
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("start {name}: {e}"));
    if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
        let input = input.to_string();
        // On a thread, so a child that does not read cannot block the test;
        // dropping the pipe afterwards gives the child end-of-file.
        thread::spawn(move || {
            let _ = stdin.write_all(input.as_bytes());
        });
    }
    let stdout = read_to_end(child.stdout.take().expect("piped stdout"));
    let stderr = read_to_end(child.stderr.take().expect("piped stderr"));
    let status = wait_within(&mut child, &name, patience);
    // The process has exited, so its pipes are closed and the readers end.
    Run {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
    }
}

fn read_to_end(mut pipe: impl Read + Send + 'static) -> JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// `ferry connect --balancer ADDR`.
pub fn connect(balancer: &str) -> Run {
    ferry(&["connect", "--balancer", balancer], &[])
}

/// `ferry connect` that must succeed; returns the server id and address it
/// names.
pub fn connect_ok(balancer: &str) -> (u32, String) {
    let run = connect(balancer);
    assert!(run.status.success(), "ferry connect failed: {run:?}");
    parse_connected(&run.stdout)
        .unwrap_or_else(|| panic!("unexpected ferry connect output: {run:?}"))
}

/// Polls `ferry connect` until the balancer places a client, and returns
/// the server id and address it names. Servers say no to the balancer until
/// they have caught up with their master, so this waits for that.
pub fn wait_connectable(balancer: &str) -> (u32, String) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let run = connect(balancer);
        if run.status.success() {
            return parse_connected(&run.stdout)
                .unwrap_or_else(|| panic!("unexpected ferry connect output: {run:?}"));
        }
        assert!(
            Instant::now() < deadline,
            "{balancer} placed no client within {DEADLINE:?}; last try: {run:?}"
        );
        thread::sleep(POLL);
    }
}

/// Parses `connected to server ID at ADDR`.
pub fn parse_connected(stdout: &str) -> Option<(u32, String)> {
    let rest = stdout.trim().strip_prefix("connected to server ")?;
    let (id, addr) = rest.split_once(" at ")?;
    Some((id.parse().ok()?, addr.to_string()))
}

/// The address after `listening on ` in a line.
pub fn listening_addr(line: &str) -> String {
    let (_, rest) = line
        .split_once("listening on ")
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    rest.split_whitespace()
        .next()
        .unwrap_or_else(|| panic!("no address in {line:?}"))
        .to_string()
}

/// An address on which nothing listens (a port the OS just handed out and
/// took back).
pub fn unused_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().expect("local addr").to_string()
}

/// Starts `ferry server` with the test secret on a free port.
pub fn start_server(id: u32, data: &Path) -> (Proc, String) {
    start_server_as(id, data, &[], None)
}

/// Like [`start_server`], with more arguments (`--quota`, `--window`...).
pub fn start_server_with(id: u32, data: &Path, extra: &[&str]) -> (Proc, String) {
    start_server_as(id, data, extra, None)
}

/// Like [`start_server`], allowed at most `limit` open file descriptors.
pub fn start_server_with_fd_limit(id: u32, data: &Path, limit: u32) -> (Proc, String) {
    start_server_as(id, data, &[], Some(limit))
}

fn start_server_as(id: u32, data: &Path, extra: &[&str], fd_limit: Option<u32>) -> (Proc, String) {
    let data = data.join(format!("server-{id}"));
    let id_s = id.to_string();
    let mut args = vec![
        "server",
        "--id",
        &id_s,
        "--listen",
        "127.0.0.1:0",
        "--data",
        path_str(&data),
    ];
    args.extend_from_slice(extra);
    let name = format!("server {id}");
    let envs = [("FERRY_SECRET", SECRET)];
    let mut p = match fd_limit {
        Some(limit) => Proc::spawn_with_fd_limit(&name, limit, &args, &envs),
        None => Proc::spawn(&name, &args, &envs),
    };
    let addr = p.wait_listening();
    (p, addr)
}

/// `ferry server` processes of one cluster, server 1 its master, each on an
/// address fixed at the start so that it can be restarted there.
pub struct Cluster {
    data: PathBuf,
    addrs: Vec<(u32, String)>,
    procs: Vec<(u32, Proc)>,
    /// More arguments for every server (`--max-clients 16`...).
    extra: Vec<String>,
}

impl Cluster {
    /// The first master of every cluster started here (`--master`); if
    /// it is lost, the others elect another.
    pub const MASTER: u32 = 1;

    /// Starts servers 1..=n, each with its data under `data/server-N`. The
    /// master starts first, so the followers' first dial finds it.
    pub fn start(n: u32, data: &Path) -> Cluster {
        Cluster::start_with(n, data, &[])
    }

    /// Like [`Cluster::start`], every server given `extra` arguments too.
    pub fn start_with(n: u32, data: &Path, extra: &[&str]) -> Cluster {
        let addrs = (1..=n).map(|id| (id, unused_addr())).collect();
        let mut cluster = Cluster {
            data: data.to_path_buf(),
            addrs,
            procs: Vec::new(),
            extra: extra.iter().map(|a| a.to_string()).collect(),
        };
        for id in 1..=n {
            cluster.restart(id);
        }
        cluster
    }

    pub fn addr(&self, id: u32) -> &str {
        self.addrs
            .iter()
            .find(|(i, _)| *i == id)
            .map(|(_, a)| a.as_str())
            .unwrap_or_else(|| panic!("no server {id} in the cluster"))
    }

    /// What server `id` (running) has written to stderr so far.
    pub fn stderr_of(&self, id: u32) -> String {
        (self.procs.iter())
            .find(|(i, _)| *i == id)
            .map(|(_, p)| p.stderr())
            .unwrap_or_default()
    }

    /// Kills server `id` (as a crash would).
    pub fn kill(&mut self, id: u32) {
        self.procs.retain_mut(|(i, p)| {
            if *i == id {
                p.kill();
            }
            *i != id
        });
    }

    /// Starts server `id`, on its address, with its data directory; it
    /// resumes from whatever its store holds.
    pub fn restart(&mut self, id: u32) {
        self.kill(id);
        let peers: Vec<String> = self.addrs.iter().map(|(i, a)| format!("{i}={a}")).collect();
        let (id_s, master) = (id.to_string(), Self::MASTER.to_string());
        let data = self.data.join(format!("server-{id}"));
        let peers = peers.join(",");
        let mut args = vec![
            "server",
            "--id",
            &id_s,
            "--listen",
            self.addr(id),
            "--data",
            path_str(&data),
            "--master",
            &master,
            "--peers",
            &peers,
        ];
        args.extend(self.extra.iter().map(String::as_str));
        let mut p = Proc::spawn(&format!("server {id}"), &args, &[("FERRY_SECRET", SECRET)]);
        p.wait_listening();
        self.procs.push((id, p));
    }
}

/// A balancer for `servers` (id, address), and alice, registered and
/// logged in through it with `password`, her FERRY_HOME at `home`.
pub fn balancer_with_alice(servers: &[(u32, String)], home: &Path, password: &str) -> (Proc, User) {
    let list: Vec<(u32, &str)> = servers.iter().map(|(id, a)| (*id, a.as_str())).collect();
    let (balancer_proc, balancer) = start_balancer(&list);
    wait_connectable(&balancer);
    let alice = User::new(home, &balancer);
    for cmd in ["register", "login"] {
        let run = alice.with_password(&[cmd, "alice"], password);
        assert!(run.status.success(), "{cmd}: {run:?}");
    }
    (balancer_proc, alice)
}

/// Someone using the client commands: their FERRY_HOME (where `ferry
/// login` keeps the session) and the balancer they ask.
pub struct User {
    pub home: PathBuf,
    pub balancer: String,
}

impl User {
    pub fn new(home: &Path, balancer: &str) -> User {
        User {
            home: home.to_path_buf(),
            balancer: balancer.to_string(),
        }
    }

    /// Runs `ferry ARGS --balancer B -v` with this user's FERRY_HOME.
    pub fn run(&self, args: &[&str]) -> Run {
        self.run_with_input(args, None)
    }

    /// Like [`User::run`], with `--password-stdin` and the password piped in.
    pub fn with_password(&self, args: &[&str], password: &str) -> Run {
        let mut args = args.to_vec();
        args.push("--password-stdin");
        self.run_with_input(&args, Some(&format!("{password}\n")))
    }

    /// Like [`User::run`], with `input` (if any) on standard input.
    pub fn run_with_input(&self, args: &[&str], input: Option<&str>) -> Run {
        self.run_within(args, input, DEADLINE)
    }

    /// Like [`User::run_with_input`], failed past `patience` instead of
    /// [`DEADLINE`].
    pub fn run_within(&self, args: &[&str], input: Option<&str>, patience: Duration) -> Run {
        let mut args = args.to_vec();
        args.extend(["--balancer", &self.balancer, "-v"]);
        let envs = [("FERRY_HOME", path_str(&self.home))];
        ferry_within(&args, &envs, input, patience)
    }

    /// Starts `ferry ARGS --balancer B -v` as this user, to be watched,
    /// signalled or killed while it runs.
    pub fn spawn(&self, args: &[&str]) -> Proc {
        let mut args = args.to_vec();
        args.extend(["--balancer", &self.balancer, "-v"]);
        Proc::spawn(
            &format!("ferry {}", args.join(" ")),
            &args,
            &[("FERRY_HOME", path_str(&self.home))],
        )
    }

    /// Where `ferry login` keeps this user's session.
    pub fn session_file(&self) -> PathBuf {
        self.home.join("session")
    }
}

/// The server a client command went through, from its `-v` line
/// `via server ID at ADDR` on stderr.
pub fn via_server(run: &Run) -> u32 {
    run.stderr
        .lines()
        .find_map(|l| {
            l.strip_prefix("via server ")?
                .split(' ')
                .next()?
                .parse()
                .ok()
        })
        .unwrap_or_else(|| panic!("no 'via server' line: {run:?}"))
}

/// Asserts that `run` succeeded and printed exactly `stdout` (one line).
pub fn assert_ok(run: &Run, stdout: &str) {
    assert!(run.status.success(), "{run:?}");
    assert_eq!(run.stdout.trim_end(), stdout, "{run:?}");
}

/// Asserts that `run` failed with exit code 1, an error line containing
/// `error`, nothing on stdout, and no panic.
pub fn assert_fails(run: &Run, error: &str) {
    // 1, or the code of a refusal (3 not found, 4 not allowed, 5 no server,
    // 6 conflict); 2 is a usage error.
    assert!(
        matches!(run.status.code(), Some(1 | 3..=6)),
        "a failure's exit code: {run:?}"
    );
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(!run.stderr.contains("panicked"), "{run:?}");
    let line = run.stderr.lines().find(|l| l.starts_with("error: "));
    assert!(
        line.is_some_and(|l| l.contains(error)),
        "expected an error with {error:?}: {run:?}"
    );
}

/// Starts `ferry balancer` with the test secret, for `servers` as `ID=ADDR`.
pub fn start_balancer(servers: &[(u32, &str)]) -> (Proc, String) {
    let list: Vec<String> = servers.iter().map(|(id, a)| format!("{id}={a}")).collect();
    let list = list.join(",");
    let mut p = Proc::spawn(
        "balancer",
        &["balancer", "--listen", "127.0.0.1:0", "--servers", &list],
        &[("FERRY_SECRET", SECRET)],
    );
    let addr = p.wait_listening();
    (p, addr)
}

pub fn path_str(p: &Path) -> &str {
    p.to_str().expect("test paths are UTF-8")
}

/// Sends `bytes` on a fresh connection to `addr` and waits for the peer to
/// close it. Returns what the peer sent before closing. Panics if the
/// connection is still open at the deadline.
pub fn send_and_expect_close(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let addr: SocketAddr = addr.parse().expect("socket address");
    let mut s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect");
    // The peer may close before taking everything; that is its right.
    let _ = s.write_all(bytes);
    let deadline = Instant::now() + DEADLINE;
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "{addr} kept the connection open");
        s.set_read_timeout(Some(left)).expect("set read timeout");
        match s.read(&mut buf) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return got,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => panic!("reading from {addr}: {e}"),
        }
    }
}

/// Like [`send_and_expect_close`], but inside a TLS session trusting the
/// test authority, as a client would: `bytes` reach the node as plaintext.
/// Returns the plaintext the peer sent before closing.
pub fn send_over_tls_and_expect_close(addr: &str, bytes: &[u8]) -> Vec<u8> {
    use ferry_core::tls::provider::with_context;
    use ferry_core::tls::{certs, Trust};
    let pem = std::fs::read_to_string(test_authority().join("ca.pem")).expect("ca.pem");
    let ca = certs::certs_from_pem(&pem).expect("the test authority")[0].clone();
    let config = ferry_core::tls::TlsConfig::client(Trust::Ca(ca)).expect("a client config");
    let mut entropy = ferry_core::Entropy::from_u64(std::process::id().into());
    let now = || {
        let since = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("a clock after 1970");
        ferry_core::Timestamp::from_duration(since)
    };
    let sock: SocketAddr = addr.parse().expect("socket address");
    let tcp = TcpStream::connect_timeout(&sock, DEADLINE).expect("connect");
    tcp.set_read_timeout(Some(DEADLINE))
        .expect("set read timeout");
    let conn = with_context(&mut entropy, now(), || config.connect_raw())
        .expect("a TLS client connection");
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let _ = with_context(&mut entropy, now(), || tls.write_all(bytes));
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match with_context(&mut entropy, now(), || tls.read(&mut buf)) {
            Ok(0) => return got,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::UnexpectedEof
                ) =>
            {
                return got
            }
            Err(e) => panic!("reading from {addr}: {e}"),
        }
    }
}

/// Polls `condition` until it holds, failing with `what` at the deadline
/// (a poll interval, never a stand-in for synchronisation).
pub fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within {DEADLINE:?}");
        thread::sleep(POLL);
    }
}

/// Deterministic noise (xorshift64*), so a failing case can be replayed.
pub fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// The files `pid` has open that live in `dir` with no name
/// (`O_TMPFILE`), and their sizes.
pub fn unnamed_open_in(pid: u32, dir: &Path) -> Vec<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return Vec::new();
    };
    let prefix = format!("{}/#", dir.display());
    fds.flatten()
        .filter_map(|fd| {
            let to = std::fs::read_link(fd.path()).ok()?;
            let to = to.to_string_lossy().into_owned();
            (to.starts_with(&prefix) && to.ends_with("(deleted)"))
                .then(|| std::fs::metadata(fd.path()).map(|m| m.len()).ok())
                .flatten()
        })
        .collect()
}
