//! Shares owned, by account slot (the index `accounts` gives an account):
//! one array access per change, next to the account's cash. The hash map by
//! account id it replaces cost a cache miss into a table of every owner
//! plus a heap list per owner (measured at 1M accounts: most of a
//! `reserve_then_confirm_pair`, with the allocations the lists made). Most
//! accounts own one instrument or none, so one holding sits inline in the
//! 16-byte slot and only an account owning several has a heap list. Each
//! account's holdings are kept in instrument order, the order `holdings`
//! answers in; a holding that reaches zero is removed.
//!
//! Snapshots encode holdings as (account id, instrument) pairs in order
//! (see `codec`) and the digest walks them in that order, so neither
//! depends on how they are stored.

use std::collections::BTreeMap;

use crate::prefetch::prefetch;
use crate::request::{AccountId, InstrumentId};

/// One account's holdings (shares > 0), by instrument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
enum Held {
    #[default]
    Nothing,
    /// Fields apart, not a tuple, so the tag fits in the padding after
    /// the instrument: 16 bytes a slot.
    One(InstrumentId, u64),
    /// Two or more, by instrument.
    Many(Box<Vec<(InstrumentId, u64)>>),
}

impl Held {
    fn iter(&self) -> impl Iterator<Item = (InstrumentId, u64)> + '_ {
        let (one, many) = match self {
            Held::Nothing => (None, &[][..]),
            Held::One(id, qty) => (Some((*id, *qty)), &[][..]),
            Held::Many(list) => (None, &list[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }
}

#[derive(Clone, Debug, Default)]
pub(super) struct Holdings {
    /// By account slot; slots past the end own nothing.
    by_slot: Vec<Held>,
    /// (account, instrument) pairs owned.
    pairs: usize,
}

impl Holdings {
    /// Room for `accounts` slots up front, like the accounts' own arrays.
    pub fn with_capacity(accounts: usize) -> Holdings {
        Holdings {
            by_slot: Vec::with_capacity(accounts),
            pairs: 0,
        }
    }

    /// Shares of `instrument` that the account in `slot` owns.
    pub fn get(&self, slot: usize, instrument: InstrumentId) -> u64 {
        match self.by_slot.get(slot) {
            Some(&Held::One(id, qty)) if id == instrument => qty,
            Some(Held::Many(list)) => list
                .binary_search_by_key(&instrument, |&(id, _)| id)
                .map_or(0, |at| list[at].1),
            _ => 0,
        }
    }

    /// Changes the shares of `instrument` the account in `slot` owns by
    /// `delta`. The caller has checked that the result is within
    /// 0..=u64::MAX; a holding that reaches zero is removed.
    pub fn change(&mut self, slot: usize, instrument: InstrumentId, delta: i128) {
        if slot >= self.by_slot.len() {
            if delta == 0 {
                return;
            }
            self.by_slot.resize(slot + 1, Held::Nothing);
        }
        let held = &mut self.by_slot[slot];
        match held {
            Held::Nothing => {
                if delta != 0 {
                    *held = Held::One(instrument, delta as u64);
                    self.pairs += 1;
                }
            }
            Held::One(id, qty) if *id == instrument => {
                *qty = (i128::from(*qty) + delta) as u64;
                if *qty == 0 {
                    *held = Held::Nothing;
                    self.pairs -= 1;
                }
            }
            Held::One(id, qty) => {
                if delta != 0 {
                    let (old, new) = ((*id, *qty), (instrument, delta as u64));
                    let list = if old.0 < instrument {
                        vec![old, new]
                    } else {
                        vec![new, old]
                    };
                    *held = Held::Many(Box::new(list));
                    self.pairs += 1;
                }
            }
            Held::Many(list) => match list.binary_search_by_key(&instrument, |&(id, _)| id) {
                Ok(at) => {
                    let qty = (i128::from(list[at].1) + delta) as u64;
                    if qty == 0 {
                        list.remove(at);
                        self.pairs -= 1;
                        if let [(id, qty)] = list[..] {
                            *held = Held::One(id, qty);
                        }
                    } else {
                        list[at].1 = qty;
                    }
                }
                Err(at) => {
                    if delta != 0 {
                        list.insert(at, (instrument, delta as u64));
                        self.pairs += 1;
                    }
                }
            },
        }
    }

    /// Starts loading the holdings slot of the account in `slot`.
    #[inline]
    pub fn prefetch(&self, slot: usize) {
        if let Some(held) = self.by_slot.get(slot) {
            prefetch(held);
        }
    }

    /// The holdings of the account in `slot`, by instrument.
    pub fn of(&self, slot: usize) -> impl Iterator<Item = (InstrumentId, u64)> + '_ {
        self.by_slot.get(slot).into_iter().flat_map(Held::iter)
    }

    /// (account, instrument) pairs owned.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Every holding as (slot, instrument, shares), by slot.
    pub fn iter(&self) -> impl Iterator<Item = (usize, InstrumentId, u64)> + '_ {
        self.by_slot
            .iter()
            .enumerate()
            .flat_map(|(slot, held)| held.iter().map(move |(id, qty)| (slot, id, qty)))
    }

