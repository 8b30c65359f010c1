#![no_main]
//! `parse_request` + `validate_request` on arbitrary bytes. See `wsline_fuzz::handshake` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsline_fuzz::handshake::run_request(data);
});
