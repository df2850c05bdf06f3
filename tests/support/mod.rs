//! Helpers shared by test binaries; each binary uses a part of them.
#![allow(dead_code)]

#[cfg(feature = "nats")]
pub mod leader;
#[cfg(feature = "nats")]
pub mod nats;
pub mod prometheus;
#[cfg(feature = "nats")]
pub mod run;
