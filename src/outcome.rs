//! What applying a request produces: a reply, or a rejection that names one
//! of the error codes of the public contract and changed nothing.

use std::fmt;
use std::sync::Arc;

use bincode::{Decode, Encode};

pub use crate::book::{LevelView, Status};
use crate::book::{OrderId, Side};
use crate::money::Units;
use crate::request::{AccountId, InstrumentId, ReservationId, SessionId, Symbol};

/// The error codes of the public contract, spelled exactly as on the wire.
/// Journaled (as the answer of a request refused at the edge) and
/// snapshotted by variant index: add new codes at the end.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum ErrorCode {
    Malformed,
    UnknownAccount,
    AccountExists,
    InvalidAmount,
    InsufficientFunds,
    Overflow,
    UnknownInstrument,
    InstrumentExists,
    InsufficientShares,
    UnknownReservation,
    ReservationExists,
    ReservationExpired,
    Duplicate,
    SessionExpired,
    /// The engine cannot make requests durable right now (the journal
    /// cannot be written: disk full, I/O error); retry later with the same
    /// `req`.
    Unavailable,
    OrderExists,
    UnknownOrder,
    WouldCross,
    InvalidOrder,
    /// This process was fenced: another process leads the replicated
    /// journal now. Send the request to the new leader.
    NotLeader,
}

impl ErrorCode {
    /// Every code, in declaration (variant index) order.
    pub const ALL: [ErrorCode; 20] = [
        ErrorCode::Malformed,
        ErrorCode::UnknownAccount,
        ErrorCode::AccountExists,
        ErrorCode::InvalidAmount,
        ErrorCode::InsufficientFunds,
        ErrorCode::Overflow,
        ErrorCode::UnknownInstrument,
        ErrorCode::InstrumentExists,
        ErrorCode::InsufficientShares,
        ErrorCode::UnknownReservation,
        ErrorCode::ReservationExists,
        ErrorCode::ReservationExpired,
        ErrorCode::Duplicate,
        ErrorCode::SessionExpired,
        ErrorCode::Unavailable,
        ErrorCode::OrderExists,
        ErrorCode::UnknownOrder,
        ErrorCode::WouldCross,
        ErrorCode::InvalidOrder,
        ErrorCode::NotLeader,
    ];

    /// The snake_case code as it appears in `{"error": "..."}`.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Malformed => "malformed",
            ErrorCode::UnknownAccount => "unknown_account",
            ErrorCode::AccountExists => "account_exists",
            ErrorCode::InvalidAmount => "invalid_amount",
            ErrorCode::InsufficientFunds => "insufficient_funds",
            ErrorCode::Overflow => "overflow",
            ErrorCode::UnknownInstrument => "unknown_instrument",
            ErrorCode::InstrumentExists => "instrument_exists",
            ErrorCode::InsufficientShares => "insufficient_shares",
            ErrorCode::UnknownReservation => "unknown_reservation",
            ErrorCode::ReservationExists => "reservation_exists",
            ErrorCode::ReservationExpired => "reservation_expired",
            ErrorCode::Duplicate => "duplicate",
            ErrorCode::SessionExpired => "session_expired",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::OrderExists => "order_exists",
            ErrorCode::UnknownOrder => "unknown_order",
            ErrorCode::WouldCross => "would_cross",
            ErrorCode::InvalidOrder => "invalid_order",
            ErrorCode::NotLeader => "not_leader",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The first answer a numbered request got, as a session remembers it and a
/// duplicate reports it (`"original"` on the wire).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum Answer {
    Ok,
    Rejected(ErrorCode),
}

impl Answer {
    /// `"ok"` or the error code, as on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Answer::Ok => "ok",
            Answer::Rejected(code) => code.as_str(),
        }
    }

    pub fn of(outcome: &Outcome) -> Answer {
        match outcome {
            Ok(_) => Answer::Ok,
            Err(reject) => Answer::Rejected(reject.code()),
        }
    }
}

