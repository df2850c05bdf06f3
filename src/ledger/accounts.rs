//! Account storage laid out for the hot path.
//!
//! Cash (balance and hold, 16 bytes) sits in its own dense array, apart from
//! the colder id and history, so the state a deposit touches for a million
//! accounts (16 MB) stays in a 32 MB L3. Ids are the caller's, but most
//! callers number accounts densely, so ids below a growing bound go through a
//! direct `Vec<u32>` table (one array access, no hashing); other ids fall back
//! to a hash map. Measured with 1M random accounts, the hash map alone cost
//! ~40 ns more per lookup than the direct table.

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use crate::money::Units;
use crate::outcome::{Entry, EntryKind};
use crate::prefetch::prefetch;
use crate::request::AccountId;

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

#[derive(Clone, Debug, Default, Encode, Decode)]
pub(super) struct Accounts {
    direct: Vec<u32>,
    sparse: FxHashMap<AccountId, u32>,
    /// Per slot, in opening order: the caller's id, cash, and newest history.
    pub ids: Vec<AccountId>,
    pub cash: Vec<Cash>,
    pub histories: Vec<History>,
}

impl Accounts {
    pub fn with_capacity(accounts: usize) -> Accounts {
        let mut table = Accounts::default();
        table.ids.reserve_exact(accounts);
        table.cash.reserve_exact(accounts);
        table.histories.reserve_exact(accounts);
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
        self.cash.push(Cash::default());
        self.histories.push(History::default());
        Some(slot as usize)
    }

    /// Starts loading the direct-table entry for `id` (first prefetch stage).
    #[inline]
    pub fn prefetch_index(&self, id: AccountId) {
        if let Some(slot) = self.direct.get(id as usize) {
            prefetch(slot);
        }
    }

    /// Starts loading the account's cash and history header (second stage).
    #[inline]
    pub fn prefetch_account(&self, id: AccountId) {
        if let Some(slot) = self.slot(id) {
            prefetch(&self.cash[slot]);
            prefetch(&self.histories[slot]);
        }
    }

    /// Starts loading the history slot the account's next entry goes to
    /// (third stage, once the header is in cache).
    #[inline]
    pub fn prefetch_history_slot(&self, id: AccountId, max: usize) {
        if let Some(slot) = self.slot(id) {
            // A 40-byte record may straddle two lines: load both ends.
            let record = self.histories[slot].next_slot(max);
            prefetch(record);
            prefetch(record.wrapping_byte_add(std::mem::size_of::<Record>() - 1));
        }
    }
}

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
