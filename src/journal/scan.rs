//! Walking the segments frame by frame, deciding at the first bad byte whether
//! it is a torn tail (truncate and go on) or corruption (stop, touch nothing).
//!
//! The rule (DESIGN.md, "Torn tail or corruption"): bad bytes can be a torn
//! write only beyond the *durable point*, the newest of the last fdatasync,
//! the last snapshot and the clean-shutdown mark. The journal records the
//! first in every frame header (the seq through which the writer knew the
//! journal synced when it wrote the frame) and the last as a frame of its
//! own; the snapshots in the directory give the second.

use std::io::ErrorKind;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{
    align_up, decode_record, find_valid_frame, frame_length_at, parse_frame, parse_segment_header,
    ChainHead, Frame, Parsed, BINCODE, FRAME_ALIGN, FRAME_BODY_BYTES_MAX, FRAME_HEADER_BYTES,
    GENESIS, SEGMENT_HEADER_BYTES,
};
use super::snapshot::{read_up_to, snapshot_floor};
use crate::request::Stamped;
use crate::storage::{OpenMode, OsStorage, Storage, StorageFile};

/// A segment file found in the journal directory, named by its first seq.
#[derive(Clone, Debug)]
pub(crate) struct SegmentFile {
    pub path: PathBuf,
    pub first_seq: u64,
}

pub(crate) fn segment_name(first_seq: u64) -> String {
    format!("{first_seq:020}.seg")
}

/// Parses `<20 digits><suffix>`; anything else in the directory is not ours.
pub(crate) fn seq_from_name(name: &str, suffix: &str) -> Option<u64> {
    let digits = name.strip_suffix(suffix)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// Files in `dir` named `<20 digits><suffix>`, sorted by that number. A
/// missing directory is an empty journal (callers that only read check it
/// exists first: see [`require_dir`]).
pub(crate) fn list_numbered<S: Storage>(
    storage: &S,
    dir: &Path,
    suffix: &str,
) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let names = match storage.list(dir) {
        Ok(names) => names,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(dir, "list the journal directory", e)),
    };
    let mut found = Vec::new();
    for name in names {
        if let Some(seq) = seq_from_name(&name, suffix) {
            found.push((seq, dir.join(name)));
        }
    }
    found.sort();
    Ok(found)
}

/// Fails with a clear error if the journal directory `dir` does not exist,
/// for the readers, which must not report an empty journal for a typo.
pub(crate) fn require_dir<S: Storage>(storage: &S, dir: &Path) -> Result<(), JournalError> {
    match storage.info(dir) {
        Ok(info) if info.is_dir => Ok(()),
        Ok(_) => Err(JournalError::Refused {
            path: dir.to_path_buf(),
            reason: "not a directory: give the journal directory".into(),
        }),
        Err(e) if e.kind() == ErrorKind::NotFound => Err(JournalError::Refused {
            path: dir.to_path_buf(),
            reason: "the journal directory does not exist".into(),
        }),
        Err(e) => Err(JournalError::io(dir, "read the journal directory", e)),
    }
}

/// The segments of `dir` in order. Every file named like a segment must be
/// one, whatever its number and whether or not a snapshot covers it: its
/// header is checked here (magic, version, checksum, seq agreeing with the
/// name), so a stray file is an error naming it, never silently skipped.
pub(crate) fn list_segments<S: Storage>(
    storage: &S,
    dir: &Path,
) -> Result<Vec<SegmentFile>, JournalError> {
    let mut segments = Vec::new();
    for (first_seq, path) in list_numbered(storage, dir, ".seg")? {
        let mut header = [0u8; SEGMENT_HEADER_BYTES];
        let read = storage
            .open(&path, OpenMode::Read)
            .and_then(|file| read_up_to(&file, &mut header));
        let filled = read.map_err(|e| JournalError::io(&path, "read journal segment", e))?;
        let named = parse_segment_header(&header[..filled])
            .map_err(|e| JournalError::header(&path, e))?
            .first_seq;
        if named != first_seq || first_seq == 0 {
            return Err(JournalError::corrupt(
                &path,
                16,
                format!("named like a segment starting at seq {first_seq}, but its header says {named} (seqs start at 1)"),
            ));
        }
        segments.push(SegmentFile { path, first_seq });
    }
    Ok(segments)
}

