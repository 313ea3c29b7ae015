//! The pump's own promises (crate::io's "order of things"), with a scripted
//! node and a world that writes down what it is asked.

use super::*;
use crate::io::FileRef;
use crate::store::Write;

/// A node that emits what it is given and notes every input it is fed.
#[derive(Default)]
struct Script {
    out: VecDeque<Output<String>>,
    seen: Vec<String>,
}

impl Node for Script {
    type Event = String;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        let seen = match input {
            Input::Persisted { token } => format!("persisted {token}"),
            Input::FileRead { handle, data, .. } => format!("read {handle}: {data:?}"),
            Input::FilePersisted { temp } => format!("file persisted {temp}"),
            Input::FileFailed { handle, .. } => format!("failed {handle}"),
            other => format!("{other:?}"),
        };
        // An answer's own output goes out in the drain after it.
        self.out.push_back(Output::Event(format!("after {seen}")));
        self.seen.push(seen);
    }

    fn handle_timeout(&mut self, _now: Timestamp) {}

    fn poll_output(&mut self) -> Option<Output<String>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}

/// A world that notes what it is asked, answers reads with one byte per
/// handle, and may delay or fail.
#[derive(Default)]
struct Notes {
    log: Vec<String>,
    delay_commits: Duration,
    fail_commits: bool,
    byte: u8,
}

impl World for Notes {
    fn now(&self) -> Timestamp {
        Timestamp::from_micros(0)
    }
    fn transmit(&mut self, conn: ConnId, bytes: Vec<u8>) {
        self.log.push(format!("transmit {conn} {bytes:?}"));
    }
    fn connect(&mut self, conn: ConnId, addr: String) {
        self.log.push(format!("connect {conn} {addr}"));
    }
    fn close(&mut self, conn: ConnId) {
        self.log.push(format!("close {conn}"));
    }
    fn flush(&mut self) {
        self.log.push("flush".into());
    }
    fn commit(&mut self, _batch: &Batch) -> Result<(), HostError> {
        if self.fail_commits {
            return Err(HostError::Store(StoreError("disk on fire".into())));
        }
        self.log.push("commit".into());
        Ok(())
    }
    fn file(&mut self, op: FileOp) -> Result<Option<FileAnswer>, HostError> {
        self.log.push(format!("file {}", file_op_name(&op)));
        Ok(match op {
            FileOp::Read {
                handle,
                offset,
                len,
                ..
            } => Some(FileAnswer::Read {
                handle,
                offset,
                len,
            }),
            _ => None,
        })
    }
    fn read(&mut self, handle: u64, _offset: u64, _len: usize) -> Result<&[u8], FileFailure> {
        self.byte = handle as u8;
        Ok(std::slice::from_ref(&self.byte))
    }
    fn delay(&mut self, work: Work<'_>) -> Duration {
        match work {
            Work::Commit => self.delay_commits,
            _ => Duration::ZERO,
        }
    }
}

fn persist(token: u64) -> Output<String> {
    let mut batch = Batch::default();
    batch.push(Write::SetApplied { index: token });
    Output::Persist { token, batch }
}

fn read(handle: u64) -> Output<String> {
    Output::File(FileOp::Read {
        handle,
        file: FileRef::Blob([0; 32]),
        offset: 0,
        len: 1,
    })
}

fn host(out: Vec<Output<String>>, world: Notes) -> Host<Script, Notes> {
    let node = Script {
        out: out.into(),
        seen: Vec::new(),
    };
    Host::new(node, world)
}

fn settle(h: &mut Host<Script, Notes>) -> Result<Settled<String>, HostError> {
    h.settle(|w, e| {
        w.log.push(format!("event {e}"));
        match e.as_str() {
            "stop" => ControlFlow::Break(e),
            _ => ControlFlow::Continue(()),
        }
    })
}

#[test]
fn answers_are_fed_after_the_drain_in_output_order_each_after_a_flush() {
    let c = ConnId::accepted(1);
    let mut h = host(
        vec![
            persist(1),
            read(7),
            Output::Transmit {
                conn: c,
                bytes: vec![9],
            },
            persist(2),
        ],
        Notes::default(),
    );
    assert_eq!(settle(&mut h), Ok(Settled::Quiet));
    assert_eq!(
        h.node().seen,
        ["persisted 1", "read 7: [7]", "persisted 2"],
        "every answer, in output order"
    );
    assert_eq!(
        h.world().log,
        [
            "commit",
            "file a read",
            "transmit a1 [9]",
            "commit",
            // The drain is over: what it sent goes out, then each answer
            // is fed and its own drain carried out.
            "flush",
            "event after persisted 1",
            "flush",
            "event after read 7: [7]",
            "flush",
            "event after persisted 2",
            "flush",
        ]
    );
}

#[test]
fn a_world_that_makes_the_node_wait_parks_the_work_and_keeps_a_break() {
    let world = Notes {
        delay_commits: Duration::from_millis(5),
        ..Notes::default()
    };
    let mut h = host(
        vec![Output::Event("stop".into()), persist(1), read(3)],
        world,
    );
    assert_eq!(settle(&mut h), Ok(Settled::Wait(Duration::from_millis(5))));
    assert!(h.is_busy());
    assert!(!h.world().log.contains(&"commit".to_string()), "not yet");
    // The commit is carried out, the drain ends, and the break of the
    // drain that waited is returned; the read waits for the next settle.
    assert_eq!(settle(&mut h), Ok(Settled::Break("stop".to_string())));
    // What the drain sent goes out while the node waits.
    assert_eq!(
        h.world().log,
        ["event stop", "flush", "commit", "file a read", "flush"]
    );
    assert!(h.node().seen.is_empty(), "no answer fed before the break");
    assert_eq!(settle(&mut h), Ok(Settled::Quiet));
    assert_eq!(h.node().seen, ["persisted 1", "read 3: [3]"]);
}

#[test]
fn a_store_that_cannot_commit_stops_everything_after_it() {
    let world = Notes {
        fail_commits: true,
        ..Notes::default()
    };
    let mut h = host(
        vec![
            persist(1),
            Output::Connect {
                conn: ConnId::dialed(1),
                addr: "x:1".into(),
            },
        ],
        world,
    );
    let err = Err(HostError::Store(StoreError("disk on fire".into())));
    assert_eq!(settle(&mut h), err);
    assert_eq!(settle(&mut h), err, "and every time after");
    assert_eq!(h.world().log, ["flush", "flush"], "nothing carried out");
    assert!(h.node().seen.is_empty());
}
