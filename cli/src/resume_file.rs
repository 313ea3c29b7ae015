//! Where the last upload that may be resumed went.
//!
//! A server keeps what arrived of an upload cut off, for the same upload
//! to resume (see docs/transfer.md, *Resume*), but only that server: the
//! balancer may send the next try anywhere. So `ferry put` of one file
//! notes, beside the session file (`resume`, 0600), which server its
//! session is with before the content goes, and forgets it once the file
//! is stored. A `put` of the same name and size by the same user asks that
//! server first, in the balancer's place; if it is down or full, the
//! balancer picks one and the upload starts over there.
//!
//! Format, one `key value` per line (the name last, as it may hold
//! spaces):
//!
//! ```text
//! user alice
//! size 536870912
//! server 127.0.0.1:7001
//! name big.bin
//! ```

use crate::session_file;
use std::io::Write;
use std::path::PathBuf;

/// An upload that may be resumed, and where it went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upload {
    pub user: String,
    pub name: String,
    pub size: u64,
    pub server: String,
}

fn path() -> Option<PathBuf> {
    let session = session_file::path().ok()?;
    Some(session.with_file_name("resume"))
}

/// The upload noted, if any (anything unreadable is as if none were).
pub fn load() -> Option<Upload> {
    let text = std::fs::read_to_string(path()?).ok()?;
    let (mut user, mut name, mut size, mut server) = (None, None, None, None);
    for line in text.lines() {
        let (key, value) = line.split_once(' ')?;
        match key {
            "user" => user = Some(value.to_string()),
            "name" => name = Some(value.to_string()),
            "size" => size = value.parse().ok(),
            "server" => server = Some(value.to_string()),
            _ => return None,
        }
    }
    Some(Upload {
        user: user?,
        name: name?,
        size: size?,
        server: server?,
    })
}

/// The server to ask first for an upload of `name`, `size` bytes, by
/// `user`: the one its last try went to.
pub fn server_for(user: &str, name: &str, size: u64) -> Option<String> {
    load()
        .filter(|u| u.user == user && u.name == name && u.size == size)
        .map(|u| u.server)
}

/// Notes `upload` (replacing what was noted). A failure only costs a
/// resume, so it is not the command's.
pub fn save(upload: &Upload) {
    let Some(path) = path() else {
        return;
    };
    if upload.name.contains('\n') || upload.user.contains('\n') {
        return;
    }
    let text = format!(
        "user {}\nsize {}\nserver {}\nname {}\n",
        upload.user, upload.size, upload.server, upload.name
    );
    let tmp = path.with_file_name(format!(".resume.{}", std::process::id()));
    let written = (|| -> std::io::Result<()> {
        use std::os::unix::fs::OpenOptionsExt;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text.as_bytes())?;
        std::fs::rename(&tmp, &path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        tracing::debug!("cannot note the upload in {}: {e}", path.display());
    }
}

/// Forgets the upload noted, if it is this one (`name` of `user`).
pub fn forget(user: &str, name: &str) {
    let noted = load().is_some_and(|u| u.user == user && u.name == name);
    if let (true, Some(path)) = (noted, path()) {
        let _ = std::fs::remove_file(path);
    }
}
