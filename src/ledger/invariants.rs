//! The Ledger's invariants and its digest: the two ways the rest of the
//! system (tests, replay, debug builds) checks that state is right.

use std::num::NonZeroU64;

use xxhash_rust::xxh3::Xxh3;

use super::Ledger;
use crate::book::Side;
#[cfg(debug_assertions)]
use crate::request::Request;

/// Above this many accounts plus reservations, debug builds check only what
/// a request touched after each apply instead of the whole state.
#[cfg(debug_assertions)]
const FULL_CHECK_SIZE_MAX: usize = 4_096;

impl Ledger {
    /// Checks every invariant over the whole state, O(state):
    /// - money is conserved: Σ balances + Σ sale proceeds == deposited − withdrawn + rebated;
    /// - no balance, hold or available amount is negative;
    /// - each account's hold equals the cost of its open reservations;
    /// - per instrument, available + reserved + sold == supply, reserved equals
    ///   the open reservations' shares and sold equals the shares held;
    /// - every reservation with a TTL is in the expiry index and vice versa;
    /// - the count of pending rebates matches the queue;
    /// - each account's cash hold also covers its resting buys (qty ×
    ///   limit), and its shares held equal its resting sells, recomputed
    ///   from the books; no account holds more shares than it owns; every
    ///   resting order is indexed on its own book and nothing else is.
    ///
    /// First the structure every lookup relies on (see `check_structure`),
    /// so this never panics, whatever state it is given: it is what stands
    /// between a snapshot read from disk and the business thread.
    pub fn check_invariants(&self) -> Result<(), String> {
        self.check_structure()?;
        let mut held = vec![0i128; self.accounts.len()];
        let mut shares_held: std::collections::BTreeMap<(u64, crate::InstrumentId), u64> =
            std::collections::BTreeMap::new();
        let mut resting = 0usize;
        for (b, book) in self.books.iter().enumerate() {
            let instrument = crate::InstrumentId(b as u32);
            for slot in book.slots() {
                let o = book.at(slot);
                resting += 1;
                if self.orders.find(&self.books, o.id) != Some((instrument, slot)) {
                    return Err(format!("order {} is not indexed where it rests", o.id));
                }
                match o.side {
                    Side::Buy => {
                        let i = self
                            .index_of(o.owner)
                            .map_err(|_| format!("order {}: no account {}", o.id, o.owner))?;
                        held[i] += i128::from(o.price) * i128::from(o.qty);
                    }
                    Side::Sell => {
                        let shares = shares_held.entry((o.owner, instrument)).or_insert(0);
                        *shares = shares
                            .checked_add(o.qty)
                            .ok_or_else(|| format!("account {}: shares held overflow", o.owner))?;
                    }
                }
            }
        }
        if resting != self.orders.len() {
            return Err(format!(
                "{} orders indexed but {resting} rest on the books",
                self.orders.len()
            ));
        }
        let share_held: std::collections::BTreeMap<_, _> =
            self.share_held.iter().map(|(&k, &v)| (k, v)).collect();
        if shares_held != share_held {
            return Err(format!(
                "shares held {share_held:?} but resting sells need {shares_held:?}"
            ));
        }
        for (key, &qty) in &self.share_held {
            let owned = self
                .accounts
                .slot(key.0)
                .map_or(0, |slot| self.accounts.shares(slot, key.1));
            if qty > owned {
                return Err(format!("{key:?}: {qty} shares held, more than owned"));
            }
        }
        let mut reserved = vec![0u128; self.instruments.len()];
        for r in self.reservations.values() {
            held[r.account_index as usize] += i128::from(r.cost);
            reserved[r.instrument.0 as usize] += u128::from(r.qty);
        }
        let reservations = &self.reservations;
        self.expiries
            .check_structure(&self.timed_reservations(), |at, id| {
                super::expires_at(reservations, at, id)
            })?;
        let mut cash = 0i128;
        for (i, (line, id)) in self
            .accounts
            .lines
            .iter()
            .zip(&self.accounts.ids)
            .enumerate()
        {
            let a = &line.cash;
            if a.balance < 0 || a.held < 0 || a.held > a.balance {
                return Err(format!(
                    "account {id}: balance {} held {} breaks 0 <= held <= balance",
                    a.balance, a.held
                ));
            }
            if i128::from(a.held) != held[i] {
                return Err(format!(
                    "account {id}: held {} but open reservations and resting buys hold {}",
                    a.held, held[i]
                ));
            }
            cash += i128::from(a.balance);
        }
        let mut sold = vec![0u128; self.instruments.len()];
        for (_, id, qty) in self.accounts.holdings() {
            sold[id.0 as usize] += u128::from(qty);
        }
        for (i, inst) in self.instruments.iter().enumerate() {
            let total =
                u128::from(inst.available) + u128::from(inst.reserved) + u128::from(inst.sold);
            if total != u128::from(inst.supply) {
                return Err(format!(
                    "instrument {}: available {} + reserved {} + sold {} != supply {}",
                    inst.symbol, inst.available, inst.reserved, inst.sold, inst.supply
                ));
            }
            if u128::from(inst.reserved) != reserved[i] || u128::from(inst.sold) != sold[i] {
                return Err(format!(
                    "instrument {}: reserved {} sold {} but reservations hold {} and accounts hold {}",
                    inst.symbol, inst.reserved, inst.sold, reserved[i], sold[i]
                ));
            }
            cash = cash
                .checked_add(inst.proceeds)
                .ok_or("sale proceeds overflow")?;
        }
        let t = self.totals;
        let entered = t
            .deposited
            .checked_sub(t.withdrawn)
            .and_then(|net| net.checked_add(t.rebated));
        if Some(cash) != entered {
            return Err(format!(
                "money not conserved: balances + proceeds = {cash}, deposited {} - withdrawn {} + rebated {}",
                t.deposited, t.withdrawn, t.rebated
            ));
        }
        let pending = self.rebates.pending_counted();
        if pending != self.rebates.pending_len() {
            return Err(format!(
                "{pending} rebates pending but the count says {}",
                self.rebates.pending_len()
            ));
        }
        Ok(())
    }

