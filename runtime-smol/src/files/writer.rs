//! The disk work that waits, on a thread of its own: writes into temporary
//! files, and what the node asked for after them, in the same order
//! (persisting, discarding, removing, renaming).
//!
//! Copying bytes into the page cache is the largest cost of receiving a
//! file (on the development VM, 64 MiB take 0.15 s of system time, as much
//! as a stop-and-wait loop's whole round trips for 2 MiB). Done on the
//! driver's thread, it sits between a chunk's arrival and its ACK; done
//! here, it runs on another core while the transfer goes on.
//!
//! A `Persist` waits for the disk (`fsync` of the file, rename, `fsync` of
//! the directory): for a file of a few GiB, seconds. On the driver's thread
//! that wait stopped the whole node (heartbeats, every other session, the
//! master's log for the cluster), long enough for its peers to take it for
//! dead. Here it waits alone, and its answer comes back when it is done.
//!
//! **Order.** One thread, one queue: jobs are carried out in the order
//! submitted, so a file's writes are in it before it is persisted, and a
//! `Remove` or a `Rename` asked for after a `Persist` happens after it (a
//! rename of the file just persisted finds it there). Reads bypass the
//! queue (the driver makes them when it feeds them), which is safe because
//! a node reads only files it was told are in place. A `Discard` unlinks
//! the temporary file on the driver's thread at once, so that the name is
//! free for a new file of the same number (a client's next attempt); writes
//! still queued for it land in the unlinked file, which goes with its last
//! descriptor.
//!
//! **Bounds.** Bytes in flight are bounded: [`Writer::submit`] waits for
//! jobs to finish past [`MAX_IN_FLIGHT`].
//!
//! **Answers.** A failed write, a finished persist and a finished rename
//! are queued as [`Finished`] and wake the driver, which takes them
//! ([`Writer::take_finished`]). A write failure names the opening of the
//! temporary file it belongs to, so it is never taken for one of a later
//! file of the same number. The thread also remembers a file's first failed
//! write, so its persist fails with it however the driver was told.

use super::{io_failure, is_no_space, local, sync_dir, FileFailure};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{self, ErrorKind};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::SystemTime;

/// Bytes submitted and not yet written, at most.
pub const MAX_IN_FLIGHT: usize = 4 << 20;

/// Tells the driver that an answer is waiting (from the writer thread).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What to do when a persist's target exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it.
    Replace,
    /// A download with `--force`: replace a regular file (the new file
    /// takes its mode and owner) or a symbolic link (the link itself,
    /// never what it points to); refuse anything else, looked at again
    /// just before the rename.
    ReplaceRegular,
    /// Keep it and drop this copy: a blob is named by its content, so the
    /// one there is the same bytes, complete and durable.
    Keep,
    /// Fail: the user did not ask to overwrite. Never replaces, not even
    /// a file put there while this one was being made durable.
    Refuse,
    /// Never replace, not even a file put there while this one was being
    /// made durable: link it in, which fails if the name is taken (a
    /// peer's named file). The temporary file goes whatever the answer.
    Link,
}

/// Moving a temporary file into place.
pub struct Placing {
    pub temp: u64,
    pub file: Arc<File>,
    pub from: PathBuf,
    pub to: PathBuf,
    pub existing: Existing,
    /// The modification time the file is to have in place (a peer's copy
    /// keeps its original's), set before it is made durable.
    pub modified: Option<SystemTime>,
    /// The permission bits it is to have in place (a download whose
    /// attributes are kept), set with the time.
    pub mode: Option<u32>,
    /// The file has no name (`O_TMPFILE`): it is linked in, and `from` is
    /// only the name it takes for a moment before it replaces a file.
    pub unnamed: bool,
}

enum Job {
    Write {
        temp: u64,
        /// The opening of the temporary file, for its failure.
        opening: u64,
        file: Arc<File>,
        offset: u64,
        data: Vec<u8>,
        /// A range whose writeback to start once this is written.
        writeback: Option<(u64, u64)>,
    },
    Persist(Placing),
    /// The temporary file is gone: its failures are forgotten.
    Forget {
        temp: u64,
    },
    Remove {
        path: PathBuf,
    },
    /// A named file of a peer's directory moved to a free name; see
    /// [`rename`].
    Rename {
        handle: u64,
        from: PathBuf,
        to: PathBuf,
    },
}