/// Where the valid data of the last segment ends and why the bytes after it
/// are not a frame.
#[derive(Debug)]
pub(crate) struct TornTail {
    pub path: PathBuf,
    pub offset: usize,
    pub file_bytes: usize,
    pub reason: String,
    /// The durable point the bytes lie beyond (a seq).
    pub durable_seq: u64,
}

impl TornTail {
    pub fn describe(&self) -> String {
        format!(
            "torn tail in {} at byte offset {}: {} ({} bytes from there on lie beyond the durable point, seq {}: \
             no later frame, snapshot or shutdown mark shows them synced, so they are taken as a write a crash or \
             power loss cut short; in sync mode that group may have been acknowledged if its last fdatasync had \
             completed, which the journal cannot tell for its newest group)",
            self.path.display(),
            self.offset,
            self.reason,
            self.file_bytes - self.offset,
            self.durable_seq
        )
    }
}

/// Bytes of a segment read at a time. A window this size stays in L2 while
/// its frames are checked and decoded, so the copy out of the page cache is
/// the only pass over DRAM; reading a whole 64 MiB segment into one buffer
/// first ran at a quarter of the speed (fresh pages, and every byte fetched
/// from DRAM twice).
const WINDOW_BYTES: usize = 1 << 20;

/// Yields the valid frames of a journal in order, checking seq continuity
/// within the journal. Segments wholly at or below `skip_upto` are not read.
pub(crate) struct Scanner<S: Storage = OsStorage> {
    storage: S,
    segments: Vec<SegmentFile>,
    index: usize,
    /// The segment being read and its length; `None` between segments.
    file: Option<(S::File, usize)>,
    /// Holds bytes `window_start..window_start + filled` of the open segment;
    /// grows only for a frame larger than it.
    window: Vec<u8>,
    /// Bytes read at a time ([`WINDOW_BYTES`] but in tests).
    window_bytes: usize,
    /// A multiple of [`FRAME_ALIGN`], so alignment within the window is
    /// alignment within the file.
    window_start: usize,
    filled: usize,
    /// File offset of the next frame.
    offset: usize,
    /// Last seq of the previous frame in the journal, if one was read.
    prev_last: Option<u64>,
    /// The hash chain after the last frame read (after the segment header's
    /// chain start before a segment's first frame).
    head: ChainHead,
    /// A snapshot the chain must agree with when it reaches its seq.
    expected: Option<(ChainHead, PathBuf)>,
    first_frame_of_segment: bool,
    skip_upto: u64,
    /// The durable point known so far: the newest snapshot's seq, then the
    /// largest durable seq of any frame read.
    durable_seq: u64,
    /// Set when the scan ended at a torn tail instead of clean end of data.
    pub torn: Option<TornTail>,
    pub bytes_read: u64,
}

impl Scanner<OsStorage> {
    /// A read-only scan of the journal in `dir` that skips records below
    /// `from_seq`: for the readers that are safe on a live journal
    /// (`read_records`, `read_frames`).
    pub fn reading(dir: &Path, from_seq: u64) -> Result<Scanner<OsStorage>, JournalError> {
        require_dir(&OsStorage, dir)?;
        Ok(Scanner::new(
            OsStorage,
            list_segments(&OsStorage, dir)?,
            from_seq.saturating_sub(1),
            snapshot_floor(&OsStorage, dir)?,
        ))
    }
}

impl<S: Storage> Scanner<S> {
    /// `snapshot_seq`: the newest snapshot in the directory, which was taken
    /// only after the journal was synced through it (0: none).
    pub fn new(
        storage: S,
        segments: Vec<SegmentFile>,
        skip_upto: u64,
        snapshot_seq: u64,
    ) -> Scanner<S> {
        let mut scanner = Scanner::with_window(storage, segments, skip_upto, WINDOW_BYTES);
        scanner.durable_seq = snapshot_seq;
        scanner
    }

    fn with_window(
        storage: S,
        segments: Vec<SegmentFile>,
        skip_upto: u64,
        window_bytes: usize,
    ) -> Scanner<S> {
        Scanner {
            storage,
            segments,
            index: 0,
            file: None,
            window: Vec::new(),
            window_bytes,
            window_start: 0,
            filled: 0,
            offset: 0,
            prev_last: None,
            head: ChainHead::GENESIS,
            expected: None,
            first_frame_of_segment: true,
            skip_upto,
            durable_seq: 0,
            torn: None,
            bytes_read: 0,
        }
    }

