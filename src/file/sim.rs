//! The simulated file layer: an in-memory [`FileSystem`] implementing TESTING.md's fault
//! model deterministically from a seed.
//!
//! Owns: [`SimFs`] (namespace, inodes, call counter, crash point, injected failures, locks)
//! and [`CrashOutcome`]. With no faults set it is an ordinary in-memory file system (the
//! backend of `Store::open_in_memory`).
//!
//! Invariants:
//! - Per inode, `current` (what reads see) equals `durable` with `pending` applied in order,
//!   except after an injected fsync failure (fsyncgate): the dropped ops then stay visible
//!   in `current` but are gone from the durable future for good.
//! - Every pending data op carries a globally increasing sequence number: its call order
//!   across all files, which the prefix outcome needs.
//! - The namespace has a `current` and a `durable` view; unsynced namespace ops are also kept
//!   in call order (`ns_pending`) for the subset outcomes. `sync_dir(d)` moves every entry
//!   whose parent is `d` into the durable view and drops (or trims) the pending ops it covered.
//! - An inode lives while a current or durable entry, a pending namespace op or an open
//!   handle refers to it.
//! - All randomness comes from [`Rng`] (splitmix64) seeded by the caller, and every
//!   collection iterated is ordered: same calls + same seed ⇒ same state.
//! - No call panics: missing state is reported as an `io::Error`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::{FileHandle, FileSystem, LockGuard, OpenMode};

/// Torn writes are split at these boundaries of the file offset.
const SECTOR: u64 = 512;

/// What happened to the machine when a simulated process ended (see [`SimFs::restart`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CrashOutcome {
    /// Only the process died: everything that reached the OS survives, but unsynced data
    /// and namespace ops stay unsynced, so a later power loss can still lose them.
    ProcessKill,
    /// Power loss: a seeded random prefix (in global call order) of the unsynced data ops
    /// survives; unsynced namespace ops are lost.
    PowerLossPrefix,
    /// Power loss: a seeded random subset of the unsynced data ops survives (applied in
    /// their original order); each unsynced namespace op survives with probability 1/2.
    PowerLossSubset,
    /// Like [`CrashOutcome::PowerLossSubset`], and each 512-byte sector of a surviving
    /// write independently keeps the new bytes, the old bytes or seeded garbage.
    PowerLossTorn,
}

impl CrashOutcome {
    /// Every outcome, for sweeps.
    pub const ALL: [CrashOutcome; 4] = [
        CrashOutcome::ProcessKill,
        CrashOutcome::PowerLossPrefix,
        CrashOutcome::PowerLossSubset,
        CrashOutcome::PowerLossTorn,
    ];
}

/// An in-memory file system with TESTING.md's crash and fault model.
///
/// Clones share the same state. Mutating calls are counted (see
/// [`SimFs::mutating_calls`]) so that a crash ([`SimFs::set_crash_at`]) or a failure
/// ([`SimFs::fail_call`]) can be injected at any of them; [`SimFs::restart`] then applies a
/// [`CrashOutcome`] and starts a fresh "process".
#[derive(Clone, Default)]
pub struct SimFs {
    state: Arc<Mutex<State>>,
}

/// One unsynced data op of a file.
#[derive(Debug, Clone)]
enum DataOp {
    Write { offset: u64, data: Vec<u8> },
    SetLen(u64),
}

#[derive(Debug)]
struct Pending {
    /// Global call order (unique across files).
    seq: u64,
    op: DataOp,
}

#[derive(Debug, Default)]
struct Inode {
    /// What the OS shows; reads see this.
    current: Vec<u8>,
    /// What survives power loss (content and length).
    durable: Vec<u8>,
    /// Data ops since the last sync, in call order.
    pending: Vec<Pending>,
    /// Open handles of the current epoch (an unlinked inode lives while one is open).
    open_handles: usize,
}

/// An unsynced namespace op. On power loss each one is applied to the durable namespace
/// only if it still applies there (its preconditions are checked).
#[derive(Debug, Clone)]
enum NsOp {
    Create {
        path: PathBuf,
        ino: u64,
    },
    Rename {
        from: PathBuf,
        to: PathBuf,
        ino: u64,
    },
    Remove {
        path: PathBuf,
        ino: u64,
    },
    Mkdir {
        path: PathBuf,
    },
    Rmdir {
        path: PathBuf,
    },
}

