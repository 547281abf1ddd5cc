//! Slotted data pages: many small payloads per page.
//!
//! Owns the byte layout of `PageType::Data` pages (see the parent module for the layout and
//! invariants). Every field is checked before it is used as an offset or a length.

use byteorder::{ByteOrder, LittleEndian as LE};

use super::{check_len, check_type, corrupt, PayloadLoc, OVERFLOW_SLOT};
use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType, PAGE_HEADER_LEN};

/// Slot length marking a deleted slot.
const DELETED: u16 = u16::MAX;
const D_SLOTS: usize = PAGE_HEADER_LEN;
const D_LIVE: usize = PAGE_HEADER_LEN + 2;
const D_HEAP: usize = PAGE_HEADER_LEN + 4;
const D_RESERVED: usize = PAGE_HEADER_LEN + 6;
/// Offset of the slot directory in a data page.
pub const DATA_DIR: usize = PAGE_HEADER_LEN + 8;
/// Bytes of one slot directory entry.
pub const SLOT_LEN: usize = 4;

/// What [`check_page`] found in a valid data page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DataPageStats {
    /// Slots ever used in the page (live and deleted).
    pub slots: u16,
    /// Slots holding a payload.
    pub live: u16,
    /// Bytes of the live payloads.
    pub live_bytes: u32,
    /// Bytes of deleted payloads still occupying the heap (not compacted).
    pub dead_bytes: u32,
    /// Bytes between the slot directory and the heap, available to new payloads.
    pub free_bytes: u32,
}

/// The validated fixed fields of a data page.
#[derive(Debug, Clone, Copy)]
struct DataHeader {
    slots: u16,
    live: u16,
    /// First byte of the heap (the page length when the heap is empty).
    free_end: usize,
}

impl DataHeader {
    /// End of the slot directory.
    fn dir_end(&self) -> usize {
        DATA_DIR + usize::from(self.slots) * SLOT_LEN
    }
}

/// Decodes and bounds-checks the fixed fields of data page `id`.
fn data_header(id: PageId, page: &[u8]) -> Result<DataHeader> {
    check_len(id, page)?;
    check_type(id, page, PageType::Data)?;
    let slots = LE::read_u16(&page[D_SLOTS..D_SLOTS + 2]);
    let live = LE::read_u16(&page[D_LIVE..D_LIVE + 2]);
    let heap = usize::from(LE::read_u16(&page[D_HEAP..D_HEAP + 2]));
    let reserved = LE::read_u16(&page[D_RESERVED..D_RESERVED + 2]);
    if reserved != 0 {
        return Err(corrupt(id, format!("reserved field is {reserved}, not 0")));
    }
    if live > slots {
        return Err(corrupt(
            id,
            format!("live count {live} exceeds slot count {slots}"),
        ));
    }
    let h = DataHeader {
        slots,
        live,
        free_end: page.len().saturating_sub(heap),
    };
    if heap > page.len() || h.dir_end() > h.free_end {
        return Err(corrupt(
            id,
            format!(
                "slot directory of {slots} slots and heap of {heap} bytes overlap in a page of {}",
                page.len()
            ),
        ));
    }
    Ok(h)
}

/// The raw directory entry of slot `i` (`i < h.slots`, so within the checked directory).
fn slot_entry(page: &[u8], i: u16) -> (usize, u16) {
    let at = DATA_DIR + usize::from(i) * SLOT_LEN;
    (
        usize::from(LE::read_u16(&page[at..at + 2])),
        LE::read_u16(&page[at + 2..at + 4]),
    )
}

/// The byte range of the live payload in `slot`, checked against the header and the
/// neighbouring slot (the heap is contiguous: the payload ends where the previous slot's
/// begins).
fn live_slot(id: PageId, page: &[u8], h: &DataHeader, slot: u16) -> Result<(usize, usize)> {
    if slot >= h.slots {
        return Err(corrupt(
            id,
            format!("slot {slot} beyond the page's {} slots", h.slots),
        ));
    }
    let (off, len) = slot_entry(page, slot);
    if len == DELETED {
        return Err(corrupt(id, format!("slot {slot} is deleted")));
    }
    let len = usize::from(len);
    let end = match slot.checked_sub(1) {
        Some(prev) => slot_entry(page, prev).0,
        None => page.len(),
    };
    if len == 0 || off < h.free_end || off.checked_add(len) != Some(end) {
        return Err(corrupt(
            id,
            format!(
                "slot {slot} (offset {off}, length {len}) does not end at {end} within the heap \
                 {}..{}",
                h.free_end,
                page.len()
            ),
        ));
    }
    Ok((off, len))
}

