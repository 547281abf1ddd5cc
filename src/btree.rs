//! The per-queue index: a B+tree keyed by the message key (`u64`) with fixed-length values,
//! built on the kernel's transactional pages.
//!
//! Owns: the byte layout of [`PageType::Leaf`] and [`PageType::Branch`] pages, and every
//! change to them. Holds no state in memory between calls: a tree is its root page id (kept
//! by the caller) plus the pages reachable from it, so memory never grows with the number of
//! messages.
//!
//! Layout (little-endian; bytes 0..16 are the page header of [`crate::page`]):
//!
//! ```text
//! leaf:   0 header[16] | 16 count u16 | 18 next-leaf u64 (0 = none) | 26 prev-leaf u64 (0 = none)
//!         | 34 count x (key u64, value[value_len]) sorted by key, strictly increasing
//! branch: 0 header[16] | 16 count u16 | 18 child0 u64 | 26 count x (separator u64, child u64)
//! ```
//!
//! A branch with separators `s1 < .. < sn` and children `c0 .. cn` sends key `k` to `ci`
//! where `i` is the number of separators `<= k`; so every key under `ci` lies in
//! `[si, s(i+1))` (intersected with the branch's own range). Bytes after the last entry are
//! unspecified (stale copies are left there: rewriting them would only enlarge the log).
//!
//! Invariants (all verified by [`check`]):
//! - every key lies in the range its ancestors' separators give it; keys strictly increase
//!   along the leaf chain, whose `next`/`prev` links follow the in-order sequence of leaves;
//! - only the root may be an empty leaf; every branch has at least one separator;
//! - no page is reachable twice; the tree is at most [`MAX_DEPTH`] levels deep.
//!
//! Leaves may sit at different depths: a branch left with one child is replaced by that child
//! (see `docs/design.md`, "B+tree index"). Nothing relies on uniform depth.
//!
//! Every decode checks the page type, the count against the page's capacity, child ids and
//! key order before use; a violation is `Error::Corruption` naming `page.db` and the page,
//! never a panic or an endless loop.

use std::collections::HashSet;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType, PAGE_DB, PAGE_HEADER_LEN};

/// The largest value length a tree accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 96;
/// The deepest tree any operation follows; deeper means a corrupt (cyclic) tree.
pub const MAX_DEPTH: usize = 64;

const COUNT_AT: usize = PAGE_HEADER_LEN;
const LEAF_NEXT_AT: usize = PAGE_HEADER_LEN + 2;
const LEAF_PREV_AT: usize = PAGE_HEADER_LEN + 10;
const LEAF_ENTRIES_AT: usize = PAGE_HEADER_LEN + 18;
const BRANCH_CHILD0_AT: usize = PAGE_HEADER_LEN + 2;
const BRANCH_PAIRS_AT: usize = PAGE_HEADER_LEN + 10;
const PAIR_LEN: usize = 16;

/// Entries a leaf of `page_size` bytes holds for values of `value_len` bytes.
pub fn leaf_capacity(page_size: usize, value_len: usize) -> usize {
    (page_size.saturating_sub(LEAF_ENTRIES_AT) / (8 + value_len)).min(usize::from(u16::MAX))
}

/// Separators a branch of `page_size` bytes holds (it then has one more child).
pub fn branch_capacity(page_size: usize) -> usize {
    (page_size.saturating_sub(BRANCH_PAIRS_AT) / PAIR_LEN).min(usize::from(u16::MAX))
}

/// What [`check`] found in a tree.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TreeStats {
    /// Entries (keys) in the tree.
    pub entries: u64,
    /// Leaf pages.
    pub leaves: u64,
    /// Branch pages.
    pub branches: u64,
    /// Levels on the longest root-to-leaf path (1 for a tree that is a single leaf).
    pub depth: u32,
    /// Every page of the tree, in depth-first order (for leak checks).
    pub pages: Vec<PageId>,
}

fn corrupt(id: PageId, detail: impl Into<String>) -> Error {
    Error::corruption(PAGE_DB, format!("page {id}"), detail)
}

fn check_value_len(value_len: usize) -> Result<()> {
    if value_len == 0 || value_len > MAX_VALUE_LEN {
        return Err(Error::invalid_argument(format!(
            "B+tree value length {value_len} outside 1..={MAX_VALUE_LEN}"
        )));
    }
    Ok(())
}

