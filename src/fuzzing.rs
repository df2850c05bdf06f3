//! Entry points for the fuzz targets (`fuzz/`, cargo-fuzz) and for the test
//! that replays their corpora on the stable toolchain
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes, drives the same
//! code the engine runs on input from outside (a `run` line, an amount, a
//! journal frame, a snapshot, a journal directory), and panics only when
//! that code broke its contract: it panicked itself, or it accepted
//! something and then disagreed with itself about it (a value that does not
//! survive its own round trip, a recovered Ledger that breaks an invariant,
//! a refused recovery that changed a file).
//!
//! Checksums would stop a byte-mutating fuzzer at the first frame or
//! snapshot header, so the frame, snapshot and recovery entries read some
//! inputs as contents to seal: the entry writes the length and checksum
//! with the journal's own encoder, and the fuzzer reaches the decoders
//! behind them.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use crate::cli::run::{line_request, Edge};
use crate::engine::ManualClock;
use crate::journal::format::{
    decode_record, find_valid_frame, finish_frame, parse_frame, segment_header, snapshot_header,
    Parsed, BINCODE, FRAME_HEADER_BYTES,
};
use crate::journal::recover::rebuild;
use crate::journal::scan::{decode_frame, segment_name};
use crate::journal::snapshot::{check_snapshot, snapshot_name};
use crate::journal::{lock_dir_in, read_meta_in, recover_locked, LOCK_FILE, META_FILE};
use crate::journal::{ChainHead, GENESIS};
use crate::ledger::LedgerConfig;
use crate::money::{Scale, SCALE_MAX};
use crate::outcome::ErrorCode;
use crate::request::{InstrumentId, Stamp, Stamped, Symbol};
use crate::storage::sim::{Faults, SimStorage};
use crate::storage::{OpenMode, Storage, StorageFile};

/// One `run` input line (the bytes between two newlines) through the
/// conversion `run` applies before the engine sees it. A request it
/// accepts must journal and decode back unchanged; a line it refuses gets
/// an answer of the documented shape.
pub fn json_line(bytes: &[u8]) {
    let line = bytes.strip_suffix(b"\n").unwrap_or(bytes);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let Ok(text) = std::str::from_utf8(line) else {
        return;
    };
    let listed = |symbol: &Symbol| match symbol.as_str() {
        "ACME" => Some(InstrumentId(0)),
        "XYZ" => Some(InstrumentId(1)),
        _ => None,
    };
    let clock = ManualClock::new(1_000);
    // The scale varies with the input, so every scale's rules get exercised
    // without parsing each line three times.
    let places = [2, 0, SCALE_MAX][text.len() % 3];
    let edge = Edge {
        scale: Scale::new(places).expect("a valid scale"),
        instruments: &listed,
        manual_clock: Some(&clock),
    };
    match line_request(text, &edge) {
        Ok(None) => {}
        Ok(Some(request)) => {
            let stamped = Stamped::new(Stamp::default(), request);
            let encoded = bincode::encode_to_vec(stamped, BINCODE).expect("a request encodes");
            assert_eq!(
                decode_record(&encoded),
                Some((stamped, encoded.len())),
                "a request accepted from {text:?} does not decode back from the journal"
            );
        }
        Err(answer) => {
            assert_eq!(answer["ok"], Value::Bool(false), "{answer}");
            let code = answer["error"].as_str().expect("an error code");
            assert!(
                ErrorCode::ALL.iter().any(|c| c.as_str() == code),
                "undocumented error code in {answer}"
            );
            assert!(answer["message"].is_string(), "{answer}");
        }
    }
}

/// An amount or price as text through [`Scale::parse`] at every scale. An
/// accepted amount is positive, formats back to text that parses to the
/// same units, and is the same amount `rust_decimal` reads; a refused one
/// says so in a message of bounded length, however long the input.
pub fn amount(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return;
    };
    for places in 0..=SCALE_MAX {
        let scale = Scale::new(places).expect("a valid scale");
        match scale.parse(text) {
            Ok(units) => {
                assert!(units > 0, "{text:?} at scale {places} parsed to {units}");
                let formatted = scale.format(units);
                assert_eq!(
                    scale.parse(&formatted),
                    Ok(units),
                    "{text:?} at scale {places}: {units} units format as {formatted:?}"
                );
                assert_eq!(scale.to_decimal(units).to_string(), formatted);
                let decimal: rust_decimal::Decimal = text.parse().expect("a plain decimal");
                assert_eq!(scale.to_units(decimal), Ok(units), "{text:?}");
            }
            Err(e) => {
                // A message quotes at most 40 characters of the input, each
                // escaped to at most 10 bytes (`\u{10ffff}`): bounded
                // whatever the input's length.
                let message = e.to_string();
                assert!(
                    message.len() < 1024,
                    "{text:?}: a message of {} bytes",
                    message.len()
                );
            }
        }
    }
}

