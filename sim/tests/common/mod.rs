//! What the simulation tests share.

use ferry_sim::SweepReport;
use std::time::Instant;

/// Prints a sweep's summary (and, with `counts`, its summed counts), then
/// checks that every seed ran and none failed.
pub fn check_sweep(
    report: &SweepReport,
    seeds: usize,
    threads: usize,
    wall: Instant,
    counts: bool,
) {
    eprintln!(
        "swept {} seeds on {threads} thread(s): {:.1?} simulated, {} steps, {:.1?} wall",
        report.runs,
        report.sim_time,
        report.steps,
        wall.elapsed()
    );
    if counts {
        for (what, n) in &report.counts {
            eprintln!("  {n:>6} {what}");
        }
    }
    assert_eq!(report.runs, seeds);
    assert!(report.is_ok(), "{}", report.failure_report());
}
