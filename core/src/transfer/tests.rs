use super::messages::{chunk_count, BLOCK_CHUNKS};
use super::*;
use crate::time::Timestamp;
use crate::Entropy;
use std::collections::VecDeque;
use std::time::Duration;

/// What the link between the two ends does to messages.
#[derive(Clone, Copy, Default)]
struct Link {
    /// Per mille of messages dropped (each direction).
    drop: u64,
    /// Per mille of messages delivered twice.
    dup: u64,
    /// Flip a byte of the chunk data with this index, once.
    corrupt_chunk: Option<u64>,
    /// The receiver never answers.
    receiver_mute: bool,
    /// The sender is told this digest ([`Sender::with_digest`]) and reads
    /// the file with this byte flipped (content that rotted on its disk).
    known_digest: Option<([u8; 32], Option<usize>)>,
}

/// What the receiver's owner kept of an earlier try, to resume from.
#[derive(Clone, Default)]
struct Kept {
    /// The temporary file as it is now.
    file: Vec<u8>,
    /// The bytes the owner believes it holds (more than `file` if the
    /// file lost some).
    held: u64,
    /// Reads of the file fail.
    unreadable: bool,
}

struct Outcome {
    sent: Result<[u8; 32], TransferError>,
    received: Result<[u8; 32], TransferError>,
    committed: Option<Vec<u8>>,
    discarded: bool,
    max_in_flight: u64,
    /// Every `Read` the sender asked for, and every `Write` the receiver
    /// handed out, as (offset, length).
    reads: Vec<(u64, usize)>,
    writes: Vec<(u64, usize)>,
    /// The first chunk the sender sent, each time it sent one.
    chunks_from: Option<u64>,
    /// What each end said of a resume: the sender's `Resumed` or
    /// `StartedOver`, the receiver's `Resumed` or `StartOver`.
    sender_said: Vec<SenderOutput>,
    receiver_said: Vec<ReceiverOutput>,
}

/// Runs one transfer of `file` end to end, in virtual time.
fn run(file: &[u8], window: u64, link: Link, seed: u64) -> Outcome {
    run_kept(file, window, link, seed, None)
}

