//! SYNC on a peer (see `docs/peers.md`): as a reader it answers a writer's
//! listing request with digests, keeps the modification time of what it is
//! sent, sets its own version aside when the writer's takes the name, and
//! refuses anything stamped with a token lower than the highest it heard;
//! as the writer, in its turn, it brings every other live peer of the
//! round up to date ([`super::sync_plan`]) one after the other, says SYNC
//! WRITING while it works and SYNC FIN when done.

use super::event::PeerEvent;
use super::messages::PeerMsg;
use super::node::PeerNode;
use super::scan::{Scanner, SYNC_FILES};
use super::sync_plan::{conflict_name, plan, Action, SyncEntry};
use super::tracker::SyncNews;
use crate::io::{ConnId, DirEntry, FileOp, FileRef};
use crate::replication::sync_round::Token;
use crate::time::Timestamp;
use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How long a reader may take to open, list or make room.
const READER_PATIENCE: Duration = Duration::from_secs(30);
/// SYNC WRITING this often while writing (the server asks at least every
/// 10 s).
const WRITING_EVERY: Duration = Duration::from_secs(5);

/// Who waits for the scan under way.
enum Want {
    Listing { conn: ConnId, token: Token },
    Turn,
}

/// A rename asked by a writer: answered when done.
struct Aside {
    conn: ConnId,
    token: Token,
    name: String,
    aside: String,
}

enum Stage {
    Opening,
    Listing,
    Acting,
    Yielding { name: String },
    Putting { id: u64 },
}

struct Reader {
    peer: u64,
    conn: ConnId,
    link: u32,
    stage: Stage,
    /// The reader's listing, as its pages arrive.
    theirs: Vec<SyncEntry>,
    actions: VecDeque<Action>,
    deadline: Timestamp,
}

struct Turn {
    round: u64,
    token: Token,
    readers: VecDeque<u64>,
    mine: Option<Vec<SyncEntry>>,
    at: Option<Reader>,
    files: u64,
    writing_at: Timestamp,
}

pub(super) struct SyncSide {
    pub(super) scanner: Scanner,
    highest: Token,
    waiting: Vec<Want>,
    asides: BTreeMap<u64, Aside>,
    turn: Option<Turn>,
}

impl SyncSide {
    pub(super) fn new() -> Self {
        SyncSide {
            scanner: Scanner::new(),
            highest: Token::default(),
            waiting: Vec::new(),
            asides: BTreeMap::new(),
            turn: None,
        }
    }

    pub(super) fn owns(handle: u64) -> bool {
        handle > SYNC_FILES
    }

    pub(super) fn poll_timeout(&self) -> Option<Timestamp> {
        let t = self.turn.as_ref()?;
        // A file on its way has the transfer's own idle timeout; the
        // reader's patience is for its answers, as `sync_timeout` says (a
        // deadline reported here but never acted on would wake the node
        // at once, forever).
        let reader = (t.at.as_ref())
            .filter(|r| !matches!(r.stage, Stage::Putting { .. }))
            .map(|r| r.deadline);
        crate::time::earliest(Some(t.writing_at), reader)
    }
}

/// Bytes of listing per page: well inside a frame, whatever the names.
const PAGE_BYTES: usize = 64 * 1024;

/// A listing in pages that each fit a frame, with whether more follow
/// (one empty page for an empty directory).
fn pages(entries: &[SyncEntry]) -> Vec<(Vec<SyncEntry>, bool)> {
    let mut pages = vec![(Vec::new(), true)];
    let mut bytes = 0;
    for e in entries {
        // A name's length, its bytes, size, time and digest.
        let len = 4 + e.name.len() + 8 + 8 + 32;
        if bytes + len > PAGE_BYTES {
            pages.push((Vec::new(), true));
            bytes = 0;
        }
        bytes += len;
        if let Some((page, _)) = pages.last_mut() {
            page.push(e.clone());
        }
    }
    if let Some((_, more)) = pages.last_mut() {
        *more = false;
    }
    pages
}

fn refused(highest: Token, reason: &str) -> PeerMsg {
    PeerMsg::SyncRefused {
        highest,
        reason: reason.to_string(),
    }
}

impl PeerNode {
    /// SYNC: asks the cluster for a round.
    pub fn sync(&mut self, now: Timestamp) -> Result<(), String> {
        self.tracker.request_sync(now, &mut self.out)
    }