impl NsOp {
    fn ino(&self) -> Option<u64> {
        match self {
            NsOp::Create { ino, .. } | NsOp::Rename { ino, .. } | NsOp::Remove { ino, .. } => {
                Some(*ino)
            }
            NsOp::Mkdir { .. } | NsOp::Rmdir { .. } => None,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    /// Bumped by every restart; handles of an older epoch are stale.
    epoch: u64,
    /// Mutating calls since the last restart (the index of the next one).
    calls: u64,
    crash_at: Option<u64>,
    crashed: bool,
    /// Indexes of mutating calls that fail once.
    fail_at: BTreeSet<u64>,
    /// Seed of the last restart; mixed with the call index for fsyncgate subsets.
    fault_seed: u64,
    next_ino: u64,
    next_seq: u64,
    next_lock: u64,
    inodes: BTreeMap<u64, Inode>,
    files: BTreeMap<PathBuf, u64>,
    durable_files: BTreeMap<PathBuf, u64>,
    /// Directories (keys normalised by `dir_key`); roots are implicit, never stored.
    dirs: BTreeSet<PathBuf>,
    durable_dirs: BTreeSet<PathBuf>,
    ns_pending: Vec<NsOp>,
    /// Held locks: path -> lock id.
    locks: BTreeMap<PathBuf, u64>,
}

/// splitmix64: tiny, fast and fully determined by its seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed)
    }
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (multiply-shift; `n == 0` gives 0).
    fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
    fn coin(&mut self) -> bool {
        self.next_u64() >> 63 == 1
    }
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            let v = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&v[..chunk.len()]);
        }
    }
}

// ---- errors and small helpers ----

fn crash_err() -> io::Error {
    io::Error::other("simulated crash")
}
fn failure_err() -> io::Error {
    io::Error::other("simulated I/O failure")
}
fn stale_err() -> io::Error {
    io::Error::other("stale handle after simulated restart")
}
fn err(kind: io::ErrorKind, what: &str, path: &Path) -> io::Error {
    io::Error::new(kind, format!("{what}: {}", path.display()))
}
fn invalid(msg: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg.to_string())
}

fn len64(v: &[u8]) -> u64 {
    v.len() as u64
}

fn to_usize(n: u64) -> io::Result<usize> {
    usize::try_from(n).map_err(|_| invalid("offset or length exceeds the address space"))
}

/// The key of a directory: `""` and `"."` are the same (relative) root.
fn dir_key(p: &Path) -> PathBuf {
    if p == Path::new(".") {
        PathBuf::new()
    } else {
        p.to_path_buf()
    }
}

/// True for the roots, which always exist: `""`, `"."` and `"/"`.
fn is_root(p: &Path) -> bool {
    dir_key(p).parent().is_none()
}

/// The directory key of an entry's parent; `None` for a root.
fn parent_key(p: &Path) -> Option<PathBuf> {
    if is_root(p) {
        return None;
    }
    p.parent().map(dir_key)
}

/// The parent key of a path naming a file; `InvalidInput` for roots and `..` forms.
fn file_parent(path: &Path) -> io::Result<PathBuf> {
    match (path.file_name(), parent_key(path)) {
        (Some(_), Some(parent)) => Ok(parent),
        _ => Err(err(io::ErrorKind::InvalidInput, "not a file path", path)),
    }
}

fn checked_end(offset: u64, len: u64) -> io::Result<u64> {
    offset
        .checked_add(len)
        .ok_or_else(|| invalid("offset + length overflows u64"))
}

/// Resizes to `n` bytes (zero-filled), turning allocation failure into an error.
fn resize_to(buf: &mut Vec<u8>, n: u64) -> io::Result<()> {
    let n = to_usize(n)?;
    if n > buf.len() {
        buf.try_reserve(n - buf.len())
            .map_err(|_| io::Error::new(io::ErrorKind::OutOfMemory, "simulated file too large"))?;
        buf.resize(n, 0);
    } else {
        buf.truncate(n);
    }
    Ok(())
}