/// How a reservation that is no longer open ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Closure {
    Confirmed,
    Cancelled,
    Expired,
}

/// A refused request, with what the caller needs to understand why. A
/// rejected request changed nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reject {
    UnknownAccount(AccountId),
    AccountExists(AccountId),
    /// Amounts, quantities, supplies and prices must be greater than zero.
    InvalidAmount(&'static str),
    InsufficientFunds {
        account: AccountId,
        available: Units,
        requested: Units,
    },
    /// Checked arithmetic would leave the representable range.
    Overflow(&'static str),
    UnknownInstrument(InstrumentId),
    InstrumentExists(Symbol),
    InsufficientShares {
        instrument: InstrumentId,
        available: u64,
        requested: u64,
    },
    /// Never reserved, or already confirmed or cancelled (`closed`).
    UnknownReservation {
        reservation: ReservationId,
        closed: Option<Closure>,
    },
    ReservationExists(ReservationId),
    ReservationExpired(ReservationId),
    /// The session already answered this request number (its highest
    /// answered number is `last`). `original` is the first answer while the
    /// session still remembers it (see `ledger::SESSION_ANSWERS_MAX`).
    Duplicate {
        req: u64,
        last: u64,
        original: Option<Answer>,
    },
    /// The session was retired (closed, idle too long or evicted), or the
    /// name being opened belonged to a retired session.
    SessionExpired,
    /// An order id that is resting already.
    OrderExists(OrderId),
    /// No resting order has this id (never placed, or finished).
    UnknownOrder(OrderId),
    /// A post-only order whose price reaches the opposite side's best.
    WouldCross(OrderId),
    /// An order that cannot exist (qty 0, a limit without a price, a market
    /// order with a price or gtc, post-only without gtc, an amend of nothing).
    InvalidOrder(&'static str),
    /// Refused at the edge, before the Ledger saw it, with this code; the
    /// Ledger only recorded it as the answer of its request number.
    AtEdge(ErrorCode),
    /// Applied and journaled here, but the replicated journal could not
    /// confirm storing it (no quorum, no server): not acknowledged. It is
    /// published once the stream is back; a retry with the same `req` then
    /// answers `duplicate` with the original answer.
    Unavailable,
    /// Applied here, but this process was fenced by a newer leader before
    /// the stream stored it: it never will, and the new leader does not
    /// have it.
    NotLeader,
}

impl Reject {
    pub fn code(&self) -> ErrorCode {
        match self {
            Reject::UnknownAccount(_) => ErrorCode::UnknownAccount,
            Reject::AccountExists(_) => ErrorCode::AccountExists,
            Reject::InvalidAmount(_) => ErrorCode::InvalidAmount,
            Reject::InsufficientFunds { .. } => ErrorCode::InsufficientFunds,
            Reject::Overflow(_) => ErrorCode::Overflow,
            Reject::UnknownInstrument(_) => ErrorCode::UnknownInstrument,
            Reject::InstrumentExists(_) => ErrorCode::InstrumentExists,
            Reject::InsufficientShares { .. } => ErrorCode::InsufficientShares,
            Reject::UnknownReservation { .. } => ErrorCode::UnknownReservation,
            Reject::ReservationExists(_) => ErrorCode::ReservationExists,
            Reject::ReservationExpired(_) => ErrorCode::ReservationExpired,
            Reject::Duplicate { .. } => ErrorCode::Duplicate,
            Reject::SessionExpired => ErrorCode::SessionExpired,
            Reject::OrderExists(_) => ErrorCode::OrderExists,
            Reject::UnknownOrder(_) => ErrorCode::UnknownOrder,
            Reject::WouldCross(_) => ErrorCode::WouldCross,
            Reject::InvalidOrder(_) => ErrorCode::InvalidOrder,
            Reject::AtEdge(code) => *code,
            Reject::Unavailable => ErrorCode::Unavailable,
            Reject::NotLeader => ErrorCode::NotLeader,
        }
    }
}

/// Human text for a rejection. Amounts are in minor units here; the edges
/// that know the scale (the `run` command) print them as decimals themselves.
impl fmt::Display for Reject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Reject::UnknownAccount(a) => write!(f, "account {a} does not exist"),
            Reject::AccountExists(a) => write!(f, "account {a} is already open"),
            Reject::InvalidAmount(why) => f.write_str(why),
            Reject::InsufficientFunds {
                account,
                available,
                requested,
            } => write!(
                f,
                "account {account} has {available} minor units available, {requested} requested"
            ),
            Reject::Overflow(what) => write!(f, "{what} would overflow"),
            Reject::UnknownInstrument(i) => write!(f, "instrument #{} is not listed", i.0),
            Reject::InstrumentExists(s) => write!(f, "instrument {s} is already listed"),
            Reject::InsufficientShares {
                instrument,
                available,
                requested,
            } => write!(
                f,
                "instrument #{} has {available} shares available, {requested} requested",
                instrument.0
            ),
            Reject::UnknownReservation {
                reservation,
                closed: None,
            } => write!(f, "reservation {reservation} does not exist"),
            Reject::UnknownReservation {
                reservation,
                closed: Some(how),
            } => write!(
                f,
                "reservation {reservation} is no longer open (it was {})",
                match how {
                    Closure::Confirmed => "confirmed",
                    Closure::Cancelled => "cancelled",
                    Closure::Expired => "expired",
                }
            ),
            Reject::ReservationExists(r) => write!(f, "reservation {r} already exists"),
            Reject::ReservationExpired(r) => write!(f, "reservation {r} has expired"),
            Reject::Duplicate {
                req,
                last,
                original,
            } => {
                let answered = |f: &mut fmt::Formatter<'_>| {
                    write!(
                        f,
                        "request number {req} was already answered in this session (highest answered: {last})"
                    )
                };
                match original {
                    Some(Answer::Ok) => {
                        answered(f)?;
                        f.write_str("; it was applied")
                    }
                    Some(Answer::Rejected(code)) => {
                        answered(f)?;
                        write!(f, "; it was rejected ({code})")
                    }
                    // Gaps are allowed, so it may never have been sent.
                    None => write!(
                        f,
                        "request number {req} is not above this session's highest answered number ({last}), \
                         so it is never applied; it was skipped, or its answer is no longer remembered"
                    ),
                }
            }
            Reject::SessionExpired => f.write_str(
                "the session has been retired (closed, idle too long or evicted); open a session with a new name",
            ),
            Reject::OrderExists(o) => write!(f, "order {o} is already resting"),
            Reject::UnknownOrder(o) => write!(f, "order {o} is not resting (never placed, or finished)"),
            Reject::WouldCross(o) => write!(
                f,
                "post-only order {o} would trade on arrival: its price reaches the other side's best"
            ),
            Reject::InvalidOrder(why) => f.write_str(why),
            Reject::AtEdge(code) => write!(f, "refused before reaching the ledger ({code})"),
            Reject::Unavailable => f.write_str(
                "the replicated journal could not store this request now (no quorum or no \
                 server); retry later with the same req",
            ),
            Reject::NotLeader => f.write_str(
                "this process was fenced by a newer leader; send the request to the new leader",
            ),
        }
    }
}

