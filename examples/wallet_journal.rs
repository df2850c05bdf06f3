//! Writes a large wallet journal for timing `ringledger replay`: the workload
//! of `benches/journal.rs` (`benches/common/wallet.rs`) (10k accounts opened, then deposits, withdrawals
//! and transfers between them), in frames of 64 records, as a busy engine
//! would have journaled it.
//!
//! `cargo run --release --example wallet_journal -- DIR [RECORDS]`
//! (default 10 000 000 records, about 550 MB), then
//! `ringledger replay --journal-dir DIR`.

use ringledger::journal::{self, Durability, JournalConfig, JournalWriter, Meta};
use ringledger::LedgerConfig;

#[path = "../benches/common/wallet.rs"]
mod wallet;

const BATCH: u64 = 64;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().ok_or("usage: wallet_journal DIR [RECORDS]")?;
    let records: u64 = args.next().map_or(Ok(10_000_000), |n| n.parse())?;
    if std::path::Path::new(&dir).exists() {
        return Err(format!("{dir} exists; pick a new directory").into());
    }
    let config = JournalConfig {
        durability: Durability::Async,
        ..JournalConfig::default()
    };
    // The meta file first (the default scale and limits), under the lock the
    // writer then keeps: `replay` refuses a journal without one.
    let lock = journal::lock_dir(&dir)?;
    let meta = Meta {
        scale: 2,
        ledger: LedgerConfig::default(),
    };
    journal::check_meta(&dir, &meta)?;
    let mut journal = JournalWriter::open_locked(lock, config)?;
    let mut x = 0x0bad_cafeu64;
    let mut batch = Vec::with_capacity(BATCH as usize);
    let mut seq = 0;
    while seq < records {
        batch.clear();
        while seq < records && batch.len() < BATCH as usize {
            seq += 1;
            batch.push(wallet::stamped(seq, &mut x));
        }
        journal.commit(&batch)?;
    }
    journal.sync()?;
    println!("{records} records written to {dir}");
    Ok(())
}
