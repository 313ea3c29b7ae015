//! Simulation tests of files: balancer, three servers (server 1 the master)
//! with LMDB stores and in-memory disks, users who upload (empty, one byte,
//! around a chunk, up to 300 KiB; alone or in batches), download their own
//! and shared files (alone or in batches), share, unshare, delete and list,
//! while a follower restarts, a follower is cut off and the master may
//! crash (and, for some seeds, the servers read slowly and files are up to
//! 16 MiB, so downloads wait for long fetches, or a bit flips in a blob on
//! one server's disk, which the cluster must find and replace);
//! then the heal, convergence (log, state and every disk), and a verifier
//! that downloads every file through every server.
//!
//! - `cargo run --release -p ferry-sim -- files --seed N`
//!   re-runs one seed and prints its trace.
//! - `SIM_SEEDS=N` changes how many seeds `sweep_300_seeds` runs (default
//!   300); `SIM_SEED_BASE` moves the window, `SIM_THREADS` the parallelism;
//!   `SIM_STRICT_REVOCATION=1` demands that no download is served from a
//!   point of the log before a revocation the owner was already told of.
//! - `INSTA_UPDATE=always cargo test -p ferry-sim --test files -- trace_snapshot`
//!   rewrites the pinned trace in `snapshots/`; read the diff before keeping it.

mod common;

use ferry_core::server::scrub::Verdict;
use ferry_core::server::{OpError, Response};
use ferry_core::transfer::TransferError;
use ferry_sim::disk::short;
use ferry_sim::scenarios::files::client::OpResult;
use ferry_sim::{
    files_replay_command, run_files_scenario, sweep_count_or, sweep_seeds, sweep_threads,
    sweep_with, Details, FetchWaits, FilesConfig, FilesOutcome, Preset,
};
use std::time::Instant;

/// A seed whose story has it all: server3 restarts and fetches at start
/// what its crash kept it from fetching; alice shares "empty" with bob,
/// then replaces it (`--force`): the old content leaves every disk, the
/// share stays; "exists" and a bad name refused; server3 cut off while the
/// master crashes, so clients are told "no server" and give up on some
/// operations; the master restarts from its store and disk; bob downloads
/// alice's shared file; bob's photo replaced twice, each old content
/// removed everywhere; the heal, convergence (log, state, five blobs on
/// every disk) and the verifiers on every server.
const SNAPSHOT_SEED: u64 = 3;

/// A seed whose servers read slowly (30–150 ms a block): server3 is cut
/// off from 1.1 s, server2 and server1 crash and restart, and masters come
/// and go (view 8 at 21.8 s: server2). Carol lists her notes through
/// server2 at 21.8 s and downloads them; server2 lacks the content and
/// fetches it through the slow disks, and carol hears `Fetching` from
/// 25.4 s to 45.1 s, longer than the server's 10 s and her own 15 s of
/// patience, and gets it at 49.5 s. (Since uploads wait for a copy on a
/// majority, such waits are rare: `find_long_fetch_seeds` found only this
/// one in the first 1000 after TLS moved to rustls's unbuffered API, which
/// moved the earlier seed 562.)
const LONG_FETCH_SEED: u64 = 132;

/// A seed whose disk rots: a bit flips in a file's copy on server1, and
/// a client's download through server1 arrives damaged before the
/// verifiers run; server1 checks its copy, finds it damaged, removes it
/// and fetches it again from another server. The verifiers then get the
/// file through every server. (TLS's handshakes moved the earlier seed
/// 103; `find_rot_seeds` found this one.)
const ROT_SEED: u64 = 211;

/// Seeds `sweep_300_seeds` runs unless `SIM_SEEDS` says otherwise.
const SWEEP_SEEDS: u64 = 300;

fn strict() -> bool {
    std::env::var("SIM_STRICT_REVOCATION").is_ok_and(|v| v == "1")
}

fn swarm(seed: u64) -> FilesOutcome {
    let cfg = FilesConfig {
        strict_revocation: strict(),
        ..FilesConfig::swarm(seed)
    };
    run_files_scenario(seed, &cfg)
}

