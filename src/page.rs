//! The on-disk page format of `page.db`: the page header, the superblock and the
//! free-space bitmap page codec.
//!
//! Owns: encoding and validating bytes; nothing here does I/O.
//! Invariants: every page carries a 16-byte header with its type, its LSN and a CRC32 that
//! covers the page's own id (so a page written to the wrong place fails verification) and
//! every byte of the page except the CRC field. Decoders never panic, never index out of
//! bounds and never allocate from a length read from disk: every field is range-checked
//! and a failure is `Error::Corruption` naming the file and location.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::config::is_valid_page_size;
use crate::error::{Error, Result};

/// A page number in `page.db`; page 0 holds the superblocks.
pub type PageId = u64;
/// A log sequence number.
pub type Lsn = u64;

/// The file name of the page store.
pub const PAGE_DB: &str = "page.db";
/// Size of the page header in bytes.
pub const PAGE_HEADER_LEN: usize = 16;
/// Size of one superblock copy: one 512-byte sector, so a torn write ruins at most one copy.
pub const SUPERBLOCK_LEN: usize = 512;
/// Byte offsets of the two superblock copies inside page 0.
pub const SUPERBLOCK_OFFSETS: [u64; 2] = [0, SUPERBLOCK_LEN as u64];
/// Magic bytes at the start of each superblock.
pub const MAGIC: [u8; 8] = *b"STOWAGE\x01";
/// The current format version of `page.db`.
pub const FORMAT_VERSION: u32 = 1;
/// Number of root slots in the superblock (catalog, XA state, ...; assigned by later layers).
pub const ROOT_SLOTS: usize = 8;

const CRC_AT: usize = 4;

/// What a page holds, from its header's first byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum PageType {
    /// A page of the free-space bitmap.
    FreeMap = 1,
    /// A page of the queue catalog.
    Catalog = 2,
    /// A B+tree branch (interior) node.
    Branch = 3,
    /// A B+tree leaf node.
    Leaf = 4,
    /// A slotted page of small message payloads.
    Data = 5,
    /// A page of a large payload's overflow chain.
    Overflow = 6,
    /// A page whose content only tests and tools interpret.
    Raw = 7,
}

impl PageType {
    /// Decodes a type byte.
    pub fn from_u8(b: u8) -> Option<PageType> {
        Some(match b {
            1 => PageType::FreeMap,
            2 => PageType::Catalog,
            3 => PageType::Branch,
            4 => PageType::Leaf,
            5 => PageType::Data,
            6 => PageType::Overflow,
            7 => PageType::Raw,
            _ => return None,
        })
    }
}

/// The decoded header of a verified page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageHeader {
    /// The page's type.
    pub page_type: PageType,
    /// The LSN of the last logged change applied to the page.
    pub lsn: Lsn,
}

/// Page header layout: `[type u8][reserved 3][crc u32][lsn u64]`.
fn page_crc(id: PageId, page: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&id.to_le_bytes());
    h.update(&page[..CRC_AT]);
    h.update(&page[CRC_AT + 4..]);
    h.finalize()
}

/// Writes the header fields (type and LSN) into `page`; the CRC is set by [`seal_page`].
pub fn init_header(page: &mut [u8], page_type: PageType, lsn: Lsn) {
    page[..CRC_AT].copy_from_slice(&[page_type as u8, 0, 0, 0]);
    LE::write_u64(&mut page[8..16], lsn);
}

/// Sets the LSN field of a page header.
pub fn set_page_lsn(page: &mut [u8], lsn: Lsn) {
    LE::write_u64(&mut page[8..16], lsn);
}

/// Reads the LSN field of a page header without verifying the page.
pub fn page_lsn(page: &[u8]) -> Lsn {
    LE::read_u64(&page[8..16])
}

/// Computes and stores the CRC of page `id` in its header.
pub fn seal_page(id: PageId, page: &mut [u8]) {
    let crc = page_crc(id, page);
    LE::write_u32(&mut page[CRC_AT..CRC_AT + 4], crc);
}

