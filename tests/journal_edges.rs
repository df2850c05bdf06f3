//! The journal's sharp corners (issue 9): the durable point, a torn first
//! record, a full disk, a torn tail under a snapshot, meta and scale, a
//! missing directory, garbage named like a segment, retention. Library calls
//! where the rule lives in the library, real child processes for `run`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use ringledger::journal::{self, Durability, JournalConfig, JournalError, JournalWriter};
use ringledger::{Engine, LedgerConfig, Request, Stamp, Stamped};
use serde_json::Value;

fn ringledger() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ringledger"))
}

/// Runs `ringledger run` with `args` on `script`; returns the process output.
fn run(dir: &Path, args: &[&str], script: &str) -> Output {
    let mut child = ringledger()
        .arg("run")
        .arg("--journal-dir")
        .arg(dir)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Written on a thread while the answers are read, so neither pipe fills
    // up. A child that stops reading early is for the caller to notice: its
    // answers fall short.
    let mut stdin = child.stdin.take().unwrap();
    let script = script.to_owned();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(script.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out
}

fn answers(out: &Output) -> Vec<Value> {
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    numbered(dir, "seg")
}

fn snapshots(dir: &Path) -> Vec<PathBuf> {
    numbered(dir, "snap")
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

/// Offset just past the last non-zero byte: the end of a segment's data.
fn data_end(bytes: &[u8]) -> usize {
    bytes.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1)
}

/// The session through the library: 5 accounts, 60 deposits, a
/// barrier (60 rebate credits), a clean shutdown (snapshot at seq 125).
fn small_clean_journal(dir: &Path, thread: ringledger::JournalThread) -> u64 {
    let engine = Engine::builder()
        .journal(dir, Durability::Async)
        .journal_thread(thread)
        .segment_bytes(16 << 10)
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    for account in 0..5 {
        client
            .call(Request::OpenAccount { account })
            .unwrap()
            .unwrap();
    }
    for i in 0..60 {
        client
            .call(Request::Deposit {
                account: i % 5,
                amount: 1_000 + i as i64,
            })
            .unwrap()
            .unwrap();
    }
    client.barrier().unwrap();
    drop(client);
    engine.shutdown().unwrap().digest()
}

/// One flipped byte at every offset of the data of a cleanly shut down
/// journal: each is reported with the file and offset, nothing acknowledged
/// is dropped silently, and recovery changes nothing on disk when it
/// refuses. (Debug build: the whole data area, ~9 KB, is fast enough.)
#[test]
fn every_flipped_byte_before_the_clean_shutdown_mark_is_corruption_and_nothing_is_lost() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let digest = small_clean_journal(&dir, ringledger::JournalThread::Business);
    let snaps = snapshots(&dir);
    assert_eq!(snaps.len(), 1);
    assert!(snaps[0].ends_with("00000000000000000125.snap"), "{snaps:?}");
    let segs = segments(&dir);
    assert_eq!(segs.len(), 1);
    let seg = &segs[0];
    let original = std::fs::read(seg).unwrap();
    let end = data_end(&original);
    let config = LedgerConfig::default();
    let (mut detected, mut tolerated) = (0, 0);
    for at in 0..end {
        let mut bytes = original.clone();
        bytes[at] ^= 0xff;
        std::fs::write(seg, &bytes).unwrap();
        for from_snapshot in [false, true] {
            match journal::replay(&dir, config, from_snapshot) {
                Err(e) => assert_names_file_and_offset(&e, seg, at),
                Ok(r) => assert_eq!(
                    (r.recovered.ledger.last_seq(), r.recovered.ledger.digest()),
                    (125, digest),
                    "flip at {at} dropped acknowledged records: {:?}",
                    r.recovered.warnings
                ),
            }
        }
        let before = dir_bytes(&dir);
        match recover_retrying(&dir, config) {
            Err(e) => {
                detected += 1;
                assert_names_file_and_offset(&e, seg, at);
                assert_eq!(dir_bytes(&dir), before, "flip at {at} changed the disk");
            }
            Ok(r) => {
                tolerated += 1;
                assert_eq!(
                    (r.ledger.last_seq(), r.ledger.digest()),
                    (125, digest),
                    "flip at {at}"
                );
                assert!(
                    at >= end - 64,
                    "flip at {at} (data ends at {end}) was not corruption: {:?}",
                    r.warnings
                );
            }
        }
    }
    std::fs::write(seg, &original).unwrap();
    eprintln!("{end} data bytes: {detected} flips refused as corruption, {tolerated} tolerated (clean-shutdown mark)");
    assert!(detected >= end - 64);
}