    /// Each part's own consistency and every reference between parts: ids
    /// that index tables point inside them, so the checks above and the
    /// request handlers can index without a panic.
    fn check_structure(&self) -> Result<(), String> {
        let config = self.config;
        self.accounts
            .check_structure(config.history_per_account_max)?;
        self.closed_reservations
            .check_structure(config.closed_reservations_max)?;
        self.sessions.check_structure(config.sessions_max)?;
        self.rebates.check_structure()?;
        let instruments = self.instruments.len();
        if self.books.len() != instruments || self.instrument_index.len() != instruments {
            return Err(format!(
                "{instruments} instruments, {} books, {} symbols indexed",
                self.books.len(),
                self.instrument_index.len()
            ));
        }
        for (symbol, id) in &self.instrument_index {
            if self
                .instruments
                .get(id.0 as usize)
                .is_none_or(|inst| inst.symbol != *symbol)
            {
                return Err(format!("symbol {symbol} indexes instrument {}", id.0));
            }
        }
        for (&id, r) in &self.reservations {
            if r.account_index as usize >= self.accounts.len()
                || r.instrument.0 as usize >= instruments
            {
                return Err(format!("reservation {id} names no account or instrument"));
            }
        }
        if let Some((slot, id, _)) = self
            .accounts
            .holdings()
            .find(|(_, id, _)| id.0 as usize >= instruments)
        {
            return Err(format!(
                "account {} holds unlisted instrument {}",
                self.accounts.ids[slot], id.0
            ));
        }
        Ok(())
    }

    /// In debug builds: the whole state while it is small, otherwise the
    /// accounts the request named.
    #[cfg(debug_assertions)]
    pub(super) fn debug_check(&self, request: &Request) {
        if self.accounts.len() + self.reservations.len() <= FULL_CHECK_SIZE_MAX {
            if let Err(broken) = self.check_invariants() {
                panic!("ledger invariant broken after {request:?}: {broken}");
            }
            return;
        }
        for account in request.accounts().into_iter().flatten() {
            if let Ok(i) = self.index_of(account) {
                let a = &self.accounts.lines[i].cash;
                assert!(
                    0 <= a.held && a.held <= a.balance,
                    "account {account}: balance {} held {} after {request:?}",
                    a.balance,
                    a.held
                );
            }
        }
    }