    /// Acts on what the cluster said of rounds.
    pub(super) fn sync_news(&mut self, now: Timestamp) {
        for news in self.tracker.take_news() {
            match news {
                SyncNews::Write {
                    round,
                    token,
                    order,
                } => {
                    self.hear(token);
                    let me = self.me();
                    self.out.event(PeerEvent::SyncWriting { round, token });
                    self.sync.turn = Some(Turn {
                        round,
                        token,
                        readers: order.into_iter().filter(|p| Some(*p) != me).collect(),
                        mine: None,
                        at: None,
                        files: 0,
                        writing_at: now + WRITING_EVERY,
                    });
                    self.sync.waiting.push(Want::Turn);
                    self.scan();
                }
                SyncNews::Read {
                    round,
                    writer,
                    token,
                } => {
                    self.hear(token);
                    let read = PeerEvent::SyncReading {
                        round,
                        writer,
                        token,
                    };
                    self.out.event(read);
                }
                SyncNews::End { round } => {
                    self.sync.turn = None;
                    self.out.event(PeerEvent::SyncEnd { round });
                }
            }
        }
        self.advance(now);
    }

    /// The highest write token this peer has heard (SYNC OK, SYNC READ, or
    /// a writer's message): writes under a lower one are refused here.
    pub fn sync_highest(&self) -> Token {
        self.sync.highest
    }

    /// A token was heard: the highest is remembered, and writes coming in
    /// under a lower one are cancelled.
    fn hear(&mut self, token: Token) {
        if token > self.sync.highest {
            self.sync.highest = token;
            self.transfers.fence(token, &mut self.out);
        }
        // A later writer's token: this peer's own turn, if any, is over.
        if self.sync.turn.as_ref().is_some_and(|t| t.token < token) {
            self.sync.turn = None;
        }
    }

    fn scan(&mut self) {
        let mut ops = Vec::new();
        self.sync.scanner.start(&mut ops);
        for op in ops {
            self.out.file(op);
        }
    }

    /// A SYNC message from the peer on `conn`.
    pub(super) fn on_sync_msg(&mut self, now: Timestamp, conn: ConnId, msg: PeerMsg) {
        let highest = self.sync.highest;
        match msg {
            PeerMsg::SyncList { token } if token < highest => self
                .out
                .send(conn, &refused(highest, "a later writer has the turn")),
            PeerMsg::SyncList { token } => {
                self.hear(token);
                self.sync.waiting.push(Want::Listing { conn, token });
                self.scan();
            }
            PeerMsg::SyncPut { token, id, .. } if token < highest => {
                let why = "stale write token: a later writer has the turn".to_string();
                self.transfers.announce(conn, id, Err(why));
            }
            PeerMsg::SyncPut {
                token,
                id,
                modified_ms,
            } => {
                self.hear(token);
                self.transfers.announce(conn, id, Ok((modified_ms, token)));
            }
            PeerMsg::SyncYield { token, .. } if token < highest => self
                .out
                .send(conn, &refused(highest, "a later writer has the turn")),
            PeerMsg::SyncYield {
                token,
                name,
                digest,
            } => self.set_aside(conn, token, name, digest),
            PeerMsg::SyncListing {
                token,
                entries,
                more,
            } => {
                let Some(t) = self.sync.turn.as_mut() else {
                    return;
                };
                let (Some(mine), Some(r)) = (&t.mine, t.at.as_mut()) else {
                    return;
                };
                if token == t.token && r.conn == conn && matches!(r.stage, Stage::Listing) {
                    r.theirs.extend(entries);
                    if !more {
                        let theirs = std::mem::take(&mut r.theirs);
                        r.actions = plan(mine, &theirs).into();
                        r.stage = Stage::Acting;
                    }
                }
            }
            PeerMsg::SyncYielded { token, name } => {
                if let Some(r) = self.reader_at(conn, token) {
                    if matches!(&r.stage, Stage::Yielding { name: n } if *n == name) {
                        r.stage = Stage::Acting;
                    }
                }
            }
            PeerMsg::SyncRefused { highest, reason } => {
                let Some(t) = self.sync.turn.as_mut() else {
                    return;
                };
                if highest > t.token {
                    // Fenced: a later writer has the turn.
                    self.hear(highest);
                    self.sync.turn = None;
                    return;
                }
                let token = t.token;
                if let Some(r) = self.reader_at(conn, token) {
                    if let Stage::Yielding { name } = &r.stage {
                        // The version there keeps the name; ours is not sent.
                        let name = name.clone();
                        r.actions.retain(
                            |a| !matches!(a, Action::Put { as_name, .. } if *as_name == name),
                        );
                        r.stage = Stage::Acting;
                    } else {
                        let peer = r.peer;
                        self.skip_reader(peer, reason);
                    }
                }
            }
            _ => {}
        }
        self.advance(now);
    }

    fn reader_at(&mut self, conn: ConnId, token: Token) -> Option<&mut Reader> {
        let t = self.sync.turn.as_mut()?;
        let r = t.at.as_mut()?;
        (t.token == token && r.conn == conn).then_some(r)
    }

