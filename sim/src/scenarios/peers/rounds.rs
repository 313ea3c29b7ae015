//! SYNC rounds, watched from outside the nodes: the peers scenario's round
//! invariants (see `docs/peers.md`, "SYNC rounds", and
//! `docs/simulation.md`, the peers scenario).
//!
//! The round as the cluster decided it is read from the committed log: a
//! shadow [`State`] applies every committed entry in order, so every grant
//! is seen, even one made and moved on within a single step. The peers'
//! side is read from their events ([`Seen`]), each stamped with the node's
//! peer id and the highest token it had heard when it told it.
//!
//! 1. **At most one valid write lease**: a token names one writer, on every
//!    server, in the committed log and in every SYNC OK and SYNC READ; no
//!    server's current grant goes back (across its restarts too); and at
//!    no step do two peers both believe they hold a live turn of the
//!    highest token granted. A peer believes it holds a live turn from its
//!    `SyncWriting` until its `SyncFin` or `SyncEnd`, as long as it has
//!    heard no higher token (a fenced writer stops: it says no SYNC FIN).
//! 2. **No write under a stale token**: every file a SYNC write lands
//!    (`Received` with a token) came under a token at least the highest
//!    the reader had heard: as the node says, and as its own events (SYNC
//!    OK, SYNC READ, earlier writes) show.
//! 3. **Once per round**: when a round ends, no peer of its order was
//!    granted twice, and every one that stayed registered through it was
//!    granted exactly once; no peer hears SYNC OK twice in one round.
//! 4. **A quiet round converges**: a round with no fault while it ran (no
//!    server down, restarted or cut off, no peer crashed, quit or
//!    re-registered, no plain PUT or GET landing) leaves the directories of
//!    its participants (the peers of its order that ran, registered under
//!    the same id, from its start to its end) with the same names and
//!    contents, every version any of them held at its start still there
//!    under its name or its conflict name; and each participant wrote
//!    once (SYNC OK heard once, SYNC FIN said).

use super::host::{peer_host, PeerState, Seen};
use super::invariants::digest;
use crate::disk::short;
use crate::server_host::View;
use ferry_core::peer::sync_plan::conflict_name;
use ferry_core::peer::PeerEvent;
use ferry_core::replication::entry::Entry;
use ferry_core::replication::state::State;
use ferry_core::replication::sync_round::{Round, Token};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// A directory's files: name → digest.
type Files = BTreeMap<String, [u8; 32]>;

/// A disturbance this long before a round's start still counts as during
/// it: its effects (a registration lost and made again) come a moment
/// later.
const GRACE: Duration = Duration::from_secs(1);

/// One round, as the committed log made it and the peers saw it.
struct RoundLog {
    order: Vec<u64>,
    /// Each grant in turn: (peer id, token).
    grants: Vec<(u64, Token)>,
    /// Peers of the order that left the registry while it ran.
    left: BTreeSet<u64>,
    /// Each peer host at the start, if it ran registered: its node, its
    /// peer id, its files.
    at_start: Vec<Option<(u32, u64, Files)>>,
    /// Why the round is not quiet, if it is not.
    disturbed: Option<String>,
    /// SYNC OK heard, by peer id; SYNC FIN said, by peer id.
    writing: BTreeMap<u64, u32>,
    fins: BTreeSet<u64>,
}

/// What a round that ended came to.
#[derive(Clone, Debug)]
pub struct Verdict {
    pub round: u64,
    /// Why it was not quiet, if it was not.
    pub disturbed: Option<String>,
    /// The peer hosts that took part (by index).
    pub participants: Vec<usize>,
}

/// A peer's belief that it holds a turn.
#[derive(Clone, Copy, Debug)]
struct Belief {
    incarnation: u32,
    round: u64,
    token: Token,
}

#[derive(Default)]
pub struct Rounds {
    /// The committed log applied so far.
    shadow: State,
    applied: usize,
    /// Every token seen granted, and its writer.
    writers: BTreeMap<Token, u64>,
    /// The last grant each server held, across its restarts.
    per_server: BTreeMap<u32, Token>,
    granted_max: Token,
    /// The running servers at the last step: incarnation, master.
    servers: BTreeMap<u32, (u32, bool)>,
    turns: BTreeMap<usize, Belief>,
    /// Per peer host: its node and the highest token its events showed.
    heard: BTreeMap<usize, (u32, Token)>,
    /// SYNC OK heard, by (peer id, round).
    said_ok: BTreeMap<(u64, u64), u32>,
    open: BTreeMap<u64, RoundLog>,
    pub verdicts: Vec<Verdict>,
    last_disturbance: Option<(Duration, String)>,
    pub counts: BTreeMap<&'static str, u64>,
}

