//! `relocate`: moves a tree's pages at or above a page id into lower free pages, for
//! shrink.
//!
//! Owns: nothing persistent. Reads go through the transaction without copying; only moved
//! pages, their parents and their leaf neighbours are written.
//!
//! Invariants: the tree's content and shape are unchanged; only page ids change. A moved
//! page gets the lowest free page (the allocator's rule), and is moved only if that page is
//! lower than its own; every pointer to it (the parent's child slot, or the root returned
//! to the caller) and the leaf chain's `next`/`prev` links are rewritten in the same
//! transaction, so the commit is atomic like any other.

use super::node::*;
use super::MAX_DEPTH;
use crate::error::Result;
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType};

/// Moves pages of the tree at `root` whose id is `>= limit` to lower free pages, at most
/// `max_moves` of them (so one transaction stays short; call again until it moves none);
/// returns the root's (possibly new) id and the number of pages moved.
pub fn relocate(
    tx: &mut WriteTxn<'_>,
    root: PageId,
    value_len: usize,
    limit: PageId,
    max_moves: u64,
) -> Result<(PageId, u64)> {
    check_value_len(value_len)?;
    let mut w = Walk {
        value_len,
        limit,
        prev_leaf: 0,
        moved: 0,
        max_moves,
    };
    let root = visit(tx, root, 1, &mut w)?;
    Ok((root, w.moved))
}

struct Walk {
    value_len: usize,
    limit: PageId,
    /// The previous leaf in key order, by its final id (0 = none yet).
    prev_leaf: PageId,
    moved: u64,
    max_moves: u64,
}

/// Moves page `id` down if it is at or above the limit; returns its final id.
fn move_down(tx: &mut WriteTxn<'_>, id: PageId, t: PageType, w: &mut Walk) -> Result<PageId> {
    if id < w.limit || w.moved >= w.max_moves {
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

fn visit(tx: &mut WriteTxn<'_>, id: PageId, depth: usize, w: &mut Walk) -> Result<PageId> {
    if depth > MAX_DEPTH {
        return Err(corrupt(id, format!("tree deeper than {MAX_DEPTH} levels")));
    }
    let value_len = w.value_len;
    let node = read(tx, id, |p| -> Result<(bool, Vec<PageId>, PageId)> {
        if p.first() == Some(&(PageType::Branch as u8)) {
            let n = validate_branch(id, p, Bounds::ALL)?;
            return Ok((true, (0..=n).map(|i| branch_child(p, i)).collect(), 0));
        }
        validate_leaf(id, p, value_len, Bounds::ALL)?;
        Ok((false, Vec::new(), leaf_prev(p)))
    })??;
    match node {
        (true, children, _) => {
            let me = move_down(tx, id, PageType::Branch, w)?;
            for (i, child) in children.into_iter().enumerate() {
                let c = visit(tx, child, depth + 1, w)?;
                if c != child {
                    set_branch_child(tx.page_mut(me)?, i, c);
                }
            }
            Ok(me)
        }
        (false, _, prev) => {
            let me = move_down(tx, id, PageType::Leaf, w)?;
            if prev != w.prev_leaf {
                set_leaf_prev(tx.page_mut(me)?, w.prev_leaf);
            }
            if w.prev_leaf != 0 && tx.with_page(w.prev_leaf, leaf_next)? != me {
                set_leaf_next(tx.page_mut(w.prev_leaf)?, me);
            }
            w.prev_leaf = me;
            Ok(me)
        }
    }
}
