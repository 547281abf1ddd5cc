//! Online copy of the kernel's files for a backup: page.db, then the log, then xa.log, while
//! commits continue.
//!
//! Invariants (crash argument in docs/design.md, "Backup and restore"): the checkpoint lock
//! is held for the whole copy, so the superblock, xa.log and the log's generation do not
//! change. page.db is copied first, fuzzily (pages written during the copy may be newer or
//! torn); the log is copied after it, so it holds every frame whose changes any copied page
//! carries (the WAL rule) and the full image that starts each changed page's redo chain
//! since the checkpoint. The copy is therefore a crash image of the store, and opening it
//! runs recovery like any crash.

use std::path::Path;

use super::Shared;
use crate::error::{Error, Result};
use crate::file::{FileSystem, OpenMode};
use crate::log::Durability;

/// One copied file: name, length and CRC32 of the copied bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CopiedFile {
    /// File name relative to the store directory.
    pub name: String,
    /// Bytes copied.
    pub len: u64,
    /// CRC32 of the copied bytes.
    pub crc: u32,
}

const CHUNK: u64 = 1 << 20;
/// The copy syncs after every this many bytes (a multiple of `CHUNK`).
const SYNC_EVERY: u64 = 32 * CHUNK;

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", p.display()), e)
}

/// How fast [`copy_file`] may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// An online backup beside a running broker: idles as long as each 32 MiB took, so the
    /// copy uses about half the disk.
    Shared,
    /// Nothing else uses the disk (restore): full speed.
    Full,
}

/// Copies `from` to `to` (created, must not exist) through `fs`, following the source while
/// it grows, and syncs the copy (every 32 MiB, and at the end).
pub fn copy_file(
    fs: &dyn FileSystem,
    from: &Path,
    to: &Path,
    name: &str,
    pace: Pace,
) -> Result<CopiedFile> {
    let src = fs
        .open(from, OpenMode::Existing)
        .map_err(|e| io("opening", from, e))?;
    let dst = fs
        .open(to, OpenMode::CreateNew)
        .map_err(|e| io("creating", to, e))?;
    let mut crc = crc32fast::Hasher::new();
    let mut at = 0u64;
    let mut buf = vec![0u8; CHUNK as usize];
    let mut stretch = std::time::Instant::now();
    loop {
        let len = src.len().map_err(|e| io("reading length of", from, e))?;
        if at >= len {
            break;
        }
        while at < len {
            let n = (len - at).min(CHUNK) as usize;
            src.read_exact_at(&mut buf[..n], at)
                .map_err(|e| io("reading", from, e))?;
            dst.write_all_at(&buf[..n], at)
                .map_err(|e| io("writing", to, e))?;
            crc.update(&buf[..n]);
            at += n as u64;
            if at % SYNC_EVERY == 0 {
                // Bounds the dirty data the copy leaves to the OS: one sync of a whole
                // 1 GiB copy at the end would queue every committer's fsync behind it.
                dst.sync_data().map_err(|e| io("syncing", to, e))?;
                if pace == Pace::Shared {
                    // Idles as long as the stretch took: committers keep half the disk.
                    std::thread::sleep(stretch.elapsed());
                }
                stretch = std::time::Instant::now();
            }
        }
    }
    dst.sync_all().map_err(|e| io("syncing", to, e))?;
    Ok(CopiedFile {
        name: name.to_string(),
        len: at,
        crc: crc.finalize(),
    })
}

/// Extends the copy at `to` (described by `copied`) with zeros up to `len` bytes, keeping
/// its length and CRC in `copied` current, and syncs it. Does nothing if it is that long.
fn extend_with_zeros(
    fs: &dyn FileSystem,
    to: &Path,
    copied: &mut CopiedFile,
    len: u64,
) -> Result<()> {
    if len <= copied.len {
        return Ok(());
    }
    let dst = fs
        .open(to, OpenMode::Existing)
        .map_err(|e| io("opening", to, e))?;
    let zeros = vec![0u8; CHUNK as usize];
    let mut crc = crc32fast::Hasher::new_with_initial_len(copied.crc, copied.len);
    let mut at = copied.len;
    while at < len {
        let n = (len - at).min(CHUNK) as usize;
        dst.write_all_at(&zeros[..n], at)
            .map_err(|e| io("writing", to, e))?;
        crc.update(&zeros[..n]);
        at += n as u64;
    }
    dst.sync_all().map_err(|e| io("syncing", to, e))?;
    copied.len = len;
    copied.crc = crc.finalize();
    Ok(())
}

impl Shared {
    /// Copies page.db, transaction.log and xa.log (if any) into `target` (an existing,
    /// empty directory) while commits continue.
    pub(crate) fn backup_copy(
        &self,
        fs: &dyn FileSystem,
        target: &Path,
    ) -> Result<Vec<CopiedFile>> {
        let _no_checkpoint = self.checkpoint_lock.lock();
        self.poison.check()?;
        let mut out = Vec::new();
        let db = crate::page::PAGE_DB;
        let log = crate::log::frame::LOG_FILE;
        let mut db_copy = copy_file(fs, &self.dir.join(db), &target.join(db), db, Pace::Shared)?;
        // Frames appended but not yet written are in no page of the copy (WAL rule), but
        // writing them makes the copy as recent as it can be.
        self.log.flush(self.log.last_lsn(), Durability::Flush)?;
        let log_copy = copy_file(
            fs,
            &self.dir.join(log),
            &target.join(log),
            log,
            Pace::Shared,
        )?;
        // Commits during the copy may have grown page.db past the copied length, and the
        // copied log then records that growth. Recovery requires the file to be as long as
        // the log says (growth is synced before use), so the copy is extended with zeros to
        // the length page.db has now, which is at least what any copied frame records.
        // Every page in the extension was first written after the checkpoint, so the copied
        // log holds its full image whenever a copied frame uses it (regression:
        // backup_while_page_db_grows_between_the_copies).
        let live = fs
            .open(&self.dir.join(db), OpenMode::Existing)
            .and_then(|f| f.len())
            .map_err(|e| io("reading length of", &self.dir.join(db), e))?;
        extend_with_zeros(fs, &target.join(db), &mut db_copy, live)?;
        out.push(db_copy);
        out.push(log_copy);
        let xa = self.dir.join(crate::xalog::XA_LOG);
        if fs.exists(&xa).map_err(|e| io("checking for", &xa, e))? {
            out.push(copy_file(
                fs,
                &xa,
                &target.join(crate::xalog::XA_LOG),
                crate::xalog::XA_LOG,
                Pace::Shared,
            )?);
        }
        Ok(out)
    }
}
