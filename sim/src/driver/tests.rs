//! The disk queue, with a scripted node: what runs while a file
//! `Persist` takes its time, in which order the disk sees the work, and
//! what a crash leaves.

use super::*;
use crate::disk::LocalFile;
use crate::trace::Trace;
use ferry_core::FileRef;
use std::time::UNIX_EPOCH;

const TEMP: u64 = 1;
const OTHER: u64 = 2;
const TICK: Duration = Duration::from_millis(500);

fn blob() -> [u8; 32] {
    *blake3::hash(b"content").as_bytes()
}

/// Emits its script at once, then a timeout every [`TICK`]; writes down
/// every input and timeout, with the time and what `state` says of the
/// disk.
struct Scripted {
    out: VecDeque<Output<String>>,
    next_tick: Option<Timestamp>,
    state: Rc<dyn Fn() -> String>,
    log: Rc<RefCell<Vec<String>>>,
}

impl Scripted {
    fn note(&self, what: &str) {
        let at = turmoil::sim_elapsed().unwrap_or_default().as_millis();
        let line = format!("{at} ms: {what} ({})", (self.state)());
        self.log.borrow_mut().push(line);
    }
}

impl Node for Scripted {
    type Event = String;

    fn handle_input(&mut self, _: Timestamp, input: Input<'_>) {
        let what = match input {
            Input::FilePersisted { temp } => format!("persisted {temp}"),
            Input::FileRead { handle, data, .. } => {
                format!("read {handle}: {} bytes", data.len())
            }
            Input::FileFailed { handle, .. } => format!("read {handle} failed"),
            other => format!("{other:?}"),
        };
        self.note(&what);
    }

    fn handle_timeout(&mut self, now: Timestamp) {
        self.note("tick");
        self.next_tick = Some(now + TICK);
    }

    fn poll_output(&mut self) -> Option<Output<String>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        self.next_tick
    }
}

fn write(temp: u64, data: &[u8]) -> Output<String> {
    Output::File(FileOp::Write {
        temp,
        offset: 0,
        data: data.to_vec(),
    })
}

/// A server's work, in this output order: Write, Persist, a read of the
/// blob, Write of another file, Discard of both, Remove of the blob, an
/// event.
fn server_script() -> VecDeque<Output<String>> {
    VecDeque::from([
        write(TEMP, b"content"),
        Output::File(FileOp::Persist {
            temp: TEMP,
            to: FileRef::Blob(blob()),
        }),
        Output::File(FileOp::Read {
            handle: 9,
            file: FileRef::Blob(blob()),
            offset: 0,
            len: 3,
        }),
        write(OTHER, b"more"),
        Output::File(FileOp::Discard { temp: TEMP }),
        Output::File(FileOp::Discard { temp: OTHER }),
        Output::File(FileOp::Remove {
            file: FileRef::Blob(blob()),
        }),
        Output::Event("outputs after the persist".into()),
    ])
}

/// Runs a scripted node on host "node" with `files` (a persist takes
/// 2 s, a read `read`), crashing it at `crash_at` if given, for 4 s;
/// its log and trace.
fn run(
    files: SimFiles,
    script: fn() -> VecDeque<Output<String>>,
    crash_at: Option<Duration>,
    read: Duration,
) -> (Vec<String>, Trace) {
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(Duration::from_millis(1))
        .simulation_duration(Duration::from_secs(60))
        .build();
    let log = Rc::new(RefCell::new(Vec::new()));
    let trace = Trace::shared();
    let state: Rc<dyn Fn() -> String> = match &files {
        SimFiles::Server(d) => {
            let d = d.clone();
            Rc::new(move || {
                let d = d.borrow();
                let temps: Vec<&u64> = d.temps.keys().collect();
                format!("{} blob, temps {temps:?}", d.blobs.len())
            })
        }
        SimFiles::Client(l) => {
            let l = l.clone();
            Rc::new(move || format!("dest {:?}", l.borrow().dest.as_deref()))
        }
        SimFiles::Peer(d) => {
            let d = d.clone();
            Rc::new(move || format!("{:?}", d.borrow()))
        }
    };
    let (l, t) = (log.clone(), trace.clone());
    sim.host("node", move || {
        let (files, state) = (files.clone(), state.clone());
        let (log, trace) = (l.clone(), t.clone());
        async move {
            let node = Scripted {
                out: script(),
                next_tick: Some(now() + TICK),
                state,
                log,
            };
            let cfg = DriverConfig {
                file_persist_latency: (Duration::from_secs(2), Duration::from_secs(2)),
                read_latency: Rc::new(Cell::new((read, read))),
                ..DriverConfig::default()
            };
            let node = Rc::new(RefCell::new(node));
            let mut driver = Driver::new("node", node, trace, cfg).with_files(files);
            driver.run_forever(|_, _| {}).await;
            Ok(())
        }
    });
    while sim.elapsed() < Duration::from_secs(4) {
        if crash_at.is_some_and(|at| sim.elapsed() >= at) {
            sim.crash("node");
        }
        sim.step().expect("the node runs");
    }
    let trace = trace.borrow().clone();
    drop(sim);
    let log = log.borrow().clone();
    (log, trace)
}

