//! The rewrite directory: how a complete new set of kernel files (page.db, the log, xa.log)
//! built in `rewrite.tmp/` replaces the store's own, atomically with respect to crashes.
//!
//! Owns: `rewrite.tmp/`, its `.complete` marker and the move of the files into place. The
//! store layer builds the new files (compaction, resize, repair); the kernel settles them
//! at open, under the directory lock, before it opens any of its files.
//!
//! Invariants (crash argument in docs/design.md, "Rewrite: compact, resize and repair"):
//! - The live files are not touched until the new store in `rewrite.tmp/` is complete:
//!   closed cleanly (checkpointed and synced), then `.complete` written and synced, then
//!   both directories synced.
//! - `.complete` lists the kernel files of the new store, with a CRC of the list. With a
//!   valid marker, settling finishes the move: a file already moved is absent from
//!   `rewrite.tmp/`, one the new store lacks is removed from the store directory, and the
//!   marker goes only after the moves are durable. Without a valid marker the directory is
//!   deleted. So a crash at any point opens as the old or as the new store.

use std::path::Path;

use crate::error::{Error, Result};
use crate::file::{create_fresh, remove_tree, FileSystem, OpenMode};
use crate::log::frame::LOG_FILE;
use crate::page::PAGE_DB;
use crate::xalog::XA_LOG;

/// The directory a rewrite builds the new store in, inside the store directory.
pub const REWRITE_DIR: &str = "rewrite.tmp";
/// The marker that makes a rewrite directory complete.
const COMPLETE: &str = ".complete";
/// The files a rewrite replaces; the durable-subscriber and swap files stay as they are.
const KERNEL_FILES: [&str; 3] = [PAGE_DB, LOG_FILE, XA_LOG];

fn io(what: &str, p: &Path, e: std::io::Error) -> Error {
    Error::io(format!("{what} {}", p.display()), e)
}

/// Marks the closed store in `dir/rewrite.tmp/` complete: the next open of `dir` moves its
/// files in.
pub fn mark_complete(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let tmp = dir.join(REWRITE_DIR);
    let mut names = Vec::new();
    for name in KERNEL_FILES {
        let p = tmp.join(name);
        if fs.exists(&p).map_err(|e| io("checking for", &p, e))? {
            names.push(name);
        }
    }
    let marker = tmp.join(COMPLETE);
    let f = create_fresh(fs, &marker).map_err(|e| io("creating", &marker, e))?;
    f.write_all_at(&encode_marker(&names), 0)
        .map_err(|e| io("writing", &marker, e))?;
    f.sync_all().map_err(|e| io("syncing", &marker, e))?;
    fs.sync_dir(&tmp)
        .map_err(|e| io("syncing directory", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| io("syncing directory", dir, e))
}

fn encode_marker(names: &[&str]) -> Vec<u8> {
    let mut out = names.join("\n").into_bytes();
    let crc = crc32fast::hash(&out);
    out.extend_from_slice(format!("\n{crc:08x}\n").as_bytes());
    out
}

/// The names a marker lists, or `None` if it is torn or damaged (then it was never synced,
/// because a synced marker is only ever removed whole).
fn decode_marker(bytes: &[u8]) -> Option<Vec<String>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let body = text.strip_suffix('\n')?;
    let (list, crc) = match body.rsplit_once('\n') {
        Some((list, crc)) => (list, crc),
        None => ("", body),
    };
    // Exactly the form `encode_marker` writes (lowercase, 8 digits), nothing looser.
    if crc != format!("{:08x}", crc32fast::hash(list.as_bytes())) {
        return None;
    }
    let names: Vec<String> = list
        .split('\n')
        .filter(|n| !n.is_empty())
        .map(str::to_string)
        .collect();
    names
        .iter()
        .all(|n| KERNEL_FILES.contains(&n.as_str()))
        .then_some(names)
}

