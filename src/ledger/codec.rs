//! The Ledger's snapshot encoding, written out by hand only because
//! holdings live in the accounts' lines but are encoded, as they always
//! were, as a map ordered by (account id, instrument), between the expiries
//! and the shares held, where the Ledger's holdings field used to be.
//! Two more fields kept their place and form though the Ledger no longer
//! has them: the order id → instrument map (now derived from the books, as
//! the Ledger-wide order index is; written ordered by id and checked
//! against the books when read), and the book's scratch events (written
//! empty, skipped when read). Every other field is encoded exactly as the derive did, in
//! declaration order, so the format is unchanged and older snapshots read.

use std::collections::BTreeMap;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use rustc_hash::FxHashMap;

use super::accounts::Accounts;
use super::expiries::Expiries;
use super::order_index::OrderIndex;
use super::Ledger;
use crate::book::{Events, Fill, OrderId, Removed, SlotBook};
use crate::request::{AccountId, InstrumentId};

impl Encode for Ledger {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> Result<(), EncodeError> {
        // Destructured so that a field added to the Ledger cannot be
        // forgotten here.
        let Ledger {
            config,
            accounts,
            instrument_index,
            instruments,
            reservations,
            closed_reservations,
            expiries,
            share_held,
            books,
            orders,
            trades,
            events,
            order_events: _,
            sessions,
            rebates,
            totals,
            last_seq,
            now_ms,
        } = self;
        config.encode(encoder)?;
        accounts.encode(encoder)?;
        instrument_index.encode(encoder)?;
        instruments.encode(encoder)?;
        reservations.encode(encoder)?;
        closed_reservations.encode(encoder)?;
        // The live entries, as the `BTreeSet` the index once was.
        let _ = expiries;
        self.timed_reservations().encode(encoder)?;
        accounts.holdings_sorted().encode(encoder)?;
        share_held.encode(encoder)?;
        books.encode(encoder)?;
        // Where the id → instrument map was: the same bytes (a map encodes
        // as its length and its pairs), ordered by id.
        let mut instruments: Vec<(OrderId, InstrumentId)> = books
            .iter()
            .enumerate()
            .flat_map(|(b, book)| {
                book.slots()
                    .map(move |slot| (book.id_at(slot), InstrumentId(b as u32)))
            })
            .collect();
        debug_assert_eq!(instruments.len(), orders.len());
        instruments.sort_unstable();
        instruments.encode(encoder)?;
        trades.encode(encoder)?;
        // Where the book's scratch events were (scratch, not state): none.
        let _ = events;
        (Vec::<Fill>::new(), Vec::<Removed>::new()).encode(encoder)?;
        sessions.encode(encoder)?;
        rebates.encode(encoder)?;
        totals.encode(encoder)?;
        last_seq.encode(encoder)?;
        now_ms.encode(encoder)
    }
}

impl<Context> Decode<Context> for Ledger {
    fn decode<D: Decoder<Context = Context>>(decoder: &mut D) -> Result<Self, DecodeError> {
        let config: super::LedgerConfig = Decode::decode(decoder)?;
        let mut accounts = Accounts::decode(decoder, config.history_per_account_max)?;
        let instrument_index = Decode::decode(decoder)?;
        let instruments = Decode::decode(decoder)?;
        let reservations = Decode::decode(decoder)?;
        let closed_reservations = Decode::decode(decoder)?;
        let expiries = Expiries::from_live(Decode::decode(decoder)?);
        let sorted: BTreeMap<(AccountId, InstrumentId), u64> = Decode::decode(decoder)?;
        accounts
            .restore_holdings(sorted)
            .map_err(DecodeError::OtherString)?;
        let share_held: FxHashMap<(AccountId, InstrumentId), u64> = Decode::decode(decoder)?;
        let books: Vec<SlotBook> = Decode::decode(decoder)?;
        let orders = OrderIndex::rebuild(&books).map_err(DecodeError::OtherString)?;
        let order_instruments: FxHashMap<OrderId, InstrumentId> = Decode::decode(decoder)?;
        if order_instruments.len() != orders.len()
            || order_instruments.iter().any(|(&id, &instrument)| {
                orders.find(&books, id).map(|(i, _)| i) != Some(instrument)
            })
        {
            return Err(DecodeError::Other(
                "the snapshot's order → instrument map does not match its books",
            ));
        }
        let trades: u64 = Decode::decode(decoder)?;
        let (_fills, _stp_cancelled): (Vec<Fill>, Vec<Removed>) = Decode::decode(decoder)?;
        Ok(Ledger {
            config,
            accounts,
            instrument_index,
            instruments,
            reservations,
            closed_reservations,
            expiries,
            share_held,
            books,
            orders,
            trades,
            events: Events::default(),
            order_events: Vec::new(),
            sessions: Decode::decode(decoder)?,
            rebates: Decode::decode(decoder)?,
            totals: Decode::decode(decoder)?,
            last_seq: Decode::decode(decoder)?,
            now_ms: Decode::decode(decoder)?,
        })
    }
}

bincode::impl_borrow_decode!(Ledger);
