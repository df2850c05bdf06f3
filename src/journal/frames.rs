//! Whole frames as the journal holds them, for replication. A leader that
//! publishes again what its journal holds beyond the stream (it crashed
//! between writing and publishing) sends the very bytes its disk has:
//! checksum, durable seq and parent included. So every frame of the stream
//! is a frame of the leader's journal, and a follower that journals them
//! as they are reaches the leader's chain head at every seq.

use std::path::Path;

use super::error::JournalError;
use super::scan::Scanner;

/// One frame of records, as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The frame's bytes, header and padding included.
    pub bytes: Vec<u8>,
    pub first_seq: u64,
    pub last_seq: u64,
}

/// Streams the frames of records holding seqs ≥ `from_seq` (a frame that
/// holds `from_seq` among others is yielded whole; clean-shutdown marks are
/// left out). Read-only and lock-free like [`super::read_records`]: it
/// checks checksums and the chain as it goes, ends quietly at a torn tail
/// and yields one `Err`, then stops, at corruption.
pub fn read_frames(dir: impl AsRef<Path>, from_seq: u64) -> Result<RawFrames, JournalError> {
    Ok(RawFrames {
        scanner: Scanner::reading(dir.as_ref(), from_seq)?,
        from_seq,
        done: false,
    })
}

/// The iterator [`read_frames`] returns.
pub struct RawFrames {
    scanner: Scanner,
    from_seq: u64,
    done: bool,
}

impl Iterator for RawFrames {
    type Item = Result<RawFrame, JournalError>;