/// What the thread says back about a job.
enum Done {
    Written {
        data: Vec<u8>,
        failed: Option<Finished>,
    },
    Finished(Finished),
    Quiet,
}

/// What the node is to hear of the thread's work.
#[derive(Debug, PartialEq, Eq)]
pub enum Finished {
    WriteFailed {
        temp: u64,
        opening: u64,
        failure: FileFailure,
    },
    Persisted {
        temp: u64,
        result: Result<(), FileFailure>,
    },
    Renamed {
        handle: u64,
        result: Result<(), FileFailure>,
    },
}

/// The thread's memory: the first failed write of each temporary file
/// not yet persisted or discarded.
#[derive(Default)]
struct Worker {
    failed: HashMap<u64, FileFailure>,
    #[cfg(test)]
    gate: Option<Arc<Gate>>,
}

pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    done_tx: mpsc::Sender<Done>,
    /// Jobs submitted and not yet done.
    in_flight: usize,
    bytes: usize,
    finished: VecDeque<Finished>,
    /// Buffers of finished jobs, for reuse.
    spare: Vec<Vec<u8>>,
    wake: Option<Wake>,
    /// Set by the thread when it wakes the driver, cleared when the driver
    /// takes what is done: one wake (a syscall, and a turn of the driver's
    /// loop) for all that finishes meanwhile, not one per file.
    woken: Arc<AtomicBool>,
    /// Jobs queued and jobs done, ever: they finish in the order queued.
    queued: u64,
    done_count: u64,
    /// The last write queued of each temporary file, by its place in the
    /// queue (see [`Writer::wait_writes_of`]).
    last_write: HashMap<u64, u64>,
    /// Used when the thread cannot be started: jobs then run at once.
    inline: Worker,
    #[cfg(test)]
    gate: Option<Arc<Gate>>,
}

impl Default for Writer {
    fn default() -> Self {
        let (done_tx, done) = mpsc::channel();
        Writer {
            jobs: None,
            done,
            done_tx,
            in_flight: 0,
            bytes: 0,
            finished: VecDeque::new(),
            spare: Vec::new(),
            wake: None,
            woken: Arc::new(AtomicBool::new(false)),
            queued: 0,
            done_count: 0,
            last_write: HashMap::new(),
            inline: Worker::default(),
            #[cfg(test)]
            gate: None,
        }
    }
}

impl Writer {
    pub fn set_wake(&mut self, wake: Wake) {
        self.wake = Some(wake);
    }

    /// Queues a write of `data` at `offset` of `temp`'s `file` (its
    /// `opening`).
    pub fn submit(
        &mut self,
        temp: u64,
        opening: u64,
        file: &Arc<File>,
        offset: u64,
        data: Vec<u8>,
        writeback: Option<(u64, u64)>,
    ) {
        while self.bytes > MAX_IN_FLIGHT && self.reap_one() {}
        self.bytes += data.len();
        self.queue(Job::Write {
            temp,
            opening,
            file: Arc::clone(file),
            offset,
            data,
            writeback,
        });
        self.last_write.insert(temp, self.queued);
    }

    /// Waits until every write queued of temporary file `temp` is done
    /// (and what was queued before them: one queue), so that a read of
    /// the file sees them. Nothing else is waited for.
    pub fn wait_writes_of(&mut self, temp: u64) {
        let Some(&last) = self.last_write.get(&temp) else {
            return;
        };
        while self.done_count < last && self.reap_one() {}
        if self.done_count >= last {
            self.last_write.remove(&temp);
        }
    }

    /// Queues the persist of a temporary file, after its writes. Its
    /// answer comes back as [`Finished::Persisted`].
    pub fn persist(&mut self, placing: Placing) {
        self.last_write.remove(&placing.temp);
        self.queue(Job::Persist(placing));
    }

