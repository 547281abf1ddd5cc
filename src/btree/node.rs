//! Page codecs of the B+tree: the leaf and branch layouts (see the parent module), their
//! validation and their in-place edits.
//!
//! Owns: every byte offset of a tree page. Invariant: a function reading entry or child `i`
//! is only called after `validate_leaf` / `validate_branch` accepted the page with a count
//! above `i`, so no index is ever out of bounds; edits are only called with counts below the
//! page's capacity.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::MAX_VALUE_LEN;
use crate::error::{Error, Result};
use crate::kernel::PageSource;
use crate::page::{PageId, PageType, PAGE_DB, PAGE_HEADER_LEN};

pub(super) const COUNT_AT: usize = PAGE_HEADER_LEN;
pub(super) const LEAF_NEXT_AT: usize = PAGE_HEADER_LEN + 2;
pub(super) const LEAF_PREV_AT: usize = PAGE_HEADER_LEN + 10;
pub(super) const LEAF_ENTRIES_AT: usize = PAGE_HEADER_LEN + 18;
pub(super) const BRANCH_CHILD0_AT: usize = PAGE_HEADER_LEN + 2;
pub(super) const BRANCH_PAIRS_AT: usize = PAGE_HEADER_LEN + 10;
pub(super) const PAIR_LEN: usize = 16;

/// Entries a leaf of `page_size` bytes holds for values of `value_len` bytes.
pub fn leaf_capacity(page_size: usize, value_len: usize) -> usize {
    (page_size.saturating_sub(LEAF_ENTRIES_AT) / (8 + value_len)).min(usize::from(u16::MAX))
}

/// Separators a branch of `page_size` bytes holds (it then has one more child).
pub fn branch_capacity(page_size: usize) -> usize {
    (page_size.saturating_sub(BRANCH_PAIRS_AT) / PAIR_LEN).min(usize::from(u16::MAX))
}

pub(super) fn corrupt(id: PageId, detail: impl Into<String>) -> Error {
    Error::corruption(PAGE_DB, format!("page {id}"), detail)
}

pub(super) fn check_value_len(value_len: usize) -> Result<()> {
    if value_len == 0 || value_len > MAX_VALUE_LEN {
        return Err(Error::invalid_argument(format!(
            "B+tree value length {value_len} outside 1..={MAX_VALUE_LEN}"
        )));
    }
    Ok(())
}

pub(super) fn check_value(value_len: usize, value: &[u8]) -> Result<()> {
    check_value_len(value_len)?;
    if value.len() != value_len {
        return Err(Error::invalid_argument(format!(
            "value of {} bytes in a tree of {value_len}-byte values",
            value.len()
        )));
    }
    Ok(())
}

/// Reads page `id` through `src`. A tree pointer to page 0 or to a page freed earlier in
/// the same transaction is the tree's corruption, reported as such.
pub(super) fn read<S: PageSource, R>(
    src: &mut S,
    id: PageId,
    f: impl FnOnce(&[u8]) -> R,
) -> Result<R> {
    if id == 0 {
        return Err(corrupt(id, "tree pointer to page 0"));
    }
    src.with_page(id, f).map_err(|e| match e {
        Error::InvalidArgument { reason } => corrupt(id, format!("tree pointer: {reason}")),
        other => other,
    })
}

/// The key range a node's keys must lie in: `lo` inclusive, `hi` exclusive (`None` = no bound).
#[derive(Debug, Clone, Copy)]
pub(super) struct Bounds {
    pub(super) lo: u64,
    pub(super) hi: Option<u64>,
}

impl Bounds {
    pub(super) const ALL: Bounds = Bounds { lo: 0, hi: None };

    pub(super) fn contains(self, k: u64) -> bool {
        k >= self.lo && self.hi.is_none_or(|h| k < h)
    }
}

// ---- leaf codec -------------------------------------------------------------------------

pub(super) fn count(p: &[u8]) -> usize {
    usize::from(LE::read_u16(&p[COUNT_AT..COUNT_AT + 2]))
}

pub(super) fn set_count(p: &mut [u8], n: usize) {
    // Callers keep n within the page's capacity, which is at most u16::MAX.
    LE::write_u16(&mut p[COUNT_AT..COUNT_AT + 2], n as u16);
}

pub(super) fn leaf_next(p: &[u8]) -> PageId {
    LE::read_u64(&p[LEAF_NEXT_AT..LEAF_NEXT_AT + 8])
}

pub(super) fn leaf_prev(p: &[u8]) -> PageId {
    LE::read_u64(&p[LEAF_PREV_AT..LEAF_PREV_AT + 8])
}

pub(super) fn set_leaf_next(p: &mut [u8], id: PageId) {
    LE::write_u64(&mut p[LEAF_NEXT_AT..LEAF_NEXT_AT + 8], id);
}

pub(super) fn set_leaf_prev(p: &mut [u8], id: PageId) {
    LE::write_u64(&mut p[LEAF_PREV_AT..LEAF_PREV_AT + 8], id);
}

