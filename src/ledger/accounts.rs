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
    /// Every account's history records (each line holds its ring's header).
    histories: HistoryPool,
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

    /// Records `entry` in the history of the account in `slot`, dropping
    /// its oldest entry if it holds `max` already.
    #[cfg(test)]
    pub fn push_history(&mut self, slot: usize, entry: &Entry, max: u32) {
        self.lines[slot]
            .history
            .push(&mut self.histories, Record::new(entry), max);
    }

    /// Records a balance change in the history of the account in `slot`, as
    /// [`Self::push_history`] would record its entry. The account's id is
    /// not needed (a history is the account's own, and an entry gets the id
    /// back when read), so a caller that knows only the slot does not have
    /// to read the id table, a cache miss of its own at a million accounts.
    #[inline]
    pub fn push_change(&mut self, slot: usize, change: Change, max: u32) {
        self.lines[slot]
            .history
            .push(&mut self.histories, Record::of(change), max);
    }

    /// The history of the account in `slot`: (entries kept, whether older
    /// ones were dropped).
    pub fn history_len(&self, slot: usize) -> (usize, bool) {
        let history = &self.lines[slot].history;
        (history.len(), history.dropped())
    }

    /// The history entries of the account in `slot`, newest first.
    pub fn history_newest(&self, slot: usize) -> impl Iterator<Item = Entry> + '_ {
        self.lines[slot]
            .history
            .newest(&self.histories, self.ids[slot])
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
        let mut chunks = 0;
        for (line, id) in self.lines.iter().zip(&self.ids) {
            chunks += line
                .history
                .check_structure(&self.histories, history_max)
                .map_err(|e| format!("account {id}: {e}"))?;
        }
        if chunks != self.histories.len() {
            return Err(format!(
                "{} history chunks taken, {chunks} in the accounts' rings",
                self.histories.len()
            ));
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
    pub fn prefetch_history_slot(&self, id: AccountId, max: u32) {
        if let Some(slot) = self.slot(id) {
            if let Some(record) = self.lines[slot].history.next_slot(&self.histories, max) {
                // A 40-byte record may straddle two lines: load both ends.
                prefetch(record);
                prefetch(record.wrapping_byte_add(std::mem::size_of::<Record>() - 1));
            }
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
            // As the `Vec` ring's derived encoding: records, oldest, flag.
            let history = &line.history;
            (history.len() as u64).encode(encoder)?;
            for record in history.records(&self.histories) {
                record.encode(encoder)?;
            }
            history.oldest.encode(encoder)?;
            history.dropped.encode(encoder)?;
        }
        Ok(())
    }
}

impl Accounts {
    /// Decodes what [`Accounts::encode`] wrote, for a Ledger keeping at
    /// most `history_max` entries per account; a history that is no ring
    /// of at most that many is refused.
    pub fn decode<D: Decoder>(decoder: &mut D, history_max: u32) -> Result<Self, DecodeError> {
        let direct = Decode::decode(decoder)?;
        let sparse = Decode::decode(decoder)?;
        let ids: Vec<AccountId> = Decode::decode(decoder)?;
        let cash: Vec<Cash> = Decode::decode(decoder)?;
        let histories_len = u64::decode(decoder)?;
        if cash.len() != ids.len() || histories_len != ids.len() as u64 {
            return Err(DecodeError::OtherString(format!(
                "{} accounts with {} cash entries and {histories_len} histories",
                ids.len(),
                cash.len(),
            )));
        }
        let mut histories = HistoryPool::default();
        let mut lines = Vec::with_capacity(ids.len());
        // One list reused for every account's records.
        let mut records: Vec<Record> = Vec::new();
        for cash in cash {
            let len = usize::try_from(u64::decode(decoder)?)
                .map_err(|_| DecodeError::OtherString("a history's length".into()))?;
            decoder.claim_container_read::<Record>(len)?;
            records.clear();
            for _ in 0..len {
                records.push(Record::decode(decoder)?);
            }
            let oldest = u32::decode(decoder)?;
            let dropped = bool::decode(decoder)?;
            let history = History::load(&mut histories, &records, oldest, dropped, history_max)
                .map_err(DecodeError::OtherString)?;
            lines.push(Account {
                cash,
                history,
                held: Held::default(),
            });
        }
        Ok(Accounts {
            direct,
            sparse,
            ids,
            lines,
            histories,
            holding_pairs: 0,
        })
    }
}

