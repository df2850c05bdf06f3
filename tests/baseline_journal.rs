//! Journaling baselines: exactly one record per accepted mutating operation
//! and per rebate credit, in the engine's own journal format, numbered 1,
//! 2, 3… in file order, for both banks and both durabilities; and for the
//! mutex bank, replaying the file one record at a time is accepted in full
//! and rebuilds the same state, rebates included (its order is a valid
//! serialization).

use std::collections::HashMap;
use std::path::Path;
use std::thread;

use ringledger::baseline::{Bank, BankConfig, BaselineJournal, MutexBank, OptimisticBank};
use ringledger::journal::Durability;
use ringledger::rebate::RateRebate;
use ringledger::{InstrumentId, Request, Stamped, Symbol};

const THREADS: u64 = 4;
const ACCOUNTS: u64 = 8;
const OPS: u64 = 2_000;

/// What a record is, for counting.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Op {
    OpenAccount,
    Deposit,
    Withdraw,
    Transfer,
    ListInstrument,
    Reserve,
    Confirm,
    Cancel,
    CreditRebate,
}

fn op_of(request: &Request) -> Op {
    match request {
        Request::OpenAccount { .. } => Op::OpenAccount,
        Request::Deposit { .. } => Op::Deposit,
        Request::Withdraw { .. } => Op::Withdraw,
        Request::Transfer { .. } => Op::Transfer,
        Request::ListInstrument { .. } => Op::ListInstrument,
        Request::Reserve { .. } => Op::Reserve,
        Request::Confirm { .. } => Op::Confirm,
        Request::Cancel { .. } => Op::Cancel,
        Request::CreditRebate { .. } => Op::CreditRebate,
        other => panic!("a baseline journals no {other:?}"),
    }
}

/// Pays rebates, like the benchmark's banks.
fn config() -> BankConfig {
    BankConfig {
        accounts_max: 64,
        instruments_max: 4,
        reservation_shards: 8,
        rebates: Some(RateRebate::default()),
    }
}

/// Runs a mixed concurrent workload, waits for its rebates and counts what
/// was accepted, per op (one rebate credit per accepted deposit).
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
    bank.settle_rebates();
    let deposits = accepted[&Op::Deposit];
    accepted.insert(Op::CreditRebate, deposits);
    assert_eq!(bank.rebates().credited, deposits);
    assert_eq!(bank.rebates().owed(), 0);
    bank.check_invariants().unwrap();
    accepted
}

/// Reads the journal back and checks it holds exactly the accepted ops.
fn assert_one_record_per_accepted_op(path: &Path, accepted: &HashMap<Op, u64>) -> Vec<Stamped> {
    let records = BaselineJournal::read(path).unwrap();
    for (i, record) in records.iter().enumerate() {
        assert_eq!(
            record.stamp.seq,
            i as u64 + 1,
            "records are numbered in file order"
        );
    }
    let mut journaled: HashMap<Op, u64> = HashMap::new();
    for record in &records {
        *journaled.entry(op_of(&record.request)).or_default() += 1;
    }
    assert_eq!(&journaled, accepted);
    assert_eq!(
        records.len() as u64,
        accepted.values().sum::<u64>(),
        "one record per accepted op"
    );
    records
}

/// Applies each record to a fresh bank without rebates, one at a time;
/// every one must be accepted again if the file order is a valid
/// serialization. A rebate credit is a deposit of the rebate into the
/// account of the deposit it names by sequence number.
fn replay(records: &[Stamped]) -> MutexBank {
    let bank = MutexBank::new(
        BankConfig {
            rebates: None,
            ..config()
        },
        None,
    );
    let mut deposits = HashMap::new();
    for record in records {
        let result = match record.request {
            Request::OpenAccount { account } => bank.open_account(account),
            Request::Deposit { account, amount } => {
                deposits.insert(record.stamp.seq, account);
                bank.deposit(account, amount).map(drop)
            }
            Request::Withdraw { account, amount } => bank.withdraw(account, amount).map(drop),
            Request::Transfer { from, to, amount } => bank.transfer(from, to, amount),
            Request::ListInstrument {
                symbol,
                supply,
                price,
            } => bank.list_instrument(symbol, supply, price).map(drop),
            Request::Reserve {
                reservation,
                account,
                instrument,
                qty,
                partial,
                ..
            } => bank
                .reserve(reservation, account, instrument, qty, partial)
                .map(drop),
            Request::Confirm { reservation } => bank.confirm(reservation),
            Request::Cancel { reservation } => bank.cancel(reservation),
            Request::CreditRebate {
                deposit_seq,
                amount,
            } => {
                let account = *deposits
                    .get(&deposit_seq)
                    .unwrap_or_else(|| panic!("{record:?} credits no earlier deposit"));
                if amount > 0 {
                    bank.deposit(account, amount).map(drop)
                } else {
                    Ok(())
                }
            }
            other => panic!("a baseline journals no {other:?}"),
        };
        result.unwrap_or_else(|reject| panic!("record {record:?} refused on replay: {reject}"));
    }
    bank
}

fn journaled_mutex_bank_logs_a_replayable_serialization(durability: Durability) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path();
    let journal = BaselineJournal::create(path, durability).unwrap();
    let bank = MutexBank::new(config(), Some(journal));
    let accepted = run_workload(&bank);
    let records = assert_one_record_per_accepted_op(path, &accepted);
    assert_eq!(
        bank.journal().unwrap().records_appended(),
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
    let path = dir.path();
    let journal = BaselineJournal::create(path, durability).unwrap();
    let bank = OptimisticBank::new(config(), Some(journal));
    let accepted = run_workload(&bank);
    let records = assert_one_record_per_accepted_op(path, &accepted);
    let journal = bank.journal().unwrap();
    assert_eq!(journal.records_appended(), records.len() as u64);
    assert!(journal.groups_written() <= records.len() as u64);
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
    let bank = MutexBank::new(
        BankConfig {
            rebates: None,
            ..config()
        },
        Some(BaselineJournal::create(dir.path(), Durability::Async).unwrap()),
    );
    bank.open_account(1).unwrap();
    assert!(bank.open_account(1).is_err());
    assert!(bank.withdraw(1, 5).is_err());
    assert!(bank.deposit(2, 5).is_err());
    assert!(bank.confirm(9).is_err());
    let records = BaselineJournal::read(dir.path()).unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].request, Request::OpenAccount { account: 1 });
}

#[test]
fn a_deposit_rebate_is_credited_by_the_worker_and_journaled_after_it() {
    let dir = tempfile::tempdir().unwrap();
    let journal = BaselineJournal::create(dir.path(), Durability::Sync).unwrap();
    let bank = OptimisticBank::new(config(), Some(journal));
    bank.open_account(1).unwrap();
    assert_eq!(bank.deposit(1, 10_000), Ok(10_000));
    bank.settle_rebates();
    assert_eq!(bank.balance(1), Ok((10_100, 0)), "1% of 100.00 is 1.00");
    assert_eq!(bank.rebates().credited, 1);
    bank.check_invariants().unwrap();
    let records: Vec<Request> = BaselineJournal::read(dir.path())
        .unwrap()
        .into_iter()
        .map(|r| r.request)
        .collect();
    assert_eq!(
        records,
        [
            Request::OpenAccount { account: 1 },
            Request::Deposit {
                account: 1,
                amount: 10_000
            },
            Request::CreditRebate {
                deposit_seq: 2,
                amount: 100
            },
        ]
    );
}
