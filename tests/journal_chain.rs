//! The hash chain of format 4 (issue 12), on real files: a frame dropped,
//! duplicated, swapped with its neighbour or spliced in from another
//! journal (its own checksum valid) is caught by recovery, replay and
//! `verify`, each naming the file and offset; so are a segment or a
//! snapshot of another journal. And every single bit flipped in a small
//! journal and in a snapshot is detected with file and offset, losing no
//! acknowledged record.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ringledger::journal::{
    self, recover, replay, verify, write_snapshot, Durability, JournalConfig, JournalError,
    JournalWriter,
};
use ringledger::{Ledger, LedgerConfig, Request, Stamp, Stamped};

const CONFIG: LedgerConfig = LedgerConfig {
    history_per_account_max: 8,
    sessions_max: ringledger::ledger::SESSIONS_MAX_DEFAULT,
    session_idle_ms_max: ringledger::ledger::SESSION_IDLE_MS_MAX_DEFAULT,
    closed_reservations_max: 1_000,
};

/// Segment header bytes and a frame's length field, per journal/README.md.
const SEGMENT_HEADER_BYTES: usize = 48;
const FRAME_LENGTH_AT: usize = 16;

/// Batches of 1..=3 records: accounts opened, then deposits and transfers.
/// `variant` changes one amount in the first batch only, so two journals
/// with different variants hold the same seqs and the same record sizes
/// from the second batch on, but different histories.
fn batches(count: usize, variant: i64) -> Vec<Vec<Stamped>> {
    let mut seq = 0;
    (0..count)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| {
                    seq += 1;
                    let request = match seq {
                        1..=3 => Request::OpenAccount { account: seq },
                        4 => Request::Deposit {
                            account: 1,
                            amount: 1_000 + variant,
                        },
                        _ if j % 2 == 0 => Request::Deposit {
                            account: 1 + seq % 3,
                            amount: 100 + seq as i64,
                        },
                        _ => Request::Transfer {
                            from: 1 + seq % 3,
                            to: 1 + (seq + 1) % 3,
                            amount: 7,
                        },
                    };
                    let stamp = Stamp {
                        seq,
                        time_ms: 1_000 + seq,
                        session: 0,
                        req: 0,
                    };
                    Stamped::new(stamp, request)
                })
                .collect()
        })
        .collect()
}

fn live(batches: &[Vec<Stamped>]) -> Ledger {
    let mut ledger = Ledger::new(CONFIG);
    for batch in batches {
        ledger.apply_batch(batch, |_, _| {});
    }
    ledger
}

/// Writes `batches`, each synced (so every frame but the last is before
/// the durable point its successor records), then closes cleanly (the
/// mark puts the last one there too).
fn write(dir: &Path, batches: &[Vec<Stamped>], segment_bytes: u64) {
    let mut writer = JournalWriter::open(
        dir,
        JournalConfig {
            segment_bytes,
            durability: Durability::Sync,
        },
    )
    .unwrap();
    for batch in batches {
        writer.append(batch).unwrap();
        writer.sync().unwrap();
    }
    writer.close().unwrap();
}

fn numbered(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == ext))
        .collect();
    v.sort();
    v
}

/// (offset, length without padding) of each frame in a segment's bytes.
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = SEGMENT_HEADER_BYTES;
    while at + FRAME_LENGTH_AT + 4 <= bytes.len() {
        let field = &bytes[at + FRAME_LENGTH_AT..at + FRAME_LENGTH_AT + 4];
        let len = u32::from_le_bytes(field.try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, len));
        at = (at + len + 7) & !7;
    }
    out
}

/// Writes one byte in place: rewriting a whole file per flipped bit cost
/// milliseconds each (the blocks freed and allocated again).
fn poke(path: &Path, at: usize, byte: u8) {
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(&[byte], at as u64).unwrap();
}

fn aligned(len: usize) -> usize {
    (len + 7) & !7
}

/// Every file in `dir` with its bytes, to prove nothing changed.
fn dir_bytes(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut v: Vec<(PathBuf, Vec<u8>)> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let p = e.unwrap().path();
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    v
}

/// Recovery, replay (both ways) and verify all refuse `dir`, naming `file`
/// and `offset`; recovery changes nothing on disk.
fn assert_caught(dir: &Path, file: &Path, offset: u64, what: &str) {
    let before = dir_bytes(dir);
    let named = |e: &JournalError, who: &str| {
        assert_eq!(e.location(), Some((file, offset)), "{what}, {who}: {e}");
        let text = e.to_string();
        assert!(
            text.contains(&file.display().to_string())
                && text.contains(&format!("offset {offset}")),
            "{what}, {who}: {text}"
        );
    };
    named(&recover(dir, CONFIG).unwrap_err(), "recover");
    assert_eq!(dir_bytes(dir), before, "{what}: recovery changed the disk");
    for from_snapshot in [false, true] {
        named(&replay(dir, CONFIG, from_snapshot).unwrap_err(), "replay");
    }
    named(&verify(dir, CONFIG).unwrap_err(), "verify");
    assert_eq!(dir_bytes(dir), before, "{what}: changed the disk");
}

