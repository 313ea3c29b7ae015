//! The conformance suite: the same tests, run against every [`World`]'s
//! disk through the one [`Host`], so that the production disk, the
//! simulator's and the unit tests' all keep the file contract of
//! [`crate::io`]. Each world supplies a [`Fixture`]; its crate's tests call
//! [`run_all`] (or the tests one by one).
//!
//! Every check drives a scripted node through the host, so what is tested
//! is what a node sees: the inputs that come back, in their order.
//!
//! [`run_all`] checks a server's disk (blobs); [`run_shared_dir`], for a
//! world that also supplies a [`DirFixture`], a peer's shared directory
//! (named files, listings, modification times, renames). A world without
//! symbolic links (the in-memory ones) skips the checks of links.

use super::{Host, Settled, World};
use crate::io::{DirEntry, FileFailure, FileOp, FileRef, Input, Node, Output};
use crate::time::Timestamp;
use std::collections::VecDeque;
use std::ops::ControlFlow;

/// What a world's crate provides for the suite.
pub trait Fixture {
    type W: World;

    /// A world with a fresh, empty server disk.
    fn fresh(&mut self) -> Self::W;

    /// Makes every later write to temporary file `temp` fail for lack of
    /// space.
    fn fill_disk(&mut self, world: &mut Self::W, temp: u64);

    /// Waits until the world has finished what it does in the background (a
    /// writer thread, a disk queue), so that its answers are due.
    fn finish(&mut self, world: &mut Self::W);

    /// The node crashes (the world goes, with whatever it had not finished)
    /// and starts again on the same disk: a new world, and the blobs the
    /// start found.
    fn restart(&mut self, world: Self::W) -> (Self::W, Vec<[u8; 32]>);
}

/// What a world's crate provides, besides, for the checks of a peer's
/// shared directory ([`run_shared_dir`]).
pub trait DirFixture: Fixture {
    /// A world for a fresh, empty shared directory.
    fn fresh_shared_dir(&mut self) -> Self::W;

    /// Puts file `name` in the shared directory, as its user would.
    fn place(&mut self, world: &mut Self::W, name: &str, content: &[u8]);

    /// Puts a symbolic link `name` in the shared directory, to a file
    /// outside it. False if the world has no links (the check is skipped).
    fn place_symlink(&mut self, world: &mut Self::W, name: &str) -> bool {
        let _ = (world, name);
        false
    }

    /// How many temporary files the shared directory's world holds now.
    fn temporaries(&mut self, world: &mut Self::W) -> usize;
}

/// A node that emits the file work it is given and notes the inputs.
#[derive(Default)]
struct Script {
    out: VecDeque<FileOp>,
    seen: Vec<Seen>,
    /// What the failures said, in order (for the words a world must use).
    said: Vec<String>,
}

/// An input as the suite compares it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Read {
        handle: u64,
        data: Vec<u8>,
    },
    Persisted {
        temp: u64,
    },
    Failed {
        handle: u64,
        no_space: bool,
        missing: bool,
    },
    Listed {
        handle: u64,
        entries: Vec<DirEntry>,
    },
    Renamed {
        handle: u64,
    },
    Space {
        handle: u64,
        free: Option<u64>,
    },
}

/// A failure that is neither for lack of space nor for a missing file.
const fn refused(handle: u64) -> Seen {
    Seen::Failed {
        handle,
        no_space: false,
        missing: false,
    }
}

impl Node for Script {
    type Event = String;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        self.seen.push(match input {
            Input::FileRead { handle, data, .. } => Seen::Read {
                handle,
                data: data.to_vec(),
            },
            Input::FilePersisted { temp } => Seen::Persisted { temp },
            Input::Listed { handle, entries } => Seen::Listed {
                handle,
                entries: entries.to_vec(),
            },
            Input::Renamed { handle } => Seen::Renamed { handle },
            Input::Space { handle, free } => Seen::Space { handle, free },
            Input::FileFailed {
                handle,
                error,
                no_space,
                missing,
            } => {
                self.said.push(error);
                Seen::Failed {
                    handle,
                    no_space,
                    missing,
                }
            }
            other => panic!("a file world fed {other:?}"),
        });
    }

    fn handle_timeout(&mut self, _now: Timestamp) {}

    fn poll_output(&mut self) -> Option<Output<String>> {
        self.out.pop_front().map(Output::File)
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}

/// A world under test, in the one host.
struct Rig<'f, F: Fixture> {
    fixture: &'f mut F,
    host: Option<Host<Script, F::W>>,
}