/// Like [`run`], the receiver's owner holding `kept` of an earlier try.
fn run_kept(file: &[u8], window: u64, link: Link, seed: u64, kept: Option<Kept>) -> Outcome {
    let mut rng = Entropy::from_u64(seed);
    let mut now = Timestamp::from_micros(1_000_000);
    let cfg = SenderConfig {
        window,
        ..SenderConfig::default()
    };
    let mut s = Sender::new(now, 7, "f.bin".into(), file.len() as u64, cfg);
    let mut disk = file.to_vec();
    if let Some((digest, rot)) = link.known_digest {
        s = s.with_digest(digest);
        if let Some(at) = rot {
            disk[at] ^= 0x01;
        }
    }
    let file = &disk[..];
    let mut r: Option<Receiver> = None;
    let (mut to_r, mut to_s): (VecDeque<TransferMsg>, VecDeque<TransferMsg>) = Default::default();
    let mut temp = kept.as_ref().map(|k| k.file.clone()).unwrap_or_default();
    let mut chunks_from = None;
    let (mut sender_said, mut receiver_said) = (Vec::new(), Vec::new());
    let (mut sent, mut received, mut committed, mut discarded) = (None, None, None, false);
    let mut corrupt = link.corrupt_chunk;
    let mut max_in_flight = 0;
    let mut highest_sent = 0u64;
    let mut acked = 0u64;
    let (mut reads, mut writes) = (Vec::new(), Vec::new());
    let fate = |rng: &mut Entropy| -> usize {
        let x = rng.next_u64() % 1000;
        if x < link.drop {
            0
        } else if x < link.drop + link.dup {
            2
        } else {
            1
        }
    };
    for _ in 0..2_000_000 {
        let mut moved = false;
        while let Some(o) = s.poll_output() {
            moved = true;
            match o {
                SenderOutput::Send(mut m) => {
                    if let TransferMsg::Chunks { seq, data, .. } = &mut m {
                        chunks_from = Some(chunks_from.unwrap_or(*seq).min(*seq));
                        highest_sent = highest_sent.max(*seq + chunk_count(data.len() as u64));
                        max_in_flight = max_in_flight.max(highest_sent - acked);
                        let n = chunk_count(data.len() as u64);
                        if let Some(c) = corrupt.filter(|c| (*seq..*seq + n).contains(c)) {
                            data[((c - *seq) as usize) * CHUNK] ^= 0xff;
                            corrupt = None;
                        }
                    }
                    for _ in 0..fate(&mut rng) {
                        to_r.push_back(m.clone());
                    }
                }
                SenderOutput::Read { offset, len } => {
                    reads.push((offset, len));
                    let o = offset as usize;
                    s.on_read(offset, &file[o..o + len]);
                }
                SenderOutput::Progress { .. } => {}
                o @ (SenderOutput::Resumed { .. } | SenderOutput::StartedOver { .. }) => {
                    sender_said.push(o)
                }
                SenderOutput::Finished(res) => sent = Some(res),
            }
        }
        if let Some(r) = r.as_mut() {
            while let Some(o) = r.poll_output() {
                moved = true;
                match o {
                    ReceiverOutput::Send(m) => {
                        if let TransferMsg::Ack { upto, .. } = m {
                            acked = acked.max(upto);
                        }
                        if !link.receiver_mute {
                            for _ in 0..fate(&mut rng) {
                                to_s.push_back(m.clone());
                            }
                        }
                    }
                    ReceiverOutput::Write { offset, data } => {
                        writes.push((offset, data.len()));
                        let o = offset as usize;
                        if temp.len() < o + data.len() {
                            temp.resize(o + data.len(), 0);
                        }
                        temp[o..o + data.len()].copy_from_slice(&data);
                    }
                    ReceiverOutput::Commit { .. } => {
                        committed = Some(std::mem::take(&mut temp));
                        r.committed();
                    }
                    ReceiverOutput::Discard => discarded = true,
                    ReceiverOutput::Progress { .. } => {}
                    ReceiverOutput::Read { offset, len } => match &kept {
                        Some(k) if k.unreadable => r.on_read_error(),
                        _ => {
                            let o = (offset as usize).min(temp.len());
                            let end = (o + len).min(temp.len());
                            r.on_read(offset, &temp[o..end]);
                        }
                    },
                    o @ (ReceiverOutput::Resumed { .. } | ReceiverOutput::StartOver { .. }) => {
                        receiver_said.push(o)
                    }
                    ReceiverOutput::Finished(res) => received = Some(res),
                }
            }
        }
        if let Some(m) = to_r.pop_front() {
            moved = true;
            match (&mut r, m) {
                (None, TransferMsg::Offer { id, name, size }) => {
                    let mut rx = Receiver::new(now, id, name, size, Duration::from_secs(10));
                    match &kept {
                        Some(k) => rx.resume(now, k.held),
                        None => rx.accept(now),
                    }
                    r = Some(rx);
                }
                (Some(r), m) => r.on_msg(now, m),
                (None, _) => {}
            }
        }
        if let Some(m) = to_s.pop_front() {
            moved = true;
            s.on_msg(now, m);
        }
        let done = s.is_finished() && r.as_ref().is_none_or(|r| r.is_finished());
        if done && !moved && sent.is_some() && to_r.is_empty() && to_s.is_empty() {
            break;
        }
        if !moved {
            let next = [s.poll_timeout(), r.as_ref().and_then(|r| r.poll_timeout())]
                .into_iter()
                .flatten()
                .min();
            let Some(next) = next else { break };
            now = next.max(now);
            s.handle_timeout(now);
            if let Some(r) = r.as_mut() {
                r.handle_timeout(now);
            }
        }
    }
    Outcome {
        sent: sent.expect("the sender finished"),
        received: received.unwrap_or(Err(TransferError::Cancelled)),
        committed,
        discarded,
        max_in_flight,
        reads,
        writes,
        chunks_from,
        sender_said,
        receiver_said,
    }
}

/// How the sender's outputs so far end: the failure it finished with.
fn failure(s: &mut Sender) -> Option<TransferError> {
    match std::iter::from_fn(|| s.poll_output()).last() {
        Some(SenderOutput::Finished(Err(e))) => Some(e),
        _ => None,
    }
}

fn file(len: usize, seed: u64) -> Vec<u8> {
    let mut v = vec![0u8; len];
    Entropy::from_u64(seed).fill(&mut v);
    v
}

#[test]
fn files_of_every_awkward_size_arrive_intact_at_every_window() {
    let sizes = [
        0,
        1,
        4095,
        4096,
        4097,
        3 * 4096,
        33 * 4096 + 1,
        (1 << 20) + 5,
    ];
    for size in sizes {
        for window in [1, 16, 256] {
            let f = file(size, size as u64);
            let o = run(&f, window, Link::default(), 1);
            let want = *blake3::hash(&f).as_bytes();
            assert_eq!(o.sent, Ok(want), "size {size} window {window}");
            assert_eq!(o.received, Ok(want));
            assert_eq!(
                o.committed.as_deref(),
                Some(&f[..]),
                "size {size} window {window}"
            );
            assert!(
                o.max_in_flight <= window,
                "{} in flight with window {window}",
                o.max_in_flight
            );
        }
    }
}

