//! `ferry status`: the cluster as the server the balancer gave us sees it —
//! every server's role, whether it answered, its log position, how far
//! behind the master it is, its free disk and its sessions — and, with a
//! saved login, the user's own file count and bytes.
//!
//! The command succeeds whenever a server answered, however many others
//! did not: saying which are down is its purpose.

use crate::client_session::{self, ok, unexpected};
use crate::error::CliError;
use crate::files_ui::human_size;
use crate::session_file;
use crate::{say, ClientArgs};
use ferry_core::server::messages::ClusterStatus;
use ferry_core::server::{Request, Response};

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    client: ClientArgs,
}

pub fn run(args: Args) -> Result<(), CliError> {
    // A saved login only adds the user's part; its absence is no error.
    let saved = session_file::load(&session_file::path()?)?;
    let logged_in = saved.is_some();
    let request = Request::Status {
        token: saved.map(|s| s.token),
    };
    let (session, response) = client_session::run_one(&args.client, Some(request))?;
    let status = match ok(response)? {
        Response::Status(status) => status,
        other => return Err(unexpected(other)),
    };
    if args.client.json {
        crate::json::print(&crate::json::Status::new(&status, &session.addr));
    } else {
        for line in table(&status, &session.addr) {
            say(format_args!("{line}"));
        }
        if logged_in && status.user.is_none() {
            // Not an error: the cluster's part stands on its own.
            eprintln!("note: the saved login was refused; run `ferry login` to see your files");
        }
    }
    Ok(())
}

/// The human form: one row per server, then the user's files.
fn table(status: &ClusterStatus, own_addr: &str) -> Vec<String> {
    let header = [
        "SERVER", "ADDRESS", "ROLE", "ANSWERS", "LAST", "COMMIT", "APPLIED", "BEHIND", "FREE",
        "SESSIONS",
    ];
    let mut rows = vec![header.map(String::from).to_vec()];
    for s in &status.servers {
        let addr = s.addr.clone().unwrap_or_else(|| own_addr.to_string());
        let mut row = vec![s.id.to_string(), addr];
        match &s.report {
            Some(r) => row.extend([
                r.role.name().to_string(),
                "yes".into(),
                r.last_index.to_string(),
                r.commit.to_string(),
                r.applied.to_string(),
                s.behind.map_or("?".into(), |b| b.to_string()),
                r.free_disk.map_or("?".into(), human_size),
                r.sessions.to_string(),
            ]),
            None => {
                row.extend(["-".to_string(), "no".into()]);
                row.extend(std::iter::repeat_n("-".to_string(), 6));
            }
        }
        rows.push(row);
    }
    let widths: Vec<usize> = (0..header.len())
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut lines: Vec<String> = rows
        .iter()
        .map(|r| {
            let cells = r.iter().zip(&widths);
            let line: Vec<String> = cells.map(|(c, w)| format!("{c:<w$}")).collect();
            line.join("  ").trim_end().to_string()
        })
        .collect();
    let up = status.servers.iter().filter(|s| s.report.is_some()).count();
    lines.push(format!(
        "{up} of {} servers answered (asked through server {})",
        status.servers.len(),
        status.answered_by
    ));
    if let Some(u) = &status.user {
        lines.push(format!(
            "{} (user {}): {} file(s), {} ({} bytes)",
            u.username,
            u.user_id,
            u.files,
            human_size(u.bytes),
            u.bytes
        ));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::replication::status::{Role, ServerReport};
    use ferry_core::server::messages::{ServerStatus, UserUsage};

    #[test]
    fn the_table_lines_up_and_says_who_is_down() {
        let report = ServerReport {
            id: 1,
            role: Role::Master,
            view: 1,
            master: Some(1),
            last_index: 12,
            commit: 12,
            applied: 12,
            sessions: 3,
            free_disk: Some(2 << 30),
        };
        let status = ClusterStatus {
            answered_by: 1,
            servers: vec![
                ServerStatus {
                    id: 1,
                    addr: None,
                    report: Some(report),
                    behind: Some(0),
                },
                ServerStatus {
                    id: 2,
                    addr: Some("127.0.0.1:7102".into()),
                    report: None,
                    behind: None,
                },
            ],
            user: Some(UserUsage {
                user_id: 1,
                username: "alice".into(),
                files: 2,
                bytes: 3345,
            }),
        };
        let lines = table(&status, "127.0.0.1:7101");
        assert_eq!(
            lines,
            [
                "SERVER  ADDRESS         ROLE    ANSWERS  LAST  COMMIT  APPLIED  BEHIND  FREE     SESSIONS",
                "1       127.0.0.1:7101  master  yes      12    12      12       0       2.0 GiB  3",
                "2       127.0.0.1:7102  -       no       -     -       -        -       -        -",
                "1 of 2 servers answered (asked through server 1)",
                "alice (user 1): 2 file(s), 3.3 KiB (3345 bytes)",
            ]
        );
    }
}
