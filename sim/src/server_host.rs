//! A server host: a `ferry-core` [`Server`] with its own LMDB store and its
//! own in-memory disk of file content, which both survive crashes and
//! restarts of the host.
//!
//! Each server's store is a [`HeedStore`] (the production one) in its own
//! directory, `<run dir>/<seed>/<host>/`. The store an incarnation opens is
//! held by the host's [`ServerSlot`], which the harness owns, and the driver
//! commits through a [`StoreSlot`] handle to it. A crash or a restart closes
//! it there ([`ServerSlot::crash`]): the LMDB environment and the
//! directory's lock are released at that moment, by the harness's own
//! thread, before the next start opens them again. Nothing depends on when
//! turmoil gets round to dropping the old incarnation's task, nor on what
//! that task still holds; and should anything of a crashed incarnation try
//! to commit afterwards, its commit fails (and fails its host) instead of
//! writing to the store of the next one.
//!
//! At each start the program loads what the store holds and resumes from it
//! (`Server::new(.., &recovered, now)`), with fresh entropy: a restarted
//! server must not draw the session ids of its previous life again. The disk
//! ([`crate::disk::Disk`]) belongs to the harness, so it outlives the host:
//! at each start the temporary files a crash left behind are removed and the
//! blobs present are listed as `Recovered::blobs`, as runtime-smol does.

use crate::disk::{short, SharedDisk, SimFiles};
use crate::driver::{now, Ctx, Driver, DriverConfig};
use crate::seeds::SimRng;
use crate::trace::SharedTrace;
use ferry_core::auth::ClusterSecret;
use ferry_core::frame;
use ferry_core::replication::messages::{ReplicaMsg, REPLICA_TAGS};
use ferry_core::replication::ReplicaConfig;
use ferry_core::server::{BlobMsg, Server, ServerConfig, ServerEvent, BLOB_TAGS};
use ferry_core::store::{Batch, Recovered, Store, StoreError, Write};
use ferry_core::Entropy;
use ferry_runtime_smol::store::HeedStore;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use turmoil::net::TcpListener;

/// A server host's current node and store, replaced at each (re)start. The
/// harness reads the node between steps and clears both when it crashes
/// the host.
#[derive(Default)]
pub struct ServerSlot {
    pub node: Option<Rc<RefCell<Server>>>,
    /// The store the current incarnation has open, if it has one.
    store: Option<OpenStore>,
    /// What the store durably holds of the log, over all incarnations (for
    /// the durability checker).
    pub durable: SharedDurableLog,
    /// Starts so far: 1 for the first, 2 after one restart...
    pub incarnation: u32,
}

impl ServerSlot {
    /// What a crash takes from the host at once: its node, and its store,
    /// closed (environment and lock released) before this returns.
    pub fn crash(&mut self) {
        self.node = None;
        self.close_store();
    }

    /// Closes the current incarnation's store, if it has one open.
    pub fn close_store(&mut self) {
        if let Some(store) = self.store.take() {
            store.close();
        }
    }

    /// Opens the store in `dir` for a new incarnation. Whatever the slot
    /// still had open is closed first, so an incarnation never finds its
    /// directory locked by the one before.
    pub fn open_store(&mut self, dir: &Path) -> Result<OpenStore, StoreError> {
        self.close_store();
        let store = OpenStore::open(dir, self.durable.clone())?;
        self.store = Some(store.clone());
        Ok(store)
    }

    /// The current incarnation's store, if open.
    pub fn store(&self) -> Option<&OpenStore> {
        self.store.as_ref()
    }
}

/// One incarnation's store: a [`HeedStore`] until that incarnation ends.
/// Handles are cheap clones; the driver commits through one, and the
/// harness closes the store through another when it crashes the host. Each
/// incarnation opens its own, so a handle a crashed incarnation left behind
/// never reaches the store of the next one: it fails.
#[derive(Clone)]
pub struct OpenStore {
    store: Rc<RefCell<Option<(HeedStore, Opened)>>>,
    /// Told of every batch committed.
    durable: SharedDurableLog,
}