#[test]
fn window_one_is_stop_and_wait() {
    let o = run(&file(10 * 4096, 3), 1, Link::default(), 1);
    assert_eq!(o.max_in_flight, 1);
    assert!(o.committed.is_some());
}

#[test]
fn lost_acks_and_chunks_are_repaired_by_resending() {
    for seed in 0..60 {
        let f = file(600 * 1024 + 17, seed);
        let link = Link {
            drop: 50,
            ..Link::default()
        };
        // Resends reach back into blocks no longer held.
        let window = [1, 16, 256][seed as usize % 3];
        let o = run(&f, window, link, seed);
        match (&o.sent, &o.committed) {
            (Ok(d), Some(got)) => {
                assert_eq!(got, &f, "seed {seed}");
                assert_eq!(*d, *blake3::hash(&f).as_bytes());
            }
            // Losing a whole run of messages may exhaust the patience;
            // then nothing is kept.
            (Err(TransferError::Timeout), None) => {}
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn both_ends_read_hash_and_write_whole_blocks_at_every_window() {
    let block = BLOCK_BYTES as usize;
    for size in [5 * block, 3 * block + 4096 * 5 + 1] {
        for window in [1, 3, 16, 256] {
            let f = file(size, 4);
            let o = run(&f, window, Link::default(), 1);
            assert_eq!(o.committed.as_deref(), Some(&f[..]));
            let whole = |v: &[(u64, usize)]| {
                v.iter().enumerate().all(|(i, &(offset, len))| {
                    offset == (i * block) as u64 && len == block.min(size - i * block)
                })
            };
            // Without loss each block is read once, in order, and written
            // once, whatever the window cuts frames into.
            assert!(whole(&o.reads), "W={window} reads {:?}", o.reads);
            assert!(whole(&o.writes), "W={window} writes {:?}", o.writes);
            assert_eq!(o.reads.len(), size.div_ceil(block));
        }
    }
}

#[test]
fn at_window_one_the_next_chunk_goes_out_without_waiting_for_a_read() {
    let now = Timestamp::ZERO;
    let cfg = SenderConfig {
        window: 1,
        ..SenderConfig::default()
    };
    let size = 3 * BLOCK_BYTES;
    let mut s = Sender::new(now, 1, "x".into(), size, cfg);
    s.poll_output();
    s.on_msg(now, TransferMsg::Accept { id: 1 });
    let reads: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
    // The block to send from and the one after are asked for at once.
    assert_eq!(
        reads,
        vec![
            SenderOutput::Read {
                offset: 0,
                len: BLOCK_BYTES as usize
            },
            SenderOutput::Read {
                offset: BLOCK_BYTES,
                len: BLOCK_BYTES as usize
            },
        ]
    );
    let content = file(size as usize, 8);
    let b = BLOCK_BYTES as usize;
    s.on_read(0, &content[..b]);
    s.on_read(BLOCK_BYTES, &content[b..2 * b]);
    let describe = |s: &mut Sender| -> Vec<String> {
        std::iter::from_fn(|| s.poll_output())
            .map(|o| match o {
                SenderOutput::Send(TransferMsg::Chunks { seq, data, .. }) => {
                    format!("chunks {seq}+{}", data.len())
                }
                SenderOutput::Read { offset, len } => format!("read {offset}+{len}"),
                SenderOutput::Progress { .. } => "progress".into(),
                other => format!("{other:?}"),
            })
            .collect()
    };
    for upto in 1..BLOCK_CHUNKS - 1 {
        describe(&mut s);
        s.on_msg(now, TransferMsg::Ack { id: 1, upto });
    }
    describe(&mut s);
    // Sending the last chunk of block 0 moves on to block 1, already held:
    // block 2 is asked for right behind that chunk, to be read and hashed
    // while the ack travels.
    s.on_msg(now, TransferMsg::Ack { id: 1, upto: 31 });
    assert_eq!(
        describe(&mut s),
        vec![
            "progress".to_string(),
            "chunks 31+4096".into(),
            format!("read {}+{b}", 2 * BLOCK_BYTES),
        ]
    );
    // And the next chunk needs no read at all.
    s.on_msg(now, TransferMsg::Ack { id: 1, upto: 32 });
    assert_eq!(describe(&mut s), vec!["progress", "chunks 32+4096"]);
}

#[test]
fn a_read_answered_out_of_order_fails_clearly() {
    let now = Timestamp::ZERO;
    let mut s = Sender::new(now, 1, "x".into(), 3 * BLOCK_BYTES, SenderConfig::default());
    s.on_msg(now, TransferMsg::Accept { id: 1 });
    std::iter::from_fn(|| s.poll_output()).for_each(drop);
    s.on_read(BLOCK_BYTES, &vec![0; BLOCK_BYTES as usize]);
    assert!(matches!(failure(&mut s), Some(TransferError::Io { .. })));
}

#[test]
fn frames_that_straddle_blocks_are_written_whole_and_bounded() {
    // Another implementation may cut frames anywhere: 31 chunks here.
    let size = 4 * BLOCK_BYTES as usize + 100;
    let f = file(size, 2);
    let mut r = Receiver::new(
        Timestamp::ZERO,
        1,
        "x".into(),
        size as u64,
        Duration::from_secs(9),
    );
    r.accept(Timestamp::ZERO);
    let mut disk = vec![0u8; size];
    let mut writes = 0;
    let mut seq = 0u64;
    loop {
        let from = seq as usize * CHUNK;
        let to = (from + 31 * CHUNK).min(size);
        r.on_msg(
            Timestamp::ZERO,
            TransferMsg::Chunks {
                id: 1,
                seq,
                data: f[from..to].to_vec(),
            },
        );
        seq += 31;
        while let Some(o) = r.poll_output() {
            if let ReceiverOutput::Write { offset, data } = o {
                assert!(data.len() < 2 * BLOCK_BYTES as usize, "{} held", data.len());
                disk[offset as usize..offset as usize + data.len()].copy_from_slice(&data);
                writes += 1;
            }
        }
        if to == size {
            break;
        }
    }
    r.on_msg(
        Timestamp::ZERO,
        TransferMsg::Done {
            id: 1,
            digest: *blake3::hash(&f).as_bytes(),
        },
    );
    let outs: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    assert!(outs
        .iter()
        .any(|o| matches!(o, ReceiverOutput::Commit { .. })));
    assert_eq!(disk, f);
    assert!(writes <= 5, "{writes} writes");
}

#[test]
fn duplicated_messages_are_harmless() {
    for seed in 0..20 {
        let f = file(64 * 1024 + 3, seed);
        let link = Link {
            dup: 300,
            ..Link::default()
        };
        let o = run(&f, 8, link, seed);
        assert_eq!(o.committed.as_deref(), Some(&f[..]), "seed {seed}");
    }
}

#[test]
fn a_damaged_chunk_is_caught_by_the_digest_and_nothing_is_kept() {
    let f = file(50 * 4096, 9);
    let link = Link {
        corrupt_chunk: Some(17),
        ..Link::default()
    };
    let o = run(&f, 16, link, 1);
    assert_eq!(o.sent, Err(TransferError::DigestMismatch));
    assert_eq!(o.received, Err(TransferError::DigestMismatch));
    assert!(o.committed.is_none());
    assert!(o.discarded);
}

#[test]
fn a_sender_that_knows_the_digest_sends_it_and_the_receiver_checks_its_disk_too() {
    for (len, window) in [(0, 1), (4096, 1), (300 * 1024 + 5, 1), (300 * 1024 + 5, 64)] {
        let f = file(len, 11);
        let digest = *blake3::hash(&f).as_bytes();
        let sound = Link {
            known_digest: Some((digest, None)),
            ..Link::default()
        };
        let o = run(&f, window, sound, 1);
        assert_eq!(o.sent, Ok(digest), "{len} bytes at W = {window}");
        assert_eq!(o.received, Ok(digest));
        assert_eq!(o.committed.as_deref(), Some(&f[..]));
        if len == 0 {
            continue;
        }
        // One bit flipped on the sender's disk: the digest it was told no
        // longer matches what it reads, and nothing is kept.
        let rotten = Link {
            known_digest: Some((digest, Some(len / 2))),
            ..Link::default()
        };
        let o = run(&f, window, rotten, 1);
        assert_eq!(
            o.received,
            Err(TransferError::DigestMismatch),
            "{len} bytes"
        );
        assert_eq!(o.sent, Err(TransferError::DigestMismatch));
        assert!(o.committed.is_none());
        assert!(o.discarded);
    }
}

#[test]
fn a_silent_receiver_times_the_sender_out() {
    let link = Link {
        receiver_mute: true,
        ..Link::default()
    };
    let o = run(&file(4096 * 4, 1), 4, link, 1);
    assert_eq!(o.sent, Err(TransferError::Timeout));
    // The receiver, whose sender resent and then went quiet, gives up too.
    assert_eq!(o.received, Err(TransferError::Timeout));
    assert!(o.discarded);
}

#[test]
fn a_rejected_offer_ends_the_sender() {
    let now = Timestamp::ZERO;
    let mut s = Sender::new(now, 1, "x".into(), 10, SenderConfig::default());
    s.poll_output();
    let reason = TransferError::NoSpace {
        needed: 10,
        available: 3,
    };
    s.on_msg(
        now,
        TransferMsg::Reject {
            id: 1,
            reason: reason.clone(),
        },
    );
    assert_eq!(s.poll_output(), Some(SenderOutput::Finished(Err(reason))));
    assert!(s.is_finished());
    assert_eq!(s.poll_timeout(), None);
}

#[test]
fn a_sender_abort_discards_the_partial_file() {
    let now = Timestamp::ZERO;
    let mut r = Receiver::new(now, 1, "x".into(), 3 * 4096, Duration::from_secs(10));
    r.accept(now);
    r.on_msg(
        now,
        TransferMsg::Chunks {
            id: 1,
            seq: 0,
            data: vec![1; 4096],
        },
    );
    r.on_msg(
        now,
        TransferMsg::Abort {
            id: 1,
            reason: TransferError::Cancelled,
        },
    );
    let outs: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    assert!(outs.contains(&ReceiverOutput::Discard));
    assert_eq!(
        outs.last(),
        Some(&ReceiverOutput::Finished(Err(TransferError::Cancelled)))
    );
}

#[test]
fn malformed_chunks_and_early_done_are_protocol_errors() {
    let now = Timestamp::ZERO;
    let cases = [
        // A short chunk that is not the file's last.
        TransferMsg::Chunks {
            id: 1,
            seq: 0,
            data: vec![0; 100],
        },
        // Past the end of the file.
        TransferMsg::Chunks {
            id: 1,
            seq: 0,
            data: vec![0; 4 * 4096],
        },
        // DONE before the content.
        TransferMsg::Done {
            id: 1,
            digest: [0; 32],
        },
    ];
    for msg in cases {
        let mut r = Receiver::new(now, 1, "x".into(), 3 * 4096, Duration::from_secs(10));
        r.accept(now);
        r.on_msg(now, msg);
        let outs: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
        assert!(
            matches!(
                outs.last(),
                Some(ReceiverOutput::Finished(Err(
                    TransferError::Protocol { .. }
                )))
            ),
            "{outs:?}"
        );
        assert!(outs.contains(&ReceiverOutput::Discard));
    }
}

#[test]
fn an_ack_for_unsent_chunks_is_a_protocol_error() {
    let now = Timestamp::ZERO;
    let mut s = Sender::new(
        now,
        1,
        "x".into(),
        8 * 4096,
        SenderConfig {
            window: 2,
            ..SenderConfig::default()
        },
    );
    s.on_msg(now, TransferMsg::Accept { id: 1 });
    s.on_msg(now, TransferMsg::Ack { id: 1, upto: 5 });
    assert!(matches!(
        failure(&mut s),
        Some(TransferError::Protocol { .. })
    ));
}

#[test]
fn a_file_that_shrinks_while_sending_fails_cleanly() {
    let now = Timestamp::ZERO;
    let mut s = Sender::new(now, 1, "x".into(), 8 * 4096, SenderConfig::default());
    s.on_msg(now, TransferMsg::Accept { id: 1 });
    s.on_read(0, &[0; 100]);
    assert!(matches!(failure(&mut s), Some(TransferError::Io { .. })));
}

/// A holder whose disk reads are slow, serving `senders` transfers at the
/// default window, driven as runtime-smol and the simulation drive a node:
/// every read answered (each taking `read`) before anything else, then
/// timers that are due, then input that has arrived. Receivers answer at
/// once, 10 ms away. What each transfer ended with.
fn slow_holder(senders: usize, read: Duration) -> Vec<Result<[u8; 32], TransferError>> {
    let size: u64 = 4_615_063;
    let data = file(size as usize, 77);
    let start = Timestamp::from_micros(1_000_000_000);
    let mut now = start;
    let cfg = SenderConfig::default();
    let mut s: Vec<Sender> = (0..senders)
        .map(|k| Sender::new(now, k as u64, "f".into(), size, cfg.clone()))
        .collect();
    let mut r: Vec<Option<Receiver>> = (0..senders).map(|_| None).collect();
    let mut reads: VecDeque<(usize, u64, usize)> = VecDeque::new();
    let mut inbox: VecDeque<(Timestamp, usize, TransferMsg)> = VecDeque::new();
    let mut done: Vec<Option<Result<[u8; 32], TransferError>>> = vec![None; senders];
    let deliver = |now: Timestamp,
                   k: usize,
                   m: TransferMsg,
                   r: &mut [Option<Receiver>],
                   inbox: &mut VecDeque<(Timestamp, usize, TransferMsg)>| {
        if let TransferMsg::Offer { id, name, size } = &m {
            if r[k].is_none() {
                let mut rx = Receiver::new(now, *id, name.clone(), *size, cfg.give_up);
                rx.accept(now);
                r[k] = Some(rx);
            }
        } else if let Some(rx) = r[k].as_mut() {
            rx.on_msg(now, m);
        }
        let Some(rx) = r[k].as_mut() else { return };
        let at = now + Duration::from_millis(10);
        while let Some(o) = rx.poll_output() {
            match o {
                ReceiverOutput::Send(m) => inbox.push_back((at, k, m)),
                ReceiverOutput::Commit { .. } => rx.committed(),
                _ => {}
            }
        }
    };
    let pump = |k: usize,
                now: Timestamp,
                s: &mut Sender,
                r: &mut [Option<Receiver>],
                inbox: &mut VecDeque<(Timestamp, usize, TransferMsg)>,
                reads: &mut VecDeque<(usize, u64, usize)>,
                done: &mut [Option<Result<[u8; 32], TransferError>>]| {
        while let Some(o) = s.poll_output() {
            match o {
                SenderOutput::Send(m) => deliver(now, k, m, r, inbox),
                SenderOutput::Read { offset, len } => reads.push_back((k, offset, len)),
                SenderOutput::Progress { .. }
                | SenderOutput::Resumed { .. }
                | SenderOutput::StartedOver { .. } => {}
                SenderOutput::Finished(end) => done[k] = Some(end),
            }
        }
    };
    for (k, sender) in s.iter_mut().enumerate() {
        pump(k, now, sender, &mut r, &mut inbox, &mut reads, &mut done);
    }
    while done.iter().any(|d| d.is_none()) && now.saturating_since(start) < Duration::from_secs(100)
    {
        while let Some((k, offset, len)) = reads.pop_front() {
            now = now + read;
            let end = (offset as usize + len).min(data.len());
            s[k].on_read(offset, &data[offset as usize..end]);
            pump(k, now, &mut s[k], &mut r, &mut inbox, &mut reads, &mut done);
        }
        let due: Vec<usize> = (0..senders)
            .filter(|&k| s[k].poll_timeout().is_some_and(|t| t <= now))
            .collect();
        if !due.is_empty() {
            for k in due {
                s[k].handle_timeout(now);
                pump(k, now, &mut s[k], &mut r, &mut inbox, &mut reads, &mut done);
            }
            continue;
        }
        if let Some(&(_, k, _)) = inbox.front().filter(|(at, _, _)| *at <= now) {
            if let Some((_, _, m)) = inbox.pop_front() {
                s[k].on_msg(now, m);
                pump(k, now, &mut s[k], &mut r, &mut inbox, &mut reads, &mut done);
            }
            continue;
        }
        let next_timer = s.iter().filter_map(|s| s.poll_timeout()).min();
        let next_input = inbox.front().map(|(at, _, _)| *at);
        match [next_timer, next_input].into_iter().flatten().min() {
            Some(t) if t > now => now = t,
            _ => now = now + Duration::from_millis(1),
        }
    }
    done.into_iter()
        .map(|d| d.unwrap_or(Err(TransferError::Timeout)))
        .collect()
}

#[test]
fn a_holder_whose_reads_outlast_the_resend_timer_still_finishes() {
    // Reads of the window's 8 blocks take longer than the 1 s resend timer,
    // so the timer fires before the acks waiting behind the reads are
    // taken. Resending at once, every second, from the last ack taken
    // re-read the same blocks forever (found by the simulation: a fetch
    // that sent chunks 32-224 25 times and gave up).
    let digest = *blake3::hash(&file(4_615_063, 77)).as_bytes();
    for (senders, ms) in [(1, 130), (2, 90), (3, 60)] {
        let ends = slow_holder(senders, Duration::from_millis(ms));
        assert!(
            ends.iter().all(|e| *e == Ok(digest)),
            "{senders} senders, reads of {ms} ms: {ends:?}"
        );
    }
}

/// `f`'s first `held` bytes, as an owner kept them.
fn kept_of(f: &[u8], held: usize) -> Kept {
    Kept {
        file: f[..held].to_vec(),
        held: held as u64,
        unreadable: false,
    }
}

#[test]
fn a_transfer_cut_at_sixty_percent_resumes_at_the_block_below_and_arrives_whole() {
    for window in [1, 16, 256] {
        let f = file(3 * (1 << 20) + 4097, 21);
        // 60 %, not on a block boundary: the resume point is the block
        // boundary below it.
        let held = f.len() * 6 / 10;
        let from = super::messages::resume_point(held as u64, f.len() as u64);
        assert!(from > 0 && from.is_multiple_of(BLOCK_BYTES) && from <= held as u64);
        let o = run_kept(&f, window, Link::default(), 1, Some(kept_of(&f, held)));
        let want = *blake3::hash(&f).as_bytes();
        assert_eq!(o.sent, Ok(want), "W={window}");
        assert_eq!(o.received, Ok(want));
        assert_eq!(o.committed.as_deref(), Some(&f[..]));
        assert_eq!(o.sender_said, vec![SenderOutput::Resumed { from }]);
        assert_eq!(o.receiver_said, vec![ReceiverOutput::Resumed { from }]);
        // Nothing before the resume point went over the link again, and
        // the receiver wrote only what came after it.
        assert_eq!(o.chunks_from, Some(from / CHUNK as u64), "W={window}");
        assert!(o.writes.iter().all(|&(offset, _)| offset >= from));
        // The sender read its prefix once, to hash it, and the rest once.
        let read: u64 = o.reads.iter().map(|&(_, len)| len as u64).sum();
        assert_eq!(read, f.len() as u64);
    }
}

#[test]
fn a_changed_source_starts_over_and_arrives_as_it_is_now() {
    let old = file(2 << 20, 22);
    let mut new = old.clone();
    // The same size, one byte changed early on.
    new[1000] ^= 0x40;
    let o = run_kept(&new, 256, Link::default(), 1, Some(kept_of(&old, 1 << 20)));
    let want = *blake3::hash(&new).as_bytes();
    assert_eq!(o.received, Ok(want));
    assert_eq!(o.committed.as_deref(), Some(&new[..]));
    assert_eq!(
        o.sender_said,
        vec![SenderOutput::StartedOver { from: 1 << 20 }]
    );
    assert_eq!(
        o.receiver_said,
        vec![ReceiverOutput::StartOver { from: 1 << 20 }]
    );
    assert_eq!(o.chunks_from, Some(0));
}

#[test]
fn a_kept_prefix_damaged_on_disk_is_never_resumed_from() {
    let f = file(2 << 20, 23);
    let mut kept = kept_of(&f, 1 << 20);
    // The receiver's disk flipped a bit of what it kept: the hash of what
    // it reads back is not the sender's, which starts over.
    kept.file[300_000] ^= 0x01;
    let o = run_kept(&f, 256, Link::default(), 1, Some(kept));
    assert_eq!(o.committed.as_deref(), Some(&f[..]));
    assert_eq!(o.received, Ok(*blake3::hash(&f).as_bytes()));
    assert!(matches!(
        o.sender_said[..],
        [SenderOutput::StartedOver { .. }]
    ));
}

#[test]
fn a_kept_file_shorter_or_unreadable_starts_over_at_the_receiver() {
    let f = file(2 << 20, 24);
    // The owner thought it held more than the file does.
    let short = Kept {
        file: f[..200_000].to_vec(),
        held: 1 << 20,
        unreadable: false,
    };
    let unreadable = Kept {
        unreadable: true,
        ..kept_of(&f, 1 << 20)
    };
    for kept in [short, unreadable] {
        let o = run_kept(&f, 256, Link::default(), 1, Some(kept));
        assert_eq!(o.committed.as_deref(), Some(&f[..]));
        assert!(matches!(
            o.receiver_said[..],
            [ReceiverOutput::StartOver { .. }]
        ));
        // The sender never heard of a resume.
        assert!(o.sender_said.is_empty(), "{:?}", o.sender_said);
    }
}

#[test]
fn less_than_a_block_kept_is_an_ordinary_transfer() {
    let f = file(1 << 20, 25);
    let o = run_kept(&f, 256, Link::default(), 1, Some(kept_of(&f, 100_000)));
    assert_eq!(o.committed.as_deref(), Some(&f[..]));
    assert_eq!(o.receiver_said, vec![ReceiverOutput::StartOver { from: 0 }]);
    assert!(o.sender_said.is_empty());
}

#[test]
fn resume_and_restart_survive_lost_and_repeated_messages() {
    for seed in 0..40 {
        let f = file(1536 * 1024 + 11, 26);
        let mut other = f.clone();
        other[5] ^= 1;
        let kept_from = if seed % 2 == 0 { &f } else { &other };
        let link = Link {
            drop: 40,
            dup: 40,
            ..Link::default()
        };
        let window = [1, 16, 256][seed as usize % 3];
        let o = run_kept(&f, window, link, seed, Some(kept_of(kept_from, 900_000)));
        match (&o.sent, &o.committed) {
            (Ok(d), Some(got)) => {
                assert_eq!(got, &f, "seed {seed}");
                assert_eq!(*d, *blake3::hash(&f).as_bytes());
                let said = match seed % 2 {
                    0 => SenderOutput::Resumed { from: 786_432 },
                    _ => SenderOutput::StartedOver { from: 786_432 },
                };
                assert_eq!(o.sender_said, vec![said], "seed {seed}");
            }
            (Err(TransferError::Timeout), None) => {}
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn a_sender_of_known_content_resumes_and_its_digest_still_covers_the_rest() {
    let f = file(2 << 20, 27);
    let d = *blake3::hash(&f).as_bytes();
    // A server's blob that rotted past the resume point: the download
    // resumes (the prefix matches) and DONE's digest catches the damage.
    let link = Link {
        known_digest: Some((d, Some(1_800_000))),
        ..Link::default()
    };
    let o = run_kept(&f, 256, link, 1, Some(kept_of(&f, 1 << 20)));
    assert_eq!(o.sender_said, vec![SenderOutput::Resumed { from: 1 << 20 }]);
    assert_eq!(o.received, Err(TransferError::DigestMismatch));
    assert_eq!(o.committed, None);
    // And whole, it resumes and arrives.
    let link = Link {
        known_digest: Some((d, None)),
        ..Link::default()
    };
    let o = run_kept(&f, 256, link, 1, Some(kept_of(&f, 1 << 20)));
    assert_eq!(o.committed.as_deref(), Some(&f[..]));
}

#[test]
fn a_resume_at_a_point_the_engine_never_offers_is_answered_with_restart() {
    let now = Timestamp::ZERO;
    let size = 5 * BLOCK_BYTES;
    for from in [0, 4096, size, size + BLOCK_BYTES] {
        let mut s = Sender::new(now, 1, "x".into(), size, SenderConfig::default());
        s.poll_output();
        let prefix = [0u8; 32];
        s.on_msg(
            now,
            TransferMsg::Resume {
                id: 1,
                from,
                prefix,
            },
        );
        let said: Vec<_> = std::iter::from_fn(|| s.poll_output()).collect();
        assert_eq!(
            said,
            vec![
                SenderOutput::StartedOver { from },
                SenderOutput::Send(TransferMsg::Restart { id: 1 })
            ],
            "from {from}"
        );
    }
}

#[test]
fn a_receiver_still_hashing_what_it_kept_asks_the_sender_to_wait() {
    let now = Timestamp::ZERO;
    let size = 8 * BLOCK_BYTES;
    let mut r = Receiver::new(now, 3, "x".into(), size, Duration::from_secs(10));
    r.resume(now, 4 * BLOCK_BYTES);
    let first: Vec<_> = std::iter::from_fn(|| r.poll_output()).collect();
    // Two blocks asked for at a time.
    assert_eq!(first.len(), 2, "{first:?}");
    // The sender, unanswered, repeats its offer: told to wait, it waits
    // past its give-up time.
    let cfg = SenderConfig::default();
    let mut s = Sender::new(now, 3, "x".into(), size, cfg.clone());
    s.poll_output();
    let mut t = now;
    for _ in 0..30 {
        t = s.poll_timeout().expect("a timer");
        s.handle_timeout(t);
        for o in std::iter::from_fn(|| s.poll_output()) {
            if let SenderOutput::Send(m) = o {
                r.on_msg(t, m);
            }
        }
        for o in std::iter::from_fn(|| r.poll_output()) {
            if let ReceiverOutput::Send(m) = o {
                assert_eq!(m, TransferMsg::Ack { id: 3, upto: 0 });
                s.on_msg(t, m);
            }
        }
    }
    assert!(t.saturating_since(now) > cfg.give_up, "{t}");
    assert!(!s.is_finished());
    assert!(!r.is_finished());
}
