//! Shares owned by one account, kept in its line of `accounts` next to its
//! cash: one access per change. The hash map by account id this replaces
//! cost a cache miss into a table of every owner plus a heap list per owner
//! (measured at 1M accounts: most of a `reserve_then_confirm_pair`, with the
//! allocations the lists made). Most accounts own one instrument or none,
//! so one holding sits inline in 16 bytes and only an account owning
//! several has a heap list, in instrument order (the order `holdings`
//! answers in); a holding that reaches zero is removed.
//!
//! Snapshots encode holdings as (account id, instrument) pairs in order
//! (see `codec`) and the digest walks them in that order, so neither
//! depends on how they are stored.

use crate::request::InstrumentId;

/// One account's holdings (shares > 0), by instrument.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Held {
    #[default]
    Nothing,
    /// Fields apart, not a tuple, so the tag fits in the padding after
    /// the instrument: 16 bytes a slot.
    One(InstrumentId, u64),
    /// Two or more, by instrument. Boxed: a thin pointer keeps the slot at
    /// 16 bytes, where a `Vec` (24) would make every account's line longer.
    #[allow(clippy::box_collection)]
    Many(Box<Vec<(InstrumentId, u64)>>),
}

impl Held {
    pub fn iter(&self) -> impl Iterator<Item = (InstrumentId, u64)> + '_ {
        let (one, many) = match self {
            Held::Nothing => (None, &[][..]),
            Held::One(id, qty) => (Some((*id, *qty)), &[][..]),
            Held::Many(list) => (None, &list[..]),
        };
        one.into_iter().chain(many.iter().copied())
    }

    /// Shares of `instrument` owned.
    pub fn get(&self, instrument: InstrumentId) -> u64 {
        match self {
            &Held::One(id, qty) if id == instrument => qty,
            Held::Many(list) => list
                .binary_search_by_key(&instrument, |&(id, _)| id)
                .map_or(0, |at| list[at].1),
            _ => 0,
        }
    }

    /// Changes the shares of `instrument` owned by `delta`; returns how
    /// many (account, instrument) pairs that adds (-1, 0 or 1). The caller
    /// has checked that the result is within 0..=u64::MAX; a holding that
    /// reaches zero is removed.
    pub fn change(&mut self, instrument: InstrumentId, delta: i128) -> isize {
        match self {
            Held::Nothing => {
                if delta == 0 {
                    return 0;
                }
                *self = Held::One(instrument, delta as u64);
                1
            }
            Held::One(id, qty) if *id == instrument => {
                *qty = (i128::from(*qty) + delta) as u64;
                if *qty != 0 {
                    return 0;
                }
                *self = Held::Nothing;
                -1
            }
            Held::One(id, qty) => {
                if delta == 0 {
                    return 0;
                }
                let (old, new) = ((*id, *qty), (instrument, delta as u64));
                let list = if old.0 < instrument {
                    vec![old, new]
                } else {
                    vec![new, old]
                };
                *self = Held::Many(Box::new(list));
                1
            }
            Held::Many(list) => match list.binary_search_by_key(&instrument, |&(id, _)| id) {
                Ok(at) => {
                    let qty = (i128::from(list[at].1) + delta) as u64;
                    if qty != 0 {
                        list[at].1 = qty;
                        return 0;
                    }
                    list.remove(at);
                    if let [(id, qty)] = list[..] {
                        *self = Held::One(id, qty);
                    }
                    -1
                }
                Err(at) => {
                    if delta == 0 {
                        return 0;
                    }
                    list.insert(at, (instrument, delta as u64));
                    1
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_change_in_instrument_order_drop_at_zero_and_count_pairs() {
        let mut h = Held::default();
        let mut pairs = 0;
        for (id, delta) in [(2, 5), (0, 1), (2, 3), (1, 6)] {
            pairs += h.change(InstrumentId(id), delta);
        }
        assert_eq!(
            h.iter().collect::<Vec<_>>(),
            [
                (InstrumentId(0), 1),
                (InstrumentId(1), 6),
                (InstrumentId(2), 8)
            ]
        );
        assert_eq!(
            (pairs, h.get(InstrumentId(2)), h.get(InstrumentId(3))),
            (3, 8, 0)
        );
        pairs += h.change(InstrumentId(2), -8);
        pairs += h.change(InstrumentId(1), -6);
        assert_eq!(h, Held::One(InstrumentId(0), 1), "back inline");
        assert_eq!(
            h.change(InstrumentId(5), 0),
            0,
            "a zero change adds nothing"
        );
        pairs += h.change(InstrumentId(0), -1);
        assert_eq!((h, pairs), (Held::Nothing, 0));
        assert_eq!(std::mem::size_of::<Held>(), 16);
    }
}
