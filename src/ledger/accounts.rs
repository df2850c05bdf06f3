//! Account storage laid out for the hot path.
//!
//! What a request changes on an account (cash, the history ring's header,
//! the shares owned) sits together in one 64-byte line per account, apart
//! from the colder ids: a deposit or a purchase at 1M random accounts costs
//! one miss for the line plus one for the history slot it writes, where
//! separate arrays for cash, history headers and holdings cost one miss
//! each (measured: `reserve_then_confirm_pair` and deposit plus credit,
//! `cargo bench --bench ledger`). Ids are the caller's, but most callers
//! number accounts densely, so ids below a growing bound go through a
//! direct `Vec<u32>` table (one array access, no hashing); other ids fall
//! back to a hash map. Measured with 1M random accounts, the hash map alone
//! cost ~40 ns more per lookup than the direct table.
//!
//! Snapshots encode the accounts as they always did (ids, then every cash,
//! then every history, in opening order; holdings apart, see `codec`).

use std::collections::BTreeMap;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use super::holdings::Held;

use crate::money::Units;
use crate::outcome::{Entry, EntryKind};
use crate::prefetch::prefetch;
use crate::request::{AccountId, InstrumentId};

/// The direct table never grows past this many ids (64 MiB of slots).
const DIRECT_IDS_MAX: u64 = 1 << 24;
/// The direct table covers at least this many ids once anything is opened.
const DIRECT_IDS_MIN: u64 = 1 << 10;
const NO_SLOT: u32 = u32::MAX;

#[derive(Clone, Copy, Debug, Default, Encode, Decode)]
pub(super) struct Cash {
    pub balance: Units,
    /// Cash held by open reservations; `available = balance - held`.
    pub held: Units,
}

impl Cash {
    pub fn available(&self) -> Units {
        self.balance - self.held
    }
}

/// One account's hot state, one cache line.
#[derive(Clone, Debug, Default)]
#[repr(C, align(64))]
pub(super) struct Account {
    pub cash: Cash,
    pub history: History,
    pub held: Held,
}

#[derive(Clone, Debug, Default)]
pub(super) struct Accounts {
    direct: Vec<u32>,
    sparse: FxHashMap<AccountId, u32>,
    /// Per slot, in opening order: the caller's id, and the account's line.
    pub ids: Vec<AccountId>,
    pub lines: Vec<Account>,
    /// (account, instrument) pairs owned, over all accounts.
    holding_pairs: usize,
}

impl Accounts {
    pub fn with_capacity(accounts: usize) -> Accounts {
        let mut table = Accounts::default();
        table.ids.reserve_exact(accounts);
        table.lines.reserve_exact(accounts);
        table
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// The slot of an open account.
    #[inline]
    pub fn slot(&self, id: AccountId) -> Option<usize> {
        if let Some(&slot) = self.direct.get(id as usize) {
            if slot != NO_SLOT {
                return Some(slot as usize);
            }
        }
        if self.sparse.is_empty() {
            return None;
        }
        self.sparse.get(&id).map(|&slot| slot as usize)
    }

    /// Opens a new account; `None` if the slot count would overflow `u32`.
    pub fn open(&mut self, id: AccountId) -> Option<usize> {
        debug_assert!(self.slot(id).is_none());
        let slot = u32::try_from(self.ids.len())
            .ok()
            .filter(|&s| s != NO_SLOT)?;
        let covered = self.direct.len() as u64;
        if id < DIRECT_IDS_MAX && id < (covered * 2).max(DIRECT_IDS_MIN) {
            if id >= covered {
                let len = (id + 1)
                    .next_power_of_two()
                    .clamp(DIRECT_IDS_MIN, DIRECT_IDS_MAX);
                self.direct.resize(len as usize, NO_SLOT);
            }
            self.direct[id as usize] = slot;
        } else {
            self.sparse.insert(id, slot);
        }
        self.ids.push(id);
        self.lines.push(Account::default());
        Some(slot as usize)
    }

    /// Shares of `instrument` the account in `slot` owns.
    pub fn shares(&self, slot: usize, instrument: InstrumentId) -> u64 {
        self.lines[slot].held.get(instrument)
    }

    /// Changes the shares of `instrument` the account in `slot` owns by
    /// `delta` (see [`Held::change`]).
    pub fn change_shares(&mut self, slot: usize, instrument: InstrumentId, delta: i128) {
        let pairs = self.lines[slot].held.change(instrument, delta);
        self.holding_pairs = self.holding_pairs.wrapping_add_signed(pairs);
    }

    /// The holdings of the account in `slot`, by instrument.
    pub fn holdings_of(&self, slot: usize) -> impl Iterator<Item = (InstrumentId, u64)> + '_ {
        self.lines[slot].held.iter()
    }