thread_local! {
    /// The store directories this thread has open, for the message of a
    /// store found in use: CI once saw one (replication seed 10, a crash
    /// and a restart at one instant) that no replay reproduces; the
    /// message says whether this thread still had it open (a handle
    /// escaped closing) or not (the lock was held from elsewhere).
    static OPEN_DIRS: RefCell<std::collections::BTreeSet<PathBuf>> =
        const { RefCell::new(std::collections::BTreeSet::new()) };
}

/// A directory in [`OPEN_DIRS`] while its store is open.
struct Opened(PathBuf);

impl Drop for Opened {
    fn drop(&mut self) {
        // (At a thread's end the set may be gone before the last store.)
        let _ = OPEN_DIRS.try_with(|o| o.borrow_mut().remove(&self.0));
    }
}

impl OpenStore {
    fn open(dir: &Path, durable: SharedDurableLog) -> Result<OpenStore, StoreError> {
        let store = HeedStore::open(dir).map_err(|e| {
            let here = OPEN_DIRS.with(|o| o.borrow().contains(dir));
            let whose = match here {
                true => "this thread still has it open",
                false => "not open on this thread",
            };
            StoreError(format!("{} ({whose})", e.0))
        })?;
        OPEN_DIRS.with(|o| o.borrow_mut().insert(dir.to_path_buf()));
        let opened = Opened(dir.to_path_buf());
        Ok(OpenStore {
            store: Rc::new(RefCell::new(Some((store, opened)))),
            durable,
        })
    }

    /// Closes the store: LMDB's environment and the directory's lock are
    /// released now, whoever still holds a handle.
    pub fn close(&self) {
        let store = self.store.borrow_mut().take();
        drop(store);
    }

    pub fn is_open(&self) -> bool {
        self.store.borrow().is_some()
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut HeedStore) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        match self.store.borrow_mut().as_mut() {
            Some((store, _)) => f(store),
            None => Err(StoreError(
                "the store was closed by a crash of its host".to_string(),
            )),
        }
    }
}

impl Store for OpenStore {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        self.with(|s| s.commit(batch))?;
        self.durable.borrow_mut().committed(batch);
        Ok(())
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        self.with(|s| s.load())
    }
}