/// `recover`, retried while the lock is taken: other tests in this process
/// fork children, and a child holds a copy of the lock's descriptor (and so
/// the `flock`) between its fork and its exec.
fn recover_retrying(dir: &Path, config: LedgerConfig) -> Result<journal::Recovered, JournalError> {
    let mut attempts = 0;
    loop {
        match journal::recover(dir, config) {
            Err(JournalError::Locked { .. }) if attempts < 100 => {
                attempts += 1;
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            other => return other,
        }
    }
}

/// A corruption error names the file and the offset of the damaged frame
/// (a header error the header's field: magic at 0, version at 8).
fn assert_names_file_and_offset(e: &JournalError, seg: &Path, at: usize) {
    let text = e.to_string();
    assert!(
        text.contains(&seg.display().to_string()),
        "flip at {at}: {text}"
    );
    match e {
        JournalError::Corrupt { offset, .. } => {
            assert!(
                *offset as usize <= at,
                "flip at {at} reported at {offset}: {text}"
            )
        }
        JournalError::BadMagic { .. } => assert!(at < 8, "flip at {at}: {text}"),
        JournalError::UnsupportedVersion { .. } => {
            assert!((8..12).contains(&at), "flip at {at}: {text}")
        }
        other => panic!("flip at {at}: unexpected error {other}"),
    }
}

/// Frames appended by a writer (no sync in between) and one fdatasync after
/// them are one group: a power loss may persist them in any order, so a
/// damaged frame followed by a valid one of the same group is a torn tail.
/// A frame written after a sync that covered the damaged one makes it
/// corruption.
#[test]
fn damage_inside_the_last_unsynced_group_is_a_torn_tail_and_before_a_sync_corruption() {
    let tmp = tempfile::tempdir().unwrap();
    let stamped = |seq: u64| {
        Stamped::new(
            Stamp {
                seq,
                time_ms: seq,
                session: 1,
                req: 0,
            },
            Request::OpenAccount { account: seq },
        )
    };
    let config = JournalConfig {
        segment_bytes: 1 << 16,
        durability: Durability::Sync,
    };
    for synced_between in [false, true] {
        let dir = tmp.path().join(format!("j-{synced_between}"));
        let mut writer = JournalWriter::open(&dir, config).unwrap();
        writer.append(&[stamped(1), stamped(2)]).unwrap();
        writer.sync().unwrap();
        writer.append(&[stamped(3)]).unwrap();
        if synced_between {
            writer.sync().unwrap();
        }
        writer.append(&[stamped(4)]).unwrap();
        writer.append(&[stamped(5)]).unwrap();
        drop(writer);
        let seg = segments(&dir).pop().unwrap();
        let mut bytes = std::fs::read(&seg).unwrap();
        // The frame holding seq 3 is the second one; damage its last record
        // byte. (A 48-byte segment header; a frame's length, header
        // included, at offset 16 of the frame.)
        let frame_len =
            |at: usize| u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) as usize;
        let second = 48 + ((frame_len(48) + 7) & !7);
        let len = frame_len(second);
        bytes[second + len - 1] ^= 0x20;
        std::fs::write(&seg, &bytes).unwrap();
        let before = dir_bytes(&dir);
        let result = journal::recover(&dir, LedgerConfig::default());
        if synced_between {
            let err = result.unwrap_err();
            assert!(
                matches!(err, JournalError::Corrupt { offset, .. } if offset == second as u64),
                "{err}"
            );
            assert_eq!(dir_bytes(&dir), before);
        } else {
            let recovered = result.unwrap();
            assert_eq!(recovered.ledger.last_seq(), 2);
            let warning = recovered.warnings.join("\n");
            assert!(warning.contains(&format!("offset {second}")), "{warning}");
            // Appendable afterwards, and the seqs continue at 3.
            let mut writer = JournalWriter::open(&dir, config).unwrap();
            writer.append(&[stamped(3)]).unwrap();
        }
    }
}

