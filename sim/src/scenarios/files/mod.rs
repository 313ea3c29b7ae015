//! The "files" scenario: users upload (a file, a batch of them, or a
//! command of several batches that the client names and, when its
//! session is lost, tries again through another server from its first
//! batch not answered), download (a file, or a batch), share, unshare,
//! delete and list files
//! through the balancer on a three-server cluster (server 1 the master),
//! while the harness restarts a follower, cuts a follower off, and maybe
//! crashes the master; then the cluster is healed, must converge (the same
//! log and state everywhere, and on every disk exactly the content the
//! catalogue names), and a verifier checks every file through every server.
//!
//! VOPR-style, like the replication scenario: a seed picks the swarm options
//! ([`FilesConfig::swarm`]: load, latencies, and for some seeds slow disks,
//! on the servers or on the clients, whose file persists take seconds, or
//! servers whose reads are slow, with large files, so that downloads wait
//! for fetches that take tens of seconds, or a bit that flips in a blob on
//! one server's disk: [`rot`]) and
//! a [`FilesPlan`] (the users, each client's operations with their
//! contents, the faults); the harness steps turmoil, injects the faults,
//! and checks the replication invariants after every step and the file
//! invariants ([`invariants`]) at the end.
//!
//! Phases: **setup** (no faults): each user registers and logs in (the
//! replication scenario's account client); **safety**: file clients run
//! their operations while the faults strike (times count from the end of
//! the setup); **healing**: everything down restarts, everything cut is
//! repaired, and the cluster must converge and stay converged for a second;
//! **verify**: the verifier visits every server as every user; then the
//! final checks.
//!
//! Every server has its own LMDB store and in-memory disk
//! ([`crate::server_host`], [`crate::disk`]); both survive its restarts.

pub mod client;
pub mod history;
pub mod invariants;
pub mod model;
pub mod rot;

use crate::checkers::linearizability::record::LinCheck;
use crate::checkers::replica_log::{converged, ReplicaChecks};
use crate::clients::account::{
    add_account_client, AccountPlan, AccountRecord, Login, SharedRecords, TryResult,
};
use crate::disk::{short, Disk, SharedDisk};
use crate::driver::{Ctx, DriverConfig, SharedLatency};
use crate::harness::{fault_text, replicated_faults, Details, Fault, FaultParams, Harness};
use crate::harness::{Outcome, Settle, Settling, SimParams, MASTER};
use crate::seeds::Preset;
use crate::seeds::{files_replay_command, SimRng};
use crate::trace::secs;
use client::{
    add_files_client, add_verifiers, BatchFile, Die, FilesClientPlan, FilesRecord, OpPlan,
    OpResult, Shared, Step, UserPlan, VerifyRecord, VerifyTask,
};
use ferry_core::accounts::password::PasswordParams;
use ferry_core::names::check_path;
use ferry_core::replication::entry::{Entry, Txn};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::messages::OpCode;
use ferry_core::server::messages::{FileOutcome, Landed};
use ferry_core::server::{OpError, Response, ServerConfig, ServerEvent};
use ferry_core::transfer::TransferError;
use ferry_core::FileAttrs;
use model::{Catalogue, History};
use rot::{Checked, RotCounts, Rotter};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

const USERNAMES: [&str; 4] = ["alice", "bob", "carol", "dave"];
/// The names files are uploaded under: few, so clients of one user collide
/// (replacing, deleting and downloading each other's uploads).
pub const FILE_NAMES: [&str; 3] = ["notes.txt", "photo.jpg", "empty"];
/// Names of files in folders.
const FOLDER_FILE_NAMES: [&str; 3] = ["docs/a.txt", "docs/sub/b.txt", "docs/sub/c d.txt"];
/// A file name that clashes with the folder `docs` (refused while a file
/// is under it, and making `docs/...` refused while it is a file): now and
/// then only, or it would keep the folder from being.
const CLASHING_NAME: &str = "docs";
/// Chance (percent) that an upload about folders is of [`CLASHING_NAME`].
const CLASHING_PCT: u32 = 8;
/// What folder operations name: folders, and a file under one (`share`
/// and `rm -r` of a file act on the file).
const FOLDER_NAMES: [&str; 3] = ["docs", "docs/sub", "docs/a.txt"];
/// Chance (percent) that a swarm seed has folder operations.
const FOLDERS_PCT: u32 = 40;
/// Of such a seed's operations, the share (percent) made about folders.
const FOLDER_OPS_PCT: u32 = 60;
/// Chance (percent) that a swarm seed's uploads carry attributes.
const ATTRS_PCT: u32 = 50;
/// Of such a seed's uploads, the share (percent) that carry them.
const ATTRS_UPLOADS_PCT: u32 = 80;
/// Modes uploads carry: the usual ones, none at all, and set-ID and sticky
/// bits, which no server keeps.
const MODES: [u32; 6] = [0o644, 0o600, 0o755, 0o000, 0o4755, 0o1777];
/// Names every server must refuse.
const BAD_NAMES: [&str; 4] = ["../escape", "a//b", "", ".."];
/// Sizes worth a test of their own: empty, one byte, around one chunk
/// (4 KiB) and around one frame of chunks (32 of them).
const EDGE_SIZES: [u64; 7] = [0, 1, 4095, 4096, 4097, 131_072, 131_073];
/// How long a server keeps a copy of another's upload that nothing names
/// yet: shorter than a real server's minute, so that the copies of a failed
/// upload are gone within a settle, yet longer than a request's timeout,
/// which the counting of copies requires.
const COPY_KEEP: Duration = Duration::from_secs(25);
/// How long a server keeps the part of an upload cut off (a client that
/// crashed, a session lost mid-upload) for the same upload to resume:
/// shorter than a real server's hour, so that a part nobody takes up is
/// collected within a settle. The healed cluster's check that no server
/// holds a temporary file then proves that kept parts do not leak.
const PARTIAL_KEEP: Duration = Duration::from_secs(20);
/// How long the healed cluster gets to converge: a copy received just
/// before the heal is garbage only once `COPY_KEEP` has run out, and on a
/// slow disk it lands only once the persists queued before it are done:
/// with batches, whose files' copies queue behind one another, up to ~21 s
/// after the heal (files seed 57: a copy of a failed batch's file lands
/// on server3 20.8 s after the heal and is collected 25 s later, 0.8 s
/// past the 45 s this was).
const SETTLE_MAX: Duration = Duration::from_secs(25 + 40);
/// [`SETTLE_MAX`] on a slow disk ([`SLOW_DISK`]), whose persists wait in
/// one queue, 1–4 s each: what was queued before the heal lands long
/// after it, and the more so with commands of several batches (a copy
/// landed on server1 95 s after the heal, with five clients running
/// commands and 237 blobs persisted). Twice the worst seen (within
/// [`FilesConfig::duration`]).
const SLOW_DISK_SETTLE_MAX: Duration = Duration::from_secs(25 + 2 * 95);
/// How long a slow disk takes to persist a file: beyond a heartbeat's
/// silence (3 s), and a few of them queued exceed a request's timeout.
pub const SLOW_DISK: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(4));
/// Chance (percent) that a swarm seed's servers have a slow disk, and,
/// drawn apart, that its clients do.
const SLOW_DISK_PCT: u32 = 20;
/// How long a read of a block (128 KiB) takes on the servers of a
/// slow-read seed (1 to 4 MB/s); the server waits (runtime-smol reads on
/// the driver's thread). A fetch of a large file then takes many seconds:
/// past the 1 s at which waiting downloads hear `Fetching` and, for the
/// largest, past the 10 s and 15 s a download may otherwise wait. A holder
/// serving such a fetch spends most of its time reading, and is late for
/// everything else (heartbeats, other sessions): that is runtime-smol's
/// behaviour too, and some fetches stall for it.
pub const SLOW_READ: (Duration, Duration) = (Duration::from_millis(30), Duration::from_millis(150));
/// Chance (percent) that a swarm seed's servers read slowly (until the
/// heal), its uploads are larger ([`SLOW_READ_MAX_SIZE`]) and its clients
/// check some uploads from a new session ([`SLOW_READ_RECHECK_PCT`]).
const SLOW_READ_PCT: u32 = 15;
/// The largest upload of a slow-read seed: 128 blocks.
const SLOW_READ_MAX_SIZE: u64 = 16 << 20;
/// Chance (percent) that an upload of a slow-read seed that is not of an
/// edge size is large (64 KiB to [`SLOW_READ_MAX_SIZE`]).
const SLOW_READ_BIG_PCT: u32 = 70;
/// Chance (percent) that a client of a slow-read seed downloads what it has
/// just uploaded, from a new session.
const SLOW_READ_RECHECK_PCT: u32 = 50;

/// Chance (percent) that a swarm seed has a user delete their account.
pub const LEAVE_PCT: u32 = 30;
/// Chance (percent) that a swarm seed has uploads whose client dies
/// mid-way and puts them again (see [`Step::cut`]), and the chance that
/// one of its uploads is one.
const CUT_SEEDS_PCT: u32 = 35;
const CUT_UPLOADS_PCT: u32 = 30;
/// A cut upload's size: over two blocks, so that the server keeps a part
/// it can resume from.
const CUT_SIZES: (u64, u64) = (300 << 10, 1 << 20);

/// Chance (percent) that a swarm seed has batches of uploads
/// (`UploadMany`, what `ferry put` of several files sends).
pub const BATCHES_PCT: u32 = 40;
/// Of such a seed's operations, the share (percent) that are batches
/// instead.
const BATCH_OPS_PCT: u32 = 20;
/// Files in a batch, at least and at most.
const BATCH_FILES: (u64, u64) = (2, 5);
/// The names batches store, mostly: few, so that batches of one user's
/// clients replace one another's files (or are told they exist), two of
/// them in the folder `sub`.
const BATCH_NAMES: [&str; 4] = ["b1.txt", "b2.txt", "sub/b3.txt", "sub/b4.txt"];
/// Names of a batch's file that clash with what a batch makes (a file
/// where `sub` is a folder, a folder where `b1.txt` is a file), within the
/// batch or with the catalogue.
const BATCH_CLASHES: [&str; 2] = ["sub", "b1.txt/x"];
/// Sizes of a batch's small files: empty, one byte, around one chunk.
const BATCH_SMALL_SIZES: [u64; 5] = [0, 1, 4095, 4096, 4097];

/// Chance (percent) that a swarm seed has commands of several batches
/// (`OpPlan::PutCommand`: what `ferry put` of more than a batch sends, a
/// command the client names, tried again through another server when
/// its session is lost).
pub const COMMANDS_PCT: u32 = 30;
/// Of such a seed's operations, the share (percent) that are commands.
const COMMAND_OPS_PCT: u32 = 15;
/// Batches in a command, at least and at most.
const COMMAND_BATCHES: (u64, u64) = (2, 4);
/// Chance (percent) that a command's first try dies where its plan says
/// (else only faults cut it).
const COMMAND_DIES_PCT: u32 = 60;