/// Validates every field and slot of data page `id` and reports its occupancy.
///
/// Checks the type, the header fields, that slot offsets strictly decrease and live payloads
/// are contiguous with their neighbours, that the lowest offset is the heap start, that the
/// live count matches the live slots and that it is not 0 (an empty page is freed).
pub fn check_page(id: PageId, page: &[u8]) -> Result<DataPageStats> {
    let h = data_header(id, page)?;
    let mut prev = page.len();
    let mut live = 0u16;
    let mut live_bytes = 0usize;
    for i in 0..h.slots {
        let (off, len) = slot_entry(page, i);
        if off >= prev {
            return Err(corrupt(
                id,
                format!("slot {i} offset {off} not below the previous slot's {prev}"),
            ));
        }
        if len != DELETED {
            let len = usize::from(len);
            if len == 0 || off + len != prev {
                return Err(corrupt(
                    id,
                    format!("slot {i} (offset {off}, length {len}) does not end at {prev}"),
                ));
            }
            live += 1;
            live_bytes += len;
        }
        prev = off;
    }
    if prev != h.free_end {
        return Err(corrupt(
            id,
            format!("heap starts at {prev} but the header says {}", h.free_end),
        ));
    }
    if live != h.live {
        return Err(corrupt(
            id,
            format!("live count {} but {live} live slots", h.live),
        ));
    }
    if live == 0 {
        return Err(corrupt(id, "data page without a live payload"));
    }
    let heap = page.len() - h.free_end;
    Ok(DataPageStats {
        slots: h.slots,
        live,
        // All below are bounded by the page length (<= 65536).
        live_bytes: live_bytes as u32,
        dead_bytes: (heap - live_bytes) as u32,
        free_bytes: (h.free_end - h.dir_end()) as u32,
    })
}

fn to_u16(v: usize, what: &str) -> Result<u16> {
    u16::try_from(v).map_err(|_| Error::invalid_argument(format!("{what} {v} exceeds u16")))
}

/// Appends a small payload to the open page if it has room, else to a new data page that
/// becomes the open page.
pub(super) fn store_small(
    tx: &mut WriteTxn<'_>,
    open_page: &mut PageId,
    payload: &[u8],
) -> Result<PayloadLoc> {
    let need = payload.len() + SLOT_LEN;
    if *open_page != 0 {
        let id = *open_page;
        let h = data_header(id, tx.page(id)?)?;
        if h.slots < OVERFLOW_SLOT && h.free_end - h.dir_end() >= need {
            return put(tx, id, h, payload);
        }
    }
    let id = tx.allocate(PageType::Data)?;
    *open_page = id;
    let h = DataHeader {
        slots: 0,
        live: 0,
        free_end: tx.page_size(),
    };
    put(tx, id, h, payload)
}

/// Appends `payload` as a new slot of data page `id` (whose header `h` was checked and has
/// room for it).
fn put(tx: &mut WriteTxn<'_>, id: PageId, h: DataHeader, payload: &[u8]) -> Result<PayloadLoc> {
    let off = h.free_end - payload.len();
    let dir = h.dir_end();
    let page = tx.page_mut(id)?;
    let heap = to_u16(page.len() - off, "heap size")?;
    let off16 = to_u16(off, "payload offset")?;
    let len16 = to_u16(payload.len(), "payload length")?;
    page[off..off + payload.len()].copy_from_slice(payload);
    LE::write_u16(&mut page[dir..dir + 2], off16);
    LE::write_u16(&mut page[dir + 2..dir + 4], len16);
    LE::write_u16(&mut page[D_SLOTS..D_SLOTS + 2], h.slots + 1);
    LE::write_u16(&mut page[D_LIVE..D_LIVE + 2], h.live + 1);
    LE::write_u16(&mut page[D_HEAP..D_HEAP + 2], heap);
    Ok(PayloadLoc {
        page: id,
        slot: h.slots,
    })
}

/// Reads the payload in `loc.slot` of data page `loc.page`, which must be `len` bytes.
pub(super) fn load_slot(src: &mut impl PageSource, loc: PayloadLoc, len: usize) -> Result<Vec<u8>> {
    src.with_page(loc.page, |page| {
        let h = data_header(loc.page, page)?;
        let (off, stored) = live_slot(loc.page, page, &h, loc.slot)?;
        if stored != len {
            return Err(corrupt(
                loc.page,
                format!(
                    "slot {} holds {stored} bytes, the index says {len}",
                    loc.slot
                ),
            ));
        }
        Ok(page[off..off + len].to_vec())
    })?
}

