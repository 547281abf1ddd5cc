//! Online backup and restore: round trip, a backup taken while 4 threads commit, generations,
//! damaged save sets, and a crash sweep over backup and restore.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use stowage::file::{CrashOutcome, FileSystem, SimFs};
use stowage::kernel::OpenOptions;
use stowage::{Durability, DurableSubscription, Error, NewMessage, Store, StoreConfig, Xid};

fn config() -> StoreConfig {
    StoreConfig {
        initial_db_size_pages: 32,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

type Contents = BTreeMap<String, Vec<(u64, Vec<u8>)>>;

fn contents(s: &Store) -> Contents {
    s.queues()
        .unwrap()
        .into_iter()
        .map(|q| {
            let m = s.messages(&q.name, 0, usize::MAX).unwrap();
            (q.name, m.into_iter().map(|m| (m.key, m.payload)).collect())
        })
        .collect()
}

fn fill(s: &Store) {
    s.create_queue("a").unwrap();
    s.create_queue("b").unwrap();
    let mut tx = s.begin();
    for i in 0..50u32 {
        tx.insert(
            "a",
            NewMessage::new(i.to_le_bytes().repeat(1 + i as usize % 300)),
        )
        .unwrap();
    }
    tx.insert("b", NewMessage::new(vec![5; 9000])).unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.insert("b", NewMessage::new(b"in doubt".to_vec()))
        .unwrap();
    tx.prepare(Xid::new(1, b"backup", b"").unwrap()).unwrap();
    s.save_durable(&DurableSubscription {
        client_id: "c$1".into(),
        name: "d/2".into(),
        topic: "t".into(),
        selector: None,
        no_local: false,
    })
    .unwrap();
}

#[test]
fn a_restored_save_set_opens_to_the_backed_up_state() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store"), config()).unwrap();
    fill(&s);
    let before = contents(&s);
    let set = s.backup_to(dir.path().join("backups")).unwrap();
    assert!(set
        .path
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with("saveset_"));
    assert!(
        set.path.to_str().unwrap().ends_with("_2048"),
        "{}",
        set.path.display()
    );
    assert!(set.path.join(".completed").exists());
    // Later changes are not in the save set.
    let mut tx = s.begin();
    tx.insert("a", NewMessage::new(b"after".to_vec())).unwrap();
    tx.commit().unwrap();
    let set2 = s.backup_to(dir.path().join("backups")).unwrap();
    assert_ne!(set.path, set2.path, "two backups never collide");
    s.close().unwrap();

    Store::restore(&set.path, dir.path().join("restored")).unwrap();
    let r = Store::open(dir.path().join("restored"), config()).unwrap();
    assert_eq!(contents(&r), before);
    assert_eq!(
        r.prepared().unwrap(),
        vec![Xid::new(1, b"backup", b"").unwrap()]
    );
    assert_eq!(r.durables().unwrap().len(), 1);
    assert!(r.check().unwrap().is_clean());
    let e = Store::restore(&set.path, dir.path().join("restored")).unwrap_err();
    assert!(
        matches!(e, Error::InvalidArgument { .. }),
        "restore over a store: {e}"
    );
}

#[test]
fn a_backup_during_four_committing_threads_restores_a_prefix_of_each() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store"), config()).unwrap();
    s.create_queue("q").unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let threads: Vec<_> = (0..4u8)
        .map(|t| {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut n = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let mut tx = s.begin();
                    let mut p = vec![t];
                    p.extend_from_slice(&n.to_le_bytes());
                    p.resize(200 + (n as usize % 700), t);
                    tx.insert("q", NewMessage::new(p)).unwrap();
                    tx.commit_with(Durability::Sync).unwrap();
                    n += 1;
                }
                n
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(150));
    let set = s.backup_to(dir.path().join("b")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(50));
    stop.store(true, Ordering::Relaxed);
    let totals: Vec<u32> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    s.close().unwrap();
    Store::restore(&set.path, dir.path().join("r")).unwrap();
    let r = Store::open(dir.path().join("r"), config()).unwrap();
    assert!(r.check().unwrap().is_clean());
    let mut seen: BTreeMap<u8, Vec<u32>> = BTreeMap::new();
    for m in r.messages("q", 0, usize::MAX).unwrap() {
        let n = u32::from_le_bytes(m.payload[1..5].try_into().unwrap());
        seen.entry(m.payload[0]).or_default().push(n);
    }
    for t in 0..4u8 {
        let got = seen.remove(&t).unwrap_or_default();
        let want: Vec<u32> = (0..got.len() as u32).collect();
        assert_eq!(got, want, "thread {t}: not a prefix of its commits");
        assert!((got.len() as u32) <= totals[t as usize]);
    }
}

