//! Arbitrary bytes as xa.log and as XA records.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::fuzz_xa(data);
});
