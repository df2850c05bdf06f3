//! ringledger: an LMAX-style engine for wallets and share trading.

#[doc = include_str!("../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;

pub mod baseline;
pub mod bench;
pub mod book;
pub mod cli;
pub mod engine;
#[cfg(feature = "external-engines")]
pub mod external;
#[doc(hidden)]
pub mod fuzzing;
pub mod huge_pages;
pub mod journal;
pub mod ledger;
pub mod metrics;
pub mod money;
pub mod outcome;
mod prefetch;
pub mod rebate;
#[cfg(feature = "nats")]
pub mod replication;
pub mod request;
pub mod ring;
pub mod simulator;
pub mod storage;

pub use engine::{Client, Engine, EngineBuilder, EngineError, EngineGauges, JournalThread};
pub use huge_pages::HugePages;
pub use ledger::{Applied, Ledger, LedgerConfig};
pub use money::{Scale, Units};
pub use outcome::{
    Answer, Depth, Entry, EntryKind, ErrorCode, InstrumentView, OrderEvent, OrderEvents, OrderInfo,
    Outcome, Reject, Reply,
};
pub use rebate::{RateRebate, RebateJob, RebatePolicy};
pub use request::{
    AccountId, InstrumentId, Request, ReservationId, SessionId, SessionName, Stamp, Stamped, Symbol,
};
