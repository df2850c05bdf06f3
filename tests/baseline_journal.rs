//! Journaling baselines: exactly one record per accepted mutating operation,
//! numbered 1, 2, 3… in file order, for both banks and both durabilities;
//! and for the mutex bank, replaying the file one record at a time is
//! accepted in full and rebuilds the same state (its order is a valid
//! serialization).

use std::collections::HashMap;
use std::path::Path;
use std::thread;

use ringledger::baseline::{
    Bank, BankConfig, BaselineJournal, Durability, MutexBank, Op, OptimisticBank, Record,
};
use ringledger::{InstrumentId, Symbol};

const THREADS: u64 = 4;
const ACCOUNTS: u64 = 8;
const OPS: u64 = 2_000;

fn config() -> BankConfig {
    BankConfig {
        accounts_max: 64,
        instruments_max: 4,
        reservation_shards: 8,
    }
}

/// Runs a mixed concurrent workload and counts what was accepted, per op.
fn run_workload(bank: &dyn Bank) -> HashMap<Op, u64> {
    let mut accepted = HashMap::new();
    for account in 0..ACCOUNTS {
        bank.open_account(account).unwrap();
        bank.deposit(account, 1_000).unwrap();
    }
    let sale = bank
        .list_instrument(Symbol::new("LOG").unwrap(), 300, 10)
        .unwrap();
    *accepted.entry(Op::OpenAccount).or_default() += ACCOUNTS;
    *accepted.entry(Op::Deposit).or_default() += ACCOUNTS;
    *accepted.entry(Op::ListInstrument).or_default() += 1;
    let counts: Vec<HashMap<Op, u64>> = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut counts: HashMap<Op, u64> = HashMap::new();
                    let mut open = Vec::new();
                    let mut state = t * 7_919 + 1;
                    let mut next = |n: u64| {
                        state = state
                            .wrapping_mul(6_364_136_223_846_793_005)
                            .wrapping_add(1);
                        (state >> 33) % n
                    };
                    for i in 0..OPS {
                        let account = next(ACCOUNTS);
                        let amount = 1 + next(400) as i64;
                        let (op, ok) = match next(6) {
                            0 => (Op::Deposit, bank.deposit(account, amount).is_ok()),
                            1 => (Op::Withdraw, bank.withdraw(account, amount).is_ok()),
                            2 => (
                                Op::Transfer,
                                bank.transfer(account, next(ACCOUNTS), amount).is_ok(),
                            ),
                            3 => {
                                let id = t * OPS + i;
                                let ok = bank.reserve(id, account, sale, 1 + next(5), true).is_ok();
                                if ok {
                                    open.push(id);
                                }
                                (Op::Reserve, ok)
                            }
                            4 if !open.is_empty() => {
                                let id = open.swap_remove(next(open.len() as u64) as usize);
                                (Op::Confirm, bank.confirm(id).is_ok())
                            }
                            _ => match open.pop() {
                                Some(id) => (Op::Cancel, bank.cancel(id).is_ok()),
                                // A refused op is never journaled.
                                None => (Op::Withdraw, bank.withdraw(account, i64::MAX).is_ok()),
                            },
                        };
                        if ok {
                            *counts.entry(op).or_default() += 1;
                        }
                    }
                    counts
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).collect()
    });
    for thread_counts in counts {
        for (op, n) in thread_counts {
            *accepted.entry(op).or_default() += n;
        }
    }
    bank.check_invariants().unwrap();
    accepted
}

/// Reads the journal back and checks it holds exactly the accepted ops.
fn assert_one_record_per_accepted_op(path: &Path, accepted: &HashMap<Op, u64>) -> Vec<Record> {
    let records = BaselineJournal::read(path).unwrap();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.seq,
            i as u64 + 1,
            "records are numbered in file order"
        );
    }
    let mut journaled: HashMap<Op, u64> = HashMap::new();
    for record in &records {
        *journaled.entry(record.op).or_default() += 1;
    }
    assert_eq!(&journaled, accepted);
    assert_eq!(
        records.len() as u64,
        accepted.values().sum::<u64>(),
        "one record per accepted op"
    );
    records
}

