//! Strategies for every message a Ferry link or store decodes, and for
//! damaged copies of their encodings.

use ferry_core::accounts::password::{PasswordHash, PasswordParams};
use ferry_core::accounts::token::SessionToken;
use ferry_core::auth::AuthCode;
use ferry_core::balancer::messages::{BalancerMsg, ProbeMsg};
use ferry_core::file_attrs::FileAttrs;
use ferry_core::refusal::Refusal;
use ferry_core::replication::catalogue::FileMeta;
use ferry_core::replication::entry::{Entry, NewFile, NewFileV1, Origin, Txn};
use ferry_core::replication::messages::ReplicaMsg;
use ferry_core::replication::state::User;
use ferry_core::replication::status::{Role, ServerReport};
use ferry_core::server::messages::{
    ClusterStatus, FileOutcome, ListCursor, Listed, ServerStatus, UserUsage,
};
use ferry_core::server::{BlobMsg, OpCode, OpError, SessionMsg};
use ferry_core::transfer::{TransferError, TransferMsg};
use proptest::prelude::*;
use proptest::sample::Index;
use speedy::{LittleEndian, Writable};

/// Short strings with any characters, multi-byte ones included.
pub fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(any::<char>(), 0..12).prop_map(|c| c.into_iter().collect())
}

fn bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(any::<u8>(), 0..max)
}

pub fn auth_code() -> impl Strategy<Value = AuthCode> {
    (
        any::<u32>(),
        any::<[u8; 16]>(),
        any::<(u64, u64)>(),
        any::<[u8; 32]>(),
    )
        .prop_map(
            |(server_id, nonce, (issued_ms, expires_ms), mac)| AuthCode {
                server_id,
                nonce,
                issued_ms,
                expires_ms,
                mac,
            },
        )
}

pub fn refusal() -> impl Strategy<Value = Refusal> {
    prop_oneof![
        (any::<u16>(), any::<u16>())
            .prop_map(|(ours, theirs)| Refusal::VersionMismatch { ours, theirs }),
        text().prop_map(|detail| Refusal::Malformed { detail }),
        text().prop_map(|what| Refusal::Unexpected { what }),
        Just(Refusal::BadCode),
        (any::<u32>(), any::<u32>())
            .prop_map(|(ours, theirs)| Refusal::WrongServer { ours, theirs }),
        Just(Refusal::CodeUsed),
        Just(Refusal::CodeExpired),
        Just(Refusal::CodeUnknown),
        text().prop_map(|step| Refusal::Timeout { step }),
        Just(Refusal::Overloaded),
        any::<u64>().prop_map(|retry_after_ms| Refusal::TooMany { retry_after_ms }),
        Just(Refusal::ServerFull),
        (any::<u32>(), any::<bool>()).prop_map(|(limit, unauthenticated)| {
            Refusal::TooManyConnections {
                limit,
                unauthenticated,
            }
        }),
    ]
}

pub fn balancer_msg() -> impl Strategy<Value = BalancerMsg> {
    prop_oneof![
        any::<u16>().prop_map(|version| BalancerMsg::GetServer { version }),
        (any::<u32>(), text(), auth_code()).prop_map(|(server_id, addr, code)| {
            BalancerMsg::Assigned {
                server_id,
                addr,
                code,
            }
        }),
        any::<(u32, u32, u32, u32)>().prop_map(|(probed, busy, no_master, catching_up)| {
            BalancerMsg::NoServer {
                probed,
                busy,
                no_master,
                catching_up,
            }
        }),
        refusal().prop_map(BalancerMsg::Refused),
    ]
}

pub fn probe_msg() -> impl Strategy<Value = ProbeMsg> {
    prop_oneof![
        (any::<u16>(), auth_code(), any::<[u8; 32]>()).prop_map(|(version, code, proof)| {
            ProbeMsg::Probe {
                version,
                code,
                proof,
            }
        }),
        Just(ProbeMsg::Available),
        Just(ProbeMsg::Busy),
        refusal().prop_map(ProbeMsg::Refused),
        Just(ProbeMsg::NoMaster),
        Just(ProbeMsg::CatchingUp),
    ]
}

