//! The write-ahead log, `transaction.log`: appends of opaque frames, group commit,
//! recycling at checkpoints.
//!
//! Owns: the log file, its in-memory append buffer, the durable and written LSNs, and the
//! group-commit protocol. It knows nothing of pages: the kernel hands it payloads and the
//! recovery reads them back through [`Log::replay`].
//!
//! Invariants:
//! - LSNs are consecutive; frames reach the file in LSN order.
//! - Each write batch starts on a sector boundary and is padded to one, so a batch never
//!   shares a sector with an earlier, possibly synced batch (a torn write cannot destroy
//!   acknowledged frames).
//! - `durable_lsn` only moves after a successful `fdatasync` covering every frame up to it;
//!   `written_lsn` only after a successful write.
//! - Group commit is leader/follower: whoever finds its frame not yet durable and no flush
//!   under way becomes the leader, writes the whole buffer in one call and syncs once;
//!   followers yield, then park, and return without I/O when a sync covered their frame
//!   (the leader unparks exactly those its sync satisfied).
//!   A leader that finds new frames buffered after its sync leads another round (at most
//!   `MAX_LEADER_ROUNDS`), so groups follow each other without a thread wake-up between.
//! - Batches are written through an unbuffered (`O_DIRECT`) handle where the file system
//!   offers one and takes its writes, from the aligned append buffer; syncs, headers and
//!   reads use the buffered handle. Either way `durable` only moves after the `fdatasync`.
//! - A failed write or sync latches the shared [`Poison`]: every later call fails.
//! - The file is preallocated and zero-filled when created and reused from the start after
//!   each checkpoint (a new generation), because overwriting written blocks then syncing
//!   needs no metadata update and is much faster than appending.

mod buffer;
pub mod frame;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::{Error, Result};
use crate::file::{FileHandle, FileSystem, OpenMode};
use crate::page::Lsn;
use crate::planted::PlantedBugs;
use crate::poison::Poison;
use buffer::AlignedBuf;
use frame::{
    encode_frame_into, scan, sector_padding, Frame, FrameKind, LogHeader, ScanEnd,
    FRAME_HEADER_LEN, LOG_FILE, LOG_HEADER_AREA, SECTOR,
};

/// How far a commit must reach before it returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Durability {
    /// On stable storage (written and fsynced) when `commit` returns.
    Sync,
    /// Written to the operating system (survives a process crash, not a power loss).
    Flush,
    /// Returns at once; a background flusher syncs within `async_flush_interval`.
    Async,
}

/// Counters of the log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Frames appended.
    pub frames: u64,
    /// Write calls (batches).
    pub writes: u64,
    /// fdatasync calls.
    pub syncs: u64,
    /// `group_sizes[i]`: syncs that made `2^i ..< 2^(i+1)` frames durable (i < 16).
    pub group_sizes: [u64; 16],
    /// Bytes of frames since the last recycle (the log's current size).
    pub bytes_since_recycle: u64,
    /// Log generation.
    pub generation: u32,
}

#[derive(Debug)]
struct AppendState {
    /// Encoded frames not yet handed to the OS (aligned for the direct handle).
    buf: AlignedBuf,
    /// The buffer of the batch before the last, emptied, to become `buf` when a leader
    /// takes it: appends then never regrow a buffer from nothing (for `Async` commits,
    /// tens of MiB between two flushes).
    spare: AlignedBuf,
    /// File offset where `buf` will be written (always sector-aligned).
    buf_offset: u64,
    next_lsn: Lsn,
    generation: u32,
    /// Slot of the newest header copy.
    header_slot: usize,
}

