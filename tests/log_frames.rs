//! transaction.log on its own: append, group flush, replay, torn tails, damaged synced
//! frames, and recycling into a new generation.

use std::path::Path;
use std::sync::Arc;

use stowage::file::{CrashOutcome, FileHandle, FileSystem, LockGuard, OpenMode, RealFs, SimFs};
use stowage::log::frame::{FrameKind, LOG_FILE};
use stowage::log::{Durability, Log};
use stowage::planted::PlantedBugs;
use stowage::poison::Poison;
use stowage::Error;

const DIR: &str = "/s";

fn open(sim: &SimFs) -> (Log, stowage::log::Found) {
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    if !sim.exists(Path::new(DIR)).unwrap() {
        fs.create_dir_all(Path::new(DIR)).unwrap();
    }
    Log::open(
        fs.as_ref(),
        Path::new(DIR),
        64 * 1024,
        0,
        Arc::new(Poison::new()),
        PlantedBugs::default(),
    )
    .unwrap()
}

fn replayed(sim: &SimFs) -> Result<Vec<(u64, Vec<u8>)>, Error> {
    let (log, found) = open(sim);
    let mut frames = Vec::new();
    log.replay(found, |f| {
        frames.push((f.lsn, f.payload));
        Ok(())
    })?;
    Ok(frames)
}

fn log_path() -> std::path::PathBuf {
    Path::new(DIR).join(LOG_FILE)
}

#[test]
fn appended_frames_replay_in_order_after_reopen() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    for i in 0..10u8 {
        let lsn = log
            .append(FrameKind::Commit, &vec![i; i as usize * 100])
            .unwrap();
        assert_eq!(lsn, u64::from(i) + 1);
        log.flush(lsn, Durability::Sync).unwrap();
    }
    assert_eq!(log.durable_lsn(), 10);
    drop(log);
    let frames = replayed(&sim).unwrap();
    assert_eq!(frames.len(), 10);
    for (i, (lsn, p)) in frames.iter().enumerate() {
        assert_eq!(*lsn, i as u64 + 1);
        assert_eq!(p, &vec![i as u8; i * 100]);
    }
}

#[test]
fn one_flush_covers_every_frame_appended_before_it() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    let lsns: Vec<u64> = (0..5)
        .map(|_| log.append(FrameKind::Commit, b"x").unwrap())
        .collect();
    log.flush(lsns[4], Durability::Sync).unwrap();
    for l in &lsns {
        log.flush(*l, Durability::Sync).unwrap();
    }
    let st = log.stats();
    assert_eq!(
        (st.writes, st.syncs),
        (1, 1),
        "one write and one sync for the group"
    );
    assert_eq!(st.group_sizes[2], 1, "a group of 5 lands in bucket 4..8");
}

#[test]
fn a_garbage_tail_is_cut_off_and_the_frames_before_it_kept() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    for _ in 0..3 {
        let l = log.append(FrameKind::Commit, &[7u8; 600]).unwrap();
        log.flush(l, Durability::Sync).unwrap();
    }
    drop(log);
    let mut bytes = sim.read_file(&log_path()).unwrap();
    let clean = bytes.clone();
    // Garbage where the fourth frame would go (after three 1024-byte batches).
    let tail = 1024 + 3 * 1024;
    for b in &mut bytes[tail..tail + 700] {
        *b = 0x5A;
    }
    sim.write_file_durable(&log_path(), &bytes);
    assert_eq!(replayed(&sim).unwrap().len(), 3);
    // A torn last frame: its header survives, part of its payload does not.
    let mut torn = clean;
    torn[1024 + 2 * 1024 + 600] ^= 0xFF;
    sim.write_file_durable(&log_path(), &torn);
    assert_eq!(replayed(&sim).unwrap().len(), 2);
}