/// Chance (percent) that a swarm seed has batches of downloads
/// (`DownloadMany`, what `ferry get` of several files sends).
pub const DOWNLOAD_BATCHES_PCT: u32 = 33;
/// Of such a seed's operations, the share (percent) that are batches of
/// downloads instead.
const DOWNLOAD_BATCH_OPS_PCT: u32 = 20;
/// Files a batch of downloads asks for, at least and at most.
const DOWNLOAD_BATCH_FILES: (u64, u64) = (2, 6);
/// A name no upload ever gives.
const MISSING_NAME: &str = "missing.txt";
/// Folders (or no such thing) a batch of downloads may name as if files.
const DOWNLOAD_FOLDERS: [&str; 3] = ["docs", "docs/sub", "sub"];

/// The knobs; [`FilesConfig::swarm`] draws them from a seed.
#[derive(Clone, Debug)]
pub struct FilesConfig {
    /// [`Preset::Swarm`] or [`Preset::Custom`], for the replay command.
    pub preset: Preset,
    pub servers: u32,
    pub users: u32,
    pub clients: u32,
    /// Operations per client, at least and at most.
    pub steps: (u32, u32),
    /// When clients start, after the setup.
    pub start_window: (Duration, Duration),
    /// Chance (percent) that a client starts around a fault's time (from
    /// 400 ms before to 300 ms after) rather than in `start_window`.
    pub near_fault_pct: u32,
    /// Pause before each operation.
    pub think: (Duration, Duration),
    /// Chance (percent) that an operation starts on a new session.
    pub new_session_pct: u32,
    /// Largest upload; sizes are mostly the edge sizes and small ones.
    pub max_size: u64,
    /// Chance (percent) that an upload is large (64 KiB to `max_size`).
    pub big_pct: u32,
    pub latency: (Duration, Duration),
    /// How long a store commit takes (the server waits).
    pub persist_latency: (Duration, Duration),
    /// How long a server's file `Persist` (an `fsync` and a rename) takes;
    /// the server keeps running meanwhile (see [`crate::driver`]). The
    /// swarm makes it `persist_latency`, or for some seeds a slow disk's
    /// [`SLOW_DISK`], long enough for timeouts and heartbeats to strike
    /// while a blob is on its way to disk.
    pub file_persist_latency: (Duration, Duration),
    /// How long a client's `Persist` of a download takes (its own disk).
    /// The client waits for it, as runtime-smol's does, while the server's
    /// sender resends DONE (every second) for want of a DONE ACK. Zero by
    /// default; the swarm gives some seeds slow client disks
    /// ([`SLOW_DISK`]).
    pub client_persist_latency: (Duration, Duration),
    /// How long a server's read of a block takes; the server waits, as
    /// runtime-smol's does (see [`crate::driver`]). Until the heal: then
    /// the disks read at once again, so the verifiers (which download every
    /// file through every server, and never wait for a fetch) are quick.
    /// Zero by default; the swarm gives some seeds [`SLOW_READ`], with
    /// larger files, so that downloads wait for long fetches.
    pub read_latency: (Duration, Duration),
    /// Chance (percent) that a client downloads what it has just uploaded,
    /// from a new session (so, likely through another server, which must
    /// fetch the content first). Zero by default; the swarm's slow-read
    /// seeds have some.
    pub recheck_pct: u32,
    /// How many times a bit flips in a blob on one server's disk during
    /// the safety phase (see [`rot`]). None by default; the swarm gives
    /// [`rot::ROT_PCT`] of its seeds [`rot::ROTS`].
    pub rots: u32,
    /// Chance (percent) that an operation is about folders instead: a file
    /// under `docs/`, a file named `docs` (which clashes with the folder),
    /// a share or unshare of a folder, an `rm` of a folder with or without
    /// `-r`. None by default; the swarm gives [`FOLDERS_PCT`] of its seeds
    /// [`FOLDER_OPS_PCT`].
    pub folder_pct: u32,
    /// Chance (percent) that an upload carries its file's modification
    /// time and mode (the others have none, as from a pipe). None by
    /// default; the swarm gives [`ATTRS_PCT`] of its seeds
    /// [`ATTRS_UPLOADS_PCT`].
    pub attrs_pct: u32,
    /// Fault times, after the setup.
    pub fault_window: (Duration, Duration),
    pub master_crash_pct: u32,
    pub other_follower_cut_pct: u32,
    /// Chance (percent) that one client, chosen by the seed, ends its plan
    /// by deleting its user's account (`ferry account delete`) while the
    /// user's other clients may still be at work. None by default; the
    /// swarm gives [`LEAVE_PCT`] of its seeds one.
    pub leave_pct: u32,
    /// Chance (percent) that an upload's client dies once part of it is
    /// acknowledged and puts it again at once, asking the same server
    /// first (see [`Step::cut`]). None by default; the swarm gives
    /// [`CUT_SEEDS_PCT`] of its seeds [`CUT_UPLOADS_PCT`].
    pub cut_pct: u32,
    /// Chance (percent) that an operation is a batch of uploads instead
    /// (2–5 files, small and multi-chunk, now and then a name twice in
    /// the batch, a name that clashes with a folder or a file, a name of
    /// the single uploads, a bad name). None by default; the swarm gives
    /// [`BATCHES_PCT`] of its seeds [`BATCH_OPS_PCT`].
    pub batch_pct: u32,
    /// Chance (percent) that an operation is a batch of downloads instead
    /// (2–6 files: the user's own, which exist or existed, other users'
    /// files, shared with the user or not, a missing name, now and then a
    /// name twice, a folder or a bad name). None by default; the swarm
    /// gives [`DOWNLOAD_BATCHES_PCT`] of its seeds
    /// [`DOWNLOAD_BATCH_OPS_PCT`].
    pub download_batch_pct: u32,
    /// Chance (percent) that an operation is a command of 2–4 batches of
    /// uploads instead, whose first try mostly dies in one of them (once
    /// its bytes are sent, or once it is answered) and which is tried
    /// again through another server. None by default; the swarm gives
    /// [`COMMANDS_PCT`] of its seeds [`COMMAND_OPS_PCT`].
    pub command_pct: u32,
    /// Treat a download served from a state older than an unshare or a
    /// delete already acknowledged to the owner as a violation. The
    /// contract (docs/transfer.md) is "shared at that point of the log":
    /// a follower serves from the log it has applied, which may lag the
    /// owner's acknowledgement; so off by default, and counted.
    pub strict_revocation: bool,
    pub tick: Duration,
    /// turmoil's limit; a run that needs longer has a client that hangs.
    pub duration: Duration,
}

impl Default for FilesConfig {
    fn default() -> Self {
        FilesConfig {
            preset: Preset::Custom,
            servers: 3,
            users: 3,
            clients: 4,
            steps: (3, 7),
            start_window: (Duration::ZERO, Duration::from_secs(6)),
            near_fault_pct: 50,
            think: (Duration::ZERO, Duration::from_millis(600)),
            new_session_pct: 30,
            max_size: 300 << 10,
            big_pct: 15,
            latency: (Duration::from_millis(1), Duration::from_millis(25)),
            persist_latency: (Duration::ZERO, Duration::ZERO),
            file_persist_latency: (Duration::ZERO, Duration::ZERO),
            client_persist_latency: (Duration::ZERO, Duration::ZERO),
            read_latency: (Duration::ZERO, Duration::ZERO),
            recheck_pct: 0,
            rots: 0,
            folder_pct: 0,
            attrs_pct: 0,
            fault_window: (Duration::from_millis(300), Duration::from_secs(8)),
            master_crash_pct: 35,
            other_follower_cut_pct: 75,
            leave_pct: 0,
            cut_pct: 0,
            batch_pct: 0,
            download_batch_pct: 0,
            command_pct: 0,
            strict_revocation: false,
            tick: Duration::from_millis(2),
            duration: Duration::from_secs(400),
        }
    }
}

impl FilesConfig {
    /// Swarm testing: each seed gets its own mix of load and timing.
    pub fn swarm(seed: u64) -> Self {
        let mut rng = SimRng::new(seed, 21);
        let users = rng.range(2, 3) as u32;
        let clients = rng.range(u64::from(users), 6) as u32;
        let max_latency = *rng.pick(&[5, 25, 60, 150]);
        let persist = *rng.pick(&[(0, 0), (0, 2), (1, 10)]);
        let persist = (
            Duration::from_millis(persist.0),
            Duration::from_millis(persist.1),
        );
        let mut cfg = FilesConfig {
            preset: Preset::Swarm,
            users,
            clients,
            new_session_pct: *rng.pick(&[10, 30, 60]),
            latency: (Duration::from_millis(1), Duration::from_millis(max_latency)),
            persist_latency: persist,
            file_persist_latency: persist,
            ..FilesConfig::default()
        };
        // A stream of its own: the draws above stay what they were.
        let mut disks = SimRng::new(seed, 23);
        if disks.chance(SLOW_DISK_PCT) {
            cfg.file_persist_latency = SLOW_DISK;
        }
        if disks.chance(SLOW_DISK_PCT) {
            cfg.client_persist_latency = SLOW_DISK;
        }
        // Another stream again, for the same reason.
        if SimRng::new(seed, 25).chance(SLOW_READ_PCT) {
            cfg.read_latency = SLOW_READ;
            cfg.max_size = SLOW_READ_MAX_SIZE;
            cfg.big_pct = SLOW_READ_BIG_PCT;
            cfg.recheck_pct = SLOW_READ_RECHECK_PCT;
        }
        // And another: seeds without rots keep their runs.
        let mut rots = SimRng::new(seed, 26);
        if rots.chance(rot::ROT_PCT) {
            cfg.rots = rots.range(u64::from(rot::ROTS.0), u64::from(rot::ROTS.1)) as u32;
        }
        // And one for folders: seeds without them keep their runs. (Of the
        // free streams, one under which the seeds whose stories
        // sim/tests/files.rs pins, 3, 172 and 211, have none: their
        // traces and stories stay as told there.)
        if SimRng::new(seed, 34).chance(FOLDERS_PCT) {
            cfg.folder_pct = FOLDER_OPS_PCT;
        }
        // And one more for account deletions, for the same reason.
        if SimRng::new(seed, 27).chance(LEAVE_PCT) {
            cfg.leave_pct = 100;
        }
        // And one for uploads cut off and put again (a stream under which
        // the pinned seeds 3, 172 and 211 have none).
        if SimRng::new(seed, 37).chance(CUT_SEEDS_PCT) {
            cfg.cut_pct = CUT_UPLOADS_PCT;
        }
        // And one for files' attributes: a free stream under which the
        // pinned seeds (3, 172, 211, and 7 and 8 of the determinism test)
        // have none, their traces as they were.
        if SimRng::new(seed, 68).chance(ATTRS_PCT) {
            cfg.attrs_pct = ATTRS_UPLOADS_PCT;
        }
        // And one for batches: seeds without them keep their runs.
        if SimRng::new(seed, BATCH_SEED_STREAM).chance(BATCHES_PCT) {
            cfg.batch_pct = BATCH_OPS_PCT;
        }
        // And one for batches of downloads, for the same reason.
        if SimRng::new(seed, DOWNLOAD_BATCH_SEED_STREAM).chance(DOWNLOAD_BATCHES_PCT) {
            cfg.download_batch_pct = DOWNLOAD_BATCH_OPS_PCT;
        }
        // And one for commands of several batches, for the same reason.
        if SimRng::new(seed, COMMAND_SEED_STREAM).chance(COMMANDS_PCT) {
            cfg.command_pct = COMMAND_OPS_PCT;
        }
        cfg
    }
}

