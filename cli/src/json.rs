//! `--json`: what the client commands print for scripts, one JSON document
//! on standard output. The schema is documented in docs/json.md and only
//! grows: fields are added, never renamed or removed.

use crate::files_ui::civil_from_days;
use ferry_core::server::messages::Listed;
use serde::Serialize;

/// `ferry whoami --json`.
#[derive(Serialize)]
pub struct Me<'a> {
    pub user: &'a str,
    pub user_id: u64,
}

/// `ferry ls --json`.
#[derive(Serialize)]
pub struct Listing {
    pub files: Vec<File>,
}

/// A file as `ls` lists it.
#[derive(Serialize)]
pub struct File {
    pub name: String,
    pub owner: String,
    pub size: u64,
    /// The file's modification time as `put` read it from its source (what
    /// `get` gives the file back), or for a file stored without one (from
    /// a pipe, or before times were kept) when it was uploaded: RFC 3339,
    /// UTC, whole seconds (`2026-12-07T04:14:05Z`).
    pub modified: String,
    /// For one's own files: who may download it.
    pub shared_with: Vec<String>,
    /// When its content was uploaded, in the same form.
    pub uploaded: String,
    /// Its permission bits as four octal digits (`"0640"`), or `null` for
    /// a file stored without them.
    pub mode: Option<String>,
}

impl From<&Listed> for File {
    fn from(f: &Listed) -> Self {
        let uploaded = i64::try_from(f.at).unwrap_or(i64::MAX);
        File {
            name: f.name.clone(),
            owner: f.owner.clone(),
            size: f.size,
            modified: rfc3339(f.attrs.map_or(uploaded, |a| a.mtime_secs)),
            shared_with: f.shared_with.clone(),
            uploaded: rfc3339(uploaded),
            mode: f.attrs.map(|a| format!("{:04o}", a.mode)),
        }
    }
}

/// `ferry put --json`.
#[derive(Serialize, Default)]
pub struct Put {
    pub stored: Vec<Stored>,
    pub failed: Vec<Failed>,
    /// What `-r` found and did not store (links, special files, empty
    /// directories).
    pub skipped: Vec<Skipped>,
    /// Files whose name was taken by the same file (same size, time and
    /// mode): stored already, by an earlier `put`.
    pub unchanged: Vec<Unchanged>,
}

#[derive(Serialize)]
pub struct Skipped {
    pub path: String,
    pub reason: String,
}

#[derive(Serialize)]
pub struct Stored {
    pub name: String,
    /// The local file it was read from (`-` for standard input).
    pub path: String,
    pub size: u64,
    /// The BLAKE3 digest of its content, hex.
    pub digest: String,
}

/// `ferry get --json`.
#[derive(Serialize, Default)]
pub struct Get {
    pub downloaded: Vec<Downloaded>,
    pub failed: Vec<Failed>,
    /// `get -r`: files there already, as `get` writes them (same size and
    /// modification time as on the server), not downloaded again.
    pub unchanged: Vec<Unchanged>,
}

/// A file left as it was: for `get`, `at` is the local file; for `put`,
/// the local path of the file stored already.
#[derive(Serialize)]
pub struct Unchanged {
    pub name: String,
    pub at: String,
}

#[derive(Serialize)]
pub struct Downloaded {
    pub name: String,
    pub size: u64,
    /// Where it was written (`-` for standard output).
    pub to: String,
}

/// `ferry status --json`.
#[derive(Serialize)]
pub struct Status {
    /// The server that answered (the one the balancer gave).
    pub answered_by: u32,
    pub servers: Vec<ServerStatus>,
    /// The logged-in user's own files; `null` without a (valid) login.
    pub user: Option<UserUsage>,
}

#[derive(Serialize)]
pub struct ServerStatus {
    pub id: u32,
    pub addr: String,
    /// Whether it answered in time; when false, the fields below are null.
    pub answering: bool,
    /// `"master"`, `"follower"` or `"candidate"` (in an election).
    pub role: Option<&'static str>,
    pub view: Option<u64>,
    /// The end of its log, durable on its disk.
    pub last_index: Option<u64>,
    pub commit: Option<u64>,
    pub applied: Option<u64>,
    /// Committed entries (as the master said) it has not applied; null if
    /// no master answered.
    pub behind: Option<u64>,
    /// Bytes free on its disk; null if it could not tell.
    pub free_disk: Option<u64>,
    pub sessions: Option<u32>,
}

