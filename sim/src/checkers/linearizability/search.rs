//! The Wing & Gong search for a linearization, with porcupine's memo
//! (Athalye's porcupine, after Lowe's "Testing for linearizability").
//!
//! The operations' invocations and returns make one list, in time order.
//! The search walks it from the front: an invocation is a candidate to
//! take effect now; it does if the model accepts its answer in the current
//! state, and then it leaves the list (invocation and return) and the walk
//! starts again from the front. Reaching a return means the operation it
//! belongs to should have taken effect already: the last choice is undone
//! and the walk goes on after it. A memo of (operations done, state) cuts
//! every path that reaches a configuration seen before, which is what
//! makes the search practical: two orders of concurrent operations that
//! end in the same state are explored once.
//!
//! An optional operation (no return) has no return in the list: nothing
//! ever forces it, so it is taken when that helps and otherwise never; the
//! search succeeds once every operation with a return has taken effect.
//! At each point the candidates with a return are tried first, the
//! optional ones after them (every candidate is still tried, so the search
//! is as complete as before): a history with many optional operations
//! (a batch of uploads without an answer is one per file) would otherwise
//! try most subsets of them before it tried none, which ran past the
//! budget (files seeds 749 and 983: 3.4 and 1.4 million steps).

use super::{Model, Op};
use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

/// What the search of one part found.
pub(super) struct Searched {
    pub result: Found,
    pub steps: u64,
}

pub(super) enum Found {
    Linearizable,
    NotLinearizable(String),
    OverBudget,
}

/// The end of the list (and the "no node" of its links).
const NIL: usize = usize::MAX;
/// The list's head: a node before every event.
const HEAD: usize = 0;

/// A set of operations, by index.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Bits(Vec<u64>);

