//! `page.db`: the file of fixed-size pages, its twin superblocks, its growth and its
//! persisted free-space bitmap.
//!
//! Owns: the page file handle, the allocator (which pages are free) and the committed
//! superblock.
//!
//! Invariants:
//! - Page 0 holds the two superblock copies (one 512-byte sector each). A superblock write
//!   goes to the slot *not* holding the newest valid copy, after every page it references
//!   is durable; so a crash at any point leaves the old copy intact, and open picks the
//!   newest valid copy.
//! - The free-space bitmap is copy-on-write: a commit writes a complete new bitmap into
//!   pages that are free in both the committed and the current state, syncs it, and only
//!   then switches the superblock. The committed bitmap is never overwritten in place.
//! - A page freed since the last commit is *pending*: it is still referenced by the committed
//!   state, so it is not handed out again until a commit has switched the superblock (or the
//!   engine, whose log protects such pages, calls [`PageDb::release_pending`]).
//! - The file grows in chunks; the new length is synced before any page in the new range is
//!   handed out, so no durable structure ever references a page beyond the durable length.
//! - Open reads the superblocks and the bitmap chain only: it never scans the file.
//! - After a failed write or sync the file is in an unknown state: every later call fails
//!   with `Error::Poisoned` until the file is opened again.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::file::{create_fresh, parent_dir, FileHandle, FileSystem, OpenMode};
use crate::page::{
    decode_free_map, encode_free_map, free_map_bits_per_page, init_header, seal_page, verify_page,
    FreeMapPage, Lsn, PageHeader, PageId, PageType, Superblock, FREE_MAP_DATA, PAGE_DB, ROOT_SLOTS,
    SUPERBLOCK_LEN, SUPERBLOCK_OFFSETS,
};
use crate::planted::PlantedBugs;
use crate::poison::Poison;

/// Bytes [`PageDb::cut_to_page_count`] cuts per step.
const CUT_STEP: u64 = 64 << 20;

/// The name `page.db` is built under before it is renamed into place.
const PAGE_DB_TMP: &str = "page.db.tmp";

/// What a commit records in the superblock besides the allocator state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CommitInfo {
    /// LSN up to which the pages reflect the log.
    pub checkpoint_lsn: Lsn,
    /// Root pages of higher-level structures.
    pub roots: [PageId; ROOT_SLOTS],
    /// Whether this is the final commit of a clean close.
    pub clean_close: bool,
    /// Cut free pages off the end of the file (shrink): the superblock records the shorter
    /// page count, and the file is truncated once that superblock is durable.
    pub truncate: bool,
}

/// A set of page ids as a bitmap: bit set = page free.
#[derive(Debug, Clone, Default)]
struct FreeBitmap {
    words: Vec<u64>,
    count: u64,
    /// No free bit lives in a word below this index.
    hint: usize,
}

impl FreeBitmap {
    fn with_pages(pages: u64) -> Self {
        let mut b = FreeBitmap::default();
        b.grow_to(pages);
        b
    }
    fn grow_to(&mut self, pages: u64) {
        let words = pages.div_ceil(64) as usize;
        if words > self.words.len() {
            self.words.resize(words, 0);
        }
    }
    fn contains(&self, id: PageId) -> bool {
        self.words
            .get((id / 64) as usize)
            .is_some_and(|w| w & (1 << (id % 64)) != 0)
    }
    /// Marks `id` free; returns false if it already was. `id` must be within the bitmap.
    fn insert(&mut self, id: PageId) -> bool {
        let i = (id / 64) as usize;
        let Some(w) = self.words.get_mut(i) else {
            return false;
        };
        let bit = 1 << (id % 64);
        if *w & bit != 0 {
            return false;
        }
        *w |= bit;
        self.count += 1;
        self.hint = self.hint.min(i);
        true
    }
    fn remove(&mut self, id: PageId) {
        if let Some(w) = self.words.get_mut((id / 64) as usize) {
            let bit = 1 << (id % 64);
            if *w & bit != 0 {
                *w &= !bit;
                self.count -= 1;
            }
        }
    }
    /// Takes the lowest free page (low pages first keeps the file's tail empty for shrink).
    fn take_lowest(&mut self) -> Option<PageId> {
        while self.hint < self.words.len() {
            let w = self.words[self.hint];
            if w != 0 {
                let id = self.hint as u64 * 64 + u64::from(w.trailing_zeros());
                self.remove(id);
                return Some(id);
            }
            self.hint += 1;
        }
        None
    }
    fn iter(&self) -> impl Iterator<Item = PageId> + '_ {
        self.words.iter().enumerate().flat_map(|(i, &w)| {
            (0..64u64)
                .filter(move |b| w & (1 << b) != 0)
                .map(move |b| i as u64 * 64 + b)
        })
    }
}

