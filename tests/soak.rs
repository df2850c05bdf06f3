//! A soak with modest N: long runs of mixed operations with client churn
//! keep memory and the snapshot bounded. The long mode is
//! `cargo run --release --example soak -- --minutes M`.

#[path = "../benches/common/soak.rs"]
mod soak;

use ringledger::LedgerConfig;

const MIB: u64 = 1 << 20;

#[test]
fn mixed_operations_with_client_churn_keep_rss_and_snapshot_bounded() {
    let mut soak = soak::Soak::new(soak::Config {
        // Above the size where debug builds check every invariant per request.
        accounts: 5_000,
        ledger: LedgerConfig {
            history_per_account_max: 4,
            closed_reservations_max: 2_000,
            ..LedgerConfig::default()
        },
        churn_ops: 1_000,
        inflight: 64,
    });
    // Warm-up: histories, holdings and the closed-reservation window fill up.
    soak.run(200_000);
    let warm = soak.checkpoint(true);
    // One engine from here on, so RSS also shows what the engine holds.
    for _ in 0..5 {
        soak.run(100_000);
        eprintln!("{:?}", soak.checkpoint(false));
    }
    let last = soak.checkpoint(true);
    assert_eq!(last.ops, 700_000);
    assert!(last.clients > 700, "a new client every 1k operations");
    let rss_growth = last.rss_bytes.saturating_sub(warm.rss_bytes);
    assert!(
        rss_growth < 32 * MIB,
        "RSS grew {} MiB after warm-up ({warm:?} -> {last:?})",
        rss_growth / MIB
    );
    // Bounded: what may still grow after the warm-up is small (holdings of
    // the last accounts to buy, one session entry per client), far below
    // what unbounded retention adds (a closed reservation every 7 ops).
    let (warm_bytes, last_bytes) = (warm.snapshot_bytes.unwrap(), last.snapshot_bytes.unwrap());
    assert!(
        last_bytes < warm_bytes + warm_bytes / 20,
        "snapshot grew from {warm_bytes} to {last_bytes} bytes after warm-up"
    );
}
