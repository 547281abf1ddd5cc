//! Redo records: the payload of a commit frame, i.e. a transaction's physical page changes.
//!
//! Owns: the record codec and the page diff that produces deltas.
//!
//! Invariants: a commit payload holds every change of one transaction, so a frame is
//! applied entirely or (torn, invalid) not at all. The first change of a page after a
//! checkpoint is a full image, which is what lets recovery repair a torn page.db write;
//! later changes are byte-range deltas that apply only to a page whose LSN is older than
//! the frame. Decoding checks every length against the bytes present and never allocates
//! from a length it has not checked.

use crate::bytes::ByteReader;
use crate::error::{Error, Result};
use crate::log::frame::LOG_FILE;
use crate::page::{Lsn, PageId, PAGE_HEADER_LEN, ROOT_SLOTS};

/// One physical change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Record {
    /// The file holds at least this many pages (growth happened before the commit).
    PageCount(u64),
    /// A page was allocated.
    Alloc(PageId),
    /// A page was freed.
    Free(PageId),
    /// A superblock root slot changed.
    Root {
        /// Slot index (< `ROOT_SLOTS`).
        slot: u8,
        /// The new root page (0 = empty).
        page: PageId,
    },
    /// A full page image (header included; its LSN and CRC are set when applied).
    Image {
        /// The page.
        page: PageId,
        /// All of its bytes.
        bytes: Vec<u8>,
    },
    /// An opaque record of the XA layer (a prepare or a resolution), logged atomically
    /// with the frame's page changes; recovery hands these back in LSN order.
    Xa(Vec<u8>),
    /// Byte ranges of a page that changed.
    Delta {
        /// The page.
        page: PageId,
        /// `(offset, new bytes)` runs, in increasing offset order.
        runs: Vec<(u32, Vec<u8>)>,
    },
}

const T_PAGE_COUNT: u8 = 1;
const T_ALLOC: u8 = 2;
const T_FREE: u8 = 3;
const T_ROOT: u8 = 4;
const T_IMAGE: u8 = 5;
const T_DELTA: u8 = 6;
const T_XA: u8 = 7;

/// Header bytes a delta never carries: the CRC (recomputed at write) and the LSN (set from
/// the frame's LSN when applied).
const DIFF_SKIP: std::ops::Range<usize> = 4..PAGE_HEADER_LEN;

/// Writes records straight into a commit payload, so the commit path builds no
/// intermediate [`Record`]s (no page-image clones, no run vectors). [`decode`] reads the
/// same format back into [`Record`]s.
pub struct Encoder<'a> {
    out: &'a mut Vec<u8>,
}

impl<'a> Encoder<'a> {
    /// Appends to `out`.
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Encoder { out }
    }

    /// [`Record::PageCount`].
    pub fn page_count(&mut self, n: u64) {
        self.out.push(T_PAGE_COUNT);
        self.out.extend_from_slice(&n.to_le_bytes());
    }

    /// [`Record::Alloc`].
    pub fn alloc(&mut self, page: PageId) {
        self.out.push(T_ALLOC);
        self.out.extend_from_slice(&page.to_le_bytes());
    }

    /// [`Record::Free`].
    pub fn free(&mut self, page: PageId) {
        self.out.push(T_FREE);
        self.out.extend_from_slice(&page.to_le_bytes());
    }

    /// [`Record::Root`].
    pub fn root(&mut self, slot: u8, page: PageId) {
        self.out.push(T_ROOT);
        self.out.push(slot);
        self.out.extend_from_slice(&page.to_le_bytes());
    }

    /// [`Record::Image`].
    pub fn image(&mut self, page: PageId, bytes: &[u8]) {
        self.out.push(T_IMAGE);
        self.out.extend_from_slice(&page.to_le_bytes());
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.out.extend_from_slice(bytes);
    }

    /// [`Record::Xa`].
    pub fn xa(&mut self, bytes: &[u8]) {
        self.out.push(T_XA);
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.out.extend_from_slice(bytes);
    }

    /// [`Record::Delta`] holding the byte runs where `new` differs from `old` (same length),
    /// skipping the header's CRC and LSN; runs closer than 16 bytes merge (a run costs 8
    /// bytes of framing). Writes nothing and returns false when the pages do not differ.
    pub fn delta(&mut self, page: PageId, old: &[u8], new: &[u8]) -> bool {
        let mark = self.out.len();
        let count_at = self.delta_header(page);
        let mut n = 0u32;
        diff_runs(old, new, |start, last| {
            self.run(start as u32, &new[start..=last]);
            n += 1;
        });
        if n == 0 {
            self.out.truncate(mark);
            return false;
        }
        self.patch_count(count_at, n);
        true
    }

    fn delta_header(&mut self, page: PageId) -> usize {
        self.out.push(T_DELTA);
        self.out.extend_from_slice(&page.to_le_bytes());
        let at = self.out.len();
        self.out.extend_from_slice(&0u32.to_le_bytes());
        at
    }

    fn run(&mut self, off: u32, bytes: &[u8]) {
        self.out.extend_from_slice(&off.to_le_bytes());
        self.out
            .extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        self.out.extend_from_slice(bytes);
    }

    fn patch_count(&mut self, at: usize, n: u32) {
        self.out[at..at + 4].copy_from_slice(&n.to_le_bytes());
    }
}

