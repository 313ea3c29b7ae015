//! What must hold in every run of the files scenario, checked at the end on
//! the healed, converged cluster (the replication invariants are checked
//! between steps, as in the replication scenario).
//!
//! **Points of the log.** A server answers from the state it has applied,
//! which is some prefix of the committed log, and a follower's may lag the
//! master's. So an answer is judged against the model of the catalogue
//! ([`super::model`]) at the points of the log the server could have been
//! at: from `lo`, its durably applied index before the client sent the
//! request (it only grows, across restarts too: the watch checks that),
//! to `hi`, the entries committed anywhere once the answer was in (a server
//! applies only committed entries). An answer is right if it is right at
//! *some* point `k` in `lo..=hi`: that is exact for one server's
//! decision, and sound under any concurrency, because the server decided at
//! one such point. Acknowledged writes must be in the log at some `k <= hi`
//! (acknowledged only once committed and applied).
//!
//! Checks:
//!
//! - the model replayed over the committed log equals every server's state
//!   (users, files with size, digest and attributes, shares of files and
//!   of folders); every `PutFile` names content some client of its owner
//!   uploaded under that name, with the attributes it sent (their `rwx`
//!   bits: set-ID and sticky bits never reach the log);
//! - **uploads**: `Stored` carries the digest and size of what the client
//!   sent, and a `PutFile` of it from that server was committed before the
//!   answer; a bad name is never stored (refused, or the client's own
//!   transfer gave up), and a good name is never refused as bad;
//!   "exists" only when the name existed at a point in `lo..=hi`, and
//!   "a file or a folder, not both" only when the name was a folder, or in
//!   a folder that was a file, at such a point;
//! - **downloads**: the local file is there only after `Downloaded`, holds
//!   exactly the bytes of an upload, was given the attributes the file
//!   had (none if it had none), and the downloader **may read** that
//!   file **with that content** at a point in `lo..=hi` (owner, or shared
//!   with at that point, by a share of the file or of a folder it is in:
//!   authorization and integrity together); "no such
//!   file" only if at some point in `lo..=hi` the user may not read it;
//! - shares, unshares and deletes (of files and of folders, `rm -r`):
//!   acknowledged ones are in the log before the answer with the same
//!   result; refusals ("is a folder" too) are right at some point;
//! - `ls` equals the model's listing for the user at some point;
//! - **no acknowledged upload lost**: an upload told `Stored` and not
//!   replaced or deleted (nor its owner's account) later in the log is in the final catalogue with its
//!   content; the verifier downloaded every file of the final catalogue as
//!   its owner and as every grantee, through every server, byte for byte
//!   and with its attributes, its listing (attributes too) was the
//!   model's, and a file not shared with the user was
//!   refused;
//! - **batches of uploads** ([`check_batch`]): the files that reached the
//!   log are exactly those of a `PutFiles` from that server committed
//!   before the answer, with the answer's results; a file answered failed
//!   was stored by no entry; a stored one is what was sent and is not lost;
//!   refusals at the offer are right;
//! - **batches of downloads** ([`check_download_batch`]): one outcome
//!   per file; a file received is in its own local destination, exactly
//!   the bytes announced, which the user could read under that owner and
//!   name at a point of `lo..=hi`; "no such file" only if at some such
//!   point they could not; no file fails for the session or the quota, or
//!   arrives damaged without a rot to explain it; a file that failed left
//!   no local destination;
//! - **deleted accounts**: acknowledged ones are in the log before the
//!   answer; afterwards no server's state holds anything of the user, no
//!   disk holds the content of their files that nothing else names, and
//!   their other sessions are refused only from a point of the log at
//!   which the account was gone;
//! - every server's disk holds exactly the blobs the catalogue names, each
//!   the bytes of an upload, and no temporary file; no disk saw a request a
//!   correct node never makes.
//!
//! - **damaged content** (see [`super::rot`]): a download that arrives
//!   damaged (`DigestMismatch`) went through a server that held a rotten
//!   copy of a content the user could read under that name at a point of
//!   `lo..=hi`, while the download ran; the verifier's tries that arrived
//!   damaged (or failed to read: the copy removed under it) too, and its
//!   last try got the file. Without rots, no download arrives damaged.
//!
//! - **waiting for a fetch**: a download whose server said it was still
//!   fetching the content (`Fetching`) waits on: its client gives up no
//!   sooner than its whole patience (15 s) after the last `Fetching` it
//!   heard, and the server refuses it as "not on this server yet" no
//!   sooner than its request timeout (10 s, less the network's latency)
//!   after it. Both would fail if `Fetching` did not push the deadlines
//!   back while the fetch moves.
//!
//! A download from a point of the log before an unshare or delete that the
//! owner had already been told of is allowed by the contract ("shared at
//! that point of the log") and counted; `strict_revocation` makes it a
//! violation.

use super::client::{
    BatchFile, CommandStep, FilesRecord, LocalCopy, OpPlan, OpRecord, OpResult, UserPlan,
    VerifyRecord,
};
use super::model::{self, canonical, Catalogue, History, Outcome};
use super::rot::{rotten_during, Rot};
use crate::disk::{short, Disk};
use crate::server_host::View;
use crate::trace::secs;
use ferry_core::client::{ClientConfig, ClientError};
use ferry_core::file_attrs::FileAttrs;
use ferry_core::names::{check_path, is_under};
use ferry_core::replication::entry::{Origin, Txn};
use ferry_core::server::messages::{FileOutcome, Landed};
use ferry_core::server::{OpError, Response, ServerConfig};
use ferry_core::transfer::TransferError;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

/// Everything the final checks read.
pub struct Final<'a> {
    pub servers: &'a [View<'a>],
    pub disks: &'a [std::cell::Ref<'a, Disk>],
    pub history: &'a History,
    pub users: &'a [UserPlan],
    /// Each user's id (by the log), by user index.
    pub ids: &'a [Option<u64>],
    pub clients: &'a [FilesRecord],
    pub verify: &'a VerifyRecord,
    pub strict_revocation: bool,
    /// The network's largest one-way latency.
    pub max_latency: Duration,
    /// The rots injected in the run.
    pub rots: &'a [Rot],
}

