//! Journal round trips, torn tails, corruption, snapshots: every test builds a
//! journal from a deterministic random workload of real requests and checks
//! the recovered Ledger against applying the same batches live.

use std::path::{Path, PathBuf};

use ringledger::{InstrumentId, Ledger, LedgerConfig, Request, Stamp, Stamped, Symbol};

const CONFIG: LedgerConfig = LedgerConfig {
    history_per_account_max: 8,
    sessions_max: ringledger::ledger::SESSIONS_MAX_DEFAULT,
    session_idle_ms_max: ringledger::ledger::SESSION_IDLE_MS_MAX_DEFAULT,
    closed_reservations_max: 1_000,
};

/// xorshift64*: deterministic, dependency-free.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}

/// Produces consecutive stamped requests using every kind of request.
struct Workload {
    rng: Rng,
    seq: u64,
    now_ms: u64,
}

impl Workload {
    fn new(seed: u64) -> Workload {
        Workload {
            rng: Rng::new(seed),
            seq: 0,
            now_ms: 1_000,
        }
    }

    /// Continues after `last_seq` (e.g. after recovery).
    fn resume(seed: u64, last_seq: u64) -> Workload {
        Workload {
            seq: last_seq,
            now_ms: 1_000 + last_seq * 10,
            ..Workload::new(seed)
        }
    }

    fn request(&mut self) -> Request {
        let r = &mut self.rng;
        let account = r.below(12);
        let amount = 1 + r.below(5_000) as i64;
        match r.below(16) {
            0 | 1 => Request::OpenAccount { account },
            2..=4 => Request::Deposit { account, amount },
            5 | 6 => Request::Withdraw { account, amount },
            7 | 8 => Request::Transfer {
                from: account,
                to: r.below(12),
                amount,
            },
            9 => Request::ListInstrument {
                symbol: Symbol::new(&format!("S{}", r.below(3))).unwrap(),
                supply: 10 + r.below(100),
                price: 1 + r.below(200) as i64,
            },
            10 | 11 => Request::Reserve {
                reservation: r.below(50),
                account,
                instrument: InstrumentId(r.below(3) as u32),
                qty: 1 + r.below(20),
                ttl_ms: [0, 50, 500][r.below(3) as usize],
                partial: r.below(2) == 0,
            },
            12 => Request::Confirm {
                reservation: r.below(50),
            },
            13 => Request::Cancel {
                reservation: r.below(50),
            },
            14 => Request::CreditRebate {
                deposit_seq: r.below(self.seq + 1),
                amount: r.below(50) as i64,
            },
            _ => match r.below(6) {
                0 => Request::Balance { account },
                1 => Request::History { account, limit: 5 },
                2 => Request::Instrument {
                    instrument: InstrumentId(0),
                },
                3 => Request::Holdings { account },
                4 => Request::Digest,
                _ => Request::Tick,
            },
        }
    }

    fn batch(&mut self, len: usize) -> Vec<Stamped> {
        (0..len)
            .map(|_| {
                self.seq += 1;
                self.now_ms += self.rng.below(20);
                let request = self.request();
                let session = 1 + self.rng.below(3);
                Stamped::new(
                    Stamp {
                        seq: self.seq,
                        time_ms: self.now_ms,
                        session,
                        req: 0,
                    },
                    request,
                )
            })
            .collect()
    }
}

fn apply_all(ledger: &mut Ledger, batches: &[Vec<Stamped>]) {
    for batch in batches {
        ledger.apply_batch(batch, |_, _| {});
    }
}

fn live_digest(batches: &[Vec<Stamped>]) -> u64 {
    let mut ledger = Ledger::new(CONFIG);
    apply_all(&mut ledger, batches);
    ledger.digest()
}

/// Segment files of a journal directory, sorted.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

