//! The file clients' records as a history of the linearizability
//! checker's catalogue model (the rules: `checkers::linearizability::record`).

use super::client::{BatchFile, FilesRecord, OpPlan, OpRecord, OpResult, UserPlan};
use crate::checkers::linearizability::catalogue::{Input, Line, Output};
use crate::checkers::linearizability::record::{self, fold, op, History};
use crate::clients::account::AccountRecord;
use ferry_core::names::{check_path, is_under};
use ferry_core::server::messages::{FileOutcome, Landed, Listed};
use ferry_core::server::{OpError, Response};
use ferry_core::transfer::TransferError;

/// A files run's history: the setup's registrations and logins (clients
/// numbered from 0), then the file clients' operations.
pub fn history(accounts: &[AccountRecord], records: &[FilesRecord], users: &[UserPlan]) -> History {
    let mut h = record::accounts(accounts, 0, true);
    h.extend(files(records, users, accounts.len()));
    h
}

/// The file clients' uploads, deletes, shares, unshares and listings; their
/// clients are numbered from `first_client`.
fn files(records: &[FilesRecord], users: &[UserPlan], first_client: usize) -> History {
    let mut h = Vec::new();
    for (i, r) in records.iter().enumerate() {
        let client = first_client + i;
        let Some(me) = users.get(r.plan.user).map(|u| fold(&u.username)) else {
            continue;
        };
        let user_name = |u: usize| users.get(u).map(|p| fold(&p.username));
        for o in &r.ops {
            if let OpPlan::UploadMany { files, replace } = &o.op {
                h.extend(batch(client, &me, o, files, *replace));
                continue;
            }
            let input = match &o.op {
                OpPlan::Upload {
                    name,
                    content,
                    digest,
                    replace,
                    attrs,
                } => Input::Put {
                    owner: me.clone(),
                    name: name.clone(),
                    size: content.len() as u64,
                    digest: *digest,
                    replace: *replace,
                    attrs: *attrs,
                },
                OpPlan::Delete { name } => Input::Rm {
                    owner: me.clone(),
                    name: name.clone(),
                },
                OpPlan::DeleteFolder { name } => Input::RmFolder {
                    owner: me.clone(),
                    name: name.clone(),
                },
                OpPlan::Share { name, user } | OpPlan::Unshare { name, user } => {
                    let Some(grantee) = user_name(*user) else {
                        continue;
                    };
                    let (owner, name) = (me.clone(), name.clone());
                    match &o.op {
                        OpPlan::Share { .. } => Input::Share {
                            owner,
                            name,
                            grantee,
                        },
                        _ => Input::Unshare {
                            owner,
                            name,
                            grantee,
                        },
                    }
                }
                OpPlan::List => Input::Ls { user: me.clone() },
                OpPlan::DeleteAccount => Input::DeleteAccount { user: me.clone() },
                // Downloads, alone or in batches, are checked against the
                // log's model (`invariants`), not here.
                OpPlan::Download { .. }
                | OpPlan::DownloadMany { .. }
                | OpPlan::Browse { .. }
                | OpPlan::UploadMany { .. }
                // Recorded as its batches.
                | OpPlan::PutCommand { .. } => continue,
            };
            let Some(output) = file_output(&input, o.result.as_ref()) else {
                continue;
            };
            h.push(op(client, o.started, o.ended, input, output));
        }
    }
    h
}

