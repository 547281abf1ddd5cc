//! One queue's swap files: appends through a write buffer, reads through a read window.
//!
//! Owns: the queue's files (handle, bytes on disk, live-record count), the append buffer of
//! the active file and one read window (a cached range of one file).
//!
//! Invariants:
//! - A file's logical length is its bytes on disk plus, for the active file only, the
//!   append buffer; the buffer holds whole records and starts exactly at the disk length.
//! - The window caches bytes below its file's disk length only, so it never overlaps the
//!   append buffer; its bytes equal the disk's except in its dirty range, which is written
//!   back before anything reads that range from disk and before the window moves. Direct
//!   writes that overlap it patch it too.
//! - `live` counts the file's records not yet removed; a file other than the active one is
//!   deleted when its count reaches 0.

use std::collections::BTreeMap;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

use crate::error::{Error, Result};
use crate::file::{FileHandle, OpenMode};

use super::name::file_prefix;
use super::record::{payload_crc, Header, HEADER_LEN, HEADER_LEN64, MAGIC, MAX_PAYLOAD};
use super::{Shared, SwapPointer, SwapRecord};

/// Appends are buffered up to this many bytes and written in one call; larger records are
/// written directly.
pub(crate) const WRITE_CHUNK: usize = 256 * 1024;
/// Read-window size for sequential access.
const WINDOW_MAX: usize = 256 * 1024;
/// Read-window size for a jump (random access).
const WINDOW_MIN: usize = 8 * 1024;

/// One swap file of the queue.
#[derive(Debug)]
struct SwapFile {
    handle: Arc<dyn FileHandle>,
    path: PathBuf,
    /// `swap/<file name>`, for error reports.
    display: String,
    /// Bytes written to the file.
    disk_len: u64,
    /// Records not yet removed.
    live: u64,
}

/// A cached range `[start, start + data.len())` of one file, below its disk length.
#[derive(Debug)]
struct Window {
    file: u32,
    start: u64,
    data: Vec<u8>,
    /// Range of `data` changed since it was read, as `(lo, hi)`.
    dirty: Option<(usize, usize)>,
}

impl Window {
    fn end(&self) -> u64 {
        self.start + self.data.len() as u64
    }
}

/// The swap storage of one queue: append payloads, read, update and remove them by
/// [`SwapPointer`].
///
/// `Send`. Appends are buffered in memory and written in large chunks (nothing is ever
/// fsynced: swap data does not survive a restart); reads are served from that buffer or a
/// read window. Dropping it deletes all of its files and frees its name in the
/// [`SwapDir`](super::SwapDir).
#[derive(Debug)]
pub struct SwapQueue {
    shared: Arc<Shared>,
    name: String,
    prefix: String,
    files: BTreeMap<u32, SwapFile>,
    /// The file appends go to.
    active: Option<u32>,
    /// Unwritten tail of the active file.
    buf: Vec<u8>,
    window: Option<Window>,
    /// Where the previous window ended `(file, end)`, to detect sequential reads.
    last_window_end: Option<(u32, u64)>,
    /// Drained files whose delete failed (retried at drop). Normally empty.
    undeleted: Vec<PathBuf>,
}

fn u64_of(n: usize) -> u64 {
    n as u64
}

/// `b - a` as a `usize` (callers guarantee `a <= b` and a small difference).
fn span(a: u64, b: u64) -> usize {
    usize::try_from(b.saturating_sub(a)).unwrap_or(usize::MAX)
}

impl SwapQueue {
    pub(crate) fn new(shared: Arc<Shared>, name: &str) -> SwapQueue {
        SwapQueue {
            shared,
            name: name.to_string(),
            prefix: file_prefix(name),
            files: BTreeMap::new(),
            active: None,
            buf: Vec::new(),
            window: None,
            last_window_end: None,
            undeleted: Vec::new(),
        }
    }