    /// (account, instrument) pairs owned.
    pub fn holding_pairs(&self) -> usize {
        self.holding_pairs
    }

    /// Every holding as (slot, instrument, shares), by slot.
    pub fn holdings(&self) -> impl Iterator<Item = (usize, InstrumentId, u64)> + '_ {
        self.lines
            .iter()
            .enumerate()
            .flat_map(|(slot, line)| line.held.iter().map(move |(id, qty)| (slot, id, qty)))
    }

    /// Every holding in (account id, instrument) order, as the digest and
    /// snapshots list them.
    pub fn holdings_sorted(&self) -> BTreeMap<(AccountId, InstrumentId), u64> {
        self.holdings()
            .map(|(slot, id, qty)| ((self.ids[slot], id), qty))
            .collect()
    }

    /// Gives the accounts the holdings [`Self::holdings_sorted`] listed (a
    /// decoded snapshot's); `Err` names a holding of an account that is not
    /// open, or of nothing.
    pub fn restore_holdings(
        &mut self,
        sorted: BTreeMap<(AccountId, InstrumentId), u64>,
    ) -> Result<(), String> {
        for ((account, instrument), qty) in sorted {
            // The index is not checked yet (see `check_structure`): a slot
            // beyond the accounts is as good as none.
            let Some(slot) = self.slot(account).filter(|&slot| slot < self.lines.len()) else {
                return Err(format!(
                    "account {account} holds shares of instrument {} but is not open",
                    instrument.0
                ));
            };
            if qty == 0 {
                return Err(format!(
                    "account {account} holds 0 shares of instrument {}",
                    instrument.0
                ));
            }
            self.change_shares(slot, instrument, i128::from(qty));
        }
        Ok(())
    }

    /// The table's own consistency, which every lookup relies on: one slot
    /// per account in each column, each id found at its own slot (so no id
    /// twice), nothing else indexed, and every history within `history_max`.
    /// A snapshot's Ledger is checked so before it is used (see
    /// `Ledger::check_invariants`).
    pub fn check_structure(&self, history_max: u32) -> Result<(), String> {
        let len = self.ids.len();
        if self.lines.len() != len || len >= NO_SLOT as usize {
            return Err(format!(
                "account columns disagree: {len} ids, {} lines",
                self.lines.len()
            ));
        }
        let indexed =
            self.direct.iter().filter(|&&slot| slot != NO_SLOT).count() + self.sparse.len();
        if indexed != len {
            return Err(format!("{indexed} account ids indexed for {len} accounts"));
        }
        for (slot, &id) in self.ids.iter().enumerate() {
            if self.slot(id) != Some(slot) {
                return Err(format!("account {id} is not indexed at its slot {slot}"));
            }
        }
        for (line, id) in self.lines.iter().zip(&self.ids) {
            line.history
                .check_structure(history_max)
                .map_err(|e| format!("account {id}: {e}"))?;
        }
        Ok(())
    }

    /// Starts loading the direct-table entry for `id` (first prefetch stage).
    #[inline]
    pub fn prefetch_index(&self, id: AccountId) {
        if let Some(slot) = self.direct.get(id as usize) {
            prefetch(slot);
        }
    }

    /// Starts loading the account's line (second stage).
    #[inline]
    pub fn prefetch_account(&self, id: AccountId) {
        if let Some(slot) = self.slot(id) {
            prefetch(&self.lines[slot]);
        }
    }

    /// Starts loading the history slot the account's next entry goes to
    /// (third stage, once the header is in cache).
    #[inline]
    pub fn prefetch_history_slot(&self, id: AccountId, max: usize) {
        if let Some(slot) = self.slot(id) {
            // A 40-byte record may straddle two lines: load both ends.
            let record = self.lines[slot].history.next_slot(max);
            prefetch(record);
            prefetch(record.wrapping_byte_add(std::mem::size_of::<Record>() - 1));
        }
    }
}