/// Applies `op` to an image whose logical length is `*logical`, keeping only the bytes
/// below `limit`. Invariant (before and after): `buf.len() == min(*logical, limit)`. Power
/// loss passes the old durable length as `limit` (growth is lost unless synced), so it
/// never allocates; syncs pass `u64::MAX`. With `tear`, each 512-byte sector of a write
/// independently gets the new bytes, keeps the old ones, or gets garbage.
fn apply_op(
    buf: &mut Vec<u8>,
    logical: &mut u64,
    limit: u64,
    op: &DataOp,
    tear: Option<&mut Rng>,
) -> io::Result<()> {
    match op {
        DataOp::SetLen(len) => {
            *logical = *len;
            resize_to(buf, (*len).min(limit))
        }
        DataOp::Write { offset, data } => {
            let end = checked_end(*offset, len64(data))?;
            *logical = (*logical).max(end);
            resize_to(buf, (*logical).min(limit))?;
            let visible_end = end.min(limit);
            if visible_end <= *offset {
                return Ok(());
            }
            let Some(rng) = tear else {
                let (s, e) = (to_usize(*offset)?, to_usize(visible_end)?);
                buf[s..e].copy_from_slice(&data[..e - s]);
                return Ok(());
            };
            let mut pos = *offset;
            while pos < visible_end {
                let sector_end = (pos | (SECTOR - 1)).saturating_add(1).min(visible_end);
                let (s, e) = (to_usize(pos)?, to_usize(sector_end)?);
                let d = to_usize(pos - *offset)?;
                match rng.below(3) {
                    0 => buf[s..e].copy_from_slice(&data[d..d + (e - s)]),
                    1 => {} // the sector keeps its old bytes
                    _ => rng.fill(&mut buf[s..e]),
                }
                pos = sector_end;
            }
            Ok(())
        }
    }
}

// ---- the state machine ----

impl State {
    /// Fails every call once crashed.
    fn alive(&self) -> io::Result<()> {
        if self.crashed {
            Err(crash_err())
        } else {
            Ok(())
        }
    }

    /// Liveness plus staleness of a handle opened in `epoch`.
    fn check_handle(&self, epoch: u64) -> io::Result<()> {
        self.alive()?;
        if epoch != self.epoch {
            return Err(stale_err());
        }
        Ok(())
    }

    /// Counts a mutating call. Returns its index and whether it is to fail; if it is the
    /// crash point the call does not happen and the fs is crashed from now on.
    fn begin_mutation(&mut self) -> io::Result<(u64, bool)> {
        self.alive()?;
        let idx = self.calls;
        self.calls = self.calls.saturating_add(1);
        if self.crash_at == Some(idx) {
            self.crashed = true;
            return Err(crash_err());
        }
        Ok((idx, self.fail_at.remove(&idx)))
    }

    /// `begin_mutation` for calls on which an injected failure simply fails.
    fn begin_plain_mutation(&mut self) -> io::Result<()> {
        match self.begin_mutation()? {
            (_, true) => Err(failure_err()),
            (_, false) => Ok(()),
        }
    }