/// A torn tail under a snapshot: the snapshot says the journal was synced
/// through its seq, so damage there is corruption, for recovery and replay
/// alike, and nothing is zeroed.
#[test]
fn damage_a_snapshot_covers_is_corruption_for_recovery_and_replay_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let config = JournalConfig {
        segment_bytes: 1 << 16,
        durability: Durability::Async,
    };
    let mut writer = JournalWriter::open(&dir, config).unwrap();
    let mut ledger = ringledger::Ledger::new(LedgerConfig::default());
    for seq in 1..=5 {
        let batch = [Stamped::new(
            Stamp {
                seq,
                time_ms: seq,
                session: 1,
                req: 0,
            },
            Request::OpenAccount { account: seq },
        )];
        writer.append(&batch).unwrap();
        ledger.apply_batch(&batch, |_, _| {});
    }
    writer.sync().unwrap();
    journal::write_snapshot(writer.dir(), &ledger, writer.chain_head()).unwrap();
    drop(writer);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    let end = data_end(&bytes);
    bytes[end - 1] ^= 0x04;
    std::fs::write(&seg, &bytes).unwrap();
    let before = dir_bytes(&dir);
    let err = journal::recover(&dir, LedgerConfig::default()).unwrap_err();
    assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    assert_eq!(dir_bytes(&dir), before);
    for from_snapshot in [false, true] {
        let err = journal::replay(&dir, LedgerConfig::default(), from_snapshot).unwrap_err();
        assert!(matches!(err, JournalError::Corrupt { .. }), "{err}");
    }
}

/// An older journal format is refused by name, not misread.
#[test]
fn a_version_1_journal_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    small_clean_journal(&dir, ringledger::JournalThread::Business);
    let seg = segments(&dir).pop().unwrap();
    let mut bytes = std::fs::read(&seg).unwrap();
    bytes[8..12].copy_from_slice(&1u32.to_le_bytes());
    let crc = crc32c(&bytes[0..40]);
    bytes[40..44].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&seg, &bytes).unwrap();
    let err = journal::replay(&dir, LedgerConfig::default(), false)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("version 1") && err.contains(&format!("version {}", journal::FORMAT_VERSION)),
        "{err}"
    );
}

/// CRC-32C, bit by bit (the test must not share the library's code).
fn crc32c(bytes: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in bytes {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
        }
    }
    !crc
}

const FIVE_DEPOSITS: &str = "{\"op\":\"open_account\",\"account\":1}\n\
{\"op\":\"deposit\",\"account\":1,\"amount\":\"1.00\"}\n\
{\"op\":\"deposit\",\"account\":1,\"amount\":\"2.00\"}\n";

/// Segment 1 cut to 48 bytes (its header and part of record 1), as a crash
/// while writing the very first frame leaves it: that record was never
/// acknowledged, and `run` works afterwards, every time.
#[test]
fn a_torn_first_record_is_truncated_and_run_works_afterwards() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let config = JournalConfig {
        segment_bytes: 1 << 16,
        durability: Durability::Async,
    };
    let mut writer = JournalWriter::open(&dir, config).unwrap();
    writer
        .append(&[Stamped::new(
            Stamp {
                seq: 1,
                time_ms: 1,
                session: 1,
                req: 0,
            },
            Request::OpenAccount { account: 9 },
        )])
        .unwrap();
    drop(writer);
    let meta = "scale=2\nhistory_per_account_max=32\nsessions_max=4096\n\
                session_idle_ms_max=604800000\nclosed_reservations_max=100000\n";
    std::fs::write(dir.join("ringledger.meta"), meta).unwrap();
    let seg = segments(&dir).pop().unwrap();
    let bytes = std::fs::read(&seg).unwrap();
    std::fs::write(&seg, &bytes[..48]).unwrap();
    for round in 0..3 {
        let out = run(&dir, &[], FIVE_DEPOSITS);
        assert!(out.status.success(), "round {round}: {}", stderr(&out));
        let answers = answers(&out);
        assert_eq!(answers.len(), 3, "round {round}");
        let expected = if round == 0 { "ok" } else { "account_exists" };
        assert_eq!(
            answers[0]["ok"].as_bool(),
            Some(expected == "ok"),
            "round {round}: {answers:?}"
        );
        assert_eq!(answers[2]["ok"], true, "round {round}: {answers:?}");
    }
    let out = run(
        &dir,
        &[],
        "{\"op\":\"balance\",\"account\":1}\n{\"op\":\"balance\",\"account\":9}\n",
    );
    let answers = answers(&out);
    assert_eq!(answers[0]["balance"], "9.09", "{answers:?}");
    assert_eq!(answers[1]["error"], "unknown_account", "{answers:?}");
}

