//! Each checker of `ferry_sim::checkers` is trusted because a run with the
//! bug it is meant to catch switched on (`ferry_core::sabotage`) sees it
//! fire, and the same run without the bug does not.

use ferry_core::sabotage::{self, Sabotage};
use ferry_sim::{run_connect_scenario, Preset, ScenarioConfig};

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
    let cfg = ScenarioConfig::for_preset(Preset::AllServersBusy, seed).expect("a named preset");
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