/// A balance change as a history records it: an [`Entry`] without the
/// account (see [`Accounts::push_change`]).
#[derive(Clone, Copy, Debug)]
pub(super) struct Change {
    pub seq: u64,
    pub time_ms: u64,
    pub kind: EntryKind,
    pub amount: Units,
    pub balance: Units,
    pub trade: Option<u64>,
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
    const ZERO: Record = Record {
        seq_and_kind: 0,
        time_ms: 0,
        amount: 0,
        balance: 0,
        trade: 0,
    };

    #[cfg(test)]
    fn new(entry: &Entry) -> Record {
        Record::of(Change {
            seq: entry.seq,
            time_ms: entry.time_ms,
            kind: entry.kind,
            amount: entry.amount,
            balance: entry.balance,
            trade: entry.trade,
        })
    }

    #[inline]
    fn of(change: Change) -> Record {
        debug_assert!(change.seq < 1 << KIND_SHIFT);
        debug_assert_eq!(
            change.trade.is_some(),
            matches!(change.kind, EntryKind::Buy | EntryKind::Sell)
        );
        debug_assert_ne!(change.trade, Some(0), "trades are numbered from 1");
        Record {
            seq_and_kind: change.seq | (kind_code(change.kind) << KIND_SHIFT),
            time_ms: change.time_ms,
            amount: change.amount,
            balance: change.balance,
            trade: change.trade.unwrap_or(0),
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

/// Records per history chunk: three 40-byte records and the link to the
/// next chunk fill two cache lines.
const CHUNK_RECORDS: u32 = 3;
/// Chunks per page of the pool (2 MiB pages): the pool grows a page at a
/// time and never moves a chunk.
const PAGE_CHUNKS_BITS: u32 = 14;
const PAGE_CHUNKS: usize = 1 << PAGE_CHUNKS_BITS;
const NO_CHUNK: u32 = u32::MAX;

/// A piece of one account's history ring.
#[derive(Clone, Copy, Debug)]
#[repr(C, align(64))]
struct Chunk {
    records: [Record; CHUNK_RECORDS as usize],
    /// The ring's next chunk; `NO_CHUNK` after its last one (the ring
    /// wraps to its first chunk, which its header names).
    next: u32,
}

const EMPTY_CHUNK: Chunk = Chunk {
    records: [Record::ZERO; CHUNK_RECORDS as usize],
    next: NO_CHUNK,
};

/// Where every account's history lives: fixed-size chunks handed out in
/// order from pages that are never reallocated, so a ring grows by taking
/// the next chunk (no `malloc`, no copy) and accounts that never grow pay
/// nothing. A ring as a `Vec` per account grew 4 → 8 → 16 → 32 records
/// with a reallocation and a copy each time, which was most of a deposit's
/// and a rebate credit's cost while rings filled (`cargo bench --bench
/// ledger`, `deposit_then_credit`). Chunks are never freed: accounts are
/// never closed, and a ring never shrinks.
#[derive(Clone, Debug, Default)]
pub(super) struct HistoryPool {
    pages: Vec<Vec<Chunk>>,
}

impl HistoryPool {
    /// A new empty chunk; panics only past 2^32 - 1 chunks (512 GiB).
    fn take(&mut self) -> u32 {
        if self
            .pages
            .last()
            .is_none_or(|page| page.len() == PAGE_CHUNKS)
        {
            self.pages.push(Vec::with_capacity(PAGE_CHUNKS));
        }
        let page = self.pages.len() - 1;
        let at = self.pages[page].len();
        let handle = u32::try_from((page << PAGE_CHUNKS_BITS) | at)
            .ok()
            .filter(|&h| h != NO_CHUNK)
            .expect("history pool past 2^32 chunks");
        self.pages[page].push(EMPTY_CHUNK);
        handle
    }

    #[inline]
    fn chunk_mut(&mut self, handle: u32) -> &mut Chunk {
        &mut self.pages[(handle >> PAGE_CHUNKS_BITS) as usize][handle as usize & (PAGE_CHUNKS - 1)]
    }

    fn get(&self, handle: u32) -> Option<&Chunk> {
        self.pages
            .get((handle >> PAGE_CHUNKS_BITS) as usize)?
            .get(handle as usize & (PAGE_CHUNKS - 1))
    }

    /// Chunks handed out.
    fn len(&self) -> usize {
        self.pages.iter().map(Vec::len).sum()
    }
}

/// An account's newest entries: a ring of up to the configured maximum,
/// whose records sit in chunks of the shared [`HistoryPool`], linked in
/// ring order. Record `p` of the ring (its physical position, as a `Vec`
/// ring would hold it) is record `p % 3` of the ring's `p / 3`-th chunk.
/// Until the ring is full, each entry goes to the next position; then each
/// overwrites the oldest in place, so a full ring costs one store per
/// balance change. The header names the chunk the next entry goes to,
/// taken as soon as the previous entry fills its chunk, so the next slot's
/// address is known without reading the ring (see `prefetch_history_slot`).
///
/// Snapshots encode a history exactly as the `Vec` ring did: its records
/// by position, then the oldest's position, then the dropped flag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct History {
    /// The chunk holding position 0; `NO_CHUNK` while empty.
    first: u32,
    /// The chunk holding the position the next entry goes to.
    next_chunk: u32,
    /// Records held (at most the maximum).
    len: u32,
    /// Where the next entry goes once the ring is full (the oldest entry);
    /// 0 until the ring is full.
    oldest: u32,
    /// Whether retention ever dropped an entry, so `history` can say its
    /// answer was cut. A flag, not a count: all the answer needs.
    dropped: bool,
}

impl Default for History {
    fn default() -> Self {
        History {
            first: NO_CHUNK,
            next_chunk: NO_CHUNK,
            len: 0,
            oldest: 0,
            dropped: false,
        }
    }
}

impl History {
    fn push(&mut self, pool: &mut HistoryPool, record: Record, max: u32) {
        let position = if self.len < max {
            if self.len == 0 {
                self.first = pool.take();
                self.next_chunk = self.first;
            }
            self.len += 1;
            self.len - 1
        } else {
            self.dropped = true;
            if max == 0 {
                return;
            }
            let oldest = self.oldest;
            self.oldest = if oldest + 1 == max { 0 } else { oldest + 1 };
            oldest
        };
        let chunk = pool.chunk_mut(self.next_chunk);
        chunk.records[(position % CHUNK_RECORDS) as usize] = record;
        let next = self.next_position(max);
        if next == 0 {
            self.next_chunk = self.first;
        } else if next.is_multiple_of(CHUNK_RECORDS) {
            self.next_chunk = match chunk.next {
                // Growing: the ring takes its next chunk.
                NO_CHUNK => {
                    let taken = pool.take();
                    pool.chunk_mut(self.next_chunk).next = taken;
                    taken
                }
                // Full: the ring's next chunk is already there.
                linked => linked,
            };
        }
    }

    /// The position the next entry goes to.
    fn next_position(&self, max: u32) -> u32 {
        if self.len < max {
            self.len
        } else {
            self.oldest
        }
    }

    /// The ring's chunks in order.
    fn chunks<'p>(&self, pool: &'p HistoryPool) -> impl Iterator<Item = (u32, &'p Chunk)> + 'p {
        let mut at = self.first;
        std::iter::from_fn(move || {
            let chunk = pool.get(at)?;
            let handle = at;
            at = chunk.next;
            Some((handle, chunk))
        })
    }

    /// The records by position.
    fn records<'p>(&self, pool: &'p HistoryPool) -> impl Iterator<Item = &'p Record> + 'p {
        self.chunks(pool)
            .flat_map(|(_, chunk)| chunk.records.iter())
            .take(self.len as usize)
    }

    /// Rebuilds a ring from its records by position, its oldest's position
    /// and its flag (a snapshot's), with the chunks `push` would have taken;
    /// `Err` when they do not make a ring of at most `max` records.
    fn load(
        pool: &mut HistoryPool,
        records: &[Record],
        oldest: u32,
        dropped: bool,
        max: u32,
    ) -> Result<History, String> {
        let mut h = History {
            len: u32::try_from(records.len()).unwrap_or(u32::MAX),
            oldest,
            dropped,
            ..History::default()
        };
        h.check_shape(max)?;
        let mut last = NO_CHUNK;
        for (position, &record) in records.iter().enumerate() {
            if position % CHUNK_RECORDS as usize == 0 {
                let taken = pool.take();
                if last == NO_CHUNK {
                    h.first = taken;
                } else {
                    pool.chunk_mut(last).next = taken;
                }
                last = taken;
            }
            pool.chunk_mut(last).records[position % CHUNK_RECORDS as usize] = record;
        }
        if h.len > 0 {
            let next = h.next_position(max);
            h.next_chunk = if next == h.len && next.is_multiple_of(CHUNK_RECORDS) {
                let taken = pool.take();
                pool.chunk_mut(last).next = taken;
                taken
            } else {
                h.chunks(pool)
                    .nth((next / CHUNK_RECORDS) as usize)
                    .map_or(NO_CHUNK, |(handle, _)| handle)
            };
        }
        Ok(h)
    }

    /// At most `max` records, and the oldest one's position inside them (0
    /// until the ring is full).
    fn check_shape(&self, max: u32) -> Result<(), String> {
        let (len, oldest) = (self.len, self.oldest);
        let fits = len <= max && (oldest == 0 || oldest < len && len == max);
        if !fits {
            return Err(format!(
                "history of {len} records (at most {max}) with its oldest at {oldest}"
            ));
        }
        Ok(())
    }

    /// The ring's shape `push` and `newest` rely on: `check_shape`, and
    /// the chunks `push` would have taken for it, linked in order, the
    /// next entry's chunk named; returns the chunks used.
    fn check_structure(&self, pool: &HistoryPool, max: u32) -> Result<usize, String> {
        self.check_shape(max)?;
        if self.len == 0 {
            return if self.first == NO_CHUNK && self.next_chunk == NO_CHUNK {
                Ok(0)
            } else {
                Err("an empty history with chunks".into())
            };
        }
        let next = self.next_position(max);
        // The chunk for the next position is taken as soon as the previous
        // one is full, before the ring is.
        let positions = if next == self.len {
            self.len + 1
        } else {
            self.len
        };
        let expected = positions.div_ceil(CHUNK_RECORDS) as usize;
        let mut next_chunk = None;
        let mut used = 0;
        for (i, (handle, _)) in self.chunks(pool).take(expected + 1).enumerate() {
            if i == (next / CHUNK_RECORDS) as usize {
                next_chunk = Some(handle);
            }
            used += 1;
        }
        if used != expected || next_chunk != Some(self.next_chunk) {
            return Err(format!(
                "history of {} records in {used} chunks (expected {expected}), next entry's chunk {:?} (expected {})",
                self.len, next_chunk, self.next_chunk
            ));
        }
        Ok(used)
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// Whether entries older than those kept were dropped.
    pub fn dropped(&self) -> bool {
        self.dropped
    }

    /// The account's entries from newest to oldest.
    fn newest<'p>(
        &self,
        pool: &'p HistoryPool,
        account: AccountId,
    ) -> impl Iterator<Item = Entry> + 'p {
        let records: Vec<&Record> = self.records(pool).collect();
        let oldest = (self.oldest as usize).min(records.len());
        (0..oldest)
            .rev()
            .chain((oldest..records.len()).rev())
            .map(move |position| records[position].entry(account))
    }