    /// Persists a temporary file after its writes, and waits for it.
    pub fn persist_and_wait(&mut self, placing: Placing) -> Result<(), FileFailure> {
        let temp = placing.temp;
        self.persist(placing);
        self.wait_idle();
        let mut result = None;
        self.finished.retain(|f| match f {
            Finished::Persisted { temp: t, result: r } if *t == temp && result.is_none() => {
                result = Some(r.clone());
                false
            }
            _ => true,
        });
        result.unwrap_or_else(|| {
            Err(FileFailure::other(format!(
                "temporary file {temp}: the writer thread did not answer"
            )))
        })
    }

    /// Forgets a discarded temporary file's failed writes, after its
    /// writes (the driver unlinks the file itself, at once).
    pub fn forget(&mut self, temp: u64) {
        self.last_write.remove(&temp);
        self.queue(Job::Forget { temp });
    }

    /// Queues the removal of a file, after what was asked before.
    pub fn remove(&mut self, path: PathBuf) {
        self.queue(Job::Remove { path });
    }

    /// Queues the rename of a peer's file, after what was asked before (a
    /// persist of `from` among it). Its answer comes back as
    /// [`Finished::Renamed`].
    pub fn rename(&mut self, handle: u64, from: PathBuf, to: PathBuf) {
        self.queue(Job::Rename { handle, from, to });
    }

    /// With the thread unavailable (it could not be started), runs the job
    /// at once.
    fn queue(&mut self, job: Job) {
        let job = match self.sender() {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    self.queued += 1;
                    return;
                }
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let mut group = Group::default();
        let (done, dir) = self.inline.run(job);
        group.hold(done, dir);
        let done = group.close().pop().unwrap_or(Done::Quiet);
        self.in_flight += 1;
        self.queued += 1;
        self.finished(done);
    }

    fn sender(&mut self) -> Option<&mpsc::Sender<Job>> {
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let done = self.done_tx.clone();
            let wake = self.wake.clone();
            let woken = Arc::clone(&self.woken);
            let mut worker = Worker {
                failed: HashMap::new(),
                #[cfg(test)]
                gate: self.gate.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("ferry-writer".into())
                .spawn(move || {
                    let answer = |dones: Vec<Done>| {
                        let tell = dones.iter().any(Done::is_news);
                        for d in dones {
                            if done.send(d).is_err() {
                                return false;
                            }
                        }
                        // Sent before the flag is looked at: a driver that
                        // cleared it drains after, and sees these.
                        if let (true, Some(wake)) = (tell, &wake) {
                            if !woken.swap(true, Ordering::SeqCst) {
                                wake();
                            }
                        }
                        true
                    };
                    let mut group = Group::default();
                    loop {
                        let job = match group.is_empty() {
                            true => rx.recv().ok(),
                            false => match rx.try_recv() {
                                Ok(job) => Some(job),
                                // Nothing more queued: the group is done.
                                Err(mpsc::TryRecvError::Empty) => {
                                    if !answer(group.close()) {
                                        return;
                                    }
                                    continue;
                                }
                                Err(mpsc::TryRecvError::Disconnected) => None,
                            },
                        };
                        let Some(job) = job else {
                            answer(group.close());
                            return;
                        };
                        let (finished, dir) = worker.run(job);
                        if dir.is_none() && group.is_empty() {
                            if !answer(vec![finished]) {
                                return;
                            }
                            continue;
                        }
                        group.hold(finished, dir);
                        if group.len() >= GROUP_MAX && !answer(group.close()) {
                            return;
                        }
                    }
                });
            match spawned {
                Ok(_) => self.jobs = Some(tx),
                Err(e) => tracing::warn!("cannot start the file writer thread: {e}"),
            }
        }
        self.jobs.as_ref()
    }

    /// A buffer to fill, from finished jobs if any.
    pub fn buffer(&mut self) -> Vec<u8> {
        self.reap();
        self.spare.pop().unwrap_or_default()
    }