    /// A stable 64-bit hash (XXH3) of the whole business state, fed in a
    /// defined order (accounts in opening order, maps sorted by key), so two
    /// ledgers that applied the same requests agree regardless of hash-map
    /// layout. The ledger's time is part of it (it decides future expiries);
    /// the last sequence number is not.
    pub fn digest(&self) -> u64 {
        let mut h = Xxh3::new();
        let mut put = |v: u64| h.update(&v.to_le_bytes());
        put(u64::from(self.config.history_per_account_max));
        put(u64::from(self.config.sessions_max));
        put(self.config.session_idle_ms_max);
        put(self.now_ms);
        put(self.accounts.len() as u64);
        let accounts = &self.accounts;
        for (slot, (&id, line)) in accounts.ids.iter().zip(&accounts.lines).enumerate() {
            let cash = &line.cash;
            let (history_len, dropped) = accounts.history_len(slot);
            put(id);
            put(cash.balance as u64);
            put(cash.held as u64);
            put(history_len as u64);
            put(u64::from(dropped));
            for e in accounts.history_newest(slot) {
                put(e.seq);
                put(e.time_ms);
                put(e.kind as u64);
                put(e.amount as u64);
                put(e.balance as u64);
                put(e.trade.unwrap_or(0));
            }
        }
        put(self.instruments.len() as u64);
        for inst in &self.instruments {
            for chunk in inst.symbol.bytes().chunks(8) {
                put(u64::from_le_bytes(chunk.try_into().expect("8-byte chunk")));
            }
            put(inst.supply);
            put(inst.available);
            put(inst.reserved);
            put(inst.sold);
            put(inst.price as u64);
            put(inst.proceeds as u64);
            put((inst.proceeds >> 64) as u64);
        }
        let mut open: Vec<_> = self.reservations.iter().collect();
        open.sort_unstable_by_key(|(&id, _)| id);
        put(open.len() as u64);
        for (&id, r) in open {
            put(id);
            put(self.accounts.ids[r.account_index as usize]);
            put(u64::from(r.instrument.0));
            put(r.qty);
            put(r.cost as u64);
            // No expiry hashes as 0, which no expiry time can be.
            put(r.expires_at_ms.map_or(0, NonZeroU64::get));
        }
        // In closing order: it decides which one is forgotten next.
        put(u64::from(self.config.closed_reservations_max));
        put(self.closed_reservations.len() as u64);
        for (id, how) in self.closed_reservations.iter() {
            put(id);
            put(how as u64);
        }
        put(self.accounts.holding_pairs() as u64);
        for ((account, id), qty) in self.accounts.holdings_sorted() {
            put(account);
            put(u64::from(id.0));
            put(qty);
        }
        put(self.share_held.len() as u64);
        let mut share_held: Vec<_> = self.share_held.iter().collect();
        share_held.sort_unstable_by_key(|(&key, _)| key);
        for (&(account, id), &qty) in share_held {
            put(account);
            put(u64::from(id.0));
            put(qty);
        }
        put(self.trades);
        for book in &self.books {
            put(book.digest());
        }
        put(self.sessions.digest());
        put(self.rebates.pending_len() as u64);
        for job in self.pending_rebates() {
            put(job.deposit_seq);
            put(job.account);
            put(job.amount as u64);
        }
        put(self.rebates.unpaid().count() as u64);
        for unpaid in self.rebates.unpaid() {
            put(unpaid.job.deposit_seq);
            put(unpaid.job.account);
            put(unpaid.job.amount as u64);
            put(unpaid.amount as u64);
        }
        let t = self.totals;
        for total in [t.deposited, t.withdrawn, t.rebated] {
            put(total as u64);
            put((total >> 64) as u64);
        }
        h.digest()
    }
}
