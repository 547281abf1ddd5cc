//! The swap fuzz entry point, shared by `fuzz/fuzz_targets/decode_swap.rs` and
//! `tests/fuzz_replay_swap.rs`.
//!
//! Invariant: accepts any bytes and returns normally; a panic (including a failed
//! assertion about what a successful call must have done) is a bug.

use std::path::Path;
use std::sync::Arc;

use crate::file::{FileSystem, SimFs};

use super::record::HEADER_LEN64;
use super::{SwapDir, SwapPointer};

/// Most magic occurrences (and chained records) tried per input.
const MAX_CANDIDATES: usize = 512;
/// Inputs are cut to this many bytes (keeps each run fast: every read is O(file)).
const MAX_INPUT: usize = 1 << 20;

/// Writes `bytes` as a swap file of a queue on a [`SimFs`] (once on disk, once as the
/// unwritten append buffer) and reads, updates, re-reads and removes a record at every
/// plausible offset (each occurrence of the record magic, the chain of record lengths
/// from offset 0, the file's edges) plus garbage pointers; then appends a record and
/// checks it reads back exactly. Every call must return normally.
#[doc(hidden)]
pub fn fuzz_swap_file(bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(MAX_INPUT)];
    let fs: Arc<dyn FileSystem> = Arc::new(SimFs::new());
    for in_buffer in [false, true] {
        // A fresh directory each time, so the adopted file is number 0 both times.
        let Ok(dir) = SwapDir::open(Arc::clone(&fs), Path::new("/fuzz"), 1 << 20) else {
            return;
        };
        let Ok(mut q) = dir.queue("fuzz") else {
            return;
        };
        let mut offsets = super::queue::SwapQueue::plausible_offsets(bytes, MAX_CANDIDATES);
        let len = bytes.len() as u64;
        offsets.extend([len.saturating_sub(1), len, len + 1, u64::MAX - 3, u64::MAX]);
        let live = offsets.len() as u64;
        let Ok(file) = q.adopt(bytes, in_buffer, live) else {
            return;
        };
        for (i, &offset) in offsets.iter().enumerate() {
            let p = SwapPointer { file, offset };
            let before = q.read(p);
            let count = i as u32 ^ 0x5A5A;
            if q.update_delivery_count(p, count).is_ok() {
                if let Ok(r) = q.read(p) {
                    assert_eq!(r.delivery_count, count, "update not visible at {offset}");
                    if let Ok(b) = &before {
                        assert_eq!(r.payload, b.payload, "update changed the payload");
                    }
                }
            }
            if i % 3 != 2 && q.remove(p).is_ok() {
                assert!(q.read(p).is_err(), "removed record at {offset} still reads");
                assert!(q.remove(p).is_err(), "double remove at {offset} succeeded");
            }
            let _ = q.read(SwapPointer {
                file: file.wrapping_add(1 + i as u32),
                offset,
            });
            let _ = q.read(SwapPointer {
                file,
                offset: offset.wrapping_add(HEADER_LEN64 / 2),
            });
        }
        let payload: Vec<u8> = bytes.iter().rev().take(300).copied().collect();
        if let Ok(p) = q.append(&payload, 9) {
            // Oracle: the in-memory file layer cannot fail here, so any error is a swap bug
            // the fuzzer must report.
            match q.read(p) {
                Ok(r) => assert_eq!((r.payload, r.delivery_count), (payload, 9)),
                Err(e) => panic!("a fresh append does not read back: {e}"),
            }
            if let Err(e) = q.flush() {
                panic!("flushing on the simulated file layer failed: {e}");
            }
            match q.read(p) {
                Ok(r) => assert_eq!(r.delivery_count, 9),
                Err(e) => panic!("a flushed append does not read back: {e}"),
            }
        }
        let _ = q.flush();
        for &offset in offsets.iter().take(16) {
            let _ = q.read(SwapPointer { file, offset });
        }
    }
}
