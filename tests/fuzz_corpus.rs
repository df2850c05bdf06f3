//! The fuzz targets' corpora (`fuzz/corpus/<target>/`, minimized with
//! `cargo fuzz cmin`) replayed through the same entry functions the
//! targets call, on the stable toolchain: every input the fuzzer kept for
//! the coverage it reached, and every crash it found once fixed, stays
//! checked by `cargo test` (a few seconds for all of them in a debug build).

use std::fs;
use std::path::Path;

use ringledger::fuzzing;

/// Feeds every file of `fuzz/corpus/<target>/` to `entry`.
fn replay(target: &str, entry: impl Fn(&[u8]) + std::panic::RefUnwindSafe) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for file in fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = file.unwrap().path();
        let bytes = fs::read(&path).unwrap();
        let replayed = std::panic::catch_unwind(|| entry(&bytes));
        assert!(replayed.is_ok(), "{} fails", path.display());
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn json_line_corpus_replays() {
    replay("json_line", fuzzing::json_line);
}

#[test]
fn amount_corpus_replays() {
    replay("amount", fuzzing::amount);
}

#[test]
fn journal_frames_corpus_replays() {
    replay("journal_frames", fuzzing::journal_frames);
}

/// Each crash the fuzzer found, kept as `fuzz/crashes/<target>/crash-<what>`
/// (out of the corpus, which `cargo fuzz cmin` rewrites): replayed by name,
/// so a regression says which one came back.
fn replay_crashes(target: &str, entry: impl Fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/crashes")
        .join(target);
    let mut crashes: Vec<_> = fs::read_dir(&dir)
        .unwrap()
        .map(|file| file.unwrap().path())
        .collect();
    crashes.sort();
    assert!(!crashes.is_empty(), "{} keeps no crashes", dir.display());
    for path in crashes {
        eprintln!("{}", path.display());
        entry(&fs::read(&path).unwrap());
    }
}

/// A huge claimed container length (a capacity-overflow panic), a
/// closed-reservation window whose ids are not in its map (a panic in the
/// digest of a snapshot that had passed its checks), and a holding of an
/// account whose index entry points past the accounts (a panic while
/// decoding).
#[test]
fn snapshots_the_fuzzer_crashed_on_are_refused() {
    replay_crashes("snapshot", fuzzing::snapshot);
}

#[test]
fn snapshot_corpus_replays() {
    replay("snapshot", fuzzing::snapshot);
}

#[test]
fn recovery_corpus_replays() {
    replay("recovery", fuzzing::recovery);
}