    /// The chain must pass through `head` (the chain head the snapshot at
    /// `path` records): a snapshot of another journal, or a journal altered
    /// before the snapshot's seq, is corruption.
    pub fn expect(&mut self, head: ChainHead, path: PathBuf) {
        self.expected = Some((head, path));
    }

    /// The chain after the last frame read: the journal's head once the
    /// scan has ended ([`ChainHead::GENESIS`] if nothing was read).
    pub fn head(&self) -> ChainHead {
        self.head
    }

    /// The encoded records of the frame `next_frame` returned last.
    pub fn records(&self, frame: &Frame) -> &[u8] {
        let (start, end) = frame.records;
        &self.window[start - self.window_start..end - self.window_start]
    }

    /// The whole frame `next_frame` returned last, header and padding
    /// included: the bytes replication publishes.
    pub fn frame_bytes(&self, frame: &Frame) -> &[u8] {
        &self.window[frame.offset - self.window_start..frame.next - self.window_start]
    }

    /// The file the last returned frame came from.
    pub fn path(&self) -> &Path {
        &self.segments[self.index].path
    }

    /// Whether segment `index` holds nothing above `skip_upto`: the next
    /// segment starts at or before the first seq wanted.
    fn covered(&self, index: usize) -> bool {
        self.segments
            .get(index + 1)
            .is_some_and(|next| next.first_seq <= self.skip_upto.saturating_add(1))
    }

    /// Total size of the segment files the scan will read, for progress
    /// reports. A file that cannot be examined counts as empty here; reading
    /// it reports the error.
    pub fn bytes_to_read(&self) -> u64 {
        (0..self.segments.len())
            .filter(|&i| !self.covered(i))
            .filter_map(|i| self.storage.info(&self.segments[i].path).ok())
            .map(|info| info.bytes)
            .sum()
    }

    fn load(&mut self) -> Result<(), JournalError> {
        let seg = &self.segments[self.index];
        let fail = |e| JournalError::io(&seg.path, "read journal segment", e);
        let file = self.storage.open(&seg.path, OpenMode::Read).map_err(fail)?;
        let file_bytes = file.size().map_err(fail)? as usize;
        self.file = Some((file, file_bytes));
        self.window_start = 0;
        self.filled = 0;
        self.fill(0, SEGMENT_HEADER_BYTES)?;
        let seg = &self.segments[self.index];
        let header = parse_segment_header(&self.window[..self.filled])
            .map_err(|e| JournalError::header(&seg.path, e))?;
        let first_seq = header.first_seq;
        if first_seq != seg.first_seq {
            return Err(JournalError::corrupt(
                &seg.path,
                16,
                format!(
                    "header says the segment starts at seq {first_seq}, its name says {}",
                    seg.first_seq
                ),
            ));
        }
        match self.prev_last {
            Some(prev) if first_seq <= prev => {
                return Err(JournalError::corrupt(
                    &seg.path,
                    16,
                    format!("segment starts at seq {first_seq}, not after the previous segment's last seq {prev}"),
                ));
            }
            // Follows the previous segment: the chain must go on unbroken.
            Some(prev) if first_seq == prev + 1 && header.chain_start != self.head.checksum => {
                return Err(JournalError::corrupt(
                    &seg.path,
                    24,
                    format!(
                        "the segment's chain start {:032x} is not the previous segment's chain head {} at seq {prev} \
                         (a segment replaced, or spliced in from another journal)",
                        header.chain_start, self.head
                    ),
                ));
            }
            _ if first_seq == 1 && header.chain_start != GENESIS => {
                return Err(JournalError::corrupt(
                    &seg.path,
                    24,
                    format!(
                        "the journal's first segment starts its chain at {:032x}, not at the genesis value {GENESIS:032x}",
                        header.chain_start
                    ),
                ));
            }
            _ => {}
        }
        self.head = ChainHead {
            seq: first_seq - 1,
            checksum: header.chain_start,
        };
        self.check_expected(24, None)?;
        self.offset = SEGMENT_HEADER_BYTES;
        self.first_frame_of_segment = true;
        Ok(())
    }

