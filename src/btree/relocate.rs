//! `relocate`: moves a tree's pages at or above a page id into lower free pages, for
//! shrink, a bounded slice of the tree per call.
//!
//! Owns: nothing persistent. Reads go through the transaction without copying; only moved
//! pages, their parents and their leaf neighbours are written.
//!
//! Invariants: the tree's content and shape are unchanged; only page ids change. A moved
//! page gets the lowest free page (the allocator's rule), and is moved only if that page is
//! lower than its own; every pointer to it (the parent's child slot, or the root returned
//! to the caller) and the leaf chain's `next`/`prev` links are rewritten in the same
//! transaction, so the commit is atomic like any other. A call starts at the leaf holding
//! key `from` (earlier leaves were handled by earlier calls, whose commits fixed their
//! links) and stops after a budget of leaves, so one transaction stays short.

use super::node::*;
use super::MAX_DEPTH;
use crate::error::Result;
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType};

/// What one [`relocate`] call did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Relocated {
    /// The root's id after the call (it may have moved).
    pub root: PageId,
    /// Pages moved.
    pub moved: u64,
    /// The key to continue from in the next call; `None` when the walk reached the end.
    pub resume: Option<u64>,
}

/// Moves pages of the tree at `root` whose id is `>= limit` to lower free pages, walking
/// leaves from the one holding key `from` on, and stopping after `max_leaves` leaves or
/// `max_moves` moves.
pub fn relocate(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    limit: PageId,
    from: u64,
    max_leaves: u64,
    max_moves: u64,
) -> Result<Relocated> {
    check_value_len(value_len)?;
    let mut w = Walk {
        value_len,
        limit,
        from,
        prev_leaf: None,
        moved: 0,
        leaves: 0,
        max_leaves,
        max_moves,
        stopped: None,
    };
    let root = visit(tx, root, Bounds::ALL, 1, &mut w)?;
    Ok(Relocated {
        root,
        moved: w.moved,
        resume: w.stopped.flatten(),
    })
}

struct Walk {
    value_len: usize,
    limit: PageId,
    from: u64,
    /// The previous leaf in key order, by its final id (`Some(0)`: none); `None` until the
    /// first leaf of this call, which takes it from its own `prev` link.
    prev_leaf: Option<PageId>,
    moved: u64,
    leaves: u64,
    max_leaves: u64,
    max_moves: u64,
    /// Set when the budget ran out: the key to resume from (`None` inside: the end).
    stopped: Option<Option<u64>>,
}

/// Moves page `id` down if it is at or above the limit; returns its final id.
fn move_down(tx: &mut WriteTxn<'_>, id: PageId, t: PageType, w: &mut Walk) -> Result<PageId> {
    if id < w.limit {
        return Ok(id);
    }
    let new = tx.allocate(t)?;
    if new >= id {
        tx.free(new)?;
        return Ok(id);
    }
    let bytes = tx.with_page(id, |p| p.to_vec())?;
    tx.page_mut(new)?.copy_from_slice(&bytes);
    tx.free(id)?;
    w.moved += 1;
    Ok(new)
}

type Children = Vec<(PageId, Bounds)>;

fn visit(
    tx: &mut WriteTxn<'_>,
    id: PageId,
    b: Bounds,
    depth: usize,
    w: &mut Walk,
) -> Result<PageId> {
    if depth > MAX_DEPTH {
        return Err(corrupt(id, format!("tree deeper than {MAX_DEPTH} levels")));
    }
    let value_len = w.value_len;
    let node = read(tx, id, |p| -> Result<(Option<Children>, PageId)> {
        if p.first() == Some(&(PageType::Branch as u8)) {
            let n = validate_branch(id, p, b)?;
            let children = (0..=n)
                .map(|i| (branch_child(p, i), child_bounds(p, n, b, i)))
                .collect();
            return Ok((Some(children), 0));
        }
        validate_leaf(id, p, value_len, b)?;
        Ok((None, leaf_prev(p)))
    })??;
    match node {
        (Some(children), _) => {
            let me = move_down(tx, id, PageType::Branch, w)?;
            for (i, (child, cb)) in children.into_iter().enumerate() {
                if w.stopped.is_some() {
                    break;
                }
                if cb.hi.is_some_and(|h| h <= w.from) {
                    continue;
                }
                let c = visit(tx, child, cb, depth + 1, w)?;
                if c != child {
                    set_branch_child(tx.page_mut(me)?, i, c);
                }
            }
            Ok(me)
        }
        (None, prev) => {
            let me = move_down(tx, id, PageType::Leaf, w)?;
            let prev_final = *w.prev_leaf.get_or_insert(prev);
            if prev != prev_final {
                set_leaf_prev(tx.page_mut(me)?, prev_final);
            }
            if prev_final != 0 && tx.with_page(prev_final, leaf_next)? != me {
                set_leaf_next(tx.page_mut(prev_final)?, me);
            }
            if me != id {
                // The next leaf may lie beyond this call's slice: its `prev` link is fixed
                // now, so every committed state has a consistent chain.
                let next = tx.with_page(me, leaf_next)?;
                if next != 0 {
                    set_leaf_prev(tx.page_mut(next)?, me);
                }
            }
            w.prev_leaf = Some(me);
            w.leaves += 1;
            if w.leaves >= w.max_leaves || w.moved >= w.max_moves {
                w.stopped = Some(b.hi);
            }
            Ok(me)
        }
    }
}
