//! The disk work that waits, on a thread of its own: writes into temporary
//! files, and what the node asked for after them, in the same order
//! (persisting, discarding, removing).
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
//! `Remove` asked for after a `Persist` happens after it. Reads bypass the
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
//! **Answers.** A failed write and a finished persist are queued as
//! [`Finished`] and wake the driver, which takes them
//! ([`Writer::take_finished`]). A write failure names the opening of the
//! temporary file it belongs to, so it is never taken for one of a later
//! file of the same number. The thread also remembers a file's first failed
//! write, so its persist fails with it however the driver was told.

use super::{io_failure, is_no_space, sync_dir, FileFailure};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{mpsc, Arc};

/// Bytes submitted and not yet written, at most.
pub const MAX_IN_FLIGHT: usize = 4 << 20;

/// Tells the driver that an answer is waiting (from the writer thread).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

/// What to do when a persist's target exists.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Existing {
    /// Replace it.
    Replace,
    /// Keep it and drop this copy: a blob is named by its content, so the
    /// one there is the same bytes, complete and durable.
    Keep,
    /// Fail: the user did not ask to overwrite.
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
    }

    /// Queues the persist of a temporary file, after its writes. Its
    /// answer comes back as [`Finished::Persisted`].
    pub fn persist(&mut self, placing: Placing) {
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
        self.queue(Job::Forget { temp });
    }

    /// Queues the removal of a file, after what was asked before.
    pub fn remove(&mut self, path: PathBuf) {
        self.queue(Job::Remove { path });
    }

    /// With the thread unavailable (it could not be started), runs the job
    /// at once.
    fn queue(&mut self, job: Job) {
        let job = match self.sender() {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    self.in_flight += 1;
                    return;
                }
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let done = self.inline.run(job);
        self.in_flight += 1;
        self.finished(done);
    }

    fn sender(&mut self) -> Option<&mpsc::Sender<Job>> {
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let done = self.done_tx.clone();
            let wake = self.wake.clone();
            let mut worker = Worker {
                failed: HashMap::new(),
                #[cfg(test)]
                gate: self.gate.clone(),
            };
            let spawned = std::thread::Builder::new()
                .name("ferry-writer".into())
                .spawn(move || {
                    for job in rx {
                        let finished = worker.run(job);
                        let tell = matches!(
                            finished,
                            Done::Finished(_)
                                | Done::Written {
                                    failed: Some(_),
                                    ..
                                }
                        );
                        if done.send(finished).is_err() {
                            return;
                        }
                        if let (true, Some(wake)) = (tell, &wake) {
                            wake();
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
    fn run(&mut self, job: Job) -> Done {
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
                Done::Written { data, failed }
            }
            Job::Persist(placing) => {
                #[cfg(test)]
                if let Some(gate) = &self.gate {
                    gate.pass();
                }
                let temp = placing.temp;
                let result = match self.failed.remove(&temp) {
                    Some(failure) => {
                        if placing.existing == Existing::Link {
                            remove_quietly(&placing.from);
                        }
                        Err(failure)
                    }
                    None => place(placing),
                };
                Done::Finished(Finished::Persisted { temp, result })
            }
            Job::Forget { temp } => {
                self.failed.remove(&temp);
                Done::Quiet
            }
            Job::Remove { path } => {
                remove_quietly(&path);
                Done::Quiet
            }
        }
    }
}

/// Makes the temporary file durable and moves it into place durably; see
/// [`Existing`] for a target that is there.
fn place(p: Placing) -> Result<(), FileFailure> {
    if p.existing == Existing::Link {
        let from = p.from.clone();
        let linked = link(p);
        remove_quietly(&from);
        return linked;
    }
    if p.existing == Existing::Keep && p.to.is_file() {
        drop(p.file);
        remove_quietly(&p.from);
        return Ok(());
    }
    let synced = p.file.sync_all();
    // The descriptor is done with, whatever happens next.
    drop(p.file);
    synced.map_err(|e| FileFailure {
        error: format!("cannot make {} durable: {e}", p.from.display()),
        no_space: is_no_space(&e),
        missing: false,
    })?;
    if p.existing == Existing::Refuse && p.to.symlink_metadata().is_ok() {
        return Err(FileFailure::other(format!(
            "{} exists (use --force to replace it)",
            p.to.display()
        )));
    }
    std::fs::rename(&p.from, &p.to).map_err(|e| io_failure("cannot move into place", &p.to, &e))?;
    if let Some(dir) = p.to.parent() {
        sync_dir(dir).map_err(|e| io_failure("cannot make durable", dir, &e))?;
    }
    Ok(())
}

/// Makes the temporary file durable and links it in under its name; see
/// [`Existing::Link`].
fn link(p: Placing) -> Result<(), FileFailure> {
    let name = p.to.file_name().map_or_else(
        || p.to.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    // Taken already: refused without the cost of an fsync (the link below
    // still refuses a name taken meanwhile).
    if p.to.symlink_metadata().is_ok() {
        return Err(FileFailure::exists(&name));
    }
    let synced = p.file.sync_all();
    drop(p.file);
    synced.map_err(|e| FileFailure {
        error: format!("cannot make {} durable: {e}", p.from.display()),
        no_space: is_no_space(&e),
        missing: false,
    })?;
    match std::fs::hard_link(&p.from, &p.to) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::AlreadyExists => return Err(FileFailure::exists(&name)),
        Err(e) => return Err(io_failure("cannot link into place", &p.to, &e)),
    }
    if let Some(dir) = p.to.parent() {
        sync_dir(dir).map_err(|e| io_failure("cannot make durable", dir, &e))?;
    }
    Ok(())
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