    /// Collects finished jobs without waiting.
    pub fn reap(&mut self) {
        // Cleared before the queue is drained: what the thread sends after
        // this wakes the driver again.
        self.woken.store(false, Ordering::SeqCst);
        while let Ok(done) = self.done.try_recv() {
            self.finished(done);
        }
    }

    /// Waits for one job to finish; false if none is in flight.
    fn reap_one(&mut self) -> bool {
        if self.in_flight == 0 {
            return false;
        }
        match self.done.recv() {
            Ok(done) => {
                self.finished(done);
                true
            }
            Err(_) => false,
        }
    }

    fn finished(&mut self, done: Done) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.done_count += 1;
        match done {
            Done::Written { mut data, failed } => {
                self.bytes = self.bytes.saturating_sub(data.len());
                self.finished.extend(failed);
                // Only gathering buffers are worth keeping; a node's own
                // frames are dropped.
                if self.spare.len() < 16 && data.capacity() >= super::buffers::COALESCE {
                    data.clear();
                    self.spare.push(data);
                }
            }
            Done::Finished(f) => self.finished.push_back(f),
            Done::Quiet => {}
        }
    }

    /// Waits until every job submitted is done.
    pub fn wait_idle(&mut self) {
        while self.reap_one() {}
    }

    /// What the node is to hear, oldest first.
    pub fn take_finished(&mut self) -> Option<Finished> {
        self.reap();
        self.finished.pop_front()
    }

    /// Takes the first failed write of this opening of `temp` not yet
    /// taken, and drops any others of it.
    pub fn take_write_failure(&mut self, temp: u64, opening: u64) -> Option<FileFailure> {
        self.reap();
        let mut first = None;
        self.finished.retain(|f| match f {
            Finished::WriteFailed {
                temp: t,
                opening: o,
                failure,
            } if *t == temp && *o == opening => {
                if first.is_none() {
                    first = Some(failure.clone());
                }
                false
            }
            _ => true,
        });
        first
    }

    /// Holds every persist until the gate opens (for tests of what goes on
    /// meanwhile). Must be called before the first job.
    #[cfg(test)]
    pub fn hold_persists(&mut self) -> Arc<Gate> {
        let gate = Arc::new(Gate::default());
        self.gate = Some(Arc::clone(&gate));
        self.inline.gate = Some(Arc::clone(&gate));
        gate
    }
}

impl Worker {
    /// Carries out `job`; what it did is durable once the directory
    /// returned, if any, is synced (see [`Group`]).
    fn run(&mut self, job: Job) -> (Done, Option<PathBuf>) {
        match job {
            Job::Write {
                temp,
                opening,
                file,
                offset,
                data,
                writeback,
            } => {
                let failed = match file.write_all_at(&data, offset) {
                    Ok(()) => {
                        if let Some((from, len)) = writeback {
                            super::start_writeback(&file, from, len);
                        }
                        None
                    }
                    Err(e) => {
                        let failure = FileFailure {
                            error: format!("write failed: {e}"),
                            no_space: is_no_space(&e),
                            missing: false,
                        };
                        self.failed.entry(temp).or_insert_with(|| failure.clone());
                        Some(Finished::WriteFailed {
                            temp,
                            opening,
                            failure,
                        })
                    }
                };
                (Done::Written { data, failed }, None)
            }
            Job::Persist(placing) => {
                #[cfg(test)]
                if let Some(gate) = &self.gate {
                    gate.pass();
                }
                let temp = placing.temp;
                let (result, dir) = match self.failed.remove(&temp) {
                    Some(failure) => {
                        if placing.existing == Existing::Link {
                            remove_quietly(&placing.from);
                        }
                        (Err(failure), None)
                    }
                    None => Synced::split(place(placing)),
                };
                (Done::Finished(Finished::Persisted { temp, result }), dir)
            }
            Job::Forget { temp } => {
                self.failed.remove(&temp);
                (Done::Quiet, None)
            }
            Job::Remove { path } => {
                remove_quietly(&path);
                (Done::Quiet, None)
            }
            Job::Rename { handle, from, to } => {
                let (result, dir) = Synced::split(rename(&from, &to));
                (Done::Finished(Finished::Renamed { handle, result }), dir)
            }
        }
    }
}