#[test]
fn a_damaged_frame_before_one_known_durable_is_corruption() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    for _ in 0..4 {
        let l = log.append(FrameKind::Commit, &[1u8; 100]).unwrap();
        log.flush(l, Durability::Sync).unwrap();
    }
    drop(log);
    let mut bytes = sim.read_file(&log_path()).unwrap();
    // Frame 2 (second batch) damaged; frames 3 and 4 record the log durable past it.
    bytes[1024 + 512 + 40] ^= 1;
    sim.write_file_durable(&log_path(), &bytes);
    match replayed(&sim) {
        Err(Error::Corruption { file, location, .. }) => {
            assert_eq!(file, LOG_FILE);
            assert!(location.contains("offset 1536"), "{location}");
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[test]
fn unsynced_frames_lost_in_a_gap_are_not_corruption() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    let a = log.append(FrameKind::Commit, &[1u8; 100]).unwrap();
    log.flush(a, Durability::Flush).unwrap();
    let b = log.append(FrameKind::Commit, &[2u8; 100]).unwrap();
    log.flush(b, Durability::Flush).unwrap();
    drop(log);
    // The first (never synced) batch is lost, the second survived: only a torn tail.
    let mut bytes = sim.read_file(&log_path()).unwrap();
    bytes[1024..1536].fill(0);
    sim.write_file_durable(&log_path(), &bytes);
    assert_eq!(replayed(&sim).unwrap().len(), 0);
}

#[test]
fn recycling_starts_a_generation_whose_stale_predecessors_are_ignored() {
    let sim = SimFs::new();
    let (log, found) = open(&sim);
    log.replay(found, |_| Ok(())).unwrap();
    for _ in 0..5 {
        let l = log.append(FrameKind::Commit, &[3u8; 50]).unwrap();
        log.flush(l, Durability::Sync).unwrap();
    }
    log.recycle(5).unwrap();
    let l = log.append(FrameKind::Commit, &[4u8; 50]).unwrap();
    assert_eq!(l, 6);
    log.flush(l, Durability::Sync).unwrap();
    drop(log);
    let frames = replayed(&sim).unwrap();
    assert_eq!(
        frames,
        vec![(6, vec![4u8; 50])],
        "frames 2..=5 of the old generation are stale"
    );
    assert_eq!(log_stats_generation(&sim), 2);
}

fn log_stats_generation(sim: &SimFs) -> u32 {
    open(sim).0.stats().generation
}

#[test]
fn a_failed_sync_poisons_the_log() {
    let sim = SimFs::new();
    let (log, _) = open(&sim);
    let l = log.append(FrameKind::Commit, b"a").unwrap();
    sim.fail_call(sim.mutating_calls() + 1); // the write succeeds, the sync fails
    assert!(matches!(
        log.flush(l, Durability::Sync),
        Err(Error::Io { .. })
    ));
    assert!(matches!(
        log.append(FrameKind::Commit, b"b"),
        Err(Error::Poisoned { .. })
    ));
    assert!(matches!(
        log.flush(l, Durability::Sync),
        Err(Error::Poisoned { .. })
    ));
}

#[test]
fn a_log_that_is_not_ours_is_refused() {
    let sim = SimFs::new();
    sim.write_file_durable(&log_path(), &[0x42; 4096]);
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    let e = Log::open(
        fs.as_ref(),
        Path::new(DIR),
        4096,
        0,
        Arc::new(Poison::new()),
        PlantedBugs::default(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("transaction.log"), "{e}");
}

/// Opens the log on real files in `dir`, replaying what is there.
fn open_real(dir: &Path) -> (Log, Vec<(u64, Vec<u8>)>) {
    let (log, found) = Log::open(
        &RealFs::new(),
        dir,
        64 * 1024,
        0,
        Arc::new(Poison::new()),
        PlantedBugs::default(),
    )
    .unwrap();
    let mut frames = Vec::new();
    log.replay(found, |f| {
        frames.push((f.lsn, f.payload));
        Ok(())
    })
    .unwrap();
    (log, frames)
}

/// The real file layer writes batches unbuffered (O_DIRECT) where the file system allows
/// it: every batch must then be aligned in memory, offset and length, or the write fails
/// with EINVAL. Frames of awkward sizes, several to a batch, batches that end mid-sector,
/// a recycle and a log that grows past its preallocation must all read back exactly, and
/// through the buffered handle that recovery reads with.
#[test]
fn unbuffered_batches_on_real_files_replay_exactly() {
    // On the build's disk, not a tmpfs that may refuse O_DIRECT.
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let dir = tmp.path();
    let (log, fresh) = open_real(dir);
    assert!(fresh.is_empty());
    let direct_possible = RealFs::new()
        .open_direct(&dir.join(LOG_FILE))
        .unwrap()
        .is_some();
    assert_eq!(log.is_direct(), direct_possible);
    let sizes = [
        0usize, 1, 479, 480, 481, 511, 512, 513, 4096, 4095, 100_000, 7,
    ];
    let mut model = Vec::new();
    let mut round = 0u8;
    let mut write_round = |log: &Log, model: &mut Vec<(u64, Vec<u8>)>| {
        round += 1;
        for (i, &n) in sizes.iter().enumerate() {
            let payload = vec![round.wrapping_mul(31).wrapping_add(i as u8); n];
            let lsn = log.append(FrameKind::Commit, &payload).unwrap();
            model.push((lsn, payload));
            // Some frames share a batch, some end one on their own; Flush writes without
            // syncing.
            match i % 3 {
                0 => log.flush(lsn, Durability::Sync).unwrap(),
                1 => log.flush(lsn, Durability::Flush).unwrap(),
                _ => {}
            }
        }
        let last = model.last().map(|f| f.0).unwrap();
        log.flush(last, Durability::Sync).unwrap();
    };
    write_round(&log, &mut model);
    // A new generation: the old frames are gone, new ones start after them.
    let base = model.last().map(|f| f.0).unwrap();
    log.recycle(base).unwrap();
    model.clear();
    // Past the 64 KiB preallocation, so the file grows under unbuffered writes.
    for _ in 0..3 {
        write_round(&log, &mut model);
    }
    assert!(log.size_since_recycle() > 64 * 1024);
    drop(log);
    let (_, frames) = open_real(dir);
    assert_eq!(frames.len(), model.len());
    assert!(frames == model, "replayed frames differ from those written");
}

/// A file system that hands out a direct handle (as one whose probe read passed would)
/// whose every write is refused with EINVAL.
#[derive(Debug, Clone)]
struct RefusesDirectWrites(SimFs);

#[derive(Debug)]
struct RefusingHandle;

fn einval() -> std::io::Error {
    std::io::Error::from(std::io::ErrorKind::InvalidInput)
}

impl FileHandle for RefusingHandle {
    fn read_exact_at(&self, _: &mut [u8], _: u64) -> std::io::Result<()> {
        Err(einval())
    }
    fn write_all_at(&self, _: &[u8], _: u64) -> std::io::Result<()> {
        Err(einval())
    }
    fn sync_data(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn sync_all(&self) -> std::io::Result<()> {
        Ok(())
    }
    fn len(&self) -> std::io::Result<u64> {
        Ok(0)
    }
    fn set_len(&self, _: u64) -> std::io::Result<()> {
        Err(einval())
    }
    fn allocate(&self, _: u64) -> std::io::Result<()> {
        Err(einval())
    }
}

impl FileSystem for RefusesDirectWrites {
    fn open(&self, path: &Path, mode: OpenMode) -> std::io::Result<Arc<dyn FileHandle>> {
        self.0.open(path, mode)
    }
    fn open_direct(&self, _: &Path) -> std::io::Result<Option<Arc<dyn FileHandle>>> {
        Ok(Some(Arc::new(RefusingHandle)))
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.0.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.0.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.0.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.0.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        self.0.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.0.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn LockGuard>> {
        self.0.lock(path)
    }
}

/// A file system that takes O_DIRECT at open but refuses its writes must not poison the
/// log: the refused batch, and every later one, go through the buffered handle, and every
/// acknowledged frame replays.
#[test]
fn a_refused_unbuffered_write_falls_back_to_buffered_writes_without_poisoning() {
    let sim = SimFs::new();
    let fs = RefusesDirectWrites(sim.clone());
    fs.create_dir_all(Path::new(DIR)).unwrap();
    fs.sync_dir(Path::new("/")).unwrap();
    let (log, found) = Log::open(
        &fs,
        Path::new(DIR),
        64 * 1024,
        0,
        Arc::new(Poison::new()),
        PlantedBugs::default(),
    )
    .unwrap();
    log.replay(found, |_| Ok(())).unwrap();
    assert!(log.is_direct());
    let mut model = Vec::new();
    for i in 0..5u8 {
        let payload = vec![i; 700];
        let lsn = log.append(FrameKind::Commit, &payload).unwrap();
        log.flush(lsn, Durability::Sync).unwrap();
        model.push((lsn, payload));
    }
    assert!(
        !log.is_direct(),
        "still sending batches to the refusing handle"
    );
    drop(log);
    // Power loss, keeping a random subset of what was never synced: every frame above was
    // acknowledged after a sync, so all of them must come back.
    sim.crash_now();
    sim.restart(CrashOutcome::PowerLossSubset, 7);
    assert_eq!(replayed(&sim).unwrap(), model);
}
