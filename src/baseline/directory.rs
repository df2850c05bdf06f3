//! Finding a wallet's slot and an instrument's listing without a global lock
//! on the hot path: both tables are allocated up front and only ever grow,
//! so a lookup is an atomic load (or a `OnceLock` read) and only opening an
//! account or listing an instrument serializes on a set-up mutex.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::OnceLock;

use parking_lot::{Mutex, RwLock};
use rustc_hash::FxHashMap;

use super::Listing;
use crate::money::Units;
use crate::outcome::Reject;
use crate::request::{AccountId, InstrumentId, Symbol};

/// Account id → dense wallet slot (slots are handed out in opening order).
pub(super) struct Directory {
    /// For ids below the table size: slot + 1, or 0 while not open.
    direct: Box<[AtomicU32]>,
    /// Ids at or above the table size; only they pay for the read lock.
    sparse: RwLock<FxHashMap<AccountId, u32>>,
    /// Slot → the account id it was opened for.
    ids: Box<[AtomicU64]>,
    /// Slots published so far; a slot below it is fully opened.
    len: AtomicUsize,
    /// Serializes opening (set-up, not a hot operation).
    opening: Mutex<()>,
}

impl Directory {
    pub fn new(accounts_max: usize) -> Directory {
        let accounts_max = accounts_max.min(u32::MAX as usize - 1);
        Directory {
            direct: (0..accounts_max).map(|_| AtomicU32::new(0)).collect(),
            sparse: RwLock::new(FxHashMap::default()),
            ids: (0..accounts_max).map(|_| AtomicU64::new(0)).collect(),
            len: AtomicUsize::new(0),
            opening: Mutex::new(()),
        }
    }

    pub fn capacity(&self) -> usize {
        self.ids.len()
    }

    /// The slot of an open account.
    #[inline]
    pub fn slot(&self, account: AccountId) -> Result<usize, Reject> {
        let found = match self.direct.get(account as usize) {
            Some(entry) => entry.load(Ordering::Acquire).checked_sub(1),
            None => self.sparse.read().get(&account).copied(),
        };
        found
            .map(|slot| slot as usize)
            .ok_or(Reject::UnknownAccount(account))
    }

    /// Opens `account` in the next free slot. `opened` runs before the
    /// account becomes visible and while no other account can open, so a
    /// journal record appended there is ordered before any use of it.
    pub fn open(&self, account: AccountId, opened: impl FnOnce(usize)) -> Result<usize, Reject> {
        let _opening = self.opening.lock();
        if self.slot(account).is_ok() {
            return Err(Reject::AccountExists(account));
        }
        let slot = self.len.load(Ordering::Relaxed);
        if slot == self.capacity() {
            return Err(Reject::Overflow("the number of accounts"));
        }
        self.ids[slot].store(account, Ordering::Relaxed);
        opened(slot);
        let published = slot as u32 + 1;
        match self.direct.get(account as usize) {
            Some(entry) => entry.store(published, Ordering::Release),
            None => {
                self.sparse.write().insert(account, slot as u32);
            }
        }
        self.len.store(slot + 1, Ordering::Release);
        Ok(slot)
    }

    /// Open accounts, which are exactly the slots below this.
    pub fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    pub fn id(&self, slot: usize) -> AccountId {
        self.ids[slot].load(Ordering::Relaxed)
    }
}

/// The listed instruments; their ids are their positions (0, 1, 2, …).
pub(super) struct Catalog {
    listings: Box<[OnceLock<Listing>]>,
    /// Symbol → id; also serializes listing (set-up, not a hot operation).
    index: Mutex<FxHashMap<Symbol, InstrumentId>>,
}

impl Catalog {
    pub fn new(instruments_max: usize) -> Catalog {
        Catalog {
            listings: (0..instruments_max).map(|_| OnceLock::new()).collect(),
            index: Mutex::new(FxHashMap::default()),
        }
    }

    /// Lists an instrument with the Ledger's checks, in its order. `listed`
    /// runs before the instrument becomes visible (see [`Directory::open`]).
    pub fn list(
        &self,
        symbol: Symbol,
        supply: u64,
        price: Units,
        listed: impl FnOnce(InstrumentId),
    ) -> Result<InstrumentId, Reject> {
        let mut index = self.index.lock();
        if index.contains_key(&symbol) {
            return Err(Reject::InstrumentExists(symbol));
        }
        if supply == 0 {
            return Err(Reject::InvalidAmount(
                "the supply must be greater than zero",
            ));
        }
        if price <= 0 {
            return Err(Reject::InvalidAmount("the price must be greater than zero"));
        }
        let position = index.len();
        let id = u32::try_from(position)
            .ok()
            .filter(|_| position < self.listings.len())
            .map(InstrumentId)
            .ok_or(Reject::Overflow("the number of instruments"))?;
        listed(id);
        let listing = Listing {
            symbol,
            supply,
            price,
        };
        // Ids are handed out once each under the index lock, so the slot is empty.
        let _ = self.listings[position].set(listing);
        index.insert(symbol, id);
        Ok(id)
    }

    #[inline]
    pub fn get(&self, id: InstrumentId) -> Result<&Listing, Reject> {
        self.listings
            .get(id.0 as usize)
            .and_then(OnceLock::get)
            .ok_or(Reject::UnknownInstrument(id))
    }

    /// Listed instruments, in listing order.
    pub fn iter(&self) -> impl Iterator<Item = (InstrumentId, &Listing)> {
        self.listings
            .iter()
            .map_while(OnceLock::get)
            .enumerate()
            .map(|(i, listing)| (InstrumentId(i as u32), listing))
    }
}
