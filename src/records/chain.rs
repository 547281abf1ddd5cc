//! Overflow chains: one large payload spread over full pages.
//!
//! Owns the byte layout of `PageType::Overflow` pages (see the parent module for the layout
//! and invariants). A walk never trusts a page: types, fill, lengths and cycles are checked.

use std::collections::HashSet;

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{
    check_len, check_type, corrupt, max_small_payload, overflow_capacity, PayloadLoc, OVERFLOW_SLOT,
};
use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType, PAGE_HEADER_LEN};

const O_NEXT: usize = PAGE_HEADER_LEN;
const O_USED: usize = PAGE_HEADER_LEN + 8;
/// Offset of the data in an overflow page.
pub const OVERFLOW_DATA: usize = PAGE_HEADER_LEN + 12;

/// Writes `payload` (larger than a data page holds) into a new chain of full overflow pages.
pub(super) fn store_chain(tx: &mut WriteTxn<'_>, payload: &[u8]) -> Result<PayloadLoc> {
    let cap = overflow_capacity(tx.page_size());
    let n = payload.len().div_ceil(cap);
    let mut ids = Vec::with_capacity(n);
    for _ in 0..n {
        match tx.allocate(PageType::Overflow) {
            Ok(id) => ids.push(id),
            Err(e) => {
                // Give back what this call took; the transaction stays usable.
                for id in ids {
                    let _ = tx.free(id);
                }
                return Err(e);
            }
        }
    }
    let nexts = ids.iter().skip(1).copied().chain(std::iter::once(0));
    for ((&id, next), chunk) in ids.iter().zip(nexts).zip(payload.chunks(cap)) {
        let page = tx.page_mut(id)?;
        LE::write_u64(&mut page[O_NEXT..O_NEXT + 8], next);
        // chunk.len() <= cap < 65536.
        LE::write_u32(&mut page[O_USED..O_USED + 4], chunk.len() as u32);
        page[OVERFLOW_DATA..OVERFLOW_DATA + chunk.len()].copy_from_slice(chunk);
    }
    let first = ids
        .first()
        .copied()
        .ok_or_else(|| Error::invalid_argument("empty overflow chain"))?;
    Ok(PayloadLoc {
        page: first,
        slot: OVERFLOW_SLOT,
    })
}

/// Decodes and bounds-checks overflow page `id`: returns (next, bytes used).
fn overflow_header(id: PageId, page: &[u8]) -> Result<(PageId, usize)> {
    check_len(id, page)?;
    check_type(id, page, PageType::Overflow)?;
    let next = LE::read_u64(&page[O_NEXT..O_NEXT + 8]);
    let used = LE::read_u32(&page[O_USED..O_USED + 4]);
    let cap = overflow_capacity(page.len());
    if used == 0 || used as usize > cap {
        return Err(corrupt(
            id,
            format!("overflow page claims {used} bytes, holds 1..={cap}"),
        ));
    }
    if next != 0 && used as usize != cap {
        return Err(corrupt(
            id,
            format!("overflow page with a successor holds {used} bytes, not the full {cap}"),
        ));
    }
    Ok((next, used as usize))
}

/// Reads the chain starting at `first`, which must hold exactly `len` bytes: every page is
/// checked against what remains of `len` before its bytes are copied (once, into a buffer
/// of exactly `len`), and a page seen twice is a cycle.
pub(super) fn load_chain(src: &mut impl PageSource, first: PageId, len: usize) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(len);
    let mut seen = HashSet::new();
    let mut id = first;
    let mut from = 0;
    loop {
        if !seen.insert(id) {
            return Err(corrupt(
                id,
                format!("overflow chain starting at page {first} returns to page {id} (a cycle)"),
            ));
        }
        let next = follow(src, first, from, id, |page| {
            let (next, used) = overflow_header(id, page)?;
            let remaining = len - out.len();
            if out.is_empty() && len <= max_small_payload(page.len()) {
                return Err(corrupt(
                    id,
                    format!("a payload of {len} bytes is never stored in an overflow chain"),
                ));
            }
            if used > remaining {
                return Err(corrupt(
                    id,
                    format!("overflow page holds {used} bytes, only {remaining} of {len} remain"),
                ));
            }
            if used == remaining && next != 0 {
                return Err(corrupt(
                    id,
                    format!(
                        "overflow chain continues to page {next} beyond the {len} bytes of the \
                         payload"
                    ),
                ));
            }
            if used < remaining && next == 0 {
                return Err(corrupt(
                    id,
                    format!(
                        "overflow chain ends {} bytes short of the payload's {len}",
                        remaining - used
                    ),
                ));
            }
            out.extend_from_slice(&page[OVERFLOW_DATA..OVERFLOW_DATA + used]);
            Ok(next)
        })?;
        if next == 0 {
            return Ok(out);
        }
        from = id;
        id = next;
    }
}

/// Runs `f` on chain page `id`, reached from page `from` (0 for the first page). When
/// reading a later page fails with corruption (a next pointer beyond the file, or to a
/// never-written page), the error also names the page whose next pointer led there.
fn follow<R>(
    src: &mut impl PageSource,
    first: PageId,
    from: PageId,
    id: PageId,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    match src.with_page(id, f) {
        Ok(r) => r,
        Err(Error::Corruption {
            file,
            location,
            detail,
        }) if from != 0 => Err(Error::Corruption {
            file,
            location,
            detail: format!(
                "{detail} (the next page of page {from} in the overflow chain starting at page \
                 {first})"
            ),
        }),
        Err(e) => Err(e),
    }
}

/// The pages of the chain starting at `first`, validated (types, fill, no cycle).
pub(super) fn chain_pages(src: &mut impl PageSource, first: PageId) -> Result<Vec<PageId>> {
    let mut ids = Vec::new();
    let mut seen = HashSet::new();
    let mut id = first;
    let mut from = 0;
    loop {
        if !seen.insert(id) {
            return Err(corrupt(
                id,
                format!("overflow chain starting at page {first} returns to page {id} (a cycle)"),
            ));
        }
        let (next, _) = follow(src, first, from, id, |page| overflow_header(id, page))?;
        ids.push(id);
        if next == 0 {
            return Ok(ids);
        }
        from = id;
        id = next;
    }
}

/// Frees every page of the chain starting at `first`, after validating the whole chain.
pub(super) fn delete_chain(tx: &mut WriteTxn<'_>, first: PageId) -> Result<()> {
    for id in chain_pages(tx, first)? {
        tx.free(id)?;
    }
    Ok(())
}