pub fn transfer_error() -> impl Strategy<Value = TransferError> {
    prop_oneof![
        text().prop_map(|reason| TransferError::BadName { reason }),
        (any::<u64>(), any::<u64>())
            .prop_map(|(needed, available)| TransferError::NoSpace { needed, available }),
        (any::<u64>(), any::<u64>(), any::<u64>()).prop_map(|(used, quota, needed)| {
            TransferError::OverQuota {
                used,
                quota,
                needed,
            }
        }),
        Just(TransferError::Exists),
        Just(TransferError::NotFound),
        Just(TransferError::Timeout),
        Just(TransferError::DigestMismatch),
        text().prop_map(|detail| TransferError::Protocol { detail }),
        text().prop_map(|detail| TransferError::Io { detail }),
        Just(TransferError::Cancelled),
        text().prop_map(|reason| TransferError::Conflict { reason }),
    ]
}

pub fn transfer_msg() -> impl Strategy<Value = TransferMsg> {
    prop_oneof![
        (any::<u64>(), text(), any::<u64>()).prop_map(|(id, name, size)| TransferMsg::Offer {
            id,
            name,
            size
        }),
        any::<u64>().prop_map(|id| TransferMsg::Accept { id }),
        (any::<u64>(), transfer_error())
            .prop_map(|(id, reason)| TransferMsg::Reject { id, reason }),
        (any::<u64>(), any::<u64>(), bytes(64)).prop_map(|(id, seq, data)| TransferMsg::Chunks {
            id,
            seq,
            data
        }),
        (any::<u64>(), any::<u64>()).prop_map(|(id, upto)| TransferMsg::Ack { id, upto }),
        (any::<u64>(), any::<[u8; 32]>()).prop_map(|(id, digest)| TransferMsg::Done { id, digest }),
        any::<u64>().prop_map(|id| TransferMsg::DoneAck { id }),
        (any::<u64>(), transfer_error()).prop_map(|(id, reason)| TransferMsg::Abort { id, reason }),
        (any::<u64>(), any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(id, from, prefix)| TransferMsg::Resume { id, from, prefix }),
        any::<u64>().prop_map(|id| TransferMsg::Restart { id }),
    ]
}

fn op_code() -> impl Strategy<Value = OpCode> {
    prop::sample::select(vec![
        OpCode::Register,
        OpCode::Login,
        OpCode::Logout,
        OpCode::WhoAmI,
        OpCode::Upload,
        OpCode::UploadReplace,
        OpCode::Download,
        OpCode::List,
        OpCode::Share,
        OpCode::Unshare,
        OpCode::Delete,
        OpCode::DeleteFolder,
    ])
}

pub fn session_token() -> impl Strategy<Value = SessionToken> {
    (
        any::<u64>(),
        text(),
        any::<u64>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|(user_id, username, expires, id, mac)| SessionToken {
            user_id,
            username,
            expires,
            id,
            mac,
        })
}

fn op_error() -> impl Strategy<Value = OpError> {
    prop_oneof![
        Just(OpError::UsernameTaken),
        text().prop_map(|reason| OpError::InvalidUsername { reason }),
        text().prop_map(|reason| OpError::InvalidPassword { reason }),
        Just(OpError::BadCredentials),
        any::<u64>().prop_map(|retry_after_secs| OpError::RateLimited { retry_after_secs }),
        text().prop_map(|reason| OpError::InvalidSession { reason }),
        text().prop_map(|reason| OpError::Unavailable { reason }),
        Just(OpError::NotAuthenticated),
        Just(OpError::NoSuchFile),
        Just(OpError::NoSuchUser),
        Just(OpError::FileExists),
        Just(OpError::CannotShareWithSelf),
        Just(OpError::NotShared),
        text().prop_map(|reason| OpError::BadName { reason }),
        transfer_error().prop_map(OpError::Transfer),
        Just(OpError::IsAFolder),
        text().prop_map(|reason| OpError::NameConflict { reason }),
    ]
}

fn listed(names: usize) -> impl Strategy<Value = Listed> {
    (
        text(),
        text(),
        any::<u64>(),
        any::<u64>(),
        prop::collection::vec(text(), 0..names),
        prop::option::of(file_attrs()),
    )
        .prop_map(|(owner, name, size, at, shared_with, attrs)| Listed {
            owner,
            name,
            size,
            at,
            shared_with,
            attrs,
        })
}