/// (offset, total bytes incl. header, excl. padding) of every frame in a
/// segment, following the layout in journal/README.md (a 48-byte segment
/// header; a frame's length at offset 16 of the frame).
fn frames(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 48;
    while at + 20 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push((at, len));
        at = (at + len + 7) & !7;
    }
    out
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

use ringledger::journal::{
    prune, read_records, recover, replay, replay_with_progress, write_snapshot, Durability,
    JournalConfig, JournalError, JournalWriter, Progress,
};

fn config(segment_bytes: u64) -> JournalConfig {
    JournalConfig {
        segment_bytes,
        durability: Durability::Async,
    }
}

/// Writes `count` random batches (1..=max_len records), each synced, and
/// returns them. The sync after each batch puts every frame but the last
/// before the durable point its successor records, so damage to them is
/// corruption, while the last may be a torn tail.
fn write_journal(
    dir: &Path,
    seed: u64,
    count: usize,
    max_len: u64,
    segment_bytes: u64,
) -> Vec<Vec<Stamped>> {
    let mut workload = Workload::new(seed);
    let mut rng = Rng::new(seed ^ 0xABCD);
    let mut writer = JournalWriter::open(dir, config(segment_bytes)).unwrap();
    let batches: Vec<Vec<Stamped>> = (0..count)
        .map(|_| workload.batch(1 + rng.below(max_len) as usize))
        .collect();
    for batch in &batches {
        writer.append(batch).unwrap();
        writer.sync().unwrap();
    }
    batches
}

fn total(batches: &[Vec<Stamped>]) -> u64 {
    batches.iter().map(|b| b.len() as u64).sum()
}

#[test]
fn recovery_rebuilds_the_live_digest_across_segment_rolls() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let batches = write_journal(&dir, 1, 300, 40, 4096);
    assert!(segments(&dir).len() > 10, "tiny segments must roll");

    let recovered = recover(&dir, CONFIG).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.snapshot_seq, 0);
    assert_eq!(recovered.records_replayed, total(&batches));
    assert_eq!(recovered.ledger.last_seq(), total(&batches));
    assert_eq!(recovered.ledger.digest(), live_digest(&batches));
    recovered.ledger.check_invariants().unwrap();

    let all: Vec<Stamped> = batches.concat();
    let read: Vec<Stamped> = read_records(&dir, 1).unwrap().map(Result::unwrap).collect();
    assert_eq!(read, all);
    let from = 777;
    let tail: Vec<Stamped> = read_records(&dir, from)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(tail, all[from as usize - 1..]);
}

#[test]
fn a_reopened_writer_continues_after_the_last_record() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut batches = write_journal(&dir, 2, 20, 10, 1 << 16);
    let recovered = recover(&dir, CONFIG).unwrap();
    let mut workload = Workload::resume(3, recovered.ledger.last_seq());
    let mut writer = JournalWriter::open(&dir, config(1 << 16)).unwrap();
    assert_eq!(writer.next_seq(), Some(recovered.ledger.last_seq() + 1));
    let more = workload.batch(7);
    writer.append(&more).unwrap();
    batches.push(more);
    drop(writer);
    let again = recover(&dir, CONFIG).unwrap();
    assert_eq!(again.ledger.digest(), live_digest(&batches));
}

/// A frame larger than a whole segment gets a segment of its own size; a
/// writer reopened with another segment size fills the existing segment to
/// its real length before rolling.
#[test]
fn frames_larger_than_a_segment_and_a_changed_segment_size_lose_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    // Batches of up to 40 records (~2 KiB) into 512-byte segments.
    let mut batches = write_journal(&dir, 5, 30, 40, 512);
    assert!(
        segments(&dir).len() >= 25,
        "oversize frames get their own segments"
    );
    for (size, seed) in [(1u64 << 20, 6), (600, 7), (1 << 16, 8)] {
        let recovered = recover(&dir, CONFIG).unwrap();
        assert_eq!(recovered.ledger.digest(), live_digest(&batches));
        let mut workload = Workload::resume(seed, recovered.ledger.last_seq());
        let mut writer = JournalWriter::open(&dir, config(size)).unwrap();
        for len in [1, 3, 30, 2] {
            let more = workload.batch(len);
            writer.append(&more).unwrap();
            batches.push(more);
        }
        writer.sync().unwrap();
    }
    let recovered = recover(&dir, CONFIG).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.records_replayed, total(&batches));
    assert_eq!(recovered.ledger.digest(), live_digest(&batches));
    let read: Vec<Stamped> = read_records(&dir, 1).unwrap().map(Result::unwrap).collect();
    assert_eq!(read, batches.concat());
}

