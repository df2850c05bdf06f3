//! Requests: plain fixed-size values, cheap to copy into a ring slot and to
//! journal. Nothing here owns heap memory; instrument symbols travel inline
//! only when an instrument is listed, and as a small [`InstrumentId`] after.

use std::fmt;

use bincode::{Decode, Encode};

use crate::book::{OrderId, Side, Stp, Tif};
use crate::money::Units;
use crate::outcome::ErrorCode;

/// A wallet's identifier, chosen by the caller when the account is opened.
pub type AccountId = u64;
/// A reservation's identifier, chosen by the caller when shares are reserved.
pub type ReservationId = u64;
/// A live client session, as numbered requests name it in their stamp: the
/// unit of request numbering for idempotency. The Ledger hands ids out from a
/// counter when a session is opened by name and never reuses one; 0 is no
/// session (unnumbered requests).
pub type SessionId = u64;

/// The dense id the Ledger gives an instrument when it is listed (0, 1, 2, …).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct InstrumentId(pub u32);

/// Longest instrument symbol, in bytes.
pub const SYMBOL_LEN_MAX: usize = 16;

/// An instrument symbol (`"ACME"`): 1 to 16 printable ASCII bytes, stored inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct Symbol([u8; SYMBOL_LEN_MAX]);

impl Symbol {
    /// Validates and packs a symbol.
    pub fn new(text: &str) -> Result<Symbol, String> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > SYMBOL_LEN_MAX {
            return Err(format!(
                "instrument symbol {text:?} must be 1 to {SYMBOL_LEN_MAX} bytes long"
            ));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "instrument symbol {text:?} must be printable ASCII without spaces"
            ));
        }
        let mut packed = [0u8; SYMBOL_LEN_MAX];
        packed[..bytes.len()].copy_from_slice(bytes);
        Ok(Symbol(packed))
    }

    /// The symbol's text.
    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SYMBOL_LEN_MAX);
        // Only printable ASCII is ever packed, so this cannot fail; a
        // corrupted value read back from disk shows as empty, not a panic.
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }

    pub(crate) fn bytes(&self) -> &[u8; SYMBOL_LEN_MAX] {
        &self.0
    }

    /// The symbol exactly as stored, unchecked, as bincode decodes it.
    pub(crate) fn from_bytes(bytes: [u8; SYMBOL_LEN_MAX]) -> Symbol {
        Symbol(bytes)
    }
}

/// Longest session name, in bytes.
pub const SESSION_NAME_LEN_MAX: usize = 32;

/// A session's durable name (`"default"`, `"gateway-7"`): 1 to 32 printable
/// ASCII bytes, stored inline so that opening a session is a fixed-size
/// request like any other. The name, not the [`SessionId`], is what a client
/// keeps across restarts.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Encode, Decode)]
pub struct SessionName([u8; SESSION_NAME_LEN_MAX]);

impl SessionName {
    /// Validates and packs a name.
    pub fn new(text: &str) -> Result<SessionName, String> {
        let bytes = text.as_bytes();
        if bytes.is_empty() || bytes.len() > SESSION_NAME_LEN_MAX {
            return Err(format!(
                "session name {text:?} must be 1 to {SESSION_NAME_LEN_MAX} bytes long"
            ));
        }
        if !bytes.iter().all(|b| b.is_ascii_graphic()) {
            return Err(format!(
                "session name {text:?} must be printable ASCII without spaces"
            ));
        }
        let mut packed = [0u8; SESSION_NAME_LEN_MAX];
        packed[..bytes.len()].copy_from_slice(bytes);
        Ok(SessionName(packed))
    }

    /// The name's text.
    pub fn as_str(&self) -> &str {
        let len = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(SESSION_NAME_LEN_MAX);
        // As for symbols: only printable ASCII is packed; damage shows as "".
        std::str::from_utf8(&self.0[..len]).unwrap_or("")
    }

    pub(crate) fn bytes(&self) -> &[u8; SESSION_NAME_LEN_MAX] {
        &self.0
    }

    /// The name exactly as stored, unchecked, as bincode decodes it.
    pub(crate) fn from_bytes(bytes: [u8; SESSION_NAME_LEN_MAX]) -> SessionName {
        SessionName(bytes)
    }
}

impl fmt::Debug for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SessionName({:?})", self.as_str())
    }
}

