//! The deterministic simulator (`ringledger::simulator`) over a bounded
//! number of seeds, plus regression tests for what it found. Long runs:
//! `cargo run --release --example simulate -- --seeds N`.

use ringledger::simulator::{run_seed, SimOptions};

/// Seeds 0.. run in `cargo test` (debug build): a bounded, fixed set, so CI
/// time stays under about a minute on two cores.
const SEEDS_IN_CI: u64 = 48;

#[test]
fn simulated_seeds_keep_every_promise() {
    let options = SimOptions::default();
    let mut failures = Vec::new();
    for seed in 0..SEEDS_IN_CI {
        if let Err(failure) = run_seed(seed, options) {
            eprintln!("{failure}");
            failures.push(failure.seed);
        }
    }
    assert!(failures.is_empty(), "failing seeds: {failures:?}");
}

#[test]
fn a_seed_replays_exactly() {
    let options = SimOptions {
        batches: 150,
        verbose: false,
    };
    for seed in [3, 17, 40] {
        let first = run_seed(seed, options).unwrap();
        let again = run_seed(seed, options).unwrap();
        assert_eq!(first.trace_hash, again.trace_hash, "seed {seed}");
        assert_eq!(first, again, "seed {seed}");
    }
    let a = run_seed(3, options).unwrap().trace_hash;
    let b = run_seed(4, options).unwrap().trace_hash;
    assert_ne!(a, b);
}