#[derive(Serialize)]
pub struct UserUsage {
    pub user: String,
    pub user_id: u64,
    pub files: u64,
    pub bytes: u64,
}

impl Status {
    /// `own_addr`: the address of the server that answered, as the
    /// balancer gave it.
    pub fn new(s: &ferry_core::server::messages::ClusterStatus, own_addr: &str) -> Status {
        let servers = s.servers.iter().map(|s| {
            let r = s.report.as_ref();
            ServerStatus {
                id: s.id,
                addr: s.addr.clone().unwrap_or_else(|| own_addr.to_string()),
                answering: r.is_some(),
                role: r.map(|r| r.role.name()),
                view: r.map(|r| r.view),
                last_index: r.map(|r| r.last_index),
                commit: r.map(|r| r.commit),
                applied: r.map(|r| r.applied),
                behind: s.behind,
                free_disk: r.and_then(|r| r.free_disk),
                sessions: r.map(|r| r.sessions),
            }
        });
        Status {
            answered_by: s.answered_by,
            servers: servers.collect(),
            user: s.user.as_ref().map(|u| UserUsage {
                user: u.username.clone(),
                user_id: u.user_id,
                files: u.files,
                bytes: u.bytes,
            }),
        }
    }
}

/// One file of a command that failed.
#[derive(Serialize)]
pub struct Failed {
    /// The file: its name, or for `put` the local path given.
    pub file: String,
    pub error: String,
    /// The exit code this failure alone would have.
    pub exit_code: u8,
}

impl Failed {
    pub fn new(file: String, error: &crate::error::CliError) -> Failed {
        Failed {
            file,
            error: error.to_string(),
            exit_code: error.exit_code(),
        }
    }
}

/// Prints `value` as one line of JSON on standard output.
pub fn print(value: &impl Serialize) {
    match serde_json::to_string(value) {
        Ok(text) => crate::say(format_args!("{text}")),
        // Our own types, of strings and numbers: cannot fail.
        Err(e) => eprintln!("ferry: cannot write JSON: {e}"),
    }
}

/// Unix seconds as RFC 3339, UTC.
pub fn rfc3339(secs: i64) -> String {
    // Whole seconds, as jq's `fromdate` takes them; a time before 1970
    // (a file's, which can be) counts back from it.
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_796_616_845), "2026-12-07T04:14:05Z");
        assert_eq!(rfc3339(-1), "1969-12-31T23:59:59Z");
    }

    #[test]
    fn modified_is_the_files_time_if_it_has_one_else_the_uploads() {
        let mut listed = Listed {
            owner: "alice".into(),
            name: "a".into(),
            size: 1,
            at: 1_796_616_845,
            shared_with: vec![],
            attrs: None,
        };
        let f = File::from(&listed);
        assert_eq!(f.modified, "2026-12-07T04:14:05Z");
        assert_eq!(f.uploaded, f.modified);
        assert_eq!(f.mode, None);
        listed.attrs = Some(ferry_core::FileAttrs::new(0, 999, 0o640));
        let f = File::from(&listed);
        assert_eq!(f.modified, "1970-01-01T00:00:00Z");
        assert_eq!(f.uploaded, "2026-12-07T04:14:05Z");
        assert_eq!(f.mode.as_deref(), Some("0640"));
    }

    #[test]
    fn names_are_escaped_as_json_not_as_terminal_text() {
        let f = File {
            name: "a\"b\u{7}".into(),
            owner: "alice".into(),
            size: 1,
            modified: rfc3339(0),
            shared_with: vec![],
            uploaded: rfc3339(0),
            mode: None,
        };
        let text = serde_json::to_string(&f).unwrap();
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["name"], "a\"b\u{7}");
    }
}