#[derive(Debug)]
struct Allocator {
    page_count: u64,
    free: FreeBitmap,
    /// Freed since the last commit; still referenced by the committed state.
    pending: Vec<PageId>,
    committed: Superblock,
    /// The free-map pages the committed superblock references.
    committed_map: Vec<PageId>,
}

/// The open `page.db` of a store.
#[derive(Debug)]
pub struct PageDb {
    fs: Arc<dyn FileSystem>,
    path: PathBuf,
    file: Arc<dyn FileHandle>,
    page_size: usize,
    growth_chunk: u64,
    /// Mirrors `Allocator::page_count` so page reads need no lock.
    page_count: AtomicU64,
    alloc: Mutex<Allocator>,
    /// Serialises commits (superblock writers); allocation continues during a commit.
    commit_lock: Mutex<()>,
    poison: Arc<Poison>,
    bugs: PlantedBugs,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

fn corrupt(location: impl Into<String>, detail: impl Into<String>) -> Error {
    Error::corruption(PAGE_DB, location, detail)
}

/// Byte offset of page `id`, or an error if it overflows.
fn page_offset(id: PageId, page_size: usize) -> Result<u64> {
    id.checked_mul(page_size as u64)
        .ok_or_else(|| corrupt(format!("page {id}"), "page offset overflows"))
}

impl PageDb {
    /// Opens `dir/page.db`, creating it (and `dir`) if missing. An existing file keeps its
    /// own page size; `config.page_size` only applies to a new file.
    pub fn open(fs: Arc<dyn FileSystem>, dir: &Path, config: &StoreConfig) -> Result<PageDb> {
        Self::open_with(
            fs,
            dir,
            config,
            Arc::new(Poison::new()),
            PlantedBugs::default(),
        )
    }

    /// [`PageDb::open`] sharing the store's poison latch; `bugs` is all off outside the
    /// crash harness's self-tests.
    #[doc(hidden)]
    pub fn open_with(
        fs: Arc<dyn FileSystem>,
        dir: &Path,
        config: &StoreConfig,
        poison: Arc<Poison>,
        bugs: PlantedBugs,
    ) -> Result<PageDb> {
        config.validate()?;
        let path = dir.join(PAGE_DB);
        let exists = fs
            .exists(&path)
            .map_err(|e| io_err("checking for", &path, e))?;
        if !exists {
            Self::create(fs.as_ref(), dir, config, bugs)?;
        }
        Self::load(fs, path, config, poison, bugs)
    }