/// When what a job did is durable.
enum Synced {
    /// Already (or nothing was done).
    Now,
    /// Once this directory, whose entries it changed, is synced.
    After(PathBuf),
}

impl Synced {
    /// Once the directory holding `path` is synced.
    fn after(path: &Path) -> Synced {
        match path.parent() {
            Some(dir) => Synced::After(dir.to_path_buf()),
            None => Synced::Now,
        }
    }

    fn split(r: Result<Synced, FileFailure>) -> (Result<(), FileFailure>, Option<PathBuf>) {
        match r {
            Ok(Synced::Now) => (Ok(()), None),
            Ok(Synced::After(dir)) => (Ok(()), Some(dir)),
            Err(e) => (Err(e), None),
        }
    }
}

/// Jobs done whose answers wait for their directories' `fsync`: one for
/// all the files moved into a directory while jobs kept coming (a batch
/// of small files lands several at a time), instead of one each. On a
/// journalling filesystem each is a commit of the journal. Every answer
/// still waits for the sync that makes its file's name durable; the
/// answers of jobs that needed none wait too, so that answers keep the
/// jobs' order (a rename asked after a persist is answered after it: the
/// contract of `ferry_core::io`, held by the conformance suite). Closed
/// when the queue is empty, or at [`GROUP_MAX`] jobs, which bounds how
/// long an answer waits for the others': a stream of small downloads
/// keeps the queue busy, and the sender waits for each file's DONE ACK.
#[derive(Default)]
struct Group {
    held: Vec<(Done, Option<PathBuf>)>,
}

/// Jobs held in a group at most.
const GROUP_MAX: usize = 16;

impl Group {
    fn is_empty(&self) -> bool {
        self.held.is_empty()
    }

    fn len(&self) -> usize {
        self.held.len()
    }

    fn hold(&mut self, done: Done, dir: Option<PathBuf>) {
        self.held.push((done, dir));
    }

    /// Syncs each directory once, and gives the answers, in order; those
    /// of a directory that failed to sync fail with it.
    fn close(&mut self) -> Vec<Done> {
        let mut failed: HashMap<PathBuf, Option<FileFailure>> = HashMap::new();
        for dir in self.held.iter().filter_map(|(_, d)| d.as_ref()) {
            if !failed.contains_key(dir) {
                let result = sync_dir(dir).err();
                let failure = result.map(|e| io_failure("cannot make durable", dir, &e));
                failed.insert(dir.clone(), failure);
            }
        }
        let held = std::mem::take(&mut self.held);
        held.into_iter()
            .map(|(mut done, dir)| {
                if let Some(Some(failure)) = dir.and_then(|d| failed.get(&d)) {
                    done.fail_unsynced(failure);
                }
                done
            })
            .collect()
    }
}

impl Done {
    /// Whether the driver is to hear of it (and be woken for it).
    fn is_news(&self) -> bool {
        matches!(
            self,
            Done::Finished(_)
                | Done::Written {
                    failed: Some(_),
                    ..
                }
        )
    }

    /// Its directory could not be synced: a success is a failure.
    fn fail_unsynced(&mut self, failure: &FileFailure) {
        if let Done::Finished(
            Finished::Persisted { result, .. } | Finished::Renamed { result, .. },
        ) = self
        {
            if result.is_ok() {
                *result = Err(failure.clone());
            }
        }
    }
}

/// Makes the temporary file durable and moves it into place durably; see
/// [`Existing`] for a target that is there.
fn place(p: Placing) -> Result<Synced, FileFailure> {
    if p.existing == Existing::Link {
        let from = p.from.clone();
        let linked = link(p);
        remove_quietly(&from);
        return linked;
    }
    if matches!(p.existing, Existing::Refuse | Existing::ReplaceRegular) {
        return place_download(p);
    }
    if p.existing == Existing::Keep {
        return keep(p);
    }
    let synced = durable(&p.file, &p.from, p.modified, p.mode);
    // The descriptor is done with, whatever happens next.
    drop(p.file);
    synced?;
    std::fs::rename(&p.from, &p.to).map_err(|e| io_failure("cannot move into place", &p.to, &e))?;
    Ok(Synced::after(&p.to))
}

