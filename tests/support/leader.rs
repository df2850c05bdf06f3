//! A leader without an engine, for replication tests: a seeded workload
//! journaled and applied batch by batch like the business thread does, its
//! frames handed to a publisher; and a follower run to a given seq.

use std::path::Path;
use std::time::{Duration, Instant};

use ringledger::journal::{self, Durability, JournalConfig, JournalWriter, Meta};
use ringledger::rebate::{RateRebate, RebatePolicy};
use ringledger::replication::{Publisher, ReplicationConfig};
use ringledger::{Ledger, LedgerConfig, Request, Stamp, Stamped};

/// How long a test waits for the stream or a follower.
pub const WAIT: Duration = Duration::from_secs(30);

/// A seeded random workload, stamped like the business thread stamps it:
/// accounts, deposits (whose rebates come back as credits a few batches
/// later), withdrawals and transfers, some of them refused.
pub struct Workload {
    rng: u64,
    pub seq: u64,
    pub time_ms: u64,
    pub owed: Vec<ringledger::RebateJob>,
}

impl Workload {
    pub fn new(seed: u64) -> Workload {
        Workload {
            rng: seed | 1,
            seq: 0,
            time_ms: 1_000,
            owed: Vec::new(),
        }
    }

    fn next(&mut self) -> u64 {
        // xorshift64*
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn batch(&mut self) -> Vec<Stamped> {
        let len = 1 + self.next() % 64;
        self.time_ms += self.next() % 5;
        let mut batch = Vec::new();
        for _ in 0..len {
            let request = if !self.owed.is_empty() && self.next().is_multiple_of(3) {
                let job = self.owed.remove(0);
                Request::CreditRebate {
                    deposit_seq: job.deposit_seq,
                    amount: RateRebate::default().rebate(&job),
                }
            } else {
                let account = 1 + self.next() % 20;
                let amount = 1 + (self.next() % 50_000) as i64;
                match self.next() % 6 {
                    0 => Request::OpenAccount { account },
                    1 | 2 => Request::Deposit { account, amount },
                    3 => Request::Withdraw { account, amount },
                    4 => Request::Transfer {
                        from: account,
                        to: 1 + self.next() % 20,
                        amount,
                    },
                    _ => Request::Balance { account },
                }
            };
            self.seq += 1;
            batch.push(Stamped::new(
                Stamp {
                    seq: self.seq,
                    time_ms: self.time_ms,
                    session: 0,
                    req: 0,
                },
                request,
            ));
        }
        batch
    }
}

/// A leader without an engine around it: journal writer, Ledger and
/// publisher, driven batch by batch like the business thread drives them.
pub struct Leader {
    pub ledger: Ledger,
    pub writer: JournalWriter,
    pub workload: Workload,
}

impl Leader {
    pub fn open(dir: &Path, seed: u64) -> Leader {
        journal::check_meta(dir, &meta()).unwrap();
        Leader {
            ledger: Ledger::new(LedgerConfig::default()),
            writer: JournalWriter::open(
                dir,
                JournalConfig {
                    durability: Durability::Async,
                    ..JournalConfig::default()
                },
            )
            .unwrap(),
            workload: Workload::new(seed),
        }
    }

    /// Journals and applies one batch; returns its last seq.
    pub fn step(&mut self) -> u64 {
        let batch = self.workload.batch();
        self.writer.append(&batch).unwrap();
        let owed = &mut self.workload.owed;
        self.ledger.apply_batch(&batch, |_, applied| {
            owed.extend(applied.rebate);
        });
        self.ledger.last_seq()
    }

    /// Journals and applies the next batch as another journal framed it
    /// (`frame`, which must hold exactly that batch), byte for byte, as a
    /// follower does: the chain then matches the other journal's even
    /// where the frame's durable seq (timing-dependent with an async
    /// journal) differs from what this writer would have written.
    pub fn step_as(&mut self, frame: &[u8]) -> u64 {
        let batch = self.workload.batch();
        self.writer.append_frame(frame, &batch).unwrap();
        let owed = &mut self.workload.owed;
        self.ledger.apply_batch(&batch, |_, applied| {
            owed.extend(applied.rebate);
        });
        self.ledger.last_seq()
    }

    pub fn publish_steps(&mut self, publisher: &Publisher<()>, batches: usize) -> u64 {
        for _ in 0..batches {
            let last = self.step();
            publisher.publish(self.writer.last_frame(), last, ());
        }
        self.ledger.last_seq()
    }
}

pub fn meta() -> Meta {
    Meta {
        scale: 2,
        ledger: LedgerConfig::default(),
    }
}

/// Runs a follower on `dir` until it has applied `seq`, then closes it.
pub fn follow_to(config: &ReplicationConfig, dir: &Path, seq: u64) -> Ledger {
    let mut follower = super::nats::open_follower(config, dir);
    let deadline = Instant::now() + WAIT;
    follower
        .run(Duration::from_millis(100), |progress, _| {
            assert!(
                Instant::now() < deadline,
                "follower stuck at {progress:?}, waiting for seq {seq}"
            );
            progress.applied_seq < seq
        })
        .unwrap();
    assert_eq!(follower.ledger().last_seq(), seq);
    follower.close().unwrap()
}