/// Rebuilds the segment at `seg` from its frames in the order `order`
/// (indices into `frames(original)`), zero-filled to its original length.
fn rewrite(seg: &Path, original: &[u8], order: &[usize], replace: Option<(usize, &[u8])>) {
    let all = frames(original);
    let mut bytes = original[..SEGMENT_HEADER_BYTES].to_vec();
    for &i in order {
        let (at, len) = all[i];
        match replace {
            Some((k, frame)) if k == i => bytes.extend_from_slice(frame),
            _ => bytes.extend_from_slice(&original[at..at + aligned(len)]),
        }
    }
    bytes.resize(original.len(), 0);
    std::fs::write(seg, bytes).unwrap();
}

#[test]
fn a_dropped_duplicated_swapped_or_spliced_frame_is_caught_with_file_and_offset() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let other = tmp.path().join("other");
    let ours = batches(12, 0);
    write(&dir, &ours, 1 << 16);
    write(&other, &batches(12, 1), 1 << 16);
    assert_eq!(
        verify(&dir, CONFIG).unwrap().head.seq,
        live(&ours).last_seq()
    );
    let seg = numbered(&dir, "seg").pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let all = frames(&original);
    let n = all.len();
    assert_eq!(n, 13, "12 batches and the clean-shutdown mark");
    let k = 5;
    let at = all[k].0 as u64;

    // Dropped: frame k's place holds frame k+1.
    let order: Vec<usize> = (0..n).filter(|&i| i != k).collect();
    rewrite(&seg, &original, &order, None);
    assert_caught(&dir, &seg, at, "dropped");

    // Duplicated: frame k twice; the second copy is the bad one.
    let mut order: Vec<usize> = (0..n).collect();
    order.insert(k + 1, k);
    rewrite(&seg, &original, &order, None);
    assert_caught(&dir, &seg, at + aligned(all[k].1) as u64, "duplicated");

    // Swapped with its successor.
    let mut order: Vec<usize> = (0..n).collect();
    order.swap(k, k + 1);
    rewrite(&seg, &original, &order, None);
    assert_caught(&dir, &seg, at, "swapped");

    // Spliced: the other journal's frame k, with the same seqs, length,
    // records and durable seq, and a valid checksum of its own; only its
    // parent tells it apart. The last frame too, where no successor would
    // notice.
    let theirs = std::fs::read(numbered(&other, "seg").pop().unwrap()).unwrap();
    let their_frames = frames(&theirs);
    for i in [k, n - 2] {
        let (their_at, their_len) = their_frames[i];
        assert_eq!(their_len, all[i].1);
        let (ours_at, ours_len) = all[i];
        assert_eq!(
            original[ours_at + 16..ours_at + 48],
            theirs[their_at + 16..their_at + 48],
            "same length, count, kind, seqs and durable seq"
        );
        assert_eq!(
            original[ours_at + 64..ours_at + ours_len],
            theirs[their_at + 64..their_at + their_len],
            "same records"
        );
        let spliced = &theirs[their_at..their_at + aligned(their_len)];
        rewrite(
            &seg,
            &original,
            &(0..n).collect::<Vec<_>>(),
            Some((i, spliced)),
        );
        assert_caught(&dir, &seg, ours_at as u64, "spliced");
    }

    std::fs::write(&seg, &original).unwrap();
    let recovered = recover(&dir, CONFIG).unwrap();
    assert_eq!(recovered.ledger.digest(), live(&ours).digest());
}

