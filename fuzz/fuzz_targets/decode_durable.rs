//! Arbitrary bytes as a `.durable` file: decoded directly (and with the checksum fixed up),
//! then served through `Durables::open`, `list`, `get` and `remove`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::durables::decode_for_fuzzing(data);
});
