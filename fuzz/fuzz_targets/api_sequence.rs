//! API operation sequences (structured with `arbitrary`) with crashes and reopens, against
//! the model in `api_model.rs` (shared with `tests/fuzz_replay_api.rs`).
#![no_main]

#[path = "api_model.rs"]
#[allow(dead_code)]
mod api_model;

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    api_model::run_bytes(data);
});
