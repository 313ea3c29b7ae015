//! Seeds: the harness's own PRNG, and the environment variables that pick
//! which seeds a test runs.
//!
//! Every random choice of a scenario (how many clients, when they start, when
//! a server crashes) comes from [`SimRng`], seeded by the scenario seed, so a
//! seed names one run exactly. turmoil's own randomness (message latency) is
//! seeded with the same seed through `Builder::rng_seed`.

use std::time::Duration;

/// The named configurations, which a seed and a name reproduce exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// [`ConnectConfig::swarm`]: the seed also picks the load.
    Swarm,
    AllServersDown,
    AllServersBusy,
    /// Built by hand in a test; only that test reproduces it.
    Custom,
}

impl Preset {
    pub fn name(self) -> &'static str {
        match self {
            Preset::Swarm => "swarm",
            Preset::AllServersDown => "all-servers-down",
            Preset::AllServersBusy => "all-servers-busy",
            Preset::Custom => "custom",
        }
    }

    pub fn from_name(name: &str) -> Option<Preset> {
        [
            Preset::Swarm,
            Preset::AllServersDown,
            Preset::AllServersBusy,
        ]
        .into_iter()
        .find(|p| p.name() == name.trim())
    }
}

/// Seed count of a sweep when `SIM_SEEDS` is not set.
pub const DEFAULT_SWEEP_SEEDS: u64 = 200;

/// A small deterministic PRNG (SplitMix64): the same on every platform and
/// every Rust version, with no dependency to pin.
#[derive(Clone, Debug)]
pub struct SimRng {
    state: u64,
}

impl SimRng {
    /// `stream` separates independent uses of one seed, so that adding a draw
    /// to one (the swarm options, say) does not shift another (the plan).
    pub fn new(seed: u64, stream: u64) -> Self {
        let mut rng = SimRng {
            state: seed ^ stream.wrapping_mul(0xA076_1D64_78BD_642F),
        };
        rng.next_u64();
        rng
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        assert!(lo <= hi, "empty range {lo}..={hi}");
        let span = hi - lo;
        if span == u64::MAX {
            return self.next_u64();
        }
        lo + self.next_u64() % (span + 1)
    }

    /// True with probability `pct` percent.
    pub fn chance(&mut self, pct: u32) -> bool {
        self.range(0, 99) < u64::from(pct)
    }

    /// A duration uniform in `lo..=hi`, at millisecond resolution.
    pub fn duration(&mut self, lo: Duration, hi: Duration) -> Duration {
        let ms = self.range(lo.as_millis() as u64, hi.as_millis() as u64);
        Duration::from_millis(ms)
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.range(0, items.len() as u64 - 1) as usize]
    }
}

/// How many seeds a sweep runs: `SIM_SEEDS`, else [`DEFAULT_SWEEP_SEEDS`].
pub fn sweep_count() -> u64 {
    sweep_count_or(DEFAULT_SWEEP_SEEDS)
}

/// How many seeds a sweep runs: `SIM_SEEDS`, else `default`.
pub fn sweep_count_or(default: u64) -> u64 {
    match std::env::var("SIM_SEEDS") {
        Ok(s) => parse_seed(&s).unwrap_or_else(|| panic!("SIM_SEEDS={s:?} is not a count")),
        Err(_) => default,
    }
}

/// The seeds of a sweep of `n` runs. Fixed, so CI always runs the same ones;
/// `SIM_SEED_BASE` shifts the window to explore new seeds locally.
pub fn sweep_seeds(n: u64) -> impl Iterator<Item = u64> {
    let base = std::env::var("SIM_SEED_BASE")
        .ok()
        .and_then(|s| parse_seed(&s))
        .unwrap_or(1);
    (0..n).map(move |i| base.wrapping_add(i))
}

fn parse_seed(s: &str) -> Option<u64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The one-line command that re-runs `seed` of the connect scenario's
/// `preset` and prints its trace.
pub fn replay_command(seed: u64, preset: Preset) -> String {
    replay_command_in("connect", seed, preset)
}

/// The one-line command that re-runs `seed` of the replication scenario
/// (`preset` is [`Preset::Swarm`] or [`Preset::Custom`]).
pub fn replication_replay_command(seed: u64, preset: Preset) -> String {
    replay_command_in("replication", seed, preset)
}

/// The one-line command that re-runs `seed` of the files scenario (`preset`
/// is [`Preset::Swarm`] or [`Preset::Custom`]).
pub fn files_replay_command(seed: u64, preset: Preset) -> String {
    replay_command_in("files", seed, preset)
}

/// The one-line command that re-runs `seed` of `preset` of `scenario` with
/// the `ferry-sim` binary. A custom configuration lives only in the test
/// that built it.
pub fn replay_command_in(scenario: &str, seed: u64, preset: Preset) -> String {
    let cmd = format!("cargo run --release -p ferry-sim -- {scenario} --seed {seed}");
    match preset {
        Preset::Swarm => cmd,
        Preset::Custom => {
            format!("SIM_SEED={seed} with a custom config: re-run the test that built it")
        }
        named => format!("{cmd} --preset {}", named.name()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_draws_and_streams_differ() {
        let mut a = SimRng::new(7, 1);
        let mut b = SimRng::new(7, 1);
        let xs: Vec<u64> = (0..4).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(SimRng::new(7, 2).next_u64(), xs[0]);
        assert_ne!(SimRng::new(8, 1).next_u64(), xs[0]);
    }

    #[test]
    fn ranges_stay_in_bounds() {
        let mut r = SimRng::new(1, 0);
        for _ in 0..1000 {
            let x = r.range(3, 5);
            assert!((3..=5).contains(&x));
        }
        assert_eq!(r.range(9, 9), 9);
    }

    #[test]
    fn seeds_parse_in_decimal_and_hex() {
        assert_eq!(parse_seed("42"), Some(42));
        assert_eq!(parse_seed(" 0x2a "), Some(42));
        assert_eq!(parse_seed("x"), None);
    }
}
