//! Helpers shared by test binaries; each binary uses a part of them.
#![allow(dead_code)]

pub mod nats;