impl Bits {
    fn new(n: usize) -> Self {
        Bits(vec![0; n.div_ceil(64)])
    }
    fn set(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn clear(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
}

/// The event list: node `k + 1` is event `k`; an operation's invocation
/// and return are unlinked and relinked together (dancing links: undone
/// in the reverse order, so every node finds its neighbours back).
struct List {
    next: Vec<usize>,
    prev: Vec<usize>,
    /// Per node: its operation, and whether it is the invocation.
    event: Vec<(usize, bool)>,
    /// Per operation: its return's node, if it has one.
    ret_node: Vec<usize>,
    /// Per operation: its invocation's node.
    call_node: Vec<usize>,
}

impl List {
    fn new(times: &[(Duration, Option<Duration>)]) -> Self {
        // (time, returns after invocations at one instant, op, invocation?):
        // an operation that returned at the instant another was invoked
        // counts as concurrent with it, the cautious reading of a clock
        // that ticks in steps.
        let mut events: Vec<(Duration, u8, usize, bool)> = Vec::new();
        for (i, (invoke, ret)) in times.iter().enumerate() {
            events.push((*invoke, 0, i, true));
            if let Some(r) = ret {
                events.push((*r, 1, i, false));
            }
        }
        events.sort();
        let n = events.len() + 1;
        let mut list = List {
            next: (1..=n).map(|k| if k == n { NIL } else { k }).collect(),
            prev: (0..n).map(|k| if k == 0 { NIL } else { k - 1 }).collect(),
            event: vec![(NIL, false); n],
            ret_node: vec![NIL; times.len()],
            call_node: vec![NIL; times.len()],
        };
        for (k, (_, _, op, call)) in events.into_iter().enumerate() {
            list.event[k + 1] = (op, call);
            match call {
                true => list.call_node[op] = k + 1,
                false => list.ret_node[op] = k + 1,
            }
        }
        list
    }

    fn unlink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = n;
        if n != NIL {
            self.prev[n] = p;
        }
    }

    fn relink(&mut self, node: usize) {
        let (p, n) = (self.prev[node], self.next[node]);
        self.next[p] = node;
        if n != NIL {
            self.prev[n] = node;
        }
    }

    /// Takes operation `op` out: it has taken effect.
    fn lift(&mut self, op: usize) {
        self.unlink(self.call_node[op]);
        if self.ret_node[op] != NIL {
            self.unlink(self.ret_node[op]);
        }
    }

    /// Puts operation `op` back, undoing [`List::lift`].
    fn unlift(&mut self, op: usize) {
        if self.ret_node[op] != NIL {
            self.relink(self.ret_node[op]);
        }
        self.relink(self.call_node[op]);
    }
}

/// Searches for a linearization of `ops`, in at most `budget` steps.
pub(super) fn search<M: Model>(
    model: &M,
    ops: &[&Op<M::Input, M::Output>],
    budget: u64,
) -> Searched {
    let times: Vec<_> = ops.iter().map(|o| (o.invoke, o.ret)).collect();
    let mut list = List::new(&times);
    let mut remaining = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut state = model.init();
    let mut done = Bits::new(ops.len());
    let mut memo: HashSet<(Bits, M::State)> = HashSet::new();
    // The choices made, each with the state before it and whether it was
    // made among the optional candidates.
    let mut stack: Vec<(usize, M::State, bool)> = Vec::new();
    // Whether the walk is among the optional candidates (the second pass
    // over the candidates) or among those with a return (the first).
    let mut optional = false;
    // The furthest the search got: how many definite operations had taken
    // effect, and the operation whose return stopped it there.
    let mut best = (0usize, NIL);
    let definite = ops.iter().filter(|o| o.ret.is_some()).count();
    let mut steps = 0u64;
    let mut node = list.next[HEAD];
    loop {
        if remaining == 0 {
            return Searched {
                result: Found::Linearizable,
                steps,
            };
        }
        let (op, call) = match node {
            NIL => (NIL, false),
            k => list.event[k],
        };
        if call && ops[op].ret.is_none() != optional {
            // Not a candidate of this pass.
            node = list.next[node];
            continue;
        }
        if call {
            if steps >= budget {
                return Searched {
                    result: Found::OverBudget,
                    steps,
                };
            }
            steps += 1;
            let o = ops[op];
            if let Some(next) = model.step(&state, &o.input, &o.output) {
                let mut d = done.clone();
                d.set(op);
                if memo.insert((d.clone(), next.clone())) {
                    stack.push((op, std::mem::replace(&mut state, next), optional));
                    done = d;
                    list.lift(op);
                    if o.ret.is_some() {
                        remaining -= 1;
                    }
                    optional = false;
                    node = list.next[HEAD];
                    continue;
                }
            }
            node = list.next[node];
            continue;
        }
        // A return (or the end): the candidates of this pass are spent.
        if !optional {
            optional = true;
            node = list.next[HEAD];
            continue;
        }
        // Its operation should have taken effect.
        if definite - remaining >= best.0 {
            best = (definite - remaining, op);
        }
        let Some((last, before, pass)) = stack.pop() else {
            return Searched {
                result: Found::NotLinearizable(explain(ops, best)),
                steps,
            };
        };
        state = before;
        done.clear(last);
        list.unlift(last);
        if ops[last].ret.is_some() {
            remaining += 1;
        }
        optional = pass;
        node = list.next[list.call_node[last]];
    }
}

/// Operations listed in a failure, at most (the rest are counted).
const SHOWN: usize = 40;

/// The part's operations in invocation order, and where the search got
/// furthest: `best.0` definite operations placed, stopped by `best.1`.
fn explain<I: std::fmt::Display, O: std::fmt::Display>(
    ops: &[&Op<I, O>],
    best: (usize, usize),
) -> String {
    let mut order: Vec<usize> = (0..ops.len()).collect();
    order.sort_by_key(|&i| (ops[i].invoke, i));
    let mut s = String::new();
    let definite = ops.iter().filter(|o| o.ret.is_some()).count();
    let _ = write!(
        s,
        "no order of these {} operation(s) fits the answers and real time \
         (at best {} of the {} answered ones took effect",
        ops.len(),
        best.0,
        definite
    );
    if let Some(o) = ops.get(best.1) {
        let _ = write!(s, ", then none could precede the answer of: {}", line(o));
    }
    s.push(')');
    for &i in order.iter().take(SHOWN) {
        let _ = write!(s, "\n      {}", line(ops[i]));
    }
    if ops.len() > SHOWN {
        let _ = write!(s, "\n      ... and {} more", ops.len() - SHOWN);
    }
    s
}

/// One operation: client, interval, what it asked and was answered.
fn line<I: std::fmt::Display, O: std::fmt::Display>(o: &Op<I, O>) -> String {
    let end = match o.ret {
        Some(r) => format!("{:.3}s", r.as_secs_f64()),
        None => "no answer".to_string(),
    };
    format!(
        "client {} [{:.3}s, {end}] {} -> {}",
        o.client,
        o.invoke.as_secs_f64(),
        o.input,
        o.output
    )
}
