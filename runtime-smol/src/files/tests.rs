use super::*;

fn digest(b: &[u8]) -> [u8; 32] {
    *blake3::hash(b).as_bytes()
}

fn read_all(files: &mut Files, handle: u64, file: FileRef, len: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let mut offset = 0u64;
    loop {
        let op = FileOp::Read {
            handle,
            file: file.clone(),
            offset,
            len,
        };
        match files.execute(op) {
            Some(FileAnswer::Read { offset: o, len, .. }) => {
                let data = files.read(handle, o, len).unwrap();
                if data.is_empty() {
                    return got;
                }
                got.extend_from_slice(data);
                offset += data.len() as u64;
                if data.len() < len {
                    return got;
                }
            }
            other => panic!("{other:?}"),
        }
    }
}

/// Executes a `Persist` and waits for its answer, which the writer thread
/// gives (or the executor at once, for a failure it sees itself).
fn persist(files: &mut Files, temp: u64, to: FileRef) -> FileAnswer {
    if let Some(answer) = files.execute(FileOp::Persist { temp, to }) {
        return answer;
    }
    files.wait_idle();
    let answer = files.take_answer().expect("the persist is answered");
    assert_eq!(files.take_answer(), None, "one answer per persist");
    answer
}

#[test]
fn a_server_writes_persists_reads_and_removes_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, present) = Files::server(dir.path()).unwrap();
    assert!(present.is_empty());
    let content: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
    let d = digest(&content);
    // Out of order is fine: writes are positioned.
    assert_eq!(
        files.execute(FileOp::Write {
            temp: 3,
            offset: 4096,
            data: content[4096..].to_vec(),
        }),
        None
    );
    assert_eq!(
        files.execute(FileOp::Write {
            temp: 3,
            offset: 0,
            data: content[..4096].to_vec(),
        }),
        None
    );
    assert!(dir.path().join("tmp/3").exists());
    assert_eq!(
        persist(&mut files, 3, FileRef::Blob(d)),
        FileAnswer::Persisted { temp: 3 }
    );
    assert!(!dir.path().join("tmp/3").exists());
    let blob = dir.path().join("blobs").join(hex(&d));
    assert_eq!(std::fs::read(&blob).unwrap(), content);
    assert_eq!(read_all(&mut files, 9, FileRef::Blob(d), 4096), content);
    // Reading to the end closed the handle.
    assert_eq!(files.open_count(), 0);

    // An open read handle survives the blob's removal (POSIX semantics),
    // and the removal closes cached descriptors of that blob.
    files.execute(FileOp::Remove {
        file: FileRef::Blob(d),
    });
    files.wait_idle();
    assert!(!blob.exists());
    assert_eq!(files.open_count(), 0);
    let failed = files.execute(FileOp::Read {
        handle: 10,
        file: FileRef::Blob(d),
        offset: 0,
        len: 10,
    });
    // A removed blob is missing (the server then fetches it again), which
    // no other failure says.
    assert!(
        matches!(failed, Some(FileAnswer::Failed { handle: 10, ref failure }) if !failure.no_space && failure.missing),
        "{failed:?}"
    );
}

#[test]
fn a_zero_byte_file_is_persisted_without_writes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let d = digest(b"");
    assert_eq!(
        persist(&mut files, 1, FileRef::Blob(d)),
        FileAnswer::Persisted { temp: 1 }
    );
    let blob = dir.path().join("blobs").join(hex(&d));
    assert_eq!(std::fs::metadata(&blob).unwrap().len(), 0);
    // A read of an empty file answers empty.
    assert_eq!(read_all(&mut files, 2, FileRef::Blob(d), 4096), b"");
}

#[test]
fn startup_lists_blobs_and_cleans_temporary_files() {
    let dir = tempfile::tempdir().unwrap();
    let d1 = digest(b"one");
    let d2 = digest(b"two");
    {
        let (mut files, _) = Files::server(dir.path()).unwrap();
        for (temp, d) in [(1, d1), (2, d2)] {
            files.execute(FileOp::Write {
                temp,
                offset: 0,
                data: b"x".to_vec(),
            });
            persist(&mut files, temp, FileRef::Blob(d));
        }
        // Interrupted: a temporary file left behind.
        files.execute(FileOp::Write {
            temp: 7,
            offset: 0,
            data: b"half".to_vec(),
        });
    }
    std::fs::write(dir.path().join("blobs/not-a-blob"), b"?").unwrap();
    std::fs::write(dir.path().join("blobs").join(&hex(&d1)[..63]), b"?").unwrap();
    std::fs::create_dir(dir.path().join("blobs").join("ab".repeat(32))).unwrap();
    let (_, present) = Files::server(dir.path()).unwrap();
    let mut want = vec![d1, d2];
    want.sort();
    assert_eq!(present, want);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[test]
fn discard_removes_the_temporary_file_and_is_idempotent() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    files.execute(FileOp::Write {
        temp: 4,
        offset: 0,
        data: vec![1; 100],
    });
    assert!(dir.path().join("tmp/4").exists());
    assert_eq!(files.execute(FileOp::Discard { temp: 4 }), None);
    assert_eq!(files.execute(FileOp::Discard { temp: 4 }), None);
    files.wait_idle();
    assert!(!dir.path().join("tmp/4").exists());
    assert_eq!(files.open_count(), 0);
}