    /// Makes bytes `at..at + len` of the open segment (cut at its end)
    /// available in the window, keeping what it already holds from `at` on
    /// and reading at least a window's worth.
    fn fill(&mut self, at: usize, len: usize) -> Result<(), JournalError> {
        let Some((file, file_bytes)) = self.file.as_mut() else {
            unreachable!("fill without an open segment")
        };
        let end = at.saturating_add(len).min(*file_bytes);
        if at >= self.window_start && end <= self.window_start + self.filled {
            return Ok(());
        }
        let start = at & !(FRAME_ALIGN - 1);
        // Normally forward; back only to re-examine bad bytes.
        let kept = if start >= self.window_start {
            (self.window_start + self.filled).saturating_sub(start)
        } else {
            0
        };
        if kept > 0 {
            let from = start - self.window_start;
            self.window.copy_within(from..from + kept, 0);
        }
        self.window_start = start;
        self.filled = kept;
        let want = end
            .saturating_sub(start)
            .max(self.window_bytes)
            .min(file_bytes.saturating_sub(start));
        if self.window.len() < want {
            self.window.resize(want, 0);
        }
        while self.filled < want {
            let at = (start + self.filled) as u64;
            match file.read_at(&mut self.window[self.filled..want], at) {
                // The file shrank under us: its end is here now.
                Ok(0) => {
                    *file_bytes = start + self.filled;
                    break;
                }
                Ok(n) => {
                    self.filled += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    let path = &self.segments[self.index].path;
                    return Err(JournalError::io(path, "read journal segment", e));
                }
            }
        }
        Ok(())
    }

    fn file_bytes(&self) -> usize {
        self.file.as_ref().map_or(0, |&(_, len)| len)
    }

    /// What is at file offset `at`, with the whole frame in the window if
    /// its length field is plausible, so `parse_frame` sees either the
    /// complete frame or the real end of the file.
    fn frame_at(&mut self, at: usize) -> Result<Parsed, JournalError> {
        self.fill(at, FRAME_HEADER_BYTES)?;
        let filled = &self.window[..self.filled];
        if let Some(frame_bytes) = frame_length_at(filled, at - self.window_start) {
            if frame_bytes <= FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX {
                self.fill(at, align_up(frame_bytes))?;
            }
        }
        let base = self.window_start;
        Ok(match parse_frame(&self.window[..self.filled], at - base) {
            Parsed::Frame(f) => Parsed::Frame(Frame {
                offset: f.offset + base,
                records: (f.records.0 + base, f.records.1 + base),
                next: f.next + base,
                ..f
            }),
            other => other,
        })
    }

    /// The file offset of the first non-zero byte from `at` to the end of
    /// the open segment, if any.
    fn first_nonzero(&mut self, mut at: usize) -> Result<Option<usize>, JournalError> {
        loop {
            self.fill(at, self.window_bytes)?;
            let rel = (at - self.window_start).min(self.filled);
            if let Some(nz) = first_nonzero(&self.window[rel..self.filled]) {
                return Ok(Some(at + nz));
            }
            at = self.window_start + self.filled;
            if at >= self.file_bytes() {
                return Ok(None);
            }
        }
    }