impl<'f, F: Fixture> Rig<'f, F> {
    fn new(fixture: &'f mut F) -> Self {
        let world = fixture.fresh();
        Rig {
            fixture,
            host: Some(Host::new(Script::default(), world)),
        }
    }

    fn host(&mut self) -> &mut Host<Script, F::W> {
        self.host.as_mut().expect("a running node")
    }

    /// Carries `ops` out, lets the world finish, and returns what the node
    /// was fed.
    fn run(&mut self, ops: impl IntoIterator<Item = FileOp>) -> Vec<Seen> {
        self.host().node_mut().out.extend(ops);
        self.settle();
        let host = self.host.as_mut().expect("a running node");
        self.fixture.finish(host.world_mut());
        self.settle();
        std::mem::take(&mut self.host().node_mut().seen)
    }

    fn settle(&mut self) {
        loop {
            match self.host().settle(|_, _| ControlFlow::<()>::Continue(())) {
                Ok(Settled::Quiet) => return,
                // A world may make the node wait: the wait is simulated.
                Ok(Settled::Wait(_)) => {}
                Ok(Settled::Break(())) => unreachable!("the script never breaks"),
                Err(e) => panic!("the host stopped: {e}"),
            }
        }
    }

    fn fill_disk(&mut self, temp: u64) {
        let host = self.host.as_mut().expect("a running node");
        self.fixture.fill_disk(host.world_mut(), temp);
    }

    /// Crashes the node and starts it again; the blobs the start found.
    fn restart(&mut self) -> Vec<[u8; 32]> {
        let (_, world) = self.host.take().expect("a running node").into_parts();
        let (world, blobs) = self.fixture.restart(world);
        self.host = Some(Host::new(Script::default(), world));
        blobs
    }

    fn read(&mut self, handle: u64, d: [u8; 32], offset: u64, len: usize) -> Seen {
        self.one(read(handle, d, offset, len))
    }

    fn read_named(&mut self, handle: u64, name: &str, len: usize) -> Seen {
        self.one(FileOp::Read {
            handle,
            file: named(name),
            offset: 0,
            len,
        })
    }

    /// Carries out `op`, which is answered once; the answer.
    fn one(&mut self, op: FileOp) -> Seen {
        let got = self.run([op]);
        match &got[..] {
            [one] => one.clone(),
            other => panic!("one answer, got {other:?}"),
        }
    }

    /// Writes `data` to `temp` in pieces of `piece` bytes and persists it as
    /// the blob its digest names.
    fn store(&mut self, temp: u64, data: &[u8], piece: usize) -> ([u8; 32], Vec<Seen>) {
        let d = digest(data);
        let mut ops = writes(temp, data, piece);
        ops.push(FileOp::Persist {
            temp,
            to: FileRef::Blob(d),
        });
        (d, self.run(ops))
    }
}

/// A shared directory under test.
impl<'f, F: DirFixture> Rig<'f, F> {
    fn shared_dir(fixture: &'f mut F) -> Self {
        let world = fixture.fresh_shared_dir();
        Rig {
            fixture,
            host: Some(Host::new(Script::default(), world)),
        }
    }

    /// The shared directory's listing, as (name, size).
    fn list(&mut self) -> Vec<(String, u64)> {
        let entries = self.listing().into_iter();
        entries.map(|e| (e.name, e.size)).collect()
    }

    /// The shared directory's listing, whole.
    fn listing(&mut self) -> Vec<DirEntry> {
        match self.one(FileOp::List { handle: 77 }) {
            Seen::Listed {
                handle: 77,
                entries,
            } => entries,
            other => panic!("a listing, got {other:?}"),
        }
    }

    /// The modification time the listing gives `name`.
    fn modified_ms(&mut self, name: &str) -> u64 {
        let listing = self.listing();
        match listing.iter().find(|e| e.name == name) {
            Some(e) => e.modified_ms,
            None => panic!("{name} is not in {listing:?}"),
        }
    }

    /// Renames `from` to `to`: the answer, and what it said if it failed.
    fn rename(&mut self, handle: u64, from: &str, to: &str) -> (Seen, Option<String>) {
        self.host().node_mut().said.clear();
        let seen = self.one(rename(handle, from, to));
        (seen, self.host().node_mut().said.pop())
    }

    /// Writes `data` to `temp` in pieces of `piece` bytes and persists it as
    /// `name`.
    fn put(&mut self, temp: u64, name: &str, data: &[u8], piece: usize) -> Vec<Seen> {
        let mut ops = writes(temp, data, piece);
        ops.push(FileOp::Persist {
            temp,
            to: named(name),
        });
        self.run(ops)
    }

