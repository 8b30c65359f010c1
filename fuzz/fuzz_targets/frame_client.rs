#![no_main]
//! A client-role `Connection` fed arbitrary received bytes. See `wsline_fuzz::frames` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsline_fuzz::frames::run(wsline_proto::Role::Client, data);
});
