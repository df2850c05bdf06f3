//! The command-line front ends, thin over the library: argument parsing lives
//! in `main.rs`, behaviour here where it can be tested.

pub mod inspect;
pub mod orders;
pub mod run;
#[cfg(feature = "nats")]
pub mod serve;
mod strict_json;