#[test]
fn trace_snapshot() {
    let outcome = run_files_scenario(SNAPSHOT_SEED, &FilesConfig::swarm(SNAPSHOT_SEED));
    outcome.assert_ok();
    insta::with_settings!({
        snapshot_path => "../../snapshots",
        prepend_module_to_snapshot => false,
        omit_expression => true,
        description => format!(
            "files scenario, swarm config of seed {SNAPSHOT_SEED}; replay: {}",
            files_replay_command(SNAPSHOT_SEED, Preset::Swarm)
        ),
    }, {
        insta::assert_snapshot!(format!("sim_files_seed_{SNAPSHOT_SEED}"), outcome.rendered());
    });
}

#[test]
fn same_seed_same_trace() {
    let seed = 7;
    let a = run_files_scenario(seed, &FilesConfig::swarm(seed));
    let b = run_files_scenario(seed, &FilesConfig::swarm(seed));
    a.assert_ok();
    assert_eq!(
        a.rendered(),
        b.rendered(),
        "seed {seed} is not deterministic; replay: {}",
        files_replay_command(seed, Preset::Swarm)
    );
    assert_eq!(a.steps, b.steps);
    assert_eq!(a.details.converged, b.details.converged);
    let c = run_files_scenario(seed + 1, &FilesConfig::swarm(seed + 1));
    assert_ne!(
        a.rendered(),
        c.rendered(),
        "seeds {seed} and {} tell the same story",
        seed + 1
    );
}

#[test]
fn sweep_300_seeds() {
    let seeds: Vec<u64> = sweep_seeds(sweep_count_or(SWEEP_SEEDS)).collect();
    let threads = sweep_threads();
    let wall = Instant::now();
    let report = sweep_with(&seeds, threads, swarm, |seed| {
        let cmd = files_replay_command(seed, Preset::Swarm);
        match strict() {
            true => format!("{cmd} --strict-revocation"),
            false => cmd,
        }
    });
    common::check_sweep(&report, seeds.len(), threads, wall, true);
    batches_ran(&report, seeds.len() as u64);
    download_batches_ran(&report, seeds.len() as u64);
    commands_ran(&report, seeds.len() as u64);
}

/// A sweep of `seeds` swarm seeds (100 or more) ran batches of uploads,
/// whose files were stored, refused and failed in the ways the plan means
/// them to be (about 40 % of the seeds have batches: seeds 1–300 answer
/// 389 batches, which store 693 files, 506 of them of many chunks; 236
/// files are told "exists" or clash, 301 refused as bad or given twice;
/// 328 `PutFiles` entries committed). The floors are a fraction of that.
fn batches_ran(report: &ferry_sim::SweepReport, seeds: u64) {
    if seeds < 100 {
        return;
    }
    let at_least = [
        ("batches of uploads answered (UploadMany)", seeds / 3),
        ("  files they stored", seeds / 2),
        ("    of them of many chunks", seeds / 4),
        (
            "  files told 'exists' or 'a file or a folder, not both'",
            seeds / 30,
        ),
        (
            "  files refused for a bad name or one the batch gave twice",
            seeds / 30,
        ),
        ("batches committed (PutFiles entries)", seeds / 3),
    ];
    at_least_counted(report, seeds, &at_least, "batches");
}

/// A sweep of `seeds` swarm seeds (100 or more) ran batches of downloads,
/// whose files were received, refused and failed in the ways the plan
/// means them to be (about a third of the seeds have them: seeds 1–300
/// answer 418 batches, which receive 354 files, 9 of them another user's,
/// and are told "no such file" for 1351). The floors are a fraction of
/// that.
fn download_batches_ran(report: &ferry_sim::SweepReport, seeds: u64) {
    if seeds < 100 {
        return;
    }
    let at_least = [
        ("batches of downloads answered (DownloadMany)", seeds / 3),
        ("  files received", seeds / 3),
        ("    of them another user's", seeds / 100),
        ("  files refused 'no such file'", seeds / 3),
    ];
    at_least_counted(report, seeds, &at_least, "batches of downloads");
}

