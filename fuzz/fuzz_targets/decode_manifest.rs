//! Arbitrary bytes as the MANIFEST of a save set (as given and with the checksum line fixed
//! up), restored with `Store::restore_with`; a successful restore is opened and checked.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    stowage::fuzzing::decode_manifest(data);
});