/// Verifies page `id`'s CRC and type byte; returns its header.
pub fn verify_page(id: PageId, page: &[u8]) -> Result<PageHeader> {
    let corrupt = |detail: String| Error::corruption(PAGE_DB, format!("page {id}"), detail);
    if page.len() < PAGE_HEADER_LEN || !is_valid_page_size(page.len() as u32) {
        return Err(corrupt(format!("invalid page length {}", page.len())));
    }
    let stored = LE::read_u32(&page[CRC_AT..CRC_AT + 4]);
    let actual = page_crc(id, page);
    if stored != actual {
        let detail = if page.iter().all(|&b| b == 0) {
            "page was never written (all zeros)".to_string()
        } else {
            format!("checksum mismatch (stored {stored:#010x}, computed {actual:#010x})")
        };
        return Err(corrupt(detail));
    }
    let page_type = PageType::from_u8(page[0])
        .ok_or_else(|| corrupt(format!("unknown page type {}", page[0])))?;
    Ok(PageHeader {
        page_type,
        lsn: page_lsn(page),
    })
}

/// The root record of `page.db`, kept as two alternating copies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Page size of the file, in bytes.
    pub page_size: u32,
    /// Increases by one with every superblock write; the valid copy with the highest wins.
    pub sequence: u64,
    /// Pages in the file that are durably allocated (the file may be longer).
    pub page_count: u64,
    /// LSN up to which the pages reflect the log.
    pub checkpoint_lsn: Lsn,
    /// First page of the free-space bitmap chain (0 = none).
    pub free_root: PageId,
    /// Free pages recorded in the bitmap.
    pub free_pages: u64,
    /// Root pages of higher-level structures (0 = empty).
    pub roots: [PageId; ROOT_SLOTS],
    /// Set when the store was closed cleanly after a final checkpoint.
    pub clean_close: bool,
}

// Superblock layout (little-endian), one 512-byte sector:
//   0 magic[8]  8 version u32  12 page_size u32  16 sequence u64  24 page_count u64
//  32 checkpoint_lsn u64  40 free_root u64  48 free_pages u64  56 flags u32  60 reserved u32
//  64 roots[8] u64  128..508 zero  508 crc32 of bytes 0..508
const SB_CRC_AT: usize = SUPERBLOCK_LEN - 4;
const FLAG_CLEAN: u32 = 1;