    fn place(&mut self, name: &str, content: &[u8]) {
        let host = self.host.as_mut().expect("a running node");
        self.fixture.place(host.world_mut(), name, content);
    }

    fn place_symlink(&mut self, name: &str) -> bool {
        let host = self.host.as_mut().expect("a running node");
        self.fixture.place_symlink(host.world_mut(), name)
    }

    fn temporaries(&mut self) -> usize {
        let host = self.host.as_mut().expect("a running node");
        self.fixture.temporaries(host.world_mut())
    }
}

pub fn digest(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

/// `data` written to `temp` in pieces of `piece` bytes.
fn writes(temp: u64, data: &[u8], piece: usize) -> Vec<FileOp> {
    let piece = piece.max(1);
    data.chunks(piece)
        .enumerate()
        .map(|(i, c)| FileOp::Write {
            temp,
            offset: (i * piece) as u64,
            data: c.to_vec(),
        })
        .collect()
}

fn named(name: &str) -> FileRef {
    FileRef::Named(name.into())
}

fn rename(handle: u64, from: &str, to: &str) -> FileOp {
    FileOp::Rename {
        handle,
        from: named(from),
        to: named(to),
    }
}

fn read(handle: u64, d: [u8; 32], offset: u64, len: usize) -> FileOp {
    FileOp::Read {
        handle,
        file: FileRef::Blob(d),
        offset,
        len,
    }
}

/// Bytes that are not all alike, so a misplaced write shows.
pub fn content(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// Every check of the suite, in turn.
pub fn run_all<F: Fixture>(fixture: &mut F) {
    written_then_persisted_reads_back(fixture);
    a_read_sees_any_offset_and_is_short_only_at_the_end(fixture);
    persisting_onto_a_blob_that_is_there_keeps_it(fixture);
    a_read_of_a_missing_blob_says_missing(fixture);
    a_full_disk_says_no_space_and_nothing_is_persisted(fixture);
    a_crash_between_write_and_persist_leaves_nothing_visible(fixture);
    a_discarded_file_leaves_nothing_behind(fixture);
    a_removed_blob_is_gone_and_removing_twice_is_no_error(fixture);
    answers_come_in_output_order_and_a_remove_never_overtakes_a_persist(fixture);
    a_zero_byte_file_persists_without_writes(fixture);
    a_server_refuses_named_files_and_listings(fixture);
    a_server_disk_tells_its_free_space(fixture);
    a_temporary_file_reads_back_what_was_written_and_takes_more(fixture);
}

/// Every check of a peer's shared directory, in turn.
pub fn run_shared_dir<F: DirFixture>(fixture: &mut F) {
    shared_dir_written_then_persisted_reads_back(fixture);
    shared_dir_persist_never_replaces_a_name(fixture);
    shared_dir_lists_files_sorted_and_hides_temporaries(fixture);
    shared_dir_read_of_a_missing_name_says_missing(fixture);
    shared_dir_refuses_bad_names_and_touches_nothing(fixture);
    shared_dir_refuses_blobs_and_local_files(fixture);
    shared_dir_discard_leaves_nothing(fixture);
    shared_dir_holds_several_temporaries_at_once(fixture);
    shared_dir_remove_removes_the_name(fixture);
    shared_dir_never_follows_a_symlink(fixture);
    shared_dir_persist_keeps_the_modification_time_given(fixture);
    shared_dir_rename_moves_a_file_to_a_free_name(fixture);
    shared_dir_rename_never_replaces_a_name(fixture);
    shared_dir_rename_of_a_missing_name_says_missing(fixture);
    shared_dir_rename_refuses_bad_names_and_touches_nothing(fixture);
}

/// `ferry status` shows each server's free space: a server's disk must
/// say how much there is, as a number, never as a failure.
pub fn a_server_disk_tells_its_free_space<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    match rig.one(FileOp::Space { handle: 5 }) {
        Seen::Space {
            handle: 5,
            free: Some(free),
        } => assert!(free > 0, "a fresh disk has room"),
        other => panic!("the free space, got {other:?}"),
    }
}

/// The kept part of an upload cut off is read back to resume it
/// (`FileRef::Temp`): a read sees every write asked before it, however the
/// world writes behind, and the file then takes more writes after what it
/// holds, and persists whole.
pub fn a_temporary_file_reads_back_what_was_written_and_takes_more<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let data = content(400_000, 9);
    let (head, tail) = data.split_at(262_144);
    let mut ops = writes(6, head, 4096);
    ops.push(FileOp::Read {
        handle: 8,
        file: FileRef::Temp(6),
        offset: 0,
        len: head.len(),
    });
    assert_eq!(
        rig.run(ops),
        [Seen::Read {
            handle: 8,
            data: head.to_vec()
        }]
    );
    let mut ops: Vec<FileOp> = writes(6, tail, 65_536)
        .into_iter()
        .map(|op| match op {
            FileOp::Write { temp, offset, data } => FileOp::Write {
                temp,
                offset: offset + head.len() as u64,
                data,
            },
            op => op,
        })
        .collect();
    let d = digest(&data);
    ops.push(FileOp::Persist {
        temp: 6,
        to: FileRef::Blob(d),
    });
    assert_eq!(rig.run(ops), [Seen::Persisted { temp: 6 }]);
    assert_eq!(
        rig.read(9, d, 0, data.len()),
        Seen::Read {
            handle: 9,
            data: data.clone()
        }
    );
    let never = rig.one(FileOp::Read {
        handle: 10,
        file: FileRef::Temp(77),
        offset: 0,
        len: 10,
    });
    assert!(
        matches!(never, Seen::Failed { missing: true, .. }),
        "{never:?}"
    );
}