pub(super) fn entry_at(value_len: usize, i: usize) -> usize {
    LEAF_ENTRIES_AT + i * (8 + value_len)
}

pub(super) fn leaf_key(p: &[u8], value_len: usize, i: usize) -> u64 {
    let o = entry_at(value_len, i);
    LE::read_u64(&p[o..o + 8])
}

pub(super) fn leaf_value(p: &[u8], value_len: usize, i: usize) -> &[u8] {
    let o = entry_at(value_len, i) + 8;
    &p[o..o + value_len]
}

/// Binary search of a validated leaf of `n` entries (as `slice::binary_search`).
pub(super) fn leaf_search(p: &[u8], value_len: usize, n: usize, key: u64) -> Result<usize, usize> {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        let k = leaf_key(p, value_len, mid);
        if k == key {
            return Ok(mid);
        }
        if k < key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    Err(lo)
}

/// Checks a page that must be a leaf: type, count, key order, keys inside `b`. Returns the
/// count; afterwards every entry index below it is in bounds.
pub(super) fn validate_leaf(id: PageId, p: &[u8], value_len: usize, b: Bounds) -> Result<usize> {
    let n = leaf_header(id, p, value_len)?;
    let mut prev: Option<u64> = None;
    for i in 0..n {
        let k = leaf_key(p, value_len, i);
        if prev.is_some_and(|q| k <= q) {
            return Err(corrupt(id, format!("leaf keys out of order at entry {i}")));
        }
        if !b.contains(k) {
            return Err(corrupt(
                id,
                format!("leaf key {k} outside the range its parent gives ({b:?})"),
            ));
        }
        prev = Some(k);
    }
    Ok(n)
}

/// Checks that `p` is a B+tree node of type `ty`, long enough for its fixed header (which
/// ends at `header_end`).
fn expect_node(id: PageId, p: &[u8], ty: PageType, header_end: usize) -> Result<()> {
    if p.len() < header_end || p[0] != ty as u8 {
        let what = if ty == PageType::Leaf {
            "leaf"
        } else {
            "branch"
        };
        return Err(corrupt(
            id,
            format!(
                "expected a B+tree {what}, found page type {}",
                p.first().copied().unwrap_or(0)
            ),
        ));
    }
    Ok(())
}

/// The O(1) part of [`validate_leaf`]: type and count. Enough for a page this transaction
/// already validated (every later change to it was made by this code): every entry index
/// below the count is in bounds.
pub(super) fn leaf_header(id: PageId, p: &[u8], value_len: usize) -> Result<usize> {
    expect_node(id, p, PageType::Leaf, LEAF_ENTRIES_AT)?;
    let n = count(p);
    let cap = leaf_capacity(p.len(), value_len);
    if n > cap {
        return Err(corrupt(
            id,
            format!("leaf count {n} exceeds capacity {cap}"),
        ));
    }
    Ok(n)
}

pub(super) fn leaf_insert_at(
    p: &mut [u8],
    value_len: usize,
    n: usize,
    pos: usize,
    key: u64,
    value: &[u8],
) {
    let el = 8 + value_len;
    let at = entry_at(value_len, pos);
    p.copy_within(at..entry_at(value_len, n), at + el);
    LE::write_u64(&mut p[at..at + 8], key);
    p[at + 8..at + el].copy_from_slice(value);
    set_count(p, n + 1);
}

pub(super) fn leaf_remove_at(p: &mut [u8], value_len: usize, n: usize, pos: usize) {
    let at = entry_at(value_len, pos);
    p.copy_within(entry_at(value_len, pos + 1)..entry_at(value_len, n), at);
    set_count(p, n - 1);
}

// ---- branch codec -----------------------------------------------------------------------

pub(super) fn pair_at(j: usize) -> usize {
    BRANCH_PAIRS_AT + j * PAIR_LEN
}

/// Child `i` (0..=count).
pub(super) fn branch_child(p: &[u8], i: usize) -> PageId {
    let o = if i == 0 {
        BRANCH_CHILD0_AT
    } else {
        pair_at(i - 1) + 8
    };
    LE::read_u64(&p[o..o + 8])
}

/// Separator `i` (1..=count): the lowest key of child `i`'s range.
pub(super) fn branch_sep(p: &[u8], i: usize) -> u64 {
    let o = pair_at(i - 1);
    LE::read_u64(&p[o..o + 8])
}

pub(super) fn set_branch_child(p: &mut [u8], i: usize, child: PageId) {
    let o = if i == 0 {
        BRANCH_CHILD0_AT
    } else {
        pair_at(i - 1) + 8
    };
    LE::write_u64(&mut p[o..o + 8], child);
}