    /// The queue name this swap queue belongs to.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of swap files this queue has now (the active one included, and any
    /// drained file whose delete failed).
    pub fn file_count(&self) -> usize {
        self.files.len() + self.undeleted.len()
    }

    /// Appends a record and returns where it is. The record may stay in memory until the
    /// append buffer fills (or [`SwapQueue::flush`]); reads see it either way. A payload
    /// over 1 GiB is [`Error::TooLarge`].
    pub fn append(&mut self, payload: &[u8], delivery_count: u32) -> Result<SwapPointer> {
        let len = u64_of(payload.len());
        if len > MAX_PAYLOAD {
            return Err(Error::TooLarge {
                size: len,
                max: MAX_PAYLOAD,
            });
        }
        let file = self.active_for_append()?;
        let offset = self.logical_len(file);
        let Some(end) = offset.checked_add(HEADER_LEN64 + len) else {
            return Err(Error::invalid_argument("swap file offset overflows u64"));
        };
        let header = Header {
            live: true,
            len: len as u32, // <= MAX_PAYLOAD < 2^32
            delivery_count,
            payload_crc: payload_crc(payload),
        }
        .encode(file, offset);
        let rec_len = HEADER_LEN + payload.len();
        if rec_len <= WRITE_CHUNK {
            if self.buf.len() + rec_len > WRITE_CHUNK {
                self.flush_buffer()?;
            }
            if self.buf.capacity() < WRITE_CHUNK {
                self.buf.reserve_exact(WRITE_CHUNK - self.buf.len());
            }
            self.buf.extend_from_slice(&header);
            self.buf.extend_from_slice(payload);
        } else {
            self.flush_buffer()?;
            let f = self.file(file)?;
            let handle = Arc::clone(&f.handle);
            let ctx = || format!("appending to {}", f.display);
            handle
                .write_all_at(&header, offset)
                .map_err(|e| Error::io(ctx(), e))?;
            handle
                .write_all_at(payload, offset + HEADER_LEN64)
                .map_err(|e| Error::io(ctx(), e))?;
            self.file_mut(file)?.disk_len = end;
        }
        let f = self.file_mut(file)?;
        f.live = f.live.saturating_add(1);
        Ok(SwapPointer { file, offset })
    }

    /// Reads the record at `p`, validating header and payload checksums.
    ///
    /// A pointer to a removed record, to no record (beyond the end of its file) or into a
    /// file this queue does not have is [`Error::InvalidArgument`]; bytes that fail
    /// validation (including a pointer into the middle of a record) are
    /// [`Error::Corruption`] naming `swap/<file>` and `offset N`.
    pub fn read(&mut self, p: SwapPointer) -> Result<SwapRecord> {
        let h = self.live_header(p)?;
        let len = usize::try_from(h.len)
            .map_err(|_| self.corrupt(p, "payload length exceeds the address space"))?;
        // Bounded: `live_header` checked the length against the file length.
        let mut payload = vec![0u8; len];
        // A new window starts at the record, so the header stays cached for a remove.
        self.read_bytes(p.file, p.offset + HEADER_LEN64, &mut payload, p.offset)?;
        let crc = payload_crc(&payload);
        if crc != h.payload_crc {
            return Err(self.corrupt(
                p,
                &format!(
                    "payload checksum mismatch (stored {:#010x}, computed {crc:#010x})",
                    h.payload_crc
                ),
            ));
        }
        Ok(SwapRecord {
            payload,
            delivery_count: h.delivery_count,
        })
    }

    /// Sets the delivery count of the record at `p` (its header is rewritten in place with
    /// a new checksum). Errors as for [`SwapQueue::read`]; the payload is not re-read.
    pub fn update_delivery_count(&mut self, p: SwapPointer, count: u32) -> Result<()> {
        let h = self.live_header(p)?;
        let new = Header {
            delivery_count: count,
            ..h
        };
        self.write_bytes(p.file, p.offset, &new.encode(p.file, p.offset))
    }

