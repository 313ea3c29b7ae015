//! The saved login: the session token that `ferry login` got, kept for the
//! commands that follow.
//!
//! Where: `$FERRY_HOME/session`, else `$XDG_CONFIG_HOME/ferry/session`, else
//! `~/.config/ferry/session`. The file is readable by its owner only (0600)
//! and replaced atomically (written to a temporary file, then renamed), so a
//! crash never leaves half a token. Format, one `key value` per line:
//!
//! ```text
//! username alice
//! user_id 1
//! token 0100000000000000...
//! ```

use crate::error::CliError;
use ferry_core::accounts::token::SessionToken;
use std::io::Write;
use std::path::{Path, PathBuf};

/// A login, as saved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    pub username: String,
    pub user_id: u64,
    pub token: SessionToken,
}

/// The session file's path (see the module docs).
pub fn path() -> Result<PathBuf, CliError> {
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(home) = var("FERRY_HOME") {
        return Ok(home.join("session"));
    }
    // The XDG spec says to ignore a relative XDG_CONFIG_HOME.
    if let Some(config) = var("XDG_CONFIG_HOME").filter(|p| p.is_absolute()) {
        return Ok(config.join("ferry").join("session"));
    }
    match var("HOME") {
        Some(home) => Ok(home.join(".config").join("ferry").join("session")),
        None => Err(CliError::Failed(
            "cannot tell where to keep the session: set FERRY_HOME or HOME".into(),
        )),
    }
}

/// The saved login, or `None` if there is none.
pub fn load(path: &Path) -> Result<Option<Saved>, CliError> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidData => {
            return Err(corrupt(path, "it is not text"))
        }
        Err(e) => {
            return Err(CliError::Failed(format!(
                "cannot read the session file {}: {e}",
                path.display()
            )))
        }
    };
    parse(&text).map(Some).map_err(|why| corrupt(path, &why))
}

/// The saved login, or the "not logged in" error.
pub fn load_required(path: &Path) -> Result<Saved, CliError> {
    load(path)?.ok_or_else(|| CliError::Refused {
        kind: crate::error::Refusal::NotAllowed,
        message: "not logged in; run `ferry login USER`".into(),
    })
}

fn corrupt(path: &Path, why: &str) -> CliError {
    CliError::Failed(format!(
        "the session file {} is corrupt ({why}); run `ferry login USER` to replace it",
        path.display()
    ))
}

fn parse(text: &str) -> Result<Saved, String> {
    let (mut username, mut user_id, mut token) = (None, None, None);
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let (key, value) = line
            .split_once(' ')
            .ok_or_else(|| format!("no value in line {line:?}"))?;
        let value = value.trim();
        let slot_was_empty = match key {
            "username" => username.replace(value.to_string()).is_none(),
            "user_id" => {
                let id = value
                    .parse::<u64>()
                    .map_err(|_| "bad user_id".to_string())?;
                user_id.replace(id).is_none()
            }
            "token" => {
                let t = SessionToken::from_hex(value).ok_or("bad token")?;
                token.replace(t).is_none()
            }
            other => return Err(format!("unknown key {other:?}")),
        };
        if !slot_was_empty {
            return Err(format!("{key} is given twice"));
        }
    }
    let username = username.ok_or("no username")?;
    let user_id = user_id.ok_or("no user_id")?;
    let token = token.ok_or("no token")?;
    if token.username != username || token.user_id != user_id {
        return Err("the token is for another user".into());
    }
    Ok(Saved {
        username,
        user_id,
        token,
    })
}

fn render(saved: &Saved) -> String {
    format!(
        "username {}\nuser_id {}\ntoken {}\n",
        saved.username,
        saved.user_id,
        saved.token.to_hex()
    )
}

/// Saves a login, replacing any before it.
pub fn save(path: &Path, saved: &Saved) -> Result<(), CliError> {
    let failed = |e: std::io::Error| {
        CliError::Failed(format!(
            "cannot save the session in {}: {e}",
            path.display()
        ))
    };
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir).map_err(failed)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("session");
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let written =
        write_private(&tmp, render(saved).as_bytes()).and_then(|()| std::fs::rename(&tmp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.map_err(failed)
}

/// Forgets the saved login; no error if there is none.
pub fn remove(path: &Path) -> Result<(), CliError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(CliError::Failed(format!(
            "cannot remove the session file {}: {e}",
            path.display()
        ))),
    }
}

/// Creates `dir` and its missing parents, private to the user (0700).
fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder.create(dir)
}

/// Writes a new file readable by its owner only (0600), replacing a stale
/// one of the same name, and makes it durable.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::auth::ClusterSecret;

    fn saved() -> Saved {
        let secret = ClusterSecret::from_bytes(b"session-file-test-secret").unwrap();
        let token = SessionToken::issue(&secret, 7, "alice".into(), 1_900_000_000, [5; 16]);
        Saved {
            username: "alice".into(),
            user_id: 7,
            token,
        }
    }

    #[test]
    fn saves_privately_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("deep/er/session");
        assert_eq!(load(&path).unwrap(), None);
        save(&path, &saved()).unwrap();
        save(&path, &saved()).unwrap();
        assert_eq!(load(&path).unwrap(), Some(saved()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["session"]);
        remove(&path).unwrap();
        remove(&path).unwrap();
        assert_eq!(load(&path).unwrap(), None);
    }

    #[test]
    fn corrupt_files_say_so_and_point_to_login() {
        let good = render(&saved());
        let other_user = good.replace("user_id 7", "user_id 8");
        let twice = format!("{good}username alice\n");
        for (text, why) in [
            ("garbage", "no value"),
            ("", "no username"),
            ("username alice\nuser_id x\n", "bad user_id"),
            ("username alice\nuser_id 7\ntoken abc\n", "bad token"),
            (other_user.as_str(), "another user"),
            (twice.as_str(), "username is given twice"),
            ("colour blue\n", "unknown key"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(why), "{text:?}: {err}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("session");
        std::fs::write(&path, [0xff, 0xfe]).unwrap();
        let err = load(&path).unwrap_err().to_string();
        assert!(
            err.contains("is corrupt") && err.contains("ferry login"),
            "{err}"
        );
    }
}