impl std::error::Error for Reject {}

/// What kind of balance change a history entry records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Encode, Decode)]
pub enum EntryKind {
    Deposit,
    Withdrawal,
    TransferOut,
    TransferIn,
    Rebate,
    /// Cash paid when a reservation is confirmed.
    Purchase,
    /// Cash paid for shares bought on a book.
    Buy,
    /// Cash received for shares sold on a book.
    Sell,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Deposit => "deposit",
            EntryKind::Withdrawal => "withdrawal",
            EntryKind::TransferOut => "transfer_out",
            EntryKind::TransferIn => "transfer_in",
            EntryKind::Rebate => "rebate",
            EntryKind::Purchase => "purchase",
            EntryKind::Buy => "buy",
            EntryKind::Sell => "sell",
        }
    }
}

/// One balance change of one account (the transaction record).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Entry {
    /// Sequence number of the request that made the change.
    pub seq: u64,
    pub time_ms: u64,
    pub account: AccountId,
    pub kind: EntryKind,
    /// Always positive; `kind` says which way the money went.
    pub amount: Units,
    /// The balance right after the change.
    pub balance: Units,
    /// The trade's number for a `buy` or `sell` entry (the same number the
    /// `place` or `amend` answer gave it); `None` for every other kind.
    pub trade: Option<u64>,
}