impl Superblock {
    /// Encodes the superblock into one sector.
    pub fn encode(&self) -> [u8; SUPERBLOCK_LEN] {
        let mut b = [0u8; SUPERBLOCK_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        LE::write_u32(&mut b[8..12], FORMAT_VERSION);
        LE::write_u32(&mut b[12..16], self.page_size);
        LE::write_u64(&mut b[16..24], self.sequence);
        LE::write_u64(&mut b[24..32], self.page_count);
        LE::write_u64(&mut b[32..40], self.checkpoint_lsn);
        LE::write_u64(&mut b[40..48], self.free_root);
        LE::write_u64(&mut b[48..56], self.free_pages);
        LE::write_u32(
            &mut b[56..60],
            if self.clean_close { FLAG_CLEAN } else { 0 },
        );
        for (i, r) in self.roots.iter().enumerate() {
            LE::write_u64(&mut b[64 + i * 8..72 + i * 8], *r);
        }
        let crc = crc32fast::hash(&b[..SB_CRC_AT]);
        LE::write_u32(&mut b[SB_CRC_AT..], crc);
        b
    }

    /// Decodes and validates one superblock copy. `slot` only names the location in errors.
    ///
    /// Checks the CRC, magic, version, page size, that page numbers are below
    /// `page_count`, and that `page_count` is at least 2 (page 0 and one usable page).
    pub fn decode(bytes: &[u8], slot: usize) -> Result<Superblock> {
        let corrupt =
            |detail: String| Error::corruption(PAGE_DB, format!("superblock {slot}"), detail);
        if bytes.len() < SUPERBLOCK_LEN {
            return Err(corrupt(format!("only {} bytes", bytes.len())));
        }
        let b = &bytes[..SUPERBLOCK_LEN];
        if b[0..8] != MAGIC {
            return Err(corrupt("bad magic (not a stowage page.db)".into()));
        }
        let stored = LE::read_u32(&b[SB_CRC_AT..]);
        if stored != crc32fast::hash(&b[..SB_CRC_AT]) {
            return Err(corrupt("checksum mismatch".into()));
        }
        let version = LE::read_u32(&b[8..12]);
        if version != FORMAT_VERSION {
            return Err(corrupt(format!(
                "format version {version}, this build reads {FORMAT_VERSION}"
            )));
        }
        let page_size = LE::read_u32(&b[12..16]);
        if !is_valid_page_size(page_size) {
            return Err(corrupt(format!("invalid page size {page_size}")));
        }
        let flags = LE::read_u32(&b[56..60]);
        if flags & !FLAG_CLEAN != 0 {
            return Err(corrupt(format!("unknown flags {flags:#x}")));
        }
        let mut roots = [0; ROOT_SLOTS];
        for (i, r) in roots.iter_mut().enumerate() {
            *r = LE::read_u64(&b[64 + i * 8..72 + i * 8]);
        }
        let sb = Superblock {
            page_size,
            sequence: LE::read_u64(&b[16..24]),
            page_count: LE::read_u64(&b[24..32]),
            checkpoint_lsn: LE::read_u64(&b[32..40]),
            free_root: LE::read_u64(&b[40..48]),
            free_pages: LE::read_u64(&b[48..56]),
            roots,
            clean_close: flags & FLAG_CLEAN != 0,
        };
        if sb.page_count < 2 {
            return Err(corrupt(format!("page count {} below 2", sb.page_count)));
        }
        if sb.free_pages >= sb.page_count {
            return Err(corrupt(format!(
                "free page count {} not below page count {}",
                sb.free_pages, sb.page_count
            )));
        }
        for (what, id) in std::iter::once(("free root", sb.free_root))
            .chain(sb.roots.iter().map(|r| ("root", *r)))
        {
            if id >= sb.page_count {
                return Err(corrupt(format!(
                    "{what} page {id} beyond page count {}",
                    sb.page_count
                )));
            }
        }
        Ok(sb)
    }

    /// Picks the valid copy with the highest sequence from the first 1024 bytes of page.db.
    /// Fails with the first copy's error when neither is valid.
    pub fn choose(area: &[u8]) -> Result<Superblock> {
        let a = Superblock::decode(area.get(..SUPERBLOCK_LEN).unwrap_or(&[]), 0);
        let b = Superblock::decode(area.get(SUPERBLOCK_LEN..).unwrap_or(&[]), 1);
        match (a, b) {
            (Ok(a), Ok(b)) => Ok(if b.sequence > a.sequence { b } else { a }),
            (Ok(a), Err(_)) => Ok(a),
            (Err(_), Ok(b)) => Ok(b),
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// The slot the next write goes to: the one not holding this (the newer) copy.
    pub fn next_slot(&self) -> usize {
        ((self.sequence + 1) % 2) as usize
    }
}

// Free-space bitmap page layout after the page header:
//  16 next u64 (next bitmap page, 0 = last)  24 first_page u64 (page id of bit 0)
//  32 bits u32 (bits used in this page)  36 reserved u32  40.. bitmap (bit set = page free)
const FM_NEXT: usize = PAGE_HEADER_LEN;
const FM_FIRST: usize = PAGE_HEADER_LEN + 8;
const FM_BITS: usize = PAGE_HEADER_LEN + 16;
/// Offset of the bitmap bytes in a free-map page.
pub const FREE_MAP_DATA: usize = PAGE_HEADER_LEN + 24;

/// Bits (pages) one free-map page describes.
pub fn free_map_bits_per_page(page_size: usize) -> u64 {
    ((page_size - FREE_MAP_DATA) * 8) as u64
}

/// The decoded fields of a verified free-map page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FreeMapPage {
    /// The next page of the chain (0 = last).
    pub next: PageId,
    /// The page id that bit 0 describes.
    pub first_page: PageId,
    /// How many bits of this page are in use.
    pub bits: u64,
}

/// Writes the free-map fields of a page (after [`init_header`]); the bitmap follows.
pub fn encode_free_map(page: &mut [u8], fm: FreeMapPage) {
    LE::write_u64(&mut page[FM_NEXT..FM_NEXT + 8], fm.next);
    LE::write_u64(&mut page[FM_FIRST..FM_FIRST + 8], fm.first_page);
    // `bits` never exceeds free_map_bits_per_page (< 2^20), so it fits in u32.
    LE::write_u32(&mut page[FM_BITS..FM_BITS + 4], fm.bits as u32);
}

/// Decodes the free-map fields of page `id` (already verified), checking `bits` against
/// the page's capacity.
pub fn decode_free_map(id: PageId, page: &[u8]) -> Result<FreeMapPage> {
    let fm = FreeMapPage {
        next: LE::read_u64(&page[FM_NEXT..FM_NEXT + 8]),
        first_page: LE::read_u64(&page[FM_FIRST..FM_FIRST + 8]),
        bits: u64::from(LE::read_u32(&page[FM_BITS..FM_BITS + 4])),
    };
    if fm.bits > free_map_bits_per_page(page.len()) {
        return Err(Error::corruption(
            PAGE_DB,
            format!("page {id}"),
            format!(
                "free map claims {} bits, page holds at most {}",
                fm.bits,
                free_map_bits_per_page(page.len())
            ),
        ));
    }
    Ok(fm)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            page_size: 4096,
            sequence: 7,
            page_count: 100,
            checkpoint_lsn: 42,
            free_root: 3,
            free_pages: 50,
            roots: [0, 5, 0, 0, 0, 0, 0, 99],
            clean_close: true,
        }
    }