#[test]
fn backup_keeps_the_configured_generations_and_drops_incomplete_sets() {
    let dir = tempfile::tempdir().unwrap();
    let base = dir.path().join("backups");
    let cfg = StoreConfig {
        backup_path: Some(base.clone()),
        backup_keep_generations: 2,
        ..config()
    };
    let s = Store::open(dir.path().join("store"), cfg).unwrap();
    s.create_queue("q").unwrap();
    std::fs::create_dir_all(base.join("saveset_19990101T000000Z_2048")).unwrap(); // incomplete
    let mut sets = Vec::new();
    for i in 0..4u8 {
        let mut tx = s.begin();
        tx.insert("q", NewMessage::new(vec![i])).unwrap();
        tx.commit().unwrap();
        sets.push(s.backup().unwrap());
    }
    let mut left: Vec<PathBuf> = std::fs::read_dir(&base)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    left.sort();
    assert_eq!(left, vec![sets[2].path.clone(), sets[3].path.clone()]);
    let none = Store::open(dir.path().join("s2"), config()).unwrap();
    assert!(matches!(
        none.backup(),
        Err(Error::InvalidConfig {
            param: "backup_path",
            ..
        })
    ));
}

#[test]
fn a_damaged_or_incomplete_save_set_is_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store"), config()).unwrap();
    fill(&s);
    let set = s.backup_to(dir.path().join("b")).unwrap().path;
    s.close().unwrap();
    for (name, at) in [
        ("page.db", 5000),
        ("transaction.log", 1100),
        ("MANIFEST", 3),
    ] {
        let p = set.join(name);
        let good = std::fs::read(&p).unwrap();
        let mut bad = good.clone();
        bad[at] ^= 0x40;
        std::fs::write(&p, &bad).unwrap();
        let target = dir.path().join(format!("t-{name}"));
        match Store::restore(&set, &target) {
            Err(Error::Corruption { file, .. }) => {
                assert!(file.ends_with(name) || name == "MANIFEST", "{file}")
            }
            other => panic!("{name}: {other:?}"),
        }
        assert!(
            !target.join("page.db").exists(),
            "nothing copied from a damaged set"
        );
        std::fs::write(&p, &good).unwrap();
    }
    std::fs::remove_file(set.join(".completed")).unwrap();
    assert!(matches!(
        Store::restore(&set, dir.path().join("t")),
        Err(Error::Corruption { .. })
    ));
}

fn sim_store(sim: &SimFs, dir: &str) -> stowage::Result<Store> {
    Store::open_with(
        Arc::new(sim.clone()),
        Path::new(dir),
        StoreConfig {
            initial_db_size_pages: 16,
            ..config()
        },
        OpenOptions {
            no_background_threads: true,
            log_prealloc: Some(16 * 1024),
            ..OpenOptions::default()
        },
    )
}