/// A batch of uploads as operations of the model. Answered file by file:
/// the files that reached the log (stored, or refused as the entry was
/// applied) are one `PutMany`, at one point; a file refused "exists" or
/// "conflict" at its offer is a `Put` so refused, at its own point within
/// the batch's (but for a clash the batch may have made itself, which says
/// nothing of the catalogue); other failures took no effect. Without such
/// an answer (none, or "unavailable: it may still take effect"), each file
/// with a good name is an optional `Put`: the entry may have held any of
/// them, or none (an over-approximation of one entry holding some: sound,
/// if weaker).
fn batch(client: usize, me: &str, o: &OpRecord, files: &[BatchFile], replace: bool) -> History {
    let put = |f: &BatchFile| Input::Put {
        owner: me.to_string(),
        name: f.name.clone(),
        size: f.content.len() as u64,
        digest: f.digest,
        replace,
        attrs: None,
    };
    let many = |files: Vec<&BatchFile>| Input::PutMany {
        owner: me.to_string(),
        files: (files.iter())
            .map(|f| (f.name.clone(), f.content.len() as u64, f.digest))
            .collect(),
        replace,
    };
    let at = |input, output| op(client, o.started, o.ended, input, output);
    let outcomes = match &o.result {
        Some(OpResult::Answer(Response::Batch(outcomes))) if outcomes.len() == files.len() => {
            outcomes
        }
        Some(OpResult::Answer(Response::Batch(outcomes))) => {
            let what = format!("{} outcomes for {} files", outcomes.len(), files.len());
            return vec![at(many(files.iter().collect()), Output::Unexpected(what))];
        }
        result => {
            let Some(first) = files.first() else {
                return Vec::new();
            };
            return match file_output(&put(first), result.as_ref()) {
                None => Vec::new(),
                Some(Output::Unknown) => (files.iter())
                    .filter(|f| check_path(&f.name).is_ok())
                    .map(|f| at(put(f), Output::Unknown))
                    .collect(),
                Some(other) => vec![at(many(files.iter().collect()), other)],
            };
        }
    };
    let mut h = Vec::new();
    let mut reached = Vec::new();
    let mut said = Vec::new();
    for (i, (f, landed)) in files.iter().zip(outcomes).enumerate() {
        let before = &files[..i];
        match landed {
            Landed::Stored { size, digest } => {
                reached.push(f);
                said.push(Output::Stored {
                    size: *size,
                    digest: *digest,
                });
            }
            Landed::Failed(OpError::FileExists) => {
                reached.push(f);
                said.push(Output::Exists);
            }
            Landed::Failed(OpError::NameConflict { .. }) => {
                reached.push(f);
                said.push(Output::Conflict);
            }
            Landed::Failed(OpError::Transfer(TransferError::Exists)) => {
                h.push(at(put(f), Output::Exists))
            }
            Landed::Failed(OpError::Transfer(TransferError::Conflict { .. }))
                if !(before.iter())
                    .any(|g| is_under(&f.name, &g.name) || is_under(&g.name, &f.name)) =>
            {
                h.push(at(put(f), Output::Conflict))
            }
            Landed::Failed(_) => {}
        }
    }
    if !reached.is_empty() {
        h.push(at(many(reached), Output::Batch(said)));
    }
    h
}

/// What a file operation's result says, `None` if it says nothing of the
/// catalogue (see the module's comment).
fn file_output(input: &Input, result: Option<&OpResult>) -> Option<Output> {
    let read = matches!(input, Input::Ls { .. });
    let answer = match result {
        Some(OpResult::NoSession(_)) => return None,
        Some(OpResult::Answer(a)) => a,
        // No answer (or none yet, at the end of a run).
        Some(OpResult::Failed(_) | OpResult::Lost) | None => {
            return (!read).then_some(Output::Unknown)
        }
    };
    let e = match answer {
        Response::Failed(e) => e,
        Response::Listing(files) if read => return Some(Output::Listing(canonical(files))),
        Response::File(outcome) if !read => {
            return Some(match (input, outcome) {
                (Input::Put { .. }, FileOutcome::Stored { size, digest }) => Output::Stored {
                    size: *size,
                    digest: *digest,
                },
                (Input::Rm { .. } | Input::RmFolder { .. }, FileOutcome::Deleted) => {
                    Output::Deleted
                }
                (Input::RmFolder { .. }, FileOutcome::FolderDeleted { .. }) => {
                    Output::FolderDeleted
                }
                (Input::Share { .. }, FileOutcome::Shared) => Output::Shared,
                (Input::Unshare { .. }, FileOutcome::Unshared) => Output::Unshared,
                (_, other) => Output::Unexpected(format!("{other:?}")),
            })
        }
        // A deletion's answer: its sessions, this one's too, are over.
        Response::LoggedOut if matches!(input, Input::DeleteAccount { .. }) => {
            return Some(Output::AccountDeleted)
        }
        other => return Some(Output::Unexpected(other.to_string())),
    };
    match e {
        // Refused before the catalogue: nothing happened.
        OpError::InvalidSession { .. }
        | OpError::NotAuthenticated
        | OpError::BadName { .. }
        | OpError::Transfer(
            TransferError::BadName { .. }
            | TransferError::NoSpace { .. }
            | TransferError::OverQuota { .. },
        ) => None,
        _ if read => None,
        OpError::FileExists | OpError::Transfer(TransferError::Exists) => Some(Output::Exists),
        OpError::NameConflict { .. } | OpError::Transfer(TransferError::Conflict { .. }) => {
            Some(Output::Conflict)
        }
        OpError::IsAFolder => Some(Output::IsAFolder),
        OpError::NoSuchFile => Some(Output::NoSuchFile),
        OpError::NoSuchUser => Some(Output::NoSuchUser),
        OpError::CannotShareWithSelf => Some(Output::ShareWithSelf),
        OpError::NotShared => Some(Output::NotShared),
        // "Unavailable: it may still take effect", and any failure that
        // does not say whether the write was ordered.
        _ => Some(Output::Unknown),
    }
}

/// A listing in the model's form: sorted lines, sorted grantees.
fn canonical(files: &[Listed]) -> Vec<Line> {
    let mut lines: Vec<Line> = files
        .iter()
        .map(|l| {
            let mut g = l.shared_with.clone();
            g.sort();
            (l.owner.clone(), l.name.clone(), l.size, l.attrs, g)
        })
        .collect();
    lines.sort();
    lines
}
