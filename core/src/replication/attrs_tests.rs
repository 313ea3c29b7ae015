//! Files' attributes in the replicated state: kept with their file, in a
//! table of their own, and stores written before they existed (protocol 6,
//! encoded with the copies in `v6`) still decode and replay.

use super::catalogue::FileMeta;
use super::entry::{Entry, NewFile, Origin, Txn, TxnResult};
use super::state::{Applied, State};
use super::v6;
use crate::accounts::password::{hash, PasswordParams};
use crate::file_attrs::FileAttrs;
use crate::frame;
use crate::store::{Batch, MemStore, Store, Table, Write};

fn entry(index: u64, txn: Txn) -> Entry {
    Entry {
        index,
        view: 1,
        at: 1000 + index,
        origin: Origin {
            server: 1,
            session: 7,
            request: index,
        },
        txn,
    }
}

fn register(index: u64, name: &str) -> Entry {
    let password = hash(PasswordParams::TESTING, [0; 16], "password1").expect("hash");
    entry(
        index,
        Txn::Register {
            username: name.into(),
            password,
        },
    )
}

fn put(owner: u64, name: &str, d: u8, replace: bool, attrs: Option<FileAttrs>) -> Txn {
    Txn::PutFile {
        owner,
        name: name.into(),
        size: 10,
        digest: [d; 32],
        replace,
        holder: 1,
        attrs,
    }
}

/// Applies `entries` in order, committing their writes to `store`.
fn apply_all(state: &mut State, store: &mut MemStore, entries: &[Entry]) -> Vec<TxnResult> {
    let mut results = Vec::new();
    for e in entries {
        let Applied { writes, result } = state.apply(e);
        store.commit(&Batch { writes }).expect("commit");
        results.push(result);
    }
    results
}

fn rebuilt(store: &MemStore) -> State {
    State::from_rows(&store.load().expect("load").tables).expect("rows")
}

fn attrs_rows(store: &MemStore) -> usize {
    let rows = store.load().expect("load").tables;
    rows.iter().filter(|(t, _, _)| *t == Table::Attrs).count()
}

fn attrs_of(state: &State, owner: u64, name: &str) -> Option<FileAttrs> {
    state.catalogue().get(owner, name).and_then(|f| f.attrs)
}

#[test]
fn attributes_are_kept_beside_their_file_and_follow_it() {
    let (mut s, mut store) = (State::default(), MemStore::default());
    let a = FileAttrs::new(1_700_000_000, 123_456_789, 0o640);
    let b = FileAttrs::new(-86_400, 5, 0o755);
    let log = [
        register(1, "alice"),
        entry(2, put(1, "a", 1, false, Some(a))),
        entry(3, put(1, "b", 2, false, None)),
        entry(
            4,
            Txn::PutFiles {
                owner: 1,
                files: vec![
                    NewFile {
                        name: "d/x".into(),
                        size: 1,
                        digest: [3; 32],
                        attrs: Some(b),
                    },
                    NewFile {
                        name: "d/y".into(),
                        size: 1,
                        digest: [4; 32],
                        attrs: None,
                    },
                ],
                replace: false,
                holder: 1,
            },
        ),
    ];
    apply_all(&mut s, &mut store, &log);
    assert_eq!(attrs_of(&s, 1, "a"), Some(a));
    assert_eq!(attrs_of(&s, 1, "b"), None);
    assert_eq!(attrs_of(&s, 1, "d/x"), Some(b));
    assert_eq!(attrs_of(&s, 1, "d/y"), None);
    assert_eq!(attrs_rows(&store), 2);
    // A restart reads them back from their table.
    assert_eq!(rebuilt(&store), s);
    assert_eq!(rebuilt(&store).digest(), s.digest());

    // Replaced by a file without them (from a pipe): theirs go, on disk
    // too; replaced by one with others: those.
    apply_all(&mut s, &mut store, &[entry(5, put(1, "a", 5, true, None))]);
    assert_eq!(attrs_of(&s, 1, "a"), None);
    apply_all(
        &mut s,
        &mut store,
        &[entry(6, put(1, "b", 6, true, Some(b)))],
    );
    assert_eq!(attrs_of(&s, 1, "b"), Some(b));
    // Removed with their file, by rm and by rm -r.
    let rm = Txn::Delete {
        owner: 1,
        name: "b".into(),
    };
    let rm_r = Txn::DeleteFolder {
        owner: 1,
        folder: "d".into(),
    };
    apply_all(&mut s, &mut store, &[entry(7, rm), entry(8, rm_r)]);
    assert_eq!(attrs_rows(&store), 0);
    assert_eq!(rebuilt(&store), s);
}

#[test]
fn only_the_permission_bits_are_kept_and_they_change_the_digest() {
    let log = |attrs| [register(1, "alice"), entry(2, put(1, "a", 1, false, attrs))];
    let (mut s, mut store) = (State::default(), MemStore::default());
    let sent = FileAttrs {
        mtime_secs: 5,
        mtime_nanos: 2_000_000_000,
        mode: 0o104_755,
    };
    apply_all(&mut s, &mut store, &log(Some(sent)));
    assert_eq!(
        attrs_of(&s, 1, "a"),
        Some(FileAttrs::new(5, 999_999_999, 0o755))
    );
    // Replicas that differ in a file's attributes differ in digest; one
    // without any digests as a state did before attributes existed (see
    // the test of protocol 6's entries below).
    let (mut none, mut other) = (State::default(), State::default());
    apply_all(&mut none, &mut MemStore::default(), &log(None));
    let mode = FileAttrs::new(5, 999_999_999, 0o750);
    apply_all(&mut other, &mut MemStore::default(), &log(Some(mode)));
    assert_ne!(s.digest(), none.digest());
    assert_ne!(s.digest(), other.digest());
}