/// Which write an acknowledgement stands for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Write<'a> {
    Put {
        name: &'a str,
        digest: [u8; 32],
        replace: bool,
    },
    /// Of a file or of a folder (the server chose by what the name was).
    Share(&'a str, &'a str),
    Unshare(&'a str, &'a str),
    Delete(&'a str),
    /// `rm -r`: of a folder, or of a file of that name.
    DeleteFolder(&'a str),
    DeleteAccount,
}

/// The latest entry `k <= hi` from `server` by `owner` that is `w` and did
/// what the acknowledgement says.
fn acknowledged(h: &History, hi: u64, server: u32, owner: u64, w: Write<'_>) -> Option<u64> {
    h.upto(hi)
        .filter(|(_, e, o)| {
            e.origin.server == server
                && match (&e.txn, w) {
                    (
                        Txn::PutFile {
                            owner: o2,
                            name,
                            digest,
                            replace,
                            ..
                        },
                        Write::Put {
                            name: n,
                            digest: d,
                            replace: r,
                        },
                    ) => {
                        *o2 == owner
                            && name == n
                            && *digest == d
                            && *replace == r
                            && *o == Outcome::Stored
                    }
                    (
                        Txn::Share {
                            owner: o2,
                            name,
                            grantee,
                        },
                        Write::Share(n, g),
                    ) => *o2 == owner && name == n && grantee == g && *o == Outcome::Shared,
                    (
                        Txn::Unshare {
                            owner: o2,
                            name,
                            grantee,
                        },
                        Write::Unshare(n, g),
                    ) => *o2 == owner && name == n && grantee == g && *o == Outcome::Unshared,
                    (
                        Txn::ShareFolder {
                            owner: o2,
                            folder,
                            grantee,
                        },
                        Write::Share(n, g),
                    ) => *o2 == owner && folder == n && grantee == g && *o == Outcome::Shared,
                    (
                        Txn::UnshareFolder {
                            owner: o2,
                            folder,
                            grantee,
                        },
                        Write::Unshare(n, g),
                    ) => *o2 == owner && folder == n && grantee == g && *o == Outcome::Unshared,
                    (
                        Txn::Delete { owner: o2, name },
                        Write::Delete(n) | Write::DeleteFolder(n),
                    ) => *o2 == owner && name == n && *o == Outcome::Deleted,
                    (Txn::DeleteFolder { owner: o2, folder }, Write::DeleteFolder(n)) => {
                        *o2 == owner && folder == n && *o == Outcome::FolderDeleted
                    }
                    (Txn::DeleteAccount { user }, Write::DeleteAccount) => {
                        *user == owner && *o == Outcome::AccountDeleted
                    }
                    _ => false,
                }
        })
        .map(|(k, _, _)| k)
        .last()
}

/// Runs every final check; returns the violations and the count of
/// downloads served before an acknowledged revocation reached the server.
pub fn check_files(f: &Final<'_>) -> (Vec<String>, usize) {
    let mut v = Vec::new();
    let h = f.history;
    let last = h.last();

    // Every content a client meant to upload, by digest; and how often
    // each user's clients meant to upload each (name, content).
    let mut contents: BTreeMap<[u8; 32], Arc<[u8]>> = BTreeMap::new();
    let mut planned: BTreeMap<(usize, &str, [u8; 32]), usize> = BTreeMap::new();
    for c in f.clients {
        for s in &c.plan.steps {
            for (name, content, digest, _) in uploads_of(&s.op) {
                contents.insert(*digest, content.clone());
                *planned.entry((c.plan.user, name, *digest)).or_default() += 1;
            }
        }
    }

    for s in f.servers {
        if let Some(d) = last.differs_from(s.server) {
            v.push(format!(
                "server{} disagrees with the committed log: {d}",
                s.id
            ));
        }
    }

    // Every PutFile (and every file of a PutFiles) names content a client
    // of its owner uploaded under its name, alone or in a batch, with the
    // attributes it sent (what of them a file keeps).
    for (k, e, _) in h.upto(u64::MAX) {
        let (owner, files) = match &e.txn {
            Txn::PutFile {
                owner,
                name,
                size,
                digest,
                attrs,
                ..
            } => (owner, vec![(name, *size, digest, *attrs)]),
            Txn::PutFiles { owner, files, .. } => (
                owner,
                (files.iter())
                    .map(|f| (&f.name, f.size, &f.digest, f.attrs))
                    .collect(),
            ),
            _ => continue,
        };
        for (name, size, digest, attrs) in files {
            let uploaded = f.clients.iter().any(|c| {
                f.ids[c.plan.user] == Some(*owner)
                    && (c.plan.steps.iter()).any(|s| {
                        uploads_of(&s.op).any(|(n, content, d, a)| {
                            n == name
                                && d == digest
                                && content.len() as u64 == size
                                && a.map(model::kept) == attrs.map(model::kept)
                        })
                    })
            });
            if !uploaded {
                v.push(format!(
                    "entry #{k} puts user{owner}/{name} ({size} bytes, {}, {attrs:?}), which no client of that user uploaded",
                    short(digest)
                ));
            }
        }
    }

    let mut stale = 0;
    let revocations = collect_revocations(f, h);
    for c in f.clients {
        let Some(me) = f.ids[c.plan.user] else {
            v.push(format!("{}'s user is not in the log", c.plan.name));
            continue;
        };
        for op in &c.ops {
            let step = &op.op;
            let Some(result) = &op.result else {
                v.push(format!("{}: {step:?} never ended", c.plan.name));
                continue;
            };
            let Some(server) = op.server else {
                continue;
            };
            let what = format!(
                "{} ({} via server{server}, {}..{}): {step:?} -> {result}",
                c.plan.name,
                f.users[c.plan.user].username,
                secs(op.started),
                secs(op.ended)
            );
            let (Some(lo), Some(hi)) = (op.lo, op.hi) else {
                v.push(format!("{what}: the harness did not stamp it"));
                continue;
            };
            let range = format!("log points {lo}..={hi}");
            let some = |p: &dyn Fn(&Catalogue) -> bool| h.between(lo, hi).any(|(_, s)| p(s));
            let OpResult::Answer(answer) = result else {
                if op.local.is_some() {
                    v.push(format!("{what}: a failed download left a file"));
                }
                continue;
            };
            if !matches!(answer, Response::Downloaded { .. }) && op.local.is_some() {
                v.push(format!("{what}: a failed download left a file"));
            }
            if damaged_by_rot(f, op, me, server) {
                continue;
            }
            if let (
                OpPlan::Download { .. },
                Response::Failed(OpError::Transfer(TransferError::DigestMismatch)),
            ) = (step, answer)
            {
                v.push(format!(
                    "{what}: arrived damaged, but server{server} held no rotten copy of what the user could read under that name ({range}) while it ran"
                ));
                continue;
            }
            // A session of a user whose account is gone is refused: right
            // if the account was deleted at some point it may have served.
            if let Response::Failed(OpError::InvalidSession { .. }) = answer {
                if some(&|s| !s.users.contains_key(&me)) {
                    continue;
                }
            }
            // Answers no operation here may get.
            if let Response::Failed(
                e @ (OpError::NotAuthenticated
                | OpError::InvalidSession { .. }
                | OpError::Transfer(TransferError::OverQuota { .. })
                | OpError::Transfer(TransferError::NoSpace { .. })
                | OpError::Transfer(TransferError::DigestMismatch)),
            ) = answer
            {
                v.push(format!(
                    "{what}: a proven session with room to spare must not fail with {e:?}"
                ));
                continue;
            }
            if matches!(answer, Response::Failed(OpError::Unavailable { .. })) {
                continue;
            }
            let grantee = |u: usize| f.users[u].username.as_str();
            match (step, answer) {
                (
                    OpPlan::Upload {
                        name,
                        content,
                        digest,
                        replace,
                        ..
                    },
                    answer,
                ) if check_path(name).is_err() => {
                    // Refused by the server, or the client's own transfer
                    // gave up (the refusal lost with the session): never
                    // anything else.
                    if !matches!(answer, Response::Failed(OpError::Transfer(_))) {
                        v.push(format!(
                            "{what}: a bad name must be refused ({} bytes, {}, replace {replace})",
                            content.len(),
                            short(digest)
                        ));
                    }
                }
                (
                    OpPlan::Upload {
                        name,
                        content,
                        digest,
                        replace,
                        ..
                    },
                    Response::File(FileOutcome::Stored { size, digest: d }),
                ) => {
                    if d != digest || *size != content.len() as u64 {
                        v.push(format!(
                            "{what}: stored {size} bytes as {}, but the client sent {} bytes, {}",
                            short(d),
                            content.len(),
                            short(digest)
                        ));
                        continue;
                    }
                    let w = Write::Put {
                        name,
                        digest: *digest,
                        replace: *replace,
                    };
                    let Some(k) = acknowledged(h, hi, server, me, w) else {
                        v.push(format!(
                            "{what}: acknowledged, but no PutFile of it from server{server} was committed before the answer ({range})"
                        ));
                        continue;
                    };
                    // Not lost: unless replaced or deleted later in the log,
                    // it is in the final catalogue.
                    if !superseded(h, k, me, name)
                        && last.file(me, name).map(|m| m.digest) != Some(*digest)
                    {
                        v.push(format!(
                            "{what}: an acknowledged upload (entry #{k}), never replaced or deleted, is lost: the catalogue holds {:?}",
                            last.file(me, name)
                        ));
                    }
                }
                (
                    OpPlan::Upload { name, replace, .. },
                    Response::Failed(
                        OpError::FileExists | OpError::Transfer(TransferError::Exists),
                    ),
                ) => {
                    if *replace || !some(&|s| s.file(me, name).is_some()) {
                        v.push(format!(
                            "{what}: \"exists\", but the name was free at every point of {range} (or replacing was asked)"
                        ));
                    }
                }
                (
                    OpPlan::Upload { name, .. },
                    Response::Failed(
                        OpError::NameConflict { .. }
                        | OpError::Transfer(TransferError::Conflict { .. }),
                    ),
                ) => {
                    if !some(&|s| s.conflicts(me, name)) {
                        v.push(format!(
                            "{what}: \"a file or a folder, not both\", but {name:?} clashed with nothing at any point of {range}"
                        ));
                    }
                }
                (
                    OpPlan::Upload { name, .. },
                    Response::Failed(OpError::Transfer(TransferError::BadName { reason })),
                ) => v.push(format!(
                    "{what}: {name:?} is a good name, refused as bad: {reason}"
                )),
                (OpPlan::Upload { .. }, Response::Failed(OpError::Transfer(_))) => {}
                (OpPlan::UploadMany { files, replace }, Response::Batch(outcomes)) => {
                    let b = BatchAnswer {
                        what: &what,
                        server,
                        me,
                        lo,
                        hi,
                        files,
                        replace: *replace,
                        outcomes,
                        command: op.command,
                    };
                    let unique = |f: &BatchFile| {
                        planned.get(&(c.plan.user, f.name.as_str(), f.digest)) == Some(&1)
                    };
                    check_batch(h, &b, &unique, &mut v);
                }
                (OpPlan::Download { owner, name }, Response::Downloaded { size, digest }) => {
                    let Some(o) = owner.map_or(Some(me), |u| f.ids[u]) else {
                        continue;
                    };
                    match &op.local {
                        Some(b)
                            if b.len() as u64 == *size
                                && blake3::hash(b).as_bytes() == digest => {}
                        Some(b) => v.push(format!(
                            "{what}: the local file ({} bytes, {}) is not what was announced ({size} bytes, {})",
                            b.len(),
                            short(blake3::hash(b).as_bytes()),
                            short(digest)
                        )),
                        None => v.push(format!("{what}: downloaded, but no local file")),
                    }
                    match (contents.get(digest), &op.local) {
                        (Some(c), Some(b)) if c[..] == b[..] => {}
                        _ => v.push(format!("{what}: the bytes are not those of any upload")),
                    }
                    // The content, and the attributes its file was given
                    // (the client keeps them: `ClientConfig::preserve`).
                    let got = |s: &Catalogue| {
                        s.readable(me, o, name) == Some(*digest)
                            && s.readable_attrs(me, o, name) == Some(op.local_attrs)
                    };
                    let ok: Vec<u64> = h
                        .between(lo, hi)
                        .filter(|(_, s)| got(s))
                        .map(|(k, _)| k)
                        .collect();
                    if ok.is_empty() {
                        let seen: Vec<String> = h
                            .between(lo, hi)
                            .map(|(k, s)| match (s.readable(me, o, name), s.file(o, name)) {
                                (Some(d), Some(f)) => format!("#{k}: {} {:?}", short(&d), f.attrs),
                                _ => format!("#{k}: not readable"),
                            })
                            .collect();
                        v.push(format!(
                            "{what}: user{me} received user{o}/{name} as {} with {:?} but at no point of {range} could they read that: {}",
                            short(digest),
                            op.local_attrs,
                            seen.join(", ")
                        ));
                        continue;
                    }
                    // Stale but allowed: every point it could have been
                    // served from is older than a revocation the owner had
                    // already been told of.
                    let newest = ok.iter().copied().max().unwrap_or(0);
                    if let Some(r) = revocations.iter().find(|r| {
                        o != me
                            && r.owner == o
                            && r.name == name.as_str()
                            && r.grantee.is_none_or(|g| g == me)
                            && r.at < op.started
                            && r.entry > newest
                    }) {
                        stale += 1;
                        if f.strict_revocation {
                            v.push(format!(
                                "{what}: served from a point of the log before entry #{}, a revocation the owner was told of at {}, before the download began",
                                r.entry,
                                secs(r.at)
                            ));
                        }
                    }
                }
                (OpPlan::Download { owner, name }, Response::Failed(OpError::NoSuchFile)) => {
                    let Some(o) = owner.map_or(Some(me), |u| f.ids[u]) else {
                        continue;
                    };
                    if !some(&|s| s.readable(me, o, name).is_none()) {
                        v.push(format!(
                            "{what}: \"no such file\", but user{me} could read user{o}/{name} at every point of {range}"
                        ));
                    }
                }
                (OpPlan::Download { .. }, Response::Failed(OpError::Transfer(_))) => {}
                (OpPlan::DownloadMany { files }, Response::Received(outcomes)) => {
                    let asked: Vec<(Option<u64>, String)> = (files.iter())
                        .map(|(u, n)| (u.map_or(Some(me), |u| f.ids[u]), n.clone()))
                        .collect();
                    let b = DownloadBatchAnswer {
                        what: &what,
                        me,
                        lo,
                        hi,
                        files: &asked,
                        outcomes,
                        locals: &op.locals,
                    };
                    // A rot explains file i arriving damaged if server
                    // held a rotten copy of what the user could read
                    // under its name while the batch ran.
                    let damaged = |i: usize| {
                        let Some((Some(o), name)) = asked.get(i) else {
                            return false;
                        };
                        let readable =
                            |d: &[u8; 32]| some(&|s| s.readable(me, *o, name) == Some(*d));
                        rotten_during(f.rots, server, readable, op.started, op.ended)
                    };
                    check_download_batch(h, &b, &damaged, &mut v);
                }
                (OpPlan::Share { name, user }, Response::File(FileOutcome::Shared)) => {
                    if acknowledged(h, hi, server, me, Write::Share(name, grantee(*user))).is_none()
                    {
                        v.push(format!(
                            "{what}: acknowledged, but no such share from server{server} was committed before the answer ({range})"
                        ));
                    }
                }
                (OpPlan::Unshare { name, user }, Response::File(FileOutcome::Unshared)) => {
                    if acknowledged(h, hi, server, me, Write::Unshare(name, grantee(*user)))
                        .is_none()
                    {
                        v.push(format!(
                            "{what}: acknowledged, but no such unshare from server{server} was committed before the answer ({range})"
                        ));
                    }
                }
                (OpPlan::Delete { name }, Response::Failed(OpError::IsAFolder)) => {
                    if !some(&|s| s.file(me, name).is_none() && s.is_folder(me, name)) {
                        v.push(format!(
                            "{what}: \"is a folder\", but {name:?} was no folder at any point of {range}"
                        ));
                    }
                }
                (
                    OpPlan::DeleteFolder { name },
                    Response::File(FileOutcome::FolderDeleted { .. } | FileOutcome::Deleted),
                ) => {
                    if acknowledged(h, hi, server, me, Write::DeleteFolder(name)).is_none() {
                        v.push(format!(
                            "{what}: acknowledged, but no such delete from server{server} was committed before the answer ({range})"
                        ));
                    }
                }
                (OpPlan::Delete { name }, Response::File(FileOutcome::Deleted)) => {
                    if acknowledged(h, hi, server, me, Write::Delete(name)).is_none() {
                        v.push(format!(
                            "{what}: acknowledged, but no such delete from server{server} was committed before the answer ({range})"
                        ));
                    }
                }
                (
                    OpPlan::Share { name, .. }
                    | OpPlan::Unshare { name, .. }
                    | OpPlan::Delete { name }
                    | OpPlan::DeleteFolder { name },
                    Response::Failed(OpError::NoSuchFile),
                ) => {
                    // (An unshare of a folder emptied since still finds
                    // its share: "no such file" needs neither.)
                    if !some(&|s| s.file(me, name).is_none() && !s.is_folder(me, name)) {
                        v.push(format!(
                            "{what}: \"no such file\", but it existed at every point of {range}"
                        ));
                    }
                }
                (
                    OpPlan::Share { user, .. } | OpPlan::Unshare { user, .. },
                    Response::Failed(OpError::NoSuchUser),
                ) => {
                    let g = grantee(*user);
                    if !some(&|s| !s.by_name.contains_key(g)) {
                        v.push(format!(
                            "{what}: \"no such user\", but {g} was registered at every point of {range}"
                        ));
                    }
                }
                (OpPlan::Unshare { name, user }, Response::Failed(OpError::NotShared)) => {
                    let g = f.ids[*user];
                    if !some(&|s| g.is_none_or(|g| !s.is_shared(me, name, g))) {
                        v.push(format!(
                            "{what}: \"not shared\", but it was shared at every point of {range}"
                        ));
                    }
                }
                (OpPlan::DeleteAccount, Response::LoggedOut) => {
                    if acknowledged(h, hi, server, me, Write::DeleteAccount).is_none() {
                        v.push(format!(
                            "{what}: acknowledged, but no deletion of user{me} from server{server} was committed before the answer ({range})"
                        ));
                    }
                }
                (OpPlan::List, Response::Listing(files)) => {
                    let got = canonical(files);
                    if !some(&|s| s.listing(me) == got) {
                        let at_hi = h.between(hi, hi).next().map(|(_, s)| s.listing(me));
                        v.push(format!(
                            "{what}: the listing {got:?} matches no point of {range} (at #{hi}: {at_hi:?})"
                        ));
                    }
                }
                (step, answer) => v.push(format!(
                    "{what}: an answer {step:?} must not get: {answer:?}"
                )),
            }
        }
    }

    check_fetch_waits(f, &mut v);
    check_verifier(f, &contents, &mut v);
    check_deleted_accounts(f, &mut v);

    // Disks: exactly the catalogue's content, intact; nothing temporary;
    // nothing a correct node never asks for.
    let named = last.digests();
    for (i, d) in f.disks.iter().enumerate() {
        let id = i + 1;
        let have: BTreeSet<[u8; 32]> = d.blobs.keys().copied().collect();
        if have != named {
            v.push(format!(
                "server{id}'s disk holds {} blob(s), the catalogue names {}",
                have.len(),
                named.len()
            ));
        }
        for (digest, bytes) in &d.blobs {
            if contents.get(digest).is_none_or(|c| c[..] != bytes[..]) {
                v.push(format!(
                    "server{id}'s blob {} ({} bytes) is not the content of an upload",
                    short(digest),
                    bytes.len()
                ));
            }
        }
        if !d.temps.is_empty() {
            v.push(format!(
                "server{id} left temporary files behind: {:?}",
                d.temps.keys().collect::<Vec<_>>()
            ));
        }
        for a in &d.anomalies {
            v.push(format!("server{id}'s disk: {a}"));
        }
    }
    check_put_again(f, &mut v);
    (v, stale)
}

/// An upload whose client died mid-way and which was put again (see
/// `client::Step::cut`), resumed from what a server kept or not, is
/// stored as exactly its content: a resume never stores what the part
/// kept held instead of what the client has now. (A resumed upload's blob
/// is also checked against its name when it is persisted: the disks'
/// anomalies above.)
fn check_put_again(f: &Final<'_>, v: &mut Vec<String>) {
    for c in f.clients {
        for pair in c.ops.windows(2) {
            let [cut, again] = pair else {
                continue;
            };
            let (Some(_), OpPlan::Upload { digest: was, .. }) = (cut.cut, &cut.op) else {
                continue;
            };
            let OpPlan::Upload {
                content, digest, ..
            } = &again.op
            else {
                continue;
            };
            if was != digest {
                continue;
            }
            let what = format!(
                "{}'s upload put again at {}{}",
                c.plan.name,
                secs(again.started),
                match again.resumed {
                    Some(from) => format!(" (resumed at {from})"),
                    None => String::new(),
                }
            );
            if again
                .resumed
                .is_some_and(|from| from >= content.len() as u64)
            {
                v.push(format!("{what}: resumed past its end"));
            }
            if let Some(OpResult::Answer(Response::File(FileOutcome::Stored { size, digest: d }))) =
                &again.result
            {
                if d != digest || *size != content.len() as u64 {
                    v.push(format!(
                        "{what}: stored {size} bytes as {}, not its {} bytes {}",
                        short(d),
                        content.len(),
                        short(digest)
                    ));
                }
            }
        }
    }
}

/// A file an operation means to upload: (name, content, digest,
/// attributes).
type Upload<'a> = (&'a String, &'a Arc<[u8]>, &'a [u8; 32], Option<FileAttrs>);

