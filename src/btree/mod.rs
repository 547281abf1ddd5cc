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

mod check;
mod node;
mod relocate;
mod salvage;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType};

pub use check::check;
use node::*;
pub use node::{branch_capacity, leaf_capacity};
pub use relocate::{relocate, Relocated};
pub use salvage::{salvage, LostRange};

/// The largest value length a tree accepts, in bytes.
pub const MAX_VALUE_LEN: usize = 96;
/// The deepest tree any operation follows; deeper means a corrupt (cyclic) tree.
pub const MAX_DEPTH: usize = 64;

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
        // A page this transaction validated before only needs its O(1) header checks:
        // every change since was made by this code (a root-to-leaf walk per insert
        // re-validated the same branches; measured 9% of a bulk load's CPU).
        let trusted = src.is_trusted(id);
        let node = read(src, id, |p| -> Result<Node<Option<R>>> {
            match PageType::from_u8(p.first().copied().unwrap_or(0)) {
                Some(PageType::Branch) => {
                    let n = if trusted {
                        branch_header(id, p)?
                    } else {
                        validate_branch(id, p, bounds)?
                    };
                    let idx = branch_route(p, n, key);
                    Ok(Node::Branch {
                        idx,
                        count: n,
                        child: branch_child(p, idx),
                        bounds: child_bounds(p, n, bounds, idx),
                    })
                }
                _ => {
                    let n = if trusted {
                        leaf_header(id, p, value_len)?
                    } else {
                        validate_leaf(id, p, value_len, bounds)?
                    };
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
        if !trusted {
            src.trust(id);
        }
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