/// Seeds beyond the sweep whose commands once left garbage on a server:
/// a batch's server, cut off, sent its entry to the master again once it
/// was back (a client-named origin, logged twice); its blobs, replaced
/// meanwhile, were looked at while the second entry was still to come,
/// kept for it, and never looked at again when it applied as a duplicate.
/// An applied entry's contents that the catalogue does not name are now
/// candidates for collection (`BlobStore::sync_applied`).
#[test]
fn garbage_kept_for_a_duplicate_entry_is_collected_once_it_applies() {
    let seeds = [1605, 2613];
    let wall = Instant::now();
    let report = sweep_with(&seeds, sweep_threads(), swarm, |seed| {
        files_replay_command(seed, Preset::Swarm)
    });
    common::check_sweep(&report, seeds.len(), sweep_threads(), wall, false);
}

/// A sweep of `seeds` swarm seeds (100 or more) ran commands of several
/// batches whose first try lost its session, and batches of them were
/// answered on a second try through another server (about 30 % of the
/// seeds have commands: seeds 1–1000 plan 914 and answer 93 batches on a
/// second try). The floors are a fraction of that.
fn commands_ran(report: &ferry_sim::SweepReport, seeds: u64) {
    if seeds < 100 {
        return;
    }
    let at_least = [
        ("commands of several batches planned", seeds / 5),
        ("  batches answered on a second try", seeds / 50),
    ];
    at_least_counted(report, seeds, &at_least, "commands");
}

/// Each count of `at_least` the sweep of `seeds` seeds made is at least
/// its floor (and at least 1): what shows that `what` ran.
fn at_least_counted(
    report: &ferry_sim::SweepReport,
    seeds: u64,
    at_least: &[(&str, u64)],
    what_ran: &str,
) {
    let count = |what: &str| {
        (report.counts.iter())
            .find(|(w, _)| *w == what)
            .map_or(0, |(_, n)| *n)
    };
    for (what, least) in at_least {
        assert!(
            count(what) >= (*least).max(1),
            "{seeds} seeds: {} {what:?}, not the {} at least that show {what_ran} ran",
            count(what),
            (*least).max(1)
        );
    }
}

/// A download waits for a fetch that takes longer than the server's and
/// the client's patience, as long as the fetch moves, and gets the file.
/// (If a change of the core moves this seed's story, find another: a
/// sweep's counts say how many downloads "got the file after 'fetching'
/// for over 15 s", and `replay` prints them for one seed.)
#[test]
fn a_download_outwaits_a_long_fetch() {
    long_fetch_story(LONG_FETCH_SEED);
}

/// Finds seeds that tell the story of [`LONG_FETCH_SEED`], for when a
/// change of the core moves it: `cargo test --release -p ferry-sim --test
/// files find_long_fetch_seeds -- --ignored --nocapture` (SIM_SEEDS: how
/// many to try, SIM_FIRST: the first).
#[test]
#[ignore]
fn find_long_fetch_seeds() {
    let var = |name: &str, default: u64| {
        std::env::var(name)
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default)
    };
    let (first, n) = (var("SIM_FIRST", 1), var("SIM_SEEDS", 1000));
    std::panic::set_hook(Box::new(|_| {}));
    for seed in first..first + n {
        if std::panic::catch_unwind(|| long_fetch_story(seed)).is_ok() {
            println!("seed {seed} tells the long fetch story");
        }
    }
}

fn long_fetch_story(seed: u64) {
    let outcome = run_files_scenario(seed, &FilesConfig::swarm(seed));
    outcome.assert_ok();
    let waits = FetchWaits::of(&outcome.details.clients);
    let replay = files_replay_command(seed, Preset::Swarm);
    assert!(
        waits.long_then_got >= 1,
        "seed {seed}: no download got the file after more than 15 s of `Fetching`: {waits:?}; replay: {replay}"
    );
    assert!(
        outcome
            .rendered()
            .contains("the server is fetching the content"),
        "the trace shows the waits; replay: {replay}"
    );
}