/// With the meta file gone, `run` refuses a journal that has records instead
/// of guessing its scale; `inspect` prints amounts at the journal's scale.
#[test]
fn a_journal_without_its_meta_is_refused_and_inspect_reads_the_scale_from_it() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let out = run(
        &dir,
        &["--scale", "3"],
        "{\"op\":\"open_account\",\"account\":1}\n{\"op\":\"deposit\",\"account\":1,\"amount\":\"10.000\"}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));

    let inspect = ringledger()
        .args(["inspect", "--journal-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(inspect.status.success(), "{}", stderr(&inspect));
    let lines: Vec<Value> = String::from_utf8_lossy(&inspect.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let deposit = lines.iter().find(|l| l["op"] == "deposit").unwrap();
    assert_eq!(deposit["amount"], "10.000", "{lines:?}");

    std::fs::remove_file(dir.join("ringledger.meta")).unwrap();
    let before = dir_bytes(&dir);
    let out = run(
        &dir,
        &["--scale", "2"],
        "{\"op\":\"balance\",\"account\":1}\n",
    );
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("ringledger.meta") && err.contains("scale"),
        "{err}"
    );
    let after = dir_bytes(&dir);
    assert_eq!(after, before, "nothing written, no meta made up");
    let inspect = ringledger()
        .args(["inspect", "--journal-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!inspect.status.success());
    assert!(
        stderr(&inspect).contains("ringledger.meta"),
        "{}",
        stderr(&inspect)
    );
}

#[test]
fn replay_and_inspect_of_a_missing_directory_fail_clearly() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("no-such-journal");
    for command in ["replay", "inspect"] {
        let out = ringledger()
            .args([command, "--journal-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{command} exited 0");
        let err = stderr(&out);
        assert!(
            err.contains(&dir.display().to_string()) && err.contains("does not exist"),
            "{command}: {err}"
        );
    }
    assert!(!dir.exists());
}

/// One rule for every file named like a segment or a snapshot: if it is not
/// one, that is an error naming it, whatever its number.
#[test]
fn garbage_named_like_a_segment_or_snapshot_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let template = tmp.path().join("template");
    let out = run(&template, &[], FIVE_DEPOSITS);
    assert!(out.status.success(), "{}", stderr(&out));
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let garbage: Vec<u8> = (0..5_000)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    for name in [
        "00000000000000000000.seg",
        "00000000000000000099.seg",
        "00000000000000000000.snap",
        "00000000000000000001.snap",
        "00000000000000000099.snap",
    ] {
        let dir = tmp.path().join(name.replace('.', "-"));
        std::fs::create_dir(&dir).unwrap();
        for (path, bytes) in dir_bytes(&template) {
            std::fs::write(dir.join(path.file_name().unwrap()), bytes).unwrap();
        }
        std::fs::write(dir.join(name), &garbage).unwrap();
        let err = journal::replay(&dir, LedgerConfig::default(), false).unwrap_err();
        assert!(err.to_string().contains(name), "{name}: {err}");
        let out = ringledger()
            .args(["replay", "--journal-dir"])
            .arg(&dir)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{name}");
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
        let out = run(&dir, &[], "{\"op\":\"balance\",\"account\":1}\n");
        assert!(!out.status.success(), "{name}");
        assert!(stderr(&out).contains(name), "{name}: {}", stderr(&out));
    }
}

/// `run --snapshot-every N` takes periodic snapshots and prunes what a newer
/// one covers, keeping the previous snapshot; `replay` of the pruned
/// directory starts from a snapshot and says so.
#[test]
fn periodic_snapshots_prune_old_segments_and_replay_starts_from_a_snapshot() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut script = String::from("{\"op\":\"open_account\",\"account\":1}\n");
    for _ in 0..600 {
        script += "{\"op\":\"deposit\",\"account\":1,\"amount\":\"1.00\"}\n";
    }
    script += "{\"op\":\"barrier\"}\n{\"op\":\"digest\"}\n";
    let out = run(
        &dir,
        &["--snapshot-every", "100", "--segment-bytes", "4096"],
        &script,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let digest = answers(&out).last().unwrap()["digest"].clone();
    let snaps = snapshots(&dir);
    assert_eq!(snaps.len(), 2, "the newest and the previous: {snaps:?}");
    let first_segment = segments(&dir)[0].clone();
    let first_seq: u64 = first_segment
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_seq > 1, "old segments pruned: {first_segment:?}");
    let older: u64 = snaps[0]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(first_seq <= older + 1, "the previous snapshot stays usable");

    let out = ringledger()
        .args(["replay", "--json", "--journal-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["digest"], digest);
    assert_eq!(report["journal_first_seq"], first_seq, "{report}");
    assert!(report["snapshot_seq"].as_u64().unwrap() > 0, "{report}");
    let out = ringledger()
        .args(["replay", "--journal-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("pruned"), "{text}");
}

/// With `--snapshots-kept 1` the one snapshot left is all that covers the
/// pruned records. Damage it, and recovery and replay stop; the error names
/// the damaged snapshot (not only the segment where the records go
/// missing), since that is the file to restore.
#[test]
fn a_damaged_only_snapshot_of_a_pruned_journal_is_named_in_the_error() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("journal");
    let mut script = String::from("{\"op\":\"open_account\",\"account\":1}\n");
    for _ in 0..300 {
        script += "{\"op\":\"deposit\",\"account\":1,\"amount\":\"1.00\"}\n";
    }
    let args = [
        "--snapshot-every",
        "1",
        "--snapshots-kept",
        "1",
        "--segment-bytes",
        "4096",
    ];
    let out = run(&dir, &args, &script);
    assert!(out.status.success(), "{}", stderr(&out));
    let snaps = snapshots(&dir);
    assert_eq!(snaps.len(), 1, "{snaps:?}");
    assert!(!segments(&dir)[0].ends_with("00000000000000000001.seg"));
    let mut bytes = std::fs::read(&snaps[0]).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 1;
    std::fs::write(&snaps[0], &bytes).unwrap();
    let snap_name = snaps[0].file_name().unwrap().to_str().unwrap();

    let out = run(&dir, &args, "{\"op\":\"balance\",\"account\":1}\n");
    assert!(!out.status.success());
    assert!(stderr(&out).contains(snap_name), "{}", stderr(&out));
    let out = ringledger()
        .args(["replay", "--journal-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains(snap_name), "{}", stderr(&out));
}

/// A small tmpfs the test mounts and unmounts (tests run as root); None,
/// with the reason printed, where mounting is not permitted.
struct SmallFs {
    dir: tempfile::TempDir,
}

impl SmallFs {
    fn mount(size: &str) -> Option<SmallFs> {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output();
        match out {
            Ok(out) if out.status.success() => Some(SmallFs { dir }),
            Ok(out) => {
                eprintln!(
                    "skipped: cannot mount a tmpfs ({})",
                    String::from_utf8_lossy(&out.stderr).trim()
                );
                None
            }
            Err(e) => {
                eprintln!("skipped: cannot run mount: {e}");
                None
            }
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for SmallFs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.dir.path()).status();
    }
}

/// A full disk: every line gets an answer, `unavailable` once the journal
/// cannot grow (never `engine_failed`, never silence); once space is freed,
/// `run` starts again and every acknowledged deposit is there.
#[test]
fn a_full_disk_answers_unavailable_and_run_resumes_once_space_is_freed() {
    let Some(fs) = SmallFs::mount("1m") else {
        return;
    };
    let dir = fs.path().join("journal");
    let args = ["--segment-bytes", "65536"];
    let out = run(&dir, &args, "{\"op\":\"open_account\",\"account\":1}\n");
    assert!(out.status.success(), "{}", stderr(&out));

    let filler = fs.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; 4096];
    while file.write_all(&chunk).is_ok() {}
    let _ = file.sync_all();
    drop(file);

    let lines = 3_000;
    let script = "{\"op\":\"deposit\",\"account\":1,\"amount\":\"1.00\"}\n".repeat(lines);
    let out = run(&dir, &args, &script);
    let full = answers(&out);
    assert_eq!(
        full.len(),
        lines,
        "every line is answered: {}",
        stderr(&out)
    );
    let acked = full.iter().filter(|a| a["ok"] == true).count();
    let refused: Vec<&Value> = full.iter().filter(|a| a["ok"] != true).collect();
    assert!(!refused.is_empty(), "the disk never filled up");
    for answer in &refused {
        assert_eq!(answer["error"], "unavailable", "{answer}");
    }
    assert!(
        full[acked..].iter().all(|a| a["ok"] != true),
        "nothing acknowledged after the first refusal"
    );
    assert!(!out.status.success(), "the engine stopped: non-zero exit");
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));

    // Restarted while the disk is still full, `run` cannot journal all of
    // it: it says why, without blaming the session name. (The session's
    // opening itself may still fit in the room the last segment has left:
    // `run` pipelines its lines, so the group that did not fit can be
    // large. Then the deposits after it run out of space instead.)
    let out = run(&dir, &args, &script);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("No space left"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("--session"), "{}", stderr(&out));
    let acked = acked + answers(&out).iter().filter(|a| a["ok"] == true).count();

    std::fs::remove_file(&filler).unwrap();
    let out = run(
        &dir,
        &args,
        "{\"op\":\"barrier\"}\n{\"op\":\"balance\",\"account\":1}\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let after = answers(&out);
    let expected = format!("{}.{:02}", acked + acked / 100, acked % 100);
    assert_eq!(
        after[1]["balance"], expected,
        "{acked} acknowledged deposits and their rebates"
    );
}

/// Snapshots are taken only of state the journal holds durably, with the
/// flusher too (whose "written" is not "synced"): every frame written after
/// a snapshot at seq S records S or later as synced before it.
#[test]
fn periodic_snapshots_wait_for_an_fdatasync_of_what_they_cover() {
    for thread in [
        ringledger::JournalThread::Business,
        ringledger::JournalThread::Flusher,
    ] {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("journal");
        let engine = Engine::builder()
            .journal(&dir, Durability::Async)
            .journal_thread(thread)
            .segment_bytes(1 << 20)
            .snapshot_every(50)
            .snapshots_kept(0)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        client
            .call(Request::OpenAccount { account: 1 })
            .unwrap()
            .unwrap();
        for _ in 0..400 {
            client
                .call(Request::Deposit {
                    account: 1,
                    amount: 100,
                })
                .unwrap()
                .unwrap();
        }
        client.barrier().unwrap();
        drop(client);
        engine.shutdown().unwrap();
        let snaps: Vec<u64> = snapshots(&dir)
            .iter()
            .map(|p| p.file_stem().unwrap().to_str().unwrap().parse().unwrap())
            .collect();
        assert!(snaps.len() >= 5, "{snaps:?}");
        let bytes = std::fs::read(&segments(&dir)[0]).unwrap();
        // Frames per journal/README.md: checksum, length (header
        // included), count, kind, reserved, first seq, durable seq, parent;
        // 8-byte aligned, after a 48-byte segment header.
        let mut at = 48;
        let mut checked = 0;
        while u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) != 0 {
            let len = u32::from_le_bytes(bytes[at + 16..at + 20].try_into().unwrap()) as usize;
            let first_seq = u64::from_le_bytes(bytes[at + 32..at + 40].try_into().unwrap());
            let durable_seq = u64::from_le_bytes(bytes[at + 40..at + 48].try_into().unwrap());
            if let Some(&snap) = snaps.iter().rev().find(|&&s| s < first_seq) {
                assert!(
                    durable_seq >= snap,
                    "{thread}: frame at {at} (seq {first_seq}) says seq {durable_seq} was synced, but a snapshot at {snap} was written before it"
                );
                checked += 1;
            }
            at = (at + len + 7) & !7;
        }
        assert!(checked > 0);
    }
}