/// The files an operation means to upload.
fn uploads_of(op: &OpPlan) -> impl Iterator<Item = Upload<'_>> {
    let (one, many) = match op {
        OpPlan::Upload {
            name,
            content,
            digest,
            attrs,
            ..
        } => (Some((name, content, digest, *attrs)), &[][..]),
        OpPlan::UploadMany { files, .. } => (None, std::slice::from_ref(files)),
        OpPlan::PutCommand { batches, .. } => (None, &batches[..]),
        _ => (None, &[][..]),
    };
    let many = (many.iter().flatten()).map(|f| (&f.name, &f.content, &f.digest, None));
    one.into_iter().chain(many)
}

/// Whether `me`'s file `name`, stored by entry `k`, was replaced or
/// deleted by a later entry: a put of that name (alone or in a batch), a
/// delete of it or of a folder it is in, or the account's deletion.
fn superseded(h: &History, k: u64, me: u64, name: &str) -> bool {
    h.upto(u64::MAX).skip(k as usize).any(|(j, e, o)| {
        let by_put = h.stored_as(j, me, name).is_some();
        let by_delete = matches!(&e.txn, Txn::Delete { owner, name: n }
            if *owner == me && n == name)
            && o == Outcome::Deleted;
        let by_folder = matches!(&e.txn, Txn::DeleteFolder { owner, folder }
            if *owner == me && name.starts_with(&format!("{folder}/")))
            && o == Outcome::FolderDeleted;
        let by_leaving = matches!(&e.txn, Txn::DeleteAccount { user } if *user == me)
            && o == Outcome::AccountDeleted;
        by_put || by_delete || by_folder || by_leaving
    })
}