fn files(p: &PeerState) -> Files {
    (p.dir.borrow().files.iter())
        .map(|(n, f)| (n.clone(), digest(&f.content)))
        .collect()
}

impl Rounds {
    fn count(&mut self, what: &'static str) {
        *self.counts.entry(what).or_default() += 1;
    }

    /// The round running, as the committed log has it.
    pub fn current(&self) -> Option<&Round> {
        self.shadow.sync().current()
    }

    /// The verdict on round `round`, once it ended.
    pub fn verdict(&self, round: u64) -> Option<&Verdict> {
        self.verdicts.iter().find(|v| v.round == round)
    }

    /// Something happened that makes the rounds running (or starting
    /// within [`GRACE`]) not quiet.
    pub fn disturb(&mut self, now: Duration, why: impl Into<String>) {
        let why = why.into();
        for r in self.open.values_mut() {
            r.disturbed.get_or_insert_with(|| why.clone());
        }
        self.last_disturbance = Some((now, why));
    }

    /// Does peer host `k` believe, now, that it holds a live turn?
    pub fn in_turn(&self, k: usize, peers: &[PeerState]) -> bool {
        self.live_turn(k, peers).is_some()
    }

    fn live_turn(&self, k: usize, peers: &[PeerState]) -> Option<Token> {
        let b = self.turns.get(&k)?;
        let p = &peers[k];
        let node = p.node.as_ref().filter(|_| p.incarnation == b.incarnation)?;
        let highest = node.try_borrow().ok()?.sync_highest();
        (highest == b.token).then_some(b.token)
    }

    fn grant(&mut self, token: Token, writer: u64, whence: impl Fn() -> String) -> Option<String> {
        self.granted_max = self.granted_max.max(token);
        let first = *self.writers.entry(token).or_insert(writer);
        (first != writer).then(|| {
            format!(
                "token {token} names two writers: peer {first} and peer {writer} ({})",
                whence()
            )
        })
    }

    /// The servers' states: one writer per token, no grant going back;
    /// and whether a server went down, came up or is cut off (`healthy`
    /// false), which disturbs the rounds running.
    pub fn check_servers(
        &mut self,
        now: Duration,
        views: &[View<'_>],
        healthy: bool,
    ) -> Vec<String> {
        let mut v = Vec::new();
        let running: BTreeMap<u32, (u32, bool)> = (views.iter())
            .map(|s| (s.id, (s.incarnation, s.server.replica().is_master())))
            .collect();
        let changed = (running.keys().ne(self.servers.keys()))
            || running
                .iter()
                .any(|(id, (inc, _))| self.servers.get(id).is_some_and(|(i, _)| i != inc));
        if changed {
            let master_lost = (self.servers.iter())
                .any(|(id, (inc, m))| *m && running.get(id).is_none_or(|(i, _)| i != inc));
            if master_lost && self.current().is_some() {
                self.count("rounds during which the master was lost");
            }
            self.disturb(now, "a server went down or came up");
        }
        self.servers = running;
        if !healthy {
            self.disturb(now, "a server is down or cut off");
        }
        for s in views {
            let Some(r) = s.server.replica().state().sync().current() else {
                continue;
            };
            let whence = || format!("server{}'s state", s.id);
            v.extend(self.grant(r.token, r.writer, whence));
            let before = self.per_server.insert(s.id, r.token);
            if let Some(b) = before.filter(|b| *b > r.token) {
                v.push(format!(
                    "server{}'s current grant went back from token {b} to {}",
                    s.id, r.token
                ));
            }
        }
        v
    }

    /// Applies the committed entries not applied yet; checks each round
    /// that ends (invariants 3 and 4).
    pub fn apply_committed<'e>(
        &mut self,
        now: Duration,
        entries: impl Iterator<Item = &'e Entry>,
        committed: usize,
        peers: &[PeerState],
    ) -> Vec<String> {
        let mut v = Vec::new();
        if committed == self.applied {
            return v;
        }
        for e in entries.skip(self.applied) {
            self.applied += 1;
            let before = self.current().cloned();
            self.shadow.apply(e);
            let after = self.current().cloned();
            let registry = self.shadow.registry();
            for r in self.open.values_mut() {
                let gone = (r.order.iter()).filter(|p| registry.get(**p).is_none());
                r.left.extend(gone);
            }
            match (before, after) {
                (b, Some(a)) if b.as_ref().is_none_or(|b| b.id != a.id) => {
                    if let Some(b) = b {
                        v.extend(self.end(b.id, peers));
                    }
                    self.start(&a, now, peers);
                    v.extend(self.granted(&a));
                }
                (Some(b), Some(a)) if b.token != a.token => v.extend(self.granted(&a)),
                (Some(b), None) => v.extend(self.end(b.id, peers)),
                _ => {}
            }
        }
        v
    }