/// Above this size, a blob's target is looked for before the temporary
/// file is made durable (an `fsync` of a large file saved); below, the
/// look (a walk of the path, as long as the rest of the placing on tmpfs)
/// costs more than it saves, a new blob being the rule.
const LOOK_FIRST: u64 = 1 << 20;

/// A blob into place, unless the same content is there already
/// ([`Existing::Keep`]): then the temporary file goes. The rename never
/// replaces (the kernel checks the name), so a blob put there meanwhile,
/// by a copy say, is kept just the same.
fn keep(p: Placing) -> Result<Synced, FileFailure> {
    let large = p.file.metadata().map_or(true, |m| m.len() > LOOK_FIRST);
    if large && p.to.is_file() {
        drop(p.file);
        remove_quietly(&p.from);
        return Ok(Synced::Now);
    }
    let synced = durable(&p.file, &p.from, p.modified, p.mode);
    drop(p.file);
    synced?;
    match rename_noreplace(&p.from, &p.to) {
        Ok(()) => Ok(Synced::after(&p.to)),
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            remove_quietly(&p.from);
            Ok(Synced::Now)
        }
        Err(e) => Err(io_failure("cannot move into place", &p.to, &e)),
    }
}

/// A download's file into place: see [`Existing::Refuse`] and
/// [`Existing::ReplaceRegular`], and *The client's disk* in the module
/// docs of [`super`].
fn place_download(p: Placing) -> Result<Synced, FileFailure> {
    let exists = || {
        FileFailure::other(format!(
            "{} exists (use --force to replace it)",
            p.to.display()
        ))
    };
    let replace = p.existing == Existing::ReplaceRegular;
    let target = if replace {
        local::replaceable(&p.to).map_err(FileFailure::other)?
    } else if p.to.symlink_metadata().is_ok() {
        // Refused without the cost of an fsync; the kernel refuses a name
        // taken later.
        return Err(exists());
    } else {
        local::Target::Absent
    };
    // Before the fsync, so that the owner and mode are durable with the
    // bytes, and before the name shows the file. A named partial file was
    // private (0600) while partial: a new file takes a new file's mode.
    if !p.unnamed && !matches!(target, local::Target::Regular { .. }) {
        local::set_new_file_mode(&p.file, &p.to).map_err(FileFailure::other)?;
    }
    local::keep_owner_and_mode(&p.file, &p.to, &target).map_err(FileFailure::other)?;
    // A replaced file keeps its mode (docs/security.md, "the client's
    // disk"): a private file stays private whatever the download's own
    // mode, which a new file gets.
    let mode = match target {
        local::Target::Regular { .. } => None,
        local::Target::Absent | local::Target::Link => p.mode,
    };
    durable(&p.file, &p.from, p.modified, mode)?;
    let placed = if !replace {
        match p.unnamed {
            true => local::link_unnamed(&p.file, &p.to),
            false => rename_noreplace(&p.from, &p.to),
        }
        .map_err(|e| match e.kind() {
            ErrorKind::AlreadyExists => exists(),
            _ => io_failure("cannot move into place", &p.to, &e),
        })
    } else {
        replace_entry(&p)
    };
    drop(p.file);
    placed?;
    Ok(Synced::after(&p.to))
}

/// Renames the download onto its destination's entry (an unnamed file is
/// first linked in under its partial name). The destination is looked at
/// again just before: `rename` replaces the directory entry, whatever it
/// holds, and never writes through it, but a FIFO or a device put there
/// since the download began is not this command's to remove.
fn replace_entry(p: &Placing) -> Result<(), FileFailure> {
    if p.unnamed {
        remove_quietly(&p.from);
        local::link_unnamed(&p.file, &p.from)
            .map_err(|e| io_failure("cannot link into place", &p.from, &e))?;
    }
    let renamed = local::replaceable(&p.to)
        .map_err(FileFailure::other)
        .and_then(|_| {
            std::fs::rename(&p.from, &p.to)
                .map_err(|e| io_failure("cannot move into place", &p.to, &e))
        });
    if renamed.is_err() && p.unnamed {
        remove_quietly(&p.from);
    }
    renamed
}