    fn next_slot(&self, pool: &HistoryPool, max: u32) -> Option<*const Record> {
        let chunk = pool.get(self.next_chunk)?;
        Some(&chunk.records[(self.next_position(max) % CHUNK_RECORDS) as usize])
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

    fn newest_seqs(a: &Accounts, slot: usize) -> Vec<u64> {
        a.history_newest(slot).map(|e| e.seq).collect()
    }

    #[test]
    fn history_ring_keeps_the_newest_entries_newest_first() {
        let mut a = Accounts::default();
        a.open(1);
        for seq in 1..=7 {
            a.push_history(0, &entry(seq), 3);
            let expected: Vec<u64> = (seq.saturating_sub(2).max(1)..=seq).rev().collect();
            assert_eq!(newest_seqs(&a, 0), expected);
        }
        assert_eq!(a.history_len(0), (3, true));
        a.open(2);
        a.push_history(1, &entry(1), 0);
        assert_eq!(a.history_len(1), (0, true));
        a.open(3);
        a.push_history(2, &entry(1), 2);
        a.push_history(2, &entry(2), 2);
        assert_eq!(a.history_len(2), (2, false), "full but nothing dropped yet");
        assert_eq!(std::mem::size_of::<History>(), 20);
        assert_eq!(std::mem::size_of::<Account>(), 64, "one cache line");
        assert_eq!(std::mem::size_of::<Chunk>(), 128, "two cache lines");
    }

    /// The ring as it was before the pool (a `Vec` per account), whose
    /// snapshot encoding the pool's rings keep.
    #[derive(Default, Encode)]
    struct VecRing {
        records: Vec<Record>,
        oldest: u32,
        dropped: bool,
    }

    impl VecRing {
        fn push(&mut self, entry: &Entry, max: usize) {
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
    }

    fn encoded(value: impl Encode) -> Vec<u8> {
        bincode::encode_to_vec(value, bincode::config::standard()).unwrap()
    }

    /// Every retention limit around the chunk size, every fill level: the
    /// pool's rings answer as the `Vec` ring did, take only the chunks they
    /// need, pass their structure check after each entry, and encode to the
    /// `Vec` ring's bytes; decoding gives the same rings, which go on the
    /// same way as the originals.
    #[test]
    fn pooled_rings_match_the_vec_ring_and_survive_a_snapshot() {
        for max in [0u32, 1, 2, 3, 4, 5, 6, 7, 9, 32] {
            let mut a = Accounts::default();
            let mut rings = Vec::new();
            // Account k receives k entries (interleaved with the others,
            // so chunks of different accounts mix in the pool).
            let accounts = 3 * max as usize + 5;
            for id in 0..accounts as u64 {
                a.open(id * 7);
                rings.push(VecRing::default());
            }
            let mut seq = 0;
            for round in 0..accounts {
                for (slot, ring) in rings.iter_mut().enumerate().skip(round) {
                    seq += 1;
                    let e = entry(seq);
                    a.push_history(slot, &e, max);
                    ring.push(&e, max as usize);
                }
                a.check_structure(max).unwrap();
            }
            for (slot, ring) in rings.iter().enumerate() {
                let expected: Vec<u64> = (0..ring.records.len())
                    .map(|p| {
                        let p = (ring.oldest as usize + ring.records.len() - 1 - p)
                            % ring.records.len();
                        ring.records[p].seq_and_kind
                    })
                    .collect();
                assert_eq!(newest_seqs(&a, slot), expected, "max {max}, slot {slot}");
                assert_eq!(a.history_len(slot), (ring.records.len(), ring.dropped));
                let h = a.lines[slot].history;
                let records: Vec<Record> = h.records(&a.histories).copied().collect();
                assert_eq!(
                    encoded((&records, h.oldest, h.dropped)),
                    encoded(ring),
                    "max {max}, slot {slot}: snapshot bytes"
                );
            }
            // Never more chunks than the records need, plus the next one.
            let records: usize = rings.iter().map(|r| r.records.len()).sum();
            assert!(a.histories.len() <= records.div_ceil(3) + accounts);

            let bytes = encoded(&a);
            let mut decoder = bincode::de::DecoderImpl::new(
                bincode::de::read::SliceReader::new(&bytes),
                bincode::config::standard(),
                (),
            );
            let mut back = Accounts::decode(&mut decoder, max).unwrap();
            back.check_structure(max).unwrap();
            assert_eq!(encoded(&back), bytes, "max {max}: re-encoded");
            for slot in 0..accounts {
                assert_eq!(newest_seqs(&back, slot), newest_seqs(&a, slot));
                assert_eq!(back.history_len(slot), a.history_len(slot));
            }
            for slot in 0..accounts {
                for _ in 0..4 {
                    seq += 1;
                    a.push_history(slot, &entry(seq), max);
                    back.push_history(slot, &entry(seq), max);
                }
                assert_eq!(newest_seqs(&back, slot), newest_seqs(&a, slot));
            }
            back.check_structure(max).unwrap();
            assert_eq!(encoded(&back), encoded(&a), "max {max}: after more entries");
        }
    }

    #[test]
    fn a_snapshot_history_that_is_no_ring_is_refused() {
        let decode = |rings: Vec<VecRing>, max: u32| {
            let bytes = encoded((
                (Vec::<u32>::new(), FxHashMap::<AccountId, u32>::default()),
                (0..rings.len() as u64).collect::<Vec<AccountId>>(),
                vec![Cash::default(); rings.len()],
                rings,
            ));
            let mut decoder = bincode::de::DecoderImpl::new(
                bincode::de::read::SliceReader::new(&bytes),
                bincode::config::standard(),
                (),
            );
            Accounts::decode(&mut decoder, max).map(|_| ())
        };
        let ring = |len: u64, oldest: u32| VecRing {
            records: (1..=len).map(|seq| Record::new(&entry(seq))).collect(),
            oldest,
            dropped: false,
        };
        assert!(decode(vec![ring(3, 0), ring(4, 2)], 4).is_ok());
        let too_long = decode(vec![ring(5, 0)], 4).unwrap_err().to_string();
        assert!(too_long.contains("5 records (at most 4)"), "{too_long}");
        assert!(decode(vec![ring(3, 1)], 4).is_err(), "oldest before full");
        assert!(decode(vec![ring(4, 4)], 4).is_err(), "oldest past the end");
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
