//! The log's append buffer: bytes whose first byte sits at a `DIRECT_ALIGN`-aligned
//! address, so a batch can go to the disk through an unbuffered (`O_DIRECT`) handle
//! without being copied into an aligned bounce buffer first.
//!
//! Invariant: `as_slice()` starts at an address that is a multiple of [`DIRECT_ALIGN`]
//! whenever the buffer is not empty. The alignment is got in safe code, by over-allocating
//! a `Vec` and starting at the first aligned byte; growing re-derives it and moves the
//! bytes.

use crate::file::DIRECT_ALIGN;

/// Buffers above this capacity are dropped when a batch is done rather than kept for the
/// next one, so one huge transaction does not pin its memory for the life of the store.
/// Above the log's write-ahead bound (`log::WRITE_AHEAD`), which keeps `Async` batches
/// smaller than this.
const KEEP_CAPACITY: usize = 32 << 20;

/// A growable byte buffer whose contents start on a [`DIRECT_ALIGN`] boundary.
#[derive(Debug, Default)]
pub struct AlignedBuf {
    /// Backing bytes, all initialised; the contents are `raw[start..start + len]`.
    raw: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    /// The contents.
    pub fn as_slice(&self) -> &[u8] {
        &self.raw[self.start..self.start + self.len]
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Bytes it can hold without reallocating.
    pub fn capacity(&self) -> usize {
        self.raw.len().saturating_sub(self.start)
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets the contents, keeping the allocation unless it is very large.
    pub fn clear(&mut self) {
        self.len = 0;
        if self.raw.len() > KEEP_CAPACITY {
            *self = AlignedBuf::default();
        }
    }

    /// Appends `n` zero bytes and returns them for the caller to fill.
    pub fn extend_zeroed(&mut self, n: usize) -> &mut [u8] {
        let tail = self.extend_unset(n);
        tail.fill(0);
        tail
    }

    /// Appends `n` bytes of unspecified (stale, but initialised) content; the caller
    /// overwrites every one of them. Saves zeroing a large frame only to copy over it.
    pub fn extend_unset(&mut self, n: usize) -> &mut [u8] {
        let end = self.start + self.len + n;
        if end > self.raw.len() {
            self.grow(self.len + n);
        }
        let from = self.start + self.len;
        self.len += n;
        &mut self.raw[from..from + n]
    }

    /// Reallocates for at least `need` bytes of contents and moves them to the new
    /// aligned start.
    fn grow(&mut self, need: usize) {
        let capacity = need.max(self.len.saturating_mul(2)).max(DIRECT_ALIGN);
        let mut raw = vec![0u8; capacity + DIRECT_ALIGN];
        // `align_offset` on a byte pointer always succeeds, and a Vec never moves its
        // heap allocation while it is not resized, so the start stays aligned.
        let start = raw.as_ptr().align_offset(DIRECT_ALIGN);
        raw[start..start + self.len].copy_from_slice(self.as_slice());
        self.raw = raw;
        self.start = start;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contents_stay_aligned_and_intact_across_growth() {
        let mut b = AlignedBuf::default();
        let mut model = Vec::new();
        for i in 0..2000usize {
            let n = (i * 37) % 700;
            let fill = (i % 251) as u8;
            b.extend_zeroed(n).fill(fill);
            model.extend(std::iter::repeat_n(fill, n));
            assert_eq!(b.as_slice(), &model[..]);
            if !b.is_empty() {
                assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
            }
        }
        b.clear();
        assert!(b.is_empty());
        assert_eq!(
            b.extend_zeroed(3),
            &[0, 0, 0],
            "reused bytes come back zeroed"
        );
        assert_eq!(b.as_slice().as_ptr() as usize % DIRECT_ALIGN, 0);
    }

    #[test]
    fn a_huge_buffer_is_released_on_clear() {
        let mut b = AlignedBuf::default();
        b.extend_zeroed(KEEP_CAPACITY + 1);
        b.clear();
        assert_eq!(b.raw.len(), 0);
    }
}