    fn inode_mut(&mut self, ino: u64) -> io::Result<&mut Inode> {
        self.inodes
            .get_mut(&ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simulated inode vanished"))
    }

    fn inode(&self, ino: u64) -> io::Result<&Inode> {
        self.inodes
            .get(&ino)
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "simulated inode vanished"))
    }

    fn dir_exists(&self, p: &Path) -> bool {
        is_root(p) || self.dirs.contains(&dir_key(p))
    }

    fn durable_dir_exists(&self, p: &Path) -> bool {
        is_root(p) || self.durable_dirs.contains(&dir_key(p))
    }

    fn has_children(files: &BTreeMap<PathBuf, u64>, dirs: &BTreeSet<PathBuf>, d: &Path) -> bool {
        let d = dir_key(d);
        let child = |p: &PathBuf| parent_key(p).as_deref() == Some(d.as_path());
        files.keys().any(child) || dirs.iter().any(child)
    }

    fn next_seq(&mut self) -> u64 {
        let s = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        s
    }

    /// Creates an empty file at `path` (parent checked by the caller) as a namespace op.
    fn create_file(&mut self, path: &Path) -> u64 {
        let ino = self.next_ino;
        self.next_ino = self.next_ino.wrapping_add(1);
        self.inodes.insert(ino, Inode::default());
        self.files.insert(path.to_path_buf(), ino);
        self.ns_pending.push(NsOp::Create {
            path: path.to_path_buf(),
            ino,
        });
        ino
    }

    /// Drops an inode nothing refers to any more (see the module invariants).
    fn maybe_drop(&mut self, ino: u64) {
        let open = self.inodes.get(&ino).map_or(0, |i| i.open_handles);
        let referenced = open > 0
            || self.files.values().any(|&i| i == ino)
            || self.durable_files.values().any(|&i| i == ino)
            || self.ns_pending.iter().any(|op| op.ino() == Some(ino));
        if !referenced {
            self.inodes.remove(&ino);
        }
    }

    fn drop_unreachable(&mut self) {
        let mut live: BTreeSet<u64> = self.files.values().copied().collect();
        live.extend(self.durable_files.values().copied());
        live.extend(self.ns_pending.iter().filter_map(NsOp::ino));
        self.inodes
            .retain(|ino, inode| live.contains(ino) || inode.open_handles > 0);
    }

    /// A successful sync applies the pending ops to the durable image. A failed one
    /// (fsyncgate) applies a seeded random subset and forgets the rest.
    fn sync_inode(&mut self, ino: u64, idx: u64, failed: bool) -> io::Result<()> {
        let mut rng = Rng::new(self.fault_seed ^ idx.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        let inode = self.inode_mut(ino)?;
        let pending = std::mem::take(&mut inode.pending);
        let mut logical = len64(&inode.durable);
        for p in &pending {
            if failed && !rng.coin() {
                continue;
            }
            apply_op(&mut inode.durable, &mut logical, u64::MAX, &p.op, None)?;
        }
        if failed {
            Err(failure_err())
        } else {
            Ok(())
        }
    }

    /// Makes the entries whose parent is `dir` durable as they are now, and removes the
    /// pending namespace ops (or the halves of cross-directory renames) this covered.
    fn sync_dir(&mut self, dir: &Path) {
        let key = dir_key(dir);
        let in_dir = |p: &Path| parent_key(p).as_deref() == Some(key.as_path());
        let paths: BTreeSet<PathBuf> = self
            .files
            .keys()
            .chain(self.durable_files.keys())
            .filter(|p| in_dir(p))
            .cloned()
            .collect();
        let mut unlinked = Vec::new();
        for p in paths {
            let old = match self.files.get(&p) {
                Some(&ino) => self.durable_files.insert(p, ino),
                None => self.durable_files.remove(&p),
            };
            unlinked.extend(old);
        }
        let dirs: BTreeSet<PathBuf> = self
            .dirs
            .iter()
            .chain(self.durable_dirs.iter())
            .filter(|p| in_dir(p))
            .cloned()
            .collect();
        for d in dirs {
            if self.dirs.contains(&d) {
                self.durable_dirs.insert(d);
            } else {
                self.durable_dirs.remove(&d);
            }
        }
        // Inodes only the dropped ops referred to may now be unreferenced too.
        let ops = std::mem::take(&mut self.ns_pending);
        unlinked.extend(ops.iter().filter_map(NsOp::ino));
        for op in ops {
            let kept = match op {
                NsOp::Create { ref path, .. }
                | NsOp::Remove { ref path, .. }
                | NsOp::Mkdir { ref path }
                | NsOp::Rmdir { ref path } => (!in_dir(path)).then_some(op),
                NsOp::Rename { from, to, ino } => match (in_dir(&from), in_dir(&to)) {
                    (true, true) => None,
                    (true, false) => Some(NsOp::Create { path: to, ino }),
                    (false, true) => Some(NsOp::Remove { path: from, ino }),
                    (false, false) => Some(NsOp::Rename { from, to, ino }),
                },
            };
            self.ns_pending.extend(kept);
        }
        unlinked.sort_unstable();
        unlinked.dedup();
        for ino in unlinked {
            self.maybe_drop(ino);
        }
    }

    /// Applies one unsynced namespace op to the durable namespace if it still applies.
    fn apply_ns_durable(&mut self, op: &NsOp) {
        match op {
            NsOp::Create { path, ino } => {
                let ok = parent_key(path).is_some_and(|p| self.durable_dir_exists(&p))
                    && !self.durable_dirs.contains(path)
                    && self.inodes.contains_key(ino);
                if ok {
                    self.durable_files.insert(path.clone(), *ino);
                }
            }
            NsOp::Rename { from, to, ino } => {
                let ok = self.durable_files.get(from) == Some(ino)
                    && parent_key(to).is_some_and(|p| self.durable_dir_exists(&p))
                    && !self.durable_dirs.contains(to);
                if ok {
                    self.durable_files.remove(from);
                    self.durable_files.insert(to.clone(), *ino);
                }
            }
            NsOp::Remove { path, ino } => {
                if self.durable_files.get(path) == Some(ino) {
                    self.durable_files.remove(path);
                }
            }
            NsOp::Mkdir { path } => {
                let ok = parent_key(path).is_some_and(|p| self.durable_dir_exists(&p))
                    && !self.durable_files.contains_key(path);
                if ok {
                    self.durable_dirs.insert(path.clone());
                }
            }
            NsOp::Rmdir { path } => {
                if !Self::has_children(&self.durable_files, &self.durable_dirs, path) {
                    self.durable_dirs.remove(path);
                }
            }
        }
    }

    /// Power loss: choose the surviving ops, rebuild the durable images and namespace,
    /// then make the current state equal to them.
    fn power_loss(&mut self, outcome: CrashOutcome, seed: u64) {
        let mut rng = Rng::new(seed);
        let mut seqs: Vec<u64> = self
            .inodes
            .values()
            .flat_map(|i| i.pending.iter().map(|p| p.seq))
            .collect();
        seqs.sort_unstable();
        let surviving: BTreeSet<u64> = if outcome == CrashOutcome::PowerLossPrefix {
            let k = rng.below((seqs.len() as u64).saturating_add(1));
            seqs.iter()
                .take(to_usize(k).unwrap_or(0))
                .copied()
                .collect()
        } else {
            seqs.iter().copied().filter(|_| rng.coin()).collect()
        };
        let torn = outcome == CrashOutcome::PowerLossTorn;
        for inode in self.inodes.values_mut() {
            let pending = std::mem::take(&mut inode.pending);
            // Growth is lost unless synced: the old durable length caps the result.
            let limit = len64(&inode.durable);
            let mut logical = limit;
            for p in pending.iter().filter(|p| surviving.contains(&p.seq)) {
                let tear = if torn { Some(&mut rng) } else { None };
                // Cannot fail: with `limit` = the image's length nothing is allocated and
                // every op was validated when it was issued. A failure would only mean the
                // op does not survive, which is a legal outcome anyway.
                let _ = apply_op(&mut inode.durable, &mut logical, limit, &p.op, tear);
            }
            inode.current.clone_from(&inode.durable);
        }
        let ns = std::mem::take(&mut self.ns_pending);
        if outcome != CrashOutcome::PowerLossPrefix {
            for op in &ns {
                if rng.coin() {
                    self.apply_ns_durable(op);
                }
            }
        }
        // Entries whose directory did not survive are gone (no lost+found here). Parents
        // sort before their children, so one ordered pass suffices.
        let mut dirs = BTreeSet::new();
        for d in &self.durable_dirs {
            if parent_key(d).is_some_and(|p| is_root(&p) || dirs.contains(&p)) {
                dirs.insert(d.clone());
            }
        }
        self.durable_files
            .retain(|p, _| parent_key(p).is_some_and(|k| is_root(&k) || dirs.contains(&k)));
        self.durable_dirs = dirs;
        self.files.clone_from(&self.durable_files);
        self.dirs.clone_from(&self.durable_dirs);
    }
}

