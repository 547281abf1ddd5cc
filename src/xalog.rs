//! `xa.log`: what the transaction log must not lose at a checkpoint, namely the XA records
//! of transactions still in doubt, as a list of opaque byte strings (the store gives them
//! meaning).
//!
//! Owns: the file format and its atomic replacement.
//!
//! Invariants: the file is replaced only whole (temp file, fsync, rename, directory fsync),
//! so a crash leaves the old or the new version. It records the LSN its content reflects;
//! recovery starts from it and applies the log's XA records with a higher LSN. It is
//! written during a checkpoint *before* the superblock and the log recycle, so its LSN is
//! never below the checkpoint's and the log always still holds every XA record after it.
//!
//! Layout: `magic "STOWXA01" | version u32 | lsn u64 | count u32 | count x (len u32,
//! bytes) | crc32 u32` (CRC over everything before it).

use std::path::Path;

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::file::{FileSystem, OpenMode};
use crate::page::Lsn;

/// The file name.
pub const XA_LOG: &str = "xa.log";
const MAGIC: &[u8; 8] = b"STOWXA01";
const VERSION: u32 = 1;

/// The content of `xa.log`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct XaSnapshot {
    /// The LSN the records reflect.
    pub lsn: Lsn,
    /// The XA records, in order.
    pub records: Vec<Vec<u8>>,
}

/// Encodes a snapshot.
pub fn encode(s: &XaSnapshot) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&VERSION.to_le_bytes());
    out.extend_from_slice(&s.lsn.to_le_bytes());
    out.extend_from_slice(&(s.records.len() as u32).to_le_bytes());
    for r in &s.records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// Decodes a snapshot; any damage is `Error::Corruption` naming `xa.log`.
pub fn decode(b: &[u8]) -> Result<XaSnapshot> {
    let bad = |at: usize, d: &str| Error::corruption(XA_LOG, format!("byte {at}"), d);
    if b.len() < 28 {
        return Err(bad(0, "too short for the header"));
    }
    if &b[..8] != MAGIC {
        return Err(bad(0, "bad magic (not a stowage xa.log)"));
    }
    let body = b.len() - 4;
    if LE::read_u32(&b[body..]) != crc32fast::hash(&b[..body]) {
        return Err(bad(body, "checksum mismatch"));
    }
    if LE::read_u32(&b[8..12]) != VERSION {
        return Err(bad(8, "unsupported version"));
    }
    let lsn = LE::read_u64(&b[12..20]);
    let count = LE::read_u32(&b[20..24]) as usize;
    let mut at = 24;
    let mut records = Vec::new();
    for _ in 0..count {
        if at + 4 > body {
            return Err(bad(at, "record length past the end"));
        }
        let len = LE::read_u32(&b[at..at + 4]) as usize;
        at += 4;
        let end = at
            .checked_add(len)
            .filter(|&e| e <= body)
            .ok_or_else(|| bad(at, "record past the end"))?;
        records.push(b[at..end].to_vec());
        at = end;
    }
    if at != body {
        return Err(bad(at, "trailing bytes after the records"));
    }
    Ok(XaSnapshot { lsn, records })
}

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", p.display()), e)
}

/// Reads `dir/xa.log`; `None` if there is none.
pub fn read(fs: &dyn FileSystem, dir: &Path) -> Result<Option<XaSnapshot>> {
    let path = dir.join(XA_LOG);
    if !fs.exists(&path).map_err(|e| io("checking for", &path, e))? {
        return Ok(None);
    }
    let f = fs
        .open(&path, OpenMode::Existing)
        .map_err(|e| io("opening", &path, e))?;
    let len = f.len().map_err(|e| io("reading length of", &path, e))?;
    // The length comes from the file system, not from bytes in the file; xa.log holds only
    // in-doubt transactions, and a file beyond 4 GiB is refused rather than read.
    let len = usize::try_from(len)
        .ok()
        .filter(|&l| l <= u32::MAX as usize)
        .ok_or_else(|| {
            Error::corruption(XA_LOG, "file", format!("{len} bytes is not plausible"))
        })?;
    let mut b = vec![0u8; len];
    f.read_exact_at(&mut b, 0)
        .map_err(|e| io("reading", &path, e))?;
    decode(&b).map(Some)
}

/// Replaces `dir/xa.log` atomically with `s`.
pub fn write(fs: &dyn FileSystem, dir: &Path, s: &XaSnapshot, sync_dir: bool) -> Result<()> {
    let path = dir.join(XA_LOG);
    let tmp = dir.join("xa.log.tmp");
    let f = crate::file::create_fresh(fs, &tmp).map_err(|e| io("creating", &tmp, e))?;
    f.write_all_at(&encode(s), 0)
        .map_err(|e| io("writing", &tmp, e))?;
    f.sync_all().map_err(|e| io("syncing", &tmp, e))?;
    fs.rename(&tmp, &path)
        .map_err(|e| io("renaming into place", &path, e))?;
    if sync_dir {
        fs.sync_dir(dir)
            .map_err(|e| io("syncing directory", dir, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_every_flip_detected() {
        let s = XaSnapshot {
            lsn: 77,
            records: vec![vec![1, 2, 3], vec![], vec![9; 100]],
        };
        let b = encode(&s);
        assert_eq!(decode(&b).unwrap(), s);
        for i in 0..b.len() {
            let mut c = b.clone();
            c[i] ^= 0x04;
            let e = decode(&c).unwrap_err();
            assert!(e.to_string().contains("xa.log"), "{e}");
        }
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err());
        }
    }
}
