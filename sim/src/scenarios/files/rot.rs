//! Disk rot in the files scenario: the harness flips one bit of one blob on
//! one server's disk, and the cluster must find the damage and replace the
//! copy from another server.
//!
//! A server sends the digest that names a blob, not one of what it read, so
//! a receiver of a rotten copy (a client's download, another server's
//! fetch) finds it damaged; the server then checks its copy (reads it
//! through and hashes it: `ferry_core::server::scrub`), removes it if it is
//! damaged and fetches it again. The harness rots only a blob that another
//! server holds intact, and each content at most once in a run: a content
//! whose only copy rots is lost for good, which no system can help.
//!
//! The harness records each rot ([`Rot`]) and, through an observer of the
//! servers' events, each check's verdict ([`Checked`]). At the end
//! ([`check_rots`]):
//!
//! - every `Damaged` verdict is of a copy that had rotted (at most one per
//!   rot): a false positive would remove sound content;
//! - no rotten copy is left on a disk;
//! - a rot of content that the server's catalogue named from the rot to
//!   the end (it could not be collected as garbage) was found by a check
//!   (`Damaged`), and the server holds the content intact again.
//!
//! Downloads that arrive damaged are judged in [`super::invariants`]: only
//! through a server that held a rotten copy of that content meanwhile
//! ([`rotten_during`]).

use super::model::History;
use crate::disk::{hex, short, Disk, SharedDisk};
use crate::seeds::SimRng;
use crate::trace::secs;
use ferry_core::server::scrub::Verdict;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

/// Chance (percent) that a swarm seed rots blobs.
pub const ROT_PCT: u32 = 15;
/// How many rots such a seed plans, at least and at most.
pub const ROTS: (u32, u32) = (1, 3);
/// When the rots strike, after the setup: while the clients run (they
/// start in the first 6 s; the shortest runs end about 5 s later), once
/// some content has reached two servers.
pub const ROT_WINDOW: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(8));
/// A rot whose time comes while no content is on two servers waits this
/// long and looks again, until the heal.
const ROT_RETRY: Duration = Duration::from_millis(250);

/// One flipped bit.
#[derive(Clone, Debug)]
pub struct Rot {
    pub server: u32,
    pub digest: [u8; 32],
    pub size: usize,
    pub bit: u64,
    /// Simulated time of the rot.
    pub at: Duration,
    /// The server's durably applied index then: its catalogue is at this
    /// point of the log or later from then on.
    pub applied: u64,
    /// The rotten content while it is on the disk (the disk's own `Arc`,
    /// which tells it from a copy fetched again); dropped once it is gone.
    rotten: Option<Arc<[u8]>>,
    /// When the rotten copy left the disk.
    pub gone: Option<Duration>,
}

impl Rot {
    pub fn describe(&self) -> String {
        format!(
            "rot of blob {} ({} bytes, bit {}) on server{} at {}",
            short(&self.digest),
            self.size,
            self.bit,
            self.server,
            secs(self.at)
        )
    }
}

/// A server's `BlobChecked` event.
#[derive(Clone, Debug)]
pub struct Checked {
    pub at: Duration,
    pub server: u32,
    /// The first 16 hex digits of the digest, as the event names it.
    pub digest: String,
    pub verdict: Verdict,
}

impl Checked {
    fn is_of(&self, r: &Rot) -> bool {
        self.server == r.server && hex(&r.digest).starts_with(&self.digest)
    }
}

/// The rots of a run, planned and done.
pub struct Rotter {
    /// Times still to come (after the setup), the next first.
    due: VecDeque<Duration>,
    /// Picks the blob and the bit, so that the plan's streams stay as
    /// they were.
    rng: SimRng,
    pub rots: Vec<Rot>,
    /// Planned rots that had not struck by the heal: their time had not
    /// come, or no content was on two servers since.
    pub missed: u64,
}