impl Encode for Accounts {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.direct.encode(encoder)?;
        self.sparse.encode(encoder)?;
        self.ids.encode(encoder)?;
        // As a `Vec<Cash>` and a `Vec<History>` encode: length, then items.
        (self.lines.len() as u64).encode(encoder)?;
        for line in &self.lines {
            line.cash.encode(encoder)?;
        }
        (self.lines.len() as u64).encode(encoder)?;
        for line in &self.lines {
            line.history.encode(encoder)?;
        }
        Ok(())
    }
}

impl<Context> Decode<Context> for Accounts {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let direct = Decode::decode(decoder)?;
        let sparse = Decode::decode(decoder)?;
        let ids: Vec<AccountId> = Decode::decode(decoder)?;
        let cash: Vec<Cash> = Decode::decode(decoder)?;
        let histories: Vec<History> = Decode::decode(decoder)?;
        if cash.len() != ids.len() || histories.len() != ids.len() {
            return Err(DecodeError::OtherString(format!(
                "{} accounts with {} cash entries and {} histories",
                ids.len(),
                cash.len(),
                histories.len()
            )));
        }
        let lines = cash
            .into_iter()
            .zip(histories)
            .map(|(cash, history)| Account {
                cash,
                history,
                held: Held::default(),
            })
            .collect();
        Ok(Accounts {
            direct,
            sparse,
            ids,
            lines,
            holding_pairs: 0,
        })
    }
}

bincode::impl_borrow_decode!(Accounts);

/// One history entry as stored: 40 bytes (the public [`Entry`] is 56). The
/// account is implied by whose ring holds it; the kind rides in the top byte
/// of the sequence number, which stays below 2^56 (centuries at 10M
/// requests/s). A trade number needs a word of its own: every other field
/// uses its whole range (times and amounts up to `u64::MAX` / `i64::MAX`),
/// and trade numbers are unrelated to sequence numbers (one request can make
/// any number of trades), so none can be packed into the others losslessly.
/// It is 0 for entries that are not trades (trades are numbered from 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
#[repr(C)]
struct Record {
    seq_and_kind: u64,
    time_ms: u64,
    amount: i64,
    balance: i64,
    trade: u64,
}

const KIND_SHIFT: u32 = 56;

impl Record {
    fn new(entry: &Entry) -> Record {
        debug_assert!(entry.seq < 1 << KIND_SHIFT);
        debug_assert_eq!(
            entry.trade.is_some(),
            matches!(entry.kind, EntryKind::Buy | EntryKind::Sell)
        );
        debug_assert_ne!(entry.trade, Some(0), "trades are numbered from 1");
        Record {
            seq_and_kind: entry.seq | (kind_code(entry.kind) << KIND_SHIFT),
            time_ms: entry.time_ms,
            amount: entry.amount,
            balance: entry.balance,
            trade: entry.trade.unwrap_or(0),
        }
    }