/// A batch's answer, and what it answers.
pub struct BatchAnswer<'a> {
    /// The operation, for the violations' text.
    pub what: &'a str,
    pub server: u32,
    /// The user's id.
    pub me: u64,
    /// The points of the log the server may have been at (see the module).
    pub lo: u64,
    pub hi: u64,
    pub files: &'a [BatchFile],
    pub replace: bool,
    pub outcomes: &'a [Landed],
    /// The batch's place in a client-named command: a try through another
    /// server is answered from the entry the first try's server ordered.
    pub command: Option<CommandStep>,
}

/// Did file `i` of a batch reach its `PutFiles` (stored, or found to
/// exist or to clash when the entry was applied)? If so, what the model
/// must have said of it.
fn in_entry(o: &Landed) -> Option<Outcome> {
    match o {
        Landed::Stored { .. } => Some(Outcome::Stored),
        Landed::Failed(OpError::FileExists) => Some(Outcome::FileExists),
        Landed::Failed(OpError::NameConflict { .. }) => Some(Outcome::NameConflict),
        Landed::Failed(_) => None,
    }
}

/// Whether a batch of `files` files was answered one outcome each; the
/// violation if not.
fn one_outcome_each(what: &str, files: usize, outcomes: usize, v: &mut Vec<String>) -> bool {
    if outcomes != files {
        v.push(format!(
            "{what}: the batch of {files} files was answered {outcomes} outcomes"
        ));
    }
    outcomes == files
}