/// The concrete run a seed and a config describe. Times count from the end
/// of the setup.
#[derive(Clone, Debug)]
pub struct FilesPlan {
    pub users: Vec<UserPlan>,
    pub clients: Vec<FilesClientPlan>,
    /// Sorted by time.
    pub faults: Vec<(Duration, Fault)>,
    /// When a blob rots (see [`rot`]), sorted.
    pub rots: Vec<Duration>,
}

impl FilesPlan {
    pub fn new(seed: u64, cfg: &FilesConfig) -> Self {
        let mut rng = SimRng::new(seed, 22);
        // Folder operations replace some of the others, drawn apart.
        let mut folders = SimRng::new(seed, 35);
        // So do uploads cut off and put again.
        let mut cuts = SimRng::new(seed, 38);
        // And uploads' attributes, apart again.
        let mut attrs = SimRng::new(seed, 69);
        // So do batches, from a stream of their own again.
        let mut batches = SimRng::new(seed, BATCH_PLAN_STREAM);
        // And batches of downloads, from one more.
        let mut gets = SimRng::new(seed, DOWNLOAD_BATCH_PLAN_STREAM);
        // And commands of several batches.
        let mut commands = SimRng::new(seed, COMMAND_PLAN_STREAM);
        let users: Vec<UserPlan> = USERNAMES[..cfg.users.clamp(1, 4) as usize]
            .iter()
            .map(|u| UserPlan {
                username: u.to_string(),
                password: format!("pw-{u}-{:08x}", rng.next_u64() as u32),
            })
            .collect();
        let faults = faults(&mut rng, cfg);
        let mut uploaded: Vec<Arc<[u8]>> = Vec::new();
        let clients = (1..=cfg.clients)
            .map(|i| {
                let user = ((i - 1) % cfg.users.max(1)) as usize;
                let start = match faults.is_empty() || !rng.chance(cfg.near_fault_pct) {
                    true => rng.duration(cfg.start_window.0, cfg.start_window.1),
                    false => {
                        let (at, _) = *rng.pick(&faults);
                        let before = Duration::from_millis(400).min(at);
                        rng.duration(at - before, at + Duration::from_millis(300))
                    }
                };
                let n = rng.range(u64::from(cfg.steps.0), u64::from(cfg.steps.1));
                let mut steps: Vec<Step> = Vec::new();
                for _ in 0..n {
                    let think = rng.duration(cfg.think.0, cfg.think.1);
                    let new_session = rng.chance(cfg.new_session_pct);
                    let mut op = draw_op(&mut rng, cfg, user, users.len(), &mut uploaded);
                    if folders.chance(cfg.folder_pct) {
                        op = about_folders(&mut folders, op);
                    }
                    if let OpPlan::Upload { attrs: a, .. } = &mut op {
                        if cfg.attrs_pct > 0 && attrs.chance(cfg.attrs_pct) {
                            *a = Some(draw_attrs(&mut attrs));
                        }
                    }
                    if batches.chance(cfg.batch_pct) {
                        op = draw_batch(&mut batches, cfg);
                    }
                    // Its files are drawn once every client's plan is,
                    // from the names the plans upload.
                    if gets.chance(cfg.download_batch_pct) {
                        op = OpPlan::DownloadMany { files: Vec::new() };
                    }
                    if commands.chance(cfg.command_pct) {
                        op = draw_command(&mut commands, cfg);
                    }
                    // Mostly, an unshare takes back a share this client made.
                    if let OpPlan::Unshare { .. } = op {
                        let shares: Vec<&OpPlan> = steps
                            .iter()
                            .map(|s| &s.op)
                            .filter(|o| matches!(o, OpPlan::Share { .. }))
                            .collect();
                        if !shares.is_empty() && rng.chance(75) {
                            if let OpPlan::Share { name, user } = rng.pick(&shares) {
                                op = OpPlan::Unshare {
                                    name: name.clone(),
                                    user: *user,
                                };
                            }
                        }
                    }
                    // Now and then, the user checks an upload from a new
                    // session: likely through another server, which may
                    // still be fetching it.
                    let check = match &op {
                        OpPlan::Upload { name, .. }
                            if cfg.recheck_pct > 0 && check_path(name).is_ok() =>
                        {
                            rng.chance(cfg.recheck_pct).then(|| name.clone())
                        }
                        _ => None,
                    };
                    let (op, cut) = cut_off(&mut cuts, cfg, op);
                    steps.push(Step {
                        think,
                        new_session,
                        op,
                        cut,
                    });
                    if let Some(name) = check {
                        steps.push(Step {
                            think: rng.duration(cfg.think.0, cfg.think.1),
                            new_session: true,
                            op: OpPlan::Download { owner: None, name },
                            cut: None,
                        });
                    }
                }
                FilesClientPlan {
                    name: format!("client{i}"),
                    user,
                    start,
                    steps,
                }
            })
            .collect();
        let mut clients: Vec<FilesClientPlan> = clients;
        fill_download_batches(&mut gets, &mut clients, users.len());
        // Its own stream: plans without a deletion stay what they were.
        let mut leave = SimRng::new(seed, 28);
        if !clients.is_empty() && leave.chance(cfg.leave_pct) {
            let i = leave.range(0, clients.len() as u64 - 1) as usize;
            clients[i].steps.push(Step {
                think: leave.duration(cfg.think.0, cfg.think.1),
                new_session: false,
                op: OpPlan::DeleteAccount,
                cut: None,
            });
        }
        FilesPlan {
            users,
            clients,
            faults,
            rots: rot_times(seed, cfg),
        }
    }

    fn describe(&self, cfg: &FilesConfig) -> Vec<String> {
        // Only file persist latencies of their own are worth a word (seeds
        // without them keep their traces).
        let mut files = String::new();
        if cfg.file_persist_latency != cfg.persist_latency {
            files += &format!(
                ", file persists {}..{} ms",
                cfg.file_persist_latency.0.as_millis(),
                cfg.file_persist_latency.1.as_millis()
            );
        }
        if !cfg.client_persist_latency.1.is_zero() {
            files += &format!(
                ", client persists {}..{} ms",
                cfg.client_persist_latency.0.as_millis(),
                cfg.client_persist_latency.1.as_millis()
            );
        }
        if !cfg.read_latency.1.is_zero() {
            files += &format!(
                ", server reads {}..{} ms until the heal",
                cfg.read_latency.0.as_millis(),
                cfg.read_latency.1.as_millis(),
            );
        }
        if cfg.max_size != FilesConfig::default().max_size {
            files += &format!(", uploads up to {} KiB", cfg.max_size >> 10);
        }
        if cfg.recheck_pct > 0 {
            files += &format!(
                ", {} % of uploads checked from a new session",
                cfg.recheck_pct
            );
        }
        let mut lines = vec![format!(
            "plan: {} servers (server{MASTER} the master), {} user(s), {} client(s), latency {}..{} ms, disk {}..{} ms{files}; times after the setup",
            cfg.servers,
            self.users.len(),
            self.clients.len(),
            cfg.latency.0.as_millis(),
            cfg.latency.1.as_millis(),
            cfg.persist_latency.0.as_millis(),
            cfg.persist_latency.1.as_millis(),
        )];
        for c in &self.clients {
            let ops: Vec<String> = (c.steps.iter())
                .map(|s| match s.cut {
                    Some(at) => format!("{}, the client dying at {at}", s.op.describe(&self.users)),
                    None => s.op.describe(&self.users),
                })
                .collect();
            lines.push(format!(
                "plan: {} as {} at {}: {}",
                c.name,
                self.users[c.user].username,
                secs(c.start),
                ops.join("; ")
            ));
        }
        for (at, f) in &self.faults {
            lines.push(format!("plan: {} at {}", fault_text(*f, true), secs(*at)));
        }
        if !self.rots.is_empty() {
            let at: Vec<String> = self.rots.iter().map(|t| secs(*t)).collect();
            lines.push(format!(
                "plan: a bit of a blob held by two servers or more flips on one server's disk at {}",
                at.join(", ")
            ));
        }
        lines
    }
}

/// Now and then (`cfg.cut_pct`), an upload `op` made one that its client
/// dies in (see [`Step::cut`]): new content large enough to resume from,
/// and where the client dies; drawn from a stream of its own, so that
/// seeds without cuts keep their runs.
fn cut_off(rng: &mut SimRng, cfg: &FilesConfig, op: OpPlan) -> (OpPlan, Option<u64>) {
    let OpPlan::Upload {
        name,
        replace,
        attrs,
        ..
    } = &op
    else {
        return (op, None);
    };
    if !rng.chance(cfg.cut_pct) {
        return (op, None);
    }
    let size = rng.range(CUT_SIZES.0, CUT_SIZES.1);
    let cut = rng.range(size / 4, size * 9 / 10);
    let content: Arc<[u8]> = random_bytes(rng, size as usize).into();
    let op = OpPlan::Upload {
        name: name.clone(),
        digest: *blake3::hash(&content).as_bytes(),
        content,
        replace: *replace,
        attrs: *attrs,
    };
    (op, Some(cut))
}

/// `op` made about folders (drawn from a stream of its own, so that seeds
/// without folders keep their runs): the same kind of operation on a
/// name in or of a folder, and `delete` as `rm -r` or as an `rm` of a
/// folder (which is refused).
fn about_folders(rng: &mut SimRng, op: OpPlan) -> OpPlan {
    let file = |rng: &mut SimRng| match rng.chance(CLASHING_PCT) {
        true => CLASHING_NAME.to_string(),
        false => rng.pick(&FOLDER_FILE_NAMES).to_string(),
    };
    let folder = |rng: &mut SimRng| rng.pick(&FOLDER_NAMES).to_string();
    match op {
        OpPlan::Upload {
            content,
            digest,
            replace,
            attrs,
            ..
        } => OpPlan::Upload {
            name: file(rng),
            content,
            digest,
            replace,
            attrs,
        },
        OpPlan::Download { owner, .. } => OpPlan::Download {
            owner,
            name: file(rng),
        },
        OpPlan::Share { user, .. } => OpPlan::Share {
            name: folder(rng),
            user,
        },
        OpPlan::Unshare { user, .. } => OpPlan::Unshare {
            name: folder(rng),
            user,
        },
        OpPlan::Delete { .. } if rng.chance(70) => OpPlan::DeleteFolder { name: folder(rng) },
        OpPlan::Delete { .. } => OpPlan::Delete { name: folder(rng) },
        other => other,
    }
}

/// A file's attributes as a client might send them: a time around now or
/// long ago (before 1970 too), any nanosecond, one of [`MODES`].
fn draw_attrs(rng: &mut SimRng) -> FileAttrs {
    let secs = rng.range(0, 2_000_000_000) as i64 - 100_000_000;
    let nanos = rng.range(0, 999_999_999) as u32;
    FileAttrs {
        mtime_secs: secs,
        mtime_nanos: nanos,
        mode: *rng.pick(&MODES),
    }
}