#[test]
fn a_full_disk_is_reported_as_no_space() {
    // /dev/full fails every write with ENOSPC.
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("tmp/5")).unwrap();
    // Gathered, not written yet: nothing to say.
    let first = files.execute(FileOp::Write {
        temp: 5,
        offset: 0,
        data: vec![0; 4096],
    });
    assert_eq!(first, None);
    // A write too large to gather sends the first one to the writer
    // thread, then itself; both fail there, and the file's failure is
    // reported once.
    let got = files.execute(FileOp::Write {
        temp: 5,
        offset: 4096,
        data: vec![0; buffers::GATHER_BELOW],
    });
    assert_eq!(got, None);
    files.wait_idle();
    match files.take_answer() {
        Some(FileAnswer::Failed { handle: 5, failure }) => {
            assert!(failure.no_space, "{failure:?}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(files.take_answer(), None);
    // Told once: later writes of the broken file say nothing more.
    let again = files.execute(FileOp::Write {
        temp: 5,
        offset: 4096,
        data: vec![0; 4096],
    });
    assert_eq!(again, None);
    // The failure was told before the persist: the persist still says it
    // is a full disk (it used to say only "an earlier write failed").
    match files.execute(FileOp::Persist {
        temp: 5,
        to: FileRef::Blob([5; 32]),
    }) {
        Some(FileAnswer::Failed { handle: 5, failure }) => {
            assert!(failure.no_space, "{failure:?}")
        }
        other => panic!("{other:?}"),
    }
    files.execute(FileOp::Discard { temp: 5 });
    files.wait_idle();
    assert!(dir.path().join("tmp/5").symlink_metadata().is_err());
}

#[test]
fn a_gathered_write_that_fails_is_reported_by_the_persist() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("tmp/6")).unwrap();
    for i in 0..3u64 {
        let got = files.execute(FileOp::Write {
            temp: 6,
            offset: i * 4096,
            data: vec![1; 4096],
        });
        assert_eq!(got, None);
    }
    let got = persist(&mut files, 6, FileRef::Blob([6; 32]));
    match got {
        FileAnswer::Failed { handle: 6, failure } => {
            assert!(failure.no_space, "{failure:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(!dir.path().join("blobs").join(hex(&[6; 32])).exists());
}

#[test]
fn gathered_writes_persist_to_the_exact_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    // 3 MiB and a bit, written the way transfers write: in order, in
    // chunks of 4 KiB and of assorted sizes, with a jump back (a resend)
    // and a write past a gap filled later.
    let content: Vec<u8> = (0..(3 << 20) + 4321u32)
        .map(|i| (i ^ (i >> 9)) as u8)
        .collect();
    let mut pieces = Vec::new();
    let mut at = 0;
    let mut size = 4096;
    while at < content.len() {
        let end = (at + size).min(content.len());
        pieces.push((at, end));
        at = end;
        size = if size == 4096 { 70_001 } else { 4096 };
    }
    // A resend of an early piece, and the last piece before its
    // predecessor.
    pieces.insert(40, pieces[3]);
    let n = pieces.len();
    pieces.swap(n - 2, n - 1);
    for (from, to) in pieces {
        let got = files.execute(FileOp::Write {
            temp: 9,
            offset: from as u64,
            data: content[from..to].to_vec(),
        });
        assert_eq!(got, None);
    }
    let d = digest(&content);
    assert_eq!(
        persist(&mut files, 9, FileRef::Blob(d)),
        FileAnswer::Persisted { temp: 9 }
    );
    let blob = dir.path().join("blobs").join(hex(&d));
    assert!(std::fs::read(blob).unwrap() == content);
    // A discarded file's gathered bytes go nowhere.
    files.execute(FileOp::Write {
        temp: 10,
        offset: 0,
        data: b"gone".to_vec(),
    });
    files.execute(FileOp::Discard { temp: 10 });
    files.wait_idle();
    assert!(!dir.path().join("tmp/10").exists());
}

#[test]
fn reads_at_any_offset_and_length_see_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let content: Vec<u8> = (0..1_000_003u32)
        .map(|i| (i * 7 + (i >> 11)) as u8)
        .collect();
    let d = digest(&content);
    files.execute(FileOp::Write {
        temp: 1,
        offset: 0,
        data: content.clone(),
    });
    persist(&mut files, 1, FileRef::Blob(d));
    // Forwards and backwards, across read-ahead boundaries, past the end,
    // small and large; two handles interleaved on the same blob.
    let mut x = 12345u64;
    for i in 0..400 {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let offset = (x >> 33) % (content.len() as u64 + 5000);
        let len = match i % 4 {
            0 => 4096,
            1 => ((x >> 20) % 9000) as usize + 1,
            2 => 131_072,
            _ => ((x >> 12) % 400_000) as usize + 1,
        };
        let handle = i % 2;
        let got = files.execute(FileOp::Read {
            handle,
            file: FileRef::Blob(d),
            offset,
            len,
        });
        assert!(matches!(got, Some(FileAnswer::Read { .. })), "{got:?}");
        let data = files.read(handle, offset, len).unwrap();
        let from = (offset as usize).min(content.len());
        let to = (offset as usize + len).min(content.len());
        assert!(data == &content[from..to], "read {len} at {offset}");
    }
}

#[test]
fn a_file_that_shrinks_is_never_read_past_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let content: Vec<u8> = (0..(1 << 20) as u32).map(|i| (i >> 3) as u8).collect();
    std::fs::write(&src, &content).unwrap();
    let mut files = Files::source(&src);
    let read = |files: &mut Files, offset: u64| -> Vec<u8> {
        let got = files.execute(FileOp::Read {
            handle: 0,
            file: FileRef::Local,
            offset,
            len: 4096,
        });
        assert!(matches!(got, Some(FileAnswer::Read { .. })), "{got:?}");
        files.read(0, offset, 4096).unwrap().to_vec()
    };
    assert_eq!(read(&mut files, 0), &content[..4096]);
    // Cut to 300 KiB, past what was read ahead (256 KiB from offset 0).
    let cut = 300 << 10;
    std::fs::OpenOptions::new()
        .write(true)
        .open(&src)
        .unwrap()
        .set_len(cut as u64)
        .unwrap();
    // What was read ahead was read before the cut and is the file's; the
    // first read past it sees the new end.
    assert_eq!(read(&mut files, 8192), &content[8192..12288]);
    let at = (cut - 1000) as u64;
    assert_eq!(read(&mut files, at), &content[cut - 1000..cut]);
    assert_eq!(read(&mut files, cut as u64), b"");
    assert_eq!(read(&mut files, (cut + 50_000) as u64), b"");
    // Reads ahead stop at the new end too, and a fresh handle sees it.
    assert_eq!(
        read(&mut files, 260 << 10),
        &content[260 << 10..(264 << 10)]
    );
    assert_eq!(
        read_all(&mut files, 1, FileRef::Local, 4096),
        &content[..cut]
    );
}

#[test]
fn open_descriptors_stay_bounded() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let content = vec![7u8; 3 * 4096];
    let d = digest(&content);
    files.execute(FileOp::Write {
        temp: 1,
        offset: 0,
        data: content.clone(),
    });
    persist(&mut files, 1, FileRef::Blob(d));
    let read = |files: &mut Files, handle: u64| {
        files.execute(FileOp::Read {
            handle,
            file: FileRef::Blob(d),
            offset: 0,
            len: 4096,
        })
    };
    for handle in 0..(MAX_OPEN as u64 * 2) {
        assert!(matches!(
            read(&mut files, handle),
            Some(FileAnswer::Read { .. })
        ));
        assert_eq!(files.read(handle, 0, 4096).unwrap(), &content[..4096]);
        assert!(files.open_count() <= MAX_OPEN);
    }
    // An evicted handle is not open any more: its read fails cleanly, and
    // asking again reopens it.
    assert!(
        files.read(0, 0, 4096).is_err_and(|f| !f.missing),
        "not missing: not open"
    );
    // Reads answered and not yet taken are never evicted, however many
    // (the node was promised their bytes); once taken, the bound holds
    // again.
    let (from, to) = (1000, 1000 + MAX_OPEN as u64 * 2);
    for handle in from..to {
        assert!(matches!(
            read(&mut files, handle),
            Some(FileAnswer::Read { .. })
        ));
    }
    assert!(files.open_count() > MAX_OPEN);
    for handle in from..to {
        assert_eq!(
            files.read(handle, 0, 4096).unwrap(),
            &content[..4096],
            "{handle}"
        );
    }
    assert!(matches!(
        read(&mut files, to),
        Some(FileAnswer::Read { .. })
    ));
    assert!(files.open_count() <= MAX_OPEN);
    files.execute(FileOp::Read {
        handle: 0,
        file: FileRef::Blob(d),
        offset: 4096,
        len: 4096,
    });
    assert_eq!(files.read(0, 4096, 4096).unwrap(), &content[4096..8192]);
}

#[test]
fn a_client_reads_its_source_and_refuses_blobs() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let content = vec![3u8; 5000];
    std::fs::write(&src, &content).unwrap();
    let mut files = Files::source(&src);
    assert_eq!(read_all(&mut files, 0, FileRef::Local, 4096), content);
    let got = files.execute(FileOp::Read {
        handle: 0,
        file: FileRef::Blob([0; 32]),
        offset: 0,
        len: 1,
    });
    assert!(matches!(got, Some(FileAnswer::Failed { .. })), "{got:?}");
    let got = files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: vec![1],
    });
    assert!(matches!(got, Some(FileAnswer::Failed { .. })), "{got:?}");
}

