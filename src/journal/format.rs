//! The bytes on disk: segment and snapshot headers, batch frames, and the one
//! bincode configuration every record goes through. See `journal/README.md`.

use crate::book::{Side, Stp, Tif};
use crate::outcome::ErrorCode;
use crate::request::{InstrumentId, Request, SessionName, Stamp, Stamped, Symbol};

/// Fixed-width little-endian integers: a record's size depends only on its
/// variant, and decoding never has to guess a varint's length.
pub(crate) const BINCODE: bincode::config::Configuration<
    bincode::config::LittleEndian,
    bincode::config::Fixint,
    bincode::config::NoLimit,
> = bincode::config::standard().with_fixed_int_encoding();

/// The on-disk format this build writes and the only one it reads. Version 2
/// journaled session records; version 3 added the durable seq and the kind
/// to frame headers (and the clean-shutdown mark); version 4 chains every
/// frame to the one before it with a 128-bit checksum, which segment and
/// snapshot headers record too. Older journals are refused by name.
pub const FORMAT_VERSION: u32 = 4;

pub(crate) const SEGMENT_MAGIC: [u8; 8] = *b"RLJSEG\0\0";
pub(crate) const SNAPSHOT_MAGIC: [u8; 8] = *b"RLJSNAP\0";

/// Segment header: magic, version, reserved, first seq, chain start (the
/// chain's value before the segment's first frame), CRC-32C of the first 40
/// bytes, reserved.
pub(crate) const SEGMENT_HEADER_BYTES: usize = 48;
/// Snapshot header: magic, version, reserved, last seq, payload length,
/// chain head at the last seq, CRC-32C of the payload, CRC-32C of the first
/// 52 header bytes.
pub(crate) const SNAPSHOT_HEADER_BYTES: usize = 56;

/// Frame header: checksum (u128), frame length (u32), record count (u32),
/// kind (u32), reserved (u32), first seq (u64), durable seq (u64), parent
/// (u128). The checksum covers everything after it but the padding.
pub(crate) const FRAME_HEADER_BYTES: usize = 64;
/// Where the frame length sits: after the checksum, so a reader can learn
/// how many bytes to hash before it hashes them.
const FRAME_LENGTH_AT: usize = 16;

/// The chain's value before a journal's first frame, so that the first
/// frame's parent is a defined value like every other's.
pub const GENESIS: u128 = xxhash_rust::const_xxh3::xxh3_128(b"ringledger journal genesis");

/// Where the journal's hash chain stands after the frame that holds `seq`:
/// that frame's checksum, which the next frame names as its parent. Clean-
/// shutdown marks are checked against it but do not move it, so it is a
/// function of the records alone.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChainHead {
    /// The last seq the chain covers (0: none yet).
    pub seq: u64,
    pub checksum: u128,
}

impl ChainHead {
    /// Before any record.
    pub const GENESIS: ChainHead = ChainHead {
        seq: 0,
        checksum: GENESIS,
    };
}

impl std::fmt::Display for ChainHead {
    /// 32 hex digits: what an auditor compares with a head published earlier.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.checksum)
    }
}

/// A frame's checksum: XXH3-128 of its bytes after the checksum field (see
/// `journal/README.md`, "Why XXH3-128", for the measurement that chose it).
#[inline]
pub(crate) fn frame_checksum(covered: &[u8]) -> u128 {
    xxhash_rust::xxh3::xxh3_128(covered)
}
/// Frame kind: a batch of records.
const KIND_RECORDS: u32 = 0;
/// Frame kind: the clean-shutdown mark, no records, written and synced last
/// by a writer that closed cleanly. Its durable seq is the journal's last.
const KIND_CLEAN_SHUTDOWN: u32 = 1;
/// Frames start on 8-byte boundaries, so a scan for good frames after a bad
/// one only has to try one offset in eight.
pub(crate) const FRAME_ALIGN: usize = 8;
/// The largest frame body a reader accepts. A length field above this is
/// damage, not a batch, and must not make the reader allocate or skip far.
pub const FRAME_BODY_BYTES_MAX: usize = 1 << 30;
/// The largest frame length field a reader accepts (header included).
const FRAME_BYTES_MAX: usize = FRAME_HEADER_BYTES + FRAME_BODY_BYTES_MAX;
/// The smallest encoded `Stamped` (stamp 32 bytes + variant tag 4 bytes), used
/// to reject record counts that cannot fit in a frame's length.
pub(crate) const RECORD_BYTES_MIN: usize = 36;