#[test]
fn the_writer_refuses_to_write_a_seq_twice_or_out_of_order() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let batches = write_journal(&dir, 4, 5, 5, 1 << 16);
    let mut writer = JournalWriter::open(&dir, config(1 << 16)).unwrap();
    let err = writer.append(&batches[4]).unwrap_err();
    assert!(err.to_string().contains("twice"), "{err}");
    let mut next = Workload::resume(5, total(&batches)).batch(3);
    next.swap(0, 1);
    let err = writer.append(&next).unwrap_err();
    assert!(err.to_string().contains("consecutive"), "{err}");
}

#[test]
fn durability_parses_its_three_modes_and_explains_a_wrong_one() {
    assert_eq!("none".parse::<Durability>(), Ok(Durability::None));
    assert_eq!("async".parse::<Durability>(), Ok(Durability::Async));
    assert_eq!("sync".parse::<Durability>(), Ok(Durability::Sync));
    let err = "fsync".parse::<Durability>().unwrap_err();
    assert!(
        err.contains("\"fsync\"") && err.contains("none, async, sync"),
        "{err}"
    );
}

#[test]
fn durability_none_writes_no_files() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut writer = JournalWriter::open(
        &dir,
        JournalConfig {
            durability: Durability::None,
            ..JournalConfig::default()
        },
    )
    .unwrap();
    writer.commit(&Workload::new(1).batch(3)).unwrap();
    assert!(!dir.exists());
}

/// How the bytes after a cut inside the last frame look.
#[derive(Clone, Copy, Debug)]
enum After {
    Eof,
    Zeros,
    Garbage,
}