#[test]
fn a_download_appears_only_when_persisted_and_never_overwrites_unasked() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    // The named road, as where no unnamed file can be made.
    let mut files = Files::destination_unnamed(&dest, false).named_partial();
    let partial = files.partial().unwrap().to_path_buf();
    assert_eq!(partial.parent(), Some(dir.path()));
    let name = partial.file_name().unwrap().to_str().unwrap().to_string();
    assert!(name.starts_with(".out.bin.ferry-partial-"), "{name}");
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"hello".to_vec(),
    });
    assert!(partial.exists());
    assert!(!dest.exists());
    assert_eq!(
        persist(&mut files, 0, FileRef::Local),
        FileAnswer::Persisted { temp: 0 }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    assert!(!partial.exists());

    // Again, without replace: refused at the rename; the partial file is
    // then discarded by the node.
    let mut files = Files::destination_unnamed(&dest, false).named_partial();
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"other".to_vec(),
    });
    let got = persist(&mut files, 0, FileRef::Local);
    match got {
        FileAnswer::Failed { handle: 0, failure } => {
            assert!(failure.error.contains("exists"), "{failure:?}")
        }
        other => panic!("{other:?}"),
    }
    files.execute(FileOp::Discard { temp: 0 });
    files.wait_idle();
    assert!(!partial.exists());
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");

    // With replace.
    let mut files = Files::destination_unnamed(&dest, true);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"new".to_vec(),
    });
    persist(&mut files, 0, FileRef::Local);
    assert_eq!(std::fs::read(&dest).unwrap(), b"new");
}

#[test]
fn hex_names_round_trip() {
    let d = digest(b"abc");
    assert_eq!(parse_hex(&hex(&d)), Some(d));
    assert_eq!(parse_hex(&hex(&d).to_uppercase()), Some(d));
    assert_eq!(parse_hex("zz"), None);
    assert_eq!(parse_hex(&"g".repeat(64)), None);
}

#[test]
fn persisting_a_blob_that_is_there_keeps_it_and_drops_the_copy() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let d = digest(b"same");
    for temp in [1, 2] {
        files.execute(FileOp::Write {
            temp,
            offset: 0,
            data: b"same".to_vec(),
        });
        assert_eq!(
            persist(&mut files, temp, FileRef::Blob(d)),
            FileAnswer::Persisted { temp }
        );
    }
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    let blob = dir.path().join("blobs").join(hex(&d));
    assert_eq!(std::fs::read(blob).unwrap(), b"same");
    assert_eq!(files.open_count(), 0);
}

/// Runs `work` on another thread and gives back what it returns, or fails
/// if it has not returned in 20 s (it is waiting for something held).
fn without_waiting<T: Send + 'static>(work: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(work());
    });
    rx.recv_timeout(std::time::Duration::from_secs(20))
        .expect("the executor waited for a persist held on the writer thread")
}

#[test]
fn a_server_persist_waits_on_the_writer_thread_while_other_work_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let there = b"already there".to_vec();
    let d0 = digest(&there);
    std::fs::create_dir_all(dir.path().join("blobs")).unwrap();
    std::fs::write(dir.path().join("blobs").join(hex(&d0)), &there).unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let gate = files.writer.hold_persists();
    let content = vec![5u8; 100_000];
    let d1 = digest(&content);
    let root = dir.path().to_path_buf();
    let (mut files, got) = without_waiting(move || {
        assert_eq!(
            files.execute(FileOp::Write {
                temp: 1,
                offset: 0,
                data: content,
            }),
            None
        );
        let persist = files.execute(FileOp::Persist {
            temp: 1,
            to: FileRef::Blob(d1),
        });
        // Meanwhile: another upload's writes, and a read of a blob.
        let write = files.execute(FileOp::Write {
            temp: 2,
            offset: 0,
            data: vec![1; 4096],
        });
        let got = read_all(&mut files, 7, FileRef::Blob(d0), 4096);
        // Asked after the persist, so done after it.
        files.execute(FileOp::Remove {
            file: FileRef::Blob(d1),
        });
        assert_eq!((persist, write), (None, None));
        assert_eq!(files.take_answer(), None);
        assert!(root.join("tmp/1").exists());
        assert!(!root.join("blobs").join(hex(&d1)).exists());
        (files, got)
    });
    assert_eq!(got, there);
    gate.open();
    files.wait_idle();
    assert_eq!(files.take_answer(), Some(FileAnswer::Persisted { temp: 1 }));
    assert_eq!(files.take_answer(), None);
    assert!(!dir.path().join("tmp/1").exists());
    // The removal ran after the persist, not before it (which would have
    // left the blob in place).
    assert!(!dir.path().join("blobs").join(hex(&d1)).exists());
}

#[test]
fn a_discarded_file_frees_its_name_at_once_and_takes_its_failures_with_it() {
    if !Path::new("/dev/full").exists() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let gate = files.writer.hold_persists();
    std::os::unix::fs::symlink("/dev/full", dir.path().join("tmp/5")).unwrap();
    let fresh = b"the second attempt".to_vec();
    let d = digest(&fresh);
    let root = dir.path().to_path_buf();
    let mut files = without_waiting(move || {
        // A first attempt whose write fails on the writer thread, while a
        // persist of another file holds the queue behind it.
        files.execute(FileOp::Write {
            temp: 5,
            offset: 0,
            data: vec![0; buffers::GATHER_BELOW],
        });
        files.execute(FileOp::Persist {
            temp: 3,
            to: FileRef::Blob([3; 32]),
        });
        files.execute(FileOp::Discard { temp: 5 });
        assert!(root.join("tmp/5").symlink_metadata().is_err());
        // The next attempt, under the same number: a new file.
        files.execute(FileOp::Write {
            temp: 5,
            offset: 0,
            data: fresh,
        });
        files.execute(FileOp::Persist {
            temp: 5,
            to: FileRef::Blob(d),
        });
        files
    });
    gate.open();
    files.wait_idle();
    let mut answers = Vec::new();
    while let Some(a) = files.take_answer() {
        answers.push(a);
    }
    assert_eq!(
        answers,
        vec![
            FileAnswer::Persisted { temp: 3 },
            FileAnswer::Persisted { temp: 5 }
        ]
    );
    let blob = dir.path().join("blobs").join(hex(&d));
    assert_eq!(std::fs::read(blob).unwrap(), b"the second attempt");
}

#[test]
fn a_temporary_file_being_persisted_cannot_be_reopened() {
    let dir = tempfile::tempdir().unwrap();
    let (mut files, _) = Files::server(dir.path()).unwrap();
    let gate = files.writer.hold_persists();
    let mut files = without_waiting(move || {
        files.execute(FileOp::Write {
            temp: 4,
            offset: 0,
            data: b"first".to_vec(),
        });
        files.execute(FileOp::Persist {
            temp: 4,
            to: FileRef::Blob(digest(b"first")),
        });
        let again = files.execute(FileOp::Write {
            temp: 4,
            offset: 0,
            data: b"other".to_vec(),
        });
        assert!(
            matches!(&again, Some(FileAnswer::Failed { handle: 4, failure }) if failure.error.contains("being persisted")),
            "{again:?}"
        );
        files
    });
    gate.open();
    files.wait_idle();
    assert_eq!(files.take_answer(), Some(FileAnswer::Persisted { temp: 4 }));
    let blob = dir.path().join("blobs").join(hex(&digest(b"first")));
    assert_eq!(std::fs::read(blob).unwrap(), b"first");
}

/// A peer sharing `DIR/shared` of a fresh temporary `DIR`, so that there is
/// an outside to keep untouched.
fn shared() -> (tempfile::TempDir, PathBuf, Files) {
    let root = tempfile::tempdir().unwrap();
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    let files = Files::shared_dir(&dir).unwrap();
    (root, dir, files)
}

fn named(name: &str) -> FileRef {
    FileRef::Named(name.into())
}

