//! Several drivers in one process (a whole cluster, for `ferry up`), each on
//! a thread of its own: a driver blocks its thread while it waits for its
//! sockets, so drivers cannot share one.

use crate::driver::{Driver, RunResult};
use ferry_core::Node;
use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

/// Drivers running on threads of their own, waited on together.
pub struct Group {
    threads: Vec<Option<JoinHandle<RunResult>>>,
    done_tx: mpsc::Sender<usize>,
    done_rx: mpsc::Receiver<usize>,
}

impl Default for Group {
    fn default() -> Self {
        Self::new()
    }
}

/// Says which thread ended, however it ended (a panic too).
struct Done {
    index: usize,
    tx: mpsc::Sender<usize>,
}

impl Drop for Done {
    fn drop(&mut self) {
        let _ = self.tx.send(self.index);
    }
}

impl Group {
    pub fn new() -> Group {
        let (done_tx, done_rx) = mpsc::channel();
        Group {
            threads: Vec::new(),
            done_tx,
            done_rx,
        }
    }

    /// Runs `driver` on a new thread, named after it.
    pub fn spawn<N>(&mut self, driver: Driver<N>) -> io::Result<()>
    where
        N: Node + Send + 'static,
        N::Event: Send,
    {
        let done = Done {
            index: self.threads.len(),
            tx: self.done_tx.clone(),
        };
        let thread = std::thread::Builder::new()
            .name(driver.name().to_string())
            .spawn(move || {
                let _done = done;
                driver.run()
            })?;
        self.threads.push(Some(thread));
        Ok(())
    }

    /// Waits until the first driver stops and returns its error; a panic
    /// in a driver is raised again here rather than lost with its thread.
    /// The other drivers go on running. With no driver, waits forever.
    pub fn wait(mut self) -> RunResult {
        loop {
            // The group keeps a sender, so this never fails.
            let Ok(index) = self.done_rx.recv() else {
                continue;
            };
            let Some(thread) = self.threads.get_mut(index).and_then(Option::take) else {
                continue;
            };
            match thread.join() {
                Ok(result) => return result,
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
    }
}