// ---- public API ----

impl SimFs {
    /// An empty file system: no files, no directories but the roots (`""`, `"."`, `"/"`).
    pub fn new() -> Self {
        SimFs::default()
    }

    /// Mutating calls (writes, set_len, allocate, syncs, creating opens, directory and
    /// namespace ops, locks) since the last restart, including a call that crashed.
    pub fn mutating_calls(&self) -> u64 {
        self.state.lock().calls
    }

    /// Crashes at the mutating call with 0-based index `n` (since the last restart): that
    /// call does not happen and every later call fails. `None` removes the crash point.
    pub fn set_crash_at(&self, n: Option<u64>) {
        self.state.lock().crash_at = n;
    }

    /// Enters the crashed state now: every call fails until [`SimFs::restart`].
    pub fn crash_now(&self) {
        self.state.lock().crashed = true;
    }

    /// True while crashed (after the crash point or [`SimFs::crash_now`]).
    pub fn is_crashed(&self) -> bool {
        self.state.lock().crashed
    }

    /// Makes the mutating call with index `n` fail once with "simulated I/O failure". A
    /// failed write or namespace op has no effect; a failed sync makes a seeded random
    /// subset of the file's pending ops durable and drops the rest for good (fsyncgate).
    pub fn fail_call(&self, n: u64) {
        self.state.lock().fail_at.insert(n);
    }

    /// Simulates the process dying (and for power-loss outcomes the machine) and a fresh
    /// process starting: applies `outcome` with randomness from `seed`, invalidates all
    /// handles, releases all locks, clears the crash state, crash point and failures and
    /// resets [`SimFs::mutating_calls`] to 0. `seed` also seeds later fsyncgate subsets.
    pub fn restart(&self, outcome: CrashOutcome, seed: u64) {
        let mut st = self.state.lock();
        if outcome != CrashOutcome::ProcessKill {
            st.power_loss(outcome, seed);
        }
        st.epoch = st.epoch.wrapping_add(1);
        st.crashed = false;
        st.crash_at = None;
        st.fail_at.clear();
        st.calls = 0;
        st.locks.clear();
        st.fault_seed = seed;
        for inode in st.inodes.values_mut() {
            inode.open_handles = 0;
        }
        st.drop_unreachable();
    }

