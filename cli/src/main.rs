//! `ferry`: run a balancer, a server, a whole cluster on one machine, or a
//! client command. Each command lives in its `cmd_*` module, options and all.

mod addr;
mod client_session;
mod cmd_account;
mod cmd_balancer;
mod cmd_ca;
mod cmd_completions;
mod cmd_connect;
mod cmd_get;
mod cmd_login;
mod cmd_logout;
mod cmd_ls;
mod cmd_man;
mod cmd_passwd;
mod cmd_peer;
mod cmd_put;
mod cmd_register;
mod cmd_rm;
mod cmd_server;
mod cmd_share;
mod cmd_status;
mod cmd_up;
mod cmd_whoami;
mod error;
mod files_ui;
mod json;
mod password;
mod peer_shell;
mod resume_file;
mod secret;
mod server_node;
mod session_file;
mod tls_files;

use clap::{CommandFactory, Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ferry",
    version,
    about = "Ferry: a distributed file-sharing system"
)]
#[command(after_help = "Logs go to stderr; set RUST_LOG (e.g. RUST_LOG=debug) to see more.")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a balancer: it hands each client a server with a free slot.
    Balancer(cmd_balancer::Args),
    /// Run a file server.
    Server(cmd_server::Args),
    /// Make the cluster's certificate authority, or issue a member's
    /// certificate.
    Ca(cmd_ca::Args),
    /// Run a balancer and its servers in this one process, until killed.
    ///
    /// The servers listen on free ports of 127.0.0.1; server 1 is the master.
    /// Without a configured cluster secret a random one is made up and kept
    /// in the data directory, so running `ferry up` again with the same data
    /// resumes the same cluster.
    Up(cmd_up::Args),
    /// Get a session on a server through the balancer, and report which.
    Connect(cmd_connect::Args),
    /// Create an account.
    Register(cmd_register::Args),
    /// Log in, and keep the session for the commands that follow.
    ///
    /// The session is kept in $FERRY_HOME/session, else
    /// $XDG_CONFIG_HOME/ferry/session, else ~/.config/ferry/session.
    Login(cmd_login::Args),
    /// End the kept session on every server, and forget it.
    Logout(cmd_logout::Args),
    /// Show who the kept session belongs to.
    Whoami(cmd_whoami::Args),
    /// Change the logged-in user's password; their other sessions end.
    ///
    /// Asks for the current password and the new one twice; with
    /// --password-stdin, reads the current one from the first line of
    /// standard input and the new one from the second.
    Passwd(cmd_passwd::Args),
    /// Manage your account: `ferry account delete`.
    Account(cmd_account::Args),
    /// Upload files, or with -r folders (a progress bar shows on a terminal).
    Put(cmd_put::Args),
    /// Download files of yours, or shared with you (--owner); -r a folder.
    Get(cmd_get::Args),
    /// List your files and the files shared with you, or those under a folder.
    Ls(cmd_ls::Args),
    /// Let another user download one of your files, or a folder's.
    Share(cmd_share::Args),
    /// Stop sharing one of your files with a user.
    Unshare(cmd_share::Args),
    /// Delete one of your files, or with -r a folder.
    Rm(cmd_rm::Args),
    /// Show the cluster's servers (role, log position, how far behind,
    /// free disk, sessions) and, if logged in, your files' count and size.
    ///
    /// A server that does not answer within about 1.5 s is shown as not
    /// answering; the command still succeeds.
    Status(cmd_status::Args),
    /// Share a directory with other peers: register, connect, PUT, GET.
    ///
    /// Commands come from standard input, one per line (`help` lists
    /// them); uses the saved login (`ferry login`).
    Peer(cmd_peer::Args),
    /// Print a shell's completion script for ferry (e.g. `ferry completions
    /// bash > ~/.local/share/bash-completion/completions/ferry`).
    Completions(cmd_completions::Args),
    /// Print the manual page (roff), or write one per command with --dir.
    Man(cmd_man::Args),
}