/// The stream that decides whether a swarm seed has batches (one under
/// which the pinned seeds 3, 172 and 211 have none, and seed 7, which
/// `same_seed_same_trace` runs twice, has some), and the one its plan
/// draws them from.
const BATCH_SEED_STREAM: u64 = 42;
const BATCH_PLAN_STREAM: u64 = 43;

/// A batch of uploads: 2–5 files, mostly of [`BATCH_NAMES`], some small
/// and some of many chunks (a few of many frames), `--force` half the
/// time. Now and then a file's name is one the batch gave already (the
/// server refuses the second), clashes with a folder or a file
/// ([`BATCH_CLASHES`]), is a single upload's ([`FILE_NAMES`]: "exists",
/// or replaced) or is bad; or its content is an earlier file's of the
/// batch (two names, one blob).
fn draw_batch(rng: &mut SimRng, cfg: &FilesConfig) -> OpPlan {
    let n = rng.range(BATCH_FILES.0, BATCH_FILES.1);
    let mut files: Vec<BatchFile> = Vec::new();
    for _ in 0..n {
        let name = match rng.range(0, 99) {
            0..=7 if !files.is_empty() => rng.pick(&files).name.clone(),
            0..=15 => rng.pick(&FILE_NAMES).to_string(),
            16..=22 => rng.pick(&BATCH_CLASHES).to_string(),
            23..=25 => rng.pick(&BAD_NAMES).to_string(),
            _ => rng.pick(&BATCH_NAMES).to_string(),
        };
        let content: Arc<[u8]> = if !files.is_empty() && rng.chance(8) {
            rng.pick(&files).content.clone()
        } else {
            let size = match rng.range(0, 99) {
                0..=34 => *rng.pick(&BATCH_SMALL_SIZES),
                35..=84 => rng.range(4097, 64 << 10),
                _ => rng.range(64 << 10, (200 << 10).min(cfg.max_size.max(64 << 10))),
            };
            random_bytes(rng, size as usize).into()
        };
        files.push(BatchFile {
            name,
            digest: *blake3::hash(&content).as_bytes(),
            content,
        });
    }
    OpPlan::UploadMany {
        files,
        replace: rng.chance(50),
    }
}

/// The stream that decides whether a swarm seed has commands of several
/// batches (one under which the pinned seeds 3, 132, 172 and 211 have
/// none, and seed 7, which `same_seed_same_trace` runs twice, has some),
/// and the one its plan draws them from.
const COMMAND_SEED_STREAM: u64 = 99;
const COMMAND_PLAN_STREAM: u64 = 100;

/// A command of [`COMMAND_BATCHES`] batches, each drawn as
/// [`draw_batch`] draws one (`--force` or not for all), its id random;
/// mostly its first try dies in one of its batches, once the batch's
/// bytes are all acknowledged (its answer lost, though the cluster may
/// apply it) or once it is answered.
fn draw_command(rng: &mut SimRng, cfg: &FilesConfig) -> OpPlan {
    let n = rng.range(COMMAND_BATCHES.0, COMMAND_BATCHES.1) as usize;
    let replace = rng.chance(50);
    let batches: Vec<Vec<BatchFile>> = (0..n)
        .map(|_| match draw_batch(rng, cfg) {
            OpPlan::UploadMany { files, .. } => files,
            _ => Vec::new(),
        })
        .collect();
    let die = rng.chance(COMMAND_DIES_PCT).then(|| {
        let at = rng.range(0, n as u64 - 1) as usize;
        let how = match rng.chance(50) {
            true => Die::Sent,
            false => Die::Answered,
        };
        (at, how)
    });
    OpPlan::PutCommand {
        id: rng.next_u64(),
        batches,
        replace,
        die,
    }
}

/// The stream that decides whether a swarm seed has batches of downloads
/// (one under which the pinned seeds 3, 172 and 211 have none, and seed
/// 7, which `same_seed_same_trace` runs twice, has some), and the one its
/// plan draws them from.
const DOWNLOAD_BATCH_SEED_STREAM: u64 = 71;
const DOWNLOAD_BATCH_PLAN_STREAM: u64 = 72;

/// The files of the plans' batches of downloads (drawn empty): 2–6
/// files each, mostly of the names the plans of the user's clients upload
/// (alone or in batches: files that exist, or existed, or never came to
/// be), or of the names another user's clients upload, under that user
/// (shared with this one or not); now and then a name no upload gives, a
/// name the batch asked for already, a folder or a bad name.
fn fill_download_batches(rng: &mut SimRng, clients: &mut [FilesClientPlan], users: usize) {
    let mut names: Vec<BTreeSet<String>> = vec![BTreeSet::new(); users];
    for c in clients.iter() {
        for s in &c.steps {
            let planned: Vec<&String> = match &s.op {
                OpPlan::Upload { name, .. } => vec![name],
                OpPlan::UploadMany { files, .. } => files.iter().map(|f| &f.name).collect(),
                OpPlan::PutCommand { batches, .. } => {
                    batches.iter().flatten().map(|f| &f.name).collect()
                }
                _ => continue,
            };
            let good = planned.into_iter().filter(|n| check_path(n).is_ok());
            names[c.user].extend(good.cloned());
        }
    }
    let names: Vec<Vec<String>> = names.into_iter().map(|s| s.into_iter().collect()).collect();
    for c in clients.iter_mut() {
        for s in c.steps.iter_mut() {
            if let OpPlan::DownloadMany { files } = &mut s.op {
                if files.is_empty() {
                    *files = draw_download_batch(rng, c.user, &names);
                }
            }
        }
    }
}

/// A batch of downloads of a client of `user` (see
/// [`fill_download_batches`]); `names`: the names each user's clients
/// upload.
fn draw_download_batch(
    rng: &mut SimRng,
    user: usize,
    names: &[Vec<String>],
) -> Vec<(Option<usize>, String)> {
    let users = names.len();
    let other = |rng: &mut SimRng| {
        let o = rng.range(0, users as u64 - 2) as usize;
        if o >= user {
            o + 1
        } else {
            o
        }
    };
    // Another user's file: half the time of the names shares name.
    let name_of = |rng: &mut SimRng, u: usize| {
        let shared = if u == user { 15 } else { 50 };
        match names[u].is_empty() || rng.chance(shared) {
            true => rng.pick(&FILE_NAMES).to_string(),
            false => rng.pick(&names[u]).clone(),
        }
    };
    let n = rng.range(DOWNLOAD_BATCH_FILES.0, DOWNLOAD_BATCH_FILES.1);
    let mut files: Vec<(Option<usize>, String)> = Vec::new();
    for _ in 0..n {
        let file = match rng.range(0, 99) {
            0..=7 if !files.is_empty() => rng.pick(&files).clone(),
            0..=49 => (None, name_of(rng, user)),
            50..=79 if users > 1 => {
                let o = other(rng);
                (Some(o), name_of(rng, o))
            }
            50..=79 => (None, name_of(rng, user)),
            80..=87 => {
                let owner = (users > 1 && rng.chance(30)).then(|| other(rng));
                (owner, MISSING_NAME.to_string())
            }
            88..=94 => (None, rng.pick(&DOWNLOAD_FOLDERS).to_string()),
            _ => (None, rng.pick(&BAD_NAMES).to_string()),
        };
        files.push(file);
    }
    files
}

/// One operation of a client of `user`.
fn draw_op(
    rng: &mut SimRng,
    cfg: &FilesConfig,
    user: usize,
    users: usize,
    uploaded: &mut Vec<Arc<[u8]>>,
) -> OpPlan {
    let name = rng.pick(&FILE_NAMES).to_string();
    let other = |rng: &mut SimRng| {
        let o = rng.range(0, users as u64 - 2) as usize;
        if o >= user {
            o + 1
        } else {
            o
        }
    };
    match rng.range(0, 99) {
        0..=31 => {
            // Now and then the content of an earlier upload: two files with
            // one content share a blob, which must outlive either's delete.
            let content = if !uploaded.is_empty() && rng.chance(15) {
                rng.pick(uploaded).clone()
            } else {
                let size = if rng.chance(40) {
                    *rng.pick(&EDGE_SIZES)
                } else if rng.chance(cfg.big_pct) {
                    rng.range(64 << 10, cfg.max_size.max(64 << 10))
                } else {
                    rng.range(2, 64 << 10)
                };
                let content: Arc<[u8]> = random_bytes(rng, size as usize).into();
                uploaded.push(content.clone());
                content
            };
            let name = if rng.chance(4) {
                rng.pick(&BAD_NAMES).to_string()
            } else {
                name
            };
            OpPlan::Upload {
                name,
                digest: *blake3::hash(&content).as_bytes(),
                content,
                replace: rng.chance(50),
                attrs: None,
            }
        }
        32..=55 => OpPlan::Browse {
            pick: rng.next_u64() as u32,
        },
        56..=62 => {
            let owner = (users > 1 && rng.chance(50)).then(|| other(rng));
            OpPlan::Download { owner, name }
        }
        63..=75 if users > 1 => OpPlan::Share {
            name,
            user: other(rng),
        },
        76..=81 if users > 1 => OpPlan::Unshare {
            name,
            user: other(rng),
        },
        82..=90 => OpPlan::Delete { name },
        _ => OpPlan::List,
    }
}

/// `n` bytes from the seed's stream: eight per draw; or, past
/// [`XOF_ABOVE`] (only slow-read seeds upload that much), BLAKE3's output
/// stream under a key of four draws, which is as good for a file's content
/// and many times cheaper in unoptimized builds (BLAKE3 is optimized).
fn random_bytes(rng: &mut SimRng, n: usize) -> Vec<u8> {
    let mut v = vec![0u8; n];
    if n > XOF_ABOVE {
        let mut key = [0u8; 32];
        for chunk in key.chunks_mut(8) {
            chunk.copy_from_slice(&rng.next_u64().to_le_bytes());
        }
        blake3::Hasher::new_keyed(&key).finalize_xof().fill(&mut v);
        return v;
    }
    for chunk in v.chunks_mut(8) {
        chunk.copy_from_slice(&rng.next_u64().to_le_bytes()[..chunk.len()]);
    }
    v
}

/// The plan's rot times, from a stream of their own (the plan's other
/// draws stay what they were).
fn rot_times(seed: u64, cfg: &FilesConfig) -> Vec<Duration> {
    let mut rng = SimRng::new(seed, 27);
    let (lo, hi) = rot::ROT_WINDOW;
    let mut times: Vec<Duration> = (0..cfg.rots).map(|_| rng.duration(lo, hi)).collect();
    times.sort();
    times
}

/// Contents larger than this come from BLAKE3's output stream (see
/// [`random_bytes`]); the default configuration's uploads never are.
const XOF_ABOVE: usize = 1 << 20;

fn faults(rng: &mut SimRng, cfg: &FilesConfig) -> Vec<(Duration, Fault)> {
    replicated_faults(
        rng,
        &FaultParams {
            servers: cfg.servers,
            master: MASTER,
            fault_window: cfg.fault_window,
            other_follower_cut_pct: cfg.other_follower_cut_pct,
            master_crash_pct: cfg.master_crash_pct,
        },
    )
}