    /// The number of unsynced data ops over all files (the `n` of a prefix outcome).
    pub fn pending_ops(&self) -> usize {
        self.state
            .lock()
            .inodes
            .values()
            .map(|i| i.pending.len())
            .sum()
    }

    /// Test helper: the current content of a file (works even when crashed).
    pub fn read_file(&self, path: &Path) -> Option<Vec<u8>> {
        let st = self.state.lock();
        let ino = st.files.get(path)?;
        st.inodes.get(ino).map(|i| i.current.clone())
    }

    /// Test helper for corruption tests: replaces the file's content (creating the file if
    /// missing, without checking its directory) and makes content and entry durable. Not
    /// a counted call; works even when crashed.
    pub fn write_file_durable(&self, path: &Path, bytes: &[u8]) {
        let mut st = self.state.lock();
        let ino = match st.files.get(path) {
            Some(&ino) => ino,
            None => {
                let ino = st.next_ino;
                st.next_ino = st.next_ino.wrapping_add(1);
                st.files.insert(path.to_path_buf(), ino);
                ino
            }
        };
        let replaced = st.durable_files.insert(path.to_path_buf(), ino);
        let inode = st.inodes.entry(ino).or_default();
        inode.current = bytes.to_vec();
        inode.durable = bytes.to_vec();
        inode.pending.clear();
        if let Some(old) = replaced.filter(|&old| old != ino) {
            st.maybe_drop(old);
        }
    }

    /// Test helper: the paths of all files in the current namespace, sorted.
    pub fn file_names(&self) -> Vec<PathBuf> {
        self.state.lock().files.keys().cloned().collect()
    }
}

impl fmt::Debug for SimFs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let st = self.state.lock();
        f.debug_struct("SimFs")
            .field("epoch", &st.epoch)
            .field("mutating_calls", &st.calls)
            .field("crashed", &st.crashed)
            .field("files", &st.files.len())
            .field("dirs", &st.dirs.len())
            .field("pending_ns_ops", &st.ns_pending.len())
            .finish()
    }
}

impl FileSystem for SimFs {
    fn open(&self, path: &Path, mode: OpenMode) -> io::Result<Arc<dyn FileHandle>> {
        let (ino, epoch) = {
            let mut st = self.state.lock();
            st.alive()?;
            let parent = file_parent(path)?;
            if st.dirs.contains(path) {
                return Err(match mode {
                    OpenMode::CreateNew => err(io::ErrorKind::AlreadyExists, "exists", path),
                    _ => err(io::ErrorKind::Other, "is a directory", path),
                });
            }
            let ino = match (st.files.get(path).copied(), mode) {
                (Some(_), OpenMode::CreateNew) => {
                    return Err(err(io::ErrorKind::AlreadyExists, "file exists", path))
                }
                (Some(ino), _) => ino,
                (None, OpenMode::Existing) => {
                    return Err(err(io::ErrorKind::NotFound, "no such file", path))
                }
                (None, _) => {
                    if !st.dir_exists(&parent) {
                        return Err(err(io::ErrorKind::NotFound, "no such directory", &parent));
                    }
                    st.begin_plain_mutation()?;
                    st.create_file(path)
                }
            };
            st.inode_mut(ino)?.open_handles += 1;
            (ino, st.epoch)
        };
        Ok(Arc::new(SimFile {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            ino,
            epoch,
        }))
    }

    fn exists(&self, path: &Path) -> io::Result<bool> {
        let st = self.state.lock();
        st.alive()?;
        Ok(st.dir_exists(path) || st.files.contains_key(path))
    }

    fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.begin_plain_mutation()?;
        // Ancestors top-down; each missing one is a separate namespace op.
        let mut todo: Vec<&Path> = path.ancestors().filter(|p| !is_root(p)).collect();
        todo.reverse();
        for p in todo {
            if st.files.contains_key(p) {
                return Err(err(io::ErrorKind::AlreadyExists, "a file is in the way", p));
            }
            let key = dir_key(p);
            if st.dirs.insert(key.clone()) {
                st.ns_pending.push(NsOp::Mkdir { path: key });
            }
        }
        Ok(())
    }

    fn read_dir(&self, path: &Path) -> io::Result<Vec<String>> {
        let st = self.state.lock();
        st.alive()?;
        if !st.dir_exists(path) {
            let kind = if st.files.contains_key(path) {
                io::ErrorKind::Other
            } else {
                io::ErrorKind::NotFound
            };
            return Err(err(kind, "no such directory", path));
        }
        let key = dir_key(path);
        let mut names: Vec<String> = st
            .files
            .keys()
            .chain(st.dirs.iter())
            .filter(|p| parent_key(p).as_deref() == Some(key.as_path()))
            .filter_map(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .collect();
        names.sort();
        Ok(names)
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.begin_plain_mutation()?;
        let to_parent = file_parent(to)?;
        let Some(&ino) = st.files.get(from) else {
            return Err(err(io::ErrorKind::NotFound, "no such file", from));
        };
        if st.dirs.contains(to) {
            return Err(err(io::ErrorKind::Other, "target is a directory", to));
        }
        if !st.dir_exists(&to_parent) {
            return Err(err(
                io::ErrorKind::NotFound,
                "no such directory",
                &to_parent,
            ));
        }
        if from == to {
            return Ok(());
        }
        st.files.remove(from);
        let replaced = st.files.insert(to.to_path_buf(), ino);
        st.ns_pending.push(NsOp::Rename {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            ino,
        });
        if let Some(old) = replaced {
            st.maybe_drop(old);
        }
        Ok(())
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.begin_plain_mutation()?;
        let Some(ino) = st.files.remove(path) else {
            return Err(err(io::ErrorKind::NotFound, "no such file", path));
        };
        st.ns_pending.push(NsOp::Remove {
            path: path.to_path_buf(),
            ino,
        });
        st.maybe_drop(ino);
        Ok(())
    }

    fn remove_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.begin_plain_mutation()?;
        let key = dir_key(path);
        if is_root(path) || !st.dirs.contains(&key) {
            return Err(err(io::ErrorKind::NotFound, "no such directory", path));
        }
        if State::has_children(&st.files, &st.dirs, path) {
            return Err(err(io::ErrorKind::Other, "directory not empty", path));
        }
        st.dirs.remove(&key);
        st.ns_pending.push(NsOp::Rmdir { path: key });
        Ok(())
    }

    fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let mut st = self.state.lock();
        st.begin_plain_mutation()?;
        if !st.dir_exists(path) {
            return Err(err(io::ErrorKind::NotFound, "no such directory", path));
        }
        st.sync_dir(path);
        Ok(())
    }

    fn lock(&self, path: &Path) -> io::Result<Box<dyn LockGuard>> {
        let id = {
            let mut st = self.state.lock();
            st.begin_plain_mutation()?;
            let parent = file_parent(path)?;
            if st.dirs.contains(path) {
                return Err(err(io::ErrorKind::Other, "is a directory", path));
            }
            if st.locks.contains_key(path) {
                return Err(err(io::ErrorKind::WouldBlock, "is locked", path));
            }
            if !st.files.contains_key(path) {
                if !st.dir_exists(&parent) {
                    return Err(err(io::ErrorKind::NotFound, "no such directory", &parent));
                }
                st.create_file(path);
            }
            let id = st.next_lock;
            st.next_lock = st.next_lock.wrapping_add(1);
            st.locks.insert(path.to_path_buf(), id);
            id
        };
        Ok(Box::new(SimLock {
            state: Arc::clone(&self.state),
            path: path.to_path_buf(),
            id,
        }))
    }
}

// ---- handles and lock guards ----

/// An open simulated file: an inode id and the epoch it was opened in.
struct SimFile {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    ino: u64,
    epoch: u64,
}

impl fmt::Debug for SimFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimFile")
            .field("path", &self.path)
            .field("ino", &self.ino)
            .field("epoch", &self.epoch)
            .finish()
    }
}

impl SimFile {
    /// Runs a mutating data op: liveness, staleness, counting, failure, then the op that
    /// `make` returns for the current length (none: the call changes nothing) is applied to
    /// the current image and recorded as pending. One lock hold, so it is atomic.
    fn mutate(&self, make: impl FnOnce(u64) -> Option<DataOp>) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_handle(self.epoch)?;
        st.begin_plain_mutation()?;
        let seq = st.next_seq();
        let inode = st.inode_mut(self.ino)?;
        let mut logical = len64(&inode.current);
        let Some(op) = make(logical) else {
            return Ok(());
        };
        apply_op(&mut inode.current, &mut logical, u64::MAX, &op, None)?;
        inode.pending.push(Pending { seq, op });
        Ok(())
    }

    fn sync(&self) -> io::Result<()> {
        let mut st = self.state.lock();
        st.check_handle(self.epoch)?;
        let (idx, failed) = st.begin_mutation()?;
        st.sync_inode(self.ino, idx, failed)
    }
}

