//! Online backup into save sets, generations, and restore.
//!
//! A save set is a directory `saveset_<UTC yyyymmddThhmmssZ>_<page size>[_n]` holding
//! `page.db`, `transaction.log`, `xa.log` (if any), `durables/*.durable`, a `MANIFEST`
//! (one line per file: name, length, CRC32; then a line with the CRC32 of those lines) and,
//! written last, an empty `.completed` marker. Every file is synced before the marker, the
//! marker before the directory.
//!
//! Invariants: only a save set with `.completed` counts; `backup()` keeps the newest
//! `backup_keep_generations` complete ones and deletes incomplete ones. `restore` checks
//! the marker and every file against the manifest before copying anything into the target,
//! which must not hold a store; the restored directory opens by running recovery over the
//! copied log (the copy is a crash image, see `kernel::backup`).

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use super::Store;
use crate::error::{Error, Result};
use crate::file::{parent_dir, FileSystem, OpenMode, RealFs};
use crate::kernel::{backup_copy_file, Pace};

const MANIFEST: &str = "MANIFEST";
const COMPLETED: &str = ".completed";
const DURABLES: &str = "durables";

/// A complete save set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaveSet {
    /// The save set's directory.
    pub path: PathBuf,
    /// When the backup started.
    pub created: SystemTime,
    /// Page size of the saved page.db.
    pub page_size: u32,
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", p.display()), e)
}

/// `yyyymmddThhmmssZ` for a time after the Unix epoch (UTC, proleptic Gregorian).
fn utc_stamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil-from-days (H. Hinnant's algorithm) on days since 1970-01-01.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn write_file(fs: &dyn FileSystem, path: &Path, bytes: &[u8]) -> Result<()> {
    let f = fs
        .open(path, OpenMode::CreateNew)
        .map_err(|e| io("creating", path, e))?;
    f.write_all_at(bytes, 0)
        .map_err(|e| io("writing", path, e))?;
    f.sync_all().map_err(|e| io("syncing", path, e))
}

fn read_file(fs: &dyn FileSystem, path: &Path, limit: u64) -> Result<Vec<u8>> {
    let f = fs
        .open(path, OpenMode::Existing)
        .map_err(|e| io("opening", path, e))?;
    let len = f.len().map_err(|e| io("reading length of", path, e))?;
    if len > limit {
        return Err(Error::corruption(
            path.display().to_string(),
            "file",
            format!("{len} bytes, more than a manifest can be"),
        ));
    }
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, 0)
        .map_err(|e| io("reading", path, e))?;
    Ok(b)
}

/// Removes a directory tree through the file layer (save sets hold files and `durables/`).
fn remove_tree(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    for name in fs.read_dir(dir).map_err(|e| io("listing", dir, e))? {
        let p = dir.join(&name);
        if fs.remove_file(&p).is_err() {
            remove_tree(fs, &p)?;
        }
    }
    fs.remove_dir(dir).map_err(|e| io("removing", dir, e))
}

/// The order of a save set's name `saveset_<stamp>_<page size>[_<n>]`: (stamp, n), with
/// n = 1 when there is no suffix. `None` for other names.
fn generation_key(name: &str) -> Option<(String, u64)> {
    let rest = name.strip_prefix("saveset_")?;
    let mut parts = rest.split('_');
    let stamp = parts.next()?.to_string();
    parts.next()?.parse::<u32>().ok()?;
    let n = match parts.next() {
        None => 1,
        Some(n) => n.parse().ok()?,
    };
    parts.next().is_none().then_some((stamp, n))
}

/// (name, length, crc) lines and their own CRC.
fn encode_manifest(files: &[(String, u64, u32)]) -> Vec<u8> {
    let mut body = String::new();
    for (name, len, crc) in files {
        body.push_str(&format!("{name} {len} {crc:08x}\n"));
    }
    let crc = crc32fast::hash(body.as_bytes());
    body.push_str(&format!("crc {crc:08x}\n"));
    body.into_bytes()
}