/// The open transaction log.
#[derive(Debug)]
pub struct Log {
    path: PathBuf,
    file: Arc<dyn FileHandle>,
    /// Where write batches go while `direct_on`: an unbuffered (`O_DIRECT`) handle on the
    /// same file, where the file system offers one. Otherwise batches go to `file`, as
    /// do headers, reads and syncs.
    direct: Option<Arc<dyn FileHandle>>,
    /// Cleared for good when the direct handle refuses a write as invalid (a file system
    /// that accepted `O_DIRECT` at open but not for writes).
    direct_on: AtomicBool,
    state: Mutex<AppendState>,
    /// Who leads the current flush, the parked followers, and the counters; never held
    /// across I/O.
    flush_lock: Mutex<FlushStats>,
    /// Signalled when the last leader stops, for [`Log::recycle`] (followers are woken
    /// one by one through their [`Waiter`] instead).
    flushed: Condvar,
    durable: AtomicU64,
    written: AtomicU64,
    /// The last LSN a leader took out of the buffer (it is being written or synced).
    taken: AtomicU64,
    /// The last LSN appended (mirrors `next_lsn - 1` without the state lock).
    appended: AtomicU64,
    /// Serialises taking the buffer and writing it, so batches land in offset order.
    write_lock: Mutex<()>,
    /// Bytes in the append buffer (mirrors `buf.len()` without the state lock).
    buffered: AtomicUsize,
    /// Committers that announced a frame they have not appended yet; a `Sync` leader
    /// waits briefly for them so they join its group (see [`Log::announce`]).
    announced: AtomicUsize,
    /// Frames recent groups held; a leader waits briefly for that many (see
    /// `wait_for_group`).
    group_target: AtomicU64,
    poison: Arc<Poison>,
    bugs: PlantedBugs,
}

/// Buffered bytes past which `Async` frames are written (and synced) ahead of the
/// flusher's interval: at W5's rate (about 500 MiB/s of frames) the interval alone let the
/// buffer reach 50 MiB. 8 MiB batches still stream at the device's sequential speed.
pub const WRITE_AHEAD: usize = 8 << 20;

/// Longest a `Sync` leader waits for announced frames before syncing.
const GROUP_WAIT: Duration = Duration::from_micros(150);

/// How long a follower yields the CPU in a loop before it parks. Measured (8 committers,
/// 2 cores, `stowage bench`): a parked follower costs
/// the leader a futex wake and the follower a reschedule, which together delayed the next
/// group by more than a third of an fdatasync and split the groups (average 4-6 frames,
/// 20-27K commits/s); yielding through the sync instead keeps groups at 8 and gave
/// 35-45K commits/s. It only uses a core nothing else wants (`yield_now` gives way to
/// any runnable thread), and a slow disk's follower parks after this bound.
const FOLLOWER_SPIN: Duration = Duration::from_micros(300);

/// Leaders that may write and sync at once. Measured with `stowage bench` (8 threads): 1
/// gives groups of 8 and the highest throughput; 2 or 3 overlapping fdatasyncs on the one
/// log file split the groups (4-7 frames) and lose 25-50%. The code allows more so the
/// choice stays a measured constant.
const MAX_LEADERS: usize = 1;

/// Consecutive flushes one leader performs before handing over.
const MAX_LEADER_ROUNDS: u32 = 8;

/// What one leader did.
#[derive(Debug, Default)]
struct FlushDone {
    writes: u64,
    syncs: u64,
    /// Frames its sync made durable.
    group: u64,
}

/// A follower parked until a leader's flush reaches its frame.
///
/// Followers park their own thread rather than wait on a condvar: a condvar's
/// `notify_all` hands its waiters the mutex one after the other, a chain of wake-ups
/// that (measured, 8 committers on 2 cores) cost about as much as the fdatasync itself.
/// The leader unparks exactly the followers its sync satisfied, and they run at once.
#[derive(Debug)]
struct Waiter {
    lsn: Lsn,
    sync: bool,
    thread: std::thread::Thread,
    /// Set (before the unpark) when the follower should re-check; park may also return
    /// spuriously.
    woken: AtomicBool,
}