    /// Every holding in (account id, instrument) order, as the digest and
    /// snapshots list them; `ids` maps slots to account ids.
    pub fn sorted(&self, ids: &[AccountId]) -> BTreeMap<(AccountId, InstrumentId), u64> {
        self.iter()
            .map(|(slot, id, qty)| ((ids[slot], id), qty))
            .collect()
    }

    /// Holdings listed as [`Self::sorted`] gives them, with `slot` finding
    /// each account's slot; `Err` names a holding of no account, or of none.
    pub fn from_sorted(
        sorted: BTreeMap<(AccountId, InstrumentId), u64>,
        slot: impl Fn(AccountId) -> Option<usize>,
    ) -> Result<Holdings, String> {
        let mut holdings = Holdings::default();
        for ((account, instrument), qty) in sorted {
            let Some(at) = slot(account) else {
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
            holdings.change(at, instrument, i128::from(qty));
        }
        Ok(holdings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_change_per_slot_in_instrument_order_and_drop_at_zero() {
        let mut h = Holdings::default();
        h.change(7, InstrumentId(2), 5);
        h.change(7, InstrumentId(0), 1);
        h.change(7, InstrumentId(2), 3);
        h.change(1, InstrumentId(9), 4);
        h.change(7, InstrumentId(1), 6);
        let of = |h: &Holdings, slot| h.of(slot).collect::<Vec<_>>();
        assert_eq!(
            of(&h, 7),
            [
                (InstrumentId(0), 1),
                (InstrumentId(1), 6),
                (InstrumentId(2), 8)
            ]
        );
        assert_eq!(of(&h, 1), [(InstrumentId(9), 4)]);
        assert_eq!(of(&h, 2), []);
        assert_eq!(of(&h, 100), []);
        assert_eq!(
            (h.get(7, InstrumentId(2)), h.get(7, InstrumentId(3))),
            (8, 0)
        );
        assert_eq!(h.len(), 4);
        let ids: Vec<AccountId> = (0..8).map(|slot| 100 - slot).collect();
        let sorted: Vec<_> = h.sorted(&ids).into_iter().collect();
        assert_eq!(
            sorted,
            vec![
                ((93, InstrumentId(0)), 1),
                ((93, InstrumentId(1)), 6),
                ((93, InstrumentId(2)), 8),
                ((99, InstrumentId(9)), 4),
            ]
        );
        h.change(7, InstrumentId(2), -8);
        h.change(7, InstrumentId(1), -6);
        h.change(1, InstrumentId(9), -4);
        assert_eq!(of(&h, 7), [(InstrumentId(0), 1)]);
        assert_eq!(h.by_slot[7], Held::One(InstrumentId(0), 1));
        assert_eq!(of(&h, 1), []);
        assert_eq!(h.len(), 1);
        h.change(7, InstrumentId(0), -1);
        assert!(h.iter().next().is_none() && h.len() == 0, "nothing left");
        h.change(50, InstrumentId(0), 0);
        assert_eq!(h.by_slot.len(), 8, "a zero change to nothing grows nothing");
        assert_eq!(std::mem::size_of::<Held>(), 16);
    }

    #[test]
    fn holdings_rebuilt_from_their_sorted_list_list_the_same() {
        let mut h = Holdings::default();
        for (slot, id, qty) in [(3, 1, 2), (1, 0, 5), (3, 0, 1), (0, 7, 9)] {
            h.change(slot, InstrumentId(id), qty);
        }
        let ids: Vec<AccountId> = vec![u64::MAX, 5, 6, 2];
        let sorted = h.sorted(&ids);
        let slot = |account| ids.iter().position(|&id| id == account);
        let back = Holdings::from_sorted(sorted.clone(), slot).unwrap();
        assert_eq!(back.sorted(&ids), sorted);
        assert_eq!(back.len(), 4);
        let mut stray = sorted.clone();
        stray.insert((42, InstrumentId(0)), 1);
        assert!(Holdings::from_sorted(stray, slot)
            .unwrap_err()
            .contains("account 42"));
        let mut zero = sorted;
        zero.insert((5, InstrumentId(3)), 0);
        assert!(Holdings::from_sorted(zero, slot).is_err());
    }
}