pub fn written_then_persisted_reads_back<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let data = content(300_000, 1);
    let (d, seen) = rig.store(1, &data, 4096);
    assert_eq!(seen, [Seen::Persisted { temp: 1 }]);
    assert_eq!(
        rig.read(7, d, 0, data.len()),
        Seen::Read { handle: 7, data }
    );
    assert_eq!(rig.restart(), [d], "a persisted blob survives a crash");
}

pub fn a_read_sees_any_offset_and_is_short_only_at_the_end<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let data = content(10_000, 2);
    let (d, _) = rig.store(1, &data, 3000);
    for (offset, len) in [(0, 1), (4095, 2), (9_000, 1000), (9_990, 64), (10_000, 5)] {
        let end = (offset + len).min(data.len());
        let want = data[offset.min(data.len())..end].to_vec();
        assert_eq!(
            rig.read(3, d, offset as u64, len),
            Seen::Read {
                handle: 3,
                data: want
            },
            "{len} bytes at {offset}"
        );
    }
}

pub fn persisting_onto_a_blob_that_is_there_keeps_it<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let data = content(5000, 3);
    let (d, _) = rig.store(1, &data, 5000);
    // A second copy under the same name (a correct node only does this
    // with the same content; a different one shows which was kept).
    let other = content(5000, 4);
    let seen = rig.run([
        FileOp::Write {
            temp: 2,
            offset: 0,
            data: other,
        },
        FileOp::Persist {
            temp: 2,
            to: FileRef::Blob(d),
        },
    ]);
    assert_eq!(seen, [Seen::Persisted { temp: 2 }]);
    assert_eq!(
        rig.read(1, d, 0, 5000),
        Seen::Read { handle: 1, data },
        "the blob there is kept"
    );
    assert_eq!(rig.restart(), [d], "and the copy left nothing behind");
}

pub fn a_read_of_a_missing_blob_says_missing<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let got = rig.read(4, digest(b"never stored"), 0, 10);
    assert_eq!(
        got,
        Seen::Failed {
            handle: 4,
            no_space: false,
            missing: true
        }
    );
}

pub fn a_full_disk_says_no_space_and_nothing_is_persisted<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    rig.fill_disk(5);
    let data = content(600_000, 5);
    let (d, seen) = rig.store(5, &data, 4096);
    let no_space = Seen::Failed {
        handle: 5,
        no_space: true,
        missing: false,
    };
    assert!(!seen.is_empty(), "a full disk must be reported");
    assert!(
        seen.iter().all(|s| *s == no_space),
        "only no-space failures of the file: {seen:?}"
    );
    assert!(
        !seen.contains(&Seen::Persisted { temp: 5 }),
        "a file with a hole is never persisted"
    );
    assert!(matches!(
        rig.read(1, d, 0, 1),
        Seen::Failed { missing: true, .. }
    ));
}