pub fn file_attrs() -> impl Strategy<Value = FileAttrs> {
    any::<(i64, u32, u32)>().prop_map(|(mtime_secs, mtime_nanos, mode)| FileAttrs {
        mtime_secs,
        mtime_nanos,
        mode,
    })
}

fn file_outcome() -> impl Strategy<Value = FileOutcome> {
    prop_oneof![
        (any::<u64>(), any::<[u8; 32]>())
            .prop_map(|(size, digest)| FileOutcome::Stored { size, digest }),
        Just(FileOutcome::Shared),
        Just(FileOutcome::Unshared),
        Just(FileOutcome::Deleted),
        any::<u64>().prop_map(|files| FileOutcome::FolderDeleted { files }),
    ]
}

pub fn session_msg() -> impl Strategy<Value = SessionMsg> {
    prop_oneof![
        (any::<u16>(), auth_code()).prop_map(|(version, code)| SessionMsg::Hello { version, code }),
        any::<u32>().prop_map(|server_id| SessionMsg::HelloAck { server_id }),
        Just(SessionMsg::Ack),
        refusal().prop_map(SessionMsg::Refused),
        op_code().prop_map(|op| SessionMsg::Begin { op }),
        op_code().prop_map(|op| SessionMsg::Proceed { op }),
        (text(), text())
            .prop_map(|(username, password)| SessionMsg::Credentials { username, password }),
        session_token().prop_map(|token| SessionMsg::Token { token }),
        any::<u64>().prop_map(|user_id| SessionMsg::Registered { user_id }),
        (any::<u64>(), session_token())
            .prop_map(|(user_id, token)| SessionMsg::LoggedIn { user_id, token }),
        Just(SessionMsg::LoggedOut),
        (any::<u64>(), text()).prop_map(|(user_id, username)| SessionMsg::Me { user_id, username }),
        op_error().prop_map(SessionMsg::Failed),
        Just(SessionMsg::Ping),
        Just(SessionMsg::Pong),
        transfer_msg().prop_map(SessionMsg::Transfer),
        (prop::option::of(text()), text())
            .prop_map(|(owner, name)| SessionMsg::FileName { owner, name }),
        (text(), text()).prop_map(|(name, user)| SessionMsg::ShareWith { name, user }),
        Just(SessionMsg::ListAll),
        text().prop_map(|prefix| SessionMsg::ListUnder { prefix }),
        prop::collection::vec(listed(3), 0..4).prop_map(|files| SessionMsg::Listing { files }),
        file_outcome().prop_map(SessionMsg::FileDone),
        (any::<u64>(), any::<u64>()).prop_map(|(bytes, size)| SessionMsg::Fetching { bytes, size }),
        prop::option::of(session_token()).prop_map(|token| SessionMsg::StatusOf { token }),
        cluster_status().prop_map(SessionMsg::Status),
        (session_token(), text())
            .prop_map(|(token, password)| SessionMsg::DeleteAccount { token, password }),
        (any::<u64>(), file_attrs()).prop_map(|(id, attrs)| SessionMsg::Attrs { id, attrs }),
        (prop::option::of(text()), list_cursor())
            .prop_map(|(prefix, after)| SessionMsg::ListAfter { prefix, after }),
        (prop::collection::vec(listed(3), 0..4), list_cursor())
            .prop_map(|(files, next)| SessionMsg::ListingPart { files, next }),
    ]
}

fn list_cursor() -> impl Strategy<Value = ListCursor> {
    (any::<u64>(), text()).prop_map(|(owner, name)| ListCursor { owner, name })
}

fn server_report() -> impl Strategy<Value = ServerReport> {
    (
        any::<u32>(),
        prop_oneof![
            Just(Role::Master),
            Just(Role::Follower),
            Just(Role::Candidate)
        ],
        any::<(u64, Option<u32>, u64, u64, u64)>(),
        any::<(u32, Option<u64>)>(),
    )
        .prop_map(
            |(id, role, (view, master, last_index, commit, applied), (sessions, free_disk))| {
                ServerReport {
                    id,
                    role,
                    view,
                    master,
                    last_index,
                    commit,
                    applied,
                    sessions,
                    free_disk,
                }
            },
        )
}

