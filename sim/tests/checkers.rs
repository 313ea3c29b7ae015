//! Each checker of `ferry_sim::checkers` is trusted because a run with the
//! bug it is meant to catch switched on (`ferry_core::sabotage`) sees it
//! fire, and the same run without the bug does not.

use ferry_core::sabotage::{self, Sabotage};
use ferry_sim::{
    run_connect_scenario, run_files_scenario, run_replication_scenario, ConnectConfig, FilesConfig,
    Preset, ReplicationConfig,
};

/// Runs `f` with `bug` switched on for this thread, and off again after.
fn sabotaged<R>(bug: Sabotage, f: impl FnOnce() -> R) -> R {
    struct Off;
    impl Drop for Off {
        fn drop(&mut self) {
            sabotage::set(None);
        }
    }
    sabotage::set(Some(bug));
    let _off = Off;
    f()
}

#[test]
fn a_balancer_that_takes_no_for_yes_is_caught() {
    // Every server is busy: each probe is answered "no".
    let seed = 1;
    let cfg = ConnectConfig::for_preset(Preset::AllServersBusy, seed).expect("a named preset");
    let honest = run_connect_scenario(seed, &cfg);
    assert!(
        !honest
            .violations
            .iter()
            .any(|v| v.contains("answered \"no\"")),
        "{:?}",
        honest.violations
    );
    let broken = sabotaged(Sabotage::BalancerTakesNoForYes, || {
        run_connect_scenario(seed, &cfg)
    });
    assert!(
        broken
            .violations
            .iter()
            .any(|v| v.contains("whose server answered \"no\"")),
        "the checker did not fire: {:?}",
        broken.violations
    );
}

/// Runs replication swarm seeds with `bug` on until one shows a violation
/// containing `fires`; returns that seed. The same seed without the bug
/// must be clean of it. (Seeds 1–50: since logins were counted in the log,
/// the first seed whose schedule elects a vote-less master is 32.)
fn caught_in_replication(bug: Sabotage, fires: &str) -> u64 {
    for seed in 1..=50 {
        let cfg = ReplicationConfig::swarm(seed);
        let broken = sabotaged(bug, || run_replication_scenario(seed, &cfg));
        if broken.violations.iter().any(|v| v.contains(fires)) {
            let honest = run_replication_scenario(seed, &cfg);
            assert!(
                !honest.violations.iter().any(|v| v.contains(fires)),
                "seed {seed} fires without {bug:?} too: {:?}",
                honest.violations
            );
            return seed;
        }
    }
    panic!("no seed caught {bug:?} ({fires:?})");
}

#[test]
fn a_master_that_commits_on_its_own_copy_is_caught() {
    caught_in_replication(Sabotage::MasterCommitsOnOneCopy, "stores hold it");
}

#[test]
fn a_follower_that_acknowledges_before_its_disk_has_the_entry_is_caught() {
    caught_in_replication(Sabotage::FollowerAcksBeforeDurable, "stores hold it");
}

#[test]
fn a_candidate_that_takes_office_without_votes_is_caught() {
    caught_in_replication(Sabotage::ElectedWithoutVotes, "two masters of view");
}

#[test]
fn a_server_that_forgets_its_view_on_restart_is_caught() {
    caught_in_replication(Sabotage::ViewForgottenOnRestart, "view went back");
}

#[test]
fn a_follower_that_applies_before_the_commit_is_caught() {
    caught_in_replication(
        Sabotage::FollowerAppliesUncommitted,
        "but the master has committed only up to",
    );
}

#[test]
fn a_put_stored_on_its_own_disk_alone_is_caught() {
    let fires = "answered \"stored\"";
    let seed = (1..=20)
        .find(|&seed| {
            let cfg = FilesConfig::swarm(seed);
            let broken = sabotaged(Sabotage::StoredOnOneDisk, || run_files_scenario(seed, &cfg));
            broken.violations.iter().any(|v| v.contains(fires))
        })
        .expect("some seed catches a put answered on one disk's word");
    let honest = run_files_scenario(seed, &FilesConfig::swarm(seed));
    assert!(
        !honest.violations.iter().any(|v| v.contains(fires)),
        "seed {seed} fires without the bug too: {:?}",
        honest.violations
    );
}

#[test]
fn a_batch_stored_on_its_own_disk_alone_is_caught() {
    // The same bug, seen at a batch's answer: each file it stored is
    // checked on the disks at that moment.
    let fires = "answered \"stored\" (UploadMany)";
    let seed = (1..=40)
        .filter(|&seed| FilesConfig::swarm(seed).batch_pct > 0)
        .find(|&seed| {
            let cfg = FilesConfig::swarm(seed);
            let broken = sabotaged(Sabotage::StoredOnOneDisk, || run_files_scenario(seed, &cfg));
            broken.violations.iter().any(|v| v.contains(fires))
        })
        .expect("some seed catches a batch answered on one disk's word");
    let honest = run_files_scenario(seed, &FilesConfig::swarm(seed));
    assert!(
        !honest
            .violations
            .iter()
            .any(|v| v.contains("answered \"stored\"")),
        "seed {seed} fires without the bug too: {:?}",
        honest.violations
    );
    eprintln!("seed {seed} catches a batch answered on one disk's word");
}

/// The linearizability checker on real histories: a files run's history
/// (registrations, logins, uploads, deletes, shares, listings) passes, and
/// the same history with one listing swapped for an older, different one
/// of the same user (a stale read) is refused. (A sabotage that skips the
/// read gate was tried: no seed of these scenarios then reads stale, since
/// a follower learns of a commit before another client can ask it, so
/// the history is mutated instead.)
#[test]
fn a_stale_listing_in_a_real_history_is_caught_by_the_linearizability_checker() {
    use ferry_sim::checkers::linearizability::catalogue::{Catalogue, Input};
    use ferry_sim::checkers::linearizability::{check, Verdict};
    use ferry_sim::scenarios::files::history::history;

    let (mut caught, mut tried) = (0, 0);
    for seed in 1..=10 {
        let outcome = run_files_scenario(seed, &FilesConfig::swarm(seed));
        outcome.assert_ok();
        let d = &outcome.details;
        let h = history(&d.accounts, &d.clients, &d.plan.users);
        assert_eq!(check(&Catalogue, &h, 200_000).0, Verdict::Linearizable);
        // Listings of one user, answered, in order.
        let ls = |i: usize| match &h[i].input {
            Input::Ls { user } => h[i].ret.map(|_| user.clone()),
            _ => None,
        };
        for b in 0..h.len() {
            let Some(user) = ls(b) else { continue };
            // An older listing: answered before this one was asked.
            let older = (0..h.len()).find(|&a| {
                ls(a).as_ref() == Some(&user)
                    && h[a].ret.is_some_and(|r| r < h[b].invoke)
                    && h[a].output != h[b].output
            });
            let Some(a) = older else { continue };
            tried += 1;
            let mut stale = h.clone();
            stale[b].output = h[a].output.clone();
            if let Verdict::NotLinearizable(why) = check(&Catalogue, &stale, 200_000).0 {
                assert!(why.contains(": ls"), "{why}");
                caught += 1;
            }
        }
    }
    // Not every swap is wrong: a listing may be right again by the time
    // of a later one (a file deleted and uploaded again meanwhile).
    eprintln!("stale listings caught: {caught} of {tried}");
    assert!(caught > 0, "no stale listing was caught");
}