#[test]
fn a_server_runs_while_a_persist_takes_its_time_and_its_disk_keeps_the_order() {
    let disk = crate::disk::shared_disk();
    let (log, trace) = run(
        SimFiles::Server(disk.clone()),
        server_script,
        None,
        Duration::ZERO,
    );
    assert_eq!(
        &log[..6],
        [
            // The read ran at once: the blob was not there yet. The
            // discards too: the other file's write behind the persist
            // is dropped; the file being persisted is left to it.
            "0 ms: read 9 failed (0 blob, temps [1])",
            "500 ms: tick (0 blob, temps [1])",
            "1000 ms: tick (0 blob, temps [1])",
            "1500 ms: tick (0 blob, temps [1])",
            // The Remove behind the Persist ran right after it, in the
            // same step: the node hears of a blob that is gone already.
            "2000 ms: persisted 1 (0 blob, temps [])",
            "2000 ms: tick (0 blob, temps [])",
        ],
        "{log:#?}"
    );
    let d = disk.borrow();
    assert_eq!((d.persisted, d.removed), (1, 1));
    let text = trace.render();
    let event = text.find("outputs after the persist").expect("the event");
    let landed = text.find("on disk").expect("the blob's line");
    assert!(event < landed, "the drain went on meanwhile:\n{text}");
    assert!(text.contains("2.000s node      blob"), "{text}");
}

#[test]
fn a_crash_loses_what_the_disk_had_not_done_and_nothing_runs_afterwards() {
    let disk = crate::disk::shared_disk();
    let crash = Some(Duration::from_secs(1));
    let (log, _) = run(
        SimFiles::Server(disk.clone()),
        server_script,
        crash,
        Duration::ZERO,
    );
    assert!(
        log.iter().all(|l| !l.contains("persisted")),
        "the node was never told: {log:#?}"
    );
    let d = disk.borrow();
    assert!(d.blobs.is_empty() && d.persisted == 0 && d.removed == 0);
    // Only the temporary file being persisted is left (the next start
    // removes it).
    assert_eq!(d.temps.keys().collect::<Vec<_>>(), [&TEMP]);
}

/// runtime-smol reads when it feeds the answer, on the driver's thread:
/// a slow read holds up its node, timers and all, after the drain that
/// asked for it is over; a read of a missing blob fails at once.
#[test]
fn a_slow_read_holds_up_its_node() {
    let script = || {
        let read = |handle, file| {
            Output::File(FileOp::Read {
                handle,
                file,
                offset: 0,
                len: 5,
            })
        };
        VecDeque::from([
            read(1, FileRef::Blob(blob())),
            read(2, FileRef::Blob([0; 32])),
            Output::Event("the drain goes on".into()),
        ])
    };
    let disk = crate::disk::shared_disk();
    disk.borrow_mut()
        .blobs
        .insert(blob(), b"content".to_vec().into());
    let read = Duration::from_millis(1500);
    let (log, trace) = run(SimFiles::Server(disk), script, None, read);
    assert_eq!(
        &log[..4],
        [
            "1500 ms: read 1: 5 bytes (1 blob, temps [])",
            "1500 ms: read 2 failed (1 blob, temps [])",
            "1500 ms: tick (1 blob, temps [])",
            "2000 ms: tick (1 blob, temps [])",
        ],
        "{log:#?}"
    );
    let text = trace.render();
    assert!(
        text.contains("0.000s node      the drain goes on"),
        "{text}"
    );
}

/// runtime-smol's client waits for its own persist, timers and all.
#[test]
fn a_clients_persist_holds_up_its_node() {
    let script = || {
        VecDeque::from([
            write(0, b"abc"),
            Output::File(FileOp::Persist {
                temp: 0,
                to: FileRef::Local,
            }),
        ])
    };
    let (log, _) = run(
        SimFiles::Client(LocalFile::shared()),
        script,
        None,
        Duration::ZERO,
    );
    assert_eq!(
        &log[..3],
        [
            "2000 ms: persisted 0 (dest Some([97, 98, 99]))",
            "2000 ms: tick (dest Some([97, 98, 99]))",
            "2500 ms: tick (dest Some([97, 98, 99]))",
        ],
        "{log:#?}"
    );
}

/// Its deadline never moves, however often its timeout is handled.
struct Stuck(Timestamp);

impl Node for Stuck {
    type Event = String;

    fn handle_input(&mut self, _: Timestamp, _: Input<'_>) {}

    fn handle_timeout(&mut self, _: Timestamp) {}

    fn poll_output(&mut self) -> Option<Output<String>> {
        None
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        Some(self.0)
    }
}

/// The files sweep once hung for good on a node like this one (a copy's
/// stall deadline stayed in the past): the driver now names the bug.
#[test]
#[should_panic(expected = "livelock")]
fn a_node_whose_deadline_never_moves_is_reported_not_spun_on() {
    let mut sim = turmoil::Builder::new()
        .epoch(UNIX_EPOCH + Duration::from_secs(1_800_000_000))
        .tick_duration(Duration::from_millis(1))
        .build();
    sim.host("node", || async {
        let node = Rc::new(RefCell::new(Stuck(now())));
        let mut driver = Driver::new("node", node, Trace::shared(), DriverConfig::default());
        driver.run_forever(|_, _| {}).await;
        Ok(())
    });
    for _ in 0..10 {
        if let Err(e) = sim.step() {
            panic!("{e}");
        }
    }
}

impl crate::tls::TlsRole for Scripted {}
impl crate::tls::TlsRole for Stuck {}