fn cluster_status() -> impl Strategy<Value = ClusterStatus> {
    let server = (
        any::<u32>(),
        prop::option::of(text()),
        prop::option::of(server_report()),
        any::<Option<u64>>(),
    )
        .prop_map(|(id, addr, report, behind)| ServerStatus {
            id,
            addr,
            report,
            behind,
        });
    let user =
        (any::<(u64, u64, u64)>(), text()).prop_map(|((user_id, files, bytes), username)| {
            UserUsage {
                user_id,
                username,
                files,
                bytes,
            }
        });
    (
        any::<u32>(),
        prop::collection::vec(server, 0..4),
        prop::option::of(user),
    )
        .prop_map(|(answered_by, servers, user)| ClusterStatus {
            answered_by,
            servers,
            user,
        })
}

pub fn blob_msg() -> impl Strategy<Value = BlobMsg> {
    prop_oneof![
        (
            any::<u16>(),
            any::<u32>(),
            any::<[u8; 32]>(),
            any::<[u8; 32]>()
        )
            .prop_map(|(version, from, digest, mac)| BlobMsg::Fetch {
                version,
                from,
                digest,
                mac
            }),
        transfer_msg().prop_map(BlobMsg::Transfer),
        refusal().prop_map(BlobMsg::Refused),
    ]
}

fn origin() -> impl Strategy<Value = Origin> {
    (any::<u32>(), any::<u64>(), any::<u64>()).prop_map(|(server, session, request)| Origin {
        server,
        session,
        request,
    })
}

fn password_hash() -> impl Strategy<Value = PasswordHash> {
    (
        any::<(u32, u32, u32)>(),
        any::<[u8; 16]>(),
        any::<[u8; 32]>(),
    )
        .prop_map(|((m_kib, t, p), salt, hash)| PasswordHash {
            params: PasswordParams { m_kib, t, p },
            salt,
            hash,
        })
}

fn txn() -> impl Strategy<Value = Txn> {
    prop_oneof![
        (text(), password_hash())
            .prop_map(|(username, password)| Txn::Register { username, password }),
        (any::<[u8; 16]>(), any::<u64>())
            .prop_map(|(token_id, expires)| Txn::Revoke { token_id, expires }),
        (
            any::<u64>(),
            text(),
            any::<u64>(),
            any::<[u8; 32]>(),
            any::<bool>(),
            any::<u32>()
        )
            .prop_map(
                |(owner, name, size, digest, replace, holder)| Txn::PutFileV1 {
                    owner,
                    name,
                    size,
                    digest,
                    replace,
                    holder
                }
            ),
        (
            any::<u64>(),
            text(),
            any::<(u64, bool, u32)>(),
            any::<[u8; 32]>(),
            prop::option::of(file_attrs()),
        )
            .prop_map(|(owner, name, (size, replace, holder), digest, attrs)| {
                Txn::PutFile {
                    owner,
                    name,
                    size,
                    digest,
                    replace,
                    holder,
                    attrs,
                }
            }),
        (
            any::<(u64, bool, u32)>(),
            prop::collection::vec(
                (
                    text(),
                    any::<u64>(),
                    any::<[u8; 32]>(),
                    prop::option::of(file_attrs())
                ),
                0..3
            ),
        )
            .prop_map(|((owner, replace, holder), files)| Txn::PutFiles {
                owner,
                files: (files.into_iter())
                    .map(|(name, size, digest, attrs)| NewFile {
                        name,
                        size,
                        digest,
                        attrs,
                    })
                    .collect(),
                replace,
                holder,
            }),
        (
            any::<(u64, bool, u32)>(),
            prop::collection::vec((text(), any::<u64>(), any::<[u8; 32]>()), 0..3),
        )
            .prop_map(|((owner, replace, holder), files)| Txn::PutFilesV1 {
                owner,
                files: (files.into_iter())
                    .map(|(name, size, digest)| NewFileV1 { name, size, digest })
                    .collect(),
                replace,
                holder,
            }),
        (any::<u64>(), text(), text()).prop_map(|(owner, name, grantee)| Txn::Share {
            owner,
            name,
            grantee
        }),
        (any::<u64>(), text(), text()).prop_map(|(owner, name, grantee)| Txn::Unshare {
            owner,
            name,
            grantee
        }),
        (any::<u64>(), text()).prop_map(|(owner, name)| Txn::Delete { owner, name }),
        (any::<u64>(), text(), text()).prop_map(|(owner, folder, grantee)| Txn::ShareFolder {
            owner,
            folder,
            grantee
        }),
        (any::<u64>(), text(), text()).prop_map(|(owner, folder, grantee)| Txn::UnshareFolder {
            owner,
            folder,
            grantee
        }),
        (any::<u64>(), text()).prop_map(|(owner, folder)| Txn::DeleteFolder { owner, folder }),
        Just(Txn::Noop),
        any::<u64>().prop_map(|user| Txn::DeleteAccount { user }),
    ]
}

