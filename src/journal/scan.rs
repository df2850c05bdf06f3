//! Walking the segments frame by frame, deciding at the first bad byte whether
//! it is a torn tail (truncate and go on) or corruption (stop, touch nothing).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use super::error::JournalError;
use super::format::{
    find_valid_frame, parse_frame, parse_segment_header, Frame, Parsed, BINCODE,
    SEGMENT_HEADER_BYTES,
};
use crate::request::Stamped;

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
/// missing directory is an empty journal.
pub(crate) fn list_numbered(dir: &Path, suffix: &str) -> Result<Vec<(u64, PathBuf)>, JournalError> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(JournalError::io(dir, "list the journal directory", e)),
    };
    let mut found = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| JournalError::io(dir, "list the journal directory", e))?;
        if let Some(seq) = entry
            .file_name()
            .to_str()
            .and_then(|n| seq_from_name(n, suffix))
        {
            found.push((seq, entry.path()));
        }
    }
    found.sort();
    Ok(found)
}

pub(crate) fn list_segments(dir: &Path) -> Result<Vec<SegmentFile>, JournalError> {
    Ok(list_numbered(dir, ".seg")?
        .into_iter()
        .map(|(first_seq, path)| SegmentFile { path, first_seq })
        .collect())
}

/// Where the valid data of the last segment ends and why the bytes after it
/// are not a frame.
#[derive(Debug)]
pub(crate) struct TornTail {
    pub path: PathBuf,
    pub offset: usize,
    pub file_bytes: usize,
    pub reason: String,
}

impl TornTail {
    pub fn describe(&self) -> String {
        format!(
            "torn tail in {} at byte offset {}: {} ({} bytes after it were never acknowledged)",
            self.path.display(),
            self.offset,
            self.reason,
            self.file_bytes - self.offset
        )
    }
}

/// Yields the valid frames of a journal in order, checking seq continuity
/// within the journal. Segments wholly at or below `skip_upto` are not read.
pub(crate) struct Scanner {
    segments: Vec<SegmentFile>,
    index: usize,
    loaded: bool,
    buf: Vec<u8>,
    offset: usize,
    /// Last seq of the previous frame in the journal, if one was read.
    prev_last: Option<u64>,
    first_frame_of_segment: bool,
    skip_upto: u64,
    /// Set when the scan ended at a torn tail instead of clean end of data.
    pub torn: Option<TornTail>,
    pub bytes_read: u64,
}

impl Scanner {
    pub fn new(segments: Vec<SegmentFile>, skip_upto: u64) -> Scanner {
        Scanner {
            segments,
            index: 0,
            loaded: false,
            buf: Vec::new(),
            offset: 0,
            prev_last: None,
            first_frame_of_segment: true,
            skip_upto,
            torn: None,
            bytes_read: 0,
        }
    }

    /// The segment buffer the last returned frame's offsets point into.
    pub fn buf(&self) -> &[u8] {
        &self.buf
    }

    /// The file the last returned frame came from.
    pub fn path(&self) -> &Path {
        &self.segments[self.index].path
    }

    fn load(&mut self) -> Result<(), JournalError> {
        let seg = &self.segments[self.index];
        self.buf.clear();
        fs::File::open(&seg.path)
            .and_then(|mut f| f.read_to_end(&mut self.buf))
            .map_err(|e| JournalError::io(&seg.path, "read journal segment", e))?;
        self.bytes_read += self.buf.len() as u64;
        let first_seq =
            parse_segment_header(&self.buf).map_err(|e| JournalError::header(&seg.path, e))?;
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
        if let Some(prev) = self.prev_last {
            if first_seq <= prev {
                return Err(JournalError::corrupt(
                    &seg.path,
                    16,
                    format!("segment starts at seq {first_seq}, not after the previous segment's last seq {prev}"),
                ));
            }
        }
        self.offset = SEGMENT_HEADER_BYTES;
        self.loaded = true;
        self.first_frame_of_segment = true;
        Ok(())
    }

    /// The next valid frame, `None` at the end of the journal (check `torn`),
    /// or `Corrupt` when bad bytes are followed by good data.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, JournalError> {
        loop {
            if !self.loaded {
                if self.index >= self.segments.len() {
                    return Ok(None);
                }
                let covered = self
                    .segments
                    .get(self.index + 1)
                    .is_some_and(|next| next.first_seq <= self.skip_upto.saturating_add(1));
                if covered {
                    self.index += 1;
                    continue;
                }
                self.load()?;
            }
            let at = self.offset;
            let reason = match parse_frame(&self.buf, at) {
                Parsed::Frame(frame) => {
                    self.check_order(&frame)?;
                    self.prev_last = Some(frame.last_seq());
                    self.first_frame_of_segment = false;
                    self.offset = frame.next;
                    return Ok(Some(frame));
                }
                Parsed::End => match self.buf[at.min(self.buf.len())..]
                    .iter()
                    .position(|&b| b != 0)
                {
                    None => {
                        self.loaded = false;
                        self.index += 1;
                        continue;
                    }
                    Some(nz) => format!(
                        "end-of-data marker followed by non-zero bytes at offset {}",
                        at + nz
                    ),
                },
                Parsed::Bad(reason) => reason,
            };
            return self.bad_at(at, reason);
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

    /// Bad bytes at `at`: a torn tail only if this is the last segment and no
    /// valid frame follows; anything else is corruption.
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
        if let Some(good) = find_valid_frame(&self.buf, at + 1) {
            return Err(JournalError::corrupt(
                self.path(),
                at,
                format!("{reason}; a valid frame follows at byte offset {good}"),
            ));
        }
        self.torn = Some(TornTail {
            path: self.path().to_path_buf(),
            offset: at,
            file_bytes: self.buf.len(),
            reason,
        });
        self.loaded = false;
        self.index = self.segments.len();
        Ok(None)
    }
}

/// Decodes a frame's records onto the end of `out`, checking that there
/// are exactly `count` of them with consecutive seqs from the frame's first.
/// A frame with a good CRC that fails here was written wrong, so this is
/// corruption, never a torn tail.
pub(crate) fn decode_frame(
    buf: &[u8],
    frame: &Frame,
    path: &Path,
    out: &mut Vec<Stamped>,
) -> Result<(), JournalError> {
    let (mut pos, end) = frame.records;
    for i in 0..u64::from(frame.count) {
        let (stamped, used): (Stamped, usize) = bincode::decode_from_slice(&buf[pos..end], BINCODE)
            .map_err(|e| {
                JournalError::corrupt(
                    path,
                    pos,
                    format!(
                        "record {i} of the frame at {} does not decode: {e}",
                        frame.offset
                    ),
                )
            })?;
        let expected = frame.first_seq + i;
        if stamped.stamp.seq != expected {
            return Err(JournalError::corrupt(
                path,
                pos,
                format!("record has seq {}, expected {expected}", stamped.stamp.seq),
            ));
        }
        out.push(stamped);
        pos += used;
    }
    if pos != end {
        return Err(JournalError::corrupt(
            path,
            pos,
            format!(
                "{} unexplained bytes after the frame's {} records",
                end - pos,
                frame.count
            ),
        ));
    }
    Ok(())
}