    /// The next valid frame, `None` at the end of the journal (check `torn`),
    /// or `Corrupt` when bad bytes are followed by good data.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, JournalError> {
        loop {
            if self.file.is_none() {
                if self.index >= self.segments.len() {
                    return Ok(None);
                }
                if self.covered(self.index) {
                    self.index += 1;
                    continue;
                }
                self.load()?;
            }
            let at = self.offset;
            let reason = match self.frame_at(at)? {
                Parsed::Frame(frame) => {
                    self.check_order(&frame)?;
                    self.check_chain(&frame)?;
                    self.durable_seq = self.durable_seq.max(frame.durable_seq);
                    self.prev_last = Some(frame.last_seq());
                    self.first_frame_of_segment = false;
                    self.offset = frame.next;
                    return Ok(Some(frame));
                }
                Parsed::End => match self.first_nonzero(at)? {
                    None => {
                        self.file = None;
                        self.index += 1;
                        continue;
                    }
                    Some(nz) => {
                        format!("end-of-data marker followed by non-zero bytes at offset {nz}")
                    }
                },
                Parsed::Bad(reason) => reason,
            };
            return self.bad_at(at, reason);
        }
    }

    /// A valid frame whose parent is not the chain's head was not written
    /// after the frame before it: a frame was dropped, duplicated, moved or
    /// spliced in from another journal. Never a torn write (a torn frame's
    /// own checksum fails), so always corruption.
    fn check_chain(&mut self, frame: &Frame) -> Result<(), JournalError> {
        if frame.parent != self.head.checksum {
            return Err(JournalError::corrupt(
                self.path(),
                frame.offset,
                format!(
                    "chain broken: the frame (seqs from {}) names parent {:032x}, but the chain head before it is {} at seq {} \
                     (a frame dropped, duplicated, reordered or spliced in from another journal)",
                    frame.first_seq, frame.parent, self.head, self.head.seq
                ),
            ));
        }
        if frame.is_mark() {
            return Ok(());
        }
        self.head = ChainHead {
            seq: frame.last_seq(),
            checksum: frame.checksum,
        };
        self.check_expected(frame.offset, Some(frame))
    }

    /// Checks the snapshot's chain head once the chain reaches its seq
    /// (`at`: where in the current file the chain got there).
    fn check_expected(&mut self, at: usize, frame: Option<&Frame>) -> Result<(), JournalError> {
        let Some((expected, snapshot)) = &self.expected else {
            return Ok(());
        };
        if self.head.seq < expected.seq {
            return Ok(());
        }
        if self.head.seq > expected.seq && frame.is_none() {
            // A segment starting after a gap past the snapshot: the records
            // in between are missing, which the reader reports with them.
            self.expected = None;
            return Ok(());
        }
        let problem = if self.head.seq == expected.seq {
            (self.head.checksum != expected.checksum).then(|| {
                format!(
                    "the chain head at seq {} is {}, but snapshot {} records {expected}: \
                     the snapshot is not of this journal, or the journal was altered up to its seq",
                    self.head.seq,
                    self.head,
                    snapshot.display()
                )
            })
        } else {
            let first = frame.map_or(self.head.seq, |f| f.first_seq);
            Some(format!(
                "snapshot {} is at seq {}, inside the frame holding seqs {first}..={}, where the journal has no chain value to check it against",
                snapshot.display(),
                expected.seq,
                self.head.seq
            ))
        };
        self.expected = None;
        match problem {
            Some(reason) => Err(JournalError::corrupt(self.path(), at, reason)),
            None => Ok(()),
        }
    }

    fn check_order(&self, frame: &Frame) -> Result<(), JournalError> {
        let expected = if self.first_frame_of_segment {
            self.segments[self.index].first_seq
        } else {
            self.prev_last.map_or(frame.first_seq, |p| p + 1)
        };
        if frame.first_seq != expected {
            return Err(JournalError::corrupt(
                self.path(),
                frame.offset,
                format!(
                    "frame starts at seq {}, expected {expected} (sequence gap or reordering)",
                    frame.first_seq
                ),
            ));
        }
        Ok(())
    }

    /// Bad bytes at `at`: a torn tail only if this is the last segment and
    /// the records they held lie beyond the durable point: after the newest
    /// snapshot, and no valid frame after them was written once they had been
    /// synced (valid frames of the same unsynced group may follow: a power
    /// loss persists a group's pages in any order). Anything else is
    /// corruption.
    fn bad_at(&mut self, at: usize, reason: String) -> Result<Option<Frame>, JournalError> {
        if self.index + 1 < self.segments.len() {
            return Err(JournalError::corrupt(
                self.path(),
                at,
                format!(
                    "{reason}; later segments follow ({}), so this is not a torn tail",
                    self.segments[self.index + 1].path.display()
                ),
            ));
        }
        // The first seq the bad bytes would hold.
        let first_lost = match self.prev_last {
            Some(prev) if !self.first_frame_of_segment => prev + 1,
            _ => self.segments[self.index].first_seq,
        };
        if first_lost <= self.durable_seq {
            return Err(JournalError::corrupt(
                self.path(),
                at,
                format!(
                    "{reason}; the records from seq {first_lost} on were durable (the durable point is seq {}: a snapshot or a synced frame says so), \
                     so this is damage, not a torn write",
                    self.durable_seq
                ),
            ));
        }
        // Rare and at most once per scan: the rest of the segment in memory.
        let file_bytes = self.file_bytes();
        self.fill(at, file_bytes.saturating_sub(at))?;
        let base = self.window_start;
        let mut from = at - base + 1;
        while let Some(good) = find_valid_frame(&self.window[..self.filled], from) {
            let frame = match parse_frame(&self.window[..self.filled], good) {
                Parsed::Frame(frame) => frame,
                _ => unreachable!("find_valid_frame returns valid frames"),
            };
            if frame.durable_seq >= first_lost {
                return Err(JournalError::corrupt(
                    self.path(),
                    at,
                    format!(
                        "{reason}; the valid frame at byte offset {} was written after seq {} was synced, \
                         so the records from seq {first_lost} on were durable: this is damage, not a torn write",
                        good + base,
                        frame.durable_seq
                    ),
                ));
            }
            from = good + FRAME_ALIGN;
        }
        self.torn = Some(TornTail {
            path: self.path().to_path_buf(),
            offset: at,
            file_bytes: self.file_bytes(),
            reason,
            durable_seq: self.durable_seq,
        });
        self.file = None;
        self.index = self.segments.len();
        Ok(None)
    }
}