pub(crate) fn align_up(n: usize) -> usize {
    (n + FRAME_ALIGN - 1) & !(FRAME_ALIGN - 1)
}

pub(crate) fn u32_at(buf: &[u8], at: usize) -> u32 {
    let mut b = [0u8; 4];
    b.copy_from_slice(&buf[at..at + 4]);
    u32::from_le_bytes(b)
}

pub(crate) fn u64_at(buf: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&buf[at..at + 8]);
    u64::from_le_bytes(b)
}

pub(crate) fn u128_at(buf: &[u8], at: usize) -> u128 {
    let mut b = [0u8; 16];
    b.copy_from_slice(&buf[at..at + 16]);
    u128::from_le_bytes(b)
}

/// The durable seq and parent the frame header at the start of `buf`
/// records, unchecked (None: `buf` is shorter than a header).
pub(crate) fn frame_links(buf: &[u8]) -> Option<(u64, u128)> {
    (buf.len() >= FRAME_HEADER_BYTES).then(|| (u64_at(buf, 40), u128_at(buf, 48)))
}

/// The length field of the frame at `at`, if the buffer holds it.
pub(crate) fn frame_length_at(buf: &[u8], at: usize) -> Option<usize> {
    let field = at + FRAME_LENGTH_AT;
    (field + 4 <= buf.len()).then(|| u32_at(buf, field) as usize)
}

/// `chain_start`: the chain's value before the segment's first frame.
pub(crate) fn segment_header(first_seq: u64, chain_start: u128) -> [u8; SEGMENT_HEADER_BYTES] {
    let mut h = [0u8; SEGMENT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SEGMENT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&first_seq.to_le_bytes());
    h[24..40].copy_from_slice(&chain_start.to_le_bytes());
    let crc = crc32c::crc32c(&h[0..40]);
    h[40..44].copy_from_slice(&crc.to_le_bytes());
    h
}

/// What a header check found wrong, before the caller adds the file name.
#[derive(Debug)]
pub(crate) enum HeaderError {
    Short(usize),
    Magic([u8; 8]),
    Version(u32),
    Crc,
    /// A reserved field is not zero.
    Reserved,
}

/// Checks a header's magic and version in that order, so a file from another
/// program or a newer build is named as such rather than as "corrupt".
pub(crate) fn check_magic_version(
    buf: &[u8],
    magic: [u8; 8],
    header_bytes: usize,
) -> Result<(), HeaderError> {
    if buf.len() < header_bytes {
        return Err(HeaderError::Short(buf.len()));
    }
    let mut found = [0u8; 8];
    found.copy_from_slice(&buf[0..8]);
    if found != magic {
        return Err(HeaderError::Magic(found));
    }
    let version = u32_at(buf, 8);
    if version != FORMAT_VERSION {
        return Err(HeaderError::Version(version));
    }
    Ok(())
}

/// A segment header's fields once its CRC holds.
#[derive(Clone, Copy, Debug)]
pub(crate) struct SegmentHeader {
    pub first_seq: u64,
    /// The chain's value before the segment's first frame.
    pub chain_start: u128,
}

pub(crate) fn parse_segment_header(buf: &[u8]) -> Result<SegmentHeader, HeaderError> {
    check_magic_version(buf, SEGMENT_MAGIC, SEGMENT_HEADER_BYTES)?;
    if crc32c::crc32c(&buf[0..40]) != u32_at(buf, 40) {
        return Err(HeaderError::Crc);
    }
    if u32_at(buf, 12) != 0 || u32_at(buf, 44) != 0 {
        return Err(HeaderError::Reserved);
    }
    Ok(SegmentHeader {
        first_seq: u64_at(buf, 16),
        chain_start: u128_at(buf, 24),
    })
}