    /// Builds a complete, synced page.db under a temporary name and renames it into place,
    /// so a crash during creation leaves either no page.db or a whole one.
    fn create(
        fs: &dyn FileSystem,
        dir: &Path,
        config: &StoreConfig,
        bugs: PlantedBugs,
    ) -> Result<()> {
        if !fs.exists(dir).map_err(|e| io_err("checking for", dir, e))? {
            fs.create_dir_all(dir)
                .map_err(|e| io_err("creating directory", dir, e))?;
            let parent = parent_dir(dir);
            if !bugs.skip_dir_fsync {
                fs.sync_dir(&parent)
                    .map_err(|e| io_err("syncing directory", &parent, e))?;
            }
        }
        let tmp = dir.join(PAGE_DB_TMP);
        let file = create_fresh(fs, &tmp).map_err(|e| io_err("creating", &tmp, e))?;
        let page_size = config.page_size as usize;
        let page_count = config.initial_db_size_pages;
        let len = page_offset(page_count, page_size)?;
        file.allocate(len)
            .map_err(|e| io_err("preallocating", &tmp, e))?;
        let mut free = FreeBitmap::with_pages(page_count);
        for id in 1..page_count {
            free.insert(id);
        }
        let map_pages = free_map_pages_needed(page_count, page_size);
        let map: Vec<PageId> = (0..map_pages).filter_map(|_| free.take_lowest()).collect();
        if map.len() as u64 != map_pages {
            return Err(Error::InvalidConfig {
                param: "initial_db_size_pages",
                reason: "too small to hold the free-space map".into(),
            });
        }
        write_free_map(file.as_ref(), &tmp, page_size, &map, page_count, &free)?;
        let sb = Superblock {
            page_size: config.page_size,
            sequence: 1,
            page_count,
            checkpoint_lsn: 0,
            free_root: map[0],
            free_pages: free.count,
            roots: [0; ROOT_SLOTS],
            clean_close: true,
        };
        file.write_all_at(&sb.encode(), SUPERBLOCK_OFFSETS[1])
            .map_err(|e| io_err("writing superblock of", &tmp, e))?;
        file.sync_all().map_err(|e| io_err("syncing", &tmp, e))?;
        let path = dir.join(PAGE_DB);
        fs.rename(&tmp, &path)
            .map_err(|e| io_err("renaming into place", &path, e))?;
        if bugs.skip_dir_fsync {
            return Ok(());
        }
        fs.sync_dir(dir)
            .map_err(|e| io_err("syncing directory", dir, e))
    }

    fn load(
        fs: Arc<dyn FileSystem>,
        path: PathBuf,
        config: &StoreConfig,
        poison: Arc<Poison>,
        bugs: PlantedBugs,
    ) -> Result<PageDb> {
        let file = fs
            .open(&path, OpenMode::Existing)
            .map_err(|e| io_err("opening", &path, e))?;
        let len = file
            .len()
            .map_err(|e| io_err("reading length of", &path, e))?;
        let area_len = 2 * SUPERBLOCK_LEN;
        if len < area_len as u64 {
            return Err(corrupt(
                "superblock 0",
                format!("file is {len} bytes, too short to hold the superblocks"),
            ));
        }
        let mut area = vec![0u8; area_len];
        file.read_exact_at(&mut area, 0)
            .map_err(|e| io_err("reading superblocks of", &path, e))?;
        let sb = Superblock::choose(&area)?;
        let page_size = sb.page_size as usize;
        let needed = page_offset(sb.page_count, page_size)?;
        if len < needed {
            return Err(corrupt(
                format!("superblock seq {}", sb.sequence),
                format!(
                    "file is {len} bytes but the superblock records {} pages of {page_size} bytes",
                    sb.page_count
                ),
            ));
        }
        let (free, map) = read_free_map(file.as_ref(), &sb)?;
        let db = PageDb {
            fs,
            path,
            file,
            page_size,
            growth_chunk: config.initial_db_size_pages.max(16),
            page_count: AtomicU64::new(sb.page_count),
            alloc: Mutex::new(Allocator {
                page_count: sb.page_count,
                free,
                pending: Vec::new(),
                committed: sb,
                committed_map: map,
            }),
            commit_lock: Mutex::new(()),
            poison,
            bugs,
        };
        Ok(db)
    }

    /// The page size of this file in bytes.
    pub fn page_size(&self) -> usize {
        self.page_size
    }

    /// Pages in the file (durably allocated length), including page 0.
    pub fn page_count(&self) -> u64 {
        self.page_count.load(Ordering::Acquire)
    }