/// The names a `List` answers.
fn listed(files: &mut Files) -> Vec<String> {
    match files.execute(FileOp::List { handle: 1 }) {
        Some(FileAnswer::Listed { entries, .. }) => entries.into_iter().map(|e| e.name).collect(),
        other => panic!("{other:?}"),
    }
}

/// The failure a read of `name` is answered with, at once.
fn read_failure(files: &mut Files, name: &str) -> FileFailure {
    let op = FileOp::Read {
        handle: 2,
        file: named(name),
        offset: 0,
        len: 10,
    };
    match files.execute(op) {
        Some(FileAnswer::Failed { failure, .. }) => failure,
        other => panic!("a read of {name} refused, got {other:?}"),
    }
}

/// Writes `data` to `temp` and persists it as `name`; the answer.
fn put(files: &mut Files, temp: u64, name: &str, data: &[u8]) -> FileAnswer {
    files.execute(FileOp::Write {
        temp,
        offset: 0,
        data: data.to_vec(),
    });
    persist(files, temp, named(name))
}

/// Everything under `path`, relative to it, sorted.
fn tree(path: &Path) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![path.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            found.push(p.strip_prefix(path).unwrap().display().to_string());
            if p.symlink_metadata().unwrap().is_dir() {
                stack.push(p);
            }
        }
    }
    found.sort();
    found
}

#[test]
fn a_link_is_neither_read_nor_listed_nor_written_through_even_one_inside() {
    let (root, dir, mut files) = shared();
    let outside = root.path().join("secret");
    std::fs::write(&outside, b"secret").unwrap();
    std::fs::write(dir.join("inside"), b"shared").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("out")).unwrap();
    std::os::unix::fs::symlink("inside", dir.join("in")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    for name in ["out", "in", "dangling"] {
        let failure = read_failure(&mut files, name);
        assert!(failure.error.contains("not a regular file"), "{failure:?}");
        assert!(!failure.missing && !failure.no_space, "{failure:?}");
        let answer = put(&mut files, 3, name, b"through the link");
        assert!(
            matches!(&answer, FileAnswer::Failed { failure, .. } if failure.error.contains("exists")),
            "{answer:?}"
        );
    }
    assert_eq!(listed(&mut files), ["inside"]);
    assert_eq!(std::fs::read(&outside).unwrap(), b"secret");
    assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"shared");
    assert_eq!(
        std::fs::read_link(dir.join("dangling")).unwrap(),
        Path::new("nowhere")
    );
}

#[test]
fn a_fifo_is_neither_read_nor_listed_and_nothing_waits_on_it() {
    let (_root, dir, files) = shared();
    let fifo = dir.join("pipe");
    let c = std::ffi::CString::new(fifo.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path; mkfifo reads nothing else.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(dir.join("sub")).unwrap();
    // Were the open to wait for a writer, the test would not end: it runs
    // where a wait is seen.
    let (files, failures) = without_waiting(move || {
        let mut files = files;
        let failures = [
            read_failure(&mut files, "pipe"),
            read_failure(&mut files, "sub"),
        ];
        (files, failures)
    });
    for failure in failures {
        assert!(failure.error.contains("not a regular file"), "{failure:?}");
    }
    let mut files = files;
    assert_eq!(listed(&mut files), Vec::<String>::new());
}

#[test]
fn a_start_removes_leftover_temporary_files_and_keeps_the_shared_ones() {
    let (root, dir, mut files) = shared();
    assert_eq!(
        put(&mut files, 1, "kept", b"kept"),
        FileAnswer::Persisted { temp: 1 }
    );
    // Interrupted: a temporary file left behind.
    files.execute(FileOp::Write {
        temp: 2,
        offset: 0,
        data: b"half".to_vec(),
    });
    files.wait_idle();
    drop(files);
    let tmp = dir.join(SHARED_TMP_DIR);
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 1);
    let mut files = Files::shared_dir(&dir).unwrap();
    assert_eq!(std::fs::read_dir(&tmp).unwrap().count(), 0);
    assert_eq!(listed(&mut files), ["kept"]);
    // The number is free again: a new file, not the leftover reopened.
    assert_eq!(
        put(&mut files, 2, "new", b"whole"),
        FileAnswer::Persisted { temp: 2 }
    );
    assert_eq!(read_all(&mut files, 4, named("new"), 100), b"whole");
    assert_eq!(
        tree(root.path()),
        ["shared", "shared/.ferry-tmp", "shared/kept", "shared/new"]
    );
}

#[test]
fn nothing_is_created_outside_the_directory_whatever_the_names() {
    let (root, _dir, mut files) = shared();
    std::fs::write(root.path().join("a"), b"outside").unwrap();
    for (temp, name) in [(1, "../a"), (2, ".."), (3, "/tmp/x"), (4, "x/y"), (5, "")] {
        let answer = put(&mut files, temp, name, b"escape");
        assert!(
            matches!(answer, FileAnswer::Failed { .. }),
            "{name:?}: {answer:?}"
        );
        files.execute(FileOp::Remove { file: named(name) });
    }
    assert_eq!(
        put(&mut files, 6, "ok", b"in"),
        FileAnswer::Persisted { temp: 6 }
    );
    files.execute(FileOp::Discard { temp: 7 });
    files.wait_idle();
    assert_eq!(
        tree(root.path()),
        ["a", "shared", "shared/.ferry-tmp", "shared/ok"]
    );
    assert_eq!(std::fs::read(root.path().join("a")).unwrap(), b"outside");
}

#[test]
fn a_name_taken_while_its_persist_waits_is_not_replaced() {
    let (_root, dir, files) = shared();
    let mut files = files;
    let gate = files.writer.hold_persists();
    let files = without_waiting(move || {
        files.execute(FileOp::Write {
            temp: 1,
            offset: 0,
            data: b"ours".to_vec(),
        });
        let answer = files.execute(FileOp::Persist {
            temp: 1,
            to: named("a"),
        });
        assert_eq!(answer, None, "a peer's persist does not stop its node");
        files
    });
    // Another writer (the user, another program) takes the name meanwhile.
    std::fs::write(dir.join("a"), b"theirs").unwrap();
    gate.open();
    let mut files = files;
    files.wait_idle();
    let answer = files.take_answer();
    assert!(
        matches!(&answer, Some(FileAnswer::Failed { handle: 1, failure }) if failure.error == "a already exists"),
        "{answer:?}"
    );
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"theirs");
    assert_eq!(
        std::fs::read_dir(dir.join(SHARED_TMP_DIR)).unwrap().count(),
        0
    );
}

#[test]
fn a_listing_gives_sizes_and_modification_times() {
    let (_root, dir, mut files) = shared();
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    assert_eq!(
        put(&mut files, 1, "a", b"12345"),
        FileAnswer::Persisted { temp: 1 }
    );
    std::fs::write(dir.join("b"), b"").unwrap();
    let entries = match files.execute(FileOp::List { handle: 9 }) {
        Some(FileAnswer::Listed { handle: 9, entries }) => entries,
        other => panic!("{other:?}"),
    };
    let sizes: Vec<(&str, u64)> = entries.iter().map(|e| (e.name.as_str(), e.size)).collect();
    assert_eq!(sizes, [("a", 5), ("b", 0)]);
    for e in &entries {
        // Filesystem timestamps may be coarser than the clock's.
        assert!(e.modified_ms + 1000 >= before, "{e:?} vs {before}");
    }
}

