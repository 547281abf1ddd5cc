//! Stress test of the page cache: 8 threads pin, read and write random pages of a working
//! set 4x the cache, each page carrying a self-checking pattern (version counter, id,
//! body derived from both, CRC); a background thread advances the durable LSN. The io
//! checks the WAL rule, that a page is never written by two write-backs at once, and
//! that a page is never read while a write-back of it is in flight (which would mean its
//! frame left the cache too early). At the end everything is flushed and every page on
//! the io must be exactly its last write.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use stowage::cache::{CacheConfig, Lsn, PageCache, PageId, PageIo, WalGate};
use stowage::Result;

const PS: usize = 128;
const PAGES: u64 = 256;
const CACHE: usize = 64;
const THREADS: usize = 8;
const OPS: usize = 20_000;

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

/// Page layout: [0..8) LSN, [8..16) version, [16..24) id, body, last 4 bytes CRC32.
fn seal(b: &mut [u8], id: PageId, version: u64, lsn: Lsn) {
    b[..8].copy_from_slice(&lsn.to_le_bytes());
    b[8..16].copy_from_slice(&version.to_le_bytes());
    b[16..24].copy_from_slice(&id.to_le_bytes());
    for (i, x) in b[24..PS - 4].iter_mut().enumerate() {
        *x = (version
            .wrapping_mul(31)
            .wrapping_add(id)
            .wrapping_add(i as u64)) as u8;
    }
    let crc = crc32fast::hash(&b[..PS - 4]);
    b[PS - 4..].copy_from_slice(&crc.to_le_bytes());
}

/// Checks the pattern; returns the version.
fn verify(b: &[u8], id: PageId) -> std::result::Result<u64, String> {
    let crc = crc32fast::hash(&b[..PS - 4]);
    if b[PS - 4..] != crc.to_le_bytes() {
        return Err(format!("page {id}: bad CRC"));
    }
    if u64_at(b, 16) != id {
        return Err(format!("page {id}: holds page {}", u64_at(b, 16)));
    }
    let version = u64_at(b, 8);
    let mut want = vec![0u8; PS];
    seal(&mut want, id, version, u64_at(b, 0));
    if want != b {
        return Err(format!("page {id}: bad body"));
    }
    Ok(version)
}

struct Gate {
    durable: AtomicU64,
    next: Arc<AtomicU64>,
    flushes: AtomicUsize,
}

impl WalGate for Gate {
    fn durable_lsn(&self) -> Lsn {
        self.durable.load(Ordering::SeqCst)
    }
    fn flush_to(&self, lsn: Lsn) -> Result<()> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        thread::sleep(Duration::from_micros(50)); // an "fsync"
        let issued = self.next.load(Ordering::SeqCst);
        self.durable.fetch_max(lsn.min(issued), Ordering::SeqCst);
        Ok(())
    }
}

struct MemIo {
    gate: Arc<Gate>,
    pages: Vec<Mutex<Vec<u8>>>,
    writing: Vec<AtomicBool>,
    violations: Mutex<Vec<String>>,
}

impl MemIo {
    fn violation(&self, s: String) {
        self.violations.lock().push(s);
    }
}

