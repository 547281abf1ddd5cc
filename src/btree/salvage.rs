//! `salvage`: a walk of a damaged tree for repair, yielding every entry it can still read
//! and the key ranges it cannot.
//!
//! Owns: nothing persistent; memory is the set of pages visited (cycle guard) plus one
//! leaf's entries at a time.
//!
//! Invariants: never fails and never loops: a page that cannot be read or validated, a page
//! reached twice and a tree deeper than [`MAX_DEPTH`] each become one lost range (the key
//! bounds its parent gives it) and the walk goes on with the next sibling. Entries come out
//! in increasing key order, each within the bounds of every ancestor.

use std::collections::HashSet;

use super::node::*;
use super::MAX_DEPTH;
use crate::kernel::PageSource;
use crate::page::{PageId, PageType};

/// Keys in `lo..hi` (`hi = None`: no upper bound) that a damaged page made unreadable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostRange {
    /// First key that may be lost.
    pub lo: u64,
    /// One past the last key that may be lost; `None` = unbounded.
    pub hi: Option<u64>,
    /// Why: the error met at that page.
    pub why: String,
}

enum Node {
    Branch(Vec<(PageId, Bounds)>),
    Leaf(Vec<(u64, Vec<u8>)>),
}

/// Walks the tree at `root`, calling `entry(src, key, value)` for every readable entry in
/// key order; returns the ranges of keys under pages it could not read.
pub fn salvage<S: PageSource>(
    src: &mut S,
    root: PageId,
    value_len: usize,
    entry: &mut dyn FnMut(&mut S, u64, &[u8]),
) -> Vec<LostRange> {
    let mut lost = Vec::new();
    if let Err(e) = check_value_len(value_len) {
        lost.push(LostRange {
            lo: 0,
            hi: None,
            why: e.to_string(),
        });
        return lost;
    }
    let mut seen = HashSet::new();
    walk(
        src,
        root,
        value_len,
        Bounds::ALL,
        1,
        &mut seen,
        entry,
        &mut lost,
    );
    lost
}

#[allow(clippy::too_many_arguments)]
fn walk<S: PageSource>(
    src: &mut S,
    id: PageId,
    value_len: usize,
    b: Bounds,
    depth: usize,
    seen: &mut HashSet<PageId>,
    entry: &mut dyn FnMut(&mut S, u64, &[u8]),
    lost: &mut Vec<LostRange>,
) {
    let mut lose = |why: String| {
        lost.push(LostRange {
            lo: b.lo,
            hi: b.hi,
            why,
        })
    };
    if depth > MAX_DEPTH {
        lose(format!("page {id}: tree deeper than {MAX_DEPTH} levels"));
        return;
    }
    if !seen.insert(id) {
        lose(format!("page {id}: reached twice in the tree"));
        return;
    }
    let node = read(src, id, |p| -> crate::error::Result<Node> {
        if p.first() == Some(&(PageType::Branch as u8)) {
            let n = validate_branch(id, p, b)?;
            return Ok(Node::Branch(
                (0..=n)
                    .map(|i| (branch_child(p, i), child_bounds(p, n, b, i)))
                    .collect(),
            ));
        }
        let n = validate_leaf(id, p, value_len, b)?;
        Ok(Node::Leaf(
            (0..n)
                .map(|i| {
                    (
                        leaf_key(p, value_len, i),
                        leaf_value(p, value_len, i).to_vec(),
                    )
                })
                .collect(),
        ))
    });
    match node {
        Ok(Ok(Node::Branch(children))) => {
            for (c, cb) in children {
                walk(src, c, value_len, cb, depth + 1, seen, entry, lost);
            }
        }
        Ok(Ok(Node::Leaf(entries))) => {
            for (k, v) in entries {
                entry(src, k, &v);
            }
        }
        Ok(Err(e)) | Err(e) => lose(e.to_string()),
    }
}