    /// Free pages that can be handed out now plus those waiting for a commit.
    pub fn free_pages(&self) -> u64 {
        let a = self.alloc.lock();
        a.free.count + a.pending.len() as u64
    }

    /// Free page ids: free now or pending release, sorted.
    pub fn free_page_ids(&self) -> Vec<PageId> {
        let a = self.alloc.lock();
        let mut ids: Vec<PageId> = a.free.iter().chain(a.pending.iter().copied()).collect();
        ids.sort_unstable();
        ids
    }

    /// Pages the committed free-space map occupies.
    pub fn free_map_page_ids(&self) -> Vec<PageId> {
        self.alloc.lock().committed_map.clone()
    }

    /// The superblock of the last commit.
    pub fn superblock(&self) -> Superblock {
        self.alloc.lock().committed.clone()
    }

    /// The path of the file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn check_poison(&self) -> Result<()> {
        self.poison.check()
    }

    /// Latches the poisoned state after a failed write or sync and returns the error.
    fn poison(&self, e: Error) -> Error {
        self.poison.latch(e)
    }

    /// True once a write or sync failed.
    pub fn is_poisoned(&self) -> bool {
        self.poison.is_set()
    }

    fn check_id(&self, id: PageId) -> Result<()> {
        let count = self.page_count();
        if id == 0 || id >= count {
            return Err(corrupt(
                format!("page {id}"),
                format!("page number out of range 1..{count}"),
            ));
        }
        Ok(())
    }

    fn check_buf(&self, len: usize) -> Result<()> {
        if len != self.page_size {
            return Err(Error::invalid_argument(format!(
                "page buffer of {len} bytes, page size is {}",
                self.page_size
            )));
        }
        Ok(())
    }

    /// Reads page `id` into `buf` and verifies its checksum and type.
    pub fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<PageHeader> {
        self.check_poison()?;
        self.check_buf(buf.len())?;
        self.check_id(id)?;
        let off = page_offset(id, self.page_size)?;
        self.file
            .read_exact_at(buf, off)
            .map_err(|e| io_err(&format!("reading page {id} of"), &self.path, e))?;
        if self.bugs.ignore_checksum {
            let page_type = PageType::from_u8(buf[0]).unwrap_or(PageType::Raw);
            return Ok(PageHeader {
                page_type,
                lsn: crate::page::page_lsn(buf),
            });
        }
        verify_page(id, buf)
    }

    /// Seals a copy of `page` with page `id`'s checksum and writes it (not durable until
    /// [`PageDb::sync`] or [`PageDb::commit`]).
    pub fn write_page(&self, id: PageId, page: &[u8]) -> Result<()> {
        self.check_poison()?;
        self.check_buf(page.len())?;
        self.check_id(id)?;
        let mut sealed = page.to_vec();
        seal_page(id, &mut sealed);
        let off = page_offset(id, self.page_size)?;
        self.file
            .write_all_at(&sealed, off)
            .map_err(|e| self.poison(io_err(&format!("writing page {id} of"), &self.path, e)))
    }

    /// Makes every page written so far durable.
    pub fn sync(&self) -> Result<()> {
        self.check_poison()?;
        self.file
            .sync_data()
            .map_err(|e| self.poison(io_err("syncing", &self.path, e)))
    }

    /// Hands out a free page, growing the file by a chunk when none is left.
    ///
    /// The page's content is undefined until written.
    pub fn allocate(&self) -> Result<PageId> {
        self.check_poison()?;
        let mut a = self.alloc.lock();
        if let Some(id) = a.free.take_lowest() {
            return Ok(id);
        }
        self.grow(&mut a)?;
        a.free
            .take_lowest()
            .ok_or_else(|| Error::invalid_argument("growth produced no free page"))
    }