#[test]
fn a_torn_last_frame_is_truncated_at_every_offset_and_the_journal_stays_appendable() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let batches = write_journal(&template, 6, 12, 6, 4096);
    let last_seg = segments(&template).pop().unwrap();
    let name = last_seg.file_name().unwrap().to_owned();
    let original = std::fs::read(&last_seg).unwrap();
    let (start, len) = *frames(&original).last().unwrap();
    let kept = &batches[..batches.len() - 1];
    let mut garbage = Rng::new(99);

    for cut in start..start + len {
        for after in [After::Eof, After::Zeros, After::Garbage] {
            let dir = tmp.path().join(format!("cut-{cut}-{after:?}"));
            std::fs::create_dir(&dir).unwrap();
            for seg in segments(&template) {
                std::fs::copy(&seg, dir.join(seg.file_name().unwrap())).unwrap();
            }
            let mut bytes = original[..cut].to_vec();
            match after {
                After::Eof => {}
                After::Zeros => bytes.resize(original.len(), 0),
                After::Garbage => {
                    bytes.extend((cut..original.len()).map(|_| garbage.next_u64() as u8))
                }
            }
            let seg = dir.join(&name);
            std::fs::write(&seg, &bytes).unwrap();
            let torn = bytes[start..].iter().any(|&b| b != 0);

            let recovered =
                recover(&dir, CONFIG).unwrap_or_else(|e| panic!("cut at {cut}, {after:?}: {e}"));
            assert_eq!(
                recovered.ledger.last_seq(),
                total(kept),
                "cut at {cut}, {after:?}"
            );
            assert_eq!(recovered.ledger.digest(), live_digest(kept));
            if torn {
                let warning = recovered.warnings.join("\n");
                assert!(
                    warning.contains(&seg.display().to_string())
                        && warning.contains(&format!("offset {start}")),
                    "cut at {cut}, {after:?}: {warning}"
                );
            } else {
                assert!(recovered.warnings.is_empty());
            }
            let on_disk = std::fs::read(&seg).unwrap();
            assert_eq!(
                on_disk.len(),
                bytes.len(),
                "the preallocated length is kept"
            );
            assert!(
                on_disk[start..].iter().all(|&b| b == 0),
                "torn bytes are zeroed"
            );

            let mut writer = JournalWriter::open(&dir, config(4096)).unwrap();
            let more = Workload::resume(7, recovered.ledger.last_seq()).batch(4);
            writer.append(&more).unwrap();
            drop(writer);
            let again = recover(&dir, CONFIG).unwrap();
            assert!(again.warnings.is_empty(), "{:?}", again.warnings);
            let mut expected = kept.to_vec();
            expected.push(more);
            assert_eq!(
                again.ledger.digest(),
                live_digest(&expected),
                "cut at {cut}, {after:?}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

#[test]
fn a_writer_refuses_a_torn_journal_until_it_is_recovered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_journal(&dir, 8, 5, 5, 1 << 16);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let (start, len) = *frames(&bytes).last().unwrap();
    bytes[start + len - 1] ^= 0x40;
    std::fs::write(&seg, &bytes).unwrap();
    let err = JournalWriter::open(&dir, config(1 << 16)).unwrap_err();
    assert!(err.to_string().contains("run recovery first"), "{err}");
    recover(&dir, CONFIG).unwrap();
    JournalWriter::open(&dir, config(1 << 16)).unwrap();
}

fn flip_and_expect_corrupt(dir: &Path, seg: &Path, at: usize, frame_start: usize) {
    let mut bytes = std::fs::read(seg).unwrap();
    bytes[at] ^= 0x01;
    std::fs::write(seg, &bytes).unwrap();
    let before = dir_bytes(dir);
    match recover(dir, CONFIG) {
        Err(err @ JournalError::Corrupt { .. }) => {
            let JournalError::Corrupt { file, offset, .. } = &err else {
                unreachable!()
            };
            assert_eq!(file, seg, "flip at {at}");
            assert_eq!(*offset, frame_start as u64, "flip at {at}");
            let text = err.to_string();
            assert!(
                text.contains(&seg.display().to_string())
                    && text.contains(&format!("offset {frame_start}")),
                "{text}"
            );
        }
        other => panic!("flip at {at}: expected Corrupt, got {other:?}"),
    }
    assert_eq!(
        dir_bytes(dir),
        before,
        "recovery must not change the disk on corruption"
    );
    bytes[at] ^= 0x01;
    std::fs::write(seg, &bytes).unwrap();
}

#[test]
fn a_bit_flip_anywhere_in_a_middle_frame_is_corruption_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_journal(&dir, 9, 8, 5, 1 << 16);
    let seg = segments(&dir).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    let (start, len) = frames(&bytes)[3];
    for at in start..start + len {
        flip_and_expect_corrupt(&dir, &seg, at, start);
    }
    recover(&dir, CONFIG).unwrap();
}

#[test]
fn a_bad_last_frame_of_an_earlier_segment_is_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_journal(&dir, 10, 60, 8, 2048);
    let segs = segments(&dir);
    assert!(segs.len() >= 3);
    let seg = &segs[1];
    let bytes = std::fs::read(seg).unwrap();
    let (start, len) = *frames(&bytes).last().unwrap();
    flip_and_expect_corrupt(&dir, seg, start + len / 2, start);
}