/// `head`: the chain at `head.seq`, the snapshot's last seq.
pub(crate) fn snapshot_header(head: ChainHead, payload: &[u8]) -> [u8; SNAPSHOT_HEADER_BYTES] {
    let mut h = [0u8; SNAPSHOT_HEADER_BYTES];
    h[0..8].copy_from_slice(&SNAPSHOT_MAGIC);
    h[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h[16..24].copy_from_slice(&head.seq.to_le_bytes());
    h[24..32].copy_from_slice(&(payload.len() as u64).to_le_bytes());
    h[32..48].copy_from_slice(&head.checksum.to_le_bytes());
    h[48..52].copy_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    let crc = crc32c::crc32c(&h[0..52]);
    h[52..56].copy_from_slice(&crc.to_le_bytes());
    h
}

/// A snapshot header's fields once its own CRC holds.
pub(crate) struct SnapshotHeader {
    /// The last seq and the journal's chain there.
    pub head: ChainHead,
    pub payload_bytes: u64,
    pub payload_crc: u32,
}

pub(crate) fn parse_snapshot_header(buf: &[u8]) -> Result<SnapshotHeader, HeaderError> {
    check_magic_version(buf, SNAPSHOT_MAGIC, SNAPSHOT_HEADER_BYTES)?;
    if crc32c::crc32c(&buf[0..52]) != u32_at(buf, 52) {
        return Err(HeaderError::Crc);
    }
    if u32_at(buf, 12) != 0 {
        return Err(HeaderError::Reserved);
    }
    Ok(SnapshotHeader {
        head: ChainHead {
            seq: u64_at(buf, 16),
            checksum: u128_at(buf, 32),
        },
        payload_bytes: u64_at(buf, 24),
        payload_crc: u32_at(buf, 48),
    })
}

/// Encodes `batch` as one frame into `buf` (cleared first, capacity kept), so
/// the writer hands the kernel one contiguous buffer and allocates nothing
/// once `buf` has grown to the largest batch. `durable_seq`: every record up
/// to it was fdatasynced before this frame is written (see "Durable point" in
/// `journal/README.md`). `parent`: the chain's value before this frame.
/// Returns the frame's checksum, the chain's value after it.
pub(crate) fn encode_frame(
    batch: &[Stamped],
    durable_seq: u64,
    parent: u128,
    buf: &mut Vec<u8>,
) -> Result<u128, String> {
    buf.clear();
    buf.resize(FRAME_HEADER_BYTES, 0);
    for stamped in batch {
        bincode::encode_into_std_write(stamped, buf, BINCODE)
            .map_err(|e| format!("cannot encode seq {}: {e}", stamped.stamp.seq))?;
    }
    let body_bytes = buf.len() - FRAME_HEADER_BYTES;
    if body_bytes > FRAME_BODY_BYTES_MAX {
        return Err(format!(
            "batch of {} records encodes to {body_bytes} bytes, above the frame limit of {FRAME_BODY_BYTES_MAX}; split it",
            batch.len()
        ));
    }
    let count = u32::try_from(batch.len()).map_err(|_| "batch has more than u32::MAX records")?;
    let first_seq = batch.first().map_or(0, |s| s.stamp.seq);
    Ok(finish_frame(
        buf,
        count,
        KIND_RECORDS,
        first_seq,
        durable_seq,
        parent,
    ))
}

/// Encodes the clean-shutdown mark into `buf`: no records, first seq the seq
/// after the journal's last record, durable seq that last record (the
/// writer syncs before and after writing it), parent the chain's head.
pub(crate) fn encode_clean_shutdown(next_seq: u64, parent: u128, buf: &mut Vec<u8>) {
    buf.clear();
    buf.resize(FRAME_HEADER_BYTES, 0);
    finish_frame(buf, 0, KIND_CLEAN_SHUTDOWN, next_seq, next_seq - 1, parent);
}

pub(crate) fn finish_frame(
    buf: &mut Vec<u8>,
    count: u32,
    kind: u32,
    first_seq: u64,
    durable_seq: u64,
    parent: u128,
) -> u128 {
    let frame_bytes = buf.len() as u32;
    buf[16..20].copy_from_slice(&frame_bytes.to_le_bytes());
    buf[20..24].copy_from_slice(&count.to_le_bytes());
    buf[24..28].copy_from_slice(&kind.to_le_bytes());
    buf[32..40].copy_from_slice(&first_seq.to_le_bytes());
    buf[40..48].copy_from_slice(&durable_seq.to_le_bytes());
    buf[48..64].copy_from_slice(&parent.to_le_bytes());
    let checksum = frame_checksum(&buf[16..]);
    buf[0..16].copy_from_slice(&checksum.to_le_bytes());
    buf.resize(align_up(buf.len()), 0);
    checksum
}

/// Decodes one record exactly as `bincode::decode_from_slice(bytes, BINCODE)`
/// would, returning the record and the bytes it used, or `None` wherever
/// bincode would return an error (ask bincode then, for the reason).
///
/// By hand because replay decodes every record of the journal: bincode's
/// generic decoder took ~14 ns per 55-byte record here, mostly moving its
/// large `Result`s around; this reads the fixed-width layout (see
/// `journal/README.md`) directly. A test holds the two to the same answers.
#[inline]
pub(crate) fn decode_record(bytes: &[u8]) -> Option<(Stamped, usize)> {
    let mut r = RecordReader { bytes, at: 0 };
    let stamp = Stamp {
        seq: r.u64()?,
        time_ms: r.u64()?,
        session: r.u64()?,
        req: r.u64()?,
    };
    let request = match r.u32()? {
        0 => Request::OpenAccount { account: r.u64()? },
        1 => Request::Deposit {
            account: r.u64()?,
            amount: r.i64()?,
        },
        2 => Request::Withdraw {
            account: r.u64()?,
            amount: r.i64()?,
        },
        3 => Request::Transfer {
            from: r.u64()?,
            to: r.u64()?,
            amount: r.i64()?,
        },
        4 => Request::Balance { account: r.u64()? },
        5 => Request::History {
            account: r.u64()?,
            limit: r.u32()?,
        },
        6 => Request::ListInstrument {
            symbol: Symbol::from_bytes(r.array()?),
            supply: r.u64()?,
            price: r.i64()?,
        },
        7 => Request::Instrument {
            instrument: InstrumentId(r.u32()?),
        },
        8 => Request::Reserve {
            reservation: r.u64()?,
            account: r.u64()?,
            instrument: InstrumentId(r.u32()?),
            qty: r.u64()?,
            ttl_ms: r.u64()?,
            partial: r.bool()?,
        },
        9 => Request::Confirm {
            reservation: r.u64()?,
        },
        10 => Request::Cancel {
            reservation: r.u64()?,
        },
        11 => Request::Holdings { account: r.u64()? },
        12 => Request::Tick,
        13 => Request::Digest,
        14 => Request::CreditRebate {
            deposit_seq: r.u64()?,
            amount: r.i64()?,
        },
        15 => Request::OpenSession {
            name: SessionName::from_bytes(r.array()?),
        },
        16 => Request::CloseSession,
        17 => Request::Rejected {
            code: *ErrorCode::ALL.get(r.u32()? as usize)?,
        },
        18 => Request::Place {
            order: r.u64()?,
            account: r.u64()?,
            instrument: InstrumentId(r.u32()?),
            side: *[Side::Buy, Side::Sell].get(r.u32()? as usize)?,
            market: r.bool()?,
            tif: *[Tif::Gtc, Tif::Ioc, Tif::Fok].get(r.u32()? as usize)?,
            post_only: r.bool()?,
            stp: *[Stp::CancelResting, Stp::CancelIncoming].get(r.u32()? as usize)?,
            qty: r.u64()?,
            price: r.i64()?,
        },
        19 => Request::Amend {
            order: r.u64()?,
            qty: if r.bool()? { Some(r.u64()?) } else { None },
            price: if r.bool()? { Some(r.i64()?) } else { None },
        },
        20 => Request::CancelOrder { order: r.u64()? },
        21 => Request::Order { order: r.u64()? },
        22 => Request::Book {
            instrument: InstrumentId(r.u32()?),
            depth: r.u32()?,
        },
        _ => return None,
    };
    Some((Stamped { stamp, request }, r.at))
}

/// Fixed-width little-endian fields, front to back.
struct RecordReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl RecordReader<'_> {
    #[inline(always)]
    fn array<const N: usize>(&mut self) -> Option<[u8; N]> {
        let field = self.bytes.get(self.at..self.at + N)?;
        self.at += N;
        field.try_into().ok()
    }

    #[inline(always)]
    fn u64(&mut self) -> Option<u64> {
        self.array().map(u64::from_le_bytes)
    }

    #[inline(always)]
    fn i64(&mut self) -> Option<i64> {
        self.array().map(i64::from_le_bytes)
    }

    #[inline(always)]
    fn u32(&mut self) -> Option<u32> {
        self.array().map(u32::from_le_bytes)
    }

    #[inline(always)]
    fn bool(&mut self) -> Option<bool> {
        match self.array::<1>()? {
            [0] => Some(false),
            [1] => Some(true),
            _ => None,
        }
    }
}

