//! The driver's execution of `Output::File`: answers come back in output
//! order, interleaved with `Persisted`, one input per drain, except a
//! server's file persist, whose answer comes when the disk is done; reads
//! are answered with the file's bytes; a driver without a file executor
//! stops.

use ferry_core::store::{Batch, MemStore};
use ferry_core::{FileOp, FileRef, Input, Node, Output, Timestamp};
use ferry_runtime_smol::{Driver, DriverError, Files};
use std::collections::VecDeque;
use std::fmt;
use std::ops::ControlFlow;

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    Persisted(u64),
    Read { handle: u64, data: Vec<u8> },
    FilePersisted(u64),
    Failed { handle: u64, no_space: bool },
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Emits a scripted list of outputs and reports every input as an event.
struct Script {
    out: VecDeque<Output<Seen>>,
    /// Outputs to emit after the first `FilePersisted`.
    then: Vec<Output<Seen>>,
}

impl Node for Script {
    type Event = Seen;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        let seen = match input {
            Input::Persisted { token } => Seen::Persisted(token),
            Input::FileRead { handle, data, .. } => Seen::Read {
                handle,
                data: data.to_vec(),
            },
            Input::FilePersisted { temp } => Seen::FilePersisted(temp),
            Input::FileFailed {
                handle, no_space, ..
            } => Seen::Failed { handle, no_space },
            _ => return,
        };
        let persisted = matches!(seen, Seen::FilePersisted(_));
        self.out.push_back(Output::Event(seen));
        if persisted {
            self.out.extend(std::mem::take(&mut self.then));
        }
    }

    fn handle_timeout(&mut self, _now: Timestamp) {}

    fn poll_output(&mut self) -> Option<Output<Seen>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}

fn run(driver: &mut Driver<Script>, want: usize) -> (Vec<Seen>, Result<(), DriverError>) {
    let mut seen = Vec::new();
    let result = driver.run_until(|e| {
        seen.push(e);
        if seen.len() == want {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (seen, result)
}

/// A driver of a node that emits `out` and nothing more, with `files`.
fn scripted(out: VecDeque<Output<Seen>>, files: Files) -> Driver<Script> {
    Driver::new(Script {
        out,
        then: Vec::new(),
    })
    .with_files(files)
}

#[test]
fn file_answers_come_back_in_output_order_and_a_persist_when_done() {
    let dir = tempfile::tempdir().unwrap();
    let (files, present) = Files::server(dir.path()).unwrap();
    assert!(present.is_empty());
    let content = b"some content".to_vec();
    let d = *blake3::hash(&content).as_bytes();
    let out = VecDeque::from(vec![
        Output::File(FileOp::Write {
            temp: 1,
            offset: 0,
            data: content.clone(),
        }),
        Output::Persist {
            token: 7,
            batch: Batch::default(),
        },
        Output::File(FileOp::Persist {
            temp: 1,
            to: FileRef::Blob(d),
        }),
        Output::File(FileOp::Read {
            handle: 3,
            file: FileRef::Blob([9; 32]),
            offset: 0,
            len: 100,
        }),
    ]);
    // Once told the blob is persisted, the node reads it in place.
    let then = vec![Output::File(FileOp::Read {
        handle: 4,
        file: FileRef::Blob(d),
        offset: 5,
        len: 100,
    })];
    let mut driver = Driver::new(Script { out, then })
        .with_store(Box::new(MemStore::default()))
        .with_files(files);
    let (seen, result) = run(&mut driver, 4);
    assert_eq!(result, Ok(()));
    // The persist's answer comes from the writer thread, after the
    // answers owed for the outputs of the same drain.
    assert_eq!(
        seen,
        vec![
            Seen::Persisted(7),
            Seen::Failed {
                handle: 3,
                no_space: false
            },
            Seen::FilePersisted(1),
            Seen::Read {
                handle: 4,
                data: b"content".to_vec()
            },
        ]
    );
}

#[test]
fn a_persist_that_finishes_later_reaches_the_node_by_itself() {
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = Files::server(dir.path()).unwrap();
    // Large enough that the fsync is usually still going when the driver
    // has nothing left to do; nothing else happens after it, so only the
    // writer thread can make the driver tell the node.
    let content: Vec<u8> = (0..8u32 << 20).map(|i| (i % 251) as u8).collect();
    let d = *blake3::hash(&content).as_bytes();
    let out = VecDeque::from(vec![
        Output::File(FileOp::Write {
            temp: 2,
            offset: 0,
            data: content.clone(),
        }),
        Output::File(FileOp::Persist {
            temp: 2,
            to: FileRef::Blob(d),
        }),
    ]);
    let mut driver = scripted(out, files);
    let (seen, result) = run(&mut driver, 1);
    assert_eq!(result, Ok(()));
    assert_eq!(seen, vec![Seen::FilePersisted(2)]);
    let blob = dir
        .path()
        .join("blobs")
        .join(ferry_runtime_smol::files::hex(&d));
    assert!(std::fs::read(blob).unwrap() == content);
}

#[test]
fn file_work_without_an_executor_stops_the_driver() {
    let out = VecDeque::from(vec![Output::File(FileOp::Discard { temp: 1 })]);
    let mut driver = Driver::new(Script {
        out,
        then: Vec::new(),
    })
    .named("node-3");
    let (seen, result) = run(&mut driver, 1);
    assert!(seen.is_empty());
    let e = result.unwrap_err();
    assert_eq!(
        e.to_string(),
        "node-3 stopped: it asked for file work but has no file storage"
    );
}

#[test]
fn a_write_that_fails_later_reaches_the_node_by_itself() {
    // /dev/full fails every write with ENOSPC.
    if !std::path::Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (files, _) = Files::server(dir.path()).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("tmp/4")).unwrap();
    // Large enough to go to the writer thread at once; nothing else
    // happens after it, so only the writer thread can make the driver
    // tell the node.
    let out = VecDeque::from(vec![Output::File(FileOp::Write {
        temp: 4,
        offset: 0,
        data: vec![0; 1 << 20],
    })]);
    let mut driver = scripted(out, files);
    let (seen, result) = run(&mut driver, 1);
    assert_eq!(result, Ok(()));
    assert_eq!(
        seen,
        vec![Seen::Failed {
            handle: 4,
            no_space: true
        }]
    );
}