fn decode_manifest(set: &Path, b: &[u8]) -> Result<Vec<(String, u64, u32)>> {
    let file = set.join(MANIFEST).display().to_string();
    let bad = |d: &str| Error::corruption(file.clone(), "manifest", d);
    let text = std::str::from_utf8(b).map_err(|_| bad("not UTF-8"))?;
    let (body, last) = text
        .trim_end_matches('\n')
        .rsplit_once('\n')
        .map(|(b, l)| (format!("{b}\n"), l))
        .unwrap_or((String::new(), text.trim_end_matches('\n')));
    let stored = last
        .strip_prefix("crc ")
        .and_then(|h| u32::from_str_radix(h, 16).ok())
        .ok_or_else(|| bad("missing checksum line"))?;
    if stored != crc32fast::hash(body.as_bytes()) {
        return Err(bad("checksum mismatch"));
    }
    let mut out = Vec::new();
    for line in body.lines() {
        let mut it = line.split(' ');
        let (Some(name), Some(len), Some(crc), None) = (it.next(), it.next(), it.next(), it.next())
        else {
            return Err(bad("malformed line"));
        };
        let len: u64 = len.parse().map_err(|_| bad("bad length"))?;
        let crc = u32::from_str_radix(crc, 16).map_err(|_| bad("bad checksum"))?;
        // Names are ours (page.db, durables/x.durable): refuse anything that could escape.
        if name.is_empty() || name.contains("..") || name.starts_with('/') {
            return Err(bad("bad file name"));
        }
        if out.iter().any(|(n, _, _)| n == name) {
            return Err(bad("a file is listed twice"));
        }
        out.push((name.to_string(), len, crc));
    }
    Ok(out)
}

/// The bytes a manifest's files hold (for the log).
fn total_bytes(files: &[(String, u64, u32)]) -> u64 {
    files.iter().map(|f| f.1).sum()
}

/// CRC32 and length of a file, read in chunks.
fn checksum(fs: &dyn FileSystem, path: &Path) -> Result<(u64, u32)> {
    let f = fs
        .open(path, OpenMode::Existing)
        .map_err(|e| io("opening", path, e))?;
    let len = f.len().map_err(|e| io("reading length of", path, e))?;
    let mut h = crc32fast::Hasher::new();
    let mut buf = vec![0u8; len.min(1 << 20) as usize];
    let mut at = 0;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        f.read_exact_at(&mut buf[..n], at)
            .map_err(|e| io("reading", path, e))?;
        h.update(&buf[..n]);
        at += n as u64;
    }
    Ok((len, h.finalize()))
}

impl Store {
    /// Backs up into `config.backup_path` and keeps `backup_keep_generations` complete save
    /// sets there (incomplete ones are deleted). Commits continue during the copy.
    pub fn backup(&self) -> Result<SaveSet> {
        let base = self
            .config()
            .backup_path
            .clone()
            .ok_or_else(|| Error::InvalidConfig {
                param: "backup_path",
                reason: "is not set; backup() needs it (or use backup_to)".into(),
            })?;
        let set = self.backup_to(&base)?;
        let e = self.engine()?;
        let fs = e.kernel.file_system().clone();
        let mut complete = Vec::new();
        for name in fs
            .read_dir(&base)
            .map_err(|err| io("listing", &base, err))?
        {
            if !name.starts_with("saveset_") {
                continue;
            }
            let p = base.join(&name);
            if fs
                .exists(&p.join(COMPLETED))
                .map_err(|err| io("checking", &p, err))?
            {
                if let Some(key) = generation_key(&name) {
                    complete.push((key, name));
                }
            } else if p != set.path {
                tracing::info!(path = %p.display(), "deleting an incomplete save set");
                remove_tree(fs.as_ref(), &p)?;
            }
        }
        complete.sort();
        let keep = self.config().backup_keep_generations;
        let excess = complete.len().saturating_sub(keep);
        for (_, name) in &complete[..excess] {
            tracing::info!(path = %base.join(name).display(), keep, "pruning an old save set");
            remove_tree(fs.as_ref(), &base.join(name))?;
        }
        fs.sync_dir(&base)
            .map_err(|err| io("syncing", &base, err))?;
        Ok(set)
    }