fn check_value(value_len: usize, value: &[u8]) -> Result<()> {
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
fn read<S: PageSource, R>(src: &mut S, id: PageId, f: impl FnOnce(&[u8]) -> R) -> Result<R> {
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
struct Bounds {
    lo: u64,
    hi: Option<u64>,
}

impl Bounds {
    const ALL: Bounds = Bounds { lo: 0, hi: None };

    fn contains(self, k: u64) -> bool {
        k >= self.lo && self.hi.map_or(true, |h| k < h)
    }
}

// ---- leaf codec -------------------------------------------------------------------------

fn count(p: &[u8]) -> usize {
    usize::from(LE::read_u16(&p[COUNT_AT..COUNT_AT + 2]))
}

fn set_count(p: &mut [u8], n: usize) {
    // Callers keep n within the page's capacity, which is at most u16::MAX.
    LE::write_u16(&mut p[COUNT_AT..COUNT_AT + 2], n as u16);
}

fn leaf_next(p: &[u8]) -> PageId {
    LE::read_u64(&p[LEAF_NEXT_AT..LEAF_NEXT_AT + 8])
}

fn leaf_prev(p: &[u8]) -> PageId {
    LE::read_u64(&p[LEAF_PREV_AT..LEAF_PREV_AT + 8])
}

fn set_leaf_next(p: &mut [u8], id: PageId) {
    LE::write_u64(&mut p[LEAF_NEXT_AT..LEAF_NEXT_AT + 8], id);
}

fn set_leaf_prev(p: &mut [u8], id: PageId) {
    LE::write_u64(&mut p[LEAF_PREV_AT..LEAF_PREV_AT + 8], id);
}

fn entry_at(value_len: usize, i: usize) -> usize {
    LEAF_ENTRIES_AT + i * (8 + value_len)
}

fn leaf_key(p: &[u8], value_len: usize, i: usize) -> u64 {
    let o = entry_at(value_len, i);
    LE::read_u64(&p[o..o + 8])
}

fn leaf_value(p: &[u8], value_len: usize, i: usize) -> &[u8] {
    let o = entry_at(value_len, i) + 8;
    &p[o..o + value_len]
}

/// Binary search of a validated leaf of `n` entries (as `slice::binary_search`).
fn leaf_search(p: &[u8], value_len: usize, n: usize, key: u64) -> Result<usize, usize> {
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
fn validate_leaf(id: PageId, p: &[u8], value_len: usize, b: Bounds) -> Result<usize> {
    if p.len() < LEAF_ENTRIES_AT || p[0] != PageType::Leaf as u8 {
        return Err(corrupt(
            id,
            format!(
                "expected a B+tree leaf, found page type {}",
                p.first().copied().unwrap_or(0)
            ),
        ));
    }
    let n = count(p);
    let cap = leaf_capacity(p.len(), value_len);
    if n > cap {
        return Err(corrupt(
            id,
            format!("leaf count {n} exceeds capacity {cap}"),
        ));
    }
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

fn leaf_insert_at(p: &mut [u8], value_len: usize, n: usize, pos: usize, key: u64, value: &[u8]) {
    let el = 8 + value_len;
    let at = entry_at(value_len, pos);
    p.copy_within(at..entry_at(value_len, n), at + el);
    LE::write_u64(&mut p[at..at + 8], key);
    p[at + 8..at + el].copy_from_slice(value);
    set_count(p, n + 1);
}

fn leaf_remove_at(p: &mut [u8], value_len: usize, n: usize, pos: usize) {
    let at = entry_at(value_len, pos);
    p.copy_within(entry_at(value_len, pos + 1)..entry_at(value_len, n), at);
    set_count(p, n - 1);
}

// ---- branch codec -----------------------------------------------------------------------

fn pair_at(j: usize) -> usize {
    BRANCH_PAIRS_AT + j * PAIR_LEN
}

/// Child `i` (0..=count).
fn branch_child(p: &[u8], i: usize) -> PageId {
    let o = if i == 0 {
        BRANCH_CHILD0_AT
    } else {
        pair_at(i - 1) + 8
    };
    LE::read_u64(&p[o..o + 8])
}

/// Separator `i` (1..=count): the lowest key of child `i`'s range.
fn branch_sep(p: &[u8], i: usize) -> u64 {
    let o = pair_at(i - 1);
    LE::read_u64(&p[o..o + 8])
}

fn set_branch_child(p: &mut [u8], i: usize, child: PageId) {
    let o = if i == 0 {
        BRANCH_CHILD0_AT
    } else {
        pair_at(i - 1) + 8
    };
    LE::write_u64(&mut p[o..o + 8], child);
}

/// The child index a key goes to: the number of separators `<= key`.
fn branch_route(p: &[u8], n: usize, key: u64) -> usize {
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
fn child_bounds(p: &[u8], n: usize, b: Bounds, i: usize) -> Bounds {
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
fn validate_branch(id: PageId, p: &[u8], b: Bounds) -> Result<usize> {
    if p.len() < BRANCH_PAIRS_AT || p[0] != PageType::Branch as u8 {
        return Err(corrupt(
            id,
            format!(
                "expected a B+tree branch, found page type {}",
                p.first().copied().unwrap_or(0)
            ),
        ));
    }
    let n = count(p);
    let cap = branch_capacity(p.len());
    if n == 0 || n > cap {
        return Err(corrupt(id, format!("branch count {n} outside 1..={cap}")));
    }
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

fn write_branch(p: &mut [u8], child0: PageId, pairs: &[(u64, PageId)]) {
    LE::write_u64(&mut p[BRANCH_CHILD0_AT..BRANCH_CHILD0_AT + 8], child0);
    for (j, (s, c)) in pairs.iter().enumerate() {
        let o = pair_at(j);
        LE::write_u64(&mut p[o..o + 8], *s);
        LE::write_u64(&mut p[o + 8..o + 16], *c);
    }
    set_count(p, pairs.len());
}

/// Inserts `(sep, child)` right after child `idx` of a branch of `n < capacity` separators.
fn branch_insert(p: &mut [u8], n: usize, idx: usize, sep: u64, child: PageId) {
    let at = pair_at(idx);
    p.copy_within(at..pair_at(n), at + PAIR_LEN);
    LE::write_u64(&mut p[at..at + 8], sep);
    LE::write_u64(&mut p[at + 8..at + 16], child);
    set_count(p, n + 1);
}

/// Removes child `idx` (and the separator bounding it) from a branch of `n >= 2` separators.
fn branch_remove_child(p: &mut [u8], n: usize, idx: usize) {
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

// ---- descent ----------------------------------------------------------------------------

/// One branch on the way down.
#[derive(Debug, Clone, Copy)]
struct Step {
    page: PageId,
    /// The child index taken.
    idx: usize,
    /// The branch's separator count.
    count: usize,
}

/// The leaf a descent ended in.
#[derive(Debug, Clone, Copy)]
struct LeafAt {
    id: PageId,
    count: usize,
    next: PageId,
    prev: PageId,
    /// Where `key` is (`Ok`) or would go (`Err`).
    pos: Result<usize, usize>,
}

enum Node<R> {
    Branch {
        idx: usize,
        count: usize,
        child: PageId,
        bounds: Bounds,
    },
    Leaf(LeafAt, R),
}

/// Walks from `root` to the leaf for `key`, validating every page on the way; `f` sees the
/// validated leaf. Returns the branches passed, the leaf and `f`'s result.
fn descend<S: PageSource, R>(
    src: &mut S,
    root: PageId,
    value_len: usize,
    key: u64,
    f: impl FnOnce(&[u8], &LeafAt) -> R,
) -> Result<(Vec<Step>, LeafAt, R)> {
    check_value_len(value_len)?;
    let mut f = Some(f);
    let mut path: Vec<Step> = Vec::new();
    let mut id = root;
    let mut bounds = Bounds::ALL;
    loop {
        if path.len() >= MAX_DEPTH {
            return Err(corrupt(
                id,
                format!("tree deeper than {MAX_DEPTH} levels (a cycle?)"),
            ));
        }
        let is_root = path.is_empty();
        let node = read(src, id, |p| -> Result<Node<Option<R>>> {
            match PageType::from_u8(p.first().copied().unwrap_or(0)) {
                Some(PageType::Branch) => {
                    let n = validate_branch(id, p, bounds)?;
                    let idx = branch_route(p, n, key);
                    Ok(Node::Branch {
                        idx,
                        count: n,
                        child: branch_child(p, idx),
                        bounds: child_bounds(p, n, bounds, idx),
                    })
                }
                _ => {
                    let n = validate_leaf(id, p, value_len, bounds)?;
                    if n == 0 && !is_root {
                        return Err(corrupt(id, "empty leaf that is not the root"));
                    }
                    let leaf = LeafAt {
                        id,
                        count: n,
                        next: leaf_next(p),
                        prev: leaf_prev(p),
                        pos: leaf_search(p, value_len, n, key),
                    };
                    let r = f.take().map(|f| f(p, &leaf));
                    Ok(Node::Leaf(leaf, r))
                }
            }
        })??;
        match node {
            Node::Branch {
                idx,
                count,
                child,
                bounds: b,
            } => {
                path.push(Step {
                    page: id,
                    idx,
                    count,
                });
                id = child;
                bounds = b;
            }
            Node::Leaf(leaf, Some(r)) => return Ok((path, leaf, r)),
            Node::Leaf(_, None) => return Err(corrupt(id, "leaf visited twice in one descent")),
        }
    }
}

/// Checks that `id` is a leaf whose `prev` (or `next`) link points at `expect`, before a
/// change to its links.
fn check_link(
    tx: &mut WriteTxn<'_>,
    id: PageId,
    prev_is: Option<PageId>,
    next_is: Option<PageId>,
) -> Result<()> {
    read(tx, id, |p| {
        if p.len() < LEAF_ENTRIES_AT || p[0] != PageType::Leaf as u8 {
            return Err(corrupt(id, "leaf link points at a page that is not a leaf"));
        }
        if prev_is.is_some_and(|e| leaf_prev(p) != e) || next_is.is_some_and(|e| leaf_next(p) != e)
        {
            return Err(corrupt(id, "leaf links disagree with their neighbour"));
        }
        Ok(())
    })?
}

// ---- public API -------------------------------------------------------------------------

/// Creates an empty tree: one empty leaf, which is the root. Returns the root.
pub fn create(tx: &mut WriteTxn<'_>, value_len: usize) -> Result<PageId> {
    check_value_len(value_len)?;
    // A new page is a header and zeros: count 0, no next, no prev.
    tx.allocate(PageType::Leaf)
}

/// Inserts `key` with `value` (exactly `value_len` bytes); returns the root, which is new
/// when the root split. `Error::InvalidArgument` if the key is already present.
///
/// An append (a key above every key, landing in the full rightmost leaf) splits 100/0: the
/// new leaf holds only the new key, so leaves filled by appends stay full.
pub fn insert(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    key: u64,
    value: &[u8],
) -> Result<PageId> {
    check_value(value_len, value)?;
    let (path, leaf, ()) = descend(tx, root, value_len, key, |_, _| ())?;
    let pos = match leaf.pos {
        Ok(_) => {
            return Err(Error::invalid_argument(format!(
                "key {key} is already in the tree"
            )))
        }
        Err(pos) => pos,
    };
    let cap = leaf_capacity(tx.page_size(), value_len);
    if leaf.count < cap {
        let p = tx.page_mut(leaf.id)?;
        leaf_insert_at(p, value_len, leaf.count, pos, key, value);
        return Ok(root);
    }
    let right_edge = leaf.next == 0 && pos == leaf.count;
    let new_id = tx.allocate(PageType::Leaf)?;
    let sep = if right_edge {
        let np = tx.page_mut(new_id)?;
        leaf_insert_at(np, value_len, 0, 0, key, value);
        set_leaf_prev(np, leaf.id);
        set_leaf_next(tx.page_mut(leaf.id)?, new_id);
        key
    } else {
        if leaf.next != 0 {
            check_link(tx, leaf.next, Some(leaf.id), None)?;
        }
        let el = 8 + value_len;
        // All entries plus the new one, in order.
        let mut all = Vec::with_capacity((cap + 1) * el);
        read(tx, leaf.id, |p| {
            all.extend_from_slice(&p[LEAF_ENTRIES_AT..entry_at(value_len, pos)]);
            all.extend_from_slice(&key.to_le_bytes());
            all.extend_from_slice(value);
            all.extend_from_slice(&p[entry_at(value_len, pos)..entry_at(value_len, leaf.count)]);
        })?;
        let total = cap + 1;
        let left_n = total / 2;
        let (left, right) = all.split_at(left_n * el);
        let sep = LE::read_u64(&right[..8]);
        let np = tx.page_mut(new_id)?;
        np[LEAF_ENTRIES_AT..LEAF_ENTRIES_AT + right.len()].copy_from_slice(right);
        set_count(np, total - left_n);
        set_leaf_prev(np, leaf.id);
        set_leaf_next(np, leaf.next);
        let lp = tx.page_mut(leaf.id)?;
        lp[LEAF_ENTRIES_AT..LEAF_ENTRIES_AT + left.len()].copy_from_slice(left);
        set_count(lp, left_n);
        set_leaf_next(lp, new_id);
        if leaf.next != 0 {
            set_leaf_prev(tx.page_mut(leaf.next)?, new_id);
        }
        sep
    };
    insert_into_parents(tx, root, path, sep, new_id, right_edge)
}

/// Adds `(sep, child)` after the path's last child, splitting full branches up the path.
fn insert_into_parents(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    mut path: Vec<Step>,
    mut sep: u64,
    mut child: PageId,
    right_edge: bool,
) -> Result<PageId> {
    let cap = branch_capacity(tx.page_size());
    while let Some(step) = path.pop() {
        if step.count < cap {
            branch_insert(tx.page_mut(step.page)?, step.count, step.idx, sep, child);
            return Ok(root);
        }
        let (child0, mut pairs) = read(tx, step.page, |p| {
            let pairs: Vec<(u64, PageId)> = (1..=step.count)
                .map(|i| (branch_sep(p, i), branch_child(p, i)))
                .collect();
            (branch_child(p, 0), pairs)
        })?;
        pairs.insert(step.idx, (sep, child));
        // `pairs` has cap + 1 >= 4 entries; the left keeps `m`, pair `m` moves up (its child
        // becomes the right's child 0), the right keeps the rest: both keep >= 1 separator.
        let m = if right_edge && step.idx == step.count {
            // 100/0 as far as a branch can: the right gets only the new pair.
            pairs.len() - 2
        } else {
            pairs.len() / 2
        };
        let (up, right_child0) = pairs[m];
        let new_id = tx.allocate(PageType::Branch)?;
        write_branch(tx.page_mut(new_id)?, right_child0, &pairs[m + 1..]);
        write_branch(tx.page_mut(step.page)?, child0, &pairs[..m]);
        sep = up;
        child = new_id;
    }
    let new_root = tx.allocate(PageType::Branch)?;
    write_branch(tx.page_mut(new_root)?, root, &[(sep, child)]);
    Ok(new_root)
}

/// The value stored under `key`, if any.
pub fn get(
    src: &mut impl PageSource,
    root: PageId,
    value_len: usize,
    key: u64,
) -> Result<Option<Vec<u8>>> {
    let (_, _, v) = descend(src, root, value_len, key, |p, leaf| {
        leaf.pos.ok().map(|i| leaf_value(p, value_len, i).to_vec())
    })?;
    Ok(v)
}

/// Replaces the value of `key`; returns false (changing nothing) if the key is absent.
pub fn update(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    key: u64,
    value: &[u8],
) -> Result<bool> {
    check_value(value_len, value)?;
    let (_, leaf, ()) = descend(tx, root, value_len, key, |_, _| ())?;
    let Ok(i) = leaf.pos else {
        return Ok(false);
    };
    let o = entry_at(value_len, i) + 8;
    tx.page_mut(leaf.id)?[o..o + value_len].copy_from_slice(value);
    Ok(true)
}

/// Removes `key`; returns the root (new when the tree lost a level) and the removed value
/// (`None`, changing nothing, if the key is absent).
///
/// A leaf left empty is unlinked and freed, unless it is the root; a branch left with one
/// child is freed and replaced by that child. Leaves are not merged otherwise.
pub fn remove(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    key: u64,
) -> Result<(PageId, Option<Vec<u8>>)> {
    let (mut path, leaf, value) = descend(tx, root, value_len, key, |p, leaf| {
        leaf.pos.ok().map(|i| leaf_value(p, value_len, i).to_vec())
    })?;
    let Ok(pos) = leaf.pos else {
        return Ok((root, None));
    };
    if leaf.count > 1 || path.is_empty() {
        leaf_remove_at(tx.page_mut(leaf.id)?, value_len, leaf.count, pos);
        return Ok((root, value));
    }
    // The leaf empties: unlink it from its neighbours and its parent, and free it.
    if leaf.prev != 0 {
        check_link(tx, leaf.prev, None, Some(leaf.id))?;
    }
    if leaf.next != 0 {
        check_link(tx, leaf.next, Some(leaf.id), None)?;
    }
    if leaf.prev != 0 {
        set_leaf_next(tx.page_mut(leaf.prev)?, leaf.next);
    }
    if leaf.next != 0 {
        set_leaf_prev(tx.page_mut(leaf.next)?, leaf.prev);
    }
    tx.free(leaf.id)?;
    let Some(parent) = path.pop() else {
        return Ok((root, value));
    };
    if parent.count >= 2 {
        branch_remove_child(tx.page_mut(parent.page)?, parent.count, parent.idx);
        return Ok((root, value));
    }
    // The parent keeps one child: it collapses into it.
    let only = read(tx, parent.page, |p| branch_child(p, 1 - parent.idx))?;
    tx.free(parent.page)?;
    match path.last() {
        None => Ok((only, value)),
        Some(gp) => {
            set_branch_child(tx.page_mut(gp.page)?, gp.idx, only);
            Ok((root, value))
        }
    }
}

/// Calls `visit` with up to `limit` entries whose key is `>= from`, in ascending key order.
///
/// Follows the leaf chain; each leaf reached must be non-empty, linked back to its
/// predecessor and hold keys above every key seen, so a cyclic chain is reported as
/// corruption instead of looping.
pub fn range(
    src: &mut impl PageSource,
    root: PageId,
    value_len: usize,
    from: u64,
    limit: usize,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<()> {
    if limit == 0 {
        check_value_len(value_len)?;
        return Ok(());
    }
    let mut emitted = 0usize;
    let (_, leaf, mut last_key) = descend(src, root, value_len, from, |p, leaf| {
        let start = leaf.pos.unwrap_or_else(|e| e);
        for i in start..leaf.count {
            if emitted == limit {
                break;
            }
            visit(leaf_key(p, value_len, i), leaf_value(p, value_len, i));
            emitted += 1;
        }
        leaf.count.checked_sub(1).map(|i| leaf_key(p, value_len, i))
    })?;
    let (mut prev, mut id) = (leaf.id, leaf.next);
    while emitted < limit && id != 0 {
        let next = read(src, id, |p| -> Result<PageId> {
            let n = validate_leaf(id, p, value_len, Bounds::ALL)?;
            if n == 0 {
                return Err(corrupt(id, "empty leaf in the leaf chain"));
            }
            if leaf_prev(p) != prev {
                return Err(corrupt(id, format!("leaf's prev link is not page {prev}")));
            }
            if last_key.is_some_and(|q| leaf_key(p, value_len, 0) <= q) {
                return Err(corrupt(id, "leaf chain keys do not increase (a cycle?)"));
            }
            last_key = Some(leaf_key(p, value_len, n - 1));
            for i in 0..n {
                if emitted == limit {
                    break;
                }
                visit(leaf_key(p, value_len, i), leaf_value(p, value_len, i));
                emitted += 1;
            }
            Ok(leaf_next(p))
        })??;
        prev = id;
        id = next;
    }
    Ok(())
}

/// The entry with the lowest key, if any.
pub fn first(
    src: &mut impl PageSource,
    root: PageId,
    value_len: usize,
) -> Result<Option<(u64, Vec<u8>)>> {
    let (_, _, e) = descend(src, root, value_len, 0, |p, leaf| {
        (leaf.count > 0).then(|| {
            (
                leaf_key(p, value_len, 0),
                leaf_value(p, value_len, 0).to_vec(),
            )
        })
    })?;
    Ok(e)
}

/// The entry with the highest key, if any.
pub fn last(
    src: &mut impl PageSource,
    root: PageId,
    value_len: usize,
) -> Result<Option<(u64, Vec<u8>)>> {
    let (_, _, e) = descend(src, root, value_len, u64::MAX, |p, leaf| {
        leaf.count.checked_sub(1).map(|i| {
            (
                leaf_key(p, value_len, i),
                leaf_value(p, value_len, i).to_vec(),
            )
        })
    })?;
    Ok(e)
}

/// Frees every page of the tree, calling `visit` once per entry in ascending key order (so
/// the caller can free what the values point to).
///
/// On an error (a corrupt tree) some entries may have been visited and some pages freed in
/// the transaction: drop the transaction to roll back.
pub fn destroy(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    mut visit: impl FnMut(u64, &[u8]),
) -> Result<()> {
    check_value_len(value_len)?;
    destroy_node(tx, root, value_len, Bounds::ALL, 1, &mut visit)
}

fn destroy_node(
    tx: &mut WriteTxn<'_>,
    id: PageId,
    value_len: usize,
    b: Bounds,
    depth: usize,
    visit: &mut impl FnMut(u64, &[u8]),
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(corrupt(
            id,
            format!("tree deeper than {MAX_DEPTH} levels (a cycle?)"),
        ));
    }
    let children = read(tx, id, |p| -> Result<Vec<(PageId, Bounds)>> {
        if p.first() == Some(&(PageType::Branch as u8)) {
            let n = validate_branch(id, p, b)?;
            Ok((0..=n)
                .map(|i| (branch_child(p, i), child_bounds(p, n, b, i)))
                .collect())
        } else {
            let n = validate_leaf(id, p, value_len, b)?;
            for i in 0..n {
                visit(leaf_key(p, value_len, i), leaf_value(p, value_len, i));
            }
            Ok(Vec::new())
        }
    })??;
    for (c, cb) in children {
        destroy_node(tx, c, value_len, cb, depth + 1, visit)?;
    }
    tx.free(id)
}

/// Walks the whole tree and verifies every invariant of the module: page types, counts,
/// key order and ranges, the leaf chain's links, no page reached twice, depth. Any
/// violation is `Error::Corruption`.
pub fn check(src: &mut impl PageSource, root: PageId, value_len: usize) -> Result<TreeStats> {
    check_value_len(value_len)?;
    let mut w = Walk {
        root,
        stats: TreeStats::default(),
        seen: HashSet::new(),
        prev_leaf: 0,
        prev_next: 0,
        last_key: None,
    };
    walk(src, root, value_len, Bounds::ALL, 1, &mut w)?;
    if w.prev_next != 0 {
        return Err(corrupt(
            w.prev_leaf,
            format!("last leaf links to page {} as its next", w.prev_next),
        ));
    }
    Ok(w.stats)
}

struct Walk {
    root: PageId,
    stats: TreeStats,
    seen: HashSet<PageId>,
    /// The previous leaf in key order (0 = none yet) and its `next` link.
    prev_leaf: PageId,
    prev_next: PageId,
    last_key: Option<u64>,
}

fn walk<S: PageSource>(
    src: &mut S,
    id: PageId,
    value_len: usize,
    b: Bounds,
    depth: usize,
    w: &mut Walk,
) -> Result<()> {
    if depth > MAX_DEPTH {
        return Err(corrupt(id, format!("tree deeper than {MAX_DEPTH} levels")));
    }
    if !w.seen.insert(id) {
        return Err(corrupt(id, "page reached twice in the tree"));
    }
    w.stats.pages.push(id);
    // depth <= MAX_DEPTH = 64 fits in u32.
    w.stats.depth = w.stats.depth.max(depth as u32);
    let children = read(src, id, |p| -> Result<Vec<(PageId, Bounds)>> {
        if p.first() == Some(&(PageType::Branch as u8)) {
            let n = validate_branch(id, p, b)?;
            w.stats.branches += 1;
            return Ok((0..=n)
                .map(|i| (branch_child(p, i), child_bounds(p, n, b, i)))
                .collect());
        }
        let n = validate_leaf(id, p, value_len, b)?;
        if n == 0 && id != w.root {
            return Err(corrupt(id, "empty leaf that is not the root"));
        }
        if w.prev_next != id && w.prev_leaf != 0 {
            return Err(corrupt(
                w.prev_leaf,
                format!(
                    "next link is page {}, the next leaf in key order is {id}",
                    w.prev_next
                ),
            ));
        }
        if leaf_prev(p) != w.prev_leaf {
            return Err(corrupt(
                id,
                format!(
                    "prev link is page {}, the previous leaf is {}",
                    leaf_prev(p),
                    w.prev_leaf
                ),
            ));
        }
        if n > 0 {
            if w.last_key.is_some_and(|q| leaf_key(p, value_len, 0) <= q) {
                return Err(corrupt(id, "keys do not increase from the previous leaf"));
            }
            w.last_key = Some(leaf_key(p, value_len, n - 1));
        }
        w.prev_leaf = id;
        w.prev_next = leaf_next(p);
        w.stats.leaves += 1;
        w.stats.entries += n as u64;
        Ok(Vec::new())
    })??;
    for (c, cb) in children {
        walk(src, c, value_len, cb, depth + 1, w)?;
    }
    Ok(())
}