/// The checks of a batch of uploads (`UploadMany`) answered file by file:
///
/// - a file answered `Stored` carries the size and digest the client sent;
/// - the files that reached the log (stored, or told "exists" or "a file
///   or a folder, not both" as the entry was applied) are exactly the
///   files, in order, of a `PutFiles` from that server committed before
///   the answer, and the model gave each the answer's result: so every
///   stored file was committed before it was acknowledged, and a file the
///   answer says failed was not stored by the batch's entry;
/// - a file that failed stored nothing: if no other upload of its user
///   planned that name with that content, no entry of the whole log
///   stores it;
/// - a stored file is not lost: unless a later entry replaced or deleted
///   it, the final catalogue holds it with its content;
/// - a refusal at the offer is right at some point of `lo..=hi`, or by
///   the batch itself ("exists" only without `--force` and with the name
///   taken; a bad name only if it is one, or the batch gave it before; a
///   clash only with a folder or file of the catalogue, or with a name
///   the batch gave before), and no file of a proven session with room to
///   spare fails for the session, the quota, the disk or its digest.
///
/// `unique`: whether a file's name and content are planned by no other
/// upload of its user (a failed file's content found stored is then
/// this batch's doing).
pub fn check_batch(
    h: &History,
    b: &BatchAnswer<'_>,
    unique: &dyn Fn(&BatchFile) -> bool,
    v: &mut Vec<String>,
) {
    let (what, me) = (b.what, b.me);
    let range = format!("log points {}..={}", b.lo, b.hi);
    if !one_outcome_each(what, b.files.len(), b.outcomes.len(), v) {
        return;
    }
    let some = |p: &dyn Fn(&Catalogue) -> bool| h.between(b.lo, b.hi).any(|(_, s)| p(s));
    let each: Vec<(usize, &BatchFile, Outcome)> = (b.files.iter().zip(b.outcomes))
        .enumerate()
        .filter_map(|(i, (f, o))| Some((i, f, in_entry(o)?)))
        .collect();
    let entry = (!each.is_empty())
        .then(|| {
            h.upto(b.hi)
                .filter(|(k, e, _)| {
                    let ours = e.origin.server == b.server
                        || b.command.is_some_and(|c| {
                            e.origin.session == c.id | Origin::CLIENT_CHOSEN
                                && e.origin.request == c.number
                        });
                    ours && matches!(&e.txn, Txn::PutFiles { owner, files, replace, .. }
                    if *owner == me
                        && *replace == b.replace
                        && files.len() == each.len()
                        && files.iter().zip(&each).all(|(n, (_, f, _))| {
                            n.name == f.name
                                && n.digest == f.digest
                                && n.size == f.content.len() as u64
                        }))
                        && (h.file_outcomes(*k).iter()).eq(each.iter().map(|(_, _, o)| o))
                })
                .map(|(k, _, _)| k)
                .last()
        })
        .flatten();
    if !each.is_empty() && entry.is_none() {
        let said: Vec<String> = (each.iter())
            .map(|(i, f, o)| format!("file {} {:?} {o:?}", i + 1, f.name))
            .collect();
        v.push(format!(
            "{what}: acknowledged, but no PutFiles from server{} with exactly these files and results ({}) was committed before the answer ({range})",
            b.server,
            said.join(", ")
        ));
    }
    let last = h.last();
    for (i, (f, o)) in b.files.iter().zip(b.outcomes).enumerate() {
        let name = f.name.as_str();
        let file = format!("{what}: file {} {name:?}", i + 1);
        let e = match o {
            Landed::Stored { size, digest } => {
                if *digest != f.digest || *size != f.content.len() as u64 {
                    v.push(format!(
                        "{file}: stored {size} bytes as {}, but the client sent {} bytes, {}",
                        short(digest),
                        f.content.len(),
                        short(&f.digest)
                    ));
                    continue;
                }
                let Some(k) = entry else {
                    continue;
                };
                if !superseded(h, k, me, name)
                    && last.file(me, name).map(|m| m.digest) != Some(f.digest)
                {
                    v.push(format!(
                        "{file}: an acknowledged file of a batch (entry #{k}), never replaced or deleted, is lost: the catalogue holds {:?}",
                        last.file(me, name)
                    ));
                }
                continue;
            }
            Landed::Failed(e) => e,
        };
        if unique(f) {
            let stored = h
                .upto(u64::MAX)
                .find(|(k, _, _)| h.stored_as(*k, me, name) == Some(f.digest));
            if let Some((k, _, _)) = stored {
                v.push(format!(
                    "{file}: failed ({e}), yet entry #{k} stored it ({})",
                    short(&f.digest)
                ));
            }
        }
        let before = &b.files[..i];
        let twice = before.iter().any(|g| g.name == name);
        let within = (before.iter()).any(|g| is_under(name, &g.name) || is_under(&g.name, name));
        match e {
            // The batch's entry applied after its owner's account was
            // deleted (`NoSuchUser`): right if the account was gone at some
            // point the server may have been at.
            OpError::InvalidSession { .. } if some(&|s| !s.users.contains_key(&me)) => {}
            OpError::NotAuthenticated
            | OpError::InvalidSession { .. }
            | OpError::Transfer(
                TransferError::OverQuota { .. }
                | TransferError::NoSpace { .. }
                | TransferError::DigestMismatch,
            ) => v.push(format!(
                "{file}: a proven session with room to spare must not fail with {e:?}"
            )),
            OpError::Transfer(TransferError::Exists)
                if b.replace || !some(&|s| s.file(me, name).is_some()) =>
            {
                v.push(format!(
                    "{file}: \"exists\", but the name was free at every point of {range} (or replacing was asked)"
                ))
            }
            OpError::Transfer(TransferError::BadName { reason })
                if check_path(name).is_ok() && !twice =>
            {
                v.push(format!(
                    "{file}: a good name the batch gives once, refused as bad: {reason}"
                ))
            }
            OpError::Transfer(TransferError::Conflict { .. })
                if !within && !some(&|s| s.conflicts(me, name)) =>
            {
                v.push(format!(
                    "{file}: \"a file or a folder, not both\", but {name:?} clashed with nothing at any point of {range} nor in the batch"
                ))
            }
            _ => {}
        }
    }
}

/// A batch of downloads' answer, and what it answers.
pub struct DownloadBatchAnswer<'a> {
    /// The operation, for the violations' text.
    pub what: &'a str,
    /// The user's id.
    pub me: u64,
    /// The points of the log the server may have been at (see the module).
    pub lo: u64,
    pub hi: u64,
    /// The files asked for: their owner's id (`None`: a user the log
    /// never registered) and name.
    pub files: &'a [(Option<u64>, String)],
    pub outcomes: &'a [Landed],
    /// The local destinations afterwards, file `i` at `i`, with the
    /// attributes each was given.
    pub locals: &'a [LocalCopy],
}

/// The checks of a batch of downloads (`DownloadMany`) answered file by
/// file (`Received`):
///
/// - one outcome per file asked for;
/// - a file answered received is in its local destination `i`, exactly
///   that many bytes of that digest, and at some point of `lo..=hi` the
///   user could read the owner's file of that name (their own, or shared
///   with them, as a file or in a folder) with that content and the
///   attributes the destination was given (none if it had none);
/// - a file answered "no such file" was absent or not the user's to read
///   at some point of `lo..=hi`;
/// - no file of a proven session fails for the session, the quota or the
///   disk, nor arrives damaged unless `damaged(i)` (a rot explains it),
///   and none gets an answer only uploads and deletes get;
/// - a file that failed left no local destination `i`: nothing of it is
///   persisted, half-written or not.
pub fn check_download_batch(
    h: &History,
    b: &DownloadBatchAnswer<'_>,
    damaged: &dyn Fn(usize) -> bool,
    v: &mut Vec<String>,
) {
    let (what, me) = (b.what, b.me);
    let range = format!("log points {}..={}", b.lo, b.hi);
    if !one_outcome_each(what, b.files.len(), b.outcomes.len(), v) {
        return;
    }
    let points = || h.between(b.lo, b.hi);
    for (i, ((owner, name), o)) in b.files.iter().zip(b.outcomes).enumerate() {
        let file = format!("{what}: file {} {name:?}", i + 1);
        let local = b.locals.get(i).and_then(Option::as_ref);
        let e = match o {
            Landed::Stored { size, digest } => {
                let Some((bytes, attrs)) = local else {
                    v.push(format!("{file}: received, but no local file {i}"));
                    continue;
                };
                if bytes.len() as u64 != *size || blake3::hash(bytes).as_bytes() != digest {
                    v.push(format!(
                        "{file}: local file {i} ({} bytes, {}) is not what was received ({size} bytes, {})",
                        bytes.len(),
                        short(blake3::hash(bytes).as_bytes()),
                        short(digest)
                    ));
                    continue;
                }
                let Some(o) = owner else {
                    continue;
                };
                let got = |s: &Catalogue| {
                    s.readable(me, *o, name) == Some(*digest)
                        && s.file(*o, name).is_some_and(|f| f.size == *size)
                        && s.readable_attrs(me, *o, name) == Some(*attrs)
                };
                if !points().any(|(_, s)| got(s)) {
                    let seen: Vec<String> = points()
                        .map(
                            |(k, s)| match (s.readable(me, *o, name), s.file(*o, name)) {
                                (Some(d), Some(f)) => format!("#{k}: {} {:?}", short(&d), f.attrs),
                                _ => format!("#{k}: not readable"),
                            },
                        )
                        .collect();
                    v.push(format!(
                        "{file}: user{me} received user{o}/{name} as {} with {attrs:?} but at no point of {range} could they read that: {}",
                        short(digest),
                        seen.join(", ")
                    ));
                }
                continue;
            }
            Landed::Failed(e) => e,
        };
        if let Some((bytes, _)) = local {
            v.push(format!(
                "{file}: failed ({e}), yet it left local file {i} ({} bytes)",
                bytes.len()
            ));
        }
        match e {
            OpError::NoSuchFile => {
                let Some(o) = owner else {
                    continue;
                };
                if !points().any(|(_, s)| s.readable(me, *o, name).is_none()) {
                    v.push(format!(
                        "{file}: \"no such file\", but user{me} could read user{o}/{name} at every point of {range}"
                    ));
                }
            }
            OpError::Transfer(TransferError::DigestMismatch) if !damaged(i) => v.push(format!(
                "{file}: arrived damaged, but its server held no rotten copy of what the user could read under that name ({range}) while it ran"
            )),
            OpError::Transfer(TransferError::DigestMismatch) => {}
            OpError::NotAuthenticated
            | OpError::InvalidSession { .. }
            | OpError::Transfer(TransferError::OverQuota { .. } | TransferError::NoSpace { .. }) => {
                v.push(format!(
                    "{file}: a proven session with room to spare must not fail with {e:?}"
                ))
            }
            // Its content not fetched in time; a transfer given up.
            OpError::Unavailable { .. } | OpError::Transfer(_) => {}
            e => v.push(format!("{file}: a download must not get {e:?}")),
        }
    }
}