/// What a files run adds to its [`Outcome`].
#[derive(Debug)]
pub struct FilesDetails {
    pub config: FilesConfig,
    pub plan: FilesPlan,
    /// The setup's account clients, one per user.
    pub accounts: Vec<AccountRecord>,
    pub clients: Vec<FilesRecord>,
    pub verify: VerifyRecord,
    /// The converged cluster, in one line, if it converged.
    pub converged: Option<String>,
    /// Entries committed in the run.
    pub committed: usize,
    /// Downloads served from a state older than a revocation already
    /// acknowledged to the owner (allowed unless `strict_revocation`).
    pub stale_downloads: usize,
    /// Folder shares and `rm -r` of folders that the committed log applied.
    pub folder_shares: u64,
    pub folders_deleted: u64,
    /// `PutFiles` entries the committed log applied (not retries).
    pub batches_committed: u64,
    /// Blobs persisted on the servers' disks: from uploads and from
    /// fetches between servers.
    pub blobs_persisted: u64,
    /// The rots injected (see [`rot`]), and how many planned ones had not
    /// struck by the heal.
    pub rots: Vec<rot::Rot>,
    pub rots_missed: u64,
    /// When the verifiers started, if they did.
    pub verify_started: Option<Duration>,
    /// Every check of a blob a receiver found damaged, by any server.
    pub checks: Vec<Checked>,
    /// The linearizability check of the clients' history.
    pub lin: LinCheck,
}

pub type FilesOutcome = Outcome<FilesDetails>;

impl Details for FilesDetails {
    /// How often interesting things happened, for a sweep's summary.
    fn counts(&self) -> Vec<(&'static str, u64)> {
        let mut c = [0u64; 18];
        let mut b = [0u64; 6];
        // Batches of downloads: answered, files received (another user's),
        // "no such file", failed otherwise.
        let mut d = [0u64; 5];
        for r in &self.clients {
            for op in &r.ops {
                let step = &op.op;
                match (step, &op.result) {
                    (
                        OpPlan::DownloadMany { files },
                        Some(OpResult::Answer(Response::Received(outcomes))),
                    ) => {
                        d[0] += 1;
                        for ((owner, _), o) in files.iter().zip(outcomes) {
                            match o {
                                Landed::Stored { .. } => {
                                    d[1] += 1;
                                    d[2] += u64::from(owner.is_some());
                                }
                                Landed::Failed(OpError::NoSuchFile) => d[3] += 1,
                                Landed::Failed(_) => d[4] += 1,
                            }
                        }
                    }
                    (
                        OpPlan::UploadMany { files, .. },
                        Some(OpResult::Answer(Response::Batch(outcomes))),
                    ) => {
                        b[0] += 1;
                        for (f, o) in files.iter().zip(outcomes) {
                            match o {
                                Landed::Stored { .. } => {
                                    b[1] += 1;
                                    if f.content.len() > 4096 {
                                        b[2] += 1;
                                    }
                                }
                                Landed::Failed(
                                    OpError::FileExists
                                    | OpError::NameConflict { .. }
                                    | OpError::Transfer(
                                        TransferError::Exists | TransferError::Conflict { .. },
                                    ),
                                ) => b[3] += 1,
                                Landed::Failed(OpError::Transfer(TransferError::BadName {
                                    ..
                                })) => b[4] += 1,
                                Landed::Failed(_) => b[5] += 1,
                            }
                        }
                    }
                    (
                        OpPlan::Upload { content, .. },
                        Some(OpResult::Answer(Response::File(FileOutcome::Stored { .. }))),
                    ) => {
                        c[0] += 1;
                        match content.len() {
                            0 => c[1] += 1,
                            n if n % 4096 == 0 => c[2] += 1,
                            n if n > 64 << 10 => c[3] += 1,
                            _ => {}
                        }
                    }
                    (
                        OpPlan::Upload { .. },
                        Some(OpResult::Answer(Response::Failed(OpError::Transfer(
                            ferry_core::transfer::TransferError::BadName { .. },
                        )))),
                    ) => c[4] += 1,
                    (
                        OpPlan::Download { owner, .. },
                        Some(OpResult::Answer(Response::Downloaded { .. })),
                    ) => {
                        c[5] += 1;
                        if owner.is_some() {
                            c[6] += 1;
                        }
                    }
                    (
                        OpPlan::Download { .. },
                        Some(OpResult::Answer(Response::Failed(OpError::NoSuchFile))),
                    ) => c[7] += 1,
                    (_, Some(OpResult::Answer(Response::File(FileOutcome::Shared)))) => c[8] += 1,
                    (_, Some(OpResult::Answer(Response::File(FileOutcome::Unshared)))) => c[9] += 1,
                    (_, Some(OpResult::Answer(Response::File(FileOutcome::Deleted)))) => c[10] += 1,
                    (OpPlan::DeleteAccount, Some(OpResult::Answer(Response::LoggedOut))) => {
                        c[16] += 1
                    }
                    (
                        _,
                        Some(OpResult::Answer(Response::Failed(OpError::InvalidSession {
                            ..
                        }))),
                    ) => c[17] += 1,
                    (_, Some(OpResult::Answer(Response::Failed(OpError::Unavailable { .. })))) => {
                        c[11] += 1
                    }
                    (
                        OpPlan::Upload { .. },
                        Some(OpResult::Answer(Response::Failed(
                            OpError::NameConflict { .. }
                            | OpError::Transfer(ferry_core::transfer::TransferError::Conflict {
                                ..
                            }),
                        ))),
                    ) => c[14] += 1,
                    (_, Some(OpResult::Answer(Response::Failed(OpError::IsAFolder)))) => c[15] += 1,
                    (_, Some(OpResult::Answer(_))) => {}
                    _ => c[12] += 1,
                }
            }
        }
        let master_crashes = self
            .plan
            .faults
            .iter()
            .filter(|(_, f)| *f == Fault::Crash(MASTER))
            .count() as u64;
        let verified = self
            .verify
            .visits
            .iter()
            .map(|v| v.downloads.len() as u64)
            .sum();
        c[13] = verified;
        let fetch = FetchWaits::of(&self.clients);
        // Uploads cut by their client's death, and those put again.
        let mut cuts = [0u64; 3];
        for r in &self.clients {
            for pair in r.ops.windows(2) {
                let same = |a: &OpPlan, b: &OpPlan| match (a, b) {
                    (OpPlan::Upload { digest: x, .. }, OpPlan::Upload { digest: y, .. }) => x == y,
                    _ => false,
                };
                if pair[0].cut.is_some() {
                    cuts[0] += 1;
                }
                if pair[0].cut.is_some() && same(&pair[0].op, &pair[1].op) {
                    let stored = matches!(
                        pair[1].result,
                        Some(OpResult::Answer(Response::File(FileOutcome::Stored { .. })))
                    );
                    cuts[1] += u64::from(stored);
                    cuts[2] += u64::from(stored && pair[1].resumed.is_some());
                }
            }
        }
        // Commands' batches: answered on a second try (through another
        // server), and of them ones the first try had sent whole (its
        // answer lost: the cluster may have applied it).
        let mut retried = [0u64; 2];
        for r in &self.clients {
            let mut tries: BTreeMap<client::CommandStep, Vec<&client::OpRecord>> = BTreeMap::new();
            for op in &r.ops {
                if let Some(step) = op.command {
                    tries.entry(step).or_default().push(op);
                }
            }
            for t in tries.values().filter(|t| t.len() > 1) {
                if t.last()
                    .is_some_and(|o| matches!(o.result, Some(OpResult::Answer(_))))
                {
                    retried[0] += 1;
                }
            }
        }
        retried[1] = (self.clients.iter())
            .flat_map(|r| &r.plan.steps)
            .filter(|s| matches!(s.op, OpPlan::PutCommand { .. }))
            .count() as u64;
        let mut counts = vec![
            ("uploads stored", c[0]),
            ("  of them empty", c[1]),
            ("  of them whole chunks", c[2]),
            ("  of them over 64 KiB", c[3]),
            ("uploads refused for a bad name", c[4]),
            ("downloads", c[5]),
            ("  of them another user's file", c[6]),
            ("downloads refused 'no such file'", c[7]),
            ("shares acknowledged", c[8]),
            ("unshares acknowledged", c[9]),
            ("deletes acknowledged", c[10]),
            ("folder shares committed", self.folder_shares),
            ("folders deleted (rm -r) committed", self.folders_deleted),
            (
                "uploads refused: a name is a file or a folder, not both",
                c[14],
            ),
            ("rm of a folder refused (it takes -r)", c[15]),
            ("batches of uploads answered (UploadMany)", b[0]),
            ("  files they stored", b[1]),
            ("    of them of many chunks", b[2]),
            (
                "  files told 'exists' or 'a file or a folder, not both'",
                b[3],
            ),
            (
                "  files refused for a bad name or one the batch gave twice",
                b[4],
            ),
            ("  files failed otherwise", b[5]),
            ("commands of several batches planned", retried[1]),
            ("  batches answered on a second try", retried[0]),
            ("batches of downloads answered (DownloadMany)", d[0]),
            ("  files received", d[1]),
            ("    of them another user's", d[2]),
            ("  files refused 'no such file'", d[3]),
            (
                "  files that failed otherwise (unfetched, a transfer given up)",
                d[4],
            ),
            (
                "batches committed (PutFiles entries)",
                self.batches_committed,
            ),
            ("accounts deleted", c[16]),
            (
                "  operations refused after: the session's account was gone",
                c[17],
            ),
            ("operations answered 'unavailable'", c[11]),
            (
                "operations without an answer (no session, timeout, lost)",
                c[12],
            ),
            (
                "blobs persisted on servers (uploads and fetches)",
                self.blobs_persisted,
            ),
            (
                "downloads served before an acknowledged revocation reached the server",
                self.stale_downloads as u64,
            ),
            ("verifier downloads", c[13]),
            (
                "runs whose servers read slowly (until the heal)",
                u64::from(!self.config.read_latency.1.is_zero()),
            ),
            (
                "runs with a download told 'fetching'",
                u64::from(fetch.told > 0),
            ),
            (
                "downloads told 'fetching' (the server fetches the content)",
                fetch.told,
            ),
            (
                "  of them got the file after 'fetching' for over 15 s",
                fetch.long_then_got,
            ),
            ("  of them got the file", fetch.got),
            (
                "  of them refused 'not on this server yet' (the fetch stalled)",
                fetch.refused,
            ),
            ("  of them without an answer", fetch.unanswered),
            (
                "uploads cut by their client's death, then put again",
                cuts[0],
            ),
            ("  of them stored when put again", cuts[1]),
            (
                "  of them stored resuming from the part a server kept",
                cuts[2],
            ),
            ("runs with a master crash", master_crashes),
            ("entries committed", self.committed as u64),
        ];
        counts.extend(self.attrs_counts());
        counts.extend(self.rot_counts());
        counts.extend(self.lin.counts());
        counts
    }
}

