//! The queue catalog: queue name to queue metadata, stored in a chain of catalog pages
//! under root slot [`CATALOG_ROOT`].
//!
//! Owns: the catalog page format and the entry codec.
//!
//! Invariants: each queue's entry lives in one fixed slot (page, index) for the queue's
//! whole life, so a commit that changes a queue's counters rewrites a few bytes of one page
//! (a small delta in the log). Queue ids are never reused (the first catalog page keeps the
//! next id). Decoding checks every length; a bad entry is `Error::Corruption` naming the
//! page and slot. The whole catalog is read at open into memory: O(queues), never
//! O(messages).
//!
//! Layout of a catalog page (after the 16-byte page header):
//! `next page u64 | next queue id u64 (first page only) | slots [ENTRY_LEN; n]`.
//! Entry: `used u8 | name len u16 | name [255] | id u64 | index root u64 | next key u64 |
//! messages u64 | bytes u64 | created_at u64 | open data page u64 | zero padding`.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::kernel::{PageSource, WriteTxn};
use crate::page::{PageId, PageType, PAGE_DB, PAGE_HEADER_LEN};

/// Root slot of the first catalog page.
pub const CATALOG_ROOT: usize = 1;
/// Bytes of one catalog entry.
pub const ENTRY_LEN: usize = 320;
/// Longest queue name in bytes.
pub const MAX_NAME: usize = 255;
// An entry (state, name length, name, seven u64 fields) fits its slot.
const _: () = assert!(3 + MAX_NAME + 7 * 8 <= ENTRY_LEN);
const NEXT_AT: usize = PAGE_HEADER_LEN;
const NEXT_ID_AT: usize = PAGE_HEADER_LEN + 8;
const SLOTS_AT: usize = PAGE_HEADER_LEN + 16;

/// The persisted metadata of one queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueMeta {
    /// The queue's name.
    pub name: String,
    /// Never reused.
    pub id: u64,
    /// Root page of the queue's index.
    pub index_root: PageId,
    /// The next key to hand out (all keys below it were handed out once).
    pub next_key: u64,
    /// Messages in the queue.
    pub messages: u64,
    /// Sum of payload lengths.
    pub bytes: u64,
    /// Creation time, milliseconds since the Unix epoch.
    pub created_at: u64,
    /// The data page new small payloads go to (0 = none yet).
    pub open_page: PageId,
}

/// Where an entry lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Slot {
    /// The catalog page.
    pub page: PageId,
    /// The entry index in the page.
    pub index: usize,
}

fn slots_per_page(page_size: usize) -> usize {
    (page_size - SLOTS_AT) / ENTRY_LEN
}

fn slot_range(slot: Slot) -> std::ops::Range<usize> {
    let at = SLOTS_AT + slot.index * ENTRY_LEN;
    at..at + ENTRY_LEN
}

fn encode(meta: &QueueMeta, out: &mut [u8]) {
    out.fill(0);
    out[0] = 1;
    let name = meta.name.as_bytes();
    LE::write_u16(&mut out[1..3], name.len() as u16);
    out[3..3 + name.len()].copy_from_slice(name);
    let mut at = 3 + MAX_NAME;
    for v in [
        meta.id,
        meta.index_root,
        meta.next_key,
        meta.messages,
        meta.bytes,
        meta.created_at,
        meta.open_page,
    ] {
        LE::write_u64(&mut out[at..at + 8], v);
        at += 8;
    }
}

fn decode(slot: Slot, b: &[u8]) -> Result<Option<QueueMeta>> {
    let bad = |d: String| {
        Error::corruption(
            PAGE_DB,
            format!("page {} catalog slot {}", slot.page, slot.index),
            d,
        )
    };
    match b[0] {
        0 => return Ok(None),
        1 => {}
        other => return Err(bad(format!("unknown entry state {other}"))),
    }
    let len = LE::read_u16(&b[1..3]) as usize;
    if len == 0 || len > MAX_NAME {
        return Err(bad(format!("queue name length {len}")));
    }
    let name = std::str::from_utf8(&b[3..3 + len])
        .map_err(|_| bad("queue name is not UTF-8".into()))?
        .to_string();
    let mut at = 3 + MAX_NAME;
    let mut next = || {
        let v = LE::read_u64(&b[at..at + 8]);
        at += 8;
        v
    };
    Ok(Some(QueueMeta {
        name,
        id: next(),
        index_root: next(),
        next_key: next(),
        messages: next(),
        bytes: next(),
        created_at: next(),
        open_page: next(),
    }))
}

/// Checks a queue name: 1..=255 bytes of UTF-8 without NUL.
pub fn check_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME || name.contains('\0') {
        return Err(Error::invalid_argument(format!(
            "queue name must be 1..=255 bytes of UTF-8 without NUL (got {} bytes)",
            name.len()
        )));
    }
    Ok(())
}

/// Everything in the catalog: entries with their slots, the pages, and the next queue id.
#[derive(Debug, Clone, Default)]
pub struct Loaded {
    /// Every queue and where its entry is.
    pub queues: Vec<(QueueMeta, Slot)>,
    /// Free slots, in page order.
    pub free_slots: Vec<Slot>,
    /// The catalog's pages, in chain order.
    pub pages: Vec<PageId>,
    /// The next queue id.
    pub next_id: u64,
}

/// Reads the whole catalog starting at `root` (0 = empty catalog).
pub fn load(src: &mut impl PageSource, root: PageId, page_count: u64) -> Result<Loaded> {
    walk_chain(src, root, page_count, &mut |e| Err(e))
}

