//! `ferry peer`: shares one directory with other peers (the seeds' third
//! design; `docs/peers.md`). The peer node runs on this thread, listening
//! from the start; commands come from standard input on a thread of their
//! own — an interactive line editor on a terminal, plain lines from a pipe —
//! and wake the node's driver, which then carries them out. What the node
//! has to say (REGISTER OK, UPDATE, CONNECT OK…) is printed as it happens,
//! one line each, so that scripts and tests can wait for it.

use crate::addr;
use crate::error::CliError;
use crate::peer_shell::{self, Command, HELP};
use crate::session_file;
use crate::tls_files;
use ferry_core::peer::{PeerConfig, PeerNode};
use ferry_core::tls::Trust;
use ferry_runtime_smol::{Driver, DriverError, Files, Stopper};
use rustyline::ExternalPrinter;
use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::ops::ControlFlow;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The directory to share (made if missing). Nothing outside it is
    /// ever read or written.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Where to listen for other peers (port 0: a free port, printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0", value_parser = addr::host_port)]
    listen: String,
    /// The address other peers reach this one at, if not the listening
    /// address (needed when listening on 0.0.0.0 or ::).
    #[arg(long, value_name = "IP:PORT", value_parser = addr::host_port)]
    advertise: Option<String>,
    /// The cluster authority's certificate to trust (PEM). Without it, the
    /// authority you trusted when you logged in (known_hosts), else the
    /// first the tracker presents.
    #[arg(long, value_name = "FILE", env = "FERRY_CA")]
    ca: Option<PathBuf>,
}

/// What the input thread hands the node's thread.
enum Said {
    Line(String),
    /// End of input, or Ctrl-C / Ctrl-D on the terminal.
    End,
}

/// Where lines go: straight to stdout, or above the line being edited.
enum Printer {
    Plain,
    Term(Box<dyn ExternalPrinter + Send>),
}

impl Printer {
    fn say(&mut self, line: String) {
        match self {
            Printer::Plain => crate::say(format_args!("{line}")),
            Printer::Term(p) => {
                if p.print(format!("{line}\n")).is_err() {
                    crate::say(format_args!("{line}"));
                }
            }
        }
    }
}

pub fn run(args: Args) -> Result<(), CliError> {
    match std::fs::metadata(&args.dir) {
        Ok(m) if !m.is_dir() => {
            let shown = args.dir.display();
            return Err(CliError::Usage(format!("{shown} is not a directory")));
        }
        Ok(_) => {}
        Err(_) => std::fs::create_dir_all(&args.dir)
            .map_err(|e| CliError::Failed(format!("cannot make {}: {e}", args.dir.display())))?,
    }
    let files = Files::shared_dir(&args.dir)
        .map_err(|e| CliError::Failed(format!("cannot share {}: {e}", args.dir.display())))?;
    let (listener, local) = addr::bind(&args.listen)?;
    let advertise = advertised(args.advertise, local)?;
    // Without a login the peer still starts: `register` says what to do.
    let token = session_file::load(&session_file::path()?)?.map(|s| s.token);
    let node = PeerNode::new(PeerConfig::new(advertise.clone(), token));
    let trust = match &args.ca {
        Some(ca) => tls_files::client_trust(Some(ca), "")?,
        None => match tls_files::known_hosts::the_one()? {
            Some(fp) => Trust::Pinned(fp),
            None => Trust::FirstUse,
        },
    };
    let entropy = ferry_runtime_smol::os_entropy()
        .map_err(|e| CliError::Failed(format!("cannot seed TLS: {e}")))?;
    let mut driver = Driver::new(node)
        .with_tls(tls_files::peer_config(trust)?, entropy)
        .named("peer")
        .with_files(files)
        .listen(listener);

    let (tx, rx) = mpsc::channel();
    let mut printer = start_input(tx, driver.stopper())?;
    printer.say(format!(
        "peer listening on {advertise}, sharing {}",
        args.dir.display()
    ));
    loop {
        let ran = driver.run_until(|event| {
            printer.say(event.to_string());
            ControlFlow::<()>::Continue(())
        });
        match ran {
            Err(DriverError::Stopped { .. }) => {}
            Err(e) => return Err(CliError::Failed(e.to_string())),
            Ok(()) => {}
        }
        while let Ok(said) = rx.try_recv() {
            let line = match said {
                Said::Line(line) => line,
                Said::End => return quit(driver, &mut printer),
            };
            match peer_shell::parse(&line) {
                Ok(None) => {}
                Ok(Some(Command::Quit)) => return quit(driver, &mut printer),
                Ok(Some(cmd)) => act(&mut driver, cmd, &mut printer),
                Err(e) => printer.say(format!("error: {e}")),
            }
        }
    }
}