impl Rotter {
    /// `times`: the plan's, after the setup, sorted.
    pub fn new(seed: u64, times: &[Duration]) -> Self {
        Rotter {
            due: times.iter().copied().collect(),
            rng: SimRng::new(seed, 28),
            rots: Vec::new(),
            missed: 0,
        }
    }

    /// Carries out the rot whose time has come (`since` is the plan's
    /// clock, `now` the simulation's), if some content can rot: returns
    /// the trace line. `applied` is every server's applied index, by id.
    pub fn strike(
        &mut self,
        since: Duration,
        now: Duration,
        disks: &[SharedDisk],
        applied: &[u64],
    ) -> Option<String> {
        let at = *self.due.front()?;
        if at > since {
            return None;
        }
        self.due.pop_front();
        let candidates = self.candidates(disks);
        if candidates.is_empty() {
            // Nothing is on two servers yet: look again a little later.
            self.due.push_front(since + ROT_RETRY);
            return None;
        }
        let (server, digest, size) = *self.rng.pick(&candidates);
        let bit = self.rng.range(0, size as u64 * 8 - 1);
        let rotten = disks[server as usize - 1].borrow_mut().rot(&digest, bit)?;
        let intact: Vec<String> = (1..=disks.len() as u32)
            .filter(|&t| t != server && disks[t as usize - 1].borrow().blobs.contains_key(&digest))
            .map(|t| format!("server{t}"))
            .collect();
        let rot = Rot {
            server,
            digest,
            size,
            bit,
            at: now,
            applied: applied.get(server as usize).copied().unwrap_or(0),
            rotten: Some(rotten),
            gone: None,
        };
        let line = format!(
            "!! rot: bit {bit} of blob {} ({size} bytes) flipped on server{server}'s disk (intact on {})",
            short(&digest),
            intact.join(", ")
        );
        self.rots.push(rot);
        Some(line)
    }

    /// (server, digest, size) of every copy that may rot: not empty (no
    /// bit to flip), content never rotted in this run, and another server
    /// holds it (intact, since each content rots at most once).
    fn candidates(&self, disks: &[SharedDisk]) -> Vec<(u32, [u8; 32], usize)> {
        let rotted: BTreeSet<[u8; 32]> = self.rots.iter().map(|r| r.digest).collect();
        let mut out = Vec::new();
        for (i, d) in disks.iter().enumerate() {
            for (digest, bytes) in &d.borrow().blobs {
                let elsewhere = disks
                    .iter()
                    .enumerate()
                    .any(|(j, o)| j != i && o.borrow().blobs.contains_key(digest));
                if !bytes.is_empty() && !rotted.contains(digest) && elsewhere {
                    out.push((i as u32 + 1, *digest, bytes.len()));
                }
            }
        }
        out
    }

    /// Notes the rotten copies that left their disk in the step just run.
    pub fn track(&mut self, now: Duration, disks: &[SharedDisk]) {
        for r in self.rots.iter_mut().filter(|r| r.rotten.is_some()) {
            if !still_rotten(r, &disks[r.server as usize - 1].borrow()) {
                r.rotten = None;
                r.gone = Some(now);
            }
        }
    }

    /// The heal: rots that have not struck will not. Returns how many.
    pub fn give_up(&mut self) -> u64 {
        let left = self.due.len() as u64;
        self.due.clear();
        self.missed += left;
        left
    }

    /// The rots, their rotten contents dropped (the outcome outlives the
    /// run, and a sweep keeps many outcomes).
    pub fn into_rots(self) -> Vec<Rot> {
        self.rots
            .into_iter()
            .map(|r| Rot { rotten: None, ..r })
            .collect()
    }
}

/// Whether the rotten copy of `r` is still on `disk`.
fn still_rotten(r: &Rot, disk: &Disk) -> bool {
    match (&r.rotten, disk.blobs.get(&r.digest)) {
        (Some(rotten), Some(b)) => Arc::ptr_eq(rotten, b),
        _ => false,
    }
}