#[test]
fn entries_logged_before_attributes_decode_and_replay_as_files_without_them() {
    let old = [
        v6::Entry {
            index: 2,
            view: 1,
            at: 1002,
            origin: entry(2, Txn::Noop).origin,
            txn: v6::Txn::PutFile {
                owner: 1,
                name: "a".into(),
                size: 10,
                digest: [1; 32],
                replace: false,
                holder: 1,
            },
        },
        v6::Entry {
            index: 3,
            view: 1,
            at: 1003,
            origin: entry(3, Txn::Noop).origin,
            txn: v6::Txn::PutFiles {
                owner: 1,
                files: vec![v6::NewFile {
                    name: "d/x".into(),
                    size: 1,
                    digest: [3; 32],
                }],
                replace: true,
                holder: 2,
            },
        },
    ];
    let mut decoded = vec![register(1, "alice")];
    for e in &old {
        let bytes = v6::bytes(e);
        let e: Entry = frame::decode(&bytes).expect("an entry of protocol 6 decodes");
        // And is written back as it was: a follower's copy of an old log
        // entry is the same bytes as the master's.
        assert_eq!(v6::bytes(&e), bytes);
        decoded.push(e);
    }
    assert!(matches!(decoded[1].txn, Txn::PutFileV1 { .. }));
    assert!(matches!(decoded[2].txn, Txn::PutFilesV1 { .. }));

    // Applied as the same uploads without attributes are now: the same
    // state, the same digest, the same results.
    let (mut old_state, mut old_store) = (State::default(), MemStore::default());
    let old_results = apply_all(&mut old_state, &mut old_store, &decoded);
    let today = [
        register(1, "alice"),
        entry(2, put(1, "a", 1, false, None)),
        entry(
            3,
            Txn::PutFiles {
                owner: 1,
                files: vec![NewFile {
                    name: "d/x".into(),
                    size: 1,
                    digest: [3; 32],
                    attrs: None,
                }],
                replace: true,
                holder: 2,
            },
        ),
    ];
    let (mut new_state, mut new_store) = (State::default(), MemStore::default());
    assert_eq!(
        apply_all(&mut new_state, &mut new_store, &today),
        old_results
    );
    assert_eq!(old_state, new_state);
    assert_eq!(old_state.digest(), new_state.digest());
    assert_eq!(old_results[1], TxnResult::FileStored);
    assert_eq!(attrs_of(&old_state, 1, "a"), None);
    assert_eq!(attrs_of(&old_state, 1, "d/x"), None);
    assert_eq!(rebuilt(&old_store), old_state);
}

#[test]
fn a_files_table_written_before_attributes_loads_and_takes_new_ones() {
    // A store of protocol 6: users and files rows, no attrs table at all.
    let (mut s, mut store) = (State::default(), MemStore::default());
    apply_all(&mut s, &mut store, &[register(1, "alice")]);
    let row = v6::FileMeta {
        owner: 1,
        name: "old.txt".into(),
        size: 3,
        digest: [9; 32],
        at: 77,
        holder: 2,
    };
    let mut key = 1u64.to_be_bytes().to_vec();
    key.extend_from_slice(b"old.txt");
    let file_row = Write::Put {
        table: Table::Files,
        key,
        value: v6::bytes(&row),
    };
    store
        .commit(&Batch {
            writes: vec![file_row],
        })
        .expect("commit");
    let mut loaded = rebuilt(&store);
    let f = loaded.catalogue().get(1, "old.txt").cloned();
    let expected = FileMeta {
        owner: 1,
        name: "old.txt".into(),
        size: 3,
        digest: [9; 32],
        at: 77,
        holder: 2,
        attrs: None,
    };
    assert_eq!(f, Some(expected.clone()));
    // Its row is what today's catalogue writes for it: nothing to migrate.
    assert_eq!(v6::bytes(&expected), v6::bytes(&row));
    // The same store goes on with files that have attributes.
    let a = FileAttrs::new(1, 2, 0o600);
    apply_all(
        &mut loaded,
        &mut store,
        &[entry(2, put(1, "new", 1, false, Some(a)))],
    );
    let again = rebuilt(&store);
    assert_eq!(attrs_of(&again, 1, "new"), Some(a));
    assert_eq!(attrs_of(&again, 1, "old.txt"), None);
    assert_eq!(again, loaded);
}

#[test]
fn an_attributes_row_of_no_file_is_a_damaged_store() {
    let mut store = MemStore::default();
    let mut key = 1u64.to_be_bytes().to_vec();
    key.extend_from_slice(b"ghost");
    let row = Write::Put {
        table: Table::Attrs,
        key,
        value: v6::bytes(&FileAttrs::new(1, 2, 0o600)),
    };
    store.commit(&Batch { writes: vec![row] }).expect("commit");
    let err = State::from_rows(&store.load().expect("load").tables);
    assert!(matches!(err, Err(e) if e.contains("attrs table")));
}