#[test]
fn a_shared_directory_must_be_a_directory_and_its_temporaries_no_link() {
    let root = tempfile::tempdir().unwrap();
    assert!(Files::shared_dir(&root.path().join("missing")).is_err());
    std::fs::write(root.path().join("file"), b"").unwrap();
    assert!(Files::shared_dir(&root.path().join("file")).is_err());
    let dir = root.path().join("shared");
    std::fs::create_dir(&dir).unwrap();
    std::os::unix::fs::symlink(root.path(), dir.join(SHARED_TMP_DIR)).unwrap();
    assert!(Files::shared_dir(&dir).is_err());
}

#[test]
fn a_peer_refuses_blobs_and_a_server_named_files() {
    let (_root, _dir, mut files) = shared();
    let failed = files.execute(FileOp::Read {
        handle: 1,
        file: FileRef::Blob(digest(b"x")),
        offset: 0,
        len: 1,
    });
    assert!(
        matches!(failed, Some(FileAnswer::Failed { handle: 1, .. })),
        "{failed:?}"
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _) = Files::server(dir.path()).unwrap();
    assert!(matches!(
        server.execute(FileOp::List { handle: 2 }),
        Some(FileAnswer::Failed { handle: 2, .. })
    ));
    assert!(matches!(
        persist(&mut server, 3, named("a")),
        FileAnswer::Failed { handle: 3, .. }
    ));
}

/// Executes a `Rename` and waits for its answer (from the writer thread,
/// or at once for names refused before anything is touched).
fn rename(files: &mut Files, handle: u64, from: FileRef, to: FileRef) -> FileAnswer {
    if let Some(answer) = files.execute(FileOp::Rename { handle, from, to }) {
        return answer;
    }
    files.wait_idle();
    let answer = files.take_answer().expect("the rename is answered");
    assert_eq!(files.take_answer(), None, "one answer per rename");
    answer
}

#[test]
fn a_link_is_never_renamed_nor_replaced_and_nothing_outside_changes() {
    let (root, dir, mut files) = shared();
    let secret = root.path().join("secret");
    let elsewhere = root.path().join("elsewhere");
    std::fs::write(&secret, b"secret").unwrap();
    std::fs::create_dir(&elsewhere).unwrap();
    std::fs::write(dir.join("inside"), b"shared").unwrap();
    std::os::unix::fs::symlink(&secret, dir.join("out")).unwrap();
    std::os::unix::fs::symlink(&elsewhere, dir.join("outdir")).unwrap();
    std::os::unix::fs::symlink("inside", dir.join("in")).unwrap();
    std::os::unix::fs::symlink("nowhere", dir.join("dangling")).unwrap();
    let before = tree(root.path());
    let links = ["out", "outdir", "in", "dangling"];
    for (i, link) in links.into_iter().enumerate() {
        let h = 10 * i as u64;
        // Renamed: refused as no regular file, not as missing.
        let answer = rename(&mut files, h, named(link), named("moved"));
        assert!(
            matches!(&answer, FileAnswer::Failed { failure, .. } if failure.error.contains("not a regular file") && !failure.missing),
            "{link}: {answer:?}"
        );
        // Renamed onto: refused as taken, the link left as it is.
        let answer = rename(&mut files, h + 1, named("inside"), named(link));
        assert!(
            matches!(&answer, FileAnswer::Failed { failure, .. } if failure.error == format!("{link} already exists")),
            "onto {link}: {answer:?}"
        );
        // Out through it: not a plain name.
        let through = format!("{link}/x");
        let answer = rename(&mut files, h + 2, named("inside"), named(&through));
        assert!(matches!(answer, FileAnswer::Failed { .. }), "{answer:?}");
    }
    // Nor the temporary files' directory, which is no regular file.
    let answer = rename(&mut files, 50, named(SHARED_TMP_DIR), named("tmp"));
    assert!(matches!(answer, FileAnswer::Failed { .. }), "{answer:?}");
    assert_eq!(tree(root.path()), before, "nothing moved, nothing made");
    assert_eq!(std::fs::read(&secret).unwrap(), b"secret");
    assert_eq!(std::fs::read_link(dir.join("out")).unwrap(), secret);
    assert_eq!(std::fs::read_link(dir.join("outdir")).unwrap(), elsewhere);
    assert_eq!(std::fs::read(dir.join("inside")).unwrap(), b"shared");
    assert_eq!(listed(&mut files), ["inside"]);
}

#[test]
fn a_rename_waits_behind_the_persist_asked_before_it() {
    let (_root, dir, files) = shared();
    let mut files = files;
    let gate = files.writer.hold_persists();
    let files = without_waiting(move || {
        files.execute(FileOp::Write {
            temp: 1,
            offset: 0,
            data: b"made".to_vec(),
        });
        let persist = files.execute(FileOp::Persist {
            temp: 1,
            to: named("a"),
        });
        let rename = files.execute(FileOp::Rename {
            handle: 2,
            from: named("a"),
            to: named("b"),
        });
        // Neither stops the node; both wait on the writer thread.
        assert_eq!((persist, rename), (None, None));
        assert_eq!(files.take_answer(), None);
        files
    });
    assert!(!dir.join("a").exists() && !dir.join("b").exists());
    gate.open();
    let mut files = files;
    files.wait_idle();
    assert_eq!(files.take_answer(), Some(FileAnswer::Persisted { temp: 1 }));
    assert_eq!(files.take_answer(), Some(FileAnswer::Renamed { handle: 2 }));
    assert_eq!(files.take_answer(), None);
    assert_eq!(listed(&mut files), ["b"]);
    assert_eq!(read_all(&mut files, 3, named("b"), 100), b"made");
}

#[test]
fn a_read_handle_of_a_renamed_file_does_not_read_on_under_the_old_name() {
    let (_root, dir, mut files) = shared();
    std::fs::write(dir.join("a"), vec![7u8; 10_000]).unwrap();
    let read = |files: &mut Files| {
        files.execute(FileOp::Read {
            handle: 1,
            file: named("a"),
            offset: 0,
            len: 100,
        })
    };
    assert!(matches!(read(&mut files), Some(FileAnswer::Read { .. })));
    assert_eq!(
        rename(&mut files, 2, named("a"), named("b")),
        FileAnswer::Renamed { handle: 2 }
    );
    let after = read(&mut files);
    assert!(
        matches!(&after, Some(FileAnswer::Failed { failure, .. }) if failure.missing),
        "{after:?}"
    );
}

#[test]
fn the_fallback_rename_moves_and_never_replaces() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
    );
    std::fs::write(&a, b"one").unwrap();
    std::fs::write(&b, b"two").unwrap();
    let taken = writer::link_then_unlink(&a, &b).unwrap_err();
    assert_eq!(taken.kind(), ErrorKind::AlreadyExists);
    assert_eq!(std::fs::read(&a).unwrap(), b"one");
    assert_eq!(std::fs::read(&b).unwrap(), b"two");
    writer::link_then_unlink(&a, &c).unwrap();
    assert!(!a.exists());
    assert_eq!(std::fs::read(&c).unwrap(), b"one");
    let gone = writer::link_then_unlink(&a, &dir.path().join("d")).unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound);
}