    /// Backs up into a new save set under `dir` (created if missing); commits continue.
    pub fn backup_to(&self, dir: impl AsRef<Path>) -> Result<SaveSet> {
        let dir = dir.as_ref();
        let e = self.engine()?;
        let _one_backup = e.backup_lock.lock();
        let fs = e.kernel.file_system().clone();
        let created = SystemTime::now();
        let started = std::time::Instant::now();
        let page_size = e.kernel.page_size() as u32;
        if !fs.exists(dir).map_err(|err| io("checking for", dir, err))? {
            fs.create_dir_all(dir)
                .map_err(|err| io("creating", dir, err))?;
            let parent = parent_dir(dir);
            fs.sync_dir(&parent)
                .map_err(|err| io("syncing", &parent, err))?;
        }
        // Two backups in the same second get increasing suffixes (never a name used before,
        // so the newest set always sorts last).
        let stamp = utc_stamp(created);
        let taken = fs
            .read_dir(dir)
            .map_err(|err| io("listing", dir, err))?
            .iter()
            .filter_map(|n| generation_key(n))
            .filter(|(s, _)| *s == stamp)
            .map(|(_, n)| n)
            .max();
        let stem = format!("saveset_{stamp}_{page_size}");
        let path = match taken {
            None => dir.join(&stem),
            Some(n) => dir.join(format!("{stem}_{}", n + 1)),
        };
        fs.create_dir_all(&path.join(DURABLES))
            .map_err(|err| io("creating", &path, err))?;
        let mut files: Vec<(String, u64, u32)> = e
            .kernel
            .backup_copy(&path)?
            .into_iter()
            .map(|c| (c.name, c.len, c.crc))
            .collect();
        let src = e.kernel.dir().join(DURABLES);
        if fs
            .exists(&src)
            .map_err(|err| io("checking for", &src, err))?
        {
            for name in fs.read_dir(&src).map_err(|err| io("listing", &src, err))? {
                if !name.ends_with(".durable") {
                    continue;
                }
                let rel = format!("{DURABLES}/{name}");
                // A subscription removed since the listing is simply not in the save set.
                match backup_copy_file(
                    fs.as_ref(),
                    &src.join(&name),
                    &path.join(&rel),
                    &rel,
                    Pace::Shared,
                ) {
                    Ok(c) => files.push((c.name, c.len, c.crc)),
                    Err(Error::Io { source, .. })
                        if source.kind() == std::io::ErrorKind::NotFound => {}
                    Err(err) => return Err(err),
                }
            }
        }
        fs.sync_dir(&path.join(DURABLES))
            .map_err(|err| io("syncing", &path, err))?;
        write_file(fs.as_ref(), &path.join(MANIFEST), &encode_manifest(&files))?;
        fs.sync_dir(&path)
            .map_err(|err| io("syncing", &path, err))?;
        write_file(fs.as_ref(), &path.join(COMPLETED), b"")?;
        fs.sync_dir(&path)
            .map_err(|err| io("syncing", &path, err))?;
        fs.sync_dir(dir).map_err(|err| io("syncing", dir, err))?;
        tracing::info!(
            path = %path.display(),
            files = files.len(),
            bytes = total_bytes(&files),
            ms = started.elapsed().as_millis() as u64,
            "backup complete"
        );
        Ok(SaveSet {
            path,
            created,
            page_size,
        })
    }

    /// Rebuilds a store in `target` (which must not hold one) from a complete save set,
    /// after checking every file against its manifest. The result opens to the backed-up
    /// state.
    pub fn restore(saveset: impl AsRef<Path>, target: impl AsRef<Path>) -> Result<()> {
        Self::restore_with(&RealFs::new(), saveset.as_ref(), target.as_ref())
    }