#[test]
fn a_missing_middle_segment_is_a_sequence_gap() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_journal(&dir, 11, 60, 8, 2048);
    let segs = segments(&dir);
    std::fs::remove_file(&segs[1]).unwrap();
    let err = recover(&dir, CONFIG).unwrap_err();
    assert!(
        matches!(err, JournalError::Corrupt { ref file, .. } if *file == segs[2]),
        "{err}"
    );
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn an_unknown_format_version_is_named_with_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    write_journal(&dir, 12, 3, 3, 1 << 16);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&99u32.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let err = recover(&dir, CONFIG).unwrap_err();
    assert!(
        matches!(
            err,
            JournalError::UnsupportedVersion {
                found: 99,
                supported: ringledger::journal::FORMAT_VERSION,
                ..
            }
        ),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(&seg.display().to_string()) && text.contains("version 99"),
        "{text}"
    );

    bytes[0..8].copy_from_slice(b"NOTOURS!");
    std::fs::write(&seg, &bytes).unwrap();
    let err = recover(&dir, CONFIG).unwrap_err();
    assert!(matches!(err, JournalError::BadMagic { .. }), "{err:?}");
}

#[test]
fn snapshot_plus_tail_equals_full_replay_and_a_bad_newest_snapshot_falls_back() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut workload = Workload::new(13);
    let mut writer = JournalWriter::open(&dir, config(2048)).unwrap();
    let mut live = Ledger::new(CONFIG);
    let mut batches = Vec::new();
    let mut snapshots = Vec::new();
    for i in 0..90 {
        let batch = workload.batch(1 + i % 7);
        writer.append(&batch).unwrap();
        live.apply_batch(&batch, |_, _| {});
        batches.push(batch);
        if i == 30 || i == 60 {
            writer.sync().unwrap();
            let path = write_snapshot(&dir, &live, writer.chain_head()).unwrap();
            snapshots.push((live.last_seq(), path));
        }
    }
    drop(writer);
    let full = replay(&dir, CONFIG, false).unwrap();
    assert_eq!(full.recovered.ledger.digest(), live.digest());
    assert_eq!(full.recovered.records_replayed, live.last_seq());

    let recovered = recover(&dir, CONFIG).unwrap();
    assert!(recovered.warnings.is_empty(), "{:?}", recovered.warnings);
    assert_eq!(recovered.snapshot_seq, snapshots[1].0);
    assert_eq!(recovered.records_replayed, live.last_seq() - snapshots[1].0);
    assert_eq!(recovered.ledger.digest(), live.digest());

    let newest = &snapshots[1].1;
    let mut bytes = std::fs::read(newest).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(newest, &bytes).unwrap();
    let recovered = recover(&dir, CONFIG).unwrap();
    assert_eq!(recovered.snapshot_seq, snapshots[0].0);
    assert_eq!(recovered.ledger.digest(), live.digest());
    let warning = recovered.warnings.join("\n");
    assert!(
        warning.contains(&newest.display().to_string()) && warning.contains("checksum"),
        "{warning}"
    );

    // Pruning needs a valid covering snapshot; pruning to the older one keeps
    // the fallback working.
    assert!(matches!(
        prune(&dir, snapshots[1].0),
        Err(JournalError::Refused { .. })
    ));
    let removed = prune(&dir, snapshots[0].0).unwrap();
    assert!(!removed.is_empty());
    let recovered = recover(&dir, CONFIG).unwrap();
    assert_eq!(recovered.ledger.digest(), live.digest());

    // With every snapshot gone the pruned journal cannot rebuild the state.
    for (_, path) in &snapshots {
        std::fs::remove_file(path).unwrap();
    }
    let err = recover(&dir, CONFIG).unwrap_err();
    assert!(err.to_string().contains("missing"), "{err}");
}