pub fn entry() -> impl Strategy<Value = Entry> {
    (any::<(u64, u64, u64)>(), origin(), txn()).prop_map(|((index, view, at), origin, txn)| Entry {
        index,
        view,
        at,
        origin,
        txn,
    })
}

pub fn replica_msg() -> impl Strategy<Value = ReplicaMsg> {
    prop_oneof![
        (any::<u16>(), any::<u32>(), any::<u32>())
            .prop_map(|(version, from, to)| ReplicaMsg::Join { version, from, to }),
        any::<[u8; 16]>().prop_map(|nonce| ReplicaMsg::Challenge { nonce }),
        any::<[u8; 32]>().prop_map(|mac| ReplicaMsg::Proof { mac }),
        Just(ReplicaMsg::Ready),
        (
            any::<(u64, u64, u64)>(),
            prop::collection::vec(entry(), 0..4),
            any::<(u64, u64, u64)>()
        )
            .prop_map(
                |((view, prev_index, prev_view), entries, (commit, last, seq))| {
                    ReplicaMsg::Append {
                        view,
                        prev_index,
                        prev_view,
                        entries,
                        commit,
                        last,
                        seq,
                    }
                }
            ),
        (any::<(u64, bool, u64, u64)>()).prop_map(|(view, ok, matched, seq)| {
            ReplicaMsg::AppendReply {
                view,
                ok,
                matched,
                seq,
            }
        }),
        (any::<(u64, u64, u64, bool)>()).prop_map(|(view, last_index, last_view, pre)| {
            ReplicaMsg::Vote {
                view,
                last_index,
                last_view,
                pre,
            }
        }),
        (any::<(u64, bool, bool)>()).prop_map(|(view, granted, pre)| ReplicaMsg::VoteReply {
            view,
            granted,
            pre
        }),
        (any::<u64>(), origin(), txn()).prop_map(|(view, origin, txn)| ReplicaMsg::Forward {
            view,
            origin,
            txn
        }),
        refusal().prop_map(ReplicaMsg::Refused),
        (any::<u64>(), any::<u64>()).prop_map(|(view, id)| ReplicaMsg::ReadIndex { view, id }),
        any::<(u64, u64, u64)>().prop_map(|(view, id, commit)| ReplicaMsg::ReadIndexReply {
            view,
            id,
            commit
        }),
        any::<u64>().prop_map(|view| ReplicaMsg::Ping { view }),
        any::<u64>().prop_map(|id| ReplicaMsg::StatusAsk { id }),
        (any::<u64>(), server_report())
            .prop_map(|(id, report)| ReplicaMsg::StatusReply { id, report }),
    ]
}

pub fn user() -> impl Strategy<Value = User> {
    (any::<u64>(), text(), password_hash()).prop_map(|(id, name, password)| User {
        id,
        name,
        password,
    })
}

pub fn file_meta() -> impl Strategy<Value = FileMeta> {
    (
        any::<u64>(),
        text(),
        any::<u64>(),
        any::<[u8; 32]>(),
        any::<u64>(),
        any::<u32>(),
    )
        .prop_map(|(owner, name, size, digest, at, holder)| FileMeta {
            owner,
            name,
            size,
            digest,
            at,
            holder,
            // Not in the row (`FileMeta::attrs`).
            attrs: None,
        })
}

