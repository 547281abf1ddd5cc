//! Unit tests of the cache's edge paths; the model and stress tests live in `tests/`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use super::*;

const PS: usize = 16;

/// In-memory pages (page `id` initially filled with `id as u8`), with injectable faults.
#[derive(Default)]
struct MemIo {
    pages: Mutex<HashMap<PageId, Vec<u8>>>,
    reads: AtomicUsize,
    writes: Mutex<Vec<PageId>>,
    fail_reads: AtomicUsize,
    read_delay_ms: AtomicU64,
    write_delay_ms: AtomicU64,
}

impl MemIo {
    fn disk(&self, id: PageId) -> Vec<u8> {
        self.pages
            .lock()
            .get(&id)
            .cloned()
            .unwrap_or_else(|| vec![id as u8; PS])
    }
}

impl PageIo for MemIo {
    fn page_size(&self) -> usize {
        PS
    }
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()> {
        thread::sleep(Duration::from_millis(
            self.read_delay_ms.load(Ordering::SeqCst),
        ));
        self.reads.fetch_add(1, Ordering::SeqCst);
        let fail = self
            .fail_reads
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fail {
            return Err(Error::io(
                format!("reading page {id}"),
                io::Error::other("injected"),
            ));
        }
        buf.copy_from_slice(&self.disk(id));
        Ok(())
    }
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()> {
        thread::sleep(Duration::from_millis(
            self.write_delay_ms.load(Ordering::SeqCst),
        ));
        self.pages.lock().insert(id, buf.to_vec());
        self.writes.lock().push(id);
        Ok(())
    }
}

/// A log whose `flush_to` advances only when `advance` is set.
struct Gate {
    durable: AtomicU64,
    advance: AtomicBool,
    flushes: AtomicUsize,
}

impl Gate {
    fn new(advance: bool) -> Self {
        Gate {
            durable: AtomicU64::new(0),
            advance: AtomicBool::new(advance),
            flushes: AtomicUsize::new(0),
        }
    }
}

impl WalGate for Gate {
    fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::SeqCst)
    }
    fn flush_to(&self, lsn: Lsn) -> Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        if self.advance.load(Ordering::SeqCst) {
            self.durable.fetch_max(lsn, Ordering::SeqCst);
        }
        Ok(())
    }
}

fn cache(
    min: usize,
    max: usize,
    timeout_ms: u64,
    advance: bool,
) -> (PageCache, Arc<MemIo>, Arc<Gate>) {
    let io = Arc::new(MemIo::default());
    let gate = Arc::new(Gate::new(advance));
    let c = PageCache::new(
        io.clone(),
        gate.clone(),
        CacheConfig {
            min_pages: min,
            max_pages: max,
            pin_timeout: Duration::from_millis(timeout_ms),
        },
    )
    .unwrap();
    (c, io, gate)
}

#[test]
fn handles_are_send_and_sync() {
    fn check<T: Send + Sync>() {}
    check::<PageCache>();
    check::<PinnedPage>();
}

#[test]
fn config_is_validated() {
    let io = Arc::new(MemIo::default());
    let gate = Arc::new(Gate::new(true));
    let mk = |min, max| {
        PageCache::new(
            io.clone(),
            gate.clone(),
            CacheConfig {
                min_pages: min,
                max_pages: max,
                pin_timeout: Duration::ZERO,
            },
        )
    };
    assert!(matches!(
        mk(0, 0),
        Err(Error::InvalidConfig {
            param: "max_pages",
            ..
        })
    ));
    assert!(matches!(
        mk(3, 2),
        Err(Error::InvalidConfig {
            param: "min_pages",
            ..
        })
    ));
    assert!(mk(2, 2).is_ok());
}

#[test]
fn failed_read_returns_error_drops_frame_and_a_later_pin_retries() {
    let (c, io, _) = cache(0, 4, 10, true);
    io.fail_reads.store(1, Ordering::SeqCst);
    let err = c.pin(3).unwrap_err();
    assert!(err.is_io(), "{err}");
    let s = c.stats();
    assert_eq!((s.resident, s.pinned, s.misses, s.hits), (0, 0, 1, 0));
    let p = c.pin(3).unwrap();
    assert_eq!(&p.read()[..], &[3u8; PS]);
    assert_eq!(io.reads.load(Ordering::SeqCst), 2);
    let s = c.stats();
    assert_eq!((s.resident, s.pinned, s.misses), (1, 1, 2));
}

