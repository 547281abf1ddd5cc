//! Message payload storage: small payloads packed into slotted data pages, large ones in
//! overflow chains.
//!
//! Owns: the byte layout of `PageType::Data` and `PageType::Overflow` pages, and the
//! [`PayloadLoc`] that the message index stores for each payload. It does not own the open
//! data page id of a queue: the caller (the queue catalog) persists it and passes it in.
//!
//! Layouts (little-endian; see `docs/design.md`, "Message payloads"):
//!
//! ```text
//! data page:     0 header(16) | 16 slot count u16 | 18 live count u16 | 20 heap bytes u16
//!                | 22 reserved u16 (0) | 24 slot directory: (offset u16, length u16) per slot,
//!                growing up | free space | payload bytes, growing down from the page end
//! overflow page: 0 header(16) | 16 next u64 (0 = last) | 24 bytes used u32 | 28 data
//! ```
//!
//! Invariants:
//! - A payload of `len` bytes is *small* when `1 <= len <= page_size - 28` (it fits in an
//!   empty data page together with its slot); it then occupies one slot of one data page.
//!   A larger payload occupies a chain of `ceil(len / (page_size - 28))` overflow pages,
//!   every page but the last full. A zero-length payload occupies nothing.
//! - Slots are appended, never reused or moved within a page: slot `i`'s bytes end exactly
//!   where slot `i - 1`'s begin (the page end for slot 0), so offsets strictly decrease and
//!   the heap is contiguous. Deleting marks the slot's length `0xFFFF` (its offset stays)
//!   and decrements the live count; a page whose live count reaches 0 is freed at once, and
//!   if it was the queue's open page the open page becomes 0. No data page with a live
//!   count of 0 exists outside the transaction that stores into it.
//! - Deleted bytes in a page that still holds a live payload are not compacted: brokers
//!   consume mostly in append order, so pages drain completely and are freed whole.
//! - Every value read from a page is checked before it is used as an offset, a length or a
//!   page number; a failed check is `Error::Corruption` naming `page.db` and the page.
//!   Nothing here allocates from a length read from a page: `load` allocates the `len` its
//!   caller read from the index, and every stored length is checked against it first.

mod chain;
mod data;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType, PAGE_DB};

pub use chain::OVERFLOW_DATA;
pub use data::{check_page, DataPageStats, DATA_DIR, SLOT_LEN};

/// The slot number of a [`PayloadLoc`] that names an overflow chain.
pub const OVERFLOW_SLOT: u16 = u16::MAX;
/// Bytes of an encoded [`PayloadLoc`].
pub const ENCODED_LEN: usize = 10;

/// The largest page size (offsets and lengths in a data page are u16).
const MAX_PAGE: usize = 65536;

/// Where a payload is stored, as kept in the message index entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PayloadLoc {
    /// The data page holding the payload, or the first page of its overflow chain
    /// (0 for a zero-length payload).
    pub page: PageId,
    /// The slot in the data page, or [`OVERFLOW_SLOT`] for an overflow chain.
    pub slot: u16,
}

impl PayloadLoc {
    /// The location of a zero-length payload, which occupies no page.
    pub const EMPTY: PayloadLoc = PayloadLoc { page: 0, slot: 0 };

    /// True if the payload is an overflow chain starting at `page`.
    pub fn is_overflow(&self) -> bool {
        self.slot == OVERFLOW_SLOT
    }

    /// Encodes the location for the index entry: page u64 LE, then slot u16 LE.
    pub fn encode(&self) -> [u8; ENCODED_LEN] {
        let mut b = [0u8; ENCODED_LEN];
        LE::write_u64(&mut b[..8], self.page);
        LE::write_u16(&mut b[8..], self.slot);
        b
    }

    /// Decodes what [`PayloadLoc::encode`] produced; `None` unless `bytes` is exactly
    /// [`ENCODED_LEN`] long. Any decoded value is safe to pass to [`load`], which validates
    /// it against the pages.
    pub fn decode(bytes: &[u8]) -> Option<PayloadLoc> {
        if bytes.len() != ENCODED_LEN {
            return None;
        }
        Some(PayloadLoc {
            page: LE::read_u64(&bytes[..8]),
            slot: LE::read_u16(&bytes[8..]),
        })
    }
}

/// The largest payload stored in a data page for pages of `page_size` bytes.
pub fn max_small_payload(page_size: usize) -> usize {
    page_size.saturating_sub(DATA_DIR + SLOT_LEN)
}

/// Payload bytes one overflow page holds for pages of `page_size` bytes.
pub fn overflow_capacity(page_size: usize) -> usize {
    page_size.saturating_sub(OVERFLOW_DATA)
}

fn corrupt(id: PageId, detail: impl Into<String>) -> Error {
    Error::corruption(PAGE_DB, format!("page {id}"), detail)
}