    fn entry(&self, account: AccountId) -> Entry {
        Entry {
            seq: self.seq_and_kind & ((1 << KIND_SHIFT) - 1),
            time_ms: self.time_ms,
            account,
            kind: kind_of(self.seq_and_kind >> KIND_SHIFT),
            amount: self.amount,
            balance: self.balance,
            trade: (self.trade != 0).then_some(self.trade),
        }
    }
}

fn kind_code(kind: EntryKind) -> u64 {
    match kind {
        EntryKind::Deposit => 0,
        EntryKind::Withdrawal => 1,
        EntryKind::TransferOut => 2,
        EntryKind::TransferIn => 3,
        EntryKind::Rebate => 4,
        EntryKind::Purchase => 5,
        EntryKind::Buy => 6,
        EntryKind::Sell => 7,
    }
}

fn kind_of(code: u64) -> EntryKind {
    match code {
        0 => EntryKind::Deposit,
        1 => EntryKind::Withdrawal,
        2 => EntryKind::TransferOut,
        3 => EntryKind::TransferIn,
        4 => EntryKind::Rebate,
        5 => EntryKind::Purchase,
        6 => EntryKind::Buy,
        _ => EntryKind::Sell,
    }
}

/// An account's newest entries: a ring that grows like a `Vec` up to the
/// configured maximum, then overwrites its oldest entry in place, so a full
/// ring costs one store per balance change and never reallocates.
#[derive(Clone, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub(super) struct History {
    records: Vec<Record>,
    /// Where the next entry goes once the ring is full (the oldest entry).
    oldest: u32,
    /// Whether retention ever dropped an entry, so `history` can say its
    /// answer was cut. A flag, not a count: it fits in the header's padding
    /// (the header stays 32 bytes) and is all the answer needs.
    dropped: bool,
}

impl History {
    pub fn push(&mut self, entry: &Entry, max: usize) {
        if self.records.len() < max {
            self.records.push(Record::new(entry));
            return;
        }
        self.dropped = true;
        if max > 0 {
            self.records[self.oldest as usize] = Record::new(entry);
            self.oldest = (self.oldest + 1) % max as u32;
        }
    }

    /// The ring's shape `push` and `newest` rely on: at most `max` records,
    /// and the oldest one's position inside them (0 until the ring is full).
    fn check_structure(&self, max: u32) -> Result<(), String> {
        let len = self.records.len();
        let oldest = self.oldest as usize;
        let fits = len <= max as usize && (oldest == 0 || oldest < len && len == max as usize);
        if !fits {
            return Err(format!(
                "history of {len} records (at most {max}) with its oldest at {oldest}"
            ));
        }
        Ok(())
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether entries older than those kept were dropped.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// The account's entries from newest to oldest.
    pub fn newest(&self, account: AccountId) -> impl Iterator<Item = Entry> + '_ {
        let (older, newer) = self.records.split_at(self.oldest as usize);
        older
            .iter()
            .rev()
            .chain(newer.iter().rev())
            .map(move |r| r.entry(account))
    }