#[test]
fn a_segment_or_a_snapshot_from_another_journal_is_caught() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let other = tmp.path().join("other");
    let ours = batches(60, 0);
    write(&dir, &ours, 1024);
    write(&other, &batches(60, 1), 1024);
    let segs = numbered(&dir, "seg");
    let their_segs = numbered(&other, "seg");
    assert!(segs.len() > 4 && segs.len() == their_segs.len());
    // The same seqs in the same sizes, so only the chain tells them apart.
    let original = std::fs::read(&segs[2]).unwrap();
    std::fs::copy(&their_segs[2], &segs[2]).unwrap();
    assert_caught(&dir, &segs[2], 24, "segment of another journal");
    std::fs::write(&segs[2], &original).unwrap();

    // A snapshot of the other journal's Ledger at seq 40 (a different
    // state, a valid file) dropped into ours.
    let mut their_ledger = Ledger::new(CONFIG);
    let mut writer = JournalWriter::open(
        tmp.path().join("elsewhere"),
        JournalConfig {
            segment_bytes: 1 << 16,
            durability: Durability::Sync,
        },
    )
    .unwrap();
    let theirs = batches(60, 1);
    let mut cut = 0;
    for batch in &theirs {
        if their_ledger.last_seq() >= 40 {
            break;
        }
        writer.append(batch).unwrap();
        their_ledger.apply_batch(batch, |_, _| {});
        cut += 1;
    }
    writer.sync().unwrap();
    let snap = write_snapshot(&dir, &their_ledger, writer.chain_head()).unwrap();
    drop(writer);
    assert_ne!(their_ledger.digest(), live(&ours[..cut]).digest());
    let before = dir_bytes(&dir);
    let err = recover(&dir, CONFIG).unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(err, JournalError::Corrupt { .. }) && text.contains(&snap.display().to_string()),
        "{text}"
    );
    assert_eq!(dir_bytes(&dir), before);
    let err = verify(&dir, CONFIG).unwrap_err();
    assert_eq!(err.location(), Some((snap.as_path(), 32)), "{err}");

    // Ours at the same seq is accepted, and checked by verify.
    std::fs::remove_file(&snap).unwrap();
    let mut ledger = live(&ours[..cut]);
    let head = head_at(&dir, ledger.last_seq());
    write_snapshot(&dir, &ledger, head).unwrap();
    let recovered = recover(&dir, CONFIG).unwrap();
    assert_eq!(recovered.snapshot_seq, ledger.last_seq());
    ledger = live(&ours);
    assert_eq!(recovered.ledger.digest(), ledger.digest());
    let verified = verify(&dir, CONFIG).unwrap();
    assert_eq!(verified.snapshots_checked, 1);
    assert_eq!(verified.digest, ledger.digest());

    // A head at another seq than the Ledger's is refused, writing nothing.
    let wrong = journal::ChainHead { seq: 1, ..head };
    let snapshots = numbered(&dir, "snap");
    assert!(write_snapshot(&dir, &ledger, wrong).is_err());
    assert_eq!(numbered(&dir, "snap"), snapshots);
}

/// The chain head after the frame that ends at `seq` of `batches(60, 0)`,
/// from a writer that writes them into a scratch directory beside `dir`.
fn head_at(dir: &Path, seq: u64) -> journal::ChainHead {
    let scratch = dir.with_extension("scratch");
    let mut writer = JournalWriter::open(
        &scratch,
        JournalConfig {
            segment_bytes: 1 << 16,
            durability: Durability::Sync,
        },
    )
    .unwrap();
    for batch in batches(60, 0) {
        if writer.chain_head().seq >= seq {
            break;
        }
        // Synced like `write`, since each frame records its durable seq.
        writer.append(&batch).unwrap();
        writer.sync().unwrap();
    }
    let head = writer.chain_head();
    assert_eq!(head.seq, seq);
    head
}

/// An old-format (version 3) segment or snapshot: an error naming the file
/// and both versions.
#[test]
fn a_version_3_segment_or_snapshot_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let ours = batches(6, 0);
    write(&dir, &ours, 1 << 16);
    let seg = numbered(&dir, "seg").pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    for err in [
        recover(&dir, CONFIG).unwrap_err(),
        verify(&dir, CONFIG).unwrap_err(),
    ] {
        let text = err.to_string();
        assert!(
            text.contains(&seg.display().to_string())
                && text.contains("version 3")
                && text.contains("version 4"),
            "{text}"
        );
    }
    bytes[8..12].copy_from_slice(&4u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();

    let ledger = live(&ours);
    let head = verify(&dir, CONFIG).unwrap().head;
    let snap = write_snapshot(&dir, &ledger, head).unwrap();
    let mut bytes = std::fs::read(&snap).unwrap();
    bytes[8..12].copy_from_slice(&3u32.to_le_bytes());
    std::fs::write(&snap, &bytes).unwrap();
    let text = recover(&dir, CONFIG).unwrap_err().to_string();
    assert!(
        text.contains(&snap.display().to_string())
            && text.contains("version 3")
            && text.contains("version 4"),
        "{text}"
    );
}