    /// Removes the record at `p` (marks it removed; a second remove is
    /// [`Error::InvalidArgument`]). When this was the last live record of a file that is
    /// not the active (appended-to) file, the file is deleted; the active file is deleted
    /// when it rolls over with nothing live, or when the queue is dropped. Errors as for
    /// [`SwapQueue::read`]. If deleting a drained file fails, the remove still succeeded:
    /// the file stays (and counts in [`SwapQueue::file_count`]) until the queue is dropped
    /// or the store reopens.
    pub fn remove(&mut self, p: SwapPointer) -> Result<()> {
        let h = self.live_header(p)?;
        let dead = Header { live: false, ..h };
        self.write_bytes(p.file, p.offset, &dead.encode(p.file, p.offset))?;
        let f = self.file_mut(p.file)?;
        f.live = f.live.saturating_sub(1);
        if f.live == 0 && self.active != Some(p.file) {
            self.delete_file(p.file);
        }
        Ok(())
    }

    /// Writes buffered appends and header changes cached in the read window to the file
    /// system (no fsync: swap data need not be durable) and drops the read window, so
    /// the next reads go to the files. Appends do this by themselves as the buffer fills;
    /// call it to bound what a process kill loses (nothing survives a restart anyway) or
    /// to make reads see changes made to the files behind the queue's back.
    pub fn flush(&mut self) -> Result<()> {
        self.flush_buffer()?;
        self.write_back()?;
        self.window = None;
        Ok(())
    }

    // ---- files ----

    fn file(&self, n: u32) -> Result<&SwapFile> {
        self.files.get(&n).ok_or_else(|| {
            Error::invalid_argument(format!(
                "swap file {n} does not belong to swap queue `{}` (unknown or already deleted)",
                self.name
            ))
        })
    }

    fn file_mut(&mut self, n: u32) -> Result<&mut SwapFile> {
        match self.files.get_mut(&n) {
            Some(f) => Ok(f),
            None => Err(Error::invalid_argument(format!(
                "swap file {n} does not belong to swap queue `{}` (unknown or already deleted)",
                self.name
            ))),
        }
    }

    fn logical_len(&self, n: u32) -> u64 {
        let disk = self.files.get(&n).map_or(0, |f| f.disk_len);
        if self.active == Some(n) {
            disk + u64_of(self.buf.len())
        } else {
            disk
        }
    }

    fn corrupt(&self, p: SwapPointer, detail: &str) -> Error {
        let file = self.files.get(&p.file).map_or_else(
            || format!("swap/{}-{}.swap", self.prefix, p.file),
            |f| f.display.clone(),
        );
        Error::corruption(file, format!("offset {}", p.offset), detail)
    }

    /// The active file, rolling over to a new one when it reached the roll-over size.
    fn active_for_append(&mut self) -> Result<u32> {
        if let Some(n) = self.active {
            if self.logical_len(n) < self.shared.roll_over_size || self.logical_len(n) == 0 {
                return Ok(n);
            }
        }
        self.flush_buffer()?;
        let n = self.create_file()?;
        if let Some(old) = self.active.replace(n) {
            if self.files.get(&old).is_some_and(|f| f.live == 0) {
                self.delete_file(old);
            }
        }
        Ok(n)
    }

    /// Creates (empty) a new file with a fresh number; not yet active.
    fn create_file(&mut self) -> Result<u32> {
        let n = self.shared.next_file_number()?;
        let file_name = format!("{}-{n}.swap", self.prefix);
        let path = self.shared.dir.join(&file_name);
        let display = format!("swap/{file_name}");
        let ctx = |e| Error::io(format!("creating {display}"), e);
        let handle = self.shared.fs.open(&path, OpenMode::Create).map_err(ctx)?;
        if handle.len().map_err(ctx)? != 0 {
            // A leftover under a fresh number (another store process?): start it empty.
            handle.set_len(0).map_err(ctx)?;
        }
        self.files.insert(
            n,
            SwapFile {
                handle,
                path,
                display,
                disk_len: 0,
                live: 0,
            },
        );
        Ok(n)
    }