/// A journal segment's data area through the frame reader, as recovery
/// walks it: frames, then the end or a bad frame and the search for a good
/// one after it. Records are decoded by hand exactly as bincode would;
/// every frame that decodes must encode back to its own
/// bytes. The first byte picks the input's reading: odd, the rest is one
/// frame's contents, sealed here (see [`seal_frame`]); even, raw bytes.
pub fn journal_frames(bytes: &[u8]) {
    let Some((&mode, data)) = bytes.split_first() else {
        return;
    };
    let mut records = data;
    loop {
        let by_hand = decode_record(records);
        let by_bincode = bincode::decode_from_slice::<Stamped, _>(records, BINCODE).ok();
        assert_eq!(
            by_hand, by_bincode,
            "the record decoder disagrees with bincode"
        );
        let Some((_, used)) = by_hand else { break };
        records = &records[used..];
    }
    if mode % 2 == 1 {
        let mut buf = Vec::new();
        seal_frame(data, GENESIS, &mut buf);
        walk_frames(&buf);
    } else {
        walk_frames(data);
    }
}

fn walk_frames(buf: &[u8]) {
    let path = Path::new("fuzz.seg");
    let mut offset = 0;
    let mut decoded = Vec::new();
    let mut encoded = Vec::new();
    loop {
        match parse_frame(buf, offset) {
            Parsed::Frame(frame) => {
                assert!(frame.next > offset && frame.next <= buf.len());
                let (start, end) = frame.records;
                decoded.clear();
                if decode_frame(&buf[start..end], &frame, path, &mut decoded).is_ok() {
                    assert_eq!(decoded.len(), frame.count as usize);
                    if frame.count > 0 {
                        crate::journal::format::encode_frame(
                            &decoded,
                            frame.durable_seq,
                            frame.parent,
                            &mut encoded,
                        )
                        .expect("decoded records encode");
                        assert_eq!(
                            encoded,
                            buf[offset..frame.next],
                            "the frame at {offset} does not encode back to its bytes"
                        );
                    }
                }
                offset = frame.next;
            }
            Parsed::End => return,
            Parsed::Bad(_) => match find_valid_frame(buf, offset + 1) {
                Some(next) => {
                    assert!(next > offset);
                    offset = next;
                }
                None => return,
            },
        }
    }
}

/// Appends one frame holding `contents` to `out`, with a valid length and
/// checksum chained to `parent`, and returns its checksum: the first 24
/// bytes (zero-padded) are its header fields (record count, kind, first
/// seq, durable seq), the rest its records.
fn seal_frame(contents: &[u8], parent: u128, out: &mut Vec<u8>) -> u128 {
    let mut fields = [0u8; 24];
    let header = contents.len().min(24);
    fields[..header].copy_from_slice(&contents[..header]);
    let u32_at = |at: usize| u32::from_le_bytes(fields[at..at + 4].try_into().expect("4 bytes"));
    let u64_at = |at: usize| u64::from_le_bytes(fields[at..at + 8].try_into().expect("8 bytes"));
    let mut frame = vec![0u8; FRAME_HEADER_BYTES];
    frame.extend_from_slice(&contents[header..]);
    let checksum = finish_frame(
        &mut frame,
        u32_at(0),
        u32_at(4),
        u64_at(8),
        u64_at(16),
        parent,
    );
    out.extend_from_slice(&frame);
    checksum
}

/// A snapshot file through the checks recovery applies before starting
/// from it. The first byte picks the reading: odd, the rest is a seq (8
/// bytes) and a payload, given a valid header here; even, a whole file. A
/// Ledger accepted must pass its invariants (the decoder checks them) and
/// survive its own round trip.
pub fn snapshot(bytes: &[u8]) {
    let Some((&mode, data)) = bytes.split_first() else {
        return;
    };
    let (file, name_seq) = if mode % 2 == 1 {
        let (seq, payload) = split_u64(data);
        (sealed_snapshot(seq, payload), seq)
    } else {
        let seq = data
            .get(16..24)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")));
        (data.to_vec(), seq)
    };
    if let Ok((ledger, _)) = check_snapshot(&file, name_seq) {
        ledger
            .check_invariants()
            .expect("a decoded snapshot passed its checks");
        let again = bincode::encode_to_vec(&ledger, BINCODE).expect("a Ledger encodes");
        let (reread, _) = check_snapshot(&sealed_snapshot(name_seq, &again), name_seq)
            .expect("a Ledger re-encoded decodes");
        assert_eq!(reread.digest(), ledger.digest());
    }
}

/// A snapshot file around `payload`, recording a chain head of checksum 0
/// (the journal's chain check may refuse it; the decoding behind it is
/// what is fuzzed).
fn sealed_snapshot(last_seq: u64, payload: &[u8]) -> Vec<u8> {
    let head = ChainHead {
        seq: last_seq,
        checksum: 0,
    };
    let mut file = snapshot_header(head, payload).to_vec();
    file.extend_from_slice(payload);
    file
}

