//! `ferry`: run a balancer, a server, a whole cluster on one machine, or a
//! client command. Each command lives in its `cmd_*` module, options and all.

mod addr;
mod cmd_balancer;
mod cmd_connect;
mod cmd_server;
mod cmd_up;
mod error;
mod secret;

use clap::{Parser, Subcommand};
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
    /// Run a balancer and its servers in this one process, until killed.
    ///
    /// The servers listen on free ports of 127.0.0.1. Without a configured
    /// cluster secret a random one is made up.
    Up(cmd_up::Args),
    /// Get a session on a server through the balancer, and report which.
    Connect(cmd_connect::Args),
}

/// Options of every client command.
#[derive(clap::Args)]
struct ClientArgs {
    /// The balancer's address.
    #[arg(long, value_name = "ADDR", env = "FERRY_BALANCER", default_value = "127.0.0.1:7000",
          value_parser = addr::host_port)]
    balancer: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(match cli.command {
        Command::Connect(_) => "warn",
        _ => "info",
    });
    let result = match cli.command {
        Command::Balancer(args) => cmd_balancer::run(args),
        Command::Server(args) => cmd_server::run(args),
        Command::Up(args) => cmd_up::run(args),
        Command::Connect(args) => cmd_connect::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

/// Prints a line of the command's result to stdout, flushed at once (tests
/// and scripts wait for these lines). A closed stdout is not worth a panic.
fn say(line: std::fmt::Arguments) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(line);
    let _ = out.write_all(b"\n");
    let _ = out.flush();
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
    use clap::CommandFactory;

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
        ] {
            assert_eq!(usage_error(args).exit_code(), 2, "{args:?}");
        }
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
