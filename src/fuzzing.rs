//! Entry points shared by the cargo-fuzz targets (`fuzz/`) and the tests that replay their
//! corpora, so both exercise exactly the same code.
//!
//! Invariant: each function accepts any bytes and returns normally; a panic, a hang or an
//! allocation driven by a length read from the input is a bug.

use std::path::Path;
use std::sync::Arc;

use crate::config::{StoreConfig, MAX_PAGE_SIZE, MIN_PAGE_SIZE};
use crate::file::{FileSystem, SimFs};
use crate::page::{decode_free_map, verify_page, PageType, Superblock, PAGE_HEADER_LEN};
use crate::pagedb::{CommitInfo, PageDb};

/// Decodes `data` as superblocks and pages of every page size, then opens it as a
/// `page.db` on the simulated file layer and, if that succeeds, reads every page, allocates,
/// frees and commits.
pub fn decode_pages(data: &[u8]) {
    let _ = Superblock::choose(data);
    let _ = Superblock::decode(data, 0);
    let mut size = MIN_PAGE_SIZE as usize;
    while size <= MAX_PAGE_SIZE as usize && size <= data.len() {
        if let Ok(h) = verify_page(1, &data[..size]) {
            if h.page_type == PageType::FreeMap {
                let _ = decode_free_map(1, &data[..size]);
            }
        }
        size *= 2;
    }
    let sim = SimFs::new();
    let dir = Path::new("/fuzz");
    sim.write_file_durable(&dir.join("page.db"), data);
    let fs: Arc<dyn FileSystem> = Arc::new(sim);
    let config = StoreConfig {
        initial_db_size_pages: 16,
        ..StoreConfig::default()
    };
    let Ok(db) = PageDb::open(fs, dir, &config) else {
        return;
    };
    let mut buf = vec![0u8; db.page_size()];
    for id in 0..db.page_count().min(256) {
        let _ = db.read_page(id, &mut buf);
    }
    if let Ok(id) = db.allocate() {
        let _ = db.free(id);
    }
    let _ = db.commit(CommitInfo::default());
}

/// A small store whose log holds `commits` committed frames that were never checkpointed
/// (the process "died"): the starting point of the log fuzz target.
pub fn store_with_unreplayed_log(commits: u8) -> SimFs {
    use crate::kernel::{Kernel, OpenOptions};
    use crate::log::Durability;
    let sim = SimFs::new();
    let opts = OpenOptions {
        no_background_threads: true,
        ..OpenOptions::default()
    };
    if let Ok(k) = Kernel::open_with(
        Arc::new(sim.clone()),
        Path::new(FUZZ_DIR),
        &fuzz_config(),
        opts,
    ) {
        for i in 0..commits {
            let Ok(mut tx) = k.begin() else { break };
            if let Ok(id) = tx.allocate(PageType::Raw) {
                if let Ok(p) = tx.page_mut(id) {
                    p[PAGE_HEADER_LEN..].fill(i);
                }
                let _ = tx.set_root(0, id);
            }
            let _ = tx.commit(Durability::Sync);
        }
        sim.crash_now();
        drop(k);
    }
    sim.restart(crate::file::CrashOutcome::ProcessKill, 0);
    sim
}

const FUZZ_DIR: &str = "/fuzz";