    /// A writer's version takes `name`: this peer's own (if it still holds
    /// `digest`) moves to its conflict name first.
    fn set_aside(&mut self, conn: ConnId, token: Token, name: String, digest: [u8; 32]) {
        self.hear(token);
        let aside = conflict_name(&name, &digest);
        let kept = (self.sync.scanner.known(&aside)).is_some_and(|e| e.digest == digest);
        match self.sync.scanner.known(&name) {
            Some(e) if e.digest == digest && kept => {
                // This version is kept under its conflict name already (a
                // copy of it came here with another modification time, and
                // lost its name elsewhere): the rename, which never
                // replaces, would fail and leave the loser under the name
                // for good. The name only has to go; the version stays.
                self.out.file(FileOp::Remove {
                    file: FileRef::Named(name.clone()),
                });
                self.sync.scanner.forget(&name);
                let msg = PeerMsg::SyncYielded {
                    token,
                    name: name.clone(),
                };
                self.out.send(conn, &msg);
                self.out.event(PeerEvent::SetAside { name, aside });
            }
            Some(e) if e.digest == digest => {
                let handle = self.sync.scanner.handle();
                self.out.file(FileOp::Rename {
                    handle,
                    from: FileRef::Named(name.clone()),
                    to: FileRef::Named(aside.clone()),
                });
                let a = Aside {
                    conn,
                    token,
                    name,
                    aside,
                };
                self.sync.asides.insert(handle, a);
            }
            _ => {
                let msg = refused(token, "this peer holds another version of it now");
                self.out.send(conn, &msg);
            }
        }
    }

    /// A rename asked by a writer is done (`Ok`) or failed.
    pub(super) fn sync_renamed(&mut self, handle: u64, outcome: Result<(), String>) {
        let Some(a) = self.sync.asides.remove(&handle) else {
            return;
        };
        self.sync.scanner.forget(&a.name);
        self.sync.scanner.forget(&a.aside);
        match outcome {
            Ok(()) => {
                let msg = PeerMsg::SyncYielded {
                    token: a.token,
                    name: a.name.clone(),
                };
                self.out.send(a.conn, &msg);
                let (name, aside) = (a.name, a.aside);
                self.out.event(PeerEvent::SetAside { name, aside });
            }
            Err(e) => self.out.send(a.conn, &refused(a.token, &e)),
        }
    }

    /// The directory's listing, for the scan.
    pub(super) fn sync_listed(&mut self, now: Timestamp, handle: u64, entries: &[DirEntry]) {
        let mut ops = Vec::new();
        let done = self.sync.scanner.on_listed(handle, entries, &mut ops);
        self.scanned(now, ops, done);
    }

    /// Bytes of a file the scan hashes.
    pub(super) fn sync_read(&mut self, now: Timestamp, handle: u64, data: &[u8]) {
        let mut ops = Vec::new();
        let done = self.sync.scanner.on_read(handle, data, &mut ops);
        self.scanned(now, ops, done);
    }

    /// SYNC's file work failed.
    pub(super) fn sync_failed(&mut self, now: Timestamp, handle: u64, error: String) {
        if self.sync.asides.contains_key(&handle) {
            return self.sync_renamed(handle, Err(error));
        }
        let mut ops = Vec::new();
        let done = self.sync.scanner.on_failed(handle, &mut ops);
        self.scanned(now, ops, done);
    }

    fn scanned(&mut self, now: Timestamp, ops: Vec<FileOp>, done: Option<Vec<SyncEntry>>) {
        for op in ops {
            self.out.file(op);
        }
        if let Some(entries) = done {
            for want in std::mem::take(&mut self.sync.waiting) {
                match want {
                    Want::Listing { conn, token } => {
                        for (entries, more) in pages(&entries) {
                            let page = PeerMsg::SyncListing {
                                token,
                                entries,
                                more,
                            };
                            self.out.send(conn, &page);
                        }
                    }
                    Want::Turn => {
                        if let Some(t) = self.sync.turn.as_mut() {
                            t.mine = Some(entries.clone());
                        }
                    }
                }
            }
        }
        self.advance(now);
    }

    fn skip_reader(&mut self, peer: u64, reason: String) {
        if let Some(t) = self.sync.turn.as_mut() {
            t.at = None;
            let round = t.round;
            self.out.event(PeerEvent::SyncSkipped {
                round,
                peer,
                reason,
            });
        }
    }