    fn next_slot(&self, max: usize) -> *const Record {
        let at = if self.records.len() < max {
            self.records.len()
        } else {
            self.oldest as usize
        };
        self.records.as_ptr().wrapping_add(at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dense_ids_use_the_direct_table_and_sparse_ids_the_map() {
        let mut a = Accounts::default();
        for id in 0..5_000 {
            assert_eq!(a.open(id), Some(id as usize));
        }
        assert!(a.direct.len() >= 5_000 && a.sparse.is_empty());
        assert_eq!(a.open(u64::MAX), Some(5_000));
        assert_eq!(a.open(1 << 40), Some(5_001));
        assert_eq!(a.sparse.len(), 2);
        assert_eq!(a.slot(4_999), Some(4_999));
        assert_eq!(a.slot(u64::MAX), Some(5_000));
        assert_eq!(a.slot(5_000), None);
        assert_eq!(a.slot(1 << 41), None);
    }

    fn entry(seq: u64) -> Entry {
        Entry {
            seq,
            time_ms: 0,
            account: 1,
            kind: crate::outcome::EntryKind::Deposit,
            amount: 1,
            balance: 1,
            trade: None,
        }
    }

    #[test]
    fn history_ring_keeps_the_newest_entries_newest_first() {
        let mut h = History::default();
        for seq in 1..=7 {
            h.push(&entry(seq), 3);
            let newest: Vec<u64> = h.newest(1).map(|e| e.seq).collect();
            let expected: Vec<u64> = (seq.saturating_sub(2).max(1)..=seq).rev().collect();
            assert_eq!(newest, expected);
        }
        assert_eq!(h.len(), 3);
        assert!(h.dropped());
        let mut none = History::default();
        none.push(&entry(1), 0);
        assert_eq!(none.len(), 0);
        assert!(none.dropped());
        let mut roomy = History::default();
        roomy.push(&entry(1), 2);
        roomy.push(&entry(2), 2);
        assert!(!roomy.dropped(), "full but nothing dropped yet");
        assert_eq!(std::mem::size_of::<History>(), 32);
        assert_eq!(std::mem::size_of::<Account>(), 64, "one cache line");
    }

    #[test]
    fn every_entry_kind_survives_the_compact_record() {
        for kind in [
            EntryKind::Deposit,
            EntryKind::Withdrawal,
            EntryKind::TransferOut,
            EntryKind::TransferIn,
            EntryKind::Rebate,
            EntryKind::Purchase,
            EntryKind::Buy,
            EntryKind::Sell,
        ] {
            let trade = matches!(kind, EntryKind::Buy | EntryKind::Sell).then_some(u64::MAX);
            let e = Entry {
                seq: (1 << 56) - 1,
                time_ms: u64::MAX,
                account: 9,
                kind,
                amount: i64::MAX,
                balance: 0,
                trade,
            };
            assert_eq!(Record::new(&e).entry(9), e);
        }
        assert_eq!(std::mem::size_of::<Record>(), 40);
    }

    #[test]
    fn holdings_listed_by_account_id_are_restored_to_the_same_accounts() {
        let ids = [u64::MAX, 5, 6, 2];
        let open = || {
            let mut a = Accounts::default();
            for id in ids {
                a.open(id);
            }
            a
        };
        let mut a = open();
        for (slot, id, qty) in [(3, 1, 2), (1, 0, 5), (3, 0, 1), (0, 7, 9)] {
            a.change_shares(slot, InstrumentId(id), qty);
        }
        let sorted = a.holdings_sorted();
        let keys: Vec<_> = sorted.keys().copied().collect();
        assert_eq!(
            keys,
            [
                (2, InstrumentId(0)),
                (2, InstrumentId(1)),
                (5, InstrumentId(0)),
                (u64::MAX, InstrumentId(7))
            ]
        );
        let mut back = open();
        back.restore_holdings(sorted.clone()).unwrap();
        assert_eq!(
            (back.holdings_sorted(), back.holding_pairs()),
            (sorted.clone(), 4)
        );
        let mut stray = sorted.clone();
        stray.insert((42, InstrumentId(0)), 1);
        assert!(open()
            .restore_holdings(stray)
            .unwrap_err()
            .contains("account 42"));
        let mut zero = sorted;
        zero.insert((6, InstrumentId(3)), 0);
        assert!(open().restore_holdings(zero).is_err());
    }

    #[test]
    fn id_first_seen_as_sparse_is_still_found_after_the_table_grows() {
        let mut a = Accounts::default();
        assert_eq!(a.open(3_000), Some(0)); // beyond 2 × the empty table: sparse
        for id in 0..2_100 {
            a.open(id);
        }
        assert!(a.direct.len() > 3_000, "table grew over id 3000");
        assert_eq!(a.slot(3_000), Some(0));
    }
}
