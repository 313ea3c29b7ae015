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
/// must be clean of it.
fn caught_in_replication(bug: Sabotage, fires: &str) -> u64 {
    for seed in 1..=30 {
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