/// Options of every client command.
#[derive(clap::Args)]
struct ClientArgs {
    /// The balancer's address.
    #[arg(long, value_name = "ADDR", env = "FERRY_BALANCER", default_value = "127.0.0.1:7000",
          value_parser = addr::host_port)]
    balancer: String,
    /// Tell stderr which server the session is with ("via server N at ADDR").
    #[arg(short, long)]
    verbose: bool,
    /// The cluster authority's certificate to trust (PEM). Without it, the
    /// authority remembered for the balancer's address is trusted, or, the
    /// first time, the one the balancer presents (and it is remembered).
    #[arg(long, value_name = "FILE", env = "FERRY_CA")]
    ca: Option<std::path::PathBuf>,
    /// Print the result as one JSON document on stdout (ls, whoami, put,
    /// get, status; see docs/json.md).
    #[arg(long)]
    json: bool,
}

fn main() -> ExitCode {
    tune_allocator();
    raise_open_files_limit();
    let cli = Cli::parse_from(hoist_global_flags(std::env::args_os().collect()));
    init_logging(match cli.command {
        Command::Balancer(_) | Command::Server(_) | Command::Up(_) => "info",
        _ => "warn",
    });
    let result = match cli.command {
        Command::Balancer(args) => cmd_balancer::run(args),
        Command::Server(args) => cmd_server::run(args),
        Command::Ca(args) => cmd_ca::run(args),
        Command::Up(args) => cmd_up::run(args),
        Command::Connect(args) => cmd_connect::run(args),
        Command::Register(args) => cmd_register::run(args),
        Command::Login(args) => cmd_login::run(args),
        Command::Logout(args) => cmd_logout::run(args),
        Command::Whoami(args) => cmd_whoami::run(args),
        Command::Passwd(args) => cmd_passwd::run(args),
        Command::Account(args) => cmd_account::run(args),
        Command::Put(args) => cmd_put::run(args),
        Command::Get(args) => cmd_get::run(args),
        Command::Ls(args) => cmd_ls::run(args),
        Command::Share(args) => cmd_share::share(args),
        Command::Unshare(args) => cmd_share::unshare(args),
        Command::Rm(args) => cmd_rm::run(args),
        Command::Status(args) => cmd_status::run(args),
        Command::Peer(args) => cmd_peer::run(args),
        Command::Completions(args) => cmd_completions::run(args, Cli::command()),
        Command::Man(args) => cmd_man::run(args, Cli::command()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// The client commands' options that may come before the command's name
/// (`ferry -v ls` as well as `ferry ls -v`), and whether each takes a
/// value.
const GLOBAL_FLAGS: &[(&str, bool)] = &[
    ("-v", false),
    ("--verbose", false),
    ("--balancer", true),
    ("--ca", true),
    ("--json", false),
];

/// Moves the client options given before the command's name to just after
/// it, where clap reads them. Anything else before the name (`--help`,
/// `--version`, a typo) stops the move, and clap says what it thinks.
fn hoist_global_flags(args: Vec<std::ffi::OsString>) -> Vec<std::ffi::OsString> {
    let mut hoisted = Vec::new();
    let mut i = 1;
    while let Some(arg) = args.get(i).and_then(|a| a.to_str()) {
        let (flag, inline) = match arg.split_once('=') {
            Some((flag, _)) if flag.starts_with("--") => (flag, true),
            _ => (arg, false),
        };
        let Some(&(_, takes_value)) = GLOBAL_FLAGS.iter().find(|(f, _)| *f == flag) else {
            break;
        };
        let width = if takes_value && !inline { 2 } else { 1 };
        if i + width > args.len() {
            break;
        }
        hoisted.extend_from_slice(&args[i..i + width]);
        i += width;
    }
    if hoisted.is_empty() || i >= args.len() {
        return args;
    }
    // A client command that is a group (`account delete`) takes its
    // options after the second name.
    let names = match args[i].to_str() {
        Some(name) if CLIENT_GROUPS.contains(&name) && i + 1 < args.len() => 2,
        _ => 1,
    };
    let mut out = Vec::with_capacity(args.len());
    out.extend_from_slice(&args[..1]);
    out.extend_from_slice(&args[i..i + names]);
    out.extend(hoisted);
    out.extend_from_slice(&args[i + names..]);
    out
}

/// Client commands whose name is followed by a subcommand's.
const CLIENT_GROUPS: &[&str] = &["account"];

/// Prints a line of the command's result to stdout, flushed at once (tests
/// and scripts wait for these lines). A closed stdout is not worth a panic.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
}

/// Transfers allocate a frame's worth (128 KiB) a few times per frame.
/// glibc serves blocks that large with fresh mmaps, or trims the heap
/// once they are freed, so every frame's buffers were faulted in anew: a
/// page fault for every 4 KiB moved, about a fifth of a client's CPU time.
/// Larger blocks stay in the heap, and a freed heap is kept up to 64 MiB.
fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; it is called before
    // any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Lets the process open as many files as the system allows it: `ferry
/// get` holds a lock on the partial file of each file it downloads (one
/// command may fetch thousands), and a server's sessions and blobs are
/// descriptors too; the usual soft limit (1024) is far below the hard one.
fn raise_open_files_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit and setrlimit read and write only `limit`.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < limit.rlim_max
        {
            limit.rlim_cur = limit.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// Logs to stderr, filtered by `RUST_LOG`, else at `default`.
fn init_logging(default: &str) {
    use std::io::IsTerminal;
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    fn usage_error(args: &[&str]) -> clap::Error {
        match Cli::try_parse_from(args) {
            Ok(_) => panic!("{args:?} parsed"),
            Err(e) => e,
        }
    }

    #[test]
    fn bad_or_missing_arguments_are_usage_errors() {
        for args in [
            &["ferry", "connect", "--balancer", "nowhere"][..],
            &["ferry", "balancer", "--listen", "127.0.0.1:1"],
            &["ferry", "balancer", "--listen", "x:1", "--servers", "a:1,b"],
            &["ferry", "server", "--id", "1", "--listen", "127.0.0.1:1"],
            &["ferry", "up", "--servers", "0"],
            &["ferry", "register"],
            &["ferry", "login", "a", "b"],
            &["ferry", "whoami", "alice"],
            &["ferry", "passwd", "alice"],
            &["ferry", "put"],
            &["ferry", "put", "a", "--window", "0"],
            &["ferry", "get"],
            &["ferry", "share", "a"],
            &["ferry", "unshare", "a"],
            &["ferry", "rm"],
            &["ferry", "ls", "x", "y"],
            &["ferry", "rm", "-r"],
            &[
                "ferry", "server", "--id", "1", "--listen", "h:1", "--data", "d", "--peers", "h:2",
            ],
        ] {
            assert_eq!(usage_error(args).exit_code(), 2, "{args:?}");
        }
    }

    fn hoisted(args: &[&str]) -> Vec<String> {
        let args = args.iter().map(std::ffi::OsString::from).collect();
        hoist_global_flags(args)
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn client_options_may_come_before_the_command() {
        assert_eq!(
            hoisted(&["ferry", "-v", "--balancer", "h:1", "ls", "x"]),
            ["ferry", "ls", "-v", "--balancer", "h:1", "x"]
        );
        assert_eq!(
            hoisted(&["ferry", "--ca=c.pem", "get", "a"]),
            ["ferry", "get", "--ca=c.pem", "a"]
        );
        // Nothing to move, or something else first: left to clap.
        for args in [
            &["ferry", "ls", "-v"][..],
            &["ferry", "--help", "-v", "ls"],
            &["ferry", "-v"],
            &["ferry", "--balancer"],
        ] {
            assert_eq!(hoisted(args), args);
        }
        let cli = Cli::try_parse_from(hoisted(&["ferry", "-v", "ls"])).unwrap();
        assert!(matches!(cli.command, Command::Ls(_)));
        // A group's options go after its subcommand's name.
        let args = hoisted(&["ferry", "--json", "-v", "account", "delete"]);
        assert_eq!(args, ["ferry", "account", "delete", "--json", "-v"]);
        let cli = Cli::try_parse_from(args).unwrap();
        assert!(matches!(cli.command, Command::Account(_)));
    }

    #[test]
    fn servers_accept_a_list_and_repeats() {
        let cli = Cli::try_parse_from([
            "ferry",
            "balancer",
            "--listen",
            "h:1",
            "--servers",
            "a:1,2=b:2",
            "--servers",
            "c:3",
        ])
        .unwrap();
        let Command::Balancer(_) = cli.command else {
            panic!("not a balancer");
        };
    }
}