#[test]
fn a_modification_time_is_the_files_from_the_moment_it_appears() {
    let (_root, dir, mut files) = shared();
    let time = std::time::UNIX_EPOCH + Duration::from_millis(1_500_000_000_789);
    let files = {
        let gate = files.writer.hold_persists();
        files.execute(FileOp::SetModified {
            temp: 1,
            modified_ms: 1_500_000_000_789,
        });
        files.execute(FileOp::Write {
            temp: 1,
            offset: 0,
            data: vec![1; 100_000],
        });
        let mut files = without_waiting(move || {
            assert_eq!(
                files.execute(FileOp::Persist {
                    temp: 1,
                    to: named("a"),
                }),
                None
            );
            files
        });
        // Polled while the persist goes on: whenever the name is there, it
        // has the time already (set on the file before it was linked in).
        gate.open();
        let name = dir.join("a");
        for _ in 0..10_000 {
            if let Ok(meta) = std::fs::symlink_metadata(&name) {
                assert_eq!(meta.modified().unwrap(), time);
                break;
            }
        }
        files.wait_idle();
        files
    };
    let mut files = files;
    assert_eq!(files.take_answer(), Some(FileAnswer::Persisted { temp: 1 }));
    let meta = std::fs::metadata(dir.join("a")).unwrap();
    assert_eq!(meta.modified().unwrap(), time);
}

#[test]
fn a_server_and_a_client_refuse_modification_times_and_renames() {
    let dir = tempfile::tempdir().unwrap();
    let (mut server, _) = Files::server(dir.path()).unwrap();
    let content = b"blob".to_vec();
    let d = digest(&content);
    server.execute(FileOp::SetModified {
        temp: 1,
        modified_ms: 1000,
    });
    server.execute(FileOp::Write {
        temp: 1,
        offset: 0,
        data: content,
    });
    // A time it cannot keep fails the file's persist, as the contract says.
    assert!(matches!(
        persist(&mut server, 1, FileRef::Blob(d)),
        FileAnswer::Failed { handle: 1, .. }
    ));
    assert!(matches!(
        rename(&mut server, 2, FileRef::Blob(d), FileRef::Blob([0; 32])),
        FileAnswer::Failed { handle: 2, .. }
    ));
    server.execute(FileOp::Discard { temp: 1 });
    // The number is free of it again.
    server.execute(FileOp::Write {
        temp: 1,
        offset: 0,
        data: b"blob".to_vec(),
    });
    assert_eq!(
        persist(&mut server, 1, FileRef::Blob(d)),
        FileAnswer::Persisted { temp: 1 }
    );
    let path = dir.path().join("download");
    let mut client = Files::destination_unnamed(&path, false);
    assert!(matches!(
        rename(&mut client, 3, FileRef::Local, FileRef::Local),
        FileAnswer::Failed { handle: 3, .. }
    ));
    client.execute(FileOp::SetModified {
        temp: 4,
        modified_ms: 1000,
    });
    assert!(matches!(
        persist(&mut client, 4, FileRef::Local),
        FileAnswer::Failed { handle: 4, .. }
    ));
    assert!(!path.exists());
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A download of `content` onto `dest` (replacing if `replace`), persisted.
fn download(dest: &Path, replace: bool, content: &[u8]) -> FileAnswer {
    let mut files = Files::destination_unnamed(dest, replace);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: content.to_vec(),
    });
    let answer = persist(&mut files, 0, FileRef::Local);
    if matches!(answer, FileAnswer::Failed { .. }) {
        files.execute(FileOp::Discard { temp: 0 });
    }
    answer
}

fn failed_with(answer: FileAnswer, words: &str) {
    match answer {
        FileAnswer::Failed { failure, .. } => {
            assert!(failure.error.contains(words), "{failure:?}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_download_has_no_name_until_it_is_in_place() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let mut files = Files::destination_unnamed(&dest, false);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: vec![5u8; 300_000],
    });
    files.wait_idle();
    // O_TMPFILE: nothing in the directory while it is written (ext4 and
    // tmpfs have it; the named road is tested above).
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    assert_eq!(
        persist(&mut files, 0, FileRef::Local),
        FileAnswer::Persisted { temp: 0 }
    );
    assert_eq!(names_in(dir.path()), ["out.bin"]);
    assert_eq!(std::fs::read(&dest).unwrap(), vec![5u8; 300_000]);

    // Dropped before its persist (a killed process): nothing at all.
    let other = dir.path().join("other.bin");
    let mut files = Files::destination_unnamed(&other, false);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"never".to_vec(),
    });
    files.wait_idle();
    drop(files);
    assert_eq!(names_in(dir.path()), ["out.bin"]);

    // Onto a name taken meanwhile, never replaced (linkat refuses).
    let mut files = Files::destination_unnamed(&other, false);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"late".to_vec(),
    });
    std::fs::write(&other, b"first").unwrap();
    failed_with(persist(&mut files, 0, FileRef::Local), "exists");
    files.execute(FileOp::Discard { temp: 0 });
    assert_eq!(std::fs::read(&other).unwrap(), b"first");
    assert_eq!(names_in(dir.path()), ["other.bin", "out.bin"]);
}

#[test]
fn force_replaces_only_a_regular_file_or_a_link() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();

    // A FIFO: refused, and still a FIFO (never opened: no hang).
    let fifo = dir.path().join("fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    failed_with(download(&fifo, true, b"x"), "is a FIFO");
    assert!(std::fs::symlink_metadata(&fifo)
        .unwrap()
        .file_type()
        .is_fifo());

    // A socket, a directory: refused.
    let sock = dir.path().join("sock");
    let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    failed_with(download(&sock, true, b"x"), "is a socket");
    let sub = dir.path().join("sub");
    std::fs::create_dir(&sub).unwrap();
    failed_with(download(&sub, true, b"x"), "is a directory");
    assert!(sub.is_dir());

    // A link: the link itself is replaced; what it pointed to is untouched.
    let target = dir.path().join("target");
    std::fs::write(&target, b"keep me").unwrap();
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&target, &link).unwrap();
    assert_eq!(
        download(&link, true, b"new"),
        FileAnswer::Persisted { temp: 0 }
    );
    assert!(std::fs::symlink_metadata(&link).unwrap().is_file());
    assert_eq!(std::fs::read(&link).unwrap(), b"new");
    assert_eq!(std::fs::read(&target).unwrap(), b"keep me");
    // A dangling link too.
    let dangling = dir.path().join("dangling");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &dangling).unwrap();
    download(&dangling, true, b"d");
    assert_eq!(std::fs::read(&dangling).unwrap(), b"d");
    assert!(!dir.path().join("nowhere").exists());

    // A 0600 file stays 0600 (a new file would be 0644 under umask 022),
    // set-user-ID is not carried over.
    let private = dir.path().join("private");
    std::fs::write(&private, b"old").unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o600)).unwrap();
    download(&private, true, b"secret");
    let meta = std::fs::metadata(&private).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(std::fs::read(&private).unwrap(), b"secret");
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o4750)).unwrap();
    download(&private, true, b"again");
    assert_eq!(std::fs::metadata(&private).unwrap().mode() & 0o7777, 0o750);

    // Its owner is kept: as root, give it another's and see it stay; as
    // anyone else, a file of our own keeps ours.
    let is_root = unsafe { libc::geteuid() } == 0;
    if is_root {
        std::os::unix::fs::chown(&private, Some(1234), Some(4321)).unwrap();
        download(&private, true, b"owned");
        let meta = std::fs::metadata(&private).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
        assert_eq!(std::fs::read(&private).unwrap(), b"owned");
    }
    // Nothing left beside them.
    assert!(names_in(dir.path()).iter().all(|n| !n.contains("partial")));
}

#[test]
fn force_refuses_a_device_if_one_can_be_made() {
    let dir = tempfile::tempdir().unwrap();
    let null = dir.path().join("null");
    let c = std::ffi::CString::new(null.to_str().unwrap()).unwrap();
    // A character device like /dev/null (1, 3): only root may make one.
    let dev = libc::makedev(1, 3);
    if unsafe { libc::mknod(c.as_ptr(), libc::S_IFCHR | 0o666, dev) } != 0 {
        eprintln!("skipped: cannot make a device node (not root)");
        return;
    }
    failed_with(download(&null, true, b"x"), "is a character device");
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&null)
        .unwrap()
        .file_type()
        .is_char_device());
}