/// A rotten copy is found by a client's download and replaced from another
/// server. (If a change of the core moves this seed's story, find another:
/// a sweep's counts say how many rots were found "before the verifiers",
/// and `replay` prints them for one seed.)
#[test]
fn a_rotten_copy_found_by_a_download_is_replaced() {
    rot_story(ROT_SEED);
}

/// Finds seeds that tell the story of [`ROT_SEED`], for when a change of
/// the core moves it: `cargo test --release -p ferry-sim --test files
/// find_rot_seeds -- --ignored --nocapture` (SIM_SEEDS: how many to try).
#[test]
#[ignore]
fn find_rot_seeds() {
    let n = std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300u64);
    std::panic::set_hook(Box::new(|_| {}));
    for seed in 1..=n {
        if std::panic::catch_unwind(|| rot_story(seed)).is_ok() {
            println!("seed {seed} tells the rot story");
        }
    }
}

fn rot_story(seed: u64) {
    let outcome = run_files_scenario(seed, &FilesConfig::swarm(seed));
    outcome.assert_ok();
    let replay = files_replay_command(seed, Preset::Swarm);
    let [rot] = &outcome.details.rots[..] else {
        panic!(
            "seed {seed}: one rot, not {:?}; replay: {replay}",
            outcome.details.rots
        );
    };
    let short = short(&rot.digest);
    let checks: Vec<_> = outcome
        .details
        .checks
        .iter()
        .map(|c| (c.server, c.digest.clone(), c.verdict.clone()))
        .collect();
    let [(1, digest, Verdict::Damaged { .. })] = &checks[..] else {
        panic!("seed {seed}: one check, on server1, damaged, not {checks:?}; replay: {replay}");
    };
    assert_eq!(rot.server, 1, "replay: {replay}");
    assert!(digest.starts_with(&short), "replay: {replay}");
    let found = outcome.details.checks[0].at;
    // Carol's download through server1 is what found it, before the
    // verifiers.
    let damaged: Vec<_> = outcome
        .details
        .clients
        .iter()
        .flat_map(|c| &c.ops)
        .filter(|op| {
            matches!(
                &op.result,
                Some(OpResult::Answer(Response::Failed(OpError::Transfer(
                    TransferError::DigestMismatch
                ))))
            )
        })
        .collect();
    let [download] = &damaged[..] else {
        panic!(
            "seed {seed}: one client download arrived damaged, not {damaged:?}; replay: {replay}"
        );
    };
    assert_eq!(download.server, Some(1), "replay: {replay}");
    assert!(
        rot.at <= download.started && download.ended <= found,
        "replay: {replay}"
    );
    assert!(
        outcome.details.verify_started.is_some_and(|v| found < v),
        "replay: {replay}"
    );
    // Removed, then fetched again from another server and on server1's
    // disk.
    let after: Vec<String> = outcome
        .trace
        .lines()
        .iter()
        .filter(|l| l.host == "server1" && l.at >= found && l.text.contains(&short))
        .map(|l| l.text.clone())
        .collect();
    let got: Vec<&String> = after.iter().filter(|t| !t.contains("damaged")).collect();
    let fetched = |t: &String| {
        t.starts_with(&format!("fetch blob {short} from server")) && !t.ends_with("server1")
    };
    assert!(
        matches!(&got[..], [removed, fetch, landed]
            if **removed == format!("blob {short} removed from disk")
                && fetched(fetch)
                && **landed == format!("blob {short} on disk ({} bytes)", rot.size)),
        "{got:?}; replay: {replay}"
    );
    let count = |what: &str| {
        outcome
            .details
            .counts()
            .iter()
            .find(|(w, _)| *w == what)
            .map_or(0, |(_, n)| *n)
    };
    assert_eq!(count("rots injected"), 1, "replay: {replay}");
    assert_eq!(
        count("client downloads that arrived damaged"),
        1,
        "replay: {replay}"
    );
    assert_eq!(count("blob checks: sound"), 0, "replay: {replay}");
}
