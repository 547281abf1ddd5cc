//! The engines under comparison, behind one small trait with the broker's semantics: one
//! queue, messages keyed by a `u64` in publish order, a transaction inserts and removes
//! messages and is on stable storage when its commit returns if it asked to be durable.
//!
//! Each peer keeps a queue in a table (SQLite, redb), a keyspace (fjall) or a column family
//! (RocksDB) of its own, keyed by the message key (an integer primary key in SQLite, big-endian
//! bytes in the key-value stores so that byte order is key order). stowage assigns keys
//! itself; for the peers an atomic counter in the process does what a broker would do.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

pub type Res<T> = Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// The queue every workload uses.
pub const QUEUE: &str = "q";

/// One storage engine.
pub trait Engine: Send + Sync + Sized + 'static {
    /// What one producer thread commits through (SQLite: its own connection).
    type Writer: Send;

    /// Opens (creating if missing) the store in `dir`, with the queue.
    fn open(dir: &Path) -> Res<Self>;

    /// A handle for one producer thread.
    fn writer(&self) -> Res<Self::Writer>;

    /// One transaction: appends `inserts` (keys assigned in order, returned; owned, as a
    /// broker hands over a message it received) and removes
    /// `removes`. With `durable`, on stable storage when this returns; without, handed to the
    /// engine's own lazy path (made durable by a later durable commit).
    fn commit(
        &self,
        w: &mut Self::Writer,
        inserts: Vec<Vec<u8>>,
        removes: &[u64],
        durable: bool,
    ) -> Res<Vec<u64>>;

    /// Reads the whole queue in key order, handing every message to `f`.
    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()>;

    /// Engine-specific figures worth reporting (name, value).
    fn extra(&self) -> Res<Vec<(String, f64)>> {
        Ok(Vec::new())
    }

    /// Clean close.
    fn close(self) -> Res<()>;
}

/// Keys for the peers: a process-wide counter, starting above the largest key stored.
struct Keys(AtomicU64);

impl Keys {
    fn new(next: u64) -> Self {
        Keys(AtomicU64::new(next))
    }
    fn take(&self, n: usize) -> Vec<u64> {
        let first = self.0.fetch_add(n as u64, Ordering::Relaxed);
        (first..first + n as u64).collect()
    }
}

fn key_from_be(bytes: &[u8]) -> Res<u64> {
    let arr: [u8; 8] = bytes
        .try_into()
        .map_err(|_| format!("key of {} bytes, expected 8", bytes.len()))?;
    Ok(u64::from_be_bytes(arr))
}

// ---------------------------------------------------------------------------------------
// stowage
// ---------------------------------------------------------------------------------------

/// stowage with the configuration `stowage bench` uses (src/bin/stowage/workloads.rs).
pub struct Stowage {
    store: stowage::Store,
}

pub fn stowage_config() -> stowage::StoreConfig {
    // The page size `stowage scan` recommends for 1 KiB payloads (15 to a 16 KiB page,
    // 94% full; 3 to a 4 KiB page, 75%) with page_size_max at 16 KiB: 32 KiB pages pack
    // 3% denser but loaded W5 8-10% slower here. The cache stays 32 MiB and the initial
    // file 100 MiB, as with 4 KiB pages. See docs/benchmarks.md.
    stowage::StoreConfig {
        page_size: 16384,
        page_size_max: 16384,
        initial_db_size_pages: 6400,
        cache_min_pages: 1024,
        cache_max_pages: 2048,
        ..stowage::StoreConfig::default()
    }
}

impl Engine for Stowage {
    type Writer = stowage::Store;

    fn open(dir: &Path) -> Res<Self> {
        let store = stowage::Store::open(dir, stowage_config())?;
        if !store.queues()?.iter().any(|q| q.name == QUEUE) {
            store.create_queue(QUEUE)?;
        }
        Ok(Stowage { store })
    }

    fn writer(&self) -> Res<Self::Writer> {
        Ok(self.store.clone())
    }