impl FileHandle for SimFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let st = self.state.lock();
        st.check_handle(self.epoch)?;
        let data = &st.inode(self.ino)?.current;
        let end = checked_end(offset, len64(buf))?;
        if end > len64(data) {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                "failed to fill whole buffer",
            ));
        }
        buf.copy_from_slice(&data[to_usize(offset)?..to_usize(end)?]);
        Ok(())
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        // Like pwrite, writing nothing changes nothing (not even the length).
        self.mutate(|_| {
            (!buf.is_empty()).then(|| DataOp::Write {
                offset,
                data: buf.to_vec(),
            })
        })
    }

    fn sync_data(&self) -> io::Result<()> {
        self.sync()
    }

    fn sync_all(&self) -> io::Result<()> {
        self.sync()
    }

    fn len(&self) -> io::Result<u64> {
        let st = self.state.lock();
        st.check_handle(self.epoch)?;
        Ok(len64(&st.inode(self.ino)?.current))
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.mutate(|_| Some(DataOp::SetLen(len)))
    }

    fn allocate(&self, len: u64) -> io::Result<()> {
        // Grows only: a shorter or equal length records no op (the call still counts).
        self.mutate(|current| (len > current).then_some(DataOp::SetLen(len)))
    }
}

impl Drop for SimFile {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        if st.epoch == self.epoch {
            if let Some(inode) = st.inodes.get_mut(&self.ino) {
                inode.open_handles = inode.open_handles.saturating_sub(1);
            }
            st.maybe_drop(self.ino);
        }
    }
}

/// A held simulated lock; dropping it releases the lock unless a restart already did.
struct SimLock {
    state: Arc<Mutex<State>>,
    path: PathBuf,
    id: u64,
}

impl fmt::Debug for SimLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimLock")
            .field("path", &self.path)
            .field("id", &self.id)
            .finish()
    }
}

impl LockGuard for SimLock {}

impl Drop for SimLock {
    fn drop(&mut self) {
        let mut st = self.state.lock();
        // Lock ids are never reused, so a guard from before a restart cannot release a
        // lock taken after it.
        if st.locks.get(&self.path) == Some(&self.id) {
            st.locks.remove(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_deterministic_and_below_stays_in_range() {
        let (mut a, mut b) = (Rng::new(42), Rng::new(42));
        let xs: Vec<u64> = (0..100).map(|_| a.next_u64()).collect();
        let ys: Vec<u64> = (0..100).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(Rng::new(43).next_u64(), xs[0]);
        let mut r = Rng::new(7);
        let seen: BTreeSet<u64> = (0..1000).map(|_| r.below(5)).collect();
        assert_eq!(seen, (0..5).collect());
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn apply_op_keeps_len_at_min_of_logical_and_limit() {
        let mut buf = vec![1u8; 10];
        let mut logical = 10;
        let grow = DataOp::Write {
            offset: 8,
            data: vec![2; 6],
        };
        apply_op(&mut buf, &mut logical, 10, &grow, None).unwrap();
        assert_eq!((logical, buf.len()), (14, 10));
        assert_eq!(buf[8..], [2, 2]);
        apply_op(&mut buf, &mut logical, 10, &DataOp::SetLen(4), None).unwrap();
        assert_eq!((logical, buf.len()), (4, 4));
        let past = DataOp::Write {
            offset: 6,
            data: vec![3; 2],
        };
        apply_op(&mut buf, &mut logical, 10, &past, None).unwrap();
        assert_eq!(buf, [1, 1, 1, 1, 0, 0, 3, 3], "a hole reads as zeros");
        let overflow = DataOp::Write {
            offset: u64::MAX,
            data: vec![0; 2],
        };
        let e = apply_op(&mut buf, &mut logical, 10, &overflow, None).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
    }

    #[test]
    fn dir_keys_treat_dot_and_empty_as_one_root() {
        assert!(is_root(Path::new("")) && is_root(Path::new(".")) && is_root(Path::new("/")));
        assert_eq!(parent_key(Path::new("f")), Some(PathBuf::new()));
        assert_eq!(parent_key(Path::new("./f")), Some(PathBuf::new()));
        assert_eq!(parent_key(Path::new("/a/b")), Some(PathBuf::from("/a")));
        assert!(file_parent(Path::new("/")).is_err());
    }
}