/// Every bit of a small, cleanly closed journal's data flipped in turn:
/// recovery and verify name the file and an offset at or before the flip
/// (corruption), or recovery takes a flip in the clean-shutdown mark, the
/// last frame, for a torn tail (a warning naming file and offset) and
/// loses no record. Nothing acknowledged is ever dropped.
#[test]
fn every_flipped_bit_of_a_small_journal_is_detected_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let ours = batches(6, 0);
    write(&dir, &ours, 1 << 16);
    let expected = live(&ours);
    let seg = numbered(&dir, "seg").pop().unwrap();
    let original = std::fs::read(&seg).unwrap();
    let all = frames(&original);
    let (mark_at, mark_len) = *all.last().unwrap();
    let end = mark_at + aligned(mark_len);
    let (mut corrupt, mut torn) = (0, 0);
    for at in 0..end {
        for bit in 0..8 {
            poke(&seg, at, original[at] ^ (1 << bit));
            let what = format!("bit {bit} of byte {at}");
            let err = verify(&dir, CONFIG).unwrap_err();
            let (file, offset) = err.location().unwrap_or_else(|| panic!("{what}: {err}"));
            assert!(file == seg && offset <= at as u64, "{what}: {err}");
            let before = dir_bytes(&dir);
            match recover(&dir, CONFIG) {
                Err(e) => {
                    corrupt += 1;
                    let (file, offset) = e.location().unwrap_or_else(|| panic!("{what}: {e}"));
                    assert!(file == seg && offset <= at as u64, "{what}: {e}");
                    assert_eq!(dir_bytes(&dir), before, "{what}: changed the disk");
                }
                Ok(r) => {
                    torn += 1;
                    assert!(at >= mark_at, "{what} is not in the mark: {:?}", r.warnings);
                    let warning = r.warnings.join("\n");
                    assert!(
                        warning.contains(&seg.display().to_string())
                            && warning.contains(&format!("offset {mark_at}")),
                        "{what}: {warning}"
                    );
                    assert_eq!(
                        (r.ledger.last_seq(), r.ledger.digest()),
                        (expected.last_seq(), expected.digest()),
                        "{what} dropped acknowledged records"
                    );
                    // Recovery zeroed the torn mark: put it back.
                    std::fs::write(&seg, &original).unwrap();
                }
            }
            poke(&seg, at, original[at]);
        }
    }
    std::fs::write(&seg, &original).unwrap();
    eprintln!(
        "{} bits of journal data: {corrupt} refused as corruption, {torn} in the clean-shutdown mark taken for a torn tail (no record lost); verify named every one",
        end * 8
    );
    assert_eq!(corrupt + torn, end * 8);
    assert_eq!(torn, 8 * aligned(mark_len));
}

/// Every bit of a snapshot flipped in turn: recovery passes over it with a
/// warning naming the file and offset and rebuilds the same state from the
/// journal; verify refuses it, naming the file and an offset.
#[test]
fn every_flipped_bit_of_a_snapshot_is_detected_and_loses_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let ours = batches(6, 0);
    let expected = live(&ours);
    let mut writer = JournalWriter::open(
        &dir,
        JournalConfig {
            segment_bytes: 1 << 16,
            durability: Durability::Sync,
        },
    )
    .unwrap();
    for batch in &ours {
        writer.append(batch).unwrap();
    }
    writer.sync().unwrap();
    let snap = write_snapshot(&dir, &expected, writer.chain_head()).unwrap();
    writer.close().unwrap();
    assert_eq!(verify(&dir, CONFIG).unwrap().snapshots_checked, 1);
    let original = std::fs::read(&snap).unwrap();
    for (at, &byte) in original.iter().enumerate() {
        for bit in 0..8 {
            poke(&snap, at, byte ^ (1 << bit));
            let what = format!("bit {bit} of snapshot byte {at}");
            let err = verify(&dir, CONFIG).unwrap_err();
            let (file, _) = err.location().unwrap_or_else(|| panic!("{what}: {err}"));
            assert_eq!(file, snap, "{what}: {err}");
            match recover(&dir, CONFIG) {
                // The magic or version: not a snapshot of this format at all.
                Err(e) => {
                    assert!(at < 12, "{what}: {e}");
                    assert!(e.to_string().contains(&snap.display().to_string()), "{e}");
                }
                Ok(r) => {
                    let warning = r.warnings.join("\n");
                    assert!(
                        warning.contains(&snap.display().to_string()) && warning.contains("offset"),
                        "{what}: {warning}"
                    );
                    assert_eq!(r.snapshot_seq, 0, "{what}");
                    assert_eq!(r.ledger.digest(), expected.digest(), "{what}");
                }
            }
            poke(&snap, at, byte);
        }
    }
    eprintln!(
        "{} snapshot bits flipped: every one detected",
        original.len() * 8
    );
    assert!(original.len() > 56, "a payload after the header");
}
