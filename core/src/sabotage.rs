//! Deliberate bugs, for proving that the simulator's checkers catch what
//! they are meant to catch: a checker is trusted once a run with its bug
//! switched on has seen it fire.
//!
//! Only with the `sabotage` feature (the simulator's tests enable it);
//! without it [`on`] is a constant `false` and the bugs compile away. A bug
//! is switched on for the calling thread: the simulator runs each seed on
//! one thread, so a sabotaged seed never leaks into another.

/// A bug that can be switched on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sabotage {
    /// The balancer hands out a server that answered "no".
    BalancerTakesNoForYes,
    /// The master counts an entry committed as soon as its own copy is
    /// durable.
    MasterCommitsOnOneCopy,
    /// A follower applies entries it holds before they are committed.
    FollowerAppliesUncommitted,
    /// A follower acknowledges an entry before its disk has it.
    FollowerAcksBeforeDurable,
    /// A candidate takes office as soon as it stands, without votes.
    ElectedWithoutVotes,
    /// A restarted server forgets the view it had stored.
    ViewForgottenOnRestart,
    /// An upload is stored as soon as its own server's copy is durable,
    /// without waiting for copies on other servers.
    StoredOnOneDisk,
}

#[cfg(feature = "sabotage")]
thread_local! {
    static ACTIVE: std::cell::Cell<Option<Sabotage>> = const { std::cell::Cell::new(None) };
}

/// Switches `bug` on (or every bug off) for the calling thread.
#[cfg(feature = "sabotage")]
pub fn set(bug: Option<Sabotage>) {
    ACTIVE.with(|a| a.set(bug));
}

/// Is `bug` switched on for the calling thread?
#[inline]
pub(crate) fn on(bug: Sabotage) -> bool {
    #[cfg(feature = "sabotage")]
    {
        ACTIVE.with(|a| a.get()) == Some(bug)
    }
    #[cfg(not(feature = "sabotage"))]
    {
        let _ = bug;
        false
    }
}
