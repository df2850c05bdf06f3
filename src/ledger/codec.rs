//! The Ledger's snapshot encoding, written out by hand only because
//! holdings live in the accounts' lines but are encoded, as they always
//! were, as a map ordered by (account id, instrument), between the expiries
//! and the shares held, where the Ledger's holdings field used to be.
//! Every other field is encoded exactly as the derive did, in declaration
//! order, so snapshot bytes are unchanged.

use std::collections::BTreeMap;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};
use bincode::{Decode, Encode};

use super::accounts::Accounts;
use super::expiries::Expiries;
use super::Ledger;
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
            order_instruments,
            trades,
            events,
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
        order_instruments.encode(encoder)?;
        trades.encode(encoder)?;
        events.encode(encoder)?;
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
        Ok(Ledger {
            config,
            accounts,
            instrument_index,
            instruments,
            reservations,
            closed_reservations,
            expiries,
            share_held: Decode::decode(decoder)?,
            books: Decode::decode(decoder)?,
            order_instruments: Decode::decode(decoder)?,
            trades: Decode::decode(decoder)?,
            events: Decode::decode(decoder)?,
            sessions: Decode::decode(decoder)?,
            rebates: Decode::decode(decoder)?,
            totals: Decode::decode(decoder)?,
            last_seq: Decode::decode(decoder)?,
            now_ms: Decode::decode(decoder)?,
        })
    }
}

bincode::impl_borrow_decode!(Ledger);