/// The index of the first non-zero byte, a page at a time (OR-folding a
/// page vectorizes; a byte-wise search does not).
fn first_nonzero(bytes: &[u8]) -> Option<usize> {
    const PAGE: usize = 4096;
    let page = bytes
        .chunks(PAGE)
        .position(|c| c.iter().fold(0, |acc, &b| acc | b) != 0)?;
    let at = page * PAGE;
    bytes[at..].iter().position(|&b| b != 0).map(|i| at + i)
}

/// Decodes a frame's records (`bytes`, from [`Scanner::records`]) onto the
/// end of `out`, checking that there are exactly `count` of them with
/// consecutive seqs from the frame's first. A frame with a good CRC that
/// fails here was written wrong, so this is corruption, never a torn tail.
pub(crate) fn decode_frame(
    bytes: &[u8],
    frame: &Frame,
    path: &Path,
    out: &mut Vec<Stamped>,
) -> Result<(), JournalError> {
    let base = frame.records.0;
    let mut pos = 0;
    for i in 0..u64::from(frame.count) {
        let Some((stamped, used)) = decode_record(&bytes[pos..]) else {
            let why = match bincode::decode_from_slice::<Stamped, _>(&bytes[pos..], BINCODE) {
                Err(e) => e.to_string(),
                Ok(_) => "bincode disagrees with the record decoder (a bug)".to_string(),
            };
            return Err(JournalError::corrupt(
                path,
                base + pos,
                format!(
                    "record {i} of the frame at {} does not decode: {why}",
                    frame.offset
                ),
            ));
        };
        let expected = frame.first_seq + i;
        if stamped.stamp.seq != expected {
            return Err(JournalError::corrupt(
                path,
                base + pos,
                format!("record has seq {}, expected {expected}", stamped.stamp.seq),
            ));
        }
        out.push(stamped);
        pos += used;
    }
    if pos != bytes.len() {
        return Err(JournalError::corrupt(
            path,
            base + pos,
            format!(
                "{} unexplained bytes after the frame's {} records",
                bytes.len() - pos,
                frame.count
            ),
        ));
    }
    Ok(())
}