    fn next(&mut self) -> Option<Self::Item> {
        while !self.done {
            match self.scanner.next_frame() {
                Ok(Some(frame)) if frame.is_mark() || frame.last_seq() < self.from_seq => {}
                Ok(Some(frame)) => {
                    return Some(Ok(RawFrame {
                        bytes: self.scanner.frame_bytes(&frame).to_vec(),
                        first_seq: frame.first_seq,
                        last_seq: frame.last_seq(),
                    }))
                }
                Ok(None) => self.done = true,
                Err(e) => {
                    self.done = true;
                    return Some(Err(e));
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::format::{encode_frame, finish_frame, frame_length_at};
    use crate::journal::{ChainHead, Durability, JournalConfig, JournalWriter, GENESIS};
    use crate::request::{Request, Stamp, Stamped};

    fn batch(first: u64, len: u64) -> Vec<Stamped> {
        (first..first + len)
            .map(|seq| {
                Stamped::new(
                    Stamp {
                        seq,
                        ..Stamp::default()
                    },
                    Request::Deposit {
                        account: seq,
                        amount: 1,
                    },
                )
            })
            .collect()
    }

    #[test]
    fn frames_are_read_back_as_the_writer_wrote_them() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = async_writer(dir.path());
        let mut written = Vec::new();
        let mut seq = 1;
        for len in [3, 1, 40, 7, 60, 2] {
            writer.append(&batch(seq, len)).unwrap();
            written.push((writer.last_frame().to_vec(), seq, seq + len - 1));
            seq += len;
        }
        writer.close().unwrap();
        let read: Vec<(Vec<u8>, u64, u64)> = read_frames(dir.path(), 1)
            .unwrap()
            .map(|f| f.map(|f| (f.bytes, f.first_seq, f.last_seq)).unwrap())
            .collect();
        assert_eq!(
            read, written,
            "every frame, byte for byte, without the mark"
        );
        // From a seq inside the third frame: that frame whole, then the rest.
        let from: Vec<u64> = read_frames(dir.path(), 10)
            .unwrap()
            .map(|f| f.unwrap().first_seq)
            .collect();
        assert_eq!(from, vec![5, 45, 52, 112]);
    }

    fn async_writer(dir: &Path) -> JournalWriter {
        JournalWriter::open(
            dir,
            JournalConfig {
                segment_bytes: 4096,
                durability: Durability::Async,
            },
        )
        .unwrap()
    }

    #[test]
    fn another_journals_frames_are_written_as_they_are_only_where_they_extend_the_chain() {
        let leader_dir = tempfile::tempdir().unwrap();
        let mut leader = async_writer(leader_dir.path());
        let mut sent = Vec::new();
        let mut seq = 1;
        for len in [3, 1, 40, 7, 60, 2] {
            let records = batch(seq, len);
            leader.append(&records).unwrap();
            sent.push((leader.last_frame().to_vec(), records, leader.chain_head()));
            // The next frame says these records were synced.
            leader.sync().unwrap();
            seq += len;
        }
        let follower_dir = tempfile::tempdir().unwrap();
        let mut follower = async_writer(follower_dir.path());

        // Refused, and nothing written: a frame that is not the next one, a
        // damaged one, one that is not of the records given.
        let refused = |follower: &mut JournalWriter, frame: &[u8], records: &[Stamped]| {
            let err = follower.append_frame(frame, records).unwrap_err();
            assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
            err.to_string()
        };
        let why = refused(&mut follower, &sent[1].0, &sent[1].1);
        assert!(why.contains("does not extend this journal"), "{why}");
        let mut damaged = sent[0].0.clone();
        damaged[70] ^= 1;
        let why = refused(&mut follower, &damaged, &sent[0].1);
        assert!(why.contains("checksum"), "{why}");
        let why = refused(&mut follower, &sent[0].0, &batch(1, 2));
        assert!(why.contains("the batch 1..=2"), "{why}");
        assert_eq!(follower.chain_head(), ChainHead::GENESIS);
        assert_eq!(follower.next_seq(), None);

        for (frame, records, head) in &sent {
            follower.append_frame(frame, records).unwrap();
            assert_eq!(follower.chain_head(), *head);
            let durable_seq = u64::from_le_bytes(frame[40..48].try_into().unwrap());
            assert!(
                follower.durable_seq() >= durable_seq,
                "the frame says seq {durable_seq} is durable, this journal only knows {}",
                follower.durable_seq()
            );
        }
        follower.close().unwrap();
        let frames = |dir: &Path| -> Vec<RawFrame> {
            read_frames(dir, 1).unwrap().map(Result::unwrap).collect()
        };
        assert_eq!(frames(follower_dir.path()), frames(leader_dir.path()));
    }

    fn deposits(amounts: &[i64]) -> Vec<Stamped> {
        amounts
            .iter()
            .zip(1..)
            .map(|(&amount, seq)| {
                Stamped::new(
                    Stamp {
                        seq,
                        ..Stamp::default()
                    },
                    Request::Deposit { account: 1, amount },
                )
            })
            .collect()
    }

    /// A first frame holding `records` whose header claims `count`, with a
    /// checksum that holds: what a forger (or a buggy leader) can send.
    fn forged(records: &[Stamped], count: u32) -> Vec<u8> {
        let mut frame = Vec::new();
        encode_frame(records, 0, GENESIS, &mut frame).unwrap();
        frame.truncate(frame_length_at(&frame, 0).unwrap());
        finish_frame(&mut frame, count, 0, 1, 0, GENESIS);
        frame
    }

    fn refused(frame: &[u8], batch: &[Stamped]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = async_writer(dir.path());
        let err = writer.append_frame(frame, batch).unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput, "{err}");
        assert_eq!(writer.chain_head(), ChainHead::GENESIS);
        writer.close().unwrap();
        assert_eq!(read_frames(dir.path(), 1).unwrap().count(), 0);
        err.to_string()
    }

    #[test]
    fn a_frame_holding_more_records_than_it_claims_is_refused() {
        // Checksum, seqs and parent all fit the batch of three; a fourth
        // record trails it, which every later scan of this journal would
        // call corruption.
        let batch = deposits(&[100, 200, 300]);
        let frame = forged(&deposits(&[100, 200, 300, 400]), 3);
        let why = refused(&frame, &batch);
        assert!(why.contains("records"), "{why}");
    }

    #[test]
    fn a_frame_of_other_records_with_the_same_seqs_is_refused() {
        // The journal would hold a deposit of 999 where the ledger applied 200.
        let batch = deposits(&[100, 200, 300]);
        let frame = forged(&deposits(&[100, 999, 300]), 3);
        let why = refused(&frame, &batch);
        assert!(why.contains("records"), "{why}");
    }

    #[test]
    fn a_frame_claiming_its_own_records_durable_is_refused() {
        let batch = deposits(&[100]);
        let mut frame = Vec::new();
        encode_frame(&batch, 1, GENESIS, &mut frame).unwrap();
        let why = refused(&frame, &batch);
        assert!(why.contains("durable before it was written"), "{why}");
    }
}
