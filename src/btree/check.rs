//! `check`: the full walk of a tree, verifying every invariant of the parent module.
//!
//! Owns: nothing persistent; memory is one entry per page of the tree (the page list the
//! caller asked for and the set that detects a page reached twice).

use std::collections::HashSet;

use super::node::*;
use super::{TreeStats, MAX_DEPTH};
use crate::error::Result;
use crate::kernel::PageSource;
use crate::page::{PageId, PageType};

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
