#![no_main]
//! The hub's JSON protocol decoder on arbitrary text. See `wsline_fuzz::hub` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsline_fuzz::hub::run(data);
});