/// Decodes a commit payload of the frame with LSN `lsn` for pages of `page_size` bytes.
pub fn decode(payload: &[u8], lsn: Lsn, page_size: usize) -> Result<Vec<Record>> {
    let err = |at: usize, detail: String| {
        Error::corruption(LOG_FILE, format!("frame {lsn} byte {at}"), detail)
    };
    let mut c = ByteReader::new(payload, &err);
    let mut out = Vec::new();
    while !c.at_end() {
        let tag = c.u8()?;
        let r = match tag {
            T_PAGE_COUNT => Record::PageCount(c.u64()?),
            T_ALLOC => Record::Alloc(c.u64()?),
            T_FREE => Record::Free(c.u64()?),
            T_ROOT => {
                let slot = c.u8()?;
                if usize::from(slot) >= ROOT_SLOTS {
                    return Err(c.bad(format!("root slot {slot} out of range")));
                }
                Record::Root {
                    slot,
                    page: c.u64()?,
                }
            }
            T_IMAGE => {
                let page = c.u64()?;
                let len = c.u32()? as usize;
                if len != page_size {
                    return Err(c.bad(format!("page image of {len} bytes, page size {page_size}")));
                }
                Record::Image {
                    page,
                    bytes: c.take(len)?.to_vec(),
                }
            }
            T_XA => {
                let len = c.u32()? as usize;
                Record::Xa(c.take(len)?.to_vec())
            }
            T_DELTA => {
                let page = c.u64()?;
                let n = c.u32()?;
                let mut runs = Vec::new();
                for _ in 0..n {
                    let off = c.u32()?;
                    let len = c.u32()? as usize;
                    let fits = (off as usize)
                        .checked_add(len)
                        .is_some_and(|end| end <= page_size);
                    if !fits {
                        return Err(c.bad(format!(
                            "delta run {off}+{len} beyond page size {page_size}"
                        )));
                    }
                    runs.push((off, c.take(len)?.to_vec()));
                }
                Record::Delta { page, runs }
            }
            other => return Err(c.bad(format!("unknown record type {other}"))),
        };
        out.push(r);
    }
    Ok(out)
}

/// Calls `run(start, last)` for each run of differing bytes (inclusive bounds), in
/// increasing order, outside `DIFF_SKIP`.
///
/// Equal stretches are skipped a block at a time (see `next_diff`): this runs for every
/// page of every commit (measured: a byte-at-a-time loop was half the CPU of a one-message
/// commit).
fn diff_runs(old: &[u8], new: &[u8], mut run: impl FnMut(usize, usize)) {
    let n = old.len().min(new.len());
    for (from, end) in [(0, DIFF_SKIP.start.min(n)), (DIFF_SKIP.end.min(n), n)] {
        let mut at = from;
        while let Some(start) = next_diff(old, new, at, end) {
            let stop = run_end(old, new, start, end);
            // `stop` is the first byte of an equal stretch (or `end`); the run ends at the
            // last differing byte before it.
            let mut last = stop - 1;
            while last > start && old[last] == new[last] {
                last -= 1;
            }
            run(start, last);
            at = stop;
        }
    }
}

/// Where the run of differences that begins at `start` stops: the start of the first
/// `MERGE_GAP` equal bytes at or after `start` (checked `MERGE_GAP` bytes at a time, so a
/// run may absorb a few equal bytes; runs closer than that merge, since a run costs 8
/// bytes of framing), or `end`. Word-wise: a byte loop here was the largest part of
/// encoding a commit that stores a 1 KiB payload.
fn run_end(old: &[u8], new: &[u8], start: usize, end: usize) -> usize {
    const MERGE_GAP: usize = 16;
    let mut j = start + 1;
    while j + MERGE_GAP <= end {
        if word16(old, j) == word16(new, j) {
            // Equal window: the run stops at the first equal byte before it.
            let mut k = j;
            while k > start + 1 && old[k - 1] == new[k - 1] {
                k -= 1;
            }
            return k;
        }
        j += MERGE_GAP;
    }
    end
}

