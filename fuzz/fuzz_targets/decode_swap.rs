//! Arbitrary bytes as a swap file: every plausible pointer into it is read, updated and
//! removed, on disk and from the append buffer.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::swap::fuzz_swap_file(data);
});