    fn start(&mut self, r: &Round, now: Duration, peers: &[PeerState]) {
        self.count("rounds started");
        let at_start = (peers.iter())
            .map(|p| {
                let node = p.node.as_ref()?.try_borrow().ok()?;
                let me = node.me()?;
                Some((p.incarnation, me, files(p)))
            })
            .collect();
        let disturbed = (self.last_disturbance.as_ref())
            .filter(|(at, _)| *at + GRACE >= now)
            .map(|(_, why)| format!("{why} just before it"));
        let log = RoundLog {
            order: r.order.clone(),
            grants: Vec::new(),
            left: BTreeSet::new(),
            at_start,
            disturbed,
            writing: BTreeMap::new(),
            fins: BTreeSet::new(),
        };
        self.open.insert(r.id, log);
    }

    fn granted(&mut self, r: &Round) -> Option<String> {
        self.count("grants");
        if let Some(log) = self.open.get_mut(&r.id) {
            log.grants.push((r.writer, r.token));
        }
        self.grant(r.token, r.writer, || "the committed log".into())
    }

    /// Round `id` ended: every peer of its order granted once at most, and
    /// once if it stayed registered; if it was quiet, its participants'
    /// directories alike and every version kept.
    fn end(&mut self, id: u64, peers: &[PeerState]) -> Vec<String> {
        let mut v = Vec::new();
        let Some(log) = self.open.remove(&id) else {
            return v;
        };
        self.count("rounds ended");
        for p in &log.order {
            let n = log.grants.iter().filter(|(w, _)| w == p).count();
            if n > 1 || (n != 1 && !log.left.contains(p)) {
                v.push(format!(
                    "round {id}: peer {p} was granted write access {n} time(s){}",
                    match log.left.contains(p) {
                        true => "",
                        false => " though it stayed registered through the round",
                    }
                ));
            }
        }
        // Who took part: ran, registered under one id, from start to end.
        let participants: Vec<usize> = (0..peers.len())
            .filter(|&k| {
                let Some((inc, me, _)) = &log.at_start[k] else {
                    return false;
                };
                let p = &peers[k];
                let now_me = (p.node.as_ref()).and_then(|n| n.try_borrow().ok()?.me());
                p.incarnation == *inc
                    && now_me == Some(*me)
                    && log.order.contains(me)
                    && !log.left.contains(me)
            })
            .collect();
        if log.disturbed.is_none() && !participants.is_empty() {
            self.count("quiet rounds checked");
            v.extend(quiet_round(id, &log, &participants, peers));
        }
        self.verdicts.push(Verdict {
            round: id,
            disturbed: log.disturbed,
            participants,
        });
        v
    }