/// Makes the temporary file durable and links it in under its name; see
/// [`Existing::Link`].
fn link(p: Placing) -> Result<Synced, FileFailure> {
    let name = file_name(&p.to);
    // Taken already: refused without the cost of an fsync (the link below
    // still refuses a name taken meanwhile).
    if p.to.symlink_metadata().is_ok() {
        return Err(FileFailure::exists(&name));
    }
    let synced = durable(&p.file, &p.from, p.modified, p.mode);
    drop(p.file);
    synced?;
    match std::fs::hard_link(&p.from, &p.to) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(FileFailure::exists(&name)),
        Err(e) => return Err(io_failure("cannot link into place", &p.to, &e)),
    }
    Ok(Synced::after(&p.to))
}

/// Gives the temporary file its mode and modification time, if it has
/// them, and makes it durable. The time is set first: on the file, not on its name,
/// so the name it is linked or renamed in under shows it from the moment
/// it appears (a name shares its inode), and the `fsync` makes the time
/// durable with the bytes. After the file's writes, which would move it.
fn durable(
    file: &File,
    path: &Path,
    modified: Option<SystemTime>,
    mode: Option<u32>,
) -> Result<(), FileFailure> {
    // Exactly these bits, whatever the umask: they are the source's, not
    // a default's.
    if let Some(mode) = mode {
        use std::os::unix::fs::PermissionsExt;
        let perms = std::fs::Permissions::from_mode(mode & ferry_core::FileAttrs::MODE_BITS);
        file.set_permissions(perms)
            .map_err(|e| io_failure("cannot set the mode of", path, &e))?;
    }
    if let Some(time) = modified {
        file.set_modified(time)
            .map_err(|e| io_failure("cannot set the modification time of", path, &e))?;
    }
    file.sync_all().map_err(|e| FileFailure {
        error: format!("cannot make {} durable: {e}", path.display()),
        no_space: is_no_space(&e),
        missing: false,
    })
}

/// Renames a peer's file `from` to `to`, in the one shared directory, and
/// makes the rename durable (`fsync` of the directory). Never replaces a
/// file at `to`, not even one put there since the node listed the
/// directory: the kernel refuses a name that is taken, however it came to
/// be taken. Only a regular file is renamed (what `List` shows the node):
/// a link, a directory (the temporary files' among them) or a FIFO is
/// refused before anything is touched. Looked at here, on the writer
/// thread, not when asked: a persist queued before may be what puts it
/// there.
fn rename(from: &Path, to: &Path) -> Result<Synced, FileFailure> {
    match std::fs::symlink_metadata(from) {
        Ok(meta) if meta.is_file() => {}
        Ok(_) => {
            return Err(FileFailure::other(format!(
                "cannot rename {}: not a regular file",
                from.display()
            )))
        }
        Err(e) => return Err(io_failure("cannot rename", from, &e)),
    }
    match rename_noreplace(from, to) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => {
            return Err(FileFailure::exists(&file_name(to)))
        }
        Err(e) => return Err(io_failure("cannot rename", from, &e)),
    }
    Ok(Synced::after(to))
}

/// `rename` that fails with `EEXIST` rather than replace (`renameat2` with
/// `RENAME_NOREPLACE`: atomic, and the kernel checks the name). A
/// filesystem that cannot (`EINVAL`) or a kernel without the call
/// (`ENOSYS`, before Linux 3.15) gets [`link_then_unlink`].
#[cfg(target_os = "linux")]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(ErrorKind::InvalidInput))
    };
    let (c_from, c_to) = (c_path(from)?, c_path(to)?);
    // SAFETY: two valid NUL-terminated paths, which renameat2 only reads,
    // during the call.
    let renamed = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            c_from.as_ptr(),
            libc::AT_FDCWD,
            c_to.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if renamed == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        Some(libc::EINVAL | libc::ENOSYS) => link_then_unlink(from, to),
        _ => Err(e),
    }
}

