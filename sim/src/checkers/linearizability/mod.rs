//! An independent linearizability checker over the clients' history.
//!
//! It sees only what the clients saw: each operation's invocation and
//! return, in simulated time, and what it was answered. Nothing of the
//! servers (not their logs, not their state): so a bug anywhere between the
//! client and the catalogue that makes an answer impossible in *every*
//! order consistent with real time is caught, whatever the other checkers
//! assume about how the servers work.
//!
//! - [`Op`]: one operation; an operation without an answer (or with one
//!   that leaves open whether it took effect, such as "cluster unavailable:
//!   it may still take effect") has no return time: it **may or may not**
//!   have taken effect, at any time after its invocation.
//! - [`Model`]: a sequential specification, and how its histories split
//!   into independent parts.
//! - [`search`]: the Wing & Gong search with porcupine's memoization, under
//!   a step budget.
//! - [`catalogue`]: the model of Ferry's accounts and files, written from
//!   the specification; [`record`]: the simulator's client records as
//!   histories of it.

pub mod catalogue;
pub mod record;
pub mod search;
#[cfg(test)]
mod tests;

use std::fmt;
use std::hash::Hash;
use std::time::Duration;

/// One operation of a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op<I, O> {
    /// Which client ran it (its operations never overlap).
    pub client: usize,
    /// When it was sent: it took effect no sooner.
    pub invoke: Duration,
    /// When its answer came: it took effect no later. `None`: no answer,
    /// or one that does not say whether it took effect: it is optional,
    /// and may take effect at any time after `invoke`.
    pub ret: Option<Duration>,
    pub input: I,
    /// For an optional operation, whatever the model takes for "unknown".
    pub output: O,
}

/// A sequential specification.
pub trait Model {
    /// Compared and hashed by the search's memo: two paths that reach the
    /// same state with the same operations done are the same.
    type State: Clone + Eq + Hash;
    type Input: fmt::Display;
    type Output: fmt::Display;

    fn init(&self) -> Self::State;

    /// The state after `input` answered `output` in `state`, or `None` if
    /// that answer is impossible there.
    fn step(
        &self,
        state: &Self::State,
        input: &Self::Input,
        output: &Self::Output,
    ) -> Option<Self::State>;

    /// Splits a history into parts that may be checked one by one: each a
    /// list of indexes into `history`, every operation in exactly one part.
    /// Sound only if no operation of one part can change or observe what an
    /// operation of another part does (linearizability is local: Herlihy
    /// and Wing, 1990). The default is one part.
    fn partition(&self, history: &[Op<Self::Input, Self::Output>]) -> Vec<Vec<usize>> {
        vec![(0..history.len()).collect()]
    }
}

/// The verdict on a history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Linearizable,
    /// The smallest part that has no linearization, explained.
    NotLinearizable(String),
    /// Some part ran out of its step budget (and none was found wrong).
    Unknown,
}

/// What a check did, for a sweep's summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub ops: u64,
    pub parts: u64,
    /// Steps of the search (model steps tried), over all parts.
    pub steps: u64,
    /// Parts that ran out of budget.
    pub over_budget: u64,
}

/// Checks `history` against `model`, part by part, with at most `budget`
/// steps per part.
pub fn check<M: Model>(
    model: &M,
    history: &[Op<M::Input, M::Output>],
    budget: u64,
) -> (Verdict, Stats) {
    let mut stats = Stats {
        ops: history.len() as u64,
        ..Stats::default()
    };
    let mut failed: Option<(usize, String)> = None;
    for part in model.partition(history) {
        stats.parts += 1;
        let ops: Vec<&Op<M::Input, M::Output>> =
            part.iter().filter_map(|&i| history.get(i)).collect();
        // First without the optional operations (none of them need take
        // effect): most parts linearize so, in a few steps, where a search
        // among the optional ones may try most subsets of them first. Only
        // if that fails, every operation.
        let answered: Vec<&Op<M::Input, M::Output>> =
            ops.iter().copied().filter(|o| o.ret.is_some()).collect();
        let mut found = search::search(model, &answered, budget);
        if answered.len() < ops.len() && !matches!(found.result, search::Found::Linearizable) {
            stats.steps += found.steps;
            found = search::search(model, &ops, budget);
        }
        stats.steps += found.steps;
        match found.result {
            search::Found::Linearizable => {}
            search::Found::OverBudget => stats.over_budget += 1,
            search::Found::NotLinearizable(why) => {
                // The smallest failing part is the easiest to read.
                if failed.as_ref().is_none_or(|(n, _)| ops.len() < *n) {
                    failed = Some((ops.len(), why));
                }
            }
        }
    }
    let verdict = match failed {
        Some((_, why)) => Verdict::NotLinearizable(why),
        None if stats.over_budget > 0 => Verdict::Unknown,
        None => Verdict::Linearizable,
    };
    (verdict, stats)
}