/// Checks the type byte of page `id`.
fn check_type(id: PageId, page: &[u8], want: PageType) -> Result<()> {
    let b = page.first().copied().unwrap_or(0);
    match PageType::from_u8(b) {
        Some(t) if t == want => Ok(()),
        Some(t) => Err(corrupt(id, format!("page type {t:?}, expected {want:?}"))),
        None => Err(corrupt(
            id,
            format!("unknown page type {b}, expected {want:?}"),
        )),
    }
}

fn check_len(id: PageId, page: &[u8]) -> Result<()> {
    if page.len() < OVERFLOW_DATA + 1 || page.len() > MAX_PAGE {
        return Err(corrupt(id, format!("invalid page length {}", page.len())));
    }
    Ok(())
}

/// Stores `payload` and returns its location.
///
/// Small payloads go into `*open_page` if they fit, else into a freshly allocated data page
/// that becomes the open page. Large ones get a new overflow chain. A zero-length payload
/// stores nothing and returns [`PayloadLoc::EMPTY`].
///
/// `*open_page` is the queue's open data page (0 = none yet); it changes with the
/// transaction, so the caller persists it in the same transaction and, after a rollback,
/// goes back to the value of the last commit. Each queue has its own open page, and a
/// payload is deleted with the open page of the queue that stored it.
pub fn store(tx: &mut WriteTxn<'_>, open_page: &mut PageId, payload: &[u8]) -> Result<PayloadLoc> {
    let page_size = tx.page_size();
    if payload.is_empty() {
        return Ok(PayloadLoc::EMPTY);
    }
    if u32::try_from(payload.len()).is_err() {
        return Err(Error::invalid_argument(format!(
            "payload of {} bytes exceeds the 4 GiB limit",
            payload.len()
        )));
    }
    if payload.len() <= max_small_payload(page_size) {
        data::store_small(tx, open_page, payload)
    } else {
        chain::store_chain(tx, payload)
    }
}

/// Checks that `loc` is the location of a zero-length payload.
fn check_empty(loc: PayloadLoc) -> Result<()> {
    if loc.slot != 0 {
        return Err(corrupt(
            0,
            format!("payload location names page 0 with slot {}", loc.slot),
        ));
    }
    Ok(())
}

/// Reads the payload at `loc`. `len` is its length from the index entry; what is stored must
/// match it exactly, else `Error::Corruption` naming the page.
///
/// Copies each page's bytes once, straight from the page into the result.
pub fn load(src: &mut impl PageSource, loc: PayloadLoc, len: u32) -> Result<Vec<u8>> {
    let len = len as usize;
    if loc.page == 0 {
        check_empty(loc)?;
        if len != 0 {
            return Err(corrupt(
                0,
                format!("a payload of {len} bytes has no page (stored as empty)"),
            ));
        }
        return Ok(Vec::new());
    }
    if len == 0 {
        return Err(corrupt(
            loc.page,
            "a zero-length payload is located in a page",
        ));
    }
    if loc.is_overflow() {
        chain::load_chain(src, loc.page, len)
    } else {
        data::load_slot(src, loc, len)
    }
}

/// The pages the payload at `loc` occupies: none for a zero-length payload, its data page,
/// or every page of its overflow chain in order. Validates what it reads like [`load`].
pub fn pages_of(src: &mut impl PageSource, loc: PayloadLoc) -> Result<Vec<PageId>> {
    if loc.page == 0 {
        check_empty(loc)?;
        return Ok(Vec::new());
    }
    if loc.is_overflow() {
        return chain::chain_pages(src, loc.page);
    }
    data::check_slot(src, loc)?;
    Ok(vec![loc.page])
}

/// Deletes the payload at `loc`: marks its slot deleted (freeing the data page when its last
/// payload goes, and resetting `*open_page` to 0 if that was the open page), or frees every
/// page of its overflow chain. Everything is validated before anything is changed.
pub fn delete(tx: &mut WriteTxn<'_>, open_page: &mut PageId, loc: PayloadLoc) -> Result<()> {
    if loc.page == 0 {
        return check_empty(loc);
    }
    if loc.is_overflow() {
        chain::delete_chain(tx, loc.page)
    } else {
        data::delete_slot(tx, open_page, loc)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loc_round_trips_and_rejects_wrong_lengths() {
        for loc in [
            PayloadLoc::EMPTY,
            PayloadLoc { page: 7, slot: 3 },
            PayloadLoc {
                page: u64::MAX,
                slot: OVERFLOW_SLOT,
            },
        ] {
            assert_eq!(PayloadLoc::decode(&loc.encode()), Some(loc));
        }
        assert_eq!(PayloadLoc::decode(&[0; 9]), None);
        assert_eq!(PayloadLoc::decode(&[0; 11]), None);
    }
}
