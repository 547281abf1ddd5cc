//! The real file layer: `std::fs` with positional I/O, fs2 locks and preallocation.
//!
//! Invariant: a directory sync opens the directory and fsyncs it, so creates, renames and
//! removes inside it are durable when `sync_dir` returns (POSIX semantics on Linux).

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use fs2::FileExt as _;

use super::{FileHandle, FileSystem, LockGuard, OpenMode};

/// The operating system's file system.
#[derive(Debug, Default, Clone, Copy)]
pub struct RealFs;

impl RealFs {
    /// The real file layer.
    pub fn new() -> Self {
        RealFs
    }
}

#[derive(Debug)]
struct RealFile {
    file: File,
}

impl FileHandle for RealFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.file.read_exact_at(buf, offset)
    }
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.file.write_all_at(buf, offset)
    }
    fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }
    fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
    fn len(&self) -> io::Result<u64> {
        Ok(self.file.metadata()?.len())
    }
    fn set_len(&self, len: u64) -> io::Result<()> {
        self.file.set_len(len)
    }
    fn allocate(&self, len: u64) -> io::Result<()> {
        if self.len()? >= len {
            return Ok(());
        }
        // fs2's allocate reserves blocks (posix_fallocate) and extends the length; some
        // file systems refuse it, and then plain extension is the portable fallback.
        match self.file.allocate(len) {
            Ok(()) => Ok(()),
            Err(_) => self.file.set_len(len),
        }
    }
}

#[derive(Debug)]
struct RealLock {
    file: File,
}

impl LockGuard for RealLock {}

impl Drop for RealLock {
    fn drop(&mut self) {
        // Closing the descriptor releases the lock anyway; an unlock error changes nothing.
        let _ = fs2::FileExt::unlock(&self.file);
    }
}

impl FileSystem for RealFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let mut o = OpenOptions::new();
        o.read(true).write(true);
        match mode {
            OpenMode::Existing => {}
            OpenMode::Create => {
                o.create(true);
            }
            OpenMode::CreateNew => {
                o.create_new(true);
            }
        }
        Ok(Arc::new(RealFile {
            file: o.open(path)?,
        }))
    }
    #[cfg(target_os = "linux")]
    fn open_direct(&self, path: &Path) -> io::Result<Option<Arc<dyn FileHandle>>> {
        use std::os::unix::fs::OpenOptionsExt;
        let file = match OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
        {
            Ok(f) => f,
            // The file system refuses O_DIRECT (tmpfs on older kernels, some FUSE mounts).
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => return Ok(None),
            Err(e) => return Err(e),
        };
        // Probe the granularity with a read: a device whose logical blocks are larger than
        // DIRECT_BLOCK refuses it (EINVAL), and then the caller stays buffered.
        let mut probe = vec![0u8; 2 * super::DIRECT_ALIGN];
        let at = probe.as_ptr().align_offset(super::DIRECT_ALIGN);
        let block = &mut probe[at..at + super::DIRECT_BLOCK as usize];
        match file.read_at(block, 0) {
            Ok(_) => Ok(Some(Arc::new(RealFile { file }))),
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok(None),
            Err(e) => Err(e),
        }
    }
    fn exists(&self, path: &Path) -> io::Result<bool> {
        path.try_exists()
    }
    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        fs::create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let mut names = Vec::new();
        for entry in fs::read_dir(path)? {
            names.push(entry?.file_name().to_string_lossy().into_owned());
        }
        names.sort();
        Ok(names)
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        fs::rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> io::Result<()> {
        fs::remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        fs::remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        File::open(path)?.sync_all()
    }
    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)?;
        match file.try_lock_exclusive() {
            Ok(()) => Ok(Box::new(RealLock { file })),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.raw_os_error().is_some() => {
                Err(io::Error::new(
                    io::ErrorKind::WouldBlock,
                    format!("{} is locked: {e}", path.display()),
                ))
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positional_io_len_and_lock() {
        let dir = tempfile::tempdir().unwrap();
        let fs = RealFs::new();
        let p = dir.path().join("f");
        let f = fs.open(&p, OpenMode::CreateNew).unwrap();
        assert!(fs.open(&p, OpenMode::CreateNew).is_err());
        f.write_all_at(b"hello", 10).unwrap();
        assert_eq!(f.len().unwrap(), 15);
        let mut b = [0u8; 5];
        f.read_exact_at(&mut b, 10).unwrap();
        assert_eq!(&b, b"hello");
        assert!(f.read_exact_at(&mut b, 12).is_err());
        f.allocate(4096).unwrap();
        assert_eq!(f.len().unwrap(), 4096);
        f.allocate(100).unwrap();
        assert_eq!(f.len().unwrap(), 4096, "allocate never shrinks");
        f.sync_all().unwrap();
        fs.sync_dir(dir.path()).unwrap();
        fs.rename(&p, &dir.path().join("g")).unwrap();
        assert_eq!(fs.read_dir(dir.path()).unwrap(), vec!["g".to_string()]);
        let l = fs.lock(&dir.path().join("LOCK")).unwrap();
        let e = fs.lock(&dir.path().join("LOCK")).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::WouldBlock);
        drop(l);
        fs.lock(&dir.path().join("LOCK")).unwrap();
    }
}
