//! Swap files: the on-disk overflow of non-persistent queues.
//!
//! Owns: the `<store>/swap/` directory and every file in it ([`SwapDir`]), one set of
//! `<escaped queue>-<file number>.swap` files per open [`SwapQueue`], the record format
//! (`record`) and the file-name escaping (`name`).
//!
//! Invariants:
//! - Nothing in `swap/` survives a restart: [`SwapDir::open`] deletes whatever it finds
//!   there (files, directories, partial records) and dropping a [`SwapQueue`] deletes its
//!   files. Nothing is ever fsynced: the data is not persistent.
//! - File names are built only from `[A-Za-z0-9_%-]`, so no queue name can make a path
//!   leave `swap/`; file numbers come from one counter per [`SwapDir`] and are never
//!   reused while it lives, so two queues never share a file and a pointer into a deleted
//!   file can never reach a newer one.
//! - At most one [`SwapQueue`] per queue name exists at a time.
//! - Every record carries a header CRC (covering its file number and offset, the state and
//!   the delivery count and the payload's CRC) and a payload CRC; `read`, `update` and
//!   `remove` validate before use, and no buffer is sized from an unchecked length.
//! - Memory is O(files) per queue plus two fixed-size buffers (append buffer and read
//!   window), never O(records): each file keeps only a live-record count.
//!
//! See `docs/design.md`, "Swap files".

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use crate::error::{Error, Result};
use crate::file::FileSystem;

mod fuzz;
mod name;
mod queue;
mod record;

#[doc(hidden)]
pub use fuzz::fuzz_swap_file;
pub use queue::SwapQueue;

/// Where a swap record is: the swap file's number and the record's byte offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SwapPointer {
    /// The file number (unique among the files of one [`SwapDir`]).
    pub file: u32,
    /// Byte offset of the record's header in the file.
    pub offset: u64,
}

/// A record read back from a swap file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapRecord {
    /// The payload as appended.
    pub payload: Vec<u8>,
    /// The delivery count as last set.
    pub delivery_count: u32,
}

/// State shared by a [`SwapDir`] and its queues.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) fs: Arc<dyn FileSystem>,
    /// `<store>/swap`.
    pub(crate) dir: PathBuf,
    pub(crate) roll_over_size: u64,
    /// Names of the queues with a live [`SwapQueue`].
    names: Mutex<HashSet<String>>,
    /// The next file number to hand out.
    next_file: AtomicU32,
}

impl Shared {
    /// A fresh file number; never the same twice for one `SwapDir`.
    pub(crate) fn next_file_number(&self) -> Result<u32> {
        self.next_file
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_add(1))
            .map_err(|_| {
                Error::io(
                    "numbering a new swap file",
                    io::Error::other(
                        "all 2^32 swap file numbers of this store are used; reopen the store",
                    ),
                )
            })
    }

    /// Frees `name` for a new [`SwapQueue`].
    pub(crate) fn release(&self, name: &str) {
        self.names.lock().remove(name);
    }
}

/// The swap directory of a store, `<store>/swap/`: hands out one [`SwapQueue`] per queue
/// name.
///
/// `Send + Sync`; queues may outlive it.
pub struct SwapDir {
    shared: Arc<Shared>,
}

impl fmt::Debug for SwapDir {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SwapDir")
            .field("dir", &self.shared.dir)
            .field("roll_over_size", &self.shared.roll_over_size)
            .finish()
    }
}

/// Deepest directory nesting `SwapDir::open` descends into when clearing leftovers.
const MAX_LEFTOVER_DEPTH: usize = 16;

fn io_err(what: &str, path: &Path, e: io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// Deletes `path`, a file or a directory tree.
fn remove_any(fs: &dyn FileSystem, path: &Path, depth: usize) -> Result<()> {
    let file_err = match fs.remove_file(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound && !fs.exists(path).unwrap_or(true) => {
            return Ok(())
        }
        Err(e) => e,
    };
    // Not a removable file: a directory, then.
    let Ok(entries) = fs.read_dir(path) else {
        return Err(io_err("deleting leftover swap file", path, file_err));
    };
    if depth >= MAX_LEFTOVER_DEPTH {
        return Err(io_err("deleting leftover swap directory", path, file_err));
    }
    for entry in entries {
        remove_any(fs, &path.join(entry), depth + 1)?;
    }
    fs.remove_dir(path)
        .map_err(|e| io_err("deleting leftover swap directory", path, e))
}

impl SwapDir {
    /// Opens the swap directory `<store_dir>/swap/`: creates it if missing (and the store
    /// directory with it) and deletes everything in it, since no swap data survives a
    /// restart. Leftovers of any shape (partial records, junk files, directories, a file
    /// where the directory should be) are deleted, so a crash never makes this fail; only
    /// an I/O error does.
    ///
    /// Files roll over to a new one when the active file reaches `roll_over_size` bytes
    /// (the store passes `StoreConfig::swap_roll_over_size`; 0 puts every record in a file
    /// of its own).
    pub fn open(fs: Arc<dyn FileSystem>, store_dir: &Path, roll_over_size: u64) -> Result<SwapDir> {
        let dir = store_dir.join("swap");
        if let Err(first) = fs.create_dir_all(&dir) {
            // A file (or anything else) where the directory belongs: delete it and retry.
            if remove_any(fs.as_ref(), &dir, 0).is_err() {
                return Err(io_err("creating swap directory", &dir, first));
            }
            fs.create_dir_all(&dir)
                .map_err(|e| io_err("creating swap directory", &dir, e))?;
        }
        let entries = fs
            .read_dir(&dir)
            .map_err(|e| io_err("listing swap directory", &dir, e))?;
        for entry in entries {
            remove_any(fs.as_ref(), &dir.join(entry), 0)?;
        }
        Ok(SwapDir {
            shared: Arc::new(Shared {
                fs,
                dir,
                roll_over_size,
                names: Mutex::new(HashSet::new()),
                next_file: AtomicU32::new(0),
            }),
        })
    }

    /// The swap queue for queue `name` (any string). Only one may exist per name at a
    /// time: while one lives, another call with the same name is
    /// [`Error::InvalidArgument`]; dropping it frees the name (and deletes its files).
    pub fn queue(&self, name: &str) -> Result<SwapQueue> {
        {
            let mut names = self.shared.names.lock();
            if !names.insert(name.to_string()) {
                return Err(Error::invalid_argument(format!(
                    "swap queue `{name}` is already open; drop it before opening it again"
                )));
            }
        }
        Ok(SwapQueue::new(Arc::clone(&self.shared), name))
    }

    /// The directory this owns, `<store>/swap`.
    pub fn path(&self) -> &Path {
        &self.shared.dir
    }
}