/// Decodes one frame that travelled alone (a replicated frame, see
/// `crate::replication`): the same checks as a scan of a segment, plus that
/// the bytes hold exactly one frame of records. `what` names its origin in
/// errors (e.g. the stream and its sequence). Returns the frame's header
/// fields, for the caller to check its parent against the chain it extends.
#[cfg(feature = "nats")]
pub(crate) fn decode_lone_frame(
    bytes: &[u8],
    what: &Path,
    out: &mut Vec<Stamped>,
) -> Result<Frame, JournalError> {
    let frame = match parse_frame(bytes, 0) {
        Parsed::Frame(frame) => frame,
        Parsed::End => return Err(JournalError::corrupt(what, 0, "empty frame")),
        Parsed::Bad(why) => return Err(JournalError::corrupt(what, 0, why)),
    };
    if frame.count == 0 || frame.next != bytes.len() {
        return Err(JournalError::corrupt(
            what,
            frame.next,
            format!(
                "expected one frame of records, found {} records in {} of {} bytes",
                frame.count,
                frame.next,
                bytes.len()
            ),
        ));
    }
    decode_frame(&bytes[frame.records.0..frame.records.1], &frame, what, out)?;
    Ok(frame)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Durability, JournalConfig, JournalWriter};
    use crate::request::{Request, Stamp};
    use std::fs;

    /// A frame as a scan saw it: first seq, count, offset, record bytes.
    type Seen = (u64, u32, usize, Vec<u8>);

    /// Everything a scan yields: each frame, then how it ended.
    fn scan(dir: &Path, window_bytes: usize) -> (Vec<Seen>, String) {
        let mut scanner = Scanner::with_window(
            OsStorage,
            list_segments(&OsStorage, dir).unwrap(),
            0,
            window_bytes,
        );
        let mut frames = Vec::new();
        let end = loop {
            match scanner.next_frame() {
                Ok(Some(f)) => {
                    let records = scanner.records(&f).to_vec();
                    frames.push((f.first_seq, f.count, f.offset, records));
                }
                Ok(None) => {
                    break format!("end; {:?}", scanner.torn.as_ref().map(TornTail::describe))
                }
                Err(e) => break format!("error: {e}"),
            }
        };
        (frames, end)
    }

    /// A 64 MiB window holds a whole test segment, as the scanner did before
    /// it read in windows: every smaller window must see exactly the same.
    #[test]
    fn any_read_window_sees_what_a_whole_segment_buffer_sees() {
        let tmp = tempfile::tempdir().unwrap();
        let template = tmp.path().join("template");
        let config = JournalConfig {
            segment_bytes: 8 << 10,
            durability: Durability::Async,
        };
        let mut writer = JournalWriter::open(&template, config).unwrap();
        let mut seq = 0;
        for len in [
            1, 7, 3, 150, 2, 40, 1, 1, 90, 5, 33, 12, 260, 4, 9, 2, 6, 1, 3,
        ] {
            let batch: Vec<Stamped> = (0..len)
                .map(|i| {
                    seq += 1;
                    let stamp = Stamp {
                        seq,
                        time_ms: seq,
                        session: 1,
                        req: 0,
                    };
                    let request = if i % 3 == 0 {
                        Request::Tick
                    } else {
                        Request::Deposit {
                            account: seq % 7,
                            amount: seq as i64,
                        }
                    };
                    Stamped::new(stamp, request)
                })
                .collect();
            writer.append(&batch).unwrap();
        }
        drop(writer);
        let files: Vec<(PathBuf, Vec<u8>)> = list_segments(&OsStorage, &template)
            .unwrap()
            .into_iter()
            .map(|s| (s.path.clone(), fs::read(&s.path).unwrap()))
            .collect();
        assert!(files.len() >= 3, "some frames are larger than a segment");

        let mut state = 0x1234_5678_9abc_def1u64;
        let mut random = |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        for round in 0..240 {
            let dir = tmp.path().join(format!("round-{round}"));
            fs::create_dir(&dir).unwrap();
            for (path, bytes) in &files {
                fs::write(dir.join(path.file_name().unwrap()), bytes).unwrap();
            }
            if round > 0 {
                // Half the damage in the last segment, where it may be a torn tail.
                let file = match round % 2 {
                    0 => files.len() - 1,
                    _ => random(files.len()),
                };
                let (path, bytes) = &files[file];
                let mut bytes = bytes.clone();
                match round / 2 % 3 {
                    0 => bytes.truncate(random(bytes.len())),
                    1 => {
                        let at = random(bytes.len());
                        bytes[at] ^= 1 << random(8);
                    }
                    _ => {
                        let at = bytes.len() - 1 - random(bytes.len() / 2);
                        bytes[at] = 0x5a;
                    }
                }
                fs::write(dir.join(path.file_name().unwrap()), &bytes).unwrap();
            }
            let whole = scan(&dir, 64 << 20);
            if round == 0 {
                assert_eq!(whole.0.len(), 19);
                assert_eq!(whole.1, "end; None");
            }
            for window_bytes in [1, 8, 24, 100, 1000, 4096] {
                assert_eq!(
                    scan(&dir, window_bytes),
                    whole,
                    "round {round}, window {window_bytes}"
                );
            }
            fs::remove_dir_all(&dir).unwrap();
        }
    }
}
