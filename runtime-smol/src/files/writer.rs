//! Writes to temporary files, on a thread of their own.
//!
//! Copying bytes into the page cache is the largest cost of receiving a
//! file (on the development VM, 64 MiB take 0.15 s of system time, as much
//! as a stop-and-wait loop's whole round trips for 2 MiB). Done on the
//! driver's thread, it sits between a chunk's arrival and its ACK; done
//! here, it runs on another core while the transfer goes on.
//!
//! Jobs of one file are written in the order submitted (one thread, one
//! queue). Bytes in flight are bounded: [`Writer::submit`] waits for jobs
//! to finish past [`MAX_IN_FLIGHT`]. A failed job is reported once, by
//! [`Writer::take_failure`] (and wakes the driver so that it asks), or at
//! the latest when the file is waited for ([`Writer::wait_for`]) before
//! its `Persist`.

use super::{is_no_space, FileFailure};
use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{mpsc, Arc};

/// Bytes submitted and not yet written, at most.
pub const MAX_IN_FLIGHT: usize = 4 << 20;

/// Tells the driver that a failure is waiting (from the writer thread).
pub type Wake = Arc<dyn Fn() + Send + Sync>;

struct Job {
    temp: u64,
    file: Arc<File>,
    offset: u64,
    data: Vec<u8>,
    /// A range whose writeback to start once this is written.
    writeback: Option<(u64, u64)>,
    wake: Option<Wake>,
}

struct Done {
    temp: u64,
    error: Option<io::Error>,
    data: Vec<u8>,
}

pub struct Writer {
    jobs: Option<mpsc::Sender<Job>>,
    done: mpsc::Receiver<Done>,
    done_tx: mpsc::Sender<Done>,
    /// Jobs not yet done, per file.
    pending: HashMap<u64, usize>,
    bytes: usize,
    failures: VecDeque<(u64, FileFailure)>,
    /// Buffers of finished jobs, for reuse.
    spare: Vec<Vec<u8>>,
    wake: Option<Wake>,
}

impl Default for Writer {
    fn default() -> Self {
        let (done_tx, done) = mpsc::channel();
        Writer {
            jobs: None,
            done,
            done_tx,
            pending: HashMap::new(),
            bytes: 0,
            failures: VecDeque::new(),
            spare: Vec::new(),
            wake: None,
        }
    }
}

impl Writer {
    pub fn set_wake(&mut self, wake: Wake) {
        self.wake = Some(wake);
    }

    /// Queues a write of `data` at `offset` of `temp`'s `file`. With the
    /// writer thread unavailable (it could not be started), writes at once.
    pub fn submit(
        &mut self,
        temp: u64,
        file: &Arc<File>,
        offset: u64,
        data: Vec<u8>,
        writeback: Option<(u64, u64)>,
    ) {
        while self.bytes > MAX_IN_FLIGHT && self.reap_one() {}
        let len = data.len();
        let job = Job {
            temp,
            file: Arc::clone(file),
            offset,
            data,
            writeback,
            wake: self.wake.clone(),
        };
        let job = match self.sender() {
            Some(tx) => match tx.send(job) {
                Ok(()) => {
                    *self.pending.entry(temp).or_default() += 1;
                    self.bytes += len;
                    return;
                }
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let done = run(job);
        self.record(done);
    }

    fn sender(&mut self) -> Option<&mpsc::Sender<Job>> {
        if self.jobs.is_none() {
            let (tx, rx) = mpsc::channel::<Job>();
            let done = self.done_tx.clone();
            let spawned = std::thread::Builder::new()
                .name("ferry-writer".into())
                .spawn(move || {
                    for job in rx {
                        let wake = job.wake.clone();
                        let finished = run(job);
                        let failed = finished.error.is_some();
                        if done.send(finished).is_err() {
                            return;
                        }
                        if let (true, Some(wake)) = (failed, wake) {
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
        if self.bytes == 0 && self.pending.is_empty() {
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
        if let Some(n) = self.pending.get_mut(&done.temp) {
            *n -= 1;
            if *n == 0 {
                self.pending.remove(&done.temp);
            }
        }
        self.bytes = self.bytes.saturating_sub(done.data.len());
        self.record(done);
    }

    fn record(&mut self, mut done: Done) {
        if let Some(e) = done.error {
            self.failures.push_back((
                done.temp,
                FileFailure {
                    error: format!("write failed: {e}"),
                    no_space: is_no_space(&e),
                },
            ));
        }
        // Only gathering buffers are worth keeping; a node's own frames
        // are dropped.
        if self.spare.len() < 16 && done.data.capacity() >= super::buffers::COALESCE {
            done.data.clear();
            self.spare.push(done.data);
        }
    }

    /// Waits until every write of `temp` is done; returns its first
    /// failure not yet reported, if any.
    pub fn wait_for(&mut self, temp: u64) -> Option<FileFailure> {
        while self.pending.contains_key(&temp) && self.reap_one() {}
        self.reap();
        self.take_failure_of(temp)
    }

    /// Waits until every write is done.
    pub fn wait_all(&mut self) {
        while self.reap_one() {}
    }

    /// A failure not yet reported, of any file.
    pub fn take_failure(&mut self) -> Option<(u64, FileFailure)> {
        self.reap();
        self.failures.pop_front()
    }

    /// Drops the failures of `temp` (it is gone), returning the first.
    pub fn take_failure_of(&mut self, temp: u64) -> Option<FileFailure> {
        let mut first = None;
        self.failures.retain(|(t, f)| {
            if *t != temp {
                return true;
            }
            if first.is_none() {
                first = Some(f.clone());
            }
            false
        });
        first
    }
}

fn run(job: Job) -> Done {
    let error = job.file.write_all_at(&job.data, job.offset).err();
    if let (None, Some((from, len))) = (&error, job.writeback) {
        super::start_writeback(&job.file, from, len);
    }
    Done {
        temp: job.temp,
        error,
        data: job.data,
    }
}
