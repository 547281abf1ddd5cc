//! The file layer: the one seam through which ALL engine I/O goes.
//!
//! Owns: the [`FileSystem`] and [`FileHandle`] traits, the real implementation
//! ([`RealFs`]: std + fs2 locks and preallocation) and the simulated one ([`SimFs`]:
//! in-memory, with TESTING.md's crash and fault model).
//!
//! Invariants: the engine never touches `std::fs` directly; it only sees these traits, so
//! every crash test can run the engine unchanged on the simulator. Calls return
//! `std::io::Result`; the engine wraps failures into `Error::Io` with context. Nothing in
//! this layer knows about pages, logs or records.

use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

mod real;
mod sim;

pub use real::RealFs;
pub use sim::{CrashOutcome, SimFs};

/// Memory alignment that [`FileSystem::open_direct`] handles need for their buffers.
pub const DIRECT_ALIGN: usize = 4096;

/// Offset and length granularity of [`FileSystem::open_direct`] writes: the smallest
/// logical block size; a device with larger blocks gets no direct handle.
pub const DIRECT_BLOCK: u64 = 512;

/// How [`FileSystem::open`] treats a missing or existing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpenMode {
    /// The file must exist.
    Existing,
    /// Open it, creating an empty file if missing.
    Create,
    /// Create it; fail with `AlreadyExists` if it exists.
    CreateNew,
}

/// An open file: positional reads and writes, sync, length.
///
/// Every method may fail; the simulated layer fails them on purpose. Implementations are
/// shared between threads (`&self` everywhere).
pub trait FileHandle: Send + Sync + Debug {
    /// Reads exactly `buf.len()` bytes at `offset`; `UnexpectedEof` if the file is shorter.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`, extending the file if needed (not durable until sync).
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the data and the length durable (fdatasync).
    fn sync_data(&self) -> io::Result<()>;
    /// Makes data, length and metadata durable (fsync).
    fn sync_all(&self) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// True when the file is empty.
    fn is_empty(&self) -> io::Result<bool> {
        Ok(self.len()? == 0)
    }
    /// Truncates or extends (with zeros) to `len` bytes (not durable until sync).
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Reserves disk space so the file is at least `len` bytes long (zeros), as
    /// `fallocate` does; the growth is not durable until sync.
    fn allocate(&self, len: u64) -> io::Result<()>;
}

/// A held exclusive lock; dropping it releases the lock.
pub trait LockGuard: Send + Sync + Debug {}

/// Files and directories.
pub trait FileSystem: Send + Sync + Debug {
    /// Opens (or creates, per `mode`) a file for reading and writing.
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>>;
    /// Opens an existing file a second time for unbuffered writes (`O_DIRECT`): each write
    /// goes to the device at once, without a copy into the OS cache, and a later
    /// `sync_data` only has to flush the device's cache. Every buffer handed to it must
    /// start on a [`DIRECT_ALIGN`] address, and every offset and length must be a multiple
    /// of [`DIRECT_BLOCK`]. `None` where the platform or the file system cannot do it (the
    /// caller then writes through its buffered handle); the default is `None`.
    fn open_direct(&self, path: &Path) -> io::Result<Option<Arc<dyn FileHandle>>> {
        let _ = path;
        Ok(None)
    }
    /// True if a file or directory exists at `path`.
    fn exists(&self, path: &Path) -> io::Result<bool>;
    /// Creates a directory and its missing parents (entries not durable until `sync_dir`
    /// of each parent).
    fn create_dir_all(&self, path: &Path) -> io::Result<()>;
    /// Names (not paths) of the entries of a directory, sorted.
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>>;
    /// Renames a file, replacing `to` atomically if it exists (durable after `sync_dir`).
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Removes a file (durable after `sync_dir`).
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Removes an empty directory (durable after `sync_dir` of its parent).
    fn remove_dir(&self, path: &Path) -> io::Result<()>;
    /// Makes the entries of a directory (creates, renames, removes) durable.
    fn sync_dir(&self, path: &Path) -> io::Result<()>;
    /// Takes an exclusive lock on the file at `path` (created if missing). Fails with
    /// `io::ErrorKind::WouldBlock` if another holder (this or another process) has it.
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>>;
}

/// Creates `path` as a new, empty file, first removing a stale one a crash left behind
/// (temp files that are renamed into place once complete).
pub fn create_fresh(fs: &dyn FileSystem, path: &Path) -> io::Result<Arc<dyn FileHandle>> {
    if fs.exists(path)? {
        fs.remove_file(path)?;
    }
    fs.open(path, OpenMode::CreateNew)
}

/// The parent directory of `path` (`.` for a bare name), for directory syncs.
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Removes the directory `path` and everything under it (not durable until `sync_dir` of
/// its parent). Used for the rewrite directory a crash left behind.
pub fn remove_tree(fs: &dyn FileSystem, path: &Path) -> io::Result<()> {
    for name in fs.read_dir(path)? {
        let p = path.join(&name);
        if let Err(e) = fs.remove_file(&p) {
            // Not a file: a directory (or a real failure, which the recursion reports).
            if fs.read_dir(&p).is_err() {
                return Err(e);
            }
            remove_tree(fs, &p)?;
        }
    }
    fs.remove_dir(path)
}