    /// [`Store::restore`] on any file layer.
    #[doc(hidden)]
    pub fn restore_with(fs: &dyn FileSystem, set: &Path, target: &Path) -> Result<()> {
        let started = std::time::Instant::now();
        let named = |n: &str| set.join(n).display().to_string();
        if !fs
            .exists(&set.join(COMPLETED))
            .map_err(|e| io("checking", set, e))?
        {
            return Err(Error::corruption(
                named(COMPLETED),
                "file",
                "the save set is incomplete (no .completed marker): the backup did not finish",
            ));
        }
        let files = decode_manifest(set, &read_file(fs, &set.join(MANIFEST), 1 << 24)?)?;
        // Every save set holds page.db and the log: restoring one without them would open
        // as an empty store (or lose the log's commits) instead of refusing.
        for required in [crate::page::PAGE_DB, crate::log::frame::LOG_FILE] {
            if !files.iter().any(|(name, _, _)| name == required) {
                return Err(Error::corruption(
                    named(MANIFEST),
                    "manifest",
                    format!("{required} is not listed: not a save set backup() wrote"),
                ));
            }
        }
        for (name, len, crc) in &files {
            let p = set.join(name);
            if !fs.exists(&p).map_err(|e| io("checking", &p, e))? {
                return Err(Error::corruption(
                    named(name),
                    "file",
                    "missing from the save set",
                ));
            }
            let (l, c) = checksum(fs, &p)?;
            if (l, c) != (*len, *crc) {
                return Err(Error::corruption(
                    named(name),
                    "file",
                    format!("{l} bytes with CRC {c:08x}, the manifest says {len} bytes with CRC {crc:08x}"),
                ));
            }
        }
        if fs
            .exists(&target.join(crate::page::PAGE_DB))
            .map_err(|e| io("checking", target, e))?
        {
            return Err(Error::invalid_argument(format!(
                "{} already holds a store; restore into an empty directory",
                target.display()
            )));
        }
        fs.create_dir_all(&target.join(DURABLES))
            .map_err(|e| io("creating", target, e))?;
        // page.db last: a restore cut short leaves the log without page.db, which open
        // refuses (Corruption) instead of serving a partial store.
        let (db, rest): (Vec<_>, Vec<_>) = files
            .iter()
            .partition(|(name, _, _)| name == crate::page::PAGE_DB);
        for (name, _, _) in rest.into_iter().chain(db) {
            backup_copy_file(fs, &set.join(name), &target.join(name), name, Pace::Full)?;
        }
        fs.sync_dir(&target.join(DURABLES))
            .map_err(|e| io("syncing", target, e))?;
        fs.sync_dir(target).map_err(|e| io("syncing", target, e))?;
        let parent = parent_dir(target);
        fs.sync_dir(&parent)
            .map_err(|e| io("syncing", &parent, e))?;
        tracing::info!(
            saveset = %set.display(),
            target = %target.display(),
            files = files.len(),
            bytes = total_bytes(&files),
            ms = started.elapsed().as_millis() as u64,
            "restore complete"
        );
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_stamps_are_right() {
        let t = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_795_312_000);
        assert_eq!(utc_stamp(t), "20261122T014640Z");
        assert_eq!(utc_stamp(SystemTime::UNIX_EPOCH), "19700101T000000Z");
        let leap = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(951_782_400);
        assert_eq!(utc_stamp(leap), "20000229T000000Z");
    }

    #[test]
    fn manifests_round_trip_and_refuse_damage() {
        let files = vec![
            ("page.db".to_string(), 4096, 0xdead_beef),
            ("durables/a$b.durable".to_string(), 7, 1),
        ];
        let b = encode_manifest(&files);
        let set = Path::new("/s");
        assert_eq!(decode_manifest(set, &b).unwrap(), files);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x01;
            assert!(decode_manifest(set, &c).is_err(), "flip at {i}");
        }
        let evil = encode_manifest(&[("../x".to_string(), 1, 1)]);
        assert!(decode_manifest(set, &evil).is_err());
        let twice = encode_manifest(&[files[0].clone(), files[0].clone()]);
        assert!(decode_manifest(set, &twice).is_err());
    }
}