    /// One event a peer told.
    pub fn observe(&mut self, now: Duration, s: &Seen) -> Vec<String> {
        let mut v = Vec::new();
        let k = s.peer;
        let host = peer_host(k);
        // A new node (a restart, a rejoin) has heard nothing yet.
        let heard = self
            .heard
            .entry(k)
            .or_insert((s.incarnation, Token::default()));
        if heard.0 != s.incarnation {
            *heard = (s.incarnation, Token::default());
        }
        if self
            .turns
            .get(&k)
            .is_some_and(|b| b.incarnation != s.incarnation)
        {
            self.turns.remove(&k);
        }
        match &s.event {
            PeerEvent::SyncWriting { round, token } => {
                heard.1 = heard.1.max(*token);
                let b = Belief {
                    incarnation: s.incarnation,
                    round: *round,
                    token: *token,
                };
                self.turns.insert(k, b);
                if let Some(me) = s.me {
                    v.extend(self.grant(*token, me, || format!("{host}'s SYNC OK")));
                    let n = self.said_ok.entry((me, *round)).or_default();
                    *n += 1;
                    if *n > 1 {
                        v.push(format!(
                            "{host} (peer {me}) heard SYNC OK {n} times in round {round}"
                        ));
                    }
                    if let Some(log) = self.open.get_mut(round) {
                        *log.writing.entry(me).or_default() += 1;
                    }
                }
            }
            PeerEvent::SyncReading {
                round,
                writer,
                token,
            } => {
                heard.1 = heard.1.max(*token);
                if s.me == Some(*writer) {
                    v.push(format!(
                        "{host} was told to read its own turn of round {round}"
                    ));
                }
                v.extend(self.grant(*token, *writer, || format!("{host}'s SYNC READ")));
            }
            PeerEvent::SyncFin { round, .. } => match self.turns.remove(&k) {
                Some(b) if b.round == *round => {
                    if s.highest > b.token {
                        v.push(format!(
                            "{host} said SYNC FIN of round {round} under token {} after hearing {}",
                            b.token, s.highest
                        ));
                    }
                    if let (Some(me), Some(log)) = (s.me, self.open.get_mut(round)) {
                        log.fins.insert(me);
                    }
                }
                _ => v.push(format!(
                    "{host} said SYNC FIN of round {round} without a turn in it"
                )),
            },
            PeerEvent::SyncEnd { round }
                if self.turns.get(&k).is_some_and(|b| b.round == *round) =>
            {
                self.turns.remove(&k);
            }
            PeerEvent::Received {
                name,
                token: Some(t),
                ..
            } => {
                let h = heard.1.max(s.highest);
                if *t < h {
                    v.push(format!(
                        "{host}: a SYNC write of {name:?} landed under token {t} after it had heard {h}"
                    ));
                }
                heard.1 = h;
                self.count("SYNC writes landed");
            }
            PeerEvent::ReceiveFailed { reason, .. } if reason.contains("stale") => {
                self.count("SYNC writes cancelled or refused: stale token");
            }
            PeerEvent::Received { token: None, .. } | PeerEvent::GetDone { .. } => {
                self.disturb(now, format!("a plain transfer landed at {host}"));
            }
            PeerEvent::Registered { .. } | PeerEvent::TrackerLost { .. } => {
                self.disturb(now, format!("{host}'s registration changed"));
            }
            _ => {}
        }
        v
    }

    /// At no step do two peers believe they hold a live turn of the
    /// highest token granted.
    pub fn check_beliefs(&self, peers: &[PeerState]) -> Vec<String> {
        let top: Vec<String> = (self.turns.keys())
            .filter(|k| self.live_turn(**k, peers) == Some(self.granted_max))
            .map(|k| peer_host(*k))
            .collect();
        match top.len() > 1 {
            true => vec![format!(
                "{} all believe they hold the live turn of token {}, the highest granted",
                top.join(" and "),
                self.granted_max
            )],
            false => Vec::new(),
        }
    }
}

/// Invariant 4 for round `id`, quiet, among `participants`.
fn quiet_round(
    id: u64,
    log: &RoundLog,
    participants: &[usize],
    peers: &[PeerState],
) -> Vec<String> {
    let mut v = Vec::new();
    for &k in participants {
        let Some((_, me, _)) = &log.at_start[k] else {
            continue;
        };
        let oks = log.writing.get(me).copied().unwrap_or(0);
        if oks != 1 || !log.fins.contains(me) {
            v.push(format!(
                "quiet round {id}: {} (peer {me}) heard SYNC OK {oks} time(s) and {} SYNC FIN",
                peer_host(k),
                match log.fins.contains(me) {
                    true => "said",
                    false => "never said",
                }
            ));
        }
    }
    let end: Vec<(usize, Files)> = participants
        .iter()
        .map(|&k| (k, files(&peers[k])))
        .collect();
    let (first, base) = &end[0];
    for (k, d) in &end[1..] {
        let differ = (base.iter().chain(d.iter()))
            .map(|(n, _)| n)
            .find(|n| base.get(*n) != d.get(*n));
        if let Some(n) = differ {
            let show = |f: &Files| f.get(n).map_or("missing".to_string(), short);
            v.push(format!(
                "quiet round {id} left {} and {} unalike: {n:?} is {} at {} and {} at {}",
                peer_host(*first),
                peer_host(*k),
                show(base),
                peer_host(*first),
                show(d),
                peer_host(*k)
            ));
            return v;
        }
    }
    for &k in participants {
        let Some((_, _, held)) = &log.at_start[k] else {
            continue;
        };
        for (name, d) in held {
            let kept = base.get(name) == Some(d) || base.get(&conflict_name(name, d)) == Some(d);
            if !kept {
                v.push(format!(
                    "quiet round {id} lost a version: {} held {name:?} as {} at its start, and {} holds it neither under that name nor its conflict name",
                    peer_host(k),
                    short(d),
                    peer_host(*first)
                ));
                return v;
            }
        }
    }
    v
}