pub fn a_crash_between_write_and_persist_leaves_nothing_visible<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let data = content(50_000, 6);
    let seen = rig.run([FileOp::Write {
        temp: 1,
        offset: 0,
        data: data.clone(),
    }]);
    assert!(seen.is_empty(), "{seen:?}");
    assert!(rig.restart().is_empty(), "no blob after the crash");
    assert!(matches!(
        rig.read(1, digest(&data), 0, 1),
        Seen::Failed { missing: true, .. }
    ));
    // The number is free again after the restart.
    let (d, seen) = rig.store(1, b"again", 5);
    assert_eq!(seen, [Seen::Persisted { temp: 1 }]);
    assert_eq!(rig.restart(), [d]);
}

pub fn a_discarded_file_leaves_nothing_behind<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let seen = rig.run([
        FileOp::Write {
            temp: 3,
            offset: 0,
            data: content(70_000, 7),
        },
        FileOp::Discard { temp: 3 },
        // Discarding twice is no error.
        FileOp::Discard { temp: 3 },
    ]);
    assert!(seen.is_empty(), "{seen:?}");
    // The same number again: nothing of the discarded file remains.
    let (d, seen) = rig.store(3, b"fresh", 5);
    assert_eq!(seen, [Seen::Persisted { temp: 3 }]);
    assert_eq!(
        rig.read(2, d, 0, 100),
        Seen::Read {
            handle: 2,
            data: b"fresh".to_vec()
        }
    );
    assert_eq!(rig.restart(), [d]);
}

pub fn a_removed_blob_is_gone_and_removing_twice_is_no_error<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let (d, _) = rig.store(1, &content(9000, 8), 4096);
    let remove = || FileOp::Remove {
        file: FileRef::Blob(d),
    };
    assert!(rig.run([remove(), remove()]).is_empty());
    assert!(matches!(
        rig.read(1, d, 0, 1),
        Seen::Failed { missing: true, .. }
    ));
    assert!(rig.restart().is_empty());
}

pub fn answers_come_in_output_order_and_a_remove_never_overtakes_a_persist<F: Fixture>(
    fixture: &mut F,
) {
    let mut rig = Rig::new(fixture);
    let (a, b) = (content(20_000, 9), content(30_000, 10));
    let (da, db) = (digest(&a), digest(&b));
    let w = |temp, data: &[u8]| FileOp::Write {
        temp,
        offset: 0,
        data: data.to_vec(),
    };
    let seen = rig.run([
        w(1, &a),
        w(2, &b),
        FileOp::Persist {
            temp: 1,
            to: FileRef::Blob(da),
        },
        FileOp::Persist {
            temp: 2,
            to: FileRef::Blob(db),
        },
        FileOp::Remove {
            file: FileRef::Blob(da),
        },
    ]);
    assert_eq!(
        seen,
        [Seen::Persisted { temp: 1 }, Seen::Persisted { temp: 2 }]
    );
    assert_eq!(rig.restart(), [db], "the remove came after the persist");
}

pub fn a_zero_byte_file_persists_without_writes<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    let d = digest(b"");
    let seen = rig.run([FileOp::Persist {
        temp: 9,
        to: FileRef::Blob(d),
    }]);
    assert_eq!(seen, [Seen::Persisted { temp: 9 }]);
    assert_eq!(
        rig.read(1, d, 0, 10),
        Seen::Read {
            handle: 1,
            data: Vec::new()
        }
    );
}

pub fn a_server_refuses_named_files_and_listings<F: Fixture>(fixture: &mut F) {
    let mut rig = Rig::new(fixture);
    assert_eq!(rig.read_named(1, "a", 10), refused(1));
    assert_eq!(rig.one(FileOp::List { handle: 2 }), refused(2));
    let mut ops = writes(3, b"abc", 3);
    ops.push(FileOp::Persist {
        temp: 3,
        to: named("a"),
    });
    assert_eq!(rig.run(ops), [refused(3)]);
    assert!(rig.restart().is_empty());
}

pub fn shared_dir_written_then_persisted_reads_back<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let data = content(300_000, 11);
    assert_eq!(
        rig.put(1, "report.pdf", &data, 4096),
        [Seen::Persisted { temp: 1 }]
    );
    assert_eq!(rig.list(), [("report.pdf".to_string(), 300_000)]);
    assert_eq!(
        rig.read_named(5, "report.pdf", data.len()),
        Seen::Read { handle: 5, data }
    );
    assert_eq!(rig.temporaries(), 0, "the temporary file was moved");
}