/// Reads what can be read of a damaged catalog, for repair: a bad entry is skipped, a bad
/// page ends the chain; each problem is returned (nothing here fails).
pub fn salvage(src: &mut impl PageSource, root: PageId, page_count: u64) -> (Loaded, Vec<Error>) {
    let mut problems = Vec::new();
    let loaded = walk_chain(src, root, page_count, &mut |e| {
        problems.push(e);
        Ok(())
    });
    match loaded {
        Ok(l) => (l, problems),
        Err(e) => {
            problems.push(e);
            (Loaded::default(), problems)
        }
    }
}

/// Walks the chain; every problem goes to `problem`, which fails the walk (load) or
/// records it and lets the walk skip the entry or stop the chain (salvage).
fn walk_chain(
    src: &mut impl PageSource,
    root: PageId,
    page_count: u64,
    problem: &mut dyn FnMut(Error) -> Result<()>,
) -> Result<Loaded> {
    let mut out = Loaded {
        next_id: 1,
        ..Loaded::default()
    };
    let mut id = root;
    while id != 0 {
        if out.pages.contains(&id) || out.pages.len() as u64 >= page_count {
            problem(Error::corruption(
                PAGE_DB,
                format!("page {id}"),
                "catalog chain loops",
            ))?;
            break;
        }
        let first = out.pages.is_empty();
        let read = src.with_page(id, |p| -> Result<_> {
            if p[0] != PageType::Catalog as u8 {
                return Err(Error::corruption(
                    PAGE_DB,
                    format!("page {id}"),
                    format!("expected a catalog page, found type {}", p[0]),
                ));
            }
            let entries: Vec<_> = (0..slots_per_page(p.len()))
                .map(|index| {
                    let slot = Slot { page: id, index };
                    (slot, decode(slot, &p[slot_range(slot)]))
                })
                .collect();
            Ok((
                LE::read_u64(&p[NEXT_AT..NEXT_AT + 8]),
                LE::read_u64(&p[NEXT_ID_AT..NEXT_ID_AT + 8]),
                entries,
            ))
        });
        let (next, next_id, entries) = match read.and_then(|r| r) {
            Ok(r) => r,
            Err(e) => {
                problem(e)?;
                break;
            }
        };
        if first {
            out.next_id = next_id.max(1);
        }
        for (slot, e) in entries {
            match e {
                Ok(Some(meta)) => out.queues.push((meta, slot)),
                Ok(None) => out.free_slots.push(slot),
                Err(e) => problem(e)?,
            }
        }
        out.pages.push(id);
        id = next;
    }
    Ok(out)
}

/// Writes `meta` into `slot`.
pub fn write(tx: &mut WriteTxn<'_>, slot: Slot, meta: &QueueMeta) -> Result<()> {
    let p = tx.page_mut(slot.page)?;
    encode(meta, &mut p[slot_range(slot)]);
    Ok(())
}

/// Clears `slot`.
pub fn clear(tx: &mut WriteTxn<'_>, slot: Slot) -> Result<()> {
    let p = tx.page_mut(slot.page)?;
    p[slot_range(slot)].fill(0);
    Ok(())
}

/// Records the next queue id in the first catalog page.
pub fn set_next_id(tx: &mut WriteTxn<'_>, first_page: PageId, next_id: u64) -> Result<()> {
    let p = tx.page_mut(first_page)?;
    LE::write_u64(&mut p[NEXT_ID_AT..NEXT_ID_AT + 8], next_id);
    Ok(())
}

/// Appends a new catalog page after `last` (0 = the catalog is empty: the new page becomes
/// the root) and returns it with its slots.
pub fn grow(tx: &mut WriteTxn<'_>, last: PageId) -> Result<(PageId, Vec<Slot>)> {
    let id = tx.allocate(PageType::Catalog)?;
    if last == 0 {
        tx.set_root(CATALOG_ROOT, id)?;
    } else {
        let p = tx.page_mut(last)?;
        LE::write_u64(&mut p[NEXT_AT..NEXT_AT + 8], id);
    }
    let n = slots_per_page(tx.page_size());
    Ok((id, (0..n).map(|index| Slot { page: id, index }).collect()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_corruption() {
        let meta = QueueMeta {
            name: "orders/€$..".into(),
            id: 7,
            index_root: 12,
            next_key: 99,
            messages: 3,
            bytes: 300,
            created_at: 1_700_000_000_000,
            open_page: 13,
        };
        let mut b = vec![0u8; ENTRY_LEN];
        encode(&meta, &mut b);
        let slot = Slot { page: 4, index: 2 };
        assert_eq!(decode(slot, &b).unwrap(), Some(meta));
        assert_eq!(decode(slot, &[0u8; ENTRY_LEN]).unwrap(), None);
        let mut bad = b.clone();
        bad[1] = 0;
        bad[2] = 1; // length 256
        let e = decode(slot, &bad).unwrap_err();
        assert!(e.to_string().contains("catalog slot 2"), "{e}");
        let mut bad = b.clone();
        bad[3] = 0xFF;
        assert!(decode(slot, &bad).is_err());
        let mut bad = b;
        bad[0] = 9;
        assert!(decode(slot, &bad).is_err());
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("").is_err());
        assert!(check_name(&"x".repeat(256)).is_err());
        assert!(check_name("a\0b").is_err());
        check_name(&"é".repeat(127)).unwrap();
        check_name("q").unwrap();
    }

    #[test]
    fn entries_fit_the_smallest_page() {
        assert_eq!(slots_per_page(2048), 6);
    }
}
