#![no_main]
//! permessage-deflate negotiation of an arbitrary offer. See `wsline_fuzz::deflate` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsline_fuzz::deflate::run(data);
});
