//! The driver's execution of `Output::Persist`: batches are committed in
//! output order, `Persisted` comes back only once the store holds the batch,
//! and a store that fails (or is missing) stops the driver with an error.

use ferry_core::store::{Batch, MemStore, Recovered, Store, StoreError, Write};
use ferry_core::{Input, Node, Output, Timestamp};
use ferry_runtime_smol::{Driver, DriverError};
use std::collections::VecDeque;
use std::fmt;
use std::ops::ControlFlow;
use std::sync::{Arc, Mutex};

/// A store shared with the test node, so the node can look at what is
/// durable when it is told `Persisted`. Fails every commit after `fail_after`.
#[derive(Clone, Default)]
struct Shared {
    inner: Arc<Mutex<MemStore>>,
    fail_after: Option<u64>,
}

impl Shared {
    fn applied(&self) -> u64 {
        self.load().map(|r| r.applied).unwrap_or(0)
    }
}

impl Store for Shared {
    fn commit(&mut self, batch: &Batch) -> Result<(), StoreError> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        if self.fail_after.is_some_and(|n| inner.commits >= n) {
            return Err(StoreError("disk on fire".into()));
        }
        inner.commit(batch)
    }

    fn load(&self) -> Result<Recovered, StoreError> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| StoreError("poisoned".into()))?;
        inner.load()
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Seen {
    /// `Persisted { token }` arrived while the store's applied index was
    /// `durable`.
    Persisted { token: u64, durable: u64 },
    /// Emitted after the node's last Persist, in the same drain.
    AfterLast,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self:?}")
    }
}

/// Emits `Persist { token: i, batch: [SetApplied(i + 1)] }` for i in 0..n,
/// then an event; on each `Persisted` it reports what the store holds.
/// The first Persisted also queues one more Persist, to check that outputs
/// of a Persisted input are executed too.
struct Persister {
    store: Shared,
    n: u64,
    out: VecDeque<Output<Seen>>,
}

fn set_applied(index: u64) -> Batch {
    Batch {
        writes: vec![Write::SetApplied { index }],
    }
}

impl Persister {
    fn new(store: Shared, n: u64) -> Self {
        let mut out: VecDeque<_> = (0..n)
            .map(|i| Output::Persist {
                token: i,
                batch: set_applied(i + 1),
            })
            .collect();
        out.push_back(Output::Event(Seen::AfterLast));
        Persister { store, n, out }
    }
}

impl Node for Persister {
    type Event = Seen;

    fn handle_input(&mut self, _now: Timestamp, input: Input<'_>) {
        if let Input::Persisted { token } = input {
            let durable = self.store.applied();
            self.out
                .push_back(Output::Event(Seen::Persisted { token, durable }));
            if token == 0 {
                self.out.push_back(Output::Persist {
                    token: self.n,
                    batch: set_applied(self.n + 1),
                });
            }
        }
    }

    fn handle_timeout(&mut self, _now: Timestamp) {}

    fn poll_output(&mut self) -> Option<Output<Seen>> {
        self.out.pop_front()
    }

    fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }
}

/// Runs the driver until it has seen `want` events or stopped.
fn run(driver: &mut Driver<Persister>, want: usize) -> (Vec<Seen>, Result<(), DriverError>) {
    let mut seen = Vec::new();
    let result = driver.run_until(|e| {
        seen.push(e);
        if seen.len() == want {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    });
    (seen, result)
}

#[test]
fn persisted_comes_back_in_order_after_the_batch_is_durable() {
    let store = Shared::default();
    let mut driver =
        Driver::new(Persister::new(store.clone(), 3)).with_store(Box::new(store.clone()));
    let (seen, result) = run(&mut driver, 5);
    assert_eq!(result, Ok(()));
    // Every output of the first drain runs before any Persisted is fed;
    // then the tokens come back in commit order, and the Persist queued by
    // the first of them is committed before the next token is fed.
    assert_eq!(
        seen,
        vec![
            Seen::AfterLast,
            Seen::Persisted {
                token: 0,
                durable: 3
            },
            Seen::Persisted {
                token: 1,
                durable: 4
            },
            Seen::Persisted {
                token: 2,
                durable: 4
            },
            Seen::Persisted {
                token: 3,
                durable: 4
            },
        ]
    );
    assert_eq!(store.applied(), 4);
}

#[test]
fn tokens_left_at_a_break_are_fed_on_the_next_run() {
    let store = Shared::default();
    let mut driver =
        Driver::new(Persister::new(store.clone(), 2)).with_store(Box::new(store.clone()));
    let (first, result) = run(&mut driver, 1);
    assert_eq!((first, result), (vec![Seen::AfterLast], Ok(())));
    let (rest, result) = run(&mut driver, 3);
    assert_eq!(result, Ok(()));
    let tokens: Vec<u64> = rest
        .iter()
        .filter_map(|s| match s {
            Seen::Persisted { token, .. } => Some(*token),
            Seen::AfterLast => None,
        })
        .collect();
    assert_eq!(tokens, [0, 1, 2]);
}

#[test]
fn a_failing_store_stops_the_driver_for_good() {
    let store = Shared {
        fail_after: Some(1),
        ..Shared::default()
    };
    let mut driver = Driver::new(Persister::new(store.clone(), 3))
        .named("node-7")
        .with_store(Box::new(store.clone()));
    let (seen, result) = run(&mut driver, 99);
    // The failing batch stops the drain at once: nothing after it runs, no
    // Persisted is fed, and the error names the node and the cause.
    assert_eq!(seen, vec![]);
    let err = result.unwrap_err();
    assert!(
        matches!(&err, DriverError::Store { node, .. } if node == "node-7"),
        "{err:?}"
    );
    assert_eq!(
        err.to_string(),
        "node-7 stopped: storage error: disk on fire"
    );
    assert_eq!(store.applied(), 1);
    // Running again does nothing but report the same error.
    let (seen, again) = run(&mut driver, 99);
    assert_eq!((seen, again), (vec![], Err(err)));
}

#[test]
fn persist_without_a_store_is_an_error_not_a_panic() {
    let mut driver = Driver::new(Persister::new(Shared::default(), 1)).named("lonely");
    let (seen, result) = run(&mut driver, 99);
    assert_eq!(seen, vec![]);
    assert_eq!(
        result,
        Err(DriverError::NoStore {
            node: "lonely".into()
        })
    );
}

#[test]
fn a_failure_wins_over_a_break_in_the_same_drain() {
    let store = Shared {
        fail_after: Some(0),
        ..Shared::default()
    };
    // The event that breaks comes first; the failing Persist after it.
    let mut node = Persister::new(store.clone(), 1);
    node.out.push_front(Output::Event(Seen::AfterLast));
    let mut driver = Driver::new(node).with_store(Box::new(store));
    let (seen, result) = run(&mut driver, 1);
    assert_eq!(seen, vec![Seen::AfterLast]);
    assert!(
        matches!(result, Err(DriverError::Store { .. })),
        "{result:?}"
    );
}
