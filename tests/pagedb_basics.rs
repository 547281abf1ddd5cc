//! page.db on the real file layer: creation, allocation, growth, commit and reopen.

use std::path::Path;
use std::sync::Arc;

use stowage::file::{FileSystem, RealFs};
use stowage::page::{init_header, PageType, ROOT_SLOTS};
use stowage::pagedb::{CommitInfo, PageDb};
use stowage::{Error, StoreConfig};

fn config(page_size: u32) -> StoreConfig {
    StoreConfig {
        page_size,
        initial_db_size_pages: 10,
        ..StoreConfig::default()
    }
}

fn open(dir: &Path, page_size: u32) -> PageDb {
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    PageDb::open(fs, dir, &config(page_size)).unwrap()
}

fn page_with(db: &PageDb, fill: u8) -> Vec<u8> {
    let mut p = vec![fill; db.page_size()];
    init_header(&mut p, PageType::Raw, u64::from(fill));
    p
}

#[test]
fn a_new_file_has_the_configured_size_and_only_the_map_in_use() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 4096);
    assert_eq!(db.page_size(), 4096);
    assert_eq!(db.page_count(), 10);
    assert_eq!(db.free_map_page_ids(), vec![1]);
    assert_eq!(db.free_page_ids(), (2..10).collect::<Vec<_>>());
    let len = std::fs::metadata(dir.path().join("page.db")).unwrap().len();
    assert_eq!(len, 10 * 4096);
    assert!(!dir.path().join("page.db.tmp").exists());
}

#[test]
fn committed_state_survives_reopen_and_keeps_its_page_size() {
    let dir = tempfile::tempdir().unwrap();
    let (ids, roots) = {
        let db = open(dir.path(), 4096);
        let ids: Vec<u64> = (0..25).map(|_| db.allocate().unwrap()).collect();
        assert!(
            db.page_count() > 10,
            "allocation past the end grows the file"
        );
        for (i, &id) in ids.iter().enumerate() {
            db.write_page(id, &page_with(&db, i as u8)).unwrap();
        }
        let mut roots = [0; ROOT_SLOTS];
        roots[0] = ids[0];
        roots[3] = ids[24];
        let sb = db
            .commit(CommitInfo {
                checkpoint_lsn: 77,
                roots,
                clean_close: false,
                truncate: false,
            })
            .unwrap();
        assert_eq!(sb.sequence, 2);
        (ids, roots)
    };
    // A different configured page size does not apply to an existing file.
    let db = open(dir.path(), 8192);
    assert_eq!(db.page_size(), 4096);
    let sb = db.superblock();
    assert_eq!((sb.checkpoint_lsn, sb.roots), (77, roots));
    let mut buf = vec![0u8; 4096];
    for (i, &id) in ids.iter().enumerate() {
        db.read_page(id, &mut buf).unwrap();
        assert_eq!(buf[100], i as u8, "page {id}");
    }
    let free = db.free_page_ids();
    for id in &ids {
        assert!(!free.contains(id));
    }
    assert_eq!(
        free.len() as u64 + ids.len() as u64 + db.free_map_page_ids().len() as u64 + 1,
        db.page_count(),
        "every page is free, in use, the map, or page 0"
    );
}

#[test]
fn freed_pages_are_reused_only_after_a_commit() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 2048);
    let a = db.allocate().unwrap();
    db.write_page(a, &page_with(&db, 1)).unwrap();
    db.commit(CommitInfo::default()).unwrap();
    db.free(a).unwrap();
    assert!(db.free(a).is_err(), "double free is refused");
    let mut got = Vec::new();
    while db.free_pages() > 1 {
        got.push(db.allocate().unwrap());
    }
    assert!(
        !got.contains(&a),
        "a pending page was handed out before the commit"
    );
    db.commit(CommitInfo::default()).unwrap();
    assert!(
        db.free_page_ids().contains(&a),
        "the commit released the pending page"
    );
    let mut after = Vec::new();
    while db.free_pages() > 0 {
        after.push(db.allocate().unwrap());
    }
    assert!(after.contains(&a), "the released page is handed out again");
}

#[test]
fn freed_pages_stay_free_across_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let ids = {
        let db = open(dir.path(), 2048);
        let ids: Vec<u64> = (0..6).map(|_| db.allocate().unwrap()).collect();
        db.commit(CommitInfo::default()).unwrap();
        for &id in &ids[..3] {
            db.free(id).unwrap();
        }
        db.commit(CommitInfo::default()).unwrap();
        ids
    };
    let db = open(dir.path(), 2048);
    let free = db.free_page_ids();
    assert!(ids[..3].iter().all(|id| free.contains(id)));
    assert!(ids[3..].iter().all(|id| !free.contains(id)));
}

#[test]
fn bad_page_numbers_and_unwritten_pages_are_corruption_naming_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = open(dir.path(), 2048);
    let mut buf = vec![0u8; 2048];
    for id in [0, 10, u64::MAX] {
        match db.read_page(id, &mut buf) {
            Err(Error::Corruption { file, location, .. }) => {
                assert_eq!(file, "page.db");
                assert_eq!(location, format!("page {id}"));
            }
            other => panic!("page {id}: {other:?}"),
        }
    }
    let id = db.allocate().unwrap();
    let e = db.read_page(id, &mut buf).unwrap_err();
    assert!(e.to_string().contains("never written"), "{e}");
    assert!(db.write_page(u64::MAX, &buf).is_err());
    assert!(matches!(
        db.read_page(id, &mut [0u8; 100]),
        Err(Error::InvalidArgument { .. })
    ));
}

#[test]
fn a_file_that_is_not_a_page_db_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("page.db"), b"hello world").unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let e = PageDb::open(fs.clone(), dir.path(), &config(2048)).unwrap_err();
    assert!(matches!(e, Error::Corruption { .. }), "{e}");
    std::fs::write(dir.path().join("page.db"), vec![0x55u8; 8192]).unwrap();
    let e = PageDb::open(fs, dir.path(), &config(2048)).unwrap_err();
    assert!(e.to_string().contains("magic"), "{e}");
}

#[test]
fn a_truncated_file_is_refused_not_grown() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(dir.path(), 2048));
    let p = dir.path().join("page.db");
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(5 * 2048).unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let e = PageDb::open(fs, dir.path(), &config(2048)).unwrap_err();
    assert!(e.to_string().contains("superblock records 10 pages"), "{e}");
    assert_eq!(std::fs::metadata(&p).unwrap().len(), 5 * 2048);
}

#[test]
fn invalid_config_is_refused_before_touching_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let fs: Arc<dyn FileSystem> = Arc::new(RealFs::new());
    let cfg = StoreConfig {
        page_size: 3000,
        ..StoreConfig::default()
    };
    let e = PageDb::open(fs, &dir.path().join("s"), &cfg).unwrap_err();
    assert!(matches!(
        e,
        Error::InvalidConfig {
            param: "page_size",
            ..
        }
    ));
    assert!(!dir.path().join("s").exists());
}