/// Messages whose collections are as long as a frame allows: each element
/// is as short as it encodes, so the count (and what decoding it costs in
/// memory) is as large as a payload of `MAX_FRAME` bytes can claim.
pub fn crowded_session_msg() -> impl Strategy<Value = SessionMsg> {
    let blank = || Listed {
        owner: String::new(),
        name: String::new(),
        size: 0,
        at: 0,
        shared_with: Vec::new(),
        attrs: None,
    };
    prop_oneof![
        (0usize..10_000).prop_map(move |n| SessionMsg::Listing {
            files: vec![blank(); n]
        }),
        (0usize..70_000).prop_map(move |n| SessionMsg::Listing {
            files: vec![Listed {
                shared_with: vec![String::new(); n],
                ..blank()
            }]
        }),
        (0usize..270_000).prop_map(|n| SessionMsg::Transfer(TransferMsg::Chunks {
            id: 0,
            seq: 0,
            data: vec![0; n],
        })),
    ]
}

pub fn crowded_replica_msg() -> impl Strategy<Value = ReplicaMsg> {
    let delete = Entry {
        index: 0,
        view: 0,
        at: 0,
        origin: Origin {
            server: 0,
            session: 0,
            request: 0,
        },
        txn: Txn::Delete {
            owner: 0,
            name: String::new(),
        },
    };
    (0usize..6_000).prop_map(move |n| ReplicaMsg::Append {
        view: 0,
        prev_index: 0,
        prev_view: 0,
        entries: vec![delete.clone(); n],
        commit: 0,
        last: 0,
        seq: 0,
    })
}

/// One way to damage an encoding.
#[derive(Clone, Debug)]
pub enum Mutation {
    FlipBit(Index, u8),
    SetByte(Index, u8),
    /// Overwrites four bytes with a length-like value: where a length
    /// prefix is, this claims more (or fewer) bytes than are there.
    SetU32(Index, u32),
    Insert(Index, u8),
    Remove(Index),
    Truncate(Index),
    Append(Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let lengths = prop_oneof![
        0u32..16,
        Just(u32::MAX),
        Just(u32::MAX / 2),
        Just(1 << 16),
        Just(1 << 18),
        Just((1 << 18) + 1),
        any::<u32>(),
    ];
    prop_oneof![
        (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::SetByte(i, v)),
        (any::<Index>(), lengths).prop_map(|(i, v)| Mutation::SetU32(i, v)),
        (any::<Index>(), any::<u8>()).prop_map(|(i, v)| Mutation::Insert(i, v)),
        any::<Index>().prop_map(Mutation::Remove),
        any::<Index>().prop_map(Mutation::Truncate),
        bytes(8).prop_map(Mutation::Append),
    ]
}

pub fn mutate(mut b: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = b.len();
        match m {
            Mutation::FlipBit(i, bit) if n > 0 => b[i.index(n)] ^= 1 << bit,
            Mutation::SetByte(i, v) if n > 0 => b[i.index(n)] = *v,
            Mutation::SetU32(i, v) if n >= 4 => {
                let at = i.index(n - 3);
                b[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            Mutation::Insert(i, v) => b.insert(i.index(n + 1), *v),
            Mutation::Remove(i) if n > 0 => {
                b.remove(i.index(n));
            }
            Mutation::Truncate(i) => b.truncate(i.index(n + 1)),
            Mutation::Append(tail) => b.extend_from_slice(tail),
            _ => {}
        }
    }
    b
}

/// Payloads for a decoder of `M`: valid encodings, damaged ones, and noise
/// (noise whose first byte is often a real tag of the family, so that it
/// gets past the tag).
pub fn payloads<M, S>(valid: S, tags: std::ops::Range<u8>) -> impl Strategy<Value = Vec<u8>>
where
    M: Writable<LittleEndian> + std::fmt::Debug,
    S: Strategy<Value = M>,
{
    (
        valid,
        0u8..9,
        prop::collection::vec(mutation(), 1..5),
        tags,
        bytes(80),
    )
        .prop_map(|(msg, mode, muts, tag, mut noise)| {
            let encoded = msg.write_to_vec().unwrap_or_default();
            match mode {
                0..=1 => encoded,
                2..=6 => mutate(encoded, &muts),
                7 => noise,
                _ => {
                    noise.insert(0, tag);
                    noise
                }
            }
        })
}