    /// Extends the file by one chunk, syncs the new length, then marks the new pages free.
    ///
    /// Holds the allocator lock across the I/O: growth is rare (once per chunk) and every
    /// allocator must wait for the new pages anyway.
    fn grow(&self, a: &mut Allocator) -> Result<()> {
        let old = a.page_count;
        let new = old
            .checked_add(self.growth_chunk)
            .ok_or_else(|| Error::invalid_argument("page count overflows"))?;
        let len = page_offset(new, self.page_size)?;
        self.file
            .allocate(len)
            .map_err(|e| self.poison(io_err("growing", &self.path, e)))?;
        if !self.bugs.grow_without_sync {
            self.file
                .sync_data()
                .map_err(|e| self.poison(io_err("syncing growth of", &self.path, e)))?;
        }
        a.free.grow_to(new);
        for id in old..new {
            a.free.insert(id);
        }
        a.page_count = new;
        self.page_count.store(new, Ordering::Release);
        Ok(())
    }

    /// Frees page `id`. It becomes reusable after the next commit (or
    /// [`PageDb::release_pending`]).
    pub fn free(&self, id: PageId) -> Result<()> {
        self.check_poison()?;
        self.check_id(id)?;
        let mut a = self.alloc.lock();
        if a.free.contains(id) || a.pending.contains(&id) || a.committed_map.contains(&id) {
            return Err(Error::invalid_argument(format!(
                "page {id} freed twice (or it holds the free-space map)"
            )));
        }
        a.pending.push(id);
        Ok(())
    }

    /// Frees page `id` and makes it reusable at once: for the logged commit path, whose
    /// log restores any page the checkpointed state still references.
    pub fn free_now(&self, id: PageId) -> Result<()> {
        self.free(id)?;
        let mut a = self.alloc.lock();
        if let Some(i) = a.pending.iter().rposition(|&p| p == id) {
            a.pending.swap_remove(i);
            a.free.insert(id);
        }
        Ok(())
    }

    /// Recovery: marks page `id` allocated (a logged `Alloc`).
    pub fn recover_alloc(&self, id: PageId) -> Result<()> {
        self.check_id(id)?;
        let mut a = self.alloc.lock();
        a.free.remove(id);
        a.pending.retain(|&p| p != id);
        Ok(())
    }

    /// Recovery: marks page `id` free (a logged `Free`).
    pub fn recover_free(&self, id: PageId) -> Result<()> {
        self.check_id(id)?;
        let mut a = self.alloc.lock();
        if a.committed_map.contains(&id) {
            return Err(corrupt(
                format!("page {id}"),
                "the log frees a page of the free-space map",
            ));
        }
        a.free.insert(id);
        Ok(())
    }

    /// Recovery: the file had grown to `count` pages before a logged commit. The growth
    /// was synced before any page in it was used, so the file must be that long.
    pub fn recover_page_count(&self, count: u64) -> Result<()> {
        let mut a = self.alloc.lock();
        if count <= a.page_count {
            return Ok(());
        }
        let needed = page_offset(count, self.page_size)?;
        let len = self
            .file
            .len()
            .map_err(|e| io_err("reading length of", &self.path, e))?;
        if len < needed {
            return Err(corrupt(
                format!("page {count}"),
                format!("the log records {count} pages but the file holds {len} bytes"),
            ));
        }
        let old = a.page_count;
        a.free.grow_to(count);
        for id in old..count {
            a.free.insert(id);
        }
        a.page_count = count;
        self.page_count.store(count, Ordering::Release);
        Ok(())
    }

    /// Makes pending frees reusable now. Only for a caller whose log can restore any page
    /// the committed state still references (see the module invariants).
    pub fn release_pending(&self) {
        let mut a = self.alloc.lock();
        let pending = std::mem::take(&mut a.pending);
        for id in pending {
            a.free.insert(id);
        }
    }

