#![no_main]

libfuzzer_sys::fuzz_target!(|bytes: &[u8]| ringledger::fuzzing::snapshot(bytes));