impl FilesDetails {
    /// Files' attributes: uploads that carried them, and downloads (the
    /// clients' and the verifiers') whose file was given some.
    fn attrs_counts(&self) -> Vec<(&'static str, u64)> {
        let ops = || self.clients.iter().flat_map(|c| &c.ops);
        let stored = ops()
            .filter(|op| {
                matches!(
                    (&op.op, &op.result),
                    (
                        OpPlan::Upload { attrs: Some(_), .. },
                        Some(OpResult::Answer(Response::File(FileOutcome::Stored { .. })))
                    )
                )
            })
            .count() as u64;
        let given = ops().filter(|op| op.local_attrs.is_some()).count() as u64;
        let verified = (self.verify.visits.iter())
            .flat_map(|v| &v.downloads)
            .filter(|d| d.local_attrs.is_some())
            .count() as u64;
        vec![
            (
                "runs whose uploads carry attributes (mtime, mode)",
                u64::from(self.config.attrs_pct > 0),
            ),
            ("uploads stored with attributes", stored),
            ("downloads given their file's attributes", given),
            ("verifier downloads given their file's attributes", verified),
        ]
    }
}

impl FilesDetails {
    /// The rots, the checks, and the downloads that arrived damaged.
    fn rot_counts(&self) -> Vec<(&'static str, u64)> {
        let r = RotCounts::of(
            &self.rots,
            self.rots_missed,
            &self.checks,
            self.verify_started,
        );
        let clients = self
            .clients
            .iter()
            .flat_map(|c| &c.ops)
            .filter(|op| {
                matches!(
                    (&op.op, &op.result),
                    (
                        OpPlan::Download { .. },
                        Some(OpResult::Answer(Response::Failed(OpError::Transfer(
                            TransferError::DigestMismatch
                        ))))
                    )
                )
            })
            .count() as u64;
        let verifier: Vec<&client::VerifyDownload> = self
            .verify
            .visits
            .iter()
            .flat_map(|v| &v.downloads)
            .filter(|d| !d.damaged.is_empty())
            .collect();
        let retried = verifier
            .iter()
            .filter(|d| matches!(d.result, OpResult::Answer(Response::Downloaded { .. })))
            .count() as u64;
        vec![
            (
                "runs with rots (a bit flipped in a blob on one server's disk)",
                u64::from(!self.rots.is_empty()),
            ),
            ("rots injected", r.injected),
            (
                "  of them found by a check (damaged), the copy replaced",
                r.found,
            ),
            (
                "    before the verifiers (by a client's download or a server's fetch)",
                r.found_early,
            ),
            (
                "  of them collected as garbage with their file before a check",
                r.collected,
            ),
            ("planned rots that had not struck by the heal", r.missed),
            ("blob checks: damaged", r.damaged),
            ("blob checks: sound", r.sound),
            ("blob checks: unreadable", r.unreadable),
            ("client downloads that arrived damaged", clients),
            (
                "verifier downloads that arrived damaged",
                verifier.len() as u64,
            ),
            ("  of them got the file on a later try", retried),
        ]
    }
}

/// What became of the downloads whose server said it was still fetching
/// the content (`Fetching`).
#[derive(Clone, Copy, Debug, Default)]
pub struct FetchWaits {
    /// Downloads that heard `Fetching` at least once.
    pub told: u64,
    /// Of them, those that got the file.
    pub got: u64,
    /// Of them, those that got the file after hearing `Fetching` for longer
    /// than the client's patience (15 s) and the server's request timeout
    /// (10 s): they would have failed if `Fetching` did not push both
    /// deadlines back.
    pub long_then_got: u64,
    /// Of them, those refused "not on this server yet": the fetch stalled.
    pub refused: u64,
    /// Of them, those that ended without an answer.
    pub unanswered: u64,
}

impl FetchWaits {
    pub fn of(clients: &[FilesRecord]) -> Self {
        let patience = ferry_core::client::ClientConfig::new(String::new()).op_timeout;
        let mut w = FetchWaits::default();
        for op in clients.iter().flat_map(|c| &c.ops) {
            let (Some(first), Some(last)) = (op.fetching.first(), op.fetching.last()) else {
                continue;
            };
            w.told += 1;
            match &op.result {
                Some(OpResult::Answer(Response::Downloaded { .. })) => {
                    w.got += 1;
                    if *last - *first > patience {
                        w.long_then_got += 1;
                    }
                }
                Some(OpResult::Answer(Response::Failed(OpError::Unavailable { reason })))
                    if reason.contains("not on this server yet") =>
                {
                    w.refused += 1
                }
                Some(OpResult::Answer(_)) => {}
                _ => w.unanswered += 1,
            }
        }
        w
    }
}

enum Phase {
    /// Users register and log in; no faults.
    Setup,
    /// Faults are injected; file clients run.
    Safety,
    /// Everything is healed; the cluster must converge.
    Healing(Settle),
    /// The verifiers run; `history` is the final log, replayed.
    Verify { history: History },
}

/// Runs the files scenario for `seed` and checks every invariant.
pub fn run_files_scenario(seed: u64, cfg: &FilesConfig) -> FilesOutcome {
    let plan = FilesPlan::new(seed, cfg);
    let mut f = Files::new(seed, cfg, &plan);
    let mut phase = Phase::Setup;
    let mut converged_state = None;
    let mut final_history = None;
    loop {
        if let Some(t0) = f.t0 {
            if matches!(phase, Phase::Safety) {
                f.admit_due_clients(t0);
                f.h.inject_due(t0);
                f.rot_due(t0);
            }
        }
        if let Phase::Verify { history } = &phase {
            if f.shared.verify.borrow().started == 0 {
                f.start_verifiers(history);
            }
        }
        let before = f.applied_floor.clone();
        if f.step().is_none() || !f.watch() {
            break;
        }
        f.stamp(&before);
        let now = f.h.now();
        f.rotter.track(now, &f.h.disks);
        match &mut phase {
            Phase::Setup => {
                if !f.setup_done() {
                    continue;
                }
                if let Err(why) = f.take_tokens() {
                    f.h.violations.push(why);
                    break;
                }
                f.t0 = Some(now);
                f.h.record(
                    "setup done: every user registered and logged in; the clock of the plan starts",
                );
                phase = Phase::Safety;
            }
            Phase::Safety => {
                if f.waiting.is_empty() && f.shared.records.borrow().iter().all(|r| r.finished) {
                    f.heal();
                    let max = match cfg.file_persist_latency >= SLOW_DISK {
                        true => SLOW_DISK_SETTLE_MAX,
                        false => SETTLE_MAX,
                    };
                    phase = Phase::Healing(Settle::new(now, max));
                }
            }
            Phase::Healing(settle) => match settle.poll(now, f.h.steps, None, || f.convergence()) {
                Settling::Waiting => {}
                Settling::Settled(state) => {
                    f.h.record(format!("converged: {state}"));
                    converged_state = Some(state);
                    let entries: Vec<_> = f.replicas.watch.entries().cloned().collect();
                    phase = Phase::Verify {
                        history: History::replay(&entries),
                    };
                }
                Settling::TimedOut(why) => {
                    f.h.violations.push(why);
                    break;
                }
            },
            Phase::Verify { history } => {
                let v = f.shared.verify.borrow();
                if v.finished == v.started {
                    drop(v);
                    final_history = Some(std::mem::take(history));
                    break;
                }
            }
        }
    }
    let mut stale = 0;
    let mut tally = [0; 3];
    if let Some(history) = &final_history {
        stale = f.check_final_state(history);
        for (_, e, o) in history.upto(u64::MAX) {
            match (&e.txn, o) {
                (Txn::ShareFolder { .. }, model::Outcome::Shared) => tally[0] += 1,
                (Txn::DeleteFolder { .. }, model::Outcome::FolderDeleted) => tally[1] += 1,
                (Txn::PutFiles { .. }, model::Outcome::Batch) => tally[2] += 1,
                _ => {}
            }
        }
    }
    let lin = f.check_linearizability();
    f.finish(cfg, plan, converged_state, stale, tally, lin)
}

/// The harness, and what the files scenario keeps beside it.
struct Files<'c> {
    cfg: &'c FilesConfig,
    h: Harness,
    shared: Shared,
    /// The users' setup programs (the account client), one per user, in
    /// user order.
    accounts: SharedRecords,
    /// The servers' read latency, which the heal sets to zero.
    reads: SharedLatency,
    /// The rots planned and done.
    rotter: Rotter,
    /// When the verifiers started: a rot found before was found by a
    /// client's download or a server's fetch.
    verify_started: Option<Duration>,
    /// Every server's `BlobChecked` events, from an observer.
    checks: Rc<RefCell<Vec<Checked>>>,
    /// Every server's disk, for the observers' check of each "stored".
    disks: Rc<RefCell<Vec<SharedDisk>>>,
    /// Uploads answered "stored" while their content was durable on fewer
    /// than a majority of the disks, until the watch after the step sees
    /// whether the file had been replaced before (see [`Fragile`]).
    fragile: Rc<RefCell<Vec<Fragile>>>,
    /// The committed log as the last watch saw it, as the model's state,
    /// and every digest a committed state named: what a "stored" answered
    /// in the next step may lean on.
    committed: Catalogue,
    named: BTreeSet<[u8; 32]>,
    /// Each disk's blobs as the last watch saw them.
    held: Vec<BTreeSet<[u8; 32]>>,
    /// File clients not started yet, the next one last.
    waiting: Vec<usize>,
    /// When the setup ended: the plan's clock.
    t0: Option<Duration>,
    /// Highest durably applied index each server ever reported, by id
    /// (never decreases: the watch checks it).
    applied_floor: Vec<u64>,
    replicas: ReplicaChecks,
}

impl<'c> Files<'c> {
    fn new(seed: u64, cfg: &'c FilesConfig, plan: &FilesPlan) -> Self {
        let params = SimParams {
            seed,
            duration: cfg.duration,
            tick: cfg.tick,
            latency: cfg.latency,
            servers: cfg.servers,
            stores: true,
        };
        let h = Harness::new(params, plan.faults.clone(), plan.describe(cfg));
        let records: Vec<FilesRecord> = plan
            .clients
            .iter()
            .cloned()
            .map(|plan| FilesRecord {
                plan,
                finished: false,
                ops: Vec::new(),
            })
            .collect();
        let mut waiting: Vec<usize> = (0..records.len()).collect();
        waiting.reverse();
        waiting.sort_by_key(|&i| std::cmp::Reverse(plan.clients[i].start));
        let shared = Shared {
            trace: h.trace.clone(),
            users: Rc::new(plan.users.clone()),
            tokens: Rc::new(RefCell::new(vec![None; plan.users.len()])),
            records: Rc::new(RefCell::new(records)),
            stamps: Rc::default(),
            verify: Rc::default(),
            driver: DriverConfig {
                file_persist_latency: cfg.client_persist_latency,
                seed: SimRng::new(seed, 24).next_u64(),
                ..DriverConfig::default()
            },
            servers: cfg.servers,
        };
        let accounts = plan
            .users
            .iter()
            .enumerate()
            .map(|(i, u)| {
                AccountRecord::new(AccountPlan {
                    name: u.username.clone(),
                    username: u.username.clone(),
                    password: u.password.clone(),
                    start: Duration::from_millis(100 * i as u64),
                    login: Login::SameSession,
                    attempts: 3,
                    must_succeed: true,
                })
            })
            .collect();
        let mut f = Files {
            cfg,
            h,
            shared,
            accounts: Rc::new(RefCell::new(accounts)),
            reads: Rc::new(Cell::new(cfg.read_latency)),
            rotter: Rotter::new(seed, &plan.rots),
            verify_started: None,
            checks: Rc::default(),
            disks: Rc::default(),
            fragile: Rc::default(),
            committed: Catalogue::default(),
            named: BTreeSet::new(),
            held: Vec::new(),
            waiting,
            t0: None,
            applied_floor: vec![0; cfg.servers as usize + 1],
            replicas: ReplicaChecks::default(),
        };
        f.h.add_balancer(|_| {});
        for id in 1..=cfg.servers {
            f.add_server(id);
        }
        *f.disks.borrow_mut() = f.h.disks.clone();
        for (i, u) in plan.users.iter().enumerate() {
            let (accounts, trace) = (&f.accounts, f.h.trace.clone());
            f.h.add_client(&u.username, |sim| {
                add_account_client(sim, i, accounts, &trace)
            });
        }
        f
    }