fn fuzz_config() -> StoreConfig {
    StoreConfig {
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

/// Replaces the frames of a store's log (everything after the two header sectors) with
/// `data` and opens the store, which runs recovery over it: never a panic, never an
/// allocation beyond the file.
pub fn decode_log(data: &[u8]) {
    use crate::kernel::{Kernel, OpenOptions};
    use crate::log::frame::{LOG_FILE, LOG_HEADER_AREA};
    let sim = store_with_unreplayed_log(3);
    let path = Path::new(FUZZ_DIR).join(LOG_FILE);
    let Some(mut bytes) = sim.read_file(&path) else {
        return;
    };
    let head = LOG_HEADER_AREA as usize;
    bytes.truncate(head);
    bytes.extend_from_slice(data);
    sim.write_file_durable(&path, &bytes);
    let opts = OpenOptions {
        no_background_threads: true,
        ..OpenOptions::default()
    };
    if let Ok(k) = Kernel::open_with(Arc::new(sim), Path::new(FUZZ_DIR), &fuzz_config(), opts) {
        let root = k.root(0);
        if root != 0 {
            let _ = k.read(root);
        }
    }
}

/// Where [`decode_manifest`] puts the save set and restores it to.
const SAVESET_DIR: &str = "/backup/saveset";
const RESTORE_DIR: &str = "/restored";

/// The files of one complete save set (path relative to the save set, bytes), made once by
/// backing up a small store on the simulator: a queue with small and multi-page messages,
/// an in-doubt XA transaction and a durable subscription.
fn saveset_template() -> &'static [(String, Vec<u8>)] {
    static TEMPLATE: std::sync::OnceLock<Vec<(String, Vec<u8>)>> = std::sync::OnceLock::new();
    TEMPLATE.get_or_init(|| make_saveset().unwrap_or_default())
}

fn make_saveset() -> crate::error::Result<Vec<(String, Vec<u8>)>> {
    use crate::kernel::OpenOptions;
    use crate::{DurableSubscription, NewMessage, Store, Xid};
    let sim = SimFs::new();
    let opts = OpenOptions {
        no_background_threads: true,
        log_prealloc: Some(0),
        ..OpenOptions::default()
    };
    let store = Store::open_with(
        Arc::new(sim.clone()),
        Path::new(FUZZ_DIR),
        fuzz_config(),
        opts,
    )?;
    store.create_queue("orders")?;
    let mut tx = store.begin();
    tx.insert("orders", NewMessage::new(b"one".to_vec()))?;
    tx.insert("orders", NewMessage::new(vec![7u8; 5000]).priority(9))?;
    tx.commit()?;
    let mut tx = store.begin();
    tx.insert("orders", NewMessage::new(b"in doubt".to_vec()))?;
    tx.prepare(Xid::new(1, b"gtrid", b"bq")?)?;
    store.save_durable(&DurableSubscription {
        client_id: "client".into(),
        name: "sub".into(),
        topic: "orders".into(),
        selector: None,
        no_local: false,
    })?;
    let set = store.backup_to("/backup")?;
    store.close()?;
    let mut files = Vec::new();
    for path in sim.file_names() {
        if let (Ok(rel), Some(bytes)) = (path.strip_prefix(&set.path), sim.read_file(&path)) {
            files.push((rel.to_string_lossy().into_owned(), bytes));
        }
    }
    Ok(files)
}

/// The MANIFEST of the save set [`decode_manifest`] restores (the seed of its corpus).
pub fn manifest_seed() -> Vec<u8> {
    saveset_template()
        .iter()
        .find(|(name, _)| name == "MANIFEST")
        .map(|(_, bytes)| bytes.clone())
        .unwrap_or_default()
}

/// `data` with its last line replaced by a correct `crc` line (appended if the last line is
/// not one), so that mutations reach the line parser and the file checks behind it.
pub fn manifest_with_fixed_checksum(data: &[u8]) -> Vec<u8> {
    let trimmed = data.strip_suffix(b"\n").unwrap_or(data);
    let mut body = match trimmed.iter().rposition(|&b| b == b'\n') {
        Some(i) if trimmed[i + 1..].starts_with(b"crc ") => trimmed[..=i].to_vec(),
        None if trimmed.starts_with(b"crc ") => Vec::new(),
        _ if trimmed.is_empty() => Vec::new(),
        _ => [trimmed, b"\n"].concat(),
    };
    let crc = crc32fast::hash(&body);
    body.extend_from_slice(format!("crc {crc:08x}\n").as_bytes());
    body
}

/// Restores a save set whose MANIFEST is `data` (with `.completed` and every file of a real
/// save set present), as given and with its checksum line fixed up. Restore must return
/// `Ok` or a typed error (`Corruption`, `InvalidArgument`, `Io`); a restored store must
/// open or refuse with an error, and be checkable. Panics on any other outcome.
pub fn decode_manifest(data: &[u8]) {
    restore_with_manifest(data);
    restore_with_manifest(&manifest_with_fixed_checksum(data));
}

/// One restore of the template save set with `manifest` as its MANIFEST; returns whether
/// the restore succeeded (and the restored store opened).
pub fn restore_with_manifest(manifest: &[u8]) -> bool {
    use crate::error::Error;
    use crate::kernel::OpenOptions;
    use crate::Store;
    let sim = SimFs::new();
    let set = Path::new(SAVESET_DIR);
    if sim.create_dir_all(&set.join("durables")).is_err() {
        return false;
    }
    for (name, bytes) in saveset_template() {
        sim.write_file_durable(&set.join(name), bytes);
    }
    sim.write_file_durable(&set.join("MANIFEST"), manifest);
    let target = Path::new(RESTORE_DIR);
    match Store::restore_with(&sim, set, target) {
        Ok(()) => {}
        Err(Error::Corruption { .. } | Error::InvalidArgument { .. } | Error::Io { .. }) => {
            return false
        }
        Err(e) => panic!("restore returned an unexpected error: {e}"),
    }
    let opts = OpenOptions {
        no_background_threads: true,
        log_prealloc: Some(0),
        ..OpenOptions::default()
    };
    match Store::open_with(Arc::new(sim), target, fuzz_config(), opts) {
        Ok(store) => {
            if let Err(e) = store.check() {
                panic!("check() of a restored store failed: {e}");
            }
            true
        }
        Err(Error::Corruption { .. } | Error::Io { .. }) => false,
        Err(e) => panic!("opening a restored store returned an unexpected error: {e}"),
    }
}