impl Waiter {
    fn wake(&self) {
        self.woken.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

#[derive(Debug, Default)]
struct FlushStats {
    /// Leaders writing or syncing right now (at most `MAX_LEADERS`).
    leaders: usize,
    /// Followers parked until their frame is written or durable.
    waiters: Vec<Arc<Waiter>>,
    writes: u64,
    syncs: u64,
    frames: u64,
    group_sizes: [u64; 16],
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", path.display()), e)
}

/// The log as found at open: its header, for [`Log::replay`].
#[derive(Debug, Clone, Copy)]
pub struct Found {
    header: LogHeader,
}

impl Found {
    /// The LSN the found generation continues from.
    pub fn base_lsn(&self) -> Lsn {
        self.header.base_lsn
    }
}

impl Log {
    /// Opens `dir/transaction.log`, creating it (zero-filled to `prealloc` bytes, header
    /// generation 1 at `base_lsn`) if missing. Nothing is written to an existing file
    /// until recovery has replayed it ([`Log::replay`]) and a checkpoint recycled it.
    pub fn open(
        fs: &dyn FileSystem,
        dir: &Path,
        prealloc: u64,
        base_lsn: Lsn,
        poison: Arc<Poison>,
        bugs: PlantedBugs,
    ) -> Result<(Log, Found)> {
        let path = dir.join(LOG_FILE);
        let exists = fs
            .exists(&path)
            .map_err(|e| io_err("checking for", &path, e))?;
        if !exists {
            create(fs, dir, prealloc, base_lsn, bugs.skip_dir_fsync)?;
        }
        let file = fs
            .open(&path, OpenMode::Existing)
            .map_err(|e| io_err("opening", &path, e))?;
        let mut area = vec![0u8; LOG_HEADER_AREA as usize];
        let len = file
            .len()
            .map_err(|e| io_err("reading length of", &path, e))?;
        if len < LOG_HEADER_AREA {
            return Err(Error::corruption(
                LOG_FILE,
                "log header 0",
                format!("file is {len} bytes, too short for the log headers"),
            ));
        }
        file.read_exact_at(&mut area, 0)
            .map_err(|e| io_err("reading header of", &path, e))?;
        let (header, slot) = LogHeader::choose(&area)?;
        // Measured (`stowage bench`, paired rounds; a C loop of the same calls): a 4 KiB
        // O_DIRECT write + fdatasync runs about 8% more often per second than a buffered
        // one, as the kernel's page-cache writeback is skipped, and a large batch is not
        // copied into the OS cache at all.
        let direct = fs
            .open_direct(&path)
            .map_err(|e| io_err("opening (unbuffered)", &path, e))?;
        let log = Log {
            path,
            file,
            direct_on: AtomicBool::new(direct.is_some()),
            direct,
            state: Mutex::new(AppendState {
                buf: AlignedBuf::default(),
                spare: AlignedBuf::default(),
                buf_offset: LOG_HEADER_AREA,
                next_lsn: header.base_lsn + 1,
                generation: header.generation,
                header_slot: slot,
            }),
            flush_lock: Mutex::new(FlushStats::default()),
            flushed: Condvar::new(),
            durable: AtomicU64::new(header.base_lsn),
            written: AtomicU64::new(header.base_lsn),
            taken: AtomicU64::new(header.base_lsn),
            appended: AtomicU64::new(header.base_lsn),
            write_lock: Mutex::new(()),
            buffered: AtomicUsize::new(0),
            announced: AtomicUsize::new(0),
            group_target: AtomicU64::new(1),
            poison,
            bugs,
        };
        Ok((log, Found { header }))
    }

    /// Makes whatever the file holds durable (a process that died may have left frames in
    /// the OS cache only), then calls `each` for every valid frame of the current
    /// generation, in LSN order. Returns where the valid frames end.
    pub fn replay(
        &self,
        found: Found,
        mut each: impl FnMut(Frame) -> Result<()>,
    ) -> Result<ScanEnd> {
        self.file
            .sync_data()
            .map_err(|e| self.poison.latch(io_err("syncing", &self.path, e)))?;
        let end = scan(
            self.file.as_ref(),
            found.header,
            self.bugs.ignore_checksum,
            |frame| {
                // The file was synced above, so every frame read from it is durable: the
                // cache may write pages it changes while the replay goes on.
                self.durable.store(frame.lsn, Ordering::Release);
                self.written.store(frame.lsn, Ordering::Release);
                self.taken.store(frame.lsn, Ordering::Release);
                self.appended.store(frame.lsn, Ordering::Release);
                each(frame)
            },
        )?;
        let mut st = self.state.lock();
        st.next_lsn = end.last_lsn + 1;
        st.buf_offset = end.tail;
        Ok(end)
    }

    /// Starts a new generation whose first frame gets LSN `base_lsn + 1`: writes the header
    /// into the other slot and syncs it. Called after recovery and by every checkpoint;
    /// the caller guarantees no frame is appended concurrently and every frame up to
    /// `base_lsn` is reflected in a synced page.db.
    pub fn recycle(&self, base_lsn: Lsn) -> Result<()> {
        self.poison.check()?;
        let mut leader = self.flush_lock.lock();
        while leader.leaders > 0 {
            self.flushed.wait(&mut leader);
        }
        let mut st = self.state.lock();
        let header = LogHeader {
            generation: st.generation.wrapping_add(1),
            base_lsn,
        };
        let slot = 1 - st.header_slot;
        let r = self
            .file
            .write_all_at(&header.encode(), slot as u64 * SECTOR)
            .and_then(|()| self.file.sync_data());
        r.map_err(|e| self.poison.latch(io_err("recycling", &self.path, e)))?;
        st.buf.clear();
        self.buffered.store(0, Ordering::Release);
        st.buf_offset = LOG_HEADER_AREA;
        st.next_lsn = base_lsn + 1;
        st.generation = header.generation;
        st.header_slot = slot;
        self.durable.store(base_lsn, Ordering::Release);
        self.written.store(base_lsn, Ordering::Release);
        self.taken.store(base_lsn, Ordering::Release);
        self.appended.store(base_lsn, Ordering::Release);
        Ok(())
    }

    /// Appends a frame to the buffer and returns its LSN. Nothing is written yet: call
    /// [`Log::flush`].
    pub fn append(&self, kind: FrameKind, payload: &[u8]) -> Result<Lsn> {
        self.poison.check()?;
        if payload.len() > u32::MAX as usize {
            return Err(Error::invalid_argument(
                "transaction too large for one log frame",
            ));
        }
        let mut st = self.state.lock();
        let lsn = st.next_lsn;
        st.next_lsn += 1;
        self.appended.store(lsn, Ordering::Release);
        let generation = st.generation;
        let synced = self.durable.load(Ordering::Acquire);
        let out = st.buf.extend_unset(FRAME_HEADER_LEN + payload.len());
        encode_frame_into(out, generation, kind, lsn, synced, payload);
        self.buffered.store(st.buf.len(), Ordering::Release);
        Ok(lsn)
    }

    /// Returns once frame `lsn` is durable (`Sync`) or written (`Flush`); `Async` returns at
    /// once. Concurrent callers share one write and one sync (group commit).
    pub fn flush(&self, lsn: Lsn, durability: Durability) -> Result<()> {
        self.flush_as(lsn, durability, true)
    }

    /// Makes frame `lsn` durable for a background caller (the async flusher, or the cache
    /// making a dirty page writable): like a `Sync` [`Log::flush`], but a leader it becomes
    /// does not wait for announced committers to join. Such a caller is not a committer,
    /// and the committer it may be serving (evicting a page mid-transaction) is itself
    /// announced, so gathering would only spin out `GROUP_WAIT` on every call.
    pub fn sync_to(&self, lsn: Lsn) -> Result<()> {
        self.flush_as(lsn, Durability::Sync, false)
    }

    fn flush_as(&self, lsn: Lsn, durability: Durability, gather: bool) -> Result<()> {
        let sync = match durability {
            Durability::Async => return self.poison.check(),
            Durability::Flush => false,
            Durability::Sync => true,
        };
        if self.reached(lsn, sync) {
            return self.poison.check();
        }
        loop {
            let mut f = self.flush_lock.lock();
            self.poison.check()?;
            if self.reached(lsn, sync) {
                return Ok(());
            }
            // Lead if this frame still sits in the buffer (no leader took it) and fewer
            // than MAX_LEADERS are at work, or if nobody is at work (a Flush leader wrote
            // the frame without syncing it).
            let untaken = self.taken.load(Ordering::Acquire) < lsn;
            if (untaken && f.leaders < MAX_LEADERS) || f.leaders == 0 {
                f.leaders += 1;
                drop(f);
                return self.lead(sync, gather);
            }
            let me = Arc::new(Waiter {
                lsn,
                sync,
                thread: std::thread::current(),
                woken: AtomicBool::new(false),
            });
            f.waiters.push(me.clone());
            drop(f);
            let spin_until = Instant::now() + FOLLOWER_SPIN;
            while !me.woken.load(Ordering::Acquire) && Instant::now() < spin_until {
                if self.reached(lsn, sync) {
                    // The leader still holds this entry and will unpark it; a stray
                    // unpark only makes some later `park` return early, and every park
                    // here sits in a loop that re-checks.
                    return self.poison.check();
                }
                std::thread::yield_now();
            }
            while !me.woken.load(Ordering::Acquire) {
                std::thread::park();
            }
        }
    }

    fn reached(&self, lsn: Lsn, sync: bool) -> bool {
        if sync {
            self.durable.load(Ordering::Acquire) >= lsn
        } else {
            self.written.load(Ordering::Acquire) >= lsn
        }
    }

    /// Leads flush rounds; the caller counted itself in `leaders`. The flush lock is not
    /// held across the I/O, so committers keep appending (they form the next group).
    ///
    /// The leader keeps leading while frames arrive during its sync (up to a bound, so its
    /// own caller is not held forever): the next group then starts without waiting for a
    /// follower thread to wake up, which on a busy machine costs more than a sync.
    fn lead(&self, sync: bool, gather: bool) -> Result<()> {
        let mut rounds = 0;
        loop {
            let mut done = FlushDone::default();
            let r = self.lead_flush(&mut done, sync, gather, rounds > 0);
            let mut f = self.flush_lock.lock();
            f.writes += done.writes;
            f.syncs += done.syncs;
            if done.group > 0 {
                let bucket = (63 - done.group.leading_zeros() as usize).min(15);
                f.group_sizes[bucket] += 1;
                f.frames += done.group;
            }
            rounds += 1;
            let more = r.is_ok() && sync && rounds < MAX_LEADER_ROUNDS && self.has_buffered();
            if more {
                // Wake the followers this round satisfied; the rest wait for the next.
                f.waiters.retain(|w| {
                    let ready = self.reached(w.lsn, w.sync);
                    if ready {
                        w.wake();
                    }
                    !ready
                });
            } else {
                // Stepping down (or failed): every follower re-checks, and one whose frame
                // is not durable yet leads next.
                f.leaders -= 1;
                for w in f.waiters.drain(..) {
                    w.wake();
                }
            }
            let last_out = f.leaders == 0;
            drop(f);
            if last_out {
                self.flushed.notify_all();
            }
            if !more {
                return r;
            }
        }
    }

    /// A committer says it is about to append a frame; pair with [`Log::retire`] once it
    /// appended (or gave up). A `Sync` leader waits up to `GROUP_WAIT` for announced frames
    /// before it syncs, so concurrent committers share one sync instead of trailing into
    /// the next one. A lone committer never waits: it retires before it flushes.
    pub fn announce(&self) {
        self.announced.fetch_add(1, Ordering::AcqRel);
    }

    /// See [`Log::announce`].
    pub fn retire(&self) {
        self.announced.fetch_sub(1, Ordering::AcqRel);
    }

    /// Lets concurrent committers append before the leader takes the buffer: waits (at
    /// most `GROUP_WAIT`) while announced frames are still coming, or while fewer frames
    /// are buffered than recent groups held (committers just released by the previous
    /// sync are on their way back). A lone committer never waits.
    fn wait_for_group(&self, continued: bool) {
        // A leader in a continued round is not committing, so the recent group size
        // (which counted it) can never be reached: wait only for announced frames.
        let target = if continued {
            0
        } else {
            self.group_target.load(Ordering::Acquire)
        };
        let buffered = |log: &Log| {
            log.appended
                .load(Ordering::Acquire)
                .saturating_sub(log.taken.load(Ordering::Acquire))
        };
        let gathering =
            |log: &Log| log.announced.load(Ordering::Acquire) > 0 || buffered(log) < target;
        if !gathering(self) {
            return;
        }
        // Measured: also stopping once no frame arrived for 40 us split the groups (4-7
        // instead of 8-15) and lost throughput, so the only bound is GROUP_WAIT.
        let deadline = Instant::now() + GROUP_WAIT;
        while gathering(self) && Instant::now() < deadline {
            std::thread::yield_now();
        }
    }

    /// True when frames wait in the buffer.
    fn has_buffered(&self) -> bool {
        !self.state.lock().buf.is_empty()
    }

    /// The leader's work: write the whole buffer in one call, then sync once.
    fn lead_flush(
        &self,
        done: &mut FlushDone,
        sync: bool,
        gather: bool,
        continued: bool,
    ) -> Result<()> {
        if sync && gather {
            self.wait_for_group(continued);
        }
        let last = {
            // Batches are taken and written in offset order, one at a time; the sync that
            // follows is outside this lock, so a second leader can write and sync while
            // the first one's fdatasync is still running. Any sync covers every batch
            // written before it started, so `durable` may move to the leader's last LSN.
            let _in_order = self.write_lock.lock();
            let (mut buf, offset, last) = {
                let mut st = self.state.lock();
                let spare = std::mem::take(&mut st.spare);
                let mut buf = std::mem::replace(&mut st.buf, spare);
                self.buffered.store(0, Ordering::Release);
                let offset = st.buf_offset;
                buf.extend_zeroed(sector_padding(offset, buf.len()));
                st.buf_offset = offset + buf.len() as u64;
                (buf, offset, st.next_lsn - 1)
            };
            self.taken.fetch_max(last, Ordering::AcqRel);
            if !buf.is_empty() {
                self.write_batch(buf.as_slice(), offset)
                    .map_err(|e| self.poison.latch(io_err("writing", &self.path, e)))?;
                done.writes += 1;
                // Keep the allocation for the batch after next.
                buf.clear();
                let mut st = self.state.lock();
                if st.spare.capacity() < buf.capacity() {
                    st.spare = buf;
                }
            }
            self.written.fetch_max(last, Ordering::AcqRel);
            last
        };
        if sync {
            if !self.bugs.ack_before_log_sync {
                self.file
                    .sync_data()
                    .map_err(|e| self.poison.latch(io_err("syncing", &self.path, e)))?;
            }
            done.syncs += 1;
            let before = self.durable.fetch_max(last, Ordering::AcqRel);
            done.group = last.saturating_sub(before);
            // Recent group size, decaying by one per sync so a load drop stops the waiting.
            let t = self.group_target.load(Ordering::Acquire);
            self.group_target.store(
                done.group.max(t.saturating_sub(1)).max(1),
                Ordering::Release,
            );
        }
        Ok(())
    }

    /// True when more than [`WRITE_AHEAD`] bytes of frames wait in the buffer: the caller
    /// (an `Async` or `Flush` committer) should have the flusher write them now rather
    /// than at its next interval, so the buffer stays bounded.
    pub fn wants_write_ahead(&self) -> bool {
        self.buffered.load(Ordering::Acquire) >= WRITE_AHEAD
    }

    /// True when write batches bypass the OS cache (see [`FileSystem::open_direct`]).
    pub fn is_direct(&self) -> bool {
        self.direct.is_some() && self.direct_on.load(Ordering::Acquire)
    }

    /// Writes one batch: through the direct handle while it takes writes, else through the
    /// buffered one. A direct write refused as invalid (`EINVAL`: the file system took
    /// `O_DIRECT` at open and for the aligned probe read, but not for this write) sends this
    /// batch and every later one to the buffered handle. Rewriting the whole batch there is
    /// safe even if part of it went through: the same bytes land at the same offsets, and
    /// nothing counts as written or durable until this returns and a sync follows.
    fn write_batch(&self, bytes: &[u8], offset: u64) -> std::io::Result<()> {
        if let Some(direct) = self
            .direct
            .as_ref()
            .filter(|_| self.direct_on.load(Ordering::Acquire))
        {
            match direct.write_all_at(bytes, offset) {
                Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                    self.direct_on.store(false, Ordering::Release);
                    tracing::warn!(
                        path = %self.path.display(),
                        error = %e,
                        "unbuffered log write refused; writing through the OS cache from now on"
                    );
                }
                other => return other,
            }
        }
        self.file.write_all_at(bytes, offset)
    }

    /// The LSN of the last appended frame.
    pub fn last_lsn(&self) -> Lsn {
        self.state.lock().next_lsn - 1
    }

    /// The LSN up to which the log is durable.
    pub fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::Acquire)
    }

    /// Bytes of frames since the last recycle, written or buffered.
    pub fn size_since_recycle(&self) -> u64 {
        let st = self.state.lock();
        st.buf_offset - LOG_HEADER_AREA + st.buf.len() as u64
    }

    /// Counters for stats and benchmarks.
    pub fn stats(&self) -> LogStats {
        let f = self.flush_lock.lock();
        let st = self.state.lock();
        LogStats {
            frames: st.next_lsn - 1,
            writes: f.writes,
            syncs: f.syncs,
            group_sizes: f.group_sizes,
            bytes_since_recycle: st.buf_offset - LOG_HEADER_AREA + st.buf.len() as u64,
            generation: st.generation,
        }
    }
}