/// A deleted account leaves nothing on any server: no user, file, share
/// or peer of it in any server's state, and none of its files' content on
/// any disk unless another file still names that content.
fn check_deleted_accounts(f: &Final<'_>, v: &mut Vec<String>) {
    let h = f.history;
    let named = h.last().digests();
    for (k, e, o) in h.upto(u64::MAX) {
        let (Txn::DeleteAccount { user }, Outcome::AccountDeleted) = (&e.txn, o) else {
            continue;
        };
        for s in f.servers {
            if !s.server.replica().state().holds_nothing_of(*user) {
                v.push(format!(
                    "server{} still holds something of user{user}, deleted by entry #{k}",
                    s.id
                ));
            }
        }
        // What the user owned just before the deletion.
        let before = h.between(k - 1, k - 1).next().map(|(_, s)| s);
        let theirs = before.into_iter().flat_map(|s| {
            (s.files.iter())
                .filter(|((o, _), _)| o == user)
                .map(|(_, f)| f.digest)
        });
        for d in theirs.filter(|d| !named.contains(d)) {
            for (i, disk) in f.disks.iter().enumerate() {
                if disk.blobs.contains_key(&d) {
                    v.push(format!(
                        "server{}'s disk still holds {}, a file of user{user}, deleted by entry #{k}",
                        i + 1,
                        short(&d)
                    ));
                }
            }
        }
    }
}

/// Whether `op` is a download that arrived damaged through a server that
/// held a rotten copy of a content `me` could read under that name (at a
/// point of its `lo..=hi`) while it ran: a rot explains it.
fn damaged_by_rot(f: &Final<'_>, op: &OpRecord, me: u64, server: u32) -> bool {
    let (
        OpPlan::Download { owner, name },
        Some(OpResult::Answer(Response::Failed(OpError::Transfer(TransferError::DigestMismatch)))),
        Some(lo),
        Some(hi),
    ) = (&op.op, &op.result, op.lo, op.hi)
    else {
        return false;
    };
    let Some(o) = owner.map_or(Some(me), |u| f.ids[u]) else {
        return false;
    };
    let readable = |d: &[u8; 32]| {
        f.history
            .between(lo, hi)
            .any(|(_, s)| s.readable(me, o, name) == Some(*d))
    };
    rotten_during(f.rots, server, readable, op.started, op.ended)
}

/// How a download that heard `Fetching` ended, judged against the
/// deadlines `Fetching` pushes back: the client's whole patience after the
/// last one, and the server's request timeout (less the latency: the
/// `Fetching` may have been slow and the refusal quick).
fn check_fetch_waits(f: &Final<'_>, v: &mut Vec<String>) {
    let patience = ClientConfig::new(String::new()).op_timeout;
    let server_wait = ServerConfig::new(1).request_timeout;
    // The timers fire on a tick; a millisecond of rounding.
    let slack = Duration::from_millis(1);
    for c in f.clients {
        for op in &c.ops {
            let (Some(last), Some(result)) = (op.fetching.last(), &op.result) else {
                continue;
            };
            let after = op.ended.saturating_sub(*last);
            let what = || {
                format!(
                    "{} ({} via server{}, {}..{}): {:?} -> {result}",
                    c.plan.name,
                    f.users[c.plan.user].username,
                    op.server.unwrap_or(0),
                    secs(op.started),
                    secs(op.ended),
                    op.op
                )
            };
            match result {
                OpResult::Failed(ClientError::Timeout { .. }) if after + slack < patience => {
                    v.push(format!(
                        "{}: gave up {} after the server said it was still fetching the content (at {}); the client's patience is {}",
                        what(),
                        secs(after),
                        secs(*last),
                        secs(patience)
                    ));
                }
                OpResult::Answer(Response::Failed(OpError::Unavailable { reason }))
                    if reason.contains("not on this server yet")
                        && after + f.max_latency + slack < server_wait =>
                {
                    v.push(format!(
                        "{}: refused {} after the server said it was still fetching the content (at {}); it waits {} after each such word",
                        what(),
                        secs(after),
                        secs(*last),
                        secs(server_wait)
                    ));
                }
                _ => {}
            }
        }
    }
}

/// An unshare or delete acknowledged to the file's owner.
struct Revocation<'a> {
    owner: u64,
    name: &'a str,
    /// `None`: everyone (a delete).
    grantee: Option<u64>,
    /// When the owner was told.
    at: Duration,
    /// The entry it stands for.
    entry: u64,
}

fn collect_revocations<'a>(f: &Final<'a>, h: &History) -> Vec<Revocation<'a>> {
    let mut out = Vec::new();
    for c in f.clients {
        let Some(me) = f.ids[c.plan.user] else {
            continue;
        };
        for op in &c.ops {
            let (Some(server), Some(hi)) = (op.server, op.hi) else {
                continue;
            };
            let (name, grantee, w) = match (&op.op, &op.result) {
                (
                    OpPlan::Unshare { name, user },
                    Some(OpResult::Answer(Response::File(FileOutcome::Unshared))),
                ) => (
                    name,
                    f.ids[*user],
                    Write::Unshare(name, &f.users[*user].username),
                ),
                (
                    OpPlan::Delete { name },
                    Some(OpResult::Answer(Response::File(FileOutcome::Deleted))),
                ) => (name, None, Write::Delete(name)),
                _ => continue,
            };
            if let Some(entry) = acknowledged(h, hi, server, me, w) {
                out.push(Revocation {
                    owner: me,
                    name,
                    grantee,
                    at: op.ended,
                    entry,
                });
            }
        }
    }
    out
}