impl PageIo for MemIo {
    fn page_size(&self) -> usize {
        PS
    }
    fn read_page(&self, id: PageId, buf: &mut [u8]) -> Result<()> {
        if self.writing[id as usize].load(Ordering::SeqCst) {
            self.violation(format!("page {id} read while being written back"));
        }
        buf.copy_from_slice(&self.pages[id as usize].lock());
        Ok(())
    }
    fn write_page(&self, id: PageId, buf: &[u8]) -> Result<()> {
        if self.writing[id as usize].swap(true, Ordering::SeqCst) {
            self.violation(format!("page {id} written by two write-backs at once"));
        }
        let durable = self.gate.durable_lsn();
        if u64_at(buf, 0) > durable {
            self.violation(format!(
                "page {id} at LSN {} written with the log durable to {durable}",
                u64_at(buf, 0)
            ));
        }
        if let Err(e) = verify(buf, id) {
            self.violation(format!("torn write-back: {e}"));
        }
        thread::sleep(Duration::from_micros(5)); // widen the race window
        *self.pages[id as usize].lock() = buf.to_vec();
        self.writing[id as usize].store(false, Ordering::SeqCst);
        Ok(())
    }
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn eight_threads_over_a_working_set_four_times_the_cache() {
    let next = Arc::new(AtomicU64::new(0));
    let gate = Arc::new(Gate {
        durable: AtomicU64::new(0),
        next: next.clone(),
        flushes: AtomicUsize::new(0),
    });
    let io = Arc::new(MemIo {
        gate: gate.clone(),
        pages: (0..PAGES)
            .map(|id| {
                let mut b = vec![0u8; PS];
                seal(&mut b, id, 0, 0);
                Mutex::new(b)
            })
            .collect(),
        writing: (0..PAGES).map(|_| AtomicBool::new(false)).collect(),
        violations: Mutex::new(Vec::new()),
    });
    let cache = Arc::new(
        PageCache::new(
            io.clone(),
            gate.clone(),
            CacheConfig {
                min_pages: 16,
                max_pages: CACHE,
                pin_timeout: Duration::from_secs(5),
            },
        )
        .unwrap(),
    );
    // The version each page was last written with (stored under the page's write latch).
    let expected: Arc<Vec<AtomicU64>> = Arc::new((0..PAGES).map(|_| AtomicU64::new(0)).collect());
    let pins = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();

    let advancer = {
        let (gate, next, stop) = (gate.clone(), next.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                gate.durable
                    .fetch_max(next.load(Ordering::SeqCst), Ordering::SeqCst);
                thread::sleep(Duration::from_micros(300));
            }
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let (cache, expected, next, pins) =
                (cache.clone(), expected.clone(), next.clone(), pins.clone());
            thread::spawn(move || -> std::result::Result<(), String> {
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((t as u64 + 1) * 0x1234_5678_9ABC));
                for i in 0..OPS {
                    let a = rng.next() % PAGES;
                    let mut ids = vec![a];
                    if rng.next() % 3 == 0 {
                        let b = rng.next() % PAGES;
                        if b != a {
                            ids.push(b);
                        }
                    }
                    // At most two pages pinned at once by this thread.
                    let mut held = Vec::new();
                    for &id in &ids {
                        held.push(cache.pin(id).map_err(|e| format!("pin {id}: {e}"))?);
                        pins.fetch_add(1, Ordering::SeqCst);
                    }
                    for p in &held {
                        let id = p.id();
                        if rng.next() % 2 == 0 {
                            let r = p.read();
                            let v = verify(&r, id)?;
                            if v > expected[id as usize].load(Ordering::SeqCst) {
                                return Err(format!("page {id}: version from the future"));
                            }
                        } else {
                            let lsn = next.fetch_add(1, Ordering::SeqCst) + 1;
                            let mut w = p.write(lsn);
                            let v = verify(&w, id)?;
                            if v != expected[id as usize].load(Ordering::SeqCst) {
                                return Err(format!("page {id}: lost update (saw version {v})"));
                            }
                            seal(&mut w, id, v + 1, lsn);
                            expected[id as usize].store(v + 1, Ordering::SeqCst);
                        }
                    }
                    drop(held);
                    match i % 997 {
                        0 => {
                            cache
                                .flush(next.load(Ordering::SeqCst))
                                .map_err(|e| e.to_string())?;
                        }
                        500 => {
                            cache.trim().map_err(|e| e.to_string())?;
                        }
                        _ => {}
                    }
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap().unwrap();
    }
    stop.store(true, Ordering::SeqCst);
    advancer.join().unwrap();
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(60), "took {elapsed:?}");

    let s = cache.stats();
    assert_eq!(s.pinned, 0);
    assert!(s.resident <= CACHE);
    assert_eq!(s.hits + s.misses, pins.load(Ordering::SeqCst) as u64);
    assert!(s.evictions > 0 && s.writebacks > 0, "{s:?}");

    cache.flush(Lsn::MAX).unwrap();
    let s = cache.stats();
    assert_eq!(s.dirty, 0, "{s:?}");
    assert!(cache.dirty_pages().is_empty());
    let v = io.violations.lock().clone();
    assert!(v.is_empty(), "{v:?}");
    for id in 0..PAGES {
        let disk = io.pages[id as usize].lock().clone();
        let version = verify(&disk, id).unwrap();
        assert_eq!(
            version,
            expected[id as usize].load(Ordering::SeqCst),
            "page {id}"
        );
    }
    eprintln!(
        "stress: {elapsed:?}, {s:?}, log flushes {}",
        gate.flushes.load(Ordering::SeqCst)
    );
}