/// Creates a zero-filled log under a temporary name and renames it into place, so a crash
/// leaves no log or a complete one with a valid header.
fn create(
    fs: &dyn FileSystem,
    dir: &Path,
    prealloc: u64,
    base_lsn: Lsn,
    skip_dir_fsync: bool,
) -> Result<()> {
    let tmp = dir.join("transaction.log.tmp");
    let path = dir.join(LOG_FILE);
    let file = crate::file::create_fresh(fs, &tmp).map_err(|e| io_err("creating", &tmp, e))?;
    // Zero-fill rather than fallocate: fallocated extents are "unwritten" and the first
    // write to each still costs a metadata update at sync time.
    let total = prealloc.max(LOG_HEADER_AREA).div_ceil(SECTOR) * SECTOR;
    let chunk = vec![0u8; 1 << 20];
    let mut off = 0;
    while off < total {
        let n = (total - off).min(chunk.len() as u64) as usize;
        file.write_all_at(&chunk[..n], off)
            .map_err(|e| io_err("preallocating", &tmp, e))?;
        off += n as u64;
    }
    let header = LogHeader {
        generation: 1,
        base_lsn,
    };
    file.write_all_at(&header.encode(), 0)
        .map_err(|e| io_err("writing header of", &tmp, e))?;
    file.sync_all().map_err(|e| io_err("syncing", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| io_err("renaming into place", &path, e))?;
    if skip_dir_fsync {
        return Ok(());
    }
    fs.sync_dir(dir)
        .map_err(|e| io_err("syncing directory", dir, e))
}