/// A listed instrument's figures; `available + reserved + sold == supply`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct InstrumentView {
    pub id: InstrumentId,
    pub symbol: Symbol,
    pub supply: u64,
    pub available: u64,
    pub reserved: u64,
    pub sold: u64,
    pub price: Units,
}

/// What happened to an order while it was placed or amended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OrderEvent {
    /// A trade at the maker's price, numbered over the whole Ledger.
    Trade {
        trade: u64,
        maker: OrderId,
        price: Units,
        qty: u64,
    },
    /// Self-trade prevention cancelled the owner's resting order.
    StpCancelled(OrderId),
}

/// What happened to a placed or amended order, in order: a range of the
/// event buffer the Ledger fills during a batch, so that an outcome carries
/// no allocation of its own however many makers an order meets.
///
/// A reply straight from [`crate::Ledger::apply`] holds only the range:
/// read it with [`crate::Ledger::events`] before the next request. The
/// engine hands each batch's buffer over to the outcomes it answers (a
/// shared, pooled buffer: [`OrderEvents::get`] reads it on the client's
/// thread), and reuses the buffer once every outcome holding it is dropped.
#[derive(Clone, Debug, Default)]
pub struct OrderEvents {
    /// The batch's buffer, once the engine handed it over.
    batch: Option<Arc<Vec<OrderEvent>>>,
    start: u32,
    len: u32,
}

impl OrderEvents {
    /// The `len` events from `start` of the Ledger's current buffer.
    pub(crate) fn new(start: usize, len: usize) -> OrderEvents {
        let narrow = |n: usize| u32::try_from(n).expect("fewer than 2^32 events in one batch");
        OrderEvents {
            batch: None,
            start: narrow(start),
            len: narrow(len),
        }
    }

    pub fn len(&self) -> usize {
        self.len as usize
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The events, when this outcome carries them: always for an outcome
    /// from a [`crate::Client`]; for a reply straight from the Ledger, only
    /// when there are none (use [`crate::Ledger::events`]).
    pub fn get(&self) -> Option<&[OrderEvent]> {
        match &self.batch {
            _ if self.len == 0 => Some(&[]),
            Some(batch) => Some(self.slice(batch)),
            None => None,
        }
    }

    /// The events, read from `buffer` (the Ledger's) unless this outcome
    /// carries its own batch's.
    pub(crate) fn read<'a>(&'a self, buffer: &'a [OrderEvent]) -> &'a [OrderEvent] {
        match &self.batch {
            Some(batch) => self.slice(batch),
            None => self.slice(buffer),
        }
    }

    fn slice<'a>(&self, buffer: &'a [OrderEvent]) -> &'a [OrderEvent] {
        let start = self.start as usize;
        &buffer[start..start + self.len as usize]
    }

    /// Hands over the buffer of the batch that made these events.
    pub(crate) fn attach(&mut self, batch: &Arc<Vec<OrderEvent>>) {
        self.batch = Some(Arc::clone(batch));
    }
}