#[test]
fn every_waiter_on_a_failed_load_gets_the_error() {
    let (c, io, _) = cache(0, 4, 1000, true);
    let c = Arc::new(c);
    io.fail_reads.store(1, Ordering::SeqCst);
    io.read_delay_ms.store(200, Ordering::SeqCst);
    let loader = {
        let c = c.clone();
        thread::spawn(move || c.pin(5).map(|_| ()))
    };
    // Let the loader insert the frame; then these pins find it loading and wait on it.
    thread::sleep(Duration::from_millis(50));
    let waiters: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            thread::spawn(move || c.pin(5).map(|_| ()))
        })
        .collect();
    assert!(loader.join().unwrap().unwrap_err().is_io());
    for w in waiters {
        assert!(w.join().unwrap().unwrap_err().is_io());
    }
    // One read for all of them, and nothing left behind.
    assert_eq!(io.reads.load(Ordering::SeqCst), 1);
    let s = c.stats();
    assert_eq!((s.resident, s.pinned, s.misses, s.hits), (0, 0, 1, 0));
    io.read_delay_ms.store(0, Ordering::SeqCst);
    assert_eq!(c.pin(5).unwrap().read()[0], 5);
}

#[test]
fn cache_exhausted_after_the_timeout_when_all_frames_are_pinned() {
    let (c, _, _) = cache(0, 2, 60, true);
    let a = c.pin(0).unwrap();
    let _b = c.pin(1).unwrap();
    let t = Instant::now();
    match c.pin(2) {
        Err(Error::CacheExhausted { frames, waited_ms }) => {
            assert_eq!(frames, 2);
            assert!(waited_ms >= 60, "{waited_ms}");
        }
        other => panic!("expected CacheExhausted, got {other:?}"),
    }
    assert!(t.elapsed() >= Duration::from_millis(60));
    assert_eq!(c.stats().resident, 2);
    drop(a);
    assert_eq!(c.pin(2).unwrap().read()[0], 2);
    assert_eq!(c.stats().evictions, 1);
}

#[test]
fn a_pin_waits_for_an_unpin_instead_of_growing() {
    let (c, _, _) = cache(0, 1, 5000, true);
    let c = Arc::new(c);
    let held = c.pin(0).unwrap();
    let t = thread::spawn(move || {
        thread::sleep(Duration::from_millis(50));
        drop(held);
    });
    let p = c.pin(1).unwrap();
    assert_eq!(p.read()[0], 1);
    t.join().unwrap();
    assert_eq!(c.stats().resident, 1);
}

#[test]
fn the_wal_rule_holds_back_dirty_victims() {
    let (c, io, gate) = cache(0, 1, 20, false);
    {
        let p = c.pin(0).unwrap();
        p.write(7)[0] = 0xAA;
        assert_eq!(p.page_lsn(), Some(7));
    }
    // The log refuses to advance: the only frame is not writable, so no room.
    assert!(matches!(c.pin(1), Err(Error::CacheExhausted { .. })));
    assert!(io.writes.lock().is_empty());
    assert!(gate.flushes.load(Ordering::SeqCst) > 0);
    assert!(!c.try_evict(0).unwrap());
    // Once the log may advance, eviction forces it to LSN 7 and writes the page.
    gate.advance.store(true, Ordering::SeqCst);
    let p = c.pin(1).unwrap();
    assert_eq!(gate.durable_lsn(), 7);
    assert_eq!(*io.writes.lock(), vec![0]);
    assert_eq!(io.disk(0)[0], 0xAA);
    drop(p);
    let s = c.stats();
    assert_eq!((s.writebacks, s.evictions, s.dirty), (1, 1, 0));
}

#[test]
fn a_pin_during_write_back_cancels_the_eviction() {
    let (c, io, gate) = cache(0, 1, 5000, true);
    let c = Arc::new(c);
    {
        let p = c.pin(0).unwrap();
        p.write(1)[0] = 0xEE;
    }
    gate.durable.store(1, Ordering::SeqCst);
    io.write_delay_ms.store(200, Ordering::SeqCst);
    let evictor = {
        let c = c.clone();
        thread::spawn(move || c.pin(1).map(|p| p.read()[0]))
    };
    thread::sleep(Duration::from_millis(50));
    // Page 0 is being written back: this pin must find the frame (no disk read, and the
    // written bytes), and cancel the eviction.
    let reads = io.reads.load(Ordering::SeqCst);
    let p0 = c.pin(0).unwrap();
    assert_eq!(p0.read()[0], 0xEE);
    assert_eq!(io.reads.load(Ordering::SeqCst), reads);
    drop(p0);
    // The evictor retries and then evicts page 0 (now clean) without writing it again.
    assert_eq!(evictor.join().unwrap().unwrap(), 1);
    assert_eq!(*io.writes.lock(), vec![0]);
    let s = c.stats();
    assert_eq!(
        (s.resident, s.dirty, s.writebacks, s.evictions),
        (1, 0, 1, 1)
    );
}