pub fn shared_dir_persist_never_replaces_a_name<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let first = content(5000, 12);
    assert_eq!(rig.put(1, "a", &first, 5000), [Seen::Persisted { temp: 1 }]);
    assert_eq!(rig.put(2, "a", &content(7000, 13), 4096), [refused(2)]);
    rig.place("mine", b"the user's own");
    assert_eq!(rig.put(3, "mine", b"other", 5), [refused(3)]);
    // Not even an empty file replaces one.
    let persist = FileOp::Persist {
        temp: 4,
        to: named("a"),
    };
    assert_eq!(rig.run([persist]), [refused(4)]);
    assert_eq!(
        rig.read_named(1, "a", 10_000),
        Seen::Read {
            handle: 1,
            data: first
        },
        "the file there is intact"
    );
    assert_eq!(
        rig.read_named(2, "mine", 100),
        Seen::Read {
            handle: 2,
            data: b"the user's own".to_vec()
        }
    );
    assert_eq!(rig.list(), [("a".into(), 5000), ("mine".into(), 14)]);
    assert_eq!(rig.temporaries(), 0, "a refused persist uses its file up");
}

pub fn shared_dir_lists_files_sorted_and_hides_temporaries<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    assert_eq!(rig.list(), [], "an empty directory");
    rig.place("zeta", &content(10, 14));
    for (temp, name, len) in [(1, "b", 3), (2, "a", 0), (3, "B", 4096), (4, "é", 1)] {
        assert_eq!(
            rig.put(temp, name, &content(len, 15), 1000),
            [Seen::Persisted { temp }]
        );
    }
    // Written, never persisted: not in the directory yet.
    assert!(rig.run(writes(9, &content(5000, 16), 4096)).is_empty());
    assert_eq!(
        rig.list(),
        [
            ("B".into(), 4096),
            ("a".into(), 0),
            ("b".into(), 3),
            ("zeta".into(), 10),
            ("é".into(), 1),
        ],
        "sorted by name (bytes), with sizes"
    );
    assert_eq!(rig.temporaries(), 1);
}

pub fn shared_dir_read_of_a_missing_name_says_missing<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    assert_eq!(
        rig.read_named(4, "nothing", 10),
        Seen::Failed {
            handle: 4,
            no_space: false,
            missing: true
        }
    );
}

pub fn shared_dir_refuses_bad_names_and_touches_nothing<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    rig.place("a", b"kept");
    let bad = ["", ".", "..", "a/b", "../a", "/etc/passwd", "a\0b", "x/.."];
    for (i, name) in bad.into_iter().enumerate() {
        let h = i as u64 + 1;
        assert_eq!(rig.read_named(h, name, 10), refused(h), "read {name:?}");
        assert_eq!(rig.put(h, name, b"bad", 3), [refused(h)], "put {name:?}");
        let remove = FileOp::Remove { file: named(name) };
        assert!(rig.run([remove]).is_empty(), "remove {name:?}");
    }
    assert_eq!(rig.list(), [("a".into(), 4)]);
    assert_eq!(rig.temporaries(), 0);
}

pub fn shared_dir_refuses_blobs_and_local_files<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let d = digest(b"x");
    assert_eq!(rig.read(1, d, 0, 1), refused(1));
    for (temp, to) in [(2, FileRef::Blob(d)), (3, FileRef::Local)] {
        let mut ops = writes(temp, b"x", 1);
        ops.push(FileOp::Persist { temp, to });
        assert_eq!(rig.run(ops), [refused(temp)]);
    }
    assert_eq!(rig.list(), []);
}

pub fn shared_dir_discard_leaves_nothing<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let mut ops = writes(3, &content(70_000, 17), 4096);
    ops.extend([FileOp::Discard { temp: 3 }, FileOp::Discard { temp: 3 }]);
    assert!(rig.run(ops).is_empty());
    assert_eq!(rig.temporaries(), 0);
    assert_eq!(rig.list(), []);
    // The same number again: nothing of the discarded file remains.
    assert_eq!(rig.put(3, "f", b"fresh", 5), [Seen::Persisted { temp: 3 }]);
    assert_eq!(
        rig.read_named(1, "f", 100),
        Seen::Read {
            handle: 1,
            data: b"fresh".to_vec()
        }
    );
}

