//! Shares owned, by account: one hash lookup per change, where the ordered
//! map it replaces, keyed by (account, instrument), walked a tree of every
//! pair owned (measured at 1M accounts, most of a share sale's cost). Each
//! account's holdings are a short list kept in instrument order, which is
//! the order `holdings` answers in; a holding that reaches zero is removed,
//! as the map removed it.
//!
//! Snapshots encode holdings exactly as the ordered map did, (account,
//! instrument) pairs in order, and the digest walks them in that order, so
//! snapshots and digests are unchanged.

use std::collections::BTreeMap;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use crate::request::{AccountId, InstrumentId};

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Holdings {
    /// Per account owning anything: (instrument, shares > 0), by instrument.
    by_account: FxHashMap<AccountId, Vec<(InstrumentId, u64)>>,
    /// (account, instrument) pairs owned.
    pairs: usize,
}

impl Holdings {
    /// Shares of `instrument` that `account` owns.
    pub fn get(&self, account: AccountId, instrument: InstrumentId) -> u64 {
        let held = self.of(account);
        match held.binary_search_by_key(&instrument, |&(id, _)| id) {
            Ok(at) => held[at].1,
            Err(_) => 0,
        }
    }

    /// Changes `account`'s shares of `instrument` by `delta`. The caller has
    /// checked that the result is within 0..=u64::MAX; a holding that
    /// reaches zero is removed.
    pub fn change(&mut self, account: AccountId, instrument: InstrumentId, delta: i128) {
        let held = self.by_account.entry(account).or_default();
        match held.binary_search_by_key(&instrument, |&(id, _)| id) {
            Ok(at) => {
                let qty = (i128::from(held[at].1) + delta) as u64;
                if qty == 0 {
                    held.remove(at);
                    self.pairs -= 1;
                    if held.is_empty() {
                        self.by_account.remove(&account);
                    }
                } else {
                    held[at].1 = qty;
                }
            }
            Err(at) => {
                let qty = delta as u64;
                if qty != 0 {
                    held.insert(at, (instrument, qty));
                    self.pairs += 1;
                } else if held.is_empty() {
                    self.by_account.remove(&account);
                }
            }
        }
    }

    /// `account`'s holdings, by instrument.
    pub fn of(&self, account: AccountId) -> &[(InstrumentId, u64)] {
        self.by_account.get(&account).map_or(&[], Vec::as_slice)
    }

    /// (account, instrument) pairs owned.
    pub fn len(&self) -> usize {
        self.pairs
    }

    /// Every holding, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = ((AccountId, InstrumentId), u64)> + '_ {
        self.by_account
            .iter()
            .flat_map(|(&account, held)| held.iter().map(move |&(id, qty)| ((account, id), qty)))
    }

    /// Every holding in (account, instrument) order, as the digest and
    /// snapshots list them.
    pub fn sorted(&self) -> BTreeMap<(AccountId, InstrumentId), u64> {
        self.iter().collect()
    }
}

impl Encode for Holdings {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        self.sorted().encode(encoder)
    }
}

impl<Context> Decode<Context> for Holdings {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let sorted = BTreeMap::<(AccountId, InstrumentId), u64>::decode(decoder)?;
        let mut holdings = Holdings::default();
        for ((account, instrument), qty) in sorted {
            holdings.change(account, instrument, i128::from(qty));
        }
        Ok(holdings)
    }
}

bincode::impl_borrow_decode!(Holdings);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holdings_change_per_pair_list_in_instrument_order_and_drop_at_zero() {
        let mut h = Holdings::default();
        h.change(7, InstrumentId(2), 5);
        h.change(7, InstrumentId(0), 1);
        h.change(7, InstrumentId(2), 3);
        h.change(1, InstrumentId(9), 4);
        assert_eq!(h.of(7), &[(InstrumentId(0), 1), (InstrumentId(2), 8)]);
        assert_eq!(h.of(1), &[(InstrumentId(9), 4)]);
        assert_eq!(h.of(2), &[]);
        assert_eq!(
            (h.get(7, InstrumentId(2)), h.get(7, InstrumentId(1))),
            (8, 0)
        );
        assert_eq!(h.len(), 3);
        let sorted: Vec<_> = h.sorted().into_iter().collect();
        assert_eq!(
            sorted,
            vec![
                ((1, InstrumentId(9)), 4),
                ((7, InstrumentId(0)), 1),
                ((7, InstrumentId(2)), 8)
            ]
        );
        h.change(7, InstrumentId(2), -8);
        h.change(1, InstrumentId(9), -4);
        assert_eq!(h.of(7), &[(InstrumentId(0), 1)]);
        assert_eq!(h.of(1), &[]);
        assert_eq!(h.len(), 1);
        h.change(7, InstrumentId(0), -1);
        assert_eq!(h, Holdings::default(), "nothing left behind");
    }

    #[test]
    fn holdings_encode_as_the_ordered_map_did_and_decode_back() {
        let mut h = Holdings::default();
        for (account, id, qty) in [(3, 1, 2), (1, 0, 5), (3, 0, 1), (u64::MAX, 7, 9)] {
            h.change(account, InstrumentId(id), qty);
        }
        let config = bincode::config::standard();
        let bytes = bincode::encode_to_vec(&h, config).unwrap();
        assert_eq!(bytes, bincode::encode_to_vec(h.sorted(), config).unwrap());
        let (back, read): (Holdings, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
        assert_eq!((back, read), (h, bytes.len()));
    }
}