/// The child index a key goes to: the number of separators `<= key`.
pub(super) fn branch_route(p: &[u8], n: usize, key: u64) -> usize {
    let (mut lo, mut hi) = (0, n);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if branch_sep(p, mid + 1) <= key {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo
}

/// The range of child `i` of a validated branch of `n` separators whose own range is `b`.
pub(super) fn child_bounds(p: &[u8], n: usize, b: Bounds, i: usize) -> Bounds {
    Bounds {
        lo: if i == 0 { b.lo } else { branch_sep(p, i) },
        hi: if i == n {
            b.hi
        } else {
            Some(branch_sep(p, i + 1))
        },
    }
}

/// Checks a page that must be a branch: type, count, child ids, separator order and range.
pub(super) fn validate_branch(id: PageId, p: &[u8], b: Bounds) -> Result<usize> {
    let n = branch_header(id, p)?;
    let mut prev: Option<u64> = None;
    for i in 0..=n {
        let c = branch_child(p, i);
        if c == 0 || c == id {
            return Err(corrupt(id, format!("branch child {i} is page {c}")));
        }
        if i > 0 {
            let s = branch_sep(p, i);
            if prev.is_some_and(|q| s <= q) {
                return Err(corrupt(
                    id,
                    format!("branch separators out of order at {i}"),
                ));
            }
            if !b.contains(s) {
                return Err(corrupt(
                    id,
                    format!("separator {s} outside the range its parent gives ({b:?})"),
                ));
            }
            prev = Some(s);
        }
    }
    Ok(n)
}

/// The O(1) part of [`validate_branch`]: type and count (see [`leaf_header`]).
pub(super) fn branch_header(id: PageId, p: &[u8]) -> Result<usize> {
    expect_node(id, p, PageType::Branch, BRANCH_PAIRS_AT)?;
    let n = count(p);
    let cap = branch_capacity(p.len());
    if n == 0 || n > cap {
        return Err(corrupt(id, format!("branch count {n} outside 1..={cap}")));
    }
    Ok(n)
}

pub(super) fn write_branch(p: &mut [u8], child0: PageId, pairs: &[(u64, PageId)]) {
    LE::write_u64(&mut p[BRANCH_CHILD0_AT..BRANCH_CHILD0_AT + 8], child0);
    for (j, (s, c)) in pairs.iter().enumerate() {
        let o = pair_at(j);
        LE::write_u64(&mut p[o..o + 8], *s);
        LE::write_u64(&mut p[o + 8..o + 16], *c);
    }
    set_count(p, pairs.len());
}

/// Inserts `(sep, child)` right after child `idx` of a branch of `n < capacity` separators.
pub(super) fn branch_insert(p: &mut [u8], n: usize, idx: usize, sep: u64, child: PageId) {
    let at = pair_at(idx);
    p.copy_within(at..pair_at(n), at + PAIR_LEN);
    LE::write_u64(&mut p[at..at + 8], sep);
    LE::write_u64(&mut p[at + 8..at + 16], child);
    set_count(p, n + 1);
}

/// Removes child `idx` (and the separator bounding it) from a branch of `n >= 2` separators.
pub(super) fn branch_remove_child(p: &mut [u8], n: usize, idx: usize) {
    let j = if idx == 0 {
        // Child 1 becomes child 0; its separator goes (child 0's range widens to cover it).
        let c1 = branch_child(p, 1);
        set_branch_child(p, 0, c1);
        0
    } else {
        idx - 1
    };
    p.copy_within(pair_at(j + 1)..pair_at(n), pair_at(j));
    set_count(p, n - 1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacities_fit_the_page() {
        assert_eq!(leaf_capacity(2048, 1), 223);
        assert_eq!(leaf_capacity(2048, 96), 19);
        assert_eq!(branch_capacity(2048), 126);
        assert_eq!(branch_capacity(65536), 4094);
        for ps in [2048usize, 65536] {
            for vl in 1..=MAX_VALUE_LEN {
                assert!(entry_at(vl, leaf_capacity(ps, vl)) <= ps);
            }
            assert!(pair_at(branch_capacity(ps)) <= ps);
        }
    }

    #[test]
    fn routing_and_branch_edits() {
        let mut p = vec![0u8; 2048];
        p[0] = PageType::Branch as u8;
        write_branch(&mut p, 10, &[(100, 11), (200, 12)]);
        assert_eq!(validate_branch(1, &p, Bounds::ALL).unwrap(), 2);
        let route: Vec<usize> = [0, 99, 100, 199, 200, u64::MAX]
            .iter()
            .map(|&k| branch_route(&p, 2, k))
            .collect();
        assert_eq!(route, [0, 0, 1, 1, 2, 2]);
        branch_insert(&mut p, 2, 1, 150, 13);
        assert_eq!(branch_sep(&p, 2), 150);
        assert_eq!(branch_child(&p, 2), 13);
        branch_remove_child(&mut p, 3, 0);
        assert_eq!(
            (count(&p), branch_child(&p, 0), branch_sep(&p, 1)),
            (2, 11, 150)
        );
        // Out-of-range separators are corruption.
        let narrow = Bounds {
            lo: 0,
            hi: Some(150),
        };
        assert!(validate_branch(1, &p, narrow).is_err());
        set_branch_child(&mut p, 1, 1);
        assert!(validate_branch(1, &p, Bounds::ALL).is_err());
    }
}