/// Checks that `loc.slot` of data page `loc.page` holds a live payload.
pub(super) fn check_slot(src: &mut impl PageSource, loc: PayloadLoc) -> Result<()> {
    src.with_page(loc.page, |page| {
        let h = data_header(loc.page, page)?;
        live_slot(loc.page, page, &h, loc.slot).map(|_| ())
    })?
}

/// Marks `loc.slot` deleted; frees the page with its last payload (resetting `*open_page`
/// if it was the open page). Validates before changing anything.
pub(super) fn delete_slot(
    tx: &mut WriteTxn<'_>,
    open_page: &mut PageId,
    loc: PayloadLoc,
) -> Result<()> {
    let id = loc.page;
    let h = {
        let page = tx.page(id)?;
        let h = data_header(id, page)?;
        live_slot(id, page, &h, loc.slot)?;
        h
    };
    if h.live <= 1 {
        tx.free(id)?;
        if *open_page == id {
            *open_page = 0;
        }
        return Ok(());
    }
    let page = tx.page_mut(id)?;
    let at = DATA_DIR + usize::from(loc.slot) * SLOT_LEN;
    LE::write_u16(&mut page[at + 2..at + 4], DELETED);
    LE::write_u16(&mut page[D_LIVE..D_LIVE + 2], h.live - 1);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::page::init_header;

    /// A data page built by hand with payloads of `lens` (0 = deleted, using 7 bytes).
    fn page_with(lens: &[usize]) -> Vec<u8> {
        let mut p = vec![0u8; 2048];
        init_header(&mut p, PageType::Data, 0);
        let mut end = p.len();
        let mut live = 0;
        for (i, &l) in lens.iter().enumerate() {
            let n = if l == 0 { 7 } else { l };
            end -= n;
            let at = DATA_DIR + i * SLOT_LEN;
            LE::write_u16(&mut p[at..], end as u16);
            LE::write_u16(&mut p[at + 2..], if l == 0 { DELETED } else { l as u16 });
            live += u16::from(l != 0);
        }
        LE::write_u16(&mut p[D_SLOTS..], lens.len() as u16);
        LE::write_u16(&mut p[D_LIVE..], live);
        LE::write_u16(&mut p[D_HEAP..], (2048 - end) as u16);
        p
    }

    #[test]
    fn check_page_accepts_a_valid_page_and_counts_bytes() {
        let p = page_with(&[10, 0, 20]);
        let s = check_page(3, &p).unwrap();
        assert_eq!(
            s,
            DataPageStats {
                slots: 3,
                live: 2,
                live_bytes: 30,
                dead_bytes: 7,
                free_bytes: (2048 - 37 - DATA_DIR - 12) as u32,
            }
        );
    }

    #[test]
    fn check_page_rejects_every_single_field_lie() {
        let good = page_with(&[10, 0, 20]);
        let mut bad: Vec<(&str, Vec<u8>)> = Vec::new();
        let mut p = good.clone();
        LE::write_u16(&mut p[D_LIVE..], 1);
        bad.push(("live count", p));
        let mut p = good.clone();
        LE::write_u16(&mut p[D_SLOTS..], 600);
        bad.push(("slot count", p));
        let mut p = good.clone();
        LE::write_u16(&mut p[D_HEAP..], 36);
        bad.push(("heap", p));
        let mut p = good.clone();
        LE::write_u16(&mut p[DATA_DIR + 2..], 11);
        bad.push(("length", p));
        let mut p = good.clone();
        LE::write_u16(&mut p[DATA_DIR..], 2040);
        bad.push(("offset", p));
        let mut p = good.clone();
        LE::write_u16(&mut p[DATA_DIR + 8..], 0);
        bad.push(("offset 0", p));
        let mut p = good.clone();
        p[0] = PageType::Overflow as u8;
        bad.push(("type", p));
        let mut p = good.clone();
        p[D_RESERVED] = 1;
        bad.push(("reserved", p));
        bad.push(("empty", page_with(&[0, 0])));
        bad.push(("short", good[..20].to_vec()));
        for (what, p) in bad {
            let e = check_page(9, &p).expect_err(what);
            assert!(
                matches!(&e, Error::Corruption { location, .. } if location == "page 9"),
                "{what}: {e}"
            );
        }
    }
}