pub fn shared_dir_holds_several_temporaries_at_once<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let files: Vec<(u64, String, Vec<u8>)> = (1..=4)
        .map(|t| (t, format!("f{t}"), content(10_000 * t as usize, t as u8)))
        .collect();
    // Transfers on several connections: their writes interleave.
    let mut ops = Vec::new();
    for piece in 0..25 {
        for (temp, _, data) in &files {
            let at = piece * 4096;
            if at < data.len() {
                let end = (at + 4096).min(data.len());
                ops.push(FileOp::Write {
                    temp: *temp,
                    offset: at as u64,
                    data: data[at..end].to_vec(),
                });
            }
        }
    }
    assert!(rig.run(ops).is_empty());
    assert_eq!(rig.temporaries(), 4);
    let persists = files.iter().rev().map(|(temp, name, _)| FileOp::Persist {
        temp: *temp,
        to: named(name),
    });
    let answers: Vec<Seen> = (1..=4).rev().map(|temp| Seen::Persisted { temp }).collect();
    assert_eq!(rig.run(persists), answers, "answered in output order");
    for (temp, name, data) in files {
        assert_eq!(
            rig.read_named(temp, &name, data.len()),
            Seen::Read { handle: temp, data }
        );
    }
    assert_eq!(rig.temporaries(), 0);
}

pub fn shared_dir_remove_removes_the_name<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    rig.place("a", b"one");
    rig.place("b", b"two");
    let remove = || FileOp::Remove { file: named("a") };
    assert!(rig.run([remove(), remove()]).is_empty());
    assert!(matches!(
        rig.read_named(1, "a", 10),
        Seen::Failed { missing: true, .. }
    ));
    assert_eq!(rig.list(), [("b".into(), 3)]);
    // The name is free again.
    assert_eq!(rig.put(1, "a", b"new", 3), [Seen::Persisted { temp: 1 }]);
}

pub fn shared_dir_never_follows_a_symlink<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    if !rig.place_symlink("link") {
        return;
    }
    assert_eq!(rig.read_named(1, "link", 100), refused(1));
    assert_eq!(rig.list(), [], "a link is not listed");
    assert_eq!(rig.put(2, "link", b"through", 7), [refused(2)]);
    // Not a file of the listing: neither renamed nor replaced by a rename.
    assert_eq!(rig.rename(3, "link", "moved").0, refused(3));
    rig.place("f", b"file");
    assert_eq!(rig.rename(4, "f", "link").0, refused(4));
    assert_eq!(rig.list(), [("f".into(), 4)]);
    assert_eq!(
        rig.read_named(5, "f", 10),
        Seen::Read {
            handle: 5,
            data: b"file".to_vec()
        }
    );
}

pub fn shared_dir_persist_keeps_the_modification_time_given<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    // Given before the file's writes, after them, and to a file never
    // written: in place, the file has that time to the millisecond,
    // whatever its writes did to it meanwhile.
    let (early, late, empty) = (1_000_000_000_123, 1_600_000_000_456, 1_234);
    let set = |temp, modified_ms| FileOp::SetModified { temp, modified_ms };
    let persist = |temp, name: &str| FileOp::Persist {
        temp,
        to: named(name),
    };
    let mut ops = vec![set(1, early)];
    ops.extend(writes(1, &content(300_000, 20), 4096));
    ops.extend(writes(2, &content(5000, 21), 4096));
    ops.extend([set(2, late), set(3, empty)]);
    ops.extend([persist(1, "early"), persist(2, "late"), persist(3, "empty")]);
    let answers = (1..=3).map(|temp| Seen::Persisted { temp });
    assert_eq!(rig.run(ops), answers.collect::<Vec<_>>());
    let times: Vec<(String, u64, u64)> = rig
        .listing()
        .into_iter()
        .map(|e| (e.name, e.size, e.modified_ms))
        .collect();
    assert_eq!(
        times,
        [
            ("early".into(), 300_000, early),
            ("empty".into(), 0, empty),
            ("late".into(), 5000, late),
        ]
    );
    // A time goes with its file: a discarded file's, or one whose persist
    // was refused, is not the next file's of that number.
    assert!(rig
        .run([set(4, 5_000), FileOp::Discard { temp: 4 }])
        .is_empty());
    assert_eq!(rig.put(4, "fresh", b"x", 1), [Seen::Persisted { temp: 4 }]);
    assert_ne!(rig.modified_ms("fresh"), 5_000);
    let refused_persist = [set(5, 6_000), persist(5, "early")];
    assert_eq!(rig.run(refused_persist), [refused(5)]);
    assert_eq!(rig.put(5, "other", b"y", 1), [Seen::Persisted { temp: 5 }]);
    assert_ne!(rig.modified_ms("other"), 6_000);
    assert_eq!(rig.modified_ms("early"), early, "the file there is intact");
    assert_eq!(rig.temporaries(), 0);
}