    /// Atomically replaces the committed state: writes a new free-space map, syncs every
    /// page written so far, then writes and syncs the superblock in the other slot.
    ///
    /// Allocation and frees may continue during the commit; those after its snapshot
    /// belong to the next one.
    pub fn commit(&self, info: CommitInfo) -> Result<Superblock> {
        self.check_poison()?;
        for &r in &info.roots {
            self.check_id(r)
                .or_else(|e| if r == 0 { Ok(()) } else { Err(e) })?;
        }
        let _serial = self.commit_lock.lock();
        let (map, image, snapshot_pending, old_map, sb) = {
            let mut a = self.alloc.lock();
            if info.truncate {
                truncate_free_tail(&mut a);
                self.page_count.store(a.page_count, Ordering::Release);
            }
            let (map, page_count) = loop {
                let needed = free_map_pages_needed(a.page_count, self.page_size);
                let mut map = Vec::new();
                while (map.len() as u64) < needed {
                    match a.free.take_lowest() {
                        Some(id) => map.push(id),
                        None => break,
                    }
                }
                if map.len() as u64 == needed {
                    break (map, a.page_count);
                }
                for id in map {
                    a.free.insert(id);
                }
                self.grow(&mut a)?;
            };
            // The committed image: free now, plus what becomes free once the superblock
            // switches (pending frees and the old map's pages).
            let mut image = a.free.clone();
            image.grow_to(page_count);
            for &id in a.pending.iter().chain(a.committed_map.iter()) {
                image.insert(id);
            }
            let sb = Superblock {
                page_size: self.page_size as u32,
                sequence: a.committed.sequence + 1,
                page_count,
                checkpoint_lsn: info.checkpoint_lsn,
                free_root: map[0],
                free_pages: image.count,
                roots: info.roots,
                clean_close: info.clean_close,
            };
            (map, image, a.pending.len(), a.committed_map.clone(), sb)
        };
        let written = (|| {
            write_free_map(
                self.file.as_ref(),
                &self.path,
                self.page_size,
                &map,
                sb.page_count,
                &image,
            )?;
            self.file
                .sync_data()
                .map_err(|e| io_err("syncing", &self.path, e))?;
            let slot = self.superblock().next_slot();
            self.file
                .write_all_at(&sb.encode(), SUPERBLOCK_OFFSETS[slot])
                .map_err(|e| io_err(&format!("writing superblock {slot} of"), &self.path, e))?;
            self.file
                .sync_data()
                .map_err(|e| io_err("syncing superblock of", &self.path, e))
        })();
        written.map_err(|e| self.poison(e))?;
        let mut a = self.alloc.lock();
        let upto = snapshot_pending.min(a.pending.len());
        let released: Vec<PageId> = a.pending.drain(..upto).collect();
        for id in released.into_iter().chain(old_map) {
            a.free.insert(id);
        }
        a.committed = sb.clone();
        a.committed_map = map;
        Ok(sb)
    }

    /// Truncates the file to the allocator's page count, after a commit with `truncate`
    /// made the shorter count durable. Cuts in steps of 64 MiB, each under the
    /// allocator lock (a growth meanwhile raises the page count and is never cut), so an
    /// allocation waits for one short step at most; then syncs.
    pub fn cut_to_page_count(&self) -> Result<()> {
        loop {
            let a = self.alloc.lock();
            let keep = page_offset(a.page_count, self.page_size)?;
            let now = self
                .file
                .len()
                .map_err(|e| io_err("reading length of", &self.path, e))?;
            if now <= keep {
                break;
            }
            self.file
                .set_len(keep.max(now.saturating_sub(CUT_STEP)))
                .map_err(|e| self.poison(io_err("truncating", &self.path, e)))?;
        }
        self.file
            .sync_data()
            .map_err(|e| self.poison(io_err("syncing", &self.path, e)))
    }

    /// The file layer this page file lives on.
    pub fn file_system(&self) -> &Arc<dyn FileSystem> {
        &self.fs
    }
}

/// Drops the free pages at the end of the file from the allocator (not those of the
/// committed free-map, which the committed superblock still references).
fn truncate_free_tail(a: &mut Allocator) {
    let mut keep = a.page_count;
    while keep > 1 && a.free.contains(keep - 1) && !a.committed_map.contains(&(keep - 1)) {
        keep -= 1;
    }
    for id in keep..a.page_count {
        a.free.remove(id);
    }
    a.page_count = keep;
}