/// Removes the rewrite directory of `dir` if there is one (durably).
pub fn discard(fs: &dyn FileSystem, dir: &Path) -> Result<()> {
    let tmp = dir.join(REWRITE_DIR);
    if !fs.exists(&tmp).map_err(|e| io("checking for", &tmp, e))? {
        return Ok(());
    }
    remove_tree(fs, &tmp).map_err(|e| io("removing", &tmp, e))?;
    fs.sync_dir(dir)
        .map_err(|e| io("syncing directory", dir, e))
}

/// Settles a rewrite a crash (or a finished rewrite of the store layer) left in `dir`: moves the new
/// store's files in if its marker is complete, otherwise deletes it. Returns whether files
/// were moved. Runs before anything opens the store's files.
pub fn settle(fs: &dyn FileSystem, dir: &Path) -> Result<bool> {
    let tmp = dir.join(REWRITE_DIR);
    // The common case, at every open: no rewrite directory, one check.
    if !fs.exists(&tmp).map_err(|e| io("checking for", &tmp, e))? {
        return Ok(false);
    }
    let marker = tmp.join(COMPLETE);
    if !fs
        .exists(&marker)
        .map_err(|e| io("checking for", &marker, e))?
    {
        discard(fs, dir)?;
        return Ok(false);
    }
    let f = fs
        .open(&marker, OpenMode::Existing)
        .map_err(|e| io("opening", &marker, e))?;
    let len = f.len().map_err(|e| io("reading length of", &marker, e))?;
    let names = if len > 4096 {
        None
    } else {
        let mut buf = vec![0u8; len as usize];
        f.read_exact_at(&mut buf, 0)
            .map_err(|e| io("reading", &marker, e))?;
        decode_marker(&buf)
    };
    let Some(names) = names else {
        discard(fs, dir)?;
        return Ok(false);
    };
    for name in KERNEL_FILES {
        let from = tmp.join(name);
        let to = dir.join(name);
        if names.iter().any(|n| n == name) {
            if fs.exists(&from).map_err(|e| io("checking for", &from, e))? {
                fs.rename(&from, &to)
                    .map_err(|e| io("moving into place", &to, e))?;
            }
        } else if fs.exists(&to).map_err(|e| io("checking for", &to, e))? {
            fs.remove_file(&to).map_err(|e| io("removing", &to, e))?;
        }
    }
    // The moves are durable before the marker goes: until then a crash redoes them.
    fs.sync_dir(dir)
        .map_err(|e| io("syncing directory", dir, e))?;
    fs.remove_file(&marker)
        .map_err(|e| io("removing", &marker, e))?;
    fs.sync_dir(&tmp)
        .map_err(|e| io("syncing directory", &tmp, e))?;
    discard(fs, dir)?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_marker_round_trips_and_any_torn_or_flipped_one_is_refused() {
        for names in [
            vec![PAGE_DB, LOG_FILE],
            vec![PAGE_DB, LOG_FILE, XA_LOG],
            vec![],
        ] {
            let good = encode_marker(&names);
            let want: Vec<String> = names.iter().map(|n| n.to_string()).collect();
            assert_eq!(decode_marker(&good), Some(want.clone()));
            for len in 0..good.len() {
                assert_eq!(decode_marker(&good[..len]), None, "torn at {len}");
            }
            for i in 0..good.len() {
                for bit in 0..8 {
                    let mut bad = good.clone();
                    bad[i] ^= 1 << bit;
                    assert_ne!(
                        decode_marker(&bad),
                        Some(want.clone()),
                        "byte {i} bit {bit}"
                    );
                }
            }
        }
        // A valid CRC over a name that is not a kernel file is refused too.
        let mut odd = b"../escape".to_vec();
        let crc = crc32fast::hash(&odd);
        odd.extend_from_slice(format!("\n{crc:08x}\n").as_bytes());
        assert_eq!(decode_marker(&odd), None);
    }
}