pub fn shared_dir_rename_moves_a_file_to_a_free_name<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    let data = content(70_000, 22);
    rig.place("old", &data);
    let modified_ms = rig.modified_ms("old");
    assert_eq!(
        rig.rename(1, "old", "new"),
        (Seen::Renamed { handle: 1 }, None)
    );
    assert_eq!(
        rig.read_named(2, "new", data.len()),
        Seen::Read {
            handle: 2,
            data: data.clone()
        }
    );
    assert!(matches!(
        rig.read_named(3, "old", 10),
        Seen::Failed { missing: true, .. }
    ));
    let moved = DirEntry {
        name: "new".into(),
        size: data.len() as u64,
        modified_ms,
    };
    assert_eq!(rig.listing(), [moved], "moved with its modification time");
    // Asked after a persist, a rename never overtakes it: it finds the
    // file there.
    let mut ops = writes(4, b"fresh", 5);
    ops.extend([
        FileOp::Persist {
            temp: 4,
            to: named("made"),
        },
        rename(5, "made", "moved"),
    ]);
    let answers = [Seen::Persisted { temp: 4 }, Seen::Renamed { handle: 5 }];
    assert_eq!(rig.run(ops), answers);
    assert_eq!(
        rig.read_named(6, "moved", 100),
        Seen::Read {
            handle: 6,
            data: b"fresh".to_vec()
        }
    );
    assert_eq!(rig.list(), [("moved".into(), 5), ("new".into(), 70_000)]);
    assert_eq!(rig.temporaries(), 0);
}

pub fn shared_dir_rename_never_replaces_a_name<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    rig.place("a", b"source");
    rig.place("b", b"there");
    let exists = |name: &str| Some(FileFailure::exists(name).error);
    assert_eq!(rig.rename(1, "a", "b"), (refused(1), exists("b")));
    // Not even onto itself.
    assert_eq!(rig.rename(2, "a", "a"), (refused(2), exists("a")));
    // Nor onto a name a persist asked for before it takes.
    let mut ops = writes(3, b"persisted", 9);
    ops.extend([
        FileOp::Persist {
            temp: 3,
            to: named("c"),
        },
        rename(4, "a", "c"),
    ]);
    assert_eq!(rig.run(ops), [Seen::Persisted { temp: 3 }, refused(4)]);
    for (handle, name, data) in [
        (5, "a", &b"source"[..]),
        (6, "b", b"there"),
        (7, "c", b"persisted"),
    ] {
        let data = data.to_vec();
        assert_eq!(
            rig.read_named(handle, name, 100),
            Seen::Read { handle, data }
        );
    }
    assert_eq!(
        rig.list(),
        [("a".into(), 6), ("b".into(), 5), ("c".into(), 9)]
    );
}

pub fn shared_dir_rename_of_a_missing_name_says_missing<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    rig.place("b", b"there");
    let missing = |handle| Seen::Failed {
        handle,
        no_space: false,
        missing: true,
    };
    assert_eq!(rig.rename(1, "nothing", "else").0, missing(1));
    // Missing whatever is at the new name.
    assert_eq!(rig.rename(2, "nothing", "b").0, missing(2));
    // Gone by the time it is carried out (a remove asked before it).
    let ops = [FileOp::Remove { file: named("b") }, rename(3, "b", "c")];
    assert_eq!(rig.run(ops), [missing(3)]);
    assert_eq!(rig.list(), []);
}

pub fn shared_dir_rename_refuses_bad_names_and_touches_nothing<F: DirFixture>(fixture: &mut F) {
    let mut rig = Rig::shared_dir(fixture);
    rig.place("a", b"kept");
    let bad = ["", ".", "..", "a/b", "../a", "/etc/passwd", "a\0b", "x/.."];
    for (i, name) in bad.into_iter().enumerate() {
        let h = 2 * i as u64 + 1;
        assert_eq!(rig.rename(h, "a", name).0, refused(h), "a to {name:?}");
        assert_eq!(rig.rename(h + 1, name, "b").0, refused(h + 1), "{name:?}");
    }
    let d = digest(b"kept");
    for (handle, from, to) in [
        (20, FileRef::Blob(d), named("b")),
        (21, named("a"), FileRef::Blob(d)),
        (22, FileRef::Local, named("b")),
        (23, named("a"), FileRef::Local),
    ] {
        let op = FileOp::Rename { handle, from, to };
        assert_eq!(rig.one(op), refused(handle));
    }
    assert_eq!(rig.list(), [("a".into(), 4)]);
    assert_eq!(
        rig.read_named(30, "a", 10),
        Seen::Read {
            handle: 30,
            data: b"kept".to_vec()
        }
    );
    assert_eq!(rig.temporaries(), 0);
}