#[cfg(not(target_os = "linux"))]
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    link_then_unlink(from, to)
}

/// A rename that never replaces, where the kernel cannot do it in one
/// call: a link under the new name (which fails if the name is taken, as
/// a persist's does), then the old name removed. Not atomic: a crash
/// between leaves the file under both names, a copy too many, never a file
/// lost. If the old name cannot be removed the new one is, so that a
/// failed rename changes nothing.
pub(super) fn link_then_unlink(from: &Path, to: &Path) -> io::Result<()> {
    std::fs::hard_link(from, to)?;
    if let Err(e) = std::fs::remove_file(from) {
        remove_quietly(to);
        return Err(e);
    }
    Ok(())
}

/// The last component of `path`, as a name of the shared directory.
fn file_name(path: &Path) -> String {
    path.file_name().map_or_else(
        || path.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    )
}

fn remove_quietly(path: &std::path::Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
    }
}

/// A gate persists wait at until it is opened (tests only).
#[cfg(test)]
#[derive(Default)]
pub struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    pub fn open(&self) {
        if let Ok(mut open) = self.open.lock() {
            *open = true;
        }
        self.opened.notify_all();
    }

    fn pass(&self) {
        let Ok(mut open) = self.open.lock() else {
            return;
        };
        while !*open {
            open = match self.opened.wait(open) {
                Ok(open) => open,
                Err(_) => return,
            };
        }
    }
}

#[cfg(test)]
mod group_tests {
    use super::*;

    fn persisted(temp: u64) -> Done {
        Done::Finished(Finished::Persisted {
            temp,
            result: Ok(()),
        })
    }

    fn results(dones: &[Done]) -> Vec<(u64, bool)> {
        (dones.iter())
            .filter_map(|d| match d {
                Done::Finished(Finished::Persisted { temp, result }) => {
                    Some((*temp, result.is_ok()))
                }
                _ => None,
            })
            .collect()
    }

    fn placing(dir: &Path, temp: u64, content: &[u8], to: &Path) -> Placing {
        let from = dir.join(format!("tmp-{temp}"));
        std::fs::write(&from, content).expect("a temporary file");
        let file = File::options().write(true).open(&from).expect("open it");
        Placing {
            temp,
            file: Arc::new(file),
            from,
            to: to.to_path_buf(),
            existing: Existing::Keep,
            modified: None,
            mode: None,
            unnamed: false,
        }
    }

    #[test]
    fn a_blob_there_already_is_kept_and_the_second_copy_goes() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let blob = dir.path().join("blob");
        let first = placing(dir.path(), 1, b"same", &blob);
        assert!(matches!(place(first), Ok(Synced::After(d)) if d == dir.path()));
        let second = placing(dir.path(), 2, b"other bytes", &blob);
        assert!(matches!(place(second), Ok(Synced::Now)));
        assert_eq!(std::fs::read(&blob).expect("the blob"), b"same");
        assert!(!dir.path().join("tmp-2").exists(), "the second copy went");
        assert!(!dir.path().join("tmp-1").exists(), "the first was moved");
    }

    #[test]
    fn a_group_answers_in_order_and_fails_only_what_a_failed_sync_covers() {
        let dir = tempfile::tempdir().expect("temporary directory");
        let gone = dir.path().join("gone");
        let mut group = Group::default();
        group.hold(persisted(1), Some(dir.path().to_path_buf()));
        group.hold(Done::Quiet, None);
        group.hold(persisted(2), Some(gone.clone()));
        group.hold(persisted(3), Some(dir.path().to_path_buf()));
        group.hold(persisted(4), None);
        let dones = group.close();
        assert!(group.is_empty());
        assert_eq!(dones.len(), 5);
        assert_eq!(
            results(&dones),
            [(1, true), (2, false), (3, true), (4, true)]
        );
        let Done::Finished(Finished::Persisted { result: Err(e), .. }) = &dones[2] else {
            panic!("the file in a directory that cannot be synced fails");
        };
        assert!(e.error.contains("cannot make durable"), "{}", e.error);
    }
}