/// Equal when they list the same events; a range not yet handed its buffer
/// equals only the same range.
impl PartialEq for OrderEvents {
    fn eq(&self, other: &OrderEvents) -> bool {
        match (self.get(), other.get()) {
            (Some(a), Some(b)) => a == b,
            (None, None) => (self.start, self.len) == (other.start, other.len),
            _ => false,
        }
    }
}

impl Eq for OrderEvents {}

/// A resting order, as the `order` query answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OrderInfo {
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub symbol: Symbol,
    pub side: Side,
    pub price: Units,
    /// Still resting.
    pub qty: u64,
    /// Traded so far, across amends.
    pub filled: u64,
}

/// A book's best levels, best first on each side.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Depth {
    pub bids: Vec<LevelView>,
    pub asks: Vec<LevelView>,
}

/// A successful answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reply {
    /// Opened, transferred, confirmed, cancelled, ticked.
    Done,
    /// Deposit or withdrawal applied; the balance after it.
    Moved {
        balance: Units,
    },
    Balance {
        balance: Units,
        held: Units,
        available: Units,
    },
    /// An account's newest entries, newest first, at most `limit` of them.
    History {
        entries: Vec<Entry>,
        /// Retention (`history_per_account_max`) dropped entries that
        /// `limit` would have included: older ones are only in the journal.
        truncated: bool,
    },
    Listed {
        instrument: InstrumentId,
    },
    Instrument(Box<InstrumentView>),
    /// Shares actually reserved (fewer than asked only with `partial`).
    Reserved {
        qty: u64,
    },
    /// Per instrument, in listing order: shares owned (held ones included)
    /// and shares held by resting sells.
    Holdings(Vec<(Symbol, u64, u64)>),
    /// A place or amend the book accepted: how it ended, the qty it traded
    /// and the qty now resting. `events` lists the orders self-trade
    /// prevention cancelled, then its trades in the order they happened
    /// (see [`OrderEvents`]: no allocation per request, no cap on fills).
    Placed {
        status: Status,
        filled: u64,
        resting: u64,
        events: OrderEvents,
    },
    /// `cancel_order`: the qty taken off the book.
    OrderCancelled {
        cancelled: u64,
    },
    Order(Box<OrderInfo>),
    /// Best first on each side (boxed: a rare answer, kept out of the
    /// size of every outcome).
    Book(Box<Depth>),
    Digest(u64),
    /// Whether this credit was the one that settled the deposit's rebate; a
    /// repeated or unknown credit changes nothing and says `false`.
    RebateCredited {
        credited: bool,
    },
    /// A session opened (or resumed): its id for the stamps of its numbered
    /// requests, and its highest answered number (0 when new).
    Session {
        session: SessionId,
        last_req: u64,
    },
}

/// The result of applying one request.
pub type Outcome = Result<Reply, Reject>;

#[cfg(test)]
mod tests {
    use super::*;

    /// A number below the highest answered may never have been sent (gaps
    /// are allowed): without its remembered answer, the message must not
    /// claim it was answered.
    #[test]
    fn a_duplicate_without_its_original_does_not_claim_it_was_answered() {
        let forgotten = Reject::Duplicate {
            req: 12,
            last: 20,
            original: None,
        }
        .to_string();
        assert!(!forgotten.contains("was already answered"), "{forgotten}");
        assert!(
            forgotten.contains("12") && forgotten.contains("20"),
            "{forgotten}"
        );
        let applied = Reject::Duplicate {
            req: 20,
            last: 20,
            original: Some(Answer::Ok),
        }
        .to_string();
        assert!(applied.contains("already answered"), "{applied}");
    }

    #[test]
    fn outcomes_stay_small_enough_for_response_queues() {
        // Every answer is copied into a response queue; the rare large
        // answers (instrument views, lists) are boxed or on the heap.
        assert!(
            std::mem::size_of::<Outcome>() <= 40,
            "{}",
            std::mem::size_of::<Outcome>()
        );
    }
}