    fn commit(
        &self,
        w: &mut Self::Writer,
        inserts: Vec<Vec<u8>>,
        removes: &[u64],
        durable: bool,
    ) -> Res<Vec<u64>> {
        let mut tx = w.begin();
        let mut keys = Vec::with_capacity(inserts.len());
        for p in inserts {
            keys.push(tx.insert(QUEUE, stowage::NewMessage::new(p))?);
        }
        for &k in removes {
            tx.remove(QUEUE, k)?;
        }
        // As `stowage bench` does: Sync for durable commits, Async for the lazy ones.
        tx.commit_with(if durable {
            stowage::Durability::Sync
        } else {
            stowage::Durability::Async
        })?;
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        let mut from = 0;
        loop {
            let batch = self.store.messages(QUEUE, from, 1000)?;
            let Some(last) = batch.last() else {
                return Ok(());
            };
            from = last.key + 1;
            for m in &batch {
                f(m.key, &m.payload)?;
            }
        }
    }

    fn extra(&self) -> Res<Vec<(String, f64)>> {
        let st = self.store.stats();
        let used = (st.pages_total - st.pages_free) * st.page_size;
        Ok(vec![
            ("pages_in_use_mib".into(), used as f64 / 1048576.0),
            ("log_syncs".into(), st.log_syncs as f64),
            ("commits".into(), st.commits as f64),
        ])
    }

    fn close(self) -> Res<()> {
        Ok(self.store.close()?)
    }
}

// ---------------------------------------------------------------------------------------
// SQLite
// ---------------------------------------------------------------------------------------

/// SQLite (bundled): WAL, synchronous=FULL, a connection per thread, `BEGIN IMMEDIATE`
/// transactions, a table per queue with an INTEGER PRIMARY KEY (the rowid).
pub struct Sqlite {
    path: PathBuf,
    keys: Keys,
    main: std::sync::Mutex<Option<rusqlite::Connection>>,
}

/// A connection and whether it is at synchronous=FULL (the lazy W5 batches switch to
/// NORMAL: in WAL mode a commit then does not sync, a checkpoint does).
pub struct SqliteWriter {
    conn: rusqlite::Connection,
    full: bool,
}

fn sqlite_connect(path: &Path) -> Res<rusqlite::Connection> {
    let conn = rusqlite::Connection::open(path)?;
    // Writers wait for each other (W2): SQLite has one writer at a time.
    conn.busy_timeout(std::time::Duration::from_secs(600))?;
    let mode: String = conn.pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!("SQLite refused WAL mode (got {mode})").into());
    }
    conn.pragma_update(None, "synchronous", "FULL")?;
    Ok(conn)
}

impl Engine for Sqlite {
    type Writer = SqliteWriter;

