//! Arbitrary bytes as the frames of transaction.log, replayed by recovery at open.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::fuzzing::decode_log(data);
});