/// A frame whose header and checksum hold. Offsets are into the segment
/// buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Frame {
    pub offset: usize,
    /// The checksum of the frame: the chain's value after it (unless it is
    /// the clean-shutdown mark, which does not move the chain).
    pub checksum: u128,
    /// The chain's value before the frame, as the frame records it.
    pub parent: u128,
    /// Records in the frame; 0 only for the clean-shutdown mark.
    pub count: u32,
    /// For the mark: the seq after the journal's last record.
    pub first_seq: u64,
    /// Every record up to this seq was fdatasynced before this frame was
    /// written.
    pub durable_seq: u64,
    /// Byte range of the encoded records.
    pub records: (usize, usize),
    /// Offset of the next frame (aligned).
    pub next: usize,
}

impl Frame {
    /// The frame's last record's seq; for the mark, the journal's last.
    pub fn last_seq(&self) -> u64 {
        self.first_seq + u64::from(self.count) - 1
    }

    /// The clean-shutdown mark: no records, and the chain does not move.
    pub fn is_mark(&self) -> bool {
        self.count == 0
    }
}

/// What is at an offset of a segment.
#[derive(Debug)]
pub(crate) enum Parsed {
    Frame(Frame),
    /// Length zero (preallocated space) or end of file: no more data here.
    End,
    /// Not a valid frame; the reason says why.
    Bad(String),
}