/// Crash at every I/O call of a backup and of a restore, with every outcome: the store is
/// never harmed, and a save set that has its `.completed` marker restores to the state.
#[test]
fn crashes_during_backup_and_restore_never_harm_the_store_or_serve_a_bad_set() {
    let build = |sim: &SimFs| -> Contents {
        let s = sim_store(sim, "/s").unwrap();
        fill(&s);
        let c = contents(&s);
        drop(s);
        c
    };
    // Reference: count the backup's calls, then the restore's.
    let sim = SimFs::new();
    let want = build(&sim);
    let s = sim_store(&sim, "/s").unwrap();
    let before = sim.mutating_calls();
    let set = s.backup_to("/b").unwrap().path;
    let backup_calls = sim.mutating_calls() - before;
    drop(s);
    let before = sim.mutating_calls();
    Store::restore_with(&sim, &set, Path::new("/r")).unwrap();
    let restore_calls = sim.mutating_calls() - before;
    let mut states = 0;
    for phase in ["backup", "restore"] {
        let calls = if phase == "backup" {
            backup_calls
        } else {
            restore_calls
        };
        for point in 0..calls {
            for (o, outcome) in CrashOutcome::ALL.into_iter().enumerate() {
                let sim = SimFs::new();
                build(&sim);
                let set = if phase == "restore" {
                    let s = sim_store(&sim, "/s").unwrap();
                    let p = s.backup_to("/b").unwrap().path;
                    drop(s);
                    Some(p)
                } else {
                    None
                };
                let s = if phase == "backup" {
                    Some(sim_store(&sim, "/s").unwrap())
                } else {
                    None
                };
                sim.set_crash_at(Some(sim.mutating_calls() + point));
                let made = match (&s, &set) {
                    (Some(s), _) => s.backup_to("/b").ok().map(|x| x.path),
                    (None, Some(p)) => Store::restore_with(&sim, p, Path::new("/r"))
                        .ok()
                        .map(|()| p.clone()),
                    _ => None,
                };
                drop(s);
                sim.restart(outcome, point * 7 + o as u64);
                states += 1;
                let ctx = format!("{phase} point {point} {outcome:?}");
                let store =
                    sim_store(&sim, "/s").unwrap_or_else(|e| panic!("{ctx}: store harmed: {e}"));
                assert_eq!(contents(&store), want, "{ctx}: store changed");
                drop(store);
                let _ = made;
                // Any save set that claims completeness must restore to the state.
                let fs: &dyn FileSystem = &sim;
                if let Ok(names) = fs.read_dir(Path::new("/b")) {
                    for n in names {
                        let p = Path::new("/b").join(&n);
                        if !fs.exists(&p.join(".completed")).unwrap() {
                            continue;
                        }
                        let target = format!("/check-{n}");
                        if fs
                            .exists(Path::new(&target).join("page.db").as_path())
                            .unwrap()
                        {
                            continue;
                        }
                        Store::restore_with(&sim, &p, Path::new(&target)).unwrap_or_else(|e| {
                            panic!("{ctx}: a complete save set fails to restore: {e}")
                        });
                        let r = sim_store(&sim, &target)
                            .unwrap_or_else(|e| panic!("{ctx}: restored store: {e}"));
                        assert_eq!(contents(&r), want, "{ctx}: restored state differs");
                    }
                }
                // A restore target either fails to open cleanly as a store or holds the state.
                if phase == "restore" {
                    if let Ok(r) = sim_store(&sim, "/r") {
                        let c = contents(&r);
                        assert!(
                            c == want || c.is_empty(),
                            "{ctx}: half-restored store served"
                        );
                    }
                }
            }
        }
    }
    println!("backup/restore crash sweep: {backup_calls} + {restore_calls} I/O calls, {states} crash states");
}

/// A file layer over the simulator that runs a hook once, when the log is next opened
/// (the backup opens it to copy it, after copying page.db).
struct HookOnLogOpen {
    inner: Arc<SimFs>,
    hook: parking_lot::Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl std::fmt::Debug for HookOnLogOpen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HookOnLogOpen").finish_non_exhaustive()
    }
}

impl FileSystem for HookOnLogOpen {
    fn open(
        &self,
        path: &Path,
        mode: stowage::file::OpenMode,
    ) -> std::io::Result<Arc<dyn stowage::file::FileHandle>> {
        if path.ends_with("transaction.log") {
            let hook = self.hook.lock().take();
            if let Some(hook) = hook {
                hook();
            }
        }
        self.inner.open(path, mode)
    }
    fn exists(&self, path: &Path) -> std::io::Result<bool> {
        self.inner.exists(path)
    }
    fn create_dir_all(&self, path: &Path) -> std::io::Result<()> {
        self.inner.create_dir_all(path)
    }
    fn read_dir(&self, path: &Path) -> std::io::Result<Vec<String>> {
        self.inner.read_dir(path)
    }
    fn rename(&self, from: &Path, to: &Path) -> std::io::Result<()> {
        self.inner.rename(from, to)
    }
    fn remove_file(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_file(path)
    }
    fn remove_dir(&self, path: &Path) -> std::io::Result<()> {
        self.inner.remove_dir(path)
    }
    fn sync_dir(&self, path: &Path) -> std::io::Result<()> {
        self.inner.sync_dir(path)
    }
    fn lock(&self, path: &Path) -> std::io::Result<Box<dyn stowage::file::LockGuard>> {
        self.inner.lock(path)
    }
}