    /// Server `id`, with the master and its peers wired, its own store and
    /// disk; its checks of blobs are recorded.
    fn add_server(&mut self, id: u32) {
        let server = ServerConfig {
            password: PasswordParams::TESTING,
            copy_keep: COPY_KEEP,
            partial_keep: PARTIAL_KEEP,
            ..ServerConfig::new(id)
        };
        let replica = ReplicaConfig::new(id, MASTER, self.h.peers_of(id));
        let driver = DriverConfig {
            persist_latency: self.cfg.persist_latency,
            file_persist_latency: self.cfg.file_persist_latency,
            read_latency: self.reads.clone(),
            ..DriverConfig::default()
        };
        let (checks, disks, fragile) = (
            self.checks.clone(),
            self.disks.clone(),
            self.fragile.clone(),
        );
        let observe = move |_: &Ctx<'_>, ev: &ServerEvent, _| match ev {
            ServerEvent::BlobChecked { digest, verdict } => checks.borrow_mut().push(Checked {
                at: turmoil::sim_elapsed().unwrap_or_default(),
                server: id,
                digest: digest.clone(),
                verdict: verdict.clone(),
            }),
            // The disks as they are at the very moment of the answer: each
            // content the answer vouches for (a batch's, each it stored).
            ServerEvent::Answered { op, stored, .. } => {
                for d in stored {
                    let disks = disks.borrow();
                    if let Some(line) = durable_on_too_few(id, *op, d, &disks) {
                        let holders = disks.iter().map(|x| x.borrow().blob(d).is_some());
                        fragile.borrow_mut().push(Fragile {
                            digest: *d,
                            line,
                            holders: holders.collect(),
                        });
                    }
                }
            }
            _ => {}
        };
        self.h.add_server(server, replica, driver, Rc::new(observe));
    }

    fn setup_done(&self) -> bool {
        self.accounts.borrow().iter().all(|r| r.finished)
    }

    /// Every user's login token, from the setup; an error if one is missing.
    fn take_tokens(&mut self) -> Result<(), String> {
        let accounts = self.accounts.borrow();
        let mut tokens = self.shared.tokens.borrow_mut();
        for (i, r) in accounts.iter().enumerate() {
            let token = r.login.iter().find_map(|t| match &t.result {
                TryResult::Answer(Response::LoggedIn { token, .. }) => Some(token.clone()),
                _ => None,
            });
            match token {
                Some(t) => tokens[i] = Some(t),
                None => {
                    let tries: Vec<String> = r
                        .register
                        .iter()
                        .chain(&r.login)
                        .map(|t| t.result.to_string())
                        .collect();
                    return Err(format!(
                        "setup: {} could not register and log in without faults: {}",
                        r.plan.username,
                        tries.join("; ")
                    ));
                }
            }
        }
        Ok(())
    }

    /// Registers every file client whose start time has come.
    fn admit_due_clients(&mut self, t0: Duration) {
        let now = self.h.now();
        while let Some(&i) = self.waiting.last() {
            let (start, name) = {
                let r = self.shared.records.borrow();
                (r[i].plan.start, r[i].plan.name.clone())
            };
            if t0 + start > now {
                break;
            }
            self.waiting.pop();
            let shared = &self.shared;
            self.h
                .add_client(&name, |sim| add_files_client(sim, i, shared));
        }
    }

    /// One turmoil step. `Some(true)` once every client program is done;
    /// `None` if the run must stop (a violation was recorded).
    fn step(&mut self) -> Option<bool> {
        let (accounts, shared) = (&self.accounts, &self.shared);
        self.h.step(|| {
            let mut stuck: Vec<String> = accounts
                .borrow()
                .iter()
                .filter(|c| !c.finished)
                .map(|c| c.plan.name.clone())
                .collect();
            stuck.extend(
                shared
                    .records
                    .borrow()
                    .iter()
                    .filter(|c| !c.finished)
                    .map(|c| c.plan.name.clone()),
            );
            let v = shared.verify.borrow();
            if v.finished < v.started {
                stuck.push(format!("{} verifier(s)", v.started - v.finished));
            }
            stuck
        })
    }

    /// Checks the between-steps invariants and notes the applied indexes.
    /// False on a violation.
    fn watch(&mut self) -> bool {
        let applied: Vec<(u32, u64)> = self.h.with_views(|views| {
            views
                .iter()
                .map(|v| (v.id, v.server.replica().indexes().applied))
                .collect()
        });
        let before = self.replicas.watch.committed();
        let mut found = self.replicas.check(&self.h.servers);
        let fresh: Vec<Entry> = self
            .replicas
            .watch
            .entries()
            .skip(before)
            .cloned()
            .collect();
        for f in self.fragile.borrow_mut().drain(..) {
            if !f.replaced_before(&self.committed, &self.named, &fresh)
                && !f.replaced_in_step(&self.committed, &fresh, &self.held)
            {
                found.push(f.line);
            }
        }
        for e in &fresh {
            self.committed.apply(e);
            self.named.extend(self.committed.digests());
        }
        self.held = (self.disks.borrow().iter())
            .map(|d| d.borrow().blobs.keys().copied().collect())
            .collect();
        for (id, a) in applied {
            let f = &mut self.applied_floor[id as usize];
            *f = (*f).max(a);
        }
        self.h.holds(found)
    }

    /// Fills in what the clients stamped in the step just run: an
    /// operation's floor (its server's applied index before the step) and
    /// its ceiling (what is committed after it).
    fn stamp(&mut self, before: &[u64]) {
        let stamps = std::mem::take(&mut *self.shared.stamps.borrow_mut());
        if stamps.is_empty() {
            return;
        }
        let committed = self.replicas.watch.committed() as u64;
        let mut records = self.shared.records.borrow_mut();
        for s in stamps {
            let op = &mut records[s.client].ops[s.op];
            match s.begin {
                Some(server) => op.lo = Some(before.get(server as usize).copied().unwrap_or(0)),
                None => op.hi = Some(committed),
            }
        }
    }

    /// Flips a bit of a blob if a rot's time has come (and some content is
    /// on two servers).
    fn rot_due(&mut self, t0: Duration) {
        let now = self.h.now();
        let since = now.saturating_sub(t0);
        if let Some(line) = self
            .rotter
            .strike(since, now, &self.h.disks, &self.applied_floor)
        {
            self.h.record(line);
        }
    }

    fn heal(&mut self) {
        self.h
            .record("all clients done; heal the cluster, which must converge");
        let missed = self.rotter.give_up();
        if missed > 0 {
            self.h.record(format!(
                "{missed} planned rot(s) had not struck by the heal: dropped"
            ));
        }
        if !self.reads.get().1.is_zero() {
            self.h.record("the servers' disks read at full speed again");
            self.reads.set((Duration::ZERO, Duration::ZERO));
        }
        self.h.heal();
    }

    /// The converged cluster in one line: the same log and state everywhere
    /// (the replication scenario's check), and on every disk exactly the
    /// blobs the catalogue names and no temporary file.
    fn convergence(&self) -> Result<String, String> {
        let n = self.cfg.servers as usize;
        self.h.with_views(|views| {
            let state = converged(views, n)?;
            let mut blobs = 0;
            for v in views {
                let named: BTreeSet<[u8; 32]> = v
                    .server
                    .replica()
                    .state()
                    .catalogue()
                    .all()
                    .map(|f| f.digest)
                    .collect();
                let disk = self.h.disks[v.id as usize - 1].borrow();
                let have: BTreeSet<[u8; 32]> = disk.blobs.keys().copied().collect();
                if have != named {
                    return Err(format!(
                        "server{}'s disk lacks {} and holds garbage {}",
                        v.id,
                        digests(named.difference(&have)),
                        digests(have.difference(&named))
                    ));
                }
                if !disk.temps.is_empty() {
                    return Err(format!(
                        "server{} holds temporary files {:?}",
                        v.id,
                        disk.temps.keys().collect::<Vec<_>>()
                    ));
                }
                blobs = have.len();
            }
            Ok(format!("{state}; {blobs} blob(s) on every disk"))
        })
    }

    /// As many verifiers as users, at once: between them, every user visits
    /// every server.
    fn start_verifiers(&mut self, history: &History) {
        let users = self.shared.users.clone();
        let last = history.last();
        self.h
            .record("start the verifiers: every user's files through every server");
        self.verify_started = Some(self.h.now());
        let mut tasks = Vec::new();
        for (i, u) in users.iter().enumerate() {
            let Some(&id) = last.by_name.get(&u.username) else {
                continue;
            };
            let own = last
                .files
                .keys()
                .filter(|(o, _)| *o == id)
                .map(|(_, n)| n.clone())
                .collect();
            let name_of = |o: u64| last.users.get(&o).cloned().unwrap_or_default();
            // Shared by file or by folder.
            let shared = (last.files.keys())
                .filter(|(o, n)| *o != id && last.readable(id, *o, n).is_some())
                .map(|(o, n)| (name_of(*o), n.clone()))
                .collect();
            let forbidden = (last.files.keys())
                .find(|(o, n)| *o != id && last.readable(id, *o, n).is_none())
                .map(|(o, n)| (name_of(*o), n.clone()));
            tasks.push(VerifyTask {
                user: i,
                own,
                shared,
                forbidden,
            });
        }
        let workers = tasks.len();
        let names: Vec<String> = (1..=workers).map(|w| format!("verify{w}")).collect();
        let (servers, shared) = (self.cfg.servers, &self.shared);
        self.h.add_clients(&names, |sim| {
            add_verifiers(sim, workers, servers, tasks, shared)
        });
    }

    /// The final checks; returns the count of stale (allowed) downloads.
    fn check_final_state(&mut self, history: &History) -> usize {
        let records = client::merged(&self.shared.records.borrow());
        let verify = self.shared.verify.borrow();
        let users = &self.shared.users;
        // By the registration: a user who deleted their account is gone
        // from the final catalogue, not from the log.
        let ids: Vec<Option<u64>> = users
            .iter()
            .map(|u| {
                history
                    .upto(u64::MAX)
                    .find_map(|(_, e, o)| match (&e.txn, o) {
                        (Txn::Register { username, .. }, model::Outcome::Registered(id))
                            if *username == u.username =>
                        {
                            Some(id)
                        }
                        _ => None,
                    })
            })
            .collect();
        let disks: Vec<std::cell::Ref<'_, Disk>> =
            self.h.disks.iter().map(|d| d.borrow()).collect();
        let checks = self.checks.borrow();
        let rots = &self.rotter.rots;
        rot::check_rots(rots, &checks, history, &disks, &mut self.h.violations);
        let (v, stale) = self.h.with_views(|views| {
            invariants::check_files(&invariants::Final {
                servers: views,
                disks: &disks,
                history,
                users,
                ids: &ids,
                clients: &records,
                verify: &verify,
                strict_revocation: self.cfg.strict_revocation,
                max_latency: self.cfg.latency.1,
                rots,
            })
        });
        drop((verify, disks, checks));
        self.h.violations.extend(v);
        stale
    }

    /// The clients' history (the setup's registrations and logins, then
    /// the file clients' operations) against the catalogue's model. Once
    /// the setup is done: a file client's operation still on its way is in
    /// its record already, unanswered, but an account client's is not.
    fn check_linearizability(&mut self) -> LinCheck {
        let accounts = self.accounts.borrow();
        if !accounts.iter().all(|r| r.finished) {
            return LinCheck::default();
        }
        let records = client::merged(&self.shared.records.borrow());
        let h = history::history(&accounts, &records, &self.shared.users);
        drop(accounts);
        let lin = LinCheck::of(&h);
        self.h.violations.extend(lin.violation.clone());
        lin
    }

    fn finish(
        self,
        cfg: &FilesConfig,
        plan: FilesPlan,
        converged: Option<String>,
        stale_downloads: usize,
        // Entries applied: folder shares, `rm -r` of folders, batches.
        tally: [u64; 3],
        lin: LinCheck,
    ) -> FilesOutcome {
        let details = FilesDetails {
            config: cfg.clone(),
            plan,
            accounts: self.accounts.borrow().clone(),
            clients: self.shared.records.borrow().clone(),
            verify: self.shared.verify.borrow().clone(),
            converged,
            committed: self.replicas.watch.committed(),
            stale_downloads,
            folder_shares: tally[0],
            folders_deleted: tally[1],
            batches_committed: tally[2],
            blobs_persisted: self.h.disks.iter().map(|d| d.borrow().persisted).sum(),
            rots_missed: self.rotter.missed,
            rots: self.rotter.into_rots(),
            verify_started: self.verify_started,
            checks: self.checks.borrow().clone(),
            lin,
        };
        let replay = files_replay_command(self.h.seed, cfg.preset);
        let replay = match cfg.strict_revocation {
            true => format!("{replay} --strict-revocation"),
            false => replay,
        };
        self.h.finish(replay, details)
    }
}