/// Whether `server` held a rotten copy of content `wanted` accepts at some
/// moment of `from..=to`: what explains a download through it that arrived
/// damaged.
pub fn rotten_during(
    rots: &[Rot],
    server: u32,
    wanted: impl Fn(&[u8; 32]) -> bool,
    from: Duration,
    to: Duration,
) -> bool {
    rots.iter().any(|r| {
        r.server == server && wanted(&r.digest) && r.at <= to && r.gone.is_none_or(|g| g >= from)
    })
}

/// Which check found each rot: the time of the `Damaged` verdict matched
/// to it, by rot. Each verdict is matched to the earliest rot of that copy
/// before it that no other verdict took; the verdicts left over are false
/// positives.
fn match_verdicts<'a>(
    rots: &[Rot],
    checks: &'a [Checked],
) -> (Vec<Option<Duration>>, Vec<&'a Checked>) {
    let mut found = vec![None; rots.len()];
    let mut unexplained = Vec::new();
    let damaged = checks
        .iter()
        .filter(|c| matches!(c.verdict, Verdict::Damaged { .. }));
    for c in damaged {
        let rot = rots
            .iter()
            .enumerate()
            .find(|(i, r)| found[*i].is_none() && c.is_of(r) && r.at <= c.at);
        match rot {
            Some((i, _)) => found[i] = Some(c.at),
            None => unexplained.push(c),
        }
    }
    (found, unexplained)
}