    fn open(dir: &Path) -> Res<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join("queue.sqlite");
        let conn = sqlite_connect(&path)?;
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {QUEUE} (key INTEGER PRIMARY KEY, payload BLOB NOT NULL)"
        ))?;
        let max: Option<i64> =
            conn.query_row(&format!("SELECT MAX(key) FROM {QUEUE}"), [], |r| r.get(0))?;
        Ok(Sqlite {
            path,
            keys: Keys::new(max.map_or(1, |m| m as u64 + 1)),
            main: std::sync::Mutex::new(Some(conn)),
        })
    }

    fn writer(&self) -> Res<Self::Writer> {
        Ok(SqliteWriter {
            conn: sqlite_connect(&self.path)?,
            full: true,
        })
    }

    fn commit(
        &self,
        w: &mut Self::Writer,
        inserts: Vec<Vec<u8>>,
        removes: &[u64],
        durable: bool,
    ) -> Res<Vec<u64>> {
        if durable != w.full {
            let level = if durable { "FULL" } else { "NORMAL" };
            w.conn.pragma_update(None, "synchronous", level)?;
            w.full = durable;
        }
        let tx = w
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)?;
        // Taken under the write lock, so keys are committed in key order.
        let keys = self.keys.take(inserts.len());
        {
            let mut ins = tx.prepare_cached(&format!(
                "INSERT INTO {QUEUE} (key, payload) VALUES (?1, ?2)"
            ))?;
            for (k, p) in keys.iter().zip(inserts) {
                ins.execute(rusqlite::params![*k as i64, p.as_slice()])?;
            }
            let mut del = tx.prepare_cached(&format!("DELETE FROM {QUEUE} WHERE key = ?1"))?;
            for &k in removes {
                if del.execute([k as i64])? != 1 {
                    return Err(format!("SQLite: key {k} not found").into());
                }
            }
        }
        tx.commit()?;
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        let guard = self.main.lock().map_err(|_| "SQLite mutex poisoned")?;
        let conn = guard.as_ref().ok_or("SQLite closed")?;
        let mut st = conn.prepare(&format!("SELECT key, payload FROM {QUEUE} ORDER BY key"))?;
        let mut rows = st.query([])?;
        while let Some(row) = rows.next()? {
            let k: i64 = row.get(0)?;
            let p = row.get_ref(1)?.as_blob()?;
            f(k as u64, p)?;
        }
        Ok(())
    }

    fn close(self) -> Res<()> {
        let conn = self
            .main
            .into_inner()
            .map_err(|_| "SQLite mutex poisoned")?;
        if let Some(c) = conn {
            // The last connection to close checkpoints the WAL into the database file.
            c.close().map_err(|(_, e)| e)?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// redb
// ---------------------------------------------------------------------------------------

const REDB_TABLE: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new(QUEUE);

/// redb: a table per queue, `Durability::Immediate` (lazy commits: `Durability::None`).
pub struct Redb {
    db: redb::Database,
    keys: Keys,
}

impl Engine for Redb {
    type Writer = ();

    fn open(dir: &Path) -> Res<Self> {
        use redb::ReadableTable;
        std::fs::create_dir_all(dir)?;
        let db = redb::Database::create(dir.join("queue.redb"))?;
        let tx = db.begin_write()?;
        let max = {
            let t = tx.open_table(REDB_TABLE)?;
            let last = t.last()?;
            last.map(|(k, _)| k.value())
        };
        tx.commit()?;
        Ok(Redb {
            db,
            keys: Keys::new(max.map_or(1, |m| m + 1)),
        })
    }

    fn writer(&self) -> Res<Self::Writer> {
        Ok(())
    }

    fn commit(
        &self,
        _w: &mut (),
        inserts: Vec<Vec<u8>>,
        removes: &[u64],
        durable: bool,
    ) -> Res<Vec<u64>> {
        let mut tx = self.db.begin_write()?;
        tx.set_durability(if durable {
            redb::Durability::Immediate
        } else {
            redb::Durability::None
        })?;
        // Keys are taken inside the write transaction (redb has one writer at a time), so
        // they are committed in key order.
        let keys = self.keys.take(inserts.len());
        {
            let mut t = tx.open_table(REDB_TABLE)?;
            for (k, p) in keys.iter().zip(inserts) {
                t.insert(*k, p.as_slice())?;
            }
            for &k in removes {
                if t.remove(k)?.is_none() {
                    return Err(format!("redb: key {k} not found").into());
                }
            }
        }
        tx.commit()?;
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        use redb::ReadableDatabase;
        let tx = self.db.begin_read()?;
        let t = tx.open_table(REDB_TABLE)?;
        for item in t.range::<u64>(..)? {
            let (k, v) = item?;
            f(k.value(), v.value())?;
        }
        Ok(())
    }

    fn close(self) -> Res<()> {
        drop(self.db);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// fjall
// ---------------------------------------------------------------------------------------

/// fjall: a keyspace per queue, write batches committed with `PersistMode::SyncAll` (lazy
/// commits: no persist, fjall's default of handing the journal to the OS).
pub struct Fjall {
    db: fjall::Database,
    ks: fjall::Keyspace,
    keys: Keys,
}

impl Engine for Fjall {
    type Writer = ();

    fn open(dir: &Path) -> Res<Self> {
        let db = fjall::Database::builder(dir).open()?;
        let ks = db.keyspace(QUEUE, fjall::KeyspaceCreateOptions::default)?;
        let max = match ks.iter().next_back() {
            Some(g) => Some(key_from_be(&g.key()?)?),
            None => None,
        };
        Ok(Fjall {
            db,
            ks,
            keys: Keys::new(max.map_or(1, |m| m + 1)),
        })
    }

    fn writer(&self) -> Res<Self::Writer> {
        Ok(())
    }

    fn commit(
        &self,
        _w: &mut (),
        inserts: Vec<Vec<u8>>,
        removes: &[u64],
        durable: bool,
    ) -> Res<Vec<u64>> {
        let keys = self.keys.take(inserts.len());
        let mut b = self
            .db
            .batch()
            .durability(durable.then_some(fjall::PersistMode::SyncAll));
        for (k, p) in keys.iter().zip(inserts) {
            b.insert(&self.ks, k.to_be_bytes(), p);
        }
        for &k in removes {
            b.remove(&self.ks, k.to_be_bytes());
        }
        b.commit()?;
        Ok(keys)
    }

    fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
        for g in self.ks.iter() {
            let (k, v) = g.into_inner()?;
            f(key_from_be(&k)?, &v)?;
        }
        Ok(())
    }

    fn close(self) -> Res<()> {
        // Dropping the database persists the journal (SyncAll) and stops its workers.
        self.db.persist(fjall::PersistMode::SyncAll)?;
        drop(self.ks);
        drop(self.db);
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------
// RocksDB
// ---------------------------------------------------------------------------------------

#[cfg(feature = "rocksdb")]
pub use rocks::Rocks;

#[cfg(feature = "rocksdb")]
mod rocks {
    use super::*;

    /// RocksDB: a column family per queue, write batches with `WriteOptions::set_sync(true)`
    /// (lazy commits: sync=false, the write-ahead log still written).
    pub struct Rocks {
        db: rocksdb::DB,
        keys: Keys,
    }

    impl Engine for Rocks {
        type Writer = ();

        fn open(dir: &Path) -> Res<Self> {
            let mut opts = rocksdb::Options::default();
            opts.create_if_missing(true);
            opts.create_missing_column_families(true);
            let db = rocksdb::DB::open_cf(&opts, dir, [QUEUE])?;
            let max = {
                let cf = db.cf_handle(QUEUE).ok_or("RocksDB: no column family")?;
                match db.iterator_cf(cf, rocksdb::IteratorMode::End).next() {
                    Some(item) => Some(key_from_be(&item?.0)?),
                    None => None,
                }
            };
            Ok(Rocks {
                db,
                keys: Keys::new(max.map_or(1, |m| m + 1)),
            })
        }

        fn writer(&self) -> Res<Self::Writer> {
            Ok(())
        }

        fn commit(
            &self,
            _w: &mut (),
            inserts: Vec<Vec<u8>>,
            removes: &[u64],
            durable: bool,
        ) -> Res<Vec<u64>> {
            let cf = self
                .db
                .cf_handle(QUEUE)
                .ok_or("RocksDB: no column family")?;
            let keys = self.keys.take(inserts.len());
            let mut b = rocksdb::WriteBatch::default();
            for (k, p) in keys.iter().zip(inserts) {
                b.put_cf(cf, k.to_be_bytes(), p);
            }
            for &k in removes {
                b.delete_cf(cf, k.to_be_bytes());
            }
            let mut wo = rocksdb::WriteOptions::default();
            wo.set_sync(durable);
            self.db.write_opt(b, &wo)?;
            Ok(keys)
        }

        fn scan(&self, f: &mut dyn FnMut(u64, &[u8]) -> Res<()>) -> Res<()> {
            let cf = self
                .db
                .cf_handle(QUEUE)
                .ok_or("RocksDB: no column family")?;
            for item in self.db.iterator_cf(cf, rocksdb::IteratorMode::Start) {
                let (k, v) = item?;
                f(key_from_be(&k)?, &v)?;
            }
            Ok(())
        }

        fn close(self) -> Res<()> {
            self.db.flush_wal(true)?;
            drop(self.db);
            Ok(())
        }
    }
}

/// The engine names `--engine` accepts, in table order (stowage first).
pub fn names() -> Vec<&'static str> {
    let mut v = vec!["stowage", "sqlite", "redb", "fjall"];
    if cfg!(feature = "rocksdb") {
        v.push("rocksdb");
    }
    v
}

/// Display names with versions.
pub fn display(name: &str) -> &'static str {
    match name {
        "stowage" => "stowage",
        "sqlite" => "SQLite",
        "redb" => "redb",
        "fjall" => "fjall",
        "rocksdb" => "RocksDB",
        _ => "?",
    }
}
