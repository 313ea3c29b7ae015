//! The commands `ferry peer` reads from its standard input, one per line:
//! the seeds' words, case-insensitive. Parsing only; `cmd_peer` acts.

use std::fmt;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// `register HOST PORT` (or `HOST:PORT`): a balancer or any server.
    Register {
        addr: String,
    },
    Peers,
    /// `connect IP PORT` (or `IP:PORT`).
    Connect {
        addr: String,
    },
    Conns,
    /// `put ID FILE`: FILE is a plain name in the shared directory.
    Put {
        link: u32,
        name: String,
    },
    /// `get ID FILE`.
    Get {
        link: u32,
        name: String,
    },
    Sync,
    Quit,
    Help,
}

pub const HELP: &str = "\
commands (case-insensitive):
  register HOST PORT   register with a Ferry server or balancer (uses `ferry login`)
  peers                the registered peers, as the last UPDATE listed them
  connect IP PORT      connect to a peer; answered CONNECT OK ID or CONNECT FAIL
  conns                the open connections, by ID
  put ID FILE          send FILE of the shared directory to connection ID
  get ID FILE          fetch FILE from connection ID into the shared directory
  sync                 ask the cluster for a SYNC round among the registered peers
  quit                 leave the tracker's list and exit (end of input does too)
  help                 this list";

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn usage(what: &str) -> ParseError {
    ParseError(format!("usage: {what} (see `help`)"))
}

/// `HOST PORT` or `HOST:PORT`, as `HOST:PORT`.
fn address(args: &[&str], what: &str) -> Result<String, ParseError> {
    let (host, port) = match args {
        [host, port] => (*host, *port),
        [one] => one.rsplit_once(':').ok_or_else(|| usage(what))?,
        _ => return Err(usage(what)),
    };
    if host.is_empty() {
        return Err(usage(what));
    }
    port.parse::<u16>()
        .map_err(|_| ParseError(format!("{port:?} is not a port number")))?;
    match host.contains(':') && !host.starts_with('[') {
        true => Ok(format!("[{host}]:{port}")),
        false => Ok(format!("{host}:{port}")),
    }
}

/// `ID FILE`, FILE being the rest of the line (names may hold spaces).
fn link_and_name(rest: &str, what: &str) -> Result<(u32, String), ParseError> {
    let rest = rest.trim_start();
    let (id, name) = rest
        .split_once(char::is_whitespace)
        .ok_or_else(|| usage(what))?;
    let link = id
        .parse::<u32>()
        .map_err(|_| ParseError(format!("{id:?} is not a connection number (see `conns`)")))?;
    let name = name.trim();
    if name.is_empty() {
        return Err(usage(what));
    }
    Ok((link, name.to_string()))
}

/// One line: `None` for a blank line or a comment (`#`).
pub fn parse(line: &str) -> Result<Option<Command>, ParseError> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let args: Vec<&str> = rest.split_whitespace().collect();
    let none = |cmd: Command, what: &str| match args.is_empty() {
        true => Ok(Some(cmd)),
        false => Err(usage(what)),
    };
    match word.to_ascii_lowercase().as_str() {
        "register" => Ok(Some(Command::Register {
            addr: address(&args, "register HOST PORT")?,
        })),
        "connect" => Ok(Some(Command::Connect {
            addr: address(&args, "connect IP PORT")?,
        })),
        "put" => {
            let (link, name) = link_and_name(rest, "put ID FILE")?;
            Ok(Some(Command::Put { link, name }))
        }
        "get" => {
            let (link, name) = link_and_name(rest, "get ID FILE")?;
            Ok(Some(Command::Get { link, name }))
        }
        "peers" => none(Command::Peers, "peers"),
        "conns" => none(Command::Conns, "conns"),
        "sync" => none(Command::Sync, "sync"),
        "quit" | "exit" => none(Command::Quit, "quit"),
        "help" | "?" => Ok(Some(Command::Help)),
        _ => Err(ParseError(format!(
            "unknown command {:?} (see `help`)",
            word.escape_debug().to_string()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_words_parse_in_any_case() {
        let addr = |s: &str| s.to_string();
        assert_eq!(
            parse("REGISTER 127.0.0.1 7001"),
            Ok(Some(Command::Register {
                addr: addr("127.0.0.1:7001")
            }))
        );
        assert_eq!(
            parse("register localhost:7001"),
            Ok(Some(Command::Register {
                addr: addr("localhost:7001")
            }))
        );
        assert_eq!(
            parse("Connect ::1 9000"),
            Ok(Some(Command::Connect {
                addr: addr("[::1]:9000")
            }))
        );
        assert_eq!(
            parse("put 2 my file.txt "),
            Ok(Some(Command::Put {
                link: 2,
                name: "my file.txt".into()
            }))
        );
        assert_eq!(
            parse("GET 1 a"),
            Ok(Some(Command::Get {
                link: 1,
                name: "a".into()
            }))
        );
        for (line, cmd) in [
            ("peers", Command::Peers),
            ("CONNS", Command::Conns),
            ("sync", Command::Sync),
            ("quit", Command::Quit),
            ("help", Command::Help),
        ] {
            assert_eq!(parse(line), Ok(Some(cmd)), "{line}");
        }
        assert_eq!(parse("   "), Ok(None));
        assert_eq!(parse("# a comment"), Ok(None));
    }

    #[test]
    fn bad_lines_say_what_is_wrong() {
        for line in [
            "register",
            "register host",
            "register host 70000",
            "connect 1.2.3.4",
            "put 1",
            "put x name",
            "get",
            "peers now",
            "frobnicate",
            "register :7000",
        ] {
            assert!(parse(line).is_err(), "{line}");
        }
        let e = parse("put x a").unwrap_err().to_string();
        assert!(e.contains("not a connection number"), "{e}");
        // A control character in an unknown word is shown escaped.
        let e = parse("\u{1b}[31mred").unwrap_err().to_string();
        assert!(!e.contains('\u{1b}'), "{e}");
    }
}