/// The address to register: the one given, else the listener's own (which
/// other peers cannot reach if it is 0.0.0.0 or ::).
fn advertised(given: Option<String>, local: SocketAddr) -> Result<String, CliError> {
    match given {
        Some(a) => Ok(a),
        None if local.ip().is_unspecified() => Err(CliError::Usage(format!(
            "listening on {local}: say with --advertise IP:PORT where other peers reach this one"
        ))),
        None => Ok(local.to_string()),
    }
}

/// Starts the thread that reads commands; each one wakes the driver.
fn start_input(tx: mpsc::Sender<Said>, stopper: Stopper) -> Result<Printer, CliError> {
    let send = move |said: Said| {
        let more = tx.send(said).is_ok();
        stopper.stop();
        more
    };
    if std::io::stdin().is_terminal() && std::io::stdout().is_terminal() {
        let mut editor = rustyline::DefaultEditor::new()
            .map_err(|e| CliError::Failed(format!("cannot use the terminal: {e}")))?;
        if let Ok(printer) = editor.create_external_printer() {
            std::thread::spawn(move || loop {
                match editor.readline("ferry> ") {
                    Ok(line) => {
                        let _ = editor.add_history_entry(line.as_str());
                        if !send(Said::Line(line)) {
                            return;
                        }
                    }
                    Err(_) => {
                        send(Said::End);
                        return;
                    }
                }
            });
            return Ok(Printer::Term(Box::new(printer)));
        }
    }
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines() {
            let Ok(line) = line else { break };
            if !send(Said::Line(line)) {
                return;
            }
        }
        send(Said::End);
    });
    Ok(Printer::Plain)
}

fn act(driver: &mut Driver<PeerNode>, cmd: Command, printer: &mut Printer) {
    let now = driver.now();
    let node = driver.node_mut();
    match cmd {
        Command::Register { addr } => node.register(now, addr),
        Command::Peers => {
            let me = node.me();
            let peers = node.peers();
            if peers.is_empty() {
                printer.say("no peers (register first)".into());
            }
            for p in peers {
                let mark = if Some(p.peer) == me {
                    " (this peer)"
                } else {
                    ""
                };
                let user = ferry_core::peer::shown(&p.user);
                printer.say(format!("peer {} {user} {}{mark}", p.peer, p.addr));
            }
        }
        Command::Connect { addr } => match node.connect(now, addr.clone()) {
            Ok(link) => printer.say(format!("connection {link}: connecting to {addr}")),
            Err(e) => printer.say(format!("CONNECT FAIL: {e}")),
        },
        Command::Conns => {
            let links = node.links();
            if links.is_empty() {
                printer.say("no connections".into());
            }
            for l in links {
                let who = match l.peer {
                    Some(p) => format!("peer {p}"),
                    None => "opening".into(),
                };
                let how = if l.dialed { "opened here" } else { "accepted" };
                printer.say(format!("{} {who} {} ({how})", l.link, l.addr));
            }
        }
        Command::Put { link, name } => {
            if let Err(e) = node.put(link, &name) {
                printer.say(format!("PUT FAIL {link}: {e}"));
            }
        }
        Command::Get { link, name } => {
            if let Err(e) = node.get(link, &name) {
                printer.say(format!("GET FAIL {link}: {e}"));
            }
        }
        Command::Sync => {
            if let Err(e) = node.sync(now) {
                printer.say(format!("SYNC FAIL {e}"));
            }
        }
        Command::Help => printer.say(HELP.into()),
        Command::Quit => {}
    }
}

/// Leaves the tracker's list, closes every connection, and waits a little
/// for the last words to go out.
fn quit(mut driver: Driver<PeerNode>, printer: &mut Printer) -> Result<(), CliError> {
    driver.node_mut().quit();
    // Carries out the closes the node queued, and lets them reach the
    // other ends (the server then removes this peer from the list).
    driver.close(Duration::from_secs(1));
    printer.say("bye".into());
    Ok(())
}