#[test]
fn a_target_swapped_for_a_fifo_before_the_rename_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out");
    std::fs::write(&dest, b"old").unwrap();
    let mut files = Files::destination_unnamed(&dest, true);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"new".to_vec(),
    });
    // The command looked at a regular file; a FIFO is there by the persist.
    std::fs::remove_file(&dest).unwrap();
    let c = std::ffi::CString::new(dest.to_str().unwrap()).unwrap();
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    failed_with(persist(&mut files, 0, FileRef::Local), "is a FIFO");
    files.execute(FileOp::Discard { temp: 0 });
    use std::os::unix::fs::FileTypeExt;
    assert!(std::fs::symlink_metadata(&dest)
        .unwrap()
        .file_type()
        .is_fifo());
    assert_eq!(names_in(dir.path()), ["out"]);
}

#[test]
fn partial_files_of_gone_processes_are_removed() {
    let dir = tempfile::tempdir().unwrap();
    // A process that is gone: one that ran and was waited for.
    let mut child = std::process::Command::new("true").spawn().unwrap();
    let dead = child.id();
    child.wait().unwrap();
    let mine = std::process::id();
    let stale = dir.path().join(format!(".a.bin.ferry-partial-{dead}"));
    let live = dir.path().join(format!(".b.bin.ferry-partial-{mine}"));
    let other = dir.path().join(format!(".c.ferry-partial-{dead}x"));
    for p in [&stale, &live, &other] {
        std::fs::write(p, b"part").unwrap();
    }
    // A link of that form is not followed, nor removed.
    let target = dir.path().join("target");
    std::fs::write(&target, b"t").unwrap();
    let link = dir.path().join(format!(".d.ferry-partial-{dead}"));
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let removed = local::remove_stale_partials(dir.path());
    assert_eq!(removed, vec![stale.clone()]);
    assert!(!stale.exists());
    assert!(live.exists() && other.exists() && target.exists());
    assert!(link.symlink_metadata().is_ok());
    assert_eq!(local::partial_pid(".x.y.ferry-partial-12"), Some(12));
    assert_eq!(local::partial_pid("x.ferry-partial-12"), None);
}

#[test]
fn an_upload_whose_file_grows_or_shrinks_fails_at_its_last_block() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src.bin");
    let content = vec![9u8; 200_000];
    std::fs::write(&src, &content).unwrap();
    for change in [50_000u64, 300_000] {
        let file = File::open(&src).unwrap();
        let mut files = Files::source_file(&src, Arc::new(file), content.len() as u64);
        let got = files.execute(FileOp::Read {
            handle: 0,
            file: FileRef::Local,
            offset: 0,
            len: 131_072,
        });
        assert!(matches!(got, Some(FileAnswer::Read { .. })));
        assert_eq!(files.read(0, 0, 131_072).unwrap().len(), 131_072);
        OpenOptions::new()
            .write(true)
            .open(&src)
            .unwrap()
            .set_len(change)
            .unwrap();
        let last = 200_000 - 131_072;
        files.execute(FileOp::Read {
            handle: 0,
            file: FileRef::Local,
            offset: 131_072,
            len: last,
        });
        let failure = files.read(0, 131_072, last).unwrap_err();
        assert!(failure.error.contains(CHANGED_WHILE_SENT), "{failure:?}");
        std::fs::write(&src, &content).unwrap();
    }
    // Unchanged: read to the end.
    let file = File::open(&src).unwrap();
    let mut files = Files::source_file(&src, Arc::new(file), content.len() as u64);
    assert_eq!(read_all(&mut files, 0, FileRef::Local, 131_072), content);
}

#[test]
fn what_has_no_size_in_advance_is_copied_to_its_end() {
    use std::io::{Read as _, Seek as _};
    let dir = tempfile::tempdir().unwrap();
    // /proc says 0 bytes for a file that holds some.
    let status = File::open("/proc/self/status").unwrap();
    assert_eq!(status.metadata().unwrap().len(), 0);
    assert_eq!(local::size_known(&status).unwrap(), None);
    let (mut copy, size) = local::spool(&mut &status, dir.path()).unwrap();
    assert!(size > 0);
    let mut text = String::new();
    copy.rewind().unwrap();
    copy.read_to_string(&mut text).unwrap();
    assert_eq!(text.len() as u64, size);
    assert!(text.contains("Name:"), "{text}");
    // A pipe: exactly what was written to it; the copy has no name.
    let (mut reader, mut writer) = std::io::pipe().unwrap();
    let sent = noise_bytes(1_000_003);
    let feeder = {
        let sent = sent.clone();
        std::thread::spawn(move || std::io::Write::write_all(&mut writer, &sent).unwrap())
    };
    let (copy, size) = local::spool(&mut reader, dir.path()).unwrap();
    feeder.join().unwrap();
    assert_eq!(size, sent.len() as u64);
    assert_eq!(names_in(dir.path()), Vec::<String>::new());
    let mut files = Files::source_file(&dir.path().join("pipe"), Arc::new(copy), size);
    assert_eq!(read_all(&mut files, 0, FileRef::Local, 131_072), sent);
    // A regular file of a real filesystem is read in place.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, b"abc").unwrap();
    assert_eq!(
        local::size_known(&File::open(&plain).unwrap()).unwrap(),
        Some(3)
    );
    let empty = dir.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    assert_eq!(
        local::size_known(&File::open(&empty).unwrap()).unwrap(),
        None
    );
}

