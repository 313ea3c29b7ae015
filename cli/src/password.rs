//! Reading a password: prompted without echo on a terminal, or one line of
//! standard input with `--password-stdin` (two for `ferry passwd`: the
//! current password, then the new one). The password is never logged.

use crate::error::CliError;
use std::io::{BufRead, IsTerminal};

#[derive(clap::Args)]
pub struct PasswordArgs {
    /// Read the password from the first line of standard input instead of
    /// prompting for it (for scripts).
    #[arg(long)]
    password_stdin: bool,
}

/// Whether a prompted password is asked for twice.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Confirm {
    Once,
    Twice,
}

pub fn read(args: &PasswordArgs, confirm: Confirm) -> Result<String, CliError> {
    if args.password_stdin {
        return first_line(std::io::stdin().lock());
    }
    require_terminal()?;
    let password = prompt("Password: ")?;
    if confirm == Confirm::Twice && prompt("Repeat password: ")? != password {
        return Err(CliError::Failed("the passwords do not match".into()));
    }
    Ok(password)
}

/// The current password and a new one (asked twice on a terminal; with
/// `--password-stdin`, the first two lines of standard input).
pub fn read_change(args: &PasswordArgs) -> Result<(String, String), CliError> {
    if args.password_stdin {
        let mut input = std::io::stdin().lock();
        let current = first_line(&mut input)?;
        let new = first_line(&mut input).map_err(|_| {
            CliError::Failed(
                "no new password on standard input: give the current password on the \
                 first line and the new one on the second"
                    .into(),
            )
        })?;
        return Ok((current, new));
    }
    require_terminal()?;
    let current = prompt("Current password: ")?;
    let new = prompt("New password: ")?;
    if prompt("Repeat new password: ")? != new {
        return Err(CliError::Failed("the new passwords do not match".into()));
    }
    Ok((current, new))
}

fn require_terminal() -> Result<(), CliError> {
    if !std::io::stdin().is_terminal() {
        return Err(CliError::Failed(
            "standard input is not a terminal, so the password cannot be prompted for; \
             pass --password-stdin to read it from standard input"
                .into(),
        ));
    }
    Ok(())
}

fn prompt(text: &str) -> Result<String, CliError> {
    rpassword::prompt_password(text)
        .map_err(|e| CliError::Failed(format!("cannot read the password: {e}")))
}

/// The first line of `input`, without its line ending.
fn first_line(mut input: impl BufRead) -> Result<String, CliError> {
    let mut line = String::new();
    let n = input.read_line(&mut line).map_err(|e| {
        CliError::Failed(format!("cannot read the password from standard input: {e}"))
    })?;
    if n == 0 {
        return Err(CliError::Failed(
            "no password on standard input (it was empty)".into(),
        ));
    }
    let line = line.strip_suffix('\n').unwrap_or(&line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    Ok(line.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_line_ending_is_stripped() {
        let read = |s: &str| first_line(s.as_bytes()).map_err(|e| e.to_string());
        assert_eq!(read(" pass word \n"), Ok(" pass word ".into()));
        assert_eq!(read("windows\r\n"), Ok("windows".into()));
        assert_eq!(read("no newline"), Ok("no newline".into()));
        assert_eq!(read("first\nsecond\n"), Ok("first".into()));
        assert_eq!(read("\n"), Ok(String::new()));
        assert!(read("").unwrap_err().contains("no password"));
        // `ferry passwd` reads two lines from one input.
        let mut two = "old pass\r\nnew pass\n".as_bytes();
        assert_eq!(first_line(&mut two).unwrap(), "old pass");
        assert_eq!(first_line(&mut two).unwrap(), "new pass");
        assert!(first_line(&mut two).is_err());
    }
}