/// Reads the frame at `offset`, checking everything that can be checked
/// without decoding records or knowing the frames before it: length bounds,
/// count plausibility, kind, checksum, zero padding and reserved field, and
/// that the seqs it claims do not overflow and that its durable seq lies
/// before them. (Its parent is checked by the caller, which knows the chain.)
pub(crate) fn parse_frame(buf: &[u8], offset: usize) -> Parsed {
    let left = buf.len().saturating_sub(offset);
    let Some(frame_bytes) = frame_length_at(buf, offset) else {
        return if buf[offset.min(buf.len())..].iter().all(|&b| b == 0) {
            Parsed::End
        } else {
            Parsed::Bad(format!("{left} stray bytes at end of file"))
        };
    };
    if frame_bytes == 0 {
        return Parsed::End;
    }
    if left < FRAME_HEADER_BYTES {
        return Parsed::Bad(format!("frame header cut short: {left} bytes left in file"));
    }
    if !(FRAME_HEADER_BYTES..=FRAME_BYTES_MAX).contains(&frame_bytes) {
        return Parsed::Bad(format!("implausible frame length {frame_bytes}"));
    }
    if frame_bytes > left {
        return Parsed::Bad(format!(
            "frame of {frame_bytes} bytes cut short: only {left} bytes left in file"
        ));
    }
    let end = offset + frame_bytes;
    let next = align_up(end);
    if next > buf.len() {
        return Parsed::Bad(format!(
            "frame padding cut short: the file ends {} bytes into it",
            buf.len() - end
        ));
    }
    let checksum = u128_at(buf, offset);
    if frame_checksum(&buf[offset + FRAME_LENGTH_AT..end]) != checksum {
        return Parsed::Bad("frame checksum mismatch".to_string());
    }
    if let Some(at) = buf[end..next].iter().position(|&b| b != 0) {
        return Parsed::Bad(format!(
            "non-zero padding byte at offset {} after the frame",
            end + at
        ));
    }
    let header = &buf[offset..offset + FRAME_HEADER_BYTES];
    let count = u32_at(header, 20);
    let kind = u32_at(header, 24);
    let reserved = u32_at(header, 28);
    let first_seq = u64_at(header, 32);
    let durable_seq = u64_at(header, 40);
    let parent = u128_at(header, 48);
    let records_bytes = frame_bytes - FRAME_HEADER_BYTES;
    let plausible = reserved == 0
        && match kind {
            KIND_RECORDS => count > 0 && (count as usize) <= records_bytes / RECORD_BYTES_MIN,
            KIND_CLEAN_SHUTDOWN => count == 0 && records_bytes == 0,
            _ => false,
        };
    if !plausible {
        return Parsed::Bad(format!(
            "frame header fields invalid despite a good checksum (count {count}, kind {kind}, reserved {reserved}, {records_bytes} record bytes)"
        ));
    }
    if first_seq == 0 || first_seq.checked_add(u64::from(count)).is_none() {
        return Parsed::Bad(format!("frame first seq {first_seq} out of range"));
    }
    if durable_seq >= first_seq {
        return Parsed::Bad(format!(
            "frame says seq {durable_seq} was durable before it was written, but it starts at seq {first_seq}"
        ));
    }
    let start = offset + FRAME_HEADER_BYTES;
    Parsed::Frame(Frame {
        offset,
        checksum,
        parent,
        count,
        first_seq,
        durable_seq,
        records: (start, end),
        next,
    })
}