/// Applies each record to a fresh bank, one at a time; every one must be
/// accepted again if the file order is a valid serialization.
fn replay(records: &[Record]) -> MutexBank {
    let bank = MutexBank::new(config(), None);
    for record in records {
        let (a, b) = (record.a, record.b);
        let result = match record.op {
            Op::OpenAccount => bank.open_account(a),
            Op::Deposit => bank.deposit(a, record.amount).map(drop),
            Op::Withdraw => bank.withdraw(a, record.amount).map(drop),
            Op::Transfer => bank.transfer(a, b, record.amount),
            Op::ListInstrument => {
                let mut bytes = [a.to_le_bytes(), b.to_le_bytes()].concat();
                bytes.retain(|&byte| byte != 0);
                let symbol = Symbol::new(std::str::from_utf8(&bytes).unwrap()).unwrap();
                bank.list_instrument(symbol, record.qty, record.amount)
                    .map(|id| assert_eq!(id, InstrumentId(record.instrument)))
            }
            Op::Reserve => bank
                .reserve(a, b, InstrumentId(record.instrument), record.qty, false)
                .map(|taken| assert_eq!(taken, record.qty)),
            Op::Confirm => bank.confirm(a),
            Op::Cancel => bank.cancel(a),
        };
        result.unwrap_or_else(|reject| panic!("record {record:?} refused on replay: {reject}"));
    }
    bank
}

fn journaled_mutex_bank_logs_a_replayable_serialization(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("mutex.journal");
    let journal = BaselineJournal::create(&path, durability).unwrap();
    let bank = MutexBank::new(config(), Some(journal));
    let accepted = run_workload(&bank);
    let records = assert_one_record_per_accepted_op(&path, &accepted);
    assert_eq!(
        bank.journal().unwrap().records_written(),
        records.len() as u64
    );
    let replayed = replay(&records);
    replayed.check_invariants().unwrap();
    for account in 0..ACCOUNTS {
        assert_eq!(replayed.balance(account), bank.balance(account));
    }
    assert_eq!(
        replayed.instrument(InstrumentId(0)),
        bank.instrument(InstrumentId(0))
    );
}

fn journaled_optimistic_bank_logs_every_accepted_op(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("optimistic.journal");
    let journal = BaselineJournal::create(&path, durability).unwrap();
    let bank = OptimisticBank::new(config(), Some(journal));
    let accepted = run_workload(&bank);
    let records = assert_one_record_per_accepted_op(&path, &accepted);
    assert_eq!(
        bank.journal().unwrap().records_written(),
        records.len() as u64
    );
}

#[test]
fn mutex_bank_async_journal_is_a_replayable_serialization() {
    journaled_mutex_bank_logs_a_replayable_serialization(Durability::Async);
}

#[test]
fn mutex_bank_sync_journal_is_a_replayable_serialization() {
    journaled_mutex_bank_logs_a_replayable_serialization(Durability::Sync);
}

#[test]
fn optimistic_bank_async_journal_has_one_record_per_accepted_op() {
    journaled_optimistic_bank_logs_every_accepted_op(Durability::Async);
}

#[test]
fn optimistic_bank_sync_journal_has_one_record_per_accepted_op() {
    journaled_optimistic_bank_logs_every_accepted_op(Durability::Sync);
}

#[test]
fn refused_operations_are_not_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("refused.journal");
    let bank = MutexBank::new(
        config(),
        Some(BaselineJournal::create(&path, Durability::Async).unwrap()),
    );
    bank.open_account(1).unwrap();
    assert!(bank.open_account(1).is_err());
    assert!(bank.withdraw(1, 5).is_err());
    assert!(bank.deposit(2, 5).is_err());
    assert!(bank.confirm(9).is_err());
    let records = BaselineJournal::read(&path).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].op, records[0].a), (Op::OpenAccount, 1));
}