/// The rots' final checks (see the module docs). `disks` are by server id
/// less one, as they are at the end; `rots` still hold their rotten
/// contents (see [`Rotter::into_rots`]).
pub fn check_rots(
    rots: &[Rot],
    checks: &[Checked],
    history: &History,
    disks: &[std::cell::Ref<'_, Disk>],
    v: &mut Vec<String>,
) {
    let (found, unexplained) = match_verdicts(rots, checks);
    for c in unexplained {
        v.push(format!(
            "server{} found blob {} damaged at {}, but no copy of it had rotted there: {:?}",
            c.server,
            c.digest,
            secs(c.at),
            c.verdict
        ));
    }
    let named_at_end = history.last().digests();
    for (r, found) in rots.iter().zip(found) {
        let disk = &disks[r.server as usize - 1];
        if still_rotten(r, disk) {
            v.push(format!(
                "the {} is still on the disk at the end",
                r.describe()
            ));
            continue;
        }
        // Named at every point the server's catalogue could be at from
        // the rot on: it was never garbage, so only a check may have
        // removed it.
        let kept = history
            .between(r.applied, u64::MAX)
            .all(|(_, c)| c.digests().contains(&r.digest));
        if kept && found.is_none() {
            v.push(format!(
                "the {}, named by the catalogue since, left the disk at {} without a check finding it damaged",
                r.describe(),
                r.gone.map_or("?".into(), secs)
            ));
        }
        if named_at_end.contains(&r.digest) && !disk.blobs.contains_key(&r.digest) {
            v.push(format!(
                "the {} was not repaired: the catalogue names the content, the disk lacks it",
                r.describe()
            ));
        }
    }
}

/// What the rots and checks of a run amount to, for a sweep's summary.
pub struct RotCounts {
    pub injected: u64,
    pub missed: u64,
    /// Rots a `Damaged` verdict found.
    pub found: u64,
    /// Of them, found before `early` (the verifiers' start): by a
    /// client's download or another server's fetch.
    pub found_early: u64,
    /// Rotten copies that left their disk without a verdict (collected as
    /// garbage with their file).
    pub collected: u64,
    pub damaged: u64,
    pub sound: u64,
    pub unreadable: u64,
}

impl RotCounts {
    pub fn of(rots: &[Rot], missed: u64, checks: &[Checked], early: Option<Duration>) -> Self {
        let (found, _) = match_verdicts(rots, checks);
        let found_early = found
            .iter()
            .flatten()
            .filter(|at| early.is_none_or(|e| **at < e))
            .count() as u64;
        let verdicts = |f: fn(&Verdict) -> bool| checks.iter().filter(|c| f(&c.verdict)).count();
        let found_n = found.iter().filter(|f| f.is_some()).count() as u64;
        RotCounts {
            injected: rots.len() as u64,
            missed,
            found: found_n,
            found_early,
            collected: rots
                .iter()
                .zip(&found)
                .filter(|(r, f)| f.is_none() && r.gone.is_some())
                .count() as u64,
            damaged: verdicts(|v| matches!(v, Verdict::Damaged { .. })) as u64,
            sound: verdicts(|v| matches!(v, Verdict::Sound)) as u64,
            unreadable: verdicts(|v| matches!(v, Verdict::Unreadable { .. })) as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn disks(contents: &[&[&[u8]]]) -> Vec<SharedDisk> {
        contents
            .iter()
            .map(|blobs| {
                let d = crate::disk::shared_disk();
                for b in *blobs {
                    let name = *blake3::hash(b).as_bytes();
                    d.borrow_mut().blobs.insert(name, b.to_vec().into());
                }
                d
            })
            .collect()
    }

    #[test]
    fn only_content_on_two_servers_rots_and_each_content_once() {
        let (a, b, empty): (&[u8], &[u8], &[u8]) = (b"on one and three", b"only on two", b"");
        let ds = disks(&[&[a, empty], &[b, empty], &[a]]);
        let mut r = Rotter::new(1, &[Duration::ZERO, Duration::ZERO, Duration::ZERO]);
        let zero = Duration::ZERO;
        assert!(r.strike(zero, zero, &ds, &[0; 4]).is_some());
        assert_eq!(r.rots[0].digest, *blake3::hash(a).as_bytes());
        // `a` has rotted once; `b` and the empty content cannot: the next
        // rot waits.
        assert!(r.strike(zero, zero, &ds, &[0; 4]).is_none());
        assert_eq!(r.rots.len(), 1);
        assert_eq!(r.due.front(), Some(&ROT_RETRY));
        assert_eq!(r.give_up(), 2);
    }

    #[test]
    fn a_rot_is_found_once_and_other_damage_is_a_false_positive() {
        let a: &[u8] = b"some content";
        let ds = disks(&[&[a], &[a]]);
        let mut r = Rotter::new(2, &[Duration::ZERO]);
        let t = Duration::from_secs(1);
        r.strike(t, t, &ds, &[0; 3]).expect("a rot");
        let server = r.rots[0].server;
        let digest = hex(&r.rots[0].digest)[..16].to_string();
        let verdict = |at, server| Checked {
            at,
            server,
            digest: digest.clone(),
            verdict: Verdict::Damaged { why: "test".into() },
        };
        let other = 3 - server;
        let checks = [
            verdict(Duration::from_millis(500), server),
            verdict(Duration::from_secs(2), other),
            verdict(Duration::from_secs(3), server),
            verdict(Duration::from_secs(4), server),
        ];
        let (found, unexplained) = match_verdicts(&r.rots, &checks);
        assert_eq!(found, vec![Some(Duration::from_secs(3))]);
        // Before the rot, on the other server, and a second one.
        assert_eq!(unexplained.len(), 3);
        // Explained only on its server, while it was there.
        assert!(rotten_during(&r.rots, server, |_| true, t, t));
        assert!(!rotten_during(&r.rots, other, |_| true, t, t));
        assert!(!rotten_during(&r.rots, server, |_| true, zero(), zero()));
        ds[server as usize - 1].borrow_mut().blobs.clear();
        r.track(Duration::from_secs(5), &ds);
        assert_eq!(r.rots[0].gone, Some(Duration::from_secs(5)));
        assert!(!rotten_during(
            &r.rots,
            server,
            |_| true,
            Duration::from_secs(6),
            Duration::from_secs(7)
        ));
    }

    fn zero() -> Duration {
        Duration::ZERO
    }
}