    /// Deletes file `n`, which must not be the active file. Pointers into it are unknown
    /// from now on; if the file system refuses the delete, the path is kept and retried
    /// when the queue is dropped (and `SwapDir::open` deletes it in any case).
    fn delete_file(&mut self, n: u32) {
        if self.window.as_ref().is_some_and(|w| w.file == n) {
            self.window = None;
        }
        if self.last_window_end.is_some_and(|(f, _)| f == n) {
            self.last_window_end = None;
        }
        let Some(f) = self.files.remove(&n) else {
            return;
        };
        drop(f.handle);
        if self.shared.fs.remove_file(&f.path).is_err()
            && self.shared.fs.exists(&f.path).unwrap_or(true)
        {
            self.undeleted.push(f.path);
        }
    }

    /// Writes the append buffer to the active file.
    fn flush_buffer(&mut self) -> Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let Some(n) = self.active else {
            self.buf.clear();
            return Ok(());
        };
        let f = self.file(n)?;
        f.handle
            .write_all_at(&self.buf, f.disk_len)
            .map_err(|e| Error::io(format!("writing {}", f.display), e))?;
        let written = u64_of(self.buf.len());
        self.buf.clear();
        let f = self.file_mut(n)?;
        f.disk_len += written;
        Ok(())
    }

    // ---- records ----

    /// The validated header at `p`, which must be live.
    fn live_header(&mut self, p: SwapPointer) -> Result<Header> {
        let len = {
            self.file(p.file)?;
            self.logical_len(p.file)
        };
        let fits = p
            .offset
            .checked_add(HEADER_LEN64)
            .is_some_and(|end| end <= len);
        if !fits {
            return Err(Error::invalid_argument(format!(
                "no swap record at offset {} of file {}: the file holds {len} bytes",
                p.offset, p.file
            )));
        }
        let mut b = [0u8; HEADER_LEN];
        self.read_bytes(p.file, p.offset, &mut b, p.offset)?;
        let h = Header::decode(&b, p.file, p.offset).map_err(|d| self.corrupt(p, &d))?;
        let room = len - p.offset - HEADER_LEN64;
        if u64::from(h.len) > room {
            return Err(self.corrupt(
                p,
                &format!(
                    "payload length {} runs past the end of the file ({room} bytes left)",
                    h.len
                ),
            ));
        }
        if !h.live {
            return Err(Error::invalid_argument(format!(
                "the swap record at offset {} of file {} was removed",
                p.offset, p.file
            )));
        }
        Ok(h)
    }

    // ---- bytes: buffer, window, disk ----

    /// Reads `out.len()` bytes of file `n` at `offset`; the caller checked that the range
    /// lies within the file's logical length. If the window has to move, it moves to
    /// `anchor` (<= `offset`: the start of the record being read).
    fn read_bytes(&mut self, n: u32, offset: u64, out: &mut [u8], anchor: u64) -> Result<()> {
        let disk_len = self.file(n)?.disk_len;
        let end = offset + u64_of(out.len());
        // The part at or past the disk length is in the append buffer.
        let split = span(offset, disk_len.clamp(offset, end));
        let (disk_part, buf_part) = out.split_at_mut(split);
        if !buf_part.is_empty() {
            let from = span(disk_len, offset.max(disk_len));
            let src = if self.active == Some(n) {
                self.buf.get(from..from + buf_part.len())
            } else {
                None
            };
            let Some(src) = src else {
                return Err(Error::invalid_argument("swap read past the buffered data"));
            };
            buf_part.copy_from_slice(src);
        }
        if disk_part.is_empty() {
            return Ok(());
        }
        let anchor = anchor.min(offset);
        let need = span(anchor, offset) + disk_part.len();
        if !self.window_covers(n, offset, disk_part.len()) && need <= WINDOW_MAX {
            self.load_window(n, anchor, need, disk_len)?;
        }
        if let Some(w) = self.window.as_ref().filter(|w| w.file == n) {
            if offset >= w.start && offset + u64_of(disk_part.len()) <= w.end() {
                let from = span(w.start, offset);
                disk_part.copy_from_slice(&w.data[from..from + disk_part.len()]);
                return Ok(());
            }
        }
        // Too large for the window: straight from the file, after writing back anything
        // the window holds for this range.
        if self.window_overlaps_dirty(n, offset, disk_part.len()) {
            self.write_back()?;
        }
        self.pread(n, offset, disk_part)
    }

    /// Writes `data` to file `n` at `offset` (a range the caller validated).
    fn write_bytes(&mut self, n: u32, offset: u64, data: &[u8]) -> Result<()> {
        let disk_len = self.file(n)?.disk_len;
        let end = offset + u64_of(data.len());
        let split = span(offset, disk_len.clamp(offset, end));
        let (disk_part, buf_part) = data.split_at(split);
        if !buf_part.is_empty() {
            let from = span(disk_len, offset.max(disk_len));
            let dst = if self.active == Some(n) {
                self.buf.get_mut(from..from + buf_part.len())
            } else {
                None
            };
            let Some(dst) = dst else {
                return Err(Error::invalid_argument("swap write past the buffered data"));
            };
            dst.copy_from_slice(buf_part);
        }
        if disk_part.is_empty() {
            return Ok(());
        }
        let disk_end = offset + u64_of(disk_part.len());
        if let Some(w) = self.window.as_mut().filter(|w| w.file == n) {
            if offset >= w.start && disk_end <= w.end() {
                let lo = span(w.start, offset);
                let hi = lo + disk_part.len();
                w.data[lo..hi].copy_from_slice(disk_part);
                w.dirty = Some(w.dirty.map_or((lo, hi), |(a, b)| (a.min(lo), b.max(hi))));
                return Ok(());
            }
        }
        let f = self.file(n)?;
        f.handle
            .write_all_at(disk_part, offset)
            .map_err(|e| Error::io(format!("updating a record header in {}", f.display), e))?;
        // Keep an overlapping window equal to the disk.
        if let Some(w) = self.window.as_mut().filter(|w| w.file == n) {
            let lo = offset.max(w.start);
            let hi = disk_end.min(w.end());
            if lo < hi {
                let (wl, dl) = (span(w.start, lo), span(offset, lo));
                let k = span(lo, hi);
                w.data[wl..wl + k].copy_from_slice(&disk_part[dl..dl + k]);
            }
        }
        Ok(())
    }

    fn window_covers(&self, n: u32, offset: u64, len: usize) -> bool {
        self.window
            .as_ref()
            .is_some_and(|w| w.file == n && offset >= w.start && offset + u64_of(len) <= w.end())
    }

    fn window_overlaps_dirty(&self, n: u32, offset: u64, len: usize) -> bool {
        self.window.as_ref().is_some_and(|w| {
            w.file == n
                && w.dirty.is_some_and(|(lo, hi)| {
                    offset < w.start + u64_of(hi) && w.start + u64_of(lo) < offset + u64_of(len)
                })
        })
    }

    /// Writes the window's dirty range back to its file.
    fn write_back(&mut self) -> Result<()> {
        let Some(w) = self.window.as_mut() else {
            return Ok(());
        };
        let Some((lo, hi)) = w.dirty else {
            return Ok(());
        };
        let Some(f) = self.files.get(&w.file) else {
            w.dirty = None;
            return Ok(());
        };
        f.handle
            .write_all_at(&w.data[lo..hi], w.start + u64_of(lo))
            .map_err(|e| Error::io(format!("updating record headers in {}", f.display), e))?;
        w.dirty = None;
        Ok(())
    }

    /// Points the window at `[offset, offset + size)` of file `n` (`need <= size`, and
    /// `offset + need <= disk_len`), larger when reads are sequential.
    fn load_window(&mut self, n: u32, offset: u64, need: usize, disk_len: u64) -> Result<()> {
        self.write_back()?;
        let sequential = self.last_window_end.is_some_and(|(f, end)| {
            f == n
                && offset >= end.saturating_sub(u64_of(WINDOW_MAX))
                && offset <= end + u64_of(WINDOW_MIN)
        });
        let want = if sequential { WINDOW_MAX } else { WINDOW_MIN };
        let size = want.max(need).min(span(offset, disk_len));
        let mut w = self.window.take().unwrap_or(Window {
            file: n,
            start: offset,
            data: Vec::new(),
            dirty: None,
        });
        w.file = n;
        w.start = offset;
        w.dirty = None;
        w.data.resize(size, 0);
        let mut data = std::mem::take(&mut w.data);
        let r = self.pread(n, offset, &mut data);
        w.data = data;
        r?;
        self.last_window_end = Some((n, w.end()));
        self.window = Some(w);
        Ok(())
    }

    fn pread(&self, n: u32, offset: u64, out: &mut [u8]) -> Result<()> {
        let f = self.file(n)?;
        f.handle.read_exact_at(out, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::corruption(
                    f.display.clone(),
                    format!("offset {offset}"),
                    "the file is shorter than what was written to it",
                )
            } else {
                Error::io(format!("reading {}", f.display), e)
            }
        })
    }

    // ---- fuzzing support ----

    /// Makes `bytes` the content of a new file of this queue, either on disk (not the
    /// active file) or as the unwritten append buffer of a new active file, with `live`
    /// live records. Returns the file number.
    pub(crate) fn adopt(&mut self, bytes: &[u8], in_buffer: bool, live: u64) -> Result<u32> {
        self.flush_buffer()?;
        let n = self.create_file()?;
        let f = self.file_mut(n)?;
        f.live = live;
        if in_buffer {
            self.active = Some(n);
            self.buf.clear();
            self.buf.extend_from_slice(bytes);
        } else {
            let handle = Arc::clone(&f.handle);
            handle
                .write_all_at(bytes, 0)
                .map_err(|e| Error::io("writing a fuzz swap file", e))?;
            self.file_mut(n)?.disk_len = u64_of(bytes.len());
        }
        Ok(n)
    }

    /// Offsets in file `n` where a record header plausibly starts: every occurrence of
    /// the magic (at most `cap`) and the chain of record lengths from offset 0.
    pub(crate) fn plausible_offsets(bytes: &[u8], cap: usize) -> Vec<u64> {
        let mut out: Vec<u64> = bytes
            .windows(MAGIC.len())
            .enumerate()
            .filter(|(_, w)| *w == MAGIC)
            .map(|(i, _)| u64_of(i))
            .take(cap)
            .collect();
        let mut at = 0usize;
        while out.len() < cap * 2 {
            let Some(h) = bytes.get(at + 8..at + 12) else {
                break;
            };
            let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as usize;
            out.push(u64_of(at));
            match at.checked_add(HEADER_LEN).and_then(|x| x.checked_add(len)) {
                Some(next) if next <= bytes.len() => at = next,
                _ => break,
            }
        }
        out.sort_unstable();
        out.dedup();
        out
    }
}

impl Drop for SwapQueue {
    /// Closes the queue: deletes every one of its files (best effort; `SwapDir::open`
    /// deletes whatever remains) and frees its name.
    fn drop(&mut self) {
        self.window = None;
        self.buf = Vec::new();
        let files = std::mem::take(&mut self.files);
        let paths = files
            .into_values()
            .map(|f| f.path)
            .chain(std::mem::take(&mut self.undeleted));
        for path in paths {
            let _ = self.shared.fs.remove_file(&path);
        }
        self.shared.release(&self.name);
    }
}