/// The first offset at or after `from` (8-aligned) where a whole valid frame
/// sits. A bad frame followed by such a frame is corruption, not a torn tail:
/// the writer only ever appends, so data after a torn write cannot be valid.
pub(crate) fn find_valid_frame(buf: &[u8], from: usize) -> Option<usize> {
    let mut at = align_up(from);
    while at + FRAME_HEADER_BYTES <= buf.len() {
        if frame_length_at(buf, at) != Some(0) {
            if let Parsed::Frame(_) = parse_frame(buf, at) {
                return Some(at);
            }
        }
        at += FRAME_ALIGN;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One request of every variant, fields drawn from `next`, in variant
    /// order. The exhaustive match makes a new variant a compile error here,
    /// a reminder that `decode_record` must learn it too.
    fn one_of_each(next: &mut dyn FnMut() -> u64) -> Vec<Request> {
        let requests = vec![
            Request::OpenAccount { account: next() },
            Request::Deposit {
                account: next(),
                amount: next() as i64,
            },
            Request::Withdraw {
                account: next(),
                amount: next() as i64,
            },
            Request::Transfer {
                from: next(),
                to: next(),
                amount: next() as i64,
            },
            Request::Balance { account: next() },
            Request::History {
                account: next(),
                limit: next() as u32,
            },
            Request::ListInstrument {
                symbol: Symbol::from_bytes(std::array::from_fn(|_| next() as u8)),
                supply: next(),
                price: next() as i64,
            },
            Request::Instrument {
                instrument: InstrumentId(next() as u32),
            },
            Request::Reserve {
                reservation: next(),
                account: next(),
                instrument: InstrumentId(next() as u32),
                qty: next(),
                ttl_ms: next(),
                partial: next() % 2 == 1,
            },
            Request::Confirm {
                reservation: next(),
            },
            Request::Cancel {
                reservation: next(),
            },
            Request::Holdings { account: next() },
            Request::Tick,
            Request::Digest,
            Request::CreditRebate {
                deposit_seq: next(),
                amount: next() as i64,
            },
            Request::OpenSession {
                name: SessionName::from_bytes(std::array::from_fn(|_| next() as u8)),
            },
            Request::CloseSession,
            Request::Rejected {
                code: ErrorCode::ALL[next() as usize % ErrorCode::ALL.len()],
            },
            Request::Place {
                order: next(),
                account: next(),
                instrument: InstrumentId(next() as u32),
                side: [Side::Buy, Side::Sell][next() as usize % 2],
                market: next() % 2 == 1,
                tif: [Tif::Gtc, Tif::Ioc, Tif::Fok][next() as usize % 3],
                post_only: next() % 2 == 1,
                stp: [Stp::CancelResting, Stp::CancelIncoming][next() as usize % 2],
                qty: next(),
                price: next() as i64,
            },
            Request::Amend {
                order: next(),
                qty: (next() % 2 == 1).then(&mut *next),
                price: (next() % 2 == 1).then(|| next() as i64),
            },
            Request::CancelOrder { order: next() },
            Request::Order { order: next() },
            Request::Book {
                instrument: InstrumentId(next() as u32),
                depth: next() as u32,
            },
        ];
        for (index, request) in requests.iter().enumerate() {
            let variant = match request {
                Request::OpenAccount { .. } => 0,
                Request::Deposit { .. } => 1,
                Request::Withdraw { .. } => 2,
                Request::Transfer { .. } => 3,
                Request::Balance { .. } => 4,
                Request::History { .. } => 5,
                Request::ListInstrument { .. } => 6,
                Request::Instrument { .. } => 7,
                Request::Reserve { .. } => 8,
                Request::Confirm { .. } => 9,
                Request::Cancel { .. } => 10,
                Request::Holdings { .. } => 11,
                Request::Tick => 12,
                Request::Digest => 13,
                Request::CreditRebate { .. } => 14,
                Request::OpenSession { .. } => 15,
                Request::CloseSession => 16,
                Request::Rejected { .. } => 17,
                Request::Place { .. } => 18,
                Request::Amend { .. } => 19,
                Request::CancelOrder { .. } => 20,
                Request::Order { .. } => 21,
                Request::Book { .. } => 22,
            };
            assert_eq!(variant, index);
        }
        requests
    }

    /// `parse_frame` rejects counts that cannot fit at this size per record;
    /// if a request variant ever encodes smaller, valid frames would be
    /// called corrupt.
    #[test]
    fn no_record_encodes_below_the_minimum_size_frames_assume() {
        let sizes: Vec<usize> = one_of_each(&mut || 1)
            .into_iter()
            .map(|request| {
                let stamped = Stamped::new(Stamp::default(), request);
                bincode::encode_to_vec(stamped, BINCODE).unwrap().len()
            })
            .collect();
        assert_eq!(sizes.iter().min(), Some(&RECORD_BYTES_MIN), "{sizes:?}");
    }

    /// The hand-written record decoder answers exactly as bincode does: on
    /// every variant with random fields, and on those encodings cut short,
    /// with a byte changed (a bad variant index, a bool that is not 0 or 1)
    /// or with bytes after them.
    #[test]
    fn decode_record_agrees_with_bincode_on_good_and_damaged_bytes() {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let bincode_says =
            |bytes: &[u8]| bincode::decode_from_slice::<Stamped, _>(bytes, BINCODE).ok();
        for _ in 0..300 {
            let stamp = Stamp {
                seq: next(),
                time_ms: next(),
                session: next(),
                req: next(),
            };
            for request in one_of_each(&mut next) {
                let stamped = Stamped::new(stamp, request);
                let bytes = bincode::encode_to_vec(stamped, BINCODE).unwrap();
                assert_eq!(decode_record(&bytes), Some((stamped, bytes.len())));

                let cut = next() as usize % bytes.len();
                assert_eq!(decode_record(&bytes[..cut]), bincode_says(&bytes[..cut]));
                let mut changed = bytes.clone();
                let at = 32 + next() as usize % (bytes.len() - 32);
                changed[at] = [0, 1, 2, 13, 14, 17, 18, 0xff][next() as usize % 8];
                assert_eq!(
                    decode_record(&changed),
                    bincode_says(&changed),
                    "{changed:?}"
                );
                let mut longer = bytes.clone();
                longer.extend((0..next() % 50).map(|_| next() as u8));
                assert_eq!(decode_record(&longer), Some((stamped, bytes.len())));
            }
        }
    }

    /// journal/README.md gives the genesis value in hex; auditors may
    /// compute it themselves from the bytes it names.
    #[test]
    fn the_genesis_value_is_the_one_documented() {
        assert_eq!(
            format!("{GENESIS:032x}"),
            "d5aa12afe50356848bf6d7c67f242cad",
            "journal/README.md, \"Hash chain\""
        );
        assert_eq!(GENESIS, frame_checksum(b"ringledger journal genesis"));
    }

    #[test]
    fn a_frame_round_trips_and_any_flipped_bit_is_caught() {
        let batch: Vec<Stamped> = (1..=3)
            .map(|seq| {
                Stamped::new(
                    Stamp {
                        seq,
                        ..Stamp::default()
                    },
                    Request::Tick,
                )
            })
            .collect();
        let mut buf = Vec::new();
        let checksum = encode_frame(&batch, 0, GENESIS, &mut buf).unwrap();
        assert_eq!(buf.len() % FRAME_ALIGN, 0);
        let Parsed::Frame(frame) = parse_frame(&buf, 0) else {
            panic!("a fresh frame must parse")
        };
        assert_eq!(
            (frame.first_seq, frame.count, frame.next),
            (1, 3, buf.len())
        );
        assert_eq!(frame.durable_seq, 0);
        assert_eq!((frame.checksum, frame.parent), (checksum, GENESIS));
        assert!(frame.records.1 < buf.len(), "this frame has padding");
        for at in 0..buf.len() {
            for bit in 0..8 {
                let mut damaged = buf.clone();
                damaged[at] ^= 1 << bit;
                assert!(
                    !matches!(parse_frame(&damaged, 0), Parsed::Frame(_)),
                    "flip of bit {bit} at byte {at} went unnoticed"
                );
            }
        }
    }
}