/// Calls `f` with a view of every running server, in id order. Only
/// between steps: the nodes are borrowed meanwhile.
pub fn with_views<R>(servers: &[Rc<RefCell<ServerSlot>>], f: impl FnOnce(&[View<'_>]) -> R) -> R {
    let slots: Vec<_> = servers.iter().map(|s| s.borrow()).collect();
    let nodes: Vec<_> = slots
        .iter()
        .enumerate()
        .filter_map(|(i, s)| {
            s.node
                .as_ref()
                .map(|n| (i as u32 + 1, s.incarnation, n.borrow()))
        })
        .collect();
    let views: Vec<View<'_>> = nodes
        .iter()
        .map(|(id, incarnation, n)| View {
            id: *id,
            incarnation: *incarnation,
            server: n,
        })
        .collect();
    f(&views)
}

/// A running server as the harness sees it between steps.
pub struct View<'a> {
    pub id: u32,
    pub incarnation: u32,
    pub server: &'a Server,
}

/// What one server's store durably holds of the replication log.
#[derive(Debug, Default)]
pub struct DurableLog {
    /// Log index → BLAKE3 of the entry's bytes.
    entries: BTreeMap<u64, [u8; 32]>,
    /// Batches committed so far, so that a check can tell a change.
    pub commits: u64,
}

pub type SharedDurableLog = Rc<RefCell<DurableLog>>;

impl DurableLog {
    /// Takes in a batch the store has committed.
    pub fn committed(&mut self, batch: &Batch) {
        for w in &batch.writes {
            match w {
                Write::Append { index, entry } => {
                    self.entries.insert(*index, *blake3::hash(entry).as_bytes());
                }
                Write::TruncateFrom { from } => {
                    self.entries.split_off(from);
                }
                _ => {}
            }
        }
        self.commits += 1;
    }

    pub fn get(&self, index: u64) -> Option<&[u8; 32]> {
        self.entries.get(&index)
    }
}

/// Called for every event of the server, with its incarnation.
pub type ServerObserver = Rc<dyn Fn(&Ctx<'_>, &ServerEvent, u32)>;

/// Everything a server host needs, at every start.
#[derive(Clone)]
pub struct ServerSpec {
    pub host: String,
    pub port: u16,
    pub server: ServerConfig,
    pub replica: ReplicaConfig,
    pub secret: ClusterSecret,
    /// The run's seed; mixed with the server id and the incarnation into
    /// the server's entropy and its driver's seed.
    pub seed: u64,
    /// The store's directory.
    pub store_dir: PathBuf,
    /// The server's file content: blobs and temporary files.
    pub disk: SharedDisk,
    pub driver: DriverConfig,
}

/// The store directory of `host` in run directory `run_dir` for `seed`.
pub fn store_dir(run_dir: &Path, seed: u64, host: &str) -> PathBuf {
    run_dir.join(seed.to_string()).join(host)
}

/// Where run directories go: `SIM_STORE_DIR`, else `/dev/shm` where it
/// exists (memory: an `fsync` there is free, and a sweep commits tens of
/// thousands of batches), else the system's temporary directory.
pub fn run_dir_parent() -> PathBuf {
    if let Some(dir) = std::env::var_os("SIM_STORE_DIR") {
        return PathBuf::from(dir);
    }
    let shm = Path::new("/dev/shm");
    if shm.is_dir() {
        return shm.to_path_buf();
    }
    std::env::temp_dir()
}

/// A fresh temporary directory for one run's stores, removed when dropped
/// (after the simulation, whose hosts hold the stores, is gone).
pub fn run_dir() -> std::io::Result<tempfile::TempDir> {
    tempfile::Builder::new()
        .prefix("ferry-sim-")
        .tempdir_in(run_dir_parent())
}

/// Registers server host `spec.host`. Its program runs again at each
/// restart: open the store, load it, resume, serve.
pub fn add_server(
    sim: &mut turmoil::Sim<'static>,
    spec: ServerSpec,
    slot: Rc<RefCell<ServerSlot>>,
    trace: SharedTrace,
    observe: ServerObserver,
) {
    let host = spec.host.clone();
    sim.host(host, move || {
        let (spec, slot, trace, observe) =
            (spec.clone(), slot.clone(), trace.clone(), observe.clone());
        async move {
            let incarnation = {
                let mut s = slot.borrow_mut();
                s.incarnation += 1;
                s.incarnation
            };
            let host = spec.host.as_str();
            let store = slot
                .borrow_mut()
                .open_store(&spec.store_dir)
                .map_err(|e| format!("{host} cannot open its store: {e}"))?;
            let mut recovered = store
                .load()
                .map_err(|e| format!("{host} cannot load its store: {e}"))?;
            let (blobs, leftover) = spec.disk.borrow_mut().start();
            recovered.blobs = blobs;
            let id = spec.server.id;
            let mix = SimRng::new(spec.seed, 1000 + u64::from(id)).next_u64()
                ^ u64::from(incarnation).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let server = Server::new(
                spec.server.clone(),
                spec.replica.clone(),
                spec.secret.clone(),
                Entropy::from_u64(mix),
                &recovered,
                now(),
            )
            .map_err(|e| format!("{host} cannot resume from its store: {e}"))?;
            let node = Rc::new(RefCell::new(server));
            slot.borrow_mut().node = Some(node.clone());
            let mut held = if recovered.log.is_empty() {
                String::new()
            } else {
                format!(
                    "store holds log {}, applied {}",
                    recovered.log.len(),
                    recovered.applied
                )
            };
            // Only a disk with something on it is worth a word (the
            // scenarios without files keep their traces).
            let on_disk = match (recovered.blobs.len(), leftover) {
                (0, 0) => String::new(),
                (b, 0) => format!("{b} blob(s) on disk"),
                (b, t) => format!("{b} blob(s) on disk, {t} leftover temporary file(s) removed"),
            };
            if !on_disk.is_empty() {
                if held.is_empty() {
                    held = format!("empty store, {on_disk}");
                } else {
                    held = format!("{held}, {on_disk}");
                }
            }
            let up = match (incarnation, held.is_empty()) {
                (1, true) => "up".to_string(),
                (1, false) => format!("up: {held}"),
                (n, true) => {
                    format!("up again (start #{n}): empty store; no sessions, no spent codes")
                }
                (n, false) => {
                    format!("up again (start #{n}): {held}; no sessions, no spent codes")
                }
            };
            trace.borrow_mut().record_now(host, up);
            let driver = DriverConfig {
                seed: mix,
                ..spec.driver.clone()
            };
            let listener = TcpListener::bind(("0.0.0.0", spec.port)).await?;
            let mut driver = Driver::new(host, node, trace, driver)
                .with_store(Box::new(store))
                .with_files(SimFiles::Server(spec.disk.clone()));
            driver = driver.with_describe(Rc::new(describe_server_event));
            let follower = spec.replica.master != id;
            driver = driver.with_tap(Rc::new(move |b, peer| describe_frame(follower, b, peer)));
            driver.listen(listener);
            driver
                .run_forever(move |ctx, ev| observe(ctx, ev, incarnation))
                .await;
            match driver.failure() {
                Some(e) => Err(format!("{host} stopped: {e}").into()),
                None => Ok(()),
            }
        }
    });
}

/// A server's trace line: its event's text, with the answers of file
/// operations shortened (a digest by its first bytes in hex; a listing is
/// told by its length already). Other lines are the events' own text.
pub fn describe_server_event(e: &ServerEvent) -> Option<String> {
    let ServerEvent::Answered {
        conn, op, outcome, ..
    } = e
    else {
        return Some(e.to_string());
    };
    let outcome = shorten_digests(outcome);
    Some(format!("{op:?} on {conn}: {outcome}"))
}

/// `digest: [1, 2, ...]` (32 numbers) becomes `digest: 0102..` (hex of the
/// first four).
fn shorten_digests(s: &str) -> String {
    const KEY: &str = "digest: [";
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find(KEY) {
        // Up to "digest: ", then the numbers and the closing bracket.
        out.push_str(&rest[..i + KEY.len() - 1]);
        rest = &rest[i + KEY.len() - 1..];
        let end = rest.find(']').map_or(rest.len(), |e| e + 1);
        let bytes: Vec<u8> = rest[1..end.saturating_sub(1).max(1)]
            .split(',')
            .filter_map(|b| b.trim().parse().ok())
            .collect();
        match bytes.len() {
            32 => out.push_str(&crate::disk::hex(&bytes[..4])),
            _ => out.push_str(&rest[..end]),
        }
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// A trace line for a frame a server sends that the core has no event for:
/// a follower's `Forward` of a client's transaction to the master, and a
/// request to fetch a blob from a peer. Other frames are not decoded.
pub fn describe_frame(follower: bool, bytes: &[u8], peer: &dyn Fn() -> String) -> Option<String> {
    let tag = *bytes.get(frame::PREFIX..)?.first()?;
    if follower && REPLICA_TAGS.contains(&tag) {
        return describe_forward(bytes);
    }
    if !BLOB_TAGS.contains(&tag) {
        return None;
    }
    match frame::decode::<BlobMsg>(&bytes[frame::PREFIX..]) {
        Ok(BlobMsg::Fetch { digest, .. }) => {
            Some(format!("fetch blob {} from {}", short(&digest), peer()))
        }
        _ => None,
    }
}

/// A trace line for a follower's `Forward` of a client's transaction to the
/// master (the core has no event for it): the transaction, and its origin's
/// session (first two bytes) and request number.
pub fn describe_forward(bytes: &[u8]) -> Option<String> {
    let payload = bytes.get(frame::PREFIX..)?;
    if !REPLICA_TAGS.contains(payload.first()?) {
        return None;
    }
    match frame::decode::<ReplicaMsg>(payload) {
        Ok(ReplicaMsg::Forward { origin, txn, .. }) => Some(format!(
            "forward {} (session {:04x}.., request {}) to the master",
            txn.describe(),
            origin.session >> 48,
            origin.request
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::shorten_digests;

    #[test]
    fn digests_are_shortened_and_nothing_else_changes() {
        let d: Vec<String> = (1..=32).map(|b| b.to_string()).collect();
        let s = format!("FileDone(Stored {{ size: 5, digest: [{}] }})", d.join(", "));
        assert_eq!(
            shorten_digests(&s),
            "FileDone(Stored { size: 5, digest: 01020304 })"
        );
        for same in [
            "Registered { user_id: 1 }",
            "digest: [1, 2]",
            "digest: [",
            "",
        ] {
            assert_eq!(shorten_digests(same), same);
        }
    }
}
