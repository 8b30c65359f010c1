#![no_main]
//! A deflate-enabled server fed arbitrary compressed payloads. See `wsline_fuzz::inflate` for the input layout and invariants.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    wsline_fuzz::inflate::run(data);
});