#[test]
fn a_writer_resumes_after_a_snapshot_newer_than_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let batches = write_journal(&dir, 14, 10, 5, 1 << 16);
    let mut ledger = Ledger::new(CONFIG);
    apply_all(&mut ledger, &batches);
    // Records the journal then lost (its last frame zeroed) but a snapshot
    // holds, with the chain head they had.
    let mut workload = Workload::resume(15, ledger.last_seq());
    let lost = workload.batch(5);
    let mut writer = JournalWriter::open(&dir, config(1 << 16)).unwrap();
    writer.append(&lost).unwrap();
    writer.sync().unwrap();
    ledger.apply_batch(&lost, |_, _| {});
    write_snapshot(&dir, &ledger, writer.chain_head()).unwrap();
    drop(writer);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let (start, len) = *frames(&bytes).last().unwrap();
    bytes[start..start + len].fill(0);
    std::fs::write(&seg, &bytes).unwrap();

    let recovered = recover(&dir, CONFIG).unwrap();
    assert_eq!(recovered.ledger.digest(), ledger.digest());
    assert_eq!(recovered.chain_head.seq, ledger.last_seq());
    let mut writer = JournalWriter::open(&dir, config(1 << 16)).unwrap();
    let more = workload.batch(3);
    let err = writer.append(&more).unwrap_err();
    assert!(err.to_string().contains("resume"), "{err}");
    writer.resume(recovered.chain_head).unwrap();
    writer.append(&more).unwrap();
    ledger.apply_batch(&more, |_, _| {});
    drop(writer);
    let again = recover(&dir, CONFIG).unwrap();
    assert!(again.warnings.is_empty(), "{:?}", again.warnings);
    assert_eq!(again.ledger.digest(), ledger.digest());
}

#[test]
fn replay_and_read_records_report_a_torn_tail_without_touching_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let batches = write_journal(&dir, 16, 6, 5, 1 << 16);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let (start, len) = *frames(&bytes).last().unwrap();
    bytes[start + len - 1] ^= 0x80;
    std::fs::write(&seg, &bytes).unwrap();
    let before = dir_bytes(&dir);
    let kept = &batches[..batches.len() - 1];

    let replayed = replay(&dir, CONFIG, true).unwrap();
    assert_eq!(replayed.recovered.ledger.digest(), live_digest(kept));
    let warning = replayed.recovered.warnings.join("\n");
    assert!(
        warning.contains(&format!("offset {start}")) && warning.contains("read-only"),
        "{warning}"
    );

    let mut records = read_records(&dir, 1).unwrap();
    assert_eq!(
        records.by_ref().map(Result::unwrap).count() as u64,
        total(kept)
    );
    assert!(records
        .torn_tail()
        .unwrap()
        .contains(&format!("offset {start}")));
    assert_eq!(dir_bytes(&dir), before);
}

