//! Arbitrary bytes as page.db: superblock, page and free-map decoding, then a full open.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::fuzzing::decode_pages(data);
});