impl fmt::Display for SessionName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Symbol({:?})", self.as_str())
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the Ledger can be asked. Amounts are minor units at the ledger's
/// scale; the edge (see [`crate::money::Scale`]) has already checked them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub enum Request {
    OpenAccount {
        account: AccountId,
    },
    Deposit {
        account: AccountId,
        amount: Units,
    },
    Withdraw {
        account: AccountId,
        amount: Units,
    },
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: Units,
    },
    Balance {
        account: AccountId,
    },
    /// The account's newest `limit` entries; [`crate::Reply::History`] says
    /// whether retention (`history_per_account_max`) cut the answer.
    History {
        account: AccountId,
        limit: u32,
    },
    ListInstrument {
        symbol: Symbol,
        supply: u64,
        price: Units,
    },
    Instrument {
        instrument: InstrumentId,
    },
    /// Take `qty` shares for `account` and hold `qty × price` of its cash.
    /// `ttl_ms == 0` means the reservation never expires.
    Reserve {
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        ttl_ms: u64,
        partial: bool,
    },
    Confirm {
        reservation: ReservationId,
    },
    Cancel {
        reservation: ReservationId,
    },
    Holdings {
        account: AccountId,
    },
    /// Lets time pass (expiring reservations) without doing anything else.
    Tick,
    Digest,
    /// The rebate side thread's answer for the deposit sequenced at `deposit_seq`.
    CreditRebate {
        deposit_seq: u64,
        amount: Units,
    },
    /// Opens the session called `name`, or resumes it if it is live; the
    /// answer is its id and highest answered request number. Journaled like
    /// any input, so the name survives restarts.
    OpenSession {
        name: SessionName,
    },
    /// Retires the session in the stamp: its numbers are answered
    /// `session_expired` from now on and its name cannot be opened again.
    CloseSession,
    /// A numbered request the edge refused before the Ledger saw it (a bad
    /// amount, a bad symbol): sequenced and journaled only so that its number
    /// is used up with `code` as its answer.
    Rejected {
        code: ErrorCode,
    },
    /// A new order on `instrument`'s book. `price` is 0 for a market order
    /// (`market`); the Ledger refuses combinations that cannot exist
    /// (`invalid_order`).
    Place {
        order: OrderId,
        account: AccountId,
        instrument: InstrumentId,
        side: Side,
        market: bool,
        tif: Tif,
        post_only: bool,
        stp: Stp,
        qty: u64,
        price: Units,
    },
    /// Changes a resting order's remaining qty and/or price (at least one).
    Amend {
        order: OrderId,
        qty: Option<u64>,
        price: Option<Units>,
    },
    /// Takes a resting order off its book.
    CancelOrder {
        order: OrderId,
    },
    /// A resting order's state.
    Order {
        order: OrderId,
    },
    /// The best `depth` levels of each side of `instrument`'s book.
    Book {
        instrument: InstrumentId,
        depth: u32,
    },
}

impl Request {
    /// Whether the request is numbered for idempotency (it may change state on
    /// purpose). Queries and ticks are not numbered: repeating them is
    /// harmless; nor is opening or closing a session, which is what scopes
    /// the numbers.
    pub fn is_numbered(&self) -> bool {
        !matches!(
            self,
            Request::Balance { .. }
                | Request::History { .. }
                | Request::Instrument { .. }
                | Request::Holdings { .. }
                | Request::Order { .. }
                | Request::Book { .. }
                | Request::Tick
                | Request::Digest
                | Request::OpenSession { .. }
                | Request::CloseSession
        )
    }
}

impl Request {
    /// The accounts the request names directly (reservations name theirs
    /// only through the reservation), for prefetching and checks.
    pub fn accounts(&self) -> [Option<AccountId>; 2] {
        match *self {
            Request::Transfer { from, to, .. } => [Some(from), Some(to)],
            Request::OpenAccount { account }
            | Request::Deposit { account, .. }
            | Request::Withdraw { account, .. }
            | Request::Balance { account }
            | Request::History { account, .. }
            | Request::Reserve { account, .. }
            | Request::Holdings { account }
            | Request::Place { account, .. } => [Some(account), None],
            _ => [None, None],
        }
    }
}

/// What the sequencer adds to a request: its place in the total order, the
/// time it was sequenced at, and who sent it under which number.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Encode, Decode)]
pub struct Stamp {
    /// Position in the total order, from 1, strictly increasing.
    pub seq: u64,
    /// Sequencer time in milliseconds (wall clock or manual).
    pub time_ms: u64,
    pub session: SessionId,
    /// The session's request number; 0 means not numbered.
    pub req: u64,
}

/// A request with its stamp: the unit the Ledger applies and the journal records.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct Stamped {
    pub stamp: Stamp,
    pub request: Request,
}

impl Stamped {
    pub fn new(stamp: Stamp, request: Request) -> Stamped {
        Stamped { stamp, request }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbol_round_trips_its_text() {
        let s = Symbol::new("ACME").unwrap();
        assert_eq!(s.as_str(), "ACME");
        assert_eq!(Symbol::new("ABCDEFGHIJKLMNOP").unwrap().as_str().len(), 16);
    }

    #[test]
    fn empty_long_or_spaced_symbols_are_refused() {
        assert!(Symbol::new("").is_err());
        assert!(Symbol::new("ABCDEFGHIJKLMNOPQ").is_err());
        assert!(Symbol::new("AC ME").is_err());
        assert!(Symbol::new("ÄCME").is_err());
    }

    #[test]
    fn session_names_are_one_to_32_printable_bytes() {
        assert_eq!(SessionName::new("default").unwrap().as_str(), "default");
        let longest = "x".repeat(SESSION_NAME_LEN_MAX);
        assert_eq!(SessionName::new(&longest).unwrap().as_str(), longest);
        assert!(SessionName::new("").is_err());
        assert!(SessionName::new(&format!("{longest}x")).is_err());
        assert!(SessionName::new("a b").is_err());
        assert!(SessionName::new("é").is_err());
    }

    #[test]
    fn requests_stay_small_enough_for_a_ring_slot() {
        assert!(std::mem::size_of::<Request>() <= 48);
        assert!(std::mem::size_of::<Stamped>() <= 80);
    }
}