#[test]
fn random_damage_to_journal_and_snapshots_never_panics() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let mut workload = Workload::new(17);
    let mut writer = JournalWriter::open(&template, config(1024)).unwrap();
    let mut ledger = Ledger::new(CONFIG);
    for i in 0..40 {
        let batch = workload.batch(1 + i % 5);
        writer.append(&batch).unwrap();
        ledger.apply_batch(&batch, |_, _| {});
        if i == 25 {
            write_snapshot(&template, &ledger, writer.chain_head()).unwrap();
        }
    }
    drop(writer);
    // The empty lock file holds no data to damage.
    let mut files = dir_bytes(&template);
    files.retain(|(path, _)| !path.ends_with(ringledger::journal::LOCK_FILE));
    let mut rng = Rng::new(18);
    for round in 0..300 {
        let dir = tmp.path().join(format!("round-{round}"));
        std::fs::create_dir(&dir).unwrap();
        for (path, bytes) in &files {
            std::fs::write(dir.join(path.file_name().unwrap()), bytes).unwrap();
        }
        let (path, bytes) = &files[rng.below(files.len() as u64) as usize];
        let mut bytes = bytes.clone();
        if rng.below(4) == 0 {
            bytes.truncate(rng.below(bytes.len() as u64) as usize);
        } else {
            for _ in 0..1 + rng.below(8) {
                let at = rng.below(bytes.len() as u64) as usize;
                bytes[at] = rng.next_u64() as u8;
            }
        }
        std::fs::write(dir.join(path.file_name().unwrap()), &bytes).unwrap();
        match recover(&dir, CONFIG) {
            Ok(r) => r.ledger.check_invariants().unwrap(),
            Err(e) => assert!(!e.to_string().is_empty()),
        }
        let _ = read_records(&dir, 1).map(|records| records.count());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

/// Segments are read a window (about a MiB) at a time: frames straddle
/// window edges, one frame is larger than a window, and the check that the
/// space after the data is all zeros runs over several windows. (Read, not
/// applied, to stay quick in debug builds.)
#[test]
fn frames_across_read_windows_and_a_far_stray_byte_are_handled_like_small_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut workload = Workload::new(19);
    let mut writer = JournalWriter::open(&dir, config(8 << 20)).unwrap();
    let batches: Vec<Vec<Stamped>> = (0..1_500)
        .map(|i| workload.batch(if i == 40 { 40_000 } else { 1 + i % 97 }))
        .collect();
    for batch in &batches {
        writer.append(batch).unwrap();
        writer.sync().unwrap();
    }
    drop(writer);
    let seg = segments(&dir).pop().unwrap();
    assert_eq!(segments(&dir).len(), 1);
    let all = batches.concat();
    let read: Vec<Stamped> = read_records(&dir, 1).unwrap().map(Result::unwrap).collect();
    assert_eq!(read, all);

    let bytes = std::fs::read(&seg).unwrap();
    let frames = frames(&bytes);
    let (start, len) = frames[frames.len() - 3];
    assert!(start > 3 << 20, "the data spans several windows");
    let mut damaged = bytes.clone();
    damaged[start + len / 2] ^= 1;
    std::fs::write(&seg, &damaged).unwrap();
    let err = read_records(&dir, 1)
        .unwrap()
        .find_map(Result::err)
        .expect("a flipped bit in a middle frame is an error");
    assert!(
        matches!(err, JournalError::Corrupt { offset, .. } if offset == start as u64),
        "{err}"
    );

    let (last, last_len) = *frames.last().unwrap();
    let end = (last + last_len + 7) & !7;
    let stray = (7 << 20) + 3;
    let mut damaged = bytes.clone();
    damaged[stray] = 1;
    std::fs::write(&seg, &damaged).unwrap();
    let mut records = read_records(&dir, 1).unwrap();
    assert_eq!(records.by_ref().map(Result::unwrap).count(), all.len());
    let torn = records.torn_tail().expect("a stray byte after the data");
    assert!(
        torn.contains(&format!("offset {end}"))
            && torn.contains(&format!("non-zero bytes at offset {stray}")),
        "{torn}"
    );
}

#[test]
fn replay_progress_grows_to_the_records_and_bytes_of_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let batches = write_journal(&dir, 20, 400, 40, 1 << 14);
    let mut reports: Vec<Progress> = Vec::new();
    let replayed = replay_with_progress(&dir, CONFIG, false, |p| reports.push(*p)).unwrap();
    assert_eq!(replayed.recovered.ledger.digest(), live_digest(&batches));
    assert!(reports.len() > 1, "{reports:?}");
    for pair in reports.windows(2) {
        assert!(pair[0].records <= pair[1].records && pair[0].bytes_read <= pair[1].bytes_read);
    }
    let last = reports.last().unwrap();
    let segment_bytes: u64 = segments(&dir)
        .iter()
        .map(|s| std::fs::metadata(s).unwrap().len())
        .sum();
    assert_eq!(last.records, total(&batches));
    assert_eq!(
        (last.bytes_read, last.bytes_total),
        (segment_bytes, segment_bytes)
    );
    assert_eq!(replayed.journal_bytes, segment_bytes);
}