/// Pages the free-space map of a file of `page_count` pages needs.
fn free_map_pages_needed(page_count: u64, page_size: usize) -> u64 {
    page_count.div_ceil(free_map_bits_per_page(page_size))
}

/// Writes the chain of free-map pages `map` describing `free` for `page_count` pages.
fn write_free_map(
    file: &dyn FileHandle,
    path: &Path,
    page_size: usize,
    map: &[PageId],
    page_count: u64,
    free: &FreeBitmap,
) -> Result<()> {
    let per_page = free_map_bits_per_page(page_size);
    let mut page = vec![0u8; page_size];
    for (i, &id) in map.iter().enumerate() {
        page.fill(0);
        init_header(&mut page, PageType::FreeMap, 0);
        let first = i as u64 * per_page;
        let bits = per_page.min(page_count.saturating_sub(first));
        let next = map.get(i + 1).copied().unwrap_or(0);
        encode_free_map(
            &mut page,
            FreeMapPage {
                next,
                first_page: first,
                bits,
            },
        );
        for b in 0..bits {
            if free.contains(first + b) {
                page[FREE_MAP_DATA + (b / 8) as usize] |= 1 << (b % 8);
            }
        }
        seal_page(id, &mut page);
        file.write_all_at(&page, page_offset(id, page_size)?)
            .map_err(|e| io_err(&format!("writing free-map page {id} of"), path, e))?;
    }
    Ok(())
}

/// Reads and validates the free-map chain of `sb`; returns the free set and the map pages.
fn read_free_map(file: &dyn FileHandle, sb: &Superblock) -> Result<(FreeBitmap, Vec<PageId>)> {
    let page_size = sb.page_size as usize;
    let per_page = free_map_bits_per_page(page_size);
    let needed = free_map_pages_needed(sb.page_count, page_size);
    let mut free = FreeBitmap::with_pages(sb.page_count);
    let mut map = Vec::new();
    let mut page = vec![0u8; page_size];
    let mut id = sb.free_root;
    for i in 0..needed {
        if id == 0 || id >= sb.page_count || map.contains(&id) {
            return Err(corrupt(
                format!("free-map page {i} (page {id})"),
                format!(
                    "bad link in the free-space map chain (page count {})",
                    sb.page_count
                ),
            ));
        }
        file.read_exact_at(&mut page, page_offset(id, page_size)?)
            .map_err(|e| Error::io(format!("reading free-map page {id} of {PAGE_DB}"), e))?;
        let header = verify_page(id, &page)?;
        if header.page_type != PageType::FreeMap {
            return Err(corrupt(
                format!("page {id}"),
                format!("expected a free-map page, found {:?}", header.page_type),
            ));
        }
        let fm = decode_free_map(id, &page)?;
        let first = i * per_page;
        let expect_bits = per_page.min(sb.page_count - first);
        if fm.first_page != first || fm.bits != expect_bits {
            return Err(corrupt(
                format!("page {id}"),
                format!(
                    "free-map page covers {} bits from page {}, expected {expect_bits} from {first}",
                    fm.bits, fm.first_page
                ),
            ));
        }
        for b in 0..fm.bits {
            if page[FREE_MAP_DATA + (b / 8) as usize] & (1 << (b % 8)) != 0 {
                free.insert(first + b);
            }
        }
        map.push(id);
        id = fm.next;
    }
    if id != 0 {
        return Err(corrupt(
            format!("page {}", map.last().copied().unwrap_or(0)),
            "free-space map chain is longer than the page count needs",
        ));
    }
    if free.contains(0) || map.iter().any(|&m| free.contains(m)) {
        return Err(corrupt(
            "free-space map",
            "page 0 or a free-map page is marked free",
        ));
    }
    if free.count != sb.free_pages {
        return Err(corrupt(
            "free-space map",
            format!(
                "{} free pages in the map, superblock records {}",
                free.count, sb.free_pages
            ),
        ));
    }
    Ok((free, map))
}
