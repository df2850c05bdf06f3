//! Writes an order-heavy journal for timing `ringledger replay`: the
//! order-book flow of `ringledger bench --scenario orderbook` and
//! `benches/orderbook.rs` (`ringledger::bench::BookFlow`: funded traders,
//! one book kept at about 1,000 resting orders, then 9% GTC places, 3% IOC,
//! 6% cancels and 82% moves), each request applied to a Ledger as it is
//! generated (so cancels and moves name live orders) and journaled in frames
//! of 64 records, as a busy engine would have.
//!
//! `cargo run --release --example orderbook_journal -- DIR [RECORDS]`
//! (default 10 000 000 records), then `ringledger replay --journal-dir DIR`.

use ringledger::bench::workload::OPENING_BALANCE;
use ringledger::bench::{BookFlow, Scenario, Workload};
use ringledger::journal::{self, Durability, JournalConfig, JournalWriter, Meta};
use ringledger::{InstrumentId, Ledger, LedgerConfig, Request, Stamp, Stamped};

const BATCH: usize = 64;
const TRADERS: u64 = 100;
const ACME: InstrumentId = InstrumentId(0);

/// Stamps, applies and collects requests, committing every `BATCH`.
struct Writer {
    ledger: Ledger,
    journal: JournalWriter,
    batch: Vec<Stamped>,
    seq: u64,
}

impl Writer {
    fn apply(&mut self, request: Request) -> std::io::Result<ringledger::Outcome> {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        let stamped = Stamped::new(stamp, request);
        self.batch.push(stamped);
        if self.batch.len() == BATCH {
            self.journal.commit(&self.batch)?;
            self.batch.clear();
        }
        Ok(self.ledger.apply(&stamped).outcome)
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args
        .next()
        .ok_or("usage: orderbook_journal DIR [RECORDS]")?;
    let records: u64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    if std::path::Path::new(&dir).exists() {
        return Err(format!("{dir} exists; pick a new directory").into());
    }
    // The meta file first (the default scale and limits, which the
    // generating Ledger uses), under the lock the writer then keeps.
    let lock = journal::lock_dir(&dir)?;
    let meta = Meta {
        scale: 2,
        ledger: LedgerConfig::default(),
    };
    journal::check_meta(&dir, &meta)?;
    let config = JournalConfig {
        durability: Durability::Async,
        ..JournalConfig::default()
    };
    let mut w = Writer {
        ledger: Ledger::new(LedgerConfig::default()),
        journal: JournalWriter::open_locked(lock, config)?,
        batch: Vec::with_capacity(BATCH),
        seq: 0,
    };
    let workload = Workload::new(Scenario::Orderbook, TRADERS, 0);
    let mut flow = BookFlow::new(&workload, 0, 1);
    for account in 0..TRADERS {
        w.apply(Request::OpenAccount { account })?
            .map_err(|e| format!("set-up: {e}"))?;
        w.apply(Request::Deposit {
            account,
            amount: OPENING_BALANCE,
        })?
        .map_err(|e| format!("set-up: {e}"))?;
    }
    for request in workload.book_setup() {
        w.apply(request)?.map_err(|e| format!("set-up: {e}"))?;
    }
    for op in flow.prefill() {
        let outcome = w.apply(op.request(ACME))?;
        flow.answered(&op, op.rests_after(&outcome));
    }
    while w.seq < records {
        let op = flow.next_op();
        let outcome = w.apply(op.request(ACME))?;
        flow.answered(&op, op.rests_after(&outcome));
    }
    if !w.batch.is_empty() {
        w.journal.commit(&w.batch)?;
    }
    w.journal.sync()?;
    println!(
        "{} records written to {dir} (digest {:016x})",
        w.seq,
        w.ledger.digest()
    );
    Ok(())
}