#[test]
fn discard_drops_without_writing() {
    let (c, io, gate) = cache(0, 4, 10, true);
    gate.durable.store(100, Ordering::SeqCst);
    {
        let p = c.pin(1).unwrap();
        p.write(5)[0] = 0x11;
    }
    assert_eq!(c.stats().dirty, 1);
    c.discard(1);
    let s = c.stats();
    assert_eq!((s.resident, s.dirty, s.evictions), (0, 0, 0));
    assert_eq!(c.flush(u64::MAX).unwrap(), 0);
    assert!(io.writes.lock().is_empty());

    // Pinned: marked, never written, dropped at the last unpin.
    let a = c.pin(2).unwrap();
    let b = c.pin(2).unwrap();
    a.write(6)[0] = 0x22;
    c.discard(2);
    assert_eq!(c.stats().dirty, 0);
    assert!(c.dirty_pages().is_empty());
    assert_eq!(c.flush(u64::MAX).unwrap(), 0);
    drop(a);
    assert_eq!(c.stats().resident, 1);
    drop(b);
    let s = c.stats();
    assert_eq!((s.resident, s.pinned), (0, 0));
    assert!(io.writes.lock().is_empty());

    // Discarding an absent page is a no-op; a freed page can be reallocated.
    c.discard(42);
    let n = c.pin_new(2).unwrap();
    assert_eq!(&n.read()[..], &[0u8; PS]);
    n.write(9)[0] = 0x33;
    drop(n);
    assert_eq!(c.flush(u64::MAX).unwrap(), 1);
    assert_eq!(io.disk(2)[0], 0x33);
}

#[test]
fn pin_new_refuses_a_pinned_page_and_zeroes_a_resident_one() {
    let (c, io, _) = cache(0, 4, 10, true);
    let p = c.pin(3).unwrap();
    assert!(matches!(c.pin_new(3), Err(Error::InvalidArgument { .. })));
    drop(p);
    let n = c.pin_new(3).unwrap();
    assert_eq!(&n.read()[..], &[0u8; PS]);
    assert_eq!(io.reads.load(Ordering::SeqCst), 1);
    let m = c.pin_new(9).unwrap();
    assert_eq!(&m.read()[..], &[0u8; PS]);
    assert_eq!(io.reads.load(Ordering::SeqCst), 1);
}

#[test]
fn trim_shrinks_to_min_evicting_clean_frames_first() {
    let (c, io, gate) = cache(2, 8, 10, true);
    for id in 0..8 {
        let p = c.pin(id).unwrap();
        if id % 3 == 0 {
            // Pages 0, 3, 6 dirty, LSNs 10, 13, 16, none durable yet.
            p.write(10 + id)[1] = 0xD0 + id as u8;
        }
    }
    let pinned = c.pin(7).unwrap();
    assert_eq!(c.stats().dirty, 3);
    // The 4 unpinned clean frames (1, 2, 4, 5) go first; then only non-durable dirty
    // frames are left, so the log is forced once (to 16) and the least recently used
    // dirty frames (0, then 3) are written back and evicted. 6 and the pinned 7 remain.
    let evicted = c.trim().unwrap();
    assert_eq!(evicted, 6);
    let s = c.stats();
    assert_eq!((s.resident, s.pinned, s.dirty), (2, 1, 1));
    assert_eq!(gate.durable_lsn(), 16);
    assert_eq!(*io.writes.lock(), vec![0, 3]);
    assert_eq!(c.dirty_pages(), vec![(6, 16)]);
    assert_eq!(io.disk(3)[1], 0xD3);
    drop(pinned);
    // Already at min: nothing more.
    assert_eq!(c.trim().unwrap(), 0);
}

#[test]
fn recycled_frame_buffers_never_show_their_old_bytes() {
    // A cache of 2 frames: every further page evicts one, whose buffer is reused.
    let (c, io, _) = cache(0, 2, 10, true);
    for round in 0..3u64 {
        for id in 1..=4u64 {
            let p = c.pin(id).unwrap();
            assert_eq!(&p.read()[..], &io.disk(id)[..], "page {id}, round {round}");
            let mut w = p.write(1);
            w.fill(0xEE);
        }
        // A new page gets zeros, not a recycled buffer's 0xEE (or a disk image).
        let n = c.pin_new(100 + round).unwrap();
        assert_eq!(&n.read()[..], &[0u8; PS]);
        drop(n);
        c.discard(100 + round);
    }
    // Dirty 0xEE pages were written back before their buffers were reused.
    for id in 1..=4u64 {
        assert_eq!(io.disk(id), vec![0xEE; PS]);
    }
    assert!(c.stats().misses >= 12);
}