fn noise_bytes(len: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A download's attributes are its file's once it is in place: the mode
/// exactly (whatever the umask) for a new file, a replaced file's mode
/// kept; the time to the nanosecond; a server asked to set them fails the
/// file's persist.
#[test]
fn a_downloads_attributes_are_set_before_it_is_linked_in() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let attrs = FileAttrs::new(1_234_567_890, 123_456_789, 0o751);
    let download = |path: &Path, replace: bool, attrs: Option<FileAttrs>, named: bool| {
        let mut files = Files::destination(path, replace);
        if named {
            files = files.named_partial();
        }
        if let Some(attrs) = attrs {
            files.execute(FileOp::SetAttrs { temp: 0, attrs });
        }
        files.execute(FileOp::Write {
            temp: 0,
            offset: 0,
            data: b"content".to_vec(),
        });
        persist(&mut files, 0, FileRef::Local)
    };
    for named in [false, true] {
        let path = dir.path().join(format!("new-{named}"));
        // Set-ID bits a server should never send are dropped here too.
        let sent = FileAttrs {
            mode: 0o4751,
            ..attrs
        };
        assert_eq!(
            download(&path, false, Some(sent), named),
            FileAnswer::Persisted { temp: 0 }
        );
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o751, "named partial: {named}");
        assert_eq!(
            (meta.mtime(), meta.mtime_nsec()),
            (1_234_567_890, 123_456_789)
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"content");
    }
    // Over a file that `--force` replaces: the replaced file's mode (a
    // private file stays private), the download's time.
    let old = dir.path().join("old");
    std::fs::write(&old, b"old").unwrap();
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = std::time::SystemTime::now();
    assert_eq!(
        download(&old, true, Some(attrs), false),
        FileAnswer::Persisted { temp: 0 }
    );
    let meta = std::fs::metadata(&old).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o600);
    assert_eq!(
        (meta.mtime(), meta.mtime_nsec()),
        (1_234_567_890, 123_456_789)
    );
    // Over a link: a new file, with the download's mode.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(&old, &link).unwrap();
    assert_eq!(
        download(&link, true, Some(attrs), false),
        FileAnswer::Persisted { temp: 0 }
    );
    assert_eq!(
        std::fs::symlink_metadata(&link).unwrap().mode() & 0o777,
        0o751
    );
    assert_eq!(std::fs::metadata(&old).unwrap().mode() & 0o777, 0o600);
    // Without attributes: the replaced file's mode, and the time of now.
    std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o640)).unwrap();
    assert_eq!(
        download(&old, true, None, false),
        FileAnswer::Persisted { temp: 0 }
    );
    let meta = std::fs::metadata(&old).unwrap();
    assert_eq!(meta.mode() & 0o777, 0o640);
    assert!(meta.modified().unwrap() >= before);
    // A file of mode 0 is still placed (its descriptor is open for
    // writing already).
    let none = dir.path().join("none");
    let zero = FileAttrs { mode: 0, ..attrs };
    assert_eq!(
        download(&none, false, Some(zero), false),
        FileAnswer::Persisted { temp: 0 }
    );
    assert_eq!(std::fs::metadata(&none).unwrap().mode() & 0o777, 0);
    // Times before 1970 are times too.
    let past = dir.path().join("past");
    let old_time = FileAttrs::new(-1_000_000, 5, 0o644);
    assert_eq!(
        download(&past, false, Some(old_time), false),
        FileAnswer::Persisted { temp: 0 }
    );
    let meta = std::fs::metadata(&past).unwrap();
    assert_eq!((meta.mtime(), meta.mtime_nsec()), (-1_000_000, 5));

    let (mut server, _) = Files::server(&dir.path().join("server")).unwrap();
    server.execute(FileOp::SetAttrs { temp: 1, attrs });
    server.execute(FileOp::Write {
        temp: 1,
        offset: 0,
        data: b"blob".to_vec(),
    });
    assert!(matches!(
        persist(&mut server, 1, FileRef::Blob(digest(b"blob"))),
        FileAnswer::Failed { handle: 1, .. }
    ));
}

#[test]
fn a_resumable_download_writes_its_partial_file_privately_and_leaves_none_once_in_place() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("out.bin");
    let part = part_path(&dest);
    assert_eq!(part, dir.path().join(".out.bin.ferry-part"));
    let lock = local::lock_part(&part).unwrap();
    let mut files = Files::destination(&dest, false);
    assert_eq!(files.kept(), 0);
    files.execute(FileOp::Write {
        temp: 0,
        offset: 0,
        data: b"hello".to_vec(),
    });
    files.wait_idle();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&part), 0o600, "private while partial");
    assert_eq!(
        persist(&mut files, 0, FileRef::Local),
        FileAnswer::Persisted { temp: 0 }
    );
    drop(lock);
    assert_eq!(std::fs::read(&dest).unwrap(), b"hello");
    assert!(!part.exists());
    assert_eq!(mode(&dest), local::new_file_mode(), "a new file's mode");
}

#[test]
fn a_partial_file_left_behind_is_taken_up_read_back_and_written_on() {
    let dir = tempfile::tempdir().unwrap();
    let dest = dir.path().join("big.bin");
    let part = part_path(&dest);
    let block = BLOCK_BYTES as usize;
    let content: Vec<u8> = (0..5 * block + 100).map(|i| (i % 251) as u8).collect();
    // A killed download left two blocks and a bit.
    std::fs::write(&part, &content[..2 * block + 777]).unwrap();
    let _lock = local::lock_part(&part).unwrap();
    let mut files = Files::destination(&dest, false);
    assert_eq!(files.kept(), 2 * BLOCK_BYTES, "cut back to whole blocks");
    assert_eq!(std::fs::metadata(&part).unwrap().len(), 2 * BLOCK_BYTES);
    assert_eq!(
        read_all(&mut files, 0, FileRef::Temp(0), block),
        content[..2 * block]
    );
    // Written on, not over: the first blocks stay.
    for (i, piece) in content[2 * block..].chunks(block).enumerate() {
        files.execute(FileOp::Write {
            temp: 0,
            offset: (2 * block + i * block) as u64,
            data: piece.to_vec(),
        });
    }
    assert_eq!(
        persist(&mut files, 0, FileRef::Local),
        FileAnswer::Persisted { temp: 0 }
    );
    assert_eq!(std::fs::read(&dest).unwrap(), content);
    assert!(!part.exists());
}

#[test]
fn a_partial_file_is_locked_by_one_get_and_never_a_link() {
    let dir = tempfile::tempdir().unwrap();
    let part = part_path(&dir.path().join("x"));
    let held = local::lock_part(&part).unwrap();
    let again = local::lock_part(&part);
    assert!(
        again
            .as_ref()
            .is_err_and(|e| e.contains("another ferry get")),
        "{again:?}"
    );
    drop(held);
    assert!(
        local::lock_part(&part).is_ok(),
        "free once the first is gone"
    );
    let link = part_path(&dir.path().join("y"));
    let target = dir.path().join("elsewhere");
    std::fs::write(&target, b"not yours").unwrap();
    std::os::unix::fs::symlink(&target, &link).unwrap();
    let refused = local::lock_part(&link);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(local::take_up_part(&link, BLOCK_BYTES).unwrap(), None);
    assert_eq!(std::fs::read(&target).unwrap(), b"not yours");
}

#[test]
fn a_batch_of_downloads_writes_file_i_through_temporary_handle_i() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.txt"),
        dir.path().join("b.txt"),
        dir.path().join("c.txt"),
    );
    // What an earlier try left of b: emptied, not written over (its tail
    // would outlive the shorter file).
    std::fs::write(part_path(&b), vec![7u8; 3 * BLOCK_BYTES as usize]).unwrap();
    // c exists; only a batch file that may replace it does.
    std::fs::write(&c, b"old c").unwrap();
    let locks: Vec<_> = [&a, &b, &c]
        .iter()
        .map(|p| local::lock_part(&part_path(p)).unwrap())
        .collect();
    let mut files =
        Files::destinations(&[(a.clone(), false), (b.clone(), false), (c.clone(), false)]);
    assert_eq!(files.kept(), 0, "a batch is not resumed");
    assert_eq!(std::fs::metadata(part_path(&b)).unwrap().len(), 0);
    // Interleaved, as a batch's transfers arrive.
    for (temp, data) in [(1u64, &b"bee"[..]), (0, b"ay"), (2, b"new c")] {
        files.execute(FileOp::Write {
            temp,
            offset: 0,
            data: data.to_vec(),
        });
    }
    assert_eq!(
        persist(&mut files, 1, FileRef::Local),
        FileAnswer::Persisted { temp: 1 }
    );
    assert_eq!(
        persist(&mut files, 0, FileRef::Local),
        FileAnswer::Persisted { temp: 0 }
    );
    failed_with(persist(&mut files, 2, FileRef::Local), "exists");
    drop(locks);
    assert_eq!(std::fs::read(&a).unwrap(), b"ay");
    assert_eq!(std::fs::read(&b).unwrap(), b"bee");
    assert_eq!(std::fs::read(&c).unwrap(), b"old c", "not replaced unasked");
    // A handle past the batch names no file.
    files.execute(FileOp::Write {
        temp: 3,
        offset: 0,
        data: b"x".to_vec(),
    });
    files.wait_idle();
    failed_with(persist(&mut files, 3, FileRef::Local), "no local file 3");
    assert!(!part_path(&a).exists() && !part_path(&b).exists());
}