fn check_verifier(f: &Final<'_>, contents: &BTreeMap<[u8; 32], Arc<[u8]>>, v: &mut Vec<String>) {
    let last = f.history.last();
    let servers: BTreeSet<u32> = f.servers.iter().map(|s| s.id).collect();
    // A user who deleted their account has nothing left to verify.
    let present = |u: usize| f.ids[u].filter(|id| last.users.contains_key(id));
    let verified = (0..f.users.len()).filter(|u| present(*u).is_some()).count();
    if f.verify.finished < verified {
        v.push(format!(
            "only {} of {verified} verifiers finished",
            f.verify.finished,
        ));
        return;
    }
    for (u, user) in f.users.iter().enumerate() {
        let Some(me) = present(u) else {
            continue;
        };
        let visited: BTreeSet<u32> = f
            .verify
            .visits
            .iter()
            .filter(|x| x.user == u)
            .map(|x| x.server)
            .collect();
        if visited != servers {
            v.push(format!(
                "the verifier reached only servers {visited:?} as {} (misses: {:?})",
                user.username, f.verify.misses
            ));
        }
        let want = last.listing(me);
        for visit in f.verify.visits.iter().filter(|x| x.user == u) {
            let at = format!("verify {} on server{}", user.username, visit.server);
            match &visit.listing {
                OpResult::Answer(Response::Listing(files)) if canonical(files) == want => {}
                other => v.push(format!("{at}: ls gave {other:?}, the log says {want:?}")),
            }
            for d in &visit.downloads {
                let owner = match &d.owner {
                    None => Some(me),
                    Some(o) => last.by_name.get(o).copied(),
                };
                let expect = owner.and_then(|o| last.readable(me, o, &d.name));
                let what = format!("{at}: download {:?}/{}", d.owner, d.name);
                for (from, to) in &d.damaged {
                    let rotten = |x: &[u8; 32]| Some(*x) == expect;
                    if !rotten_during(f.rots, visit.server, rotten, *from, *to) {
                        v.push(format!(
                            "{what}: the try of {}..{} arrived damaged, but server{} held no rotten copy of the content then",
                            secs(*from),
                            secs(*to),
                            visit.server
                        ));
                    }
                }
                let attrs = owner.and_then(|o| last.readable_attrs(me, o, &d.name));
                if expect.is_some() && d.local.is_some() && attrs != Some(d.local_attrs) {
                    v.push(format!(
                        "{what}: the file was given {:?}, the log says {:?}",
                        d.local_attrs,
                        attrs.flatten()
                    ));
                }
                match (expect, &d.result, &d.local) {
                    (
                        Some(digest),
                        OpResult::Answer(Response::Downloaded { digest: got, .. }),
                        Some(b),
                    ) if *got == digest
                        && contents.get(&digest).is_some_and(|c| c[..] == b[..]) => {}
                    (None, OpResult::Answer(Response::Failed(OpError::NoSuchFile)), None) => {}
                    (expect, result, local) => v.push(format!(
                        "{what}: expected {}, got {result} ({})",
                        match expect {
                            Some(d) => format!("the content {}", short(&d)),
                            None => "no such file".into(),
                        },
                        match local {
                            Some(b) => format!(
                                "local file of {} bytes, {}",
                                b.len(),
                                short(blake3::hash(b).as_bytes())
                            ),
                            None => "no local file".into(),
                        }
                    )),
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::replication::entry::{Entry, NewFile, Origin};

    /// Entry `index`, from server 1, of `txn`.
    fn entry(index: u64, request: u64, txn: Txn) -> Entry {
        Entry {
            index,
            view: 1,
            at: 0,
            origin: Origin {
                server: 1,
                session: 7,
                request,
            },
            txn,
        }
    }

    fn register() -> Txn {
        Txn::Register {
            username: "alice".into(),
            password: ferry_core::accounts::password::PasswordHash {
                params: ferry_core::accounts::password::PasswordParams::TESTING,
                salt: [0; 16],
                hash: [0; 32],
            },
        }
    }

    fn file(name: &str, byte: u8, len: usize) -> BatchFile {
        let content: Arc<[u8]> = vec![byte; len].into();
        BatchFile {
            name: name.into(),
            digest: *blake3::hash(&content).as_bytes(),
            content,
        }
    }

    fn put_files(files: &[&BatchFile]) -> Txn {
        Txn::PutFiles {
            owner: 1,
            files: (files.iter())
                .map(|f| NewFile {
                    name: f.name.clone(),
                    size: f.content.len() as u64,
                    digest: f.digest,
                    attrs: None,
                })
                .collect(),
            replace: false,
            holder: 1,
        }
    }

    fn put_one(f: &BatchFile) -> Txn {
        Txn::PutFile {
            owner: 1,
            name: f.name.clone(),
            size: f.content.len() as u64,
            digest: f.digest,
            replace: false,
            holder: 1,
            attrs: None,
        }
    }

    fn stored(f: &BatchFile) -> Landed {
        Landed::Stored {
            size: f.content.len() as u64,
            digest: f.digest,
        }
    }

    /// The violations of a batch of `files` through server 1, answered
    /// `outcomes` with the log at `hi` entries of `log`.
    fn check(log: &[Entry], hi: u64, files: &[BatchFile], outcomes: &[Landed]) -> Vec<String> {
        let h = History::replay(log);
        check_with(&h, hi, files, outcomes)
    }

    fn check_with(h: &History, hi: u64, files: &[BatchFile], outcomes: &[Landed]) -> Vec<String> {
        let b = BatchAnswer {
            what: "client1",
            server: 1,
            me: 1,
            lo: 1,
            hi,
            files,
            replace: false,
            outcomes,
            command: None,
        };
        let mut v = Vec::new();
        check_batch(h, &b, &|_| true, &mut v);
        v
    }

    fn fires(v: &[String], what: &str) {
        assert!(v.iter().any(|x| x.contains(what)), "{what:?} not in {v:?}");
    }

    /// alice has "a"; her batch stores "b" and is told "a" exists.
    fn honest() -> (Vec<Entry>, Vec<BatchFile>, Vec<Landed>) {
        let (a0, a, b) = (file("a", 1, 10), file("a", 2, 5000), file("b", 3, 4097));
        let log = vec![
            entry(1, 1, register()),
            entry(2, 2, put_one(&a0)),
            entry(3, 3, put_files(&[&b])),
        ];
        let outcomes = vec![
            Landed::Failed(OpError::Transfer(TransferError::Exists)),
            stored(&b),
        ];
        (log, vec![a, b], outcomes)
    }

    #[test]
    fn an_honest_batch_passes() {
        let (log, files, outcomes) = honest();
        assert_eq!(check(&log, 3, &files, &outcomes), Vec::<String>::new());
    }

    #[test]
    fn a_batch_answered_before_its_entry_was_committed_is_caught() {
        let (log, files, outcomes) = honest();
        // The answer came when only two entries were committed.
        fires(
            &check(&log, 2, &files, &outcomes),
            "no PutFiles from server1",
        );
        // Or its entry came from another server, or stored other content.
        let mut elsewhere = log.clone();
        elsewhere[2].origin.server = 2;
        fires(
            &check(&elsewhere, 3, &files, &outcomes),
            "no PutFiles from server1",
        );
        let mut other = log.clone();
        other[2] = entry(3, 3, put_files(&[&file("b", 9, 4097)]));
        fires(
            &check(&other, 3, &files, &outcomes),
            "no PutFiles from server1",
        );
    }

    #[test]
    fn a_failed_file_that_was_stored_is_caught() {
        let (mut log, files, outcomes) = honest();
        // The entry also stored "a", which the answer says failed.
        log[2] = entry(3, 3, put_files(&[&files[0], &files[1]]));
        let v = check(&log, 3, &files, &outcomes);
        fires(&v, "no PutFiles from server1");
        // (replace: false and "a" exists, so the model refuses it: with
        // --force it would be stored, which the next check sees.)
        let mut forced = log.clone();
        if let Txn::PutFiles { replace, .. } = &mut forced[2].txn {
            *replace = true;
        }
        let v = check(&forced, 3, &files, &outcomes);
        fires(&v, "file 1 \"a\": failed");
        fires(&v, "yet entry #3 stored it");
        // A batch in which nothing reached the log, whose failed file a
        // later entry stores all the same.
        let lone = [files[0].clone()];
        let failed = [Landed::Failed(OpError::Unavailable {
            reason: "not copied in time".into(),
        })];
        let mut later = log[..2].to_vec();
        later.push(entry(
            3,
            3,
            Txn::Delete {
                owner: 1,
                name: "a".into(),
            },
        ));
        later.push(entry(4, 4, put_one(&files[0])));
        fires(&check(&later, 4, &lone, &failed), "yet entry #4 stored it");
        // Not when the same name and content are another upload's too.
        let h = History::replay(&later);
        let b = BatchAnswer {
            what: "client1",
            server: 1,
            me: 1,
            lo: 1,
            hi: 4,
            files: &lone,
            replace: false,
            outcomes: &failed,
            command: None,
        };
        let mut v = Vec::new();
        check_batch(&h, &b, &|_| false, &mut v);
        assert!(v.is_empty(), "{v:?}");
    }

    #[test]
    fn a_stored_file_that_is_not_what_was_sent_or_is_lost_is_caught() {
        let (log, files, mut outcomes) = honest();
        outcomes[1] = stored(&file("b", 4, 4097));
        fires(&check(&log, 3, &files, &outcomes), "but the client sent");
        let (log, files, outcomes) = honest();
        let mut h = History::replay(&log);
        // A final catalogue without it, though nothing replaced it.
        if let Some(last) = h.states.last_mut() {
            last.files.remove(&(1, "b".to_string()));
        }
        fires(&check_with(&h, 3, &files, &outcomes), "is lost");
        // Replaced later: not lost.
        let mut replaced = log.clone();
        let mut newer = put_one(&file("b", 5, 1));
        if let Txn::PutFile { replace, .. } = &mut newer {
            *replace = true;
        }
        replaced.push(entry(4, 4, newer));
        assert!(check(&replaced, 3, &files, &outcomes).is_empty());
    }

    #[test]
    fn refusals_at_the_offer_must_be_right() {
        let (log, files, outcomes) = honest();
        // "exists" for "b", which was free.
        let mut o = outcomes.clone();
        o[0] = Landed::Failed(OpError::Transfer(TransferError::Exists));
        o[1] = Landed::Failed(OpError::Transfer(TransferError::Exists));
        let v = check(&log[..2], 2, &files, &o);
        fires(&v, "file 2 \"b\": \"exists\", but the name was free");
        // A good name given once, refused as bad.
        let bad = [Landed::Failed(OpError::Transfer(TransferError::BadName {
            reason: "twice".into(),
        }))];
        fires(&check(&log, 3, &files[1..], &bad), "refused as bad");
        // Given twice it may be; a bad one must be.
        let twice = [file("c", 1, 1), file("c", 2, 1)];
        let o = [stored(&twice[0]), bad[0].clone()];
        let log2 = vec![
            entry(1, 1, register()),
            entry(2, 2, put_files(&[&twice[0]])),
        ];
        assert!(check(&log2, 2, &twice, &o).is_empty());
        // A clash with nothing, in the catalogue or the batch.
        let clash = [Landed::Failed(OpError::Transfer(TransferError::Conflict {
            reason: "none".into(),
        }))];
        fires(
            &check(&log, 3, &[file("c", 1, 1)], &clash),
            "clashed with nothing",
        );
        // Failures no proven session with room may see.
        let quota = [Landed::Failed(OpError::Transfer(
            TransferError::OverQuota {
                used: 0,
                quota: 1,
                needed: 2,
            },
        ))];
        fires(&check(&log, 3, &[file("c", 1, 1)], &quota), "must not fail");
        // Outcomes not one per file.
        fires(
            &check(&log, 3, &files, &outcomes[..1]),
            "answered 1 outcomes",
        );
    }

    type Local = LocalCopy;
    /// A log, the files asked for, the answer, the local files.
    type Gets = (
        Vec<Entry>,
        Vec<(Option<u64>, &'static str)>,
        Vec<Landed>,
        Vec<Local>,
    );

    /// alice (user 1) has "a"; bob (user 2) has "p", shared with alice
    /// from entry 5 on, and "q", never shared.
    fn two_users() -> (Vec<Entry>, BatchFile, BatchFile, BatchFile) {
        let a = file("a", 1, 4097);
        let (p, q) = (file("p", 2, 10), file("q", 3, 0));
        let bob = |f: &BatchFile| {
            let mut t = put_one(f);
            if let Txn::PutFile { owner, .. } = &mut t {
                *owner = 2;
            }
            t
        };
        let mut register_bob = register();
        if let Txn::Register { username, .. } = &mut register_bob {
            *username = "bob".into();
        }
        let log = vec![
            entry(1, 1, register()),
            entry(2, 2, register_bob),
            entry(3, 3, put_one(&a)),
            entry(4, 4, bob(&p)),
            entry(
                5,
                5,
                Txn::Share {
                    owner: 2,
                    name: "p".into(),
                    grantee: "alice".into(),
                },
            ),
            entry(6, 6, bob(&q)),
        ];
        (log, a, p, q)
    }

    fn local(f: &BatchFile) -> Local {
        Some((f.content.clone(), None))
    }

    /// The violations of alice's batch of `files` answered `outcomes`,
    /// the log at points `lo..=hi`.
    fn check_gets(
        log: &[Entry],
        (lo, hi): (u64, u64),
        files: &[(Option<u64>, &str)],
        outcomes: &[Landed],
        locals: &[Local],
        damaged: &dyn Fn(usize) -> bool,
    ) -> Vec<String> {
        let h = History::replay(log);
        let files: Vec<(Option<u64>, String)> =
            files.iter().map(|(o, n)| (*o, n.to_string())).collect();
        let b = DownloadBatchAnswer {
            what: "client1",
            me: 1,
            lo,
            hi,
            files: &files,
            outcomes,
            locals,
        };
        let mut v = Vec::new();
        check_download_batch(&h, &b, damaged, &mut v);
        v
    }

    /// alice gets her "a", bob's shared "p", "missing" and bob's "q":
    /// the last two "no such file".
    fn honest_gets() -> Gets {
        let (log, a, p, _) = two_users();
        let files = vec![
            (Some(1), "a"),
            (Some(2), "p"),
            (Some(1), "missing"),
            (Some(2), "q"),
        ];
        let outcomes = vec![
            stored(&a),
            stored(&p),
            Landed::Failed(OpError::NoSuchFile),
            Landed::Failed(OpError::NoSuchFile),
        ];
        let locals = vec![local(&a), local(&p), None, None];
        (log, files, outcomes, locals)
    }

    #[test]
    fn an_honest_batch_of_downloads_passes() {
        let (log, files, outcomes, locals) = honest_gets();
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
        assert_eq!(v, Vec::<String>::new());
        // Answered from any point of the range at which it was right.
        let v = check_gets(&log, (4, 6), &files, &outcomes, &locals, &|_| false);
        assert_eq!(v, Vec::<String>::new());
    }

    #[test]
    fn a_received_file_the_user_may_not_read_is_caught() {
        let (log, a, _, q) = two_users();
        // bob's "q", never shared with alice.
        let files = [(Some(2), "q")];
        let v = check_gets(&log, (6, 6), &files, &[stored(&q)], &[local(&q)], &|_| {
            false
        });
        fires(&v, "at no point of log points 6..=6 could they read that");
        // bob's "p" before its share (the server's point at most 4).
        let p = file("p", 2, 10);
        let files = [(Some(2), "p")];
        let v = check_gets(&log, (3, 4), &files, &[stored(&p)], &[local(&p)], &|_| {
            false
        });
        fires(&v, "could they read that");
        // Her own "a" with another content than the catalogue's.
        let other = file("a", 9, 4097);
        let files = [(Some(1), "a")];
        let v = check_gets(
            &log,
            (6, 6),
            &files,
            &[stored(&other)],
            &[local(&other)],
            &|_| false,
        );
        fires(&v, "could they read that");
        // Or with attributes it never had.
        let attrs = FileAttrs {
            mtime_secs: 1,
            mtime_nanos: 0,
            mode: 0o644,
        };
        let v = check_gets(
            &log,
            (6, 6),
            &files,
            &[stored(&a)],
            &[Some((a.content.clone(), Some(attrs)))],
            &|_| false,
        );
        fires(&v, "could they read that");
    }

    #[test]
    fn a_received_file_not_in_its_destination_is_caught() {
        let (log, files, outcomes, mut locals) = honest_gets();
        // File 1 persisted to the wrong destination: file 2's.
        locals.swap(0, 1);
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
        fires(&v, "file 1 \"a\": local file 0 (10 bytes");
        fires(&v, "is not what was received");
        // Or nowhere.
        let (log, files, outcomes, mut locals) = honest_gets();
        locals[1] = None;
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
        fires(&v, "file 2 \"p\": received, but no local file 1");
    }

    #[test]
    fn wrong_failures_of_a_batch_of_downloads_are_caught() {
        let (log, files, mut outcomes, mut locals) = honest_gets();
        // "no such file" for her own "a", there at every point.
        outcomes[0] = Landed::Failed(OpError::NoSuchFile);
        locals[0] = None;
        let v = check_gets(&log, (3, 6), &files, &outcomes, &locals, &|_| false);
        fires(&v, "file 1 \"a\": \"no such file\", but user1 could read");
        // Right if it was missing at a point of the range.
        let v = check_gets(&log, (2, 6), &files, &outcomes, &locals, &|_| false);
        assert_eq!(v, Vec::<String>::new());
        // A failed file that left its destination behind.
        let (log, files, mut outcomes, locals) = honest_gets();
        outcomes[0] = Landed::Failed(OpError::Transfer(TransferError::Timeout));
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
        fires(&v, "file 1 \"a\": failed");
        fires(&v, "yet it left local file 0 (4097 bytes)");
        // Damaged without a rot to explain it; with one, allowed.
        let (log, files, mut outcomes, mut locals) = honest_gets();
        outcomes[1] = Landed::Failed(OpError::Transfer(TransferError::DigestMismatch));
        locals[1] = None;
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
        fires(&v, "file 2 \"p\": arrived damaged");
        let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|i| i == 1);
        assert_eq!(v, Vec::<String>::new());
        // Failures no proven session with room may see, or no download.
        for e in [
            OpError::Transfer(TransferError::OverQuota {
                used: 0,
                quota: 1,
                needed: 2,
            }),
            OpError::NotAuthenticated,
            OpError::FileExists,
        ] {
            outcomes[1] = Landed::Failed(e);
            let v = check_gets(&log, (6, 6), &files, &outcomes, &locals, &|_| false);
            fires(&v, "file 2 \"p\": a ");
        }
        // Outcomes not one per file.
        let (log, files, outcomes, locals) = honest_gets();
        let v = check_gets(&log, (6, 6), &files, &outcomes[..3], &locals, &|_| false);
        fires(&v, "the batch of 4 files was answered 3 outcomes");
    }
}