/// The first 8 bytes as a little-endian u64 (zero-padded), and the rest.
fn split_u64(data: &[u8]) -> (u64, &[u8]) {
    let mut seq = [0u8; 8];
    let n = data.len().min(8);
    seq[..n].copy_from_slice(&data[..n]);
    (u64::from_le_bytes(seq), &data[n..])
}

/// Journal files written from `bytes` into a directory of the in-memory
/// storage seam ([`SimStorage`], no faults), then read back by a read-only
/// rebuild and by recovery, twice, as the engine recovers at start (meta
/// first, under the directory's lock). Both must agree on the state; a
/// refused recovery must leave every file as it was; a recovered Ledger
/// must pass its invariants; and recovering again must find the same state
/// and nothing left to repair.
///
/// `bytes` is a list of files, each a kind byte, a length (u16, little
/// endian) and that many bytes (fewer at the end of the input). Kinds, by
/// the byte modulo 5: a segment and a snapshot as raw bytes (named by the
/// seq in their header), the meta file, a segment whose frames are sealed
/// here and chained from the genesis value (a first seq, u64, then frames,
/// each a length, u16, and contents for [`seal_frame`]), and a snapshot sealed here (a seq, u64, then the
/// payload).
pub fn recovery(bytes: &[u8]) {
    let storage = SimStorage::new(0, Faults::calm());
    let dir = Path::new("/journal");
    storage.create_dir_all(dir).expect("a directory");
    write_files(&storage, bytes, dir);
    let before = files(&storage, dir);
    let config = read_meta_in(&storage, dir).map_or(LedgerConfig::default(), |meta| meta.ledger);
    let rebuilt = rebuild(&storage, dir, config, true);
    assert_eq!(files(&storage, dir), before, "a read-only rebuild wrote");
    let lock = lock_dir_in(&storage, dir).expect("the directory's lock");
    let recovered = match recover_locked(&lock, config) {
        Ok(recovered) => recovered,
        Err(e) => {
            assert_eq!(
                files(&storage, dir),
                before,
                "a refused recovery ({e}) changed files"
            );
            return;
        }
    };
    let ledger = recovered.ledger;
    ledger
        .check_invariants()
        .expect("a recovered Ledger keeps its invariants");
    if let Ok((rebuilt, _, _)) = rebuilt {
        assert_eq!(
            rebuilt.ledger.digest(),
            ledger.digest(),
            "the read-only rebuild and recovery rebuilt different states"
        );
    }
    let again = recover_locked(&lock, config).expect("a recovered directory recovers again");
    assert_eq!(again.ledger.digest(), ledger.digest());
    assert!(
        !again.warnings.iter().any(|w| w.contains("torn tail")),
        "a second recovery found a torn tail again: {:?}",
        again.warnings
    );
}

fn write_files(storage: &SimStorage, bytes: &[u8], dir: &Path) {
    let mut rest = bytes;
    while let Some((&kind, tail)) = rest.split_first() {
        let len = match tail {
            [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
            _ => 0,
        };
        let tail = tail.get(2..).unwrap_or_default();
        let (data, next) = tail.split_at(len.min(tail.len()));
        rest = next;
        let header_seq = |data: &[u8]| {
            data.get(16..24)
                .map_or(1, |b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
        };
        let (name, contents) = match kind % 5 {
            0 => (segment_name(header_seq(data)), data.to_vec()),
            1 => (snapshot_name(header_seq(data)), data.to_vec()),
            2 => (META_FILE.to_string(), data.to_vec()),
            3 => {
                let (first_seq, mut frames) = split_u64(data);
                let mut segment = segment_header(first_seq, GENESIS).to_vec();
                let mut parent = GENESIS;
                while let [a, b, tail @ ..] = frames {
                    let len = usize::from(u16::from_le_bytes([*a, *b])).min(tail.len());
                    parent = seal_frame(&tail[..len], parent, &mut segment);
                    frames = &tail[len..];
                }
                (segment_name(first_seq), segment)
            }
            _ => {
                let (seq, payload) = split_u64(data);
                (snapshot_name(seq), sealed_snapshot(seq, payload))
            }
        };
        storage
            .open(&dir.join(name), OpenMode::CreateTruncate)
            .and_then(|file| file.write_all_at(&contents, 0))
            .expect("write a file for recovery");
    }
}

/// Every file of `dir` but the lock file (which taking the lock creates)
/// and its contents.
fn files(storage: &SimStorage, dir: &Path) -> BTreeMap<String, Vec<u8>> {
    storage
        .list(dir)
        .expect("list the directory")
        .into_iter()
        .filter(|name| name != LOCK_FILE)
        .map(|name| {
            let contents = storage.read(&dir.join(&name)).expect("read a file");
            (name, contents)
        })
        .collect()
}