/// CI found it (4 threads committing during a backup): page.db grew between its copy and
/// the log's, the copied log recorded the growth, and the restored store refused to open
/// ("the log records 288 pages but the file holds 524288 bytes").
#[test]
fn backup_while_page_db_grows_between_the_copies() {
    let sim = Arc::new(SimFs::new());
    let fs = Arc::new(HookOnLogOpen {
        inner: sim.clone(),
        hook: parking_lot::Mutex::new(None),
    });
    let dir = Path::new("/store");
    let s = Store::open_with(fs.clone(), dir, config(), OpenOptions::default()).unwrap();
    s.create_queue("q").unwrap();
    let publish = |s: &Store, from: u32, to: u32| {
        for i in from..to {
            let mut tx = s.begin();
            tx.insert("q", NewMessage::new(vec![i as u8; 1500]))
                .unwrap();
            tx.commit().unwrap();
        }
    };
    publish(&s, 0, 10);
    let grower = s.clone();
    *fs.hook.lock() = Some(Box::new(move || {
        let before = grower.stats().file_bytes;
        let mut i = 10;
        while grower.stats().file_bytes == before {
            publish(&grower, i, i + 1);
            i += 1;
        }
    }));
    let set = s.backup_to("/backups").unwrap();
    assert!(fs.hook.lock().is_none(), "the hook ran during the backup");
    let want = contents(&s);
    assert!(want["q"].len() > 10, "page.db grew during the backup");
    s.close().unwrap();
    Store::restore_with(sim.as_ref(), &set.path, Path::new("/restored")).unwrap();
    let r = Store::open_with(
        sim.clone(),
        Path::new("/restored"),
        config(),
        OpenOptions::default(),
    )
    .unwrap();
    assert!(r.check().unwrap().is_clean());
    assert_eq!(
        contents(&r),
        want,
        "the set holds every commit the copied log holds"
    );
}

/// Found by the `decode_manifest` fuzz seeds: a manifest with a valid checksum that listed
/// no page.db (or no log, or a file twice) was restored, and the "restored" directory opened
/// as an empty store (or without the log's commits) instead of being refused.
#[test]
fn restore_refuses_a_manifest_without_page_db_or_log_or_with_a_file_twice() {
    use stowage::fuzzing::manifest_with_fixed_checksum;
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(dir.path().join("store"), config()).unwrap();
    fill(&s);
    let set = s.backup_to(dir.path().join("b")).unwrap().path;
    s.close().unwrap();
    let manifest = std::fs::read_to_string(set.join("MANIFEST")).unwrap();
    let lines: Vec<&str> = manifest
        .lines()
        .filter(|l| !l.starts_with("crc "))
        .collect();
    let keep = |drop: &str| -> Vec<&str> {
        lines
            .iter()
            .copied()
            .filter(|l| !l.starts_with(drop))
            .collect()
    };
    let mut twice = lines.clone();
    twice.push(lines[0]);
    for (case, kept) in [
        ("no page.db", keep("page.db ")),
        ("no log", keep("transaction.log ")),
        ("no files", Vec::new()),
        ("a file twice", twice),
    ] {
        let mut body = kept.join("\n");
        body.push('\n');
        std::fs::write(
            set.join("MANIFEST"),
            manifest_with_fixed_checksum(body.as_bytes()),
        )
        .unwrap();
        let target = dir.path().join("t");
        match Store::restore(&set, &target) {
            Err(Error::Corruption { file, .. }) => assert!(file.ends_with("MANIFEST"), "{file}"),
            other => panic!("{case}: {other:?}"),
        }
        assert!(!target.join("page.db").exists(), "{case}: nothing copied");
    }
    std::fs::write(set.join("MANIFEST"), &manifest).unwrap();
    Store::restore(&set, dir.path().join("t")).unwrap();
}