fn digests<'a>(ds: impl Iterator<Item = &'a [u8; 32]>) -> String {
    let v: Vec<String> = ds.map(short).collect();
    format!("[{}]", v.join(", "))
}

/// A "stored" answered while its content was on fewer than a majority of
/// the disks: a violation unless the file had been replaced (or deleted)
/// by a committed entry before the answer, after which the content is
/// garbage that every server may remove (docs/transfer.md, "Garbage") and
/// no lost disk can lose what the answer vouched for. Found with files seed
/// 225: bob's two `--force` uploads of "empty" are ordered #8 and #9; the
/// master removes #8's content once it applies #9, and then server1, which
/// took #8's upload, applies #8 and answers "stored" for it.
///
/// Or replaced in the very step of the answer (files seed 1166: the master
/// commits #16, which replaces #15's file, and removes #15's content; in
/// the same tick server3 applies #15 and answers "stored"): excused if an
/// entry committed in that step un-named the content, and the disks that
/// hold it at the answer and those that held it when the step began and
/// removed it since make a majority. A server removes content the
/// committed log named only once it has applied an entry that un-names
/// it: that entry was committed before the removal, so before the answer,
/// and until then the content was on a majority.
struct Fragile {
    digest: [u8; 32],
    line: String,
    /// Which disks held the content at the moment of the answer.
    holders: Vec<bool>,
}

impl Fragile {
    /// Whether the content had been named by a committed state and no
    /// longer was when the step of the answer began (`committed`, `named`:
    /// the committed log as the watch before that step saw it). `fresh`
    /// are the entries seen committed in that step: if one of them puts
    /// this content, the answer may be for it, and nothing is excused.
    fn replaced_before(
        &self,
        committed: &Catalogue,
        named: &BTreeSet<[u8; 32]>,
        fresh: &[Entry],
    ) -> bool {
        // A single upload's, or a batch's.
        let put_again = fresh.iter().any(|e| e.txn.names(&self.digest));
        named.contains(&self.digest) && !committed.digests().contains(&self.digest) && !put_again
    }

    /// Whether the content was un-named by an entry committed in the step
    /// of the answer and was on a majority until removed (see above):
    /// `committed` is the committed state before the step, `fresh` the
    /// entries committed in it, `held` each disk's blobs before it.
    fn replaced_in_step(
        &self,
        committed: &Catalogue,
        fresh: &[Entry],
        held: &[BTreeSet<[u8; 32]>],
    ) -> bool {
        let mut c = committed.clone();
        let mut named = c.digests().contains(&self.digest);
        for e in fresh {
            c.apply(e);
            named |= c.digests().contains(&self.digest);
        }
        let unnamed = named && !c.digests().contains(&self.digest);
        let removed = (self.holders.iter().zip(held))
            .filter(|(now, before)| !**now && before.contains(&self.digest))
            .count();
        let holding = self.holders.iter().filter(|h| **h).count();
        unnamed && holding + removed > self.holders.len() / 2
    }
}

/// The violation if server `id` answers "stored" for `d` (to `op`: an
/// upload, or a batch of them) while fewer than a majority of `disks` hold
/// it: one more lost disk could lose an acknowledged file.
fn durable_on_too_few(id: u32, op: OpCode, d: &[u8; 32], disks: &[SharedDisk]) -> Option<String> {
    let n = disks.len();
    let holding = disks
        .iter()
        .filter(|x| x.borrow().blob(d).is_some())
        .count();
    (holding < n / 2 + 1).then(|| {
        format!(
            "server{id} answered \"stored\" ({op:?}) for {} while it was durable on {holding} of {n} disks",
            short(d),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use ferry_core::replication::entry::Origin;

    fn put(index: u64, request: u64, d: u8) -> Entry {
        Entry {
            index,
            view: 1,
            at: 0,
            origin: Origin {
                server: 1,
                session: 7,
                request,
            },
            txn: Txn::PutFile {
                owner: 1,
                name: "empty".into(),
                size: 1,
                digest: [d; 32],
                replace: true,
                holder: 1,
                attrs: None,
            },
        }
    }

    /// The committed state and the digests it ever named after `log`.
    fn after(log: &[Entry]) -> (Catalogue, BTreeSet<[u8; 32]>) {
        let (mut c, mut named) = (Catalogue::default(), BTreeSet::new());
        for e in log {
            c.apply(e);
            named.extend(c.digests());
        }
        (c, named)
    }

    fn fragile(d: u8) -> Fragile {
        Fragile {
            digest: [d; 32],
            line: String::new(),
            holders: vec![true, false, false],
        }
    }

    #[test]
    fn a_stored_whose_file_is_replaced_in_the_step_of_the_answer_is_excused_only_if_it_was_on_a_majority(
    ) {
        let held = |which: &[usize]| -> Vec<BTreeSet<[u8; 32]>> {
            (0..3)
                .map(|i| match which.contains(&i) {
                    true => BTreeSet::from([[0xa; 32]]),
                    false => BTreeSet::new(),
                })
                .collect()
        };
        // #1 put A, committed before the step; #2, committed in it,
        // replaces A. Disk 0 holds A at the answer; disk 1 held it and
        // removed it in the step: A was on a majority until #2.
        let (c, _) = after(&[put(1, 1, 0xa)]);
        let f = fragile(0xa);
        assert!(f.replaced_in_step(&c, &[put(2, 2, 0xb)], &held(&[0, 1])));
        // Put and replaced in the same step: the same.
        let (empty, _) = after(&[]);
        assert!(f.replaced_in_step(&empty, &[put(1, 1, 0xa), put(2, 2, 0xb)], &held(&[0, 1])));
        // Only disk 0 ever held it: never on a majority.
        assert!(!f.replaced_in_step(&c, &[put(2, 2, 0xb)], &held(&[0])));
        // Not replaced in the step: still owed a majority.
        assert!(!f.replaced_in_step(&c, &[], &held(&[0, 1])));
        assert!(!f.replaced_in_step(&c, &[put(2, 2, 0xa)], &held(&[0, 1])));
    }

    #[test]
    fn a_stored_answered_after_its_file_was_replaced_is_excused() {
        // #1 puts A, #2 replaces it with B, both committed before the step
        // in which "stored" for A is answered: A is garbage by then.
        let (c, named) = after(&[put(1, 1, 0xa), put(2, 2, 0xb)]);
        assert!(fragile(0xa).replaced_before(&c, &named, &[]));
    }

    #[test]
    fn a_stored_whose_file_is_still_named_or_new_is_not_excused() {
        // Still named: the answer's content must be on a majority.
        let (c, named) = after(&[put(1, 1, 0xa)]);
        assert!(!fragile(0xa).replaced_before(&c, &named, &[]));
        // Committed in the step of the answer: not seen by the watch yet.
        let (c, named) = after(&[]);
        assert!(!fragile(0xa).replaced_before(&c, &named, &[put(1, 1, 0xa)]));
        // Replaced earlier, then put again in the step of the answer: the
        // answer may be for the new put.
        let (c, named) = after(&[put(1, 1, 0xa), put(2, 2, 0xb)]);
        assert!(!fragile(0xa).replaced_before(&c, &named, &[put(3, 3, 0xa)]));
        // Put again by a batch: the same.
        let mut batch = put(3, 3, 0);
        batch.txn = Txn::PutFiles {
            owner: 1,
            files: [0xc, 0xa]
                .map(|d| ferry_core::replication::entry::NewFile {
                    name: format!("f{d}"),
                    size: 1,
                    digest: [d; 32],
                    attrs: None,
                })
                .to_vec(),
            replace: false,
            holder: 1,
        };
        assert!(!fragile(0xa).replaced_before(&c, &named, &[batch]));
    }

    #[test]
    fn a_stored_file_of_a_batch_on_too_few_disks_is_named() {
        let disks: Vec<SharedDisk> = (0..3).map(|_| crate::disk::shared_disk()).collect();
        let content = b"x".to_vec();
        let d = *blake3::hash(&content).as_bytes();
        disks[0].borrow_mut().blobs.insert(d, content.into());
        let line = durable_on_too_few(1, OpCode::UploadMany, &d, &disks);
        let want = format!(
            "server1 answered \"stored\" (UploadMany) for {} while it was durable on 1 of 3 disks",
            short(&d)
        );
        assert_eq!(line, Some(want));
        let copy = disks[0].borrow().blobs[&d].clone();
        disks[2].borrow_mut().blobs.insert(d, copy);
        assert_eq!(durable_on_too_few(1, OpCode::UploadMany, &d, &disks), None);
    }
}