    #[test]
    fn superblock_round_trips_and_detects_every_flipped_bit_of_crc_covered_bytes() {
        let s = sb();
        let b = s.encode();
        assert_eq!(Superblock::decode(&b, 0).unwrap(), s);
        for i in 0..SUPERBLOCK_LEN {
            let mut c = b;
            c[i] ^= 0x10;
            assert!(
                Superblock::decode(&c, 0).is_err(),
                "flip at byte {i} undetected"
            );
        }
    }

    #[test]
    fn superblock_rejects_roots_beyond_page_count_even_with_valid_crc() {
        let mut s = sb();
        s.roots[2] = 100;
        let e = Superblock::decode(&s.encode(), 1).unwrap_err();
        assert!(e.to_string().contains("superblock 1"), "{e}");
        let mut s = sb();
        s.page_count = 1;
        s.free_root = 0;
        s.roots = [0; ROOT_SLOTS];
        s.free_pages = 0;
        assert!(Superblock::decode(&s.encode(), 0).is_err());
    }

    #[test]
    fn choose_takes_the_newest_valid_copy() {
        let old = sb();
        let new = Superblock {
            sequence: 8,
            checkpoint_lsn: 50,
            ..sb()
        };
        let mut area = [0u8; 1024];
        area[..512].copy_from_slice(&old.encode());
        area[512..].copy_from_slice(&new.encode());
        assert_eq!(Superblock::choose(&area).unwrap(), new);
        area[600] ^= 1;
        assert_eq!(Superblock::choose(&area).unwrap(), old);
        area[3] ^= 1;
        assert!(Superblock::choose(&area).is_err());
        assert!(Superblock::choose(&[]).is_err());
    }

    #[test]
    fn page_crc_covers_id_and_every_byte() {
        let mut p = vec![0u8; 2048];
        init_header(&mut p, PageType::Raw, 9);
        p[100] = 5;
        seal_page(3, &mut p);
        assert_eq!(
            verify_page(3, &p).unwrap(),
            PageHeader {
                page_type: PageType::Raw,
                lsn: 9
            }
        );
        assert!(verify_page(4, &p).is_err(), "misdirected page accepted");
        for i in 0..p.len() {
            let mut c = p.clone();
            c[i] ^= 0x80;
            assert!(verify_page(3, &c).is_err(), "flip at byte {i} undetected");
        }
        let zeros = vec![0u8; 2048];
        assert!(verify_page(3, &zeros)
            .unwrap_err()
            .to_string()
            .contains("never written"));
        assert!(verify_page(3, &p[..100]).is_err());
    }

    #[test]
    fn free_map_bits_are_bounded() {
        let mut p = vec![0u8; 2048];
        init_header(&mut p, PageType::FreeMap, 0);
        encode_free_map(
            &mut p,
            FreeMapPage {
                next: 0,
                first_page: 0,
                bits: 100,
            },
        );
        assert_eq!(decode_free_map(1, &p).unwrap().bits, 100);
        LE::write_u32(&mut p[FM_BITS..FM_BITS + 4], u32::MAX);
        assert!(decode_free_map(1, &p).is_err());
    }
}