    /// SYNC's timers: SYNC WRITING, and a reader that takes too long.
    pub(super) fn sync_timeout(&mut self, now: Timestamp) {
        let Some(t) = self.sync.turn.as_mut() else {
            return;
        };
        if t.writing_at <= now {
            t.writing_at = now + WRITING_EVERY;
            let (round, token) = (t.round, t.token);
            self.tracker
                .sync_say(now, round, token, false, &mut self.out);
        }
        let late = (self.sync.turn.as_ref())
            .and_then(|t| t.at.as_ref())
            .filter(|r| r.deadline <= now && !matches!(r.stage, Stage::Putting { .. }))
            .map(|r| r.peer);
        if let Some(peer) = late {
            self.skip_reader(peer, "it did not answer in time".into());
        }
        self.advance(now);
    }

    /// Moves the turn on as far as it can go now.
    pub(super) fn advance(&mut self, now: Timestamp) {
        let ended = self.transfers.take_sync_ended();
        loop {
            let Some(t) = self.sync.turn.as_mut() else {
                return;
            };
            let Some(mine) = t.mine.clone() else {
                return;
            };
            let Some(r) = t.at.as_mut() else {
                let Some(peer) = t.readers.pop_front() else {
                    let (round, token, files) = (t.round, t.token, t.files);
                    self.sync.turn = None;
                    self.tracker
                        .sync_say(now, round, token, true, &mut self.out);
                    self.out.event(PeerEvent::SyncFin { round, files });
                    return;
                };
                self.open_reader(now, peer);
                continue;
            };
            let link_open = self.links.get(&r.conn).and_then(|l| l.peer()) == Some(r.peer);
            let link_gone = !self.links.contains_key(&r.conn);
            match &r.stage {
                _ if link_gone => {
                    let peer = r.peer;
                    self.skip_reader(peer, "the connection closed".into());
                }
                Stage::Opening if link_open => {
                    r.stage = Stage::Listing;
                    r.deadline = now + READER_PATIENCE;
                    let (conn, token) = (r.conn, t.token);
                    self.out.send(conn, &PeerMsg::SyncList { token });
                    return;
                }
                Stage::Opening | Stage::Listing | Stage::Yielding { .. } => return,
                Stage::Putting { id } => {
                    let id = *id;
                    let Some((_, _, outcome)) =
                        ended.iter().find(|(c, i, _)| *c == r.conn && *i == id)
                    else {
                        return;
                    };
                    if outcome.is_ok() {
                        t.files += 1;
                    }
                    r.stage = Stage::Acting;
                }
                Stage::Acting => match r.actions.pop_front() {
                    None => t.at = None,
                    Some(Action::Yield { name, digest }) => {
                        r.stage = Stage::Yielding { name: name.clone() };
                        r.deadline = now + READER_PATIENCE;
                        let msg = PeerMsg::SyncYield {
                            token: t.token,
                            name,
                            digest,
                        };
                        let conn = r.conn;
                        self.out.send(conn, &msg);
                        return;
                    }
                    Some(Action::Put { name, as_name }) => {
                        let Some(local) = mine.iter().find(|e| e.name == name) else {
                            continue;
                        };
                        let (conn, link, token) = (r.conn, r.link, t.token);
                        let id = (self.transfers).put_sync(
                            now,
                            conn,
                            link,
                            local,
                            as_name,
                            token,
                            &mut self.out,
                        );
                        if let Some(r) = self.sync.turn.as_mut().and_then(|t| t.at.as_mut()) {
                            r.stage = Stage::Putting { id };
                        }
                        return;
                    }
                },
            }
        }
    }

    /// The next reader of the turn: over a connection already open to it,
    /// or a new one to where the list says it listens.
    fn open_reader(&mut self, now: Timestamp, peer: u64) {
        let open = (self.links.iter())
            .find(|(_, l)| l.peer() == Some(peer))
            .map(|(c, l)| (*c, l.id));
        let (conn, link) = match open {
            Some(o) => o,
            None => {
                let Some(addr) = (self.peers().iter())
                    .find(|p| p.peer == peer)
                    .map(|p| p.addr.clone())
                else {
                    return self.skip_reader(peer, "it is no longer on the list".into());
                };
                match self.connect(now, addr) {
                    Ok(link) => match self.links.iter().find(|(_, l)| l.id == link) {
                        Some((c, _)) => (*c, link),
                        None => return self.skip_reader(peer, "cannot connect".into()),
                    },
                    Err(e) => return self.skip_reader(peer, e.to_string()),
                }
            }
        };
        if let Some(t) = self.sync.turn.as_mut() {
            t.at = Some(Reader {
                peer,
                conn,
                link,
                stage: Stage::Opening,
                theirs: Vec::new(),
                actions: VecDeque::new(),
                deadline: now + READER_PATIENCE,
            });
        }
    }
}