/// The 16 bytes at `at` as one integer: compared inline, where a 16-byte slice
/// comparison is a library call.
#[inline]
fn word16(b: &[u8], at: usize) -> u128 {
    let mut w = [0u8; 16];
    w.copy_from_slice(&b[at..at + 16]);
    u128::from_ne_bytes(w)
}

/// The first index in `from..end` where the slices differ.
///
/// Equal stretches are skipped a block at a time with slice equality, which compiles to
/// the C library's vectorised `bcmp` (measured with callgrind: a hand-unrolled 8-byte word
/// loop was 40% of a small commit's instructions).
fn next_diff(old: &[u8], new: &[u8], from: usize, end: usize) -> Option<usize> {
    const BLOCK: usize = 256;
    let mut i = from;
    while i + BLOCK <= end && old[i..i + BLOCK] == new[i..i + BLOCK] {
        i += BLOCK;
    }
    while i + 16 <= end && word16(old, i) == word16(new, i) {
        i += 16;
    }
    (i..end).find(|&j| old[j] != new[j])
}

/// Applies delta runs to a page (runs were bounds-checked by [`decode`]).
pub fn apply_runs(page: &mut [u8], runs: &[(u32, Vec<u8>)]) {
    for (off, bytes) in runs {
        let off = *off as usize;
        if let Some(dst) = page.get_mut(off..off + bytes.len()) {
            dst.copy_from_slice(bytes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes records through the commit path's encoder.
    fn encode(records: &[Record]) -> Vec<u8> {
        let mut out = Vec::new();
        let mut e = Encoder::new(&mut out);
        for r in records {
            match r {
                Record::PageCount(n) => e.page_count(*n),
                Record::Alloc(p) => e.alloc(*p),
                Record::Free(p) => e.free(*p),
                Record::Root { slot, page } => e.root(*slot, *page),
                Record::Image { page, bytes } => e.image(*page, bytes),
                Record::Xa(bytes) => e.xa(bytes),
                Record::Delta { page, runs } => {
                    let at = e.delta_header(*page);
                    for (off, bytes) in runs {
                        e.run(*off, bytes);
                    }
                    e.patch_count(at, runs.len() as u32);
                }
            }
        }
        out
    }

    #[test]
    fn records_round_trip() {
        let recs = vec![
            Record::PageCount(77),
            Record::Alloc(5),
            Record::Free(9),
            Record::Root { slot: 3, page: 12 },
            Record::Image {
                page: 5,
                bytes: vec![7u8; 2048],
            },
            Record::Delta {
                page: 6,
                runs: vec![(16, vec![1, 2, 3]), (100, vec![9])],
            },
        ];
        assert_eq!(decode(&encode(&recs), 1, 2048).unwrap(), recs);
    }

    #[test]
    fn truncated_or_lying_payloads_are_corruption() {
        let recs = vec![Record::Delta {
            page: 6,
            runs: vec![(16, vec![1, 2, 3])],
        }];
        let b = encode(&recs);
        for cut in 0..b.len() {
            assert!(decode(&b[..cut], 1, 2048).is_err() || cut == 0);
        }
        let mut lying = b.clone();
        lying[13..17].copy_from_slice(&2040u32.to_le_bytes());
        lying[17..21].copy_from_slice(&100u32.to_le_bytes());
        let e = decode(&lying, 9, 2048).unwrap_err();
        assert!(e.to_string().contains("frame 9"), "{e}");
        assert!(decode(&[42], 1, 2048).is_err());
        assert!(decode(&[T_ROOT, 200, 0, 0, 0, 0, 0, 0, 0, 0], 1, 2048).is_err());
    }

    proptest! {
        #[test]
        fn diff_then_apply_reproduces_the_new_page(
            old in proptest::collection::vec(any::<u8>(), 256),
            edits in proptest::collection::vec((0usize..256, any::<u8>()), 0..40),
        ) {
            let mut new = old.clone();
            for (i, v) in edits { new[i] = v; }
            let mut payload = Vec::new();
            let changed = Encoder::new(&mut payload).delta(7, &old, &new);
            let runs = match decode(&payload, 1, 256).unwrap().as_slice() {
                [] => Vec::new(),
                [Record::Delta { page: 7, runs }] => runs.clone(),
                other => panic!("unexpected records {other:?}"),
            };
            prop_assert_eq!(changed, !runs.is_empty());
            let mut got = old.clone();
            apply_runs(&mut got, &runs);
            got[DIFF_SKIP].copy_from_slice(&new[DIFF_SKIP]);
            prop_assert_eq!(got, new);
            for (off, _) in &runs {
                prop_assert!(!DIFF_SKIP.contains(&(*off as usize)));
            }
        }
    }
}
