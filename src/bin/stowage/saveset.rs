//! `stowage backup | restore`: save sets (see docs/operations.md, "Backup and restore").
//!
//! Exit codes: 0 done; 1 (restore) the save set fails verification (incomplete, or a file
//! disagrees with its manifest), nothing is written to the target; 2 usage or I/O error,
//! including a restore target that already holds a store. `--json` prints one JSON
//! document carrying the save set's path.

use std::path::Path;
use std::time::{Instant, SystemTime};

use stowage::{Error, Store};

use crate::inspect::{json_str, json_strs, open, Res};
use crate::progress::spin;
use crate::Target;

/// Files and bytes under `dir`, recursively.
fn tree_size(dir: &Path) -> Res<(u64, u64)> {
    let (mut files, mut bytes) = (0, 0);
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        if meta.is_dir() {
            let (f, b) = tree_size(&entry.path())?;
            files += f;
            bytes += b;
        } else {
            files += 1;
            bytes += meta.len();
        }
    }
    Ok((files, bytes))
}

/// `backup`: into `--to DIR`, or into the configured `backup_path` with its generations.
pub fn backup(t: &Target, to: Option<&Path>) -> Res<i32> {
    let config = t.config()?;
    if to.is_none() && config.backup_path.is_none() {
        let how = if cfg!(feature = "toml") {
            "give --to DIR, or a --config FILE that sets backup_path"
        } else {
            "give --to DIR"
        };
        return Err(format!("no backup directory: {how}").into());
    }
    let s = open(t)?;
    let started = Instant::now();
    let set = spin(format!("backing up {}", t.dir.display()), || match to {
        Some(dir) => s.backup_to(dir),
        None => s.backup(),
    })?;
    let secs = started.elapsed().as_secs_f64();
    s.close()?;
    let (files, bytes) = tree_size(&set.path)?;
    let created_ms = set
        .created
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    if t.json {
        println!(
            "{{\"path\":{},\"page_size\":{},\"created_unix_ms\":{created_ms},\"files\":{files},\"bytes\":{bytes},\"seconds\":{secs:.3}}}",
            json_str(&set.path.display().to_string()),
            set.page_size,
        );
    } else {
        println!("save set: {}", set.path.display());
        println!(
            "{files} files, {bytes} bytes, page size {}, in {secs:.2} s",
            set.page_size
        );
    }
    Ok(0)
}

/// `restore`: verifies `saveset` and rebuilds a store in `target`.
pub fn restore(saveset: &Path, target: &Path, json: bool) -> Res<i32> {
    if !saveset.is_dir() {
        return Err(format!("{} is not a save set directory", saveset.display()).into());
    }
    let started = Instant::now();
    let result = spin(
        format!("verifying {} and restoring", saveset.display()),
        || Store::restore(saveset, target),
    );
    let secs = started.elapsed().as_secs_f64();
    let (set, into) = (
        json_str(&saveset.display().to_string()),
        json_str(&target.display().to_string()),
    );
    match result {
        Ok(()) => {
            let (files, bytes) = tree_size(target)?;
            if json {
                println!(
                    "{{\"restored\":true,\"saveset\":{set},\"target\":{into},\"files\":{files},\"bytes\":{bytes},\"seconds\":{secs:.3},\"problems\":[]}}"
                );
            } else {
                println!("restored {} into {}", saveset.display(), target.display());
                println!("{files} files, {bytes} bytes, in {secs:.2} s");
            }
            Ok(0)
        }
        // A damaged or incomplete save set is a finding about it, not a usage error.
        Err(e @ Error::Corruption { .. }) => {
            if json {
                println!(
                    "{{\"restored\":false,\"saveset\":{set},\"target\":{into},\"problems\":{}}}",
                    json_strs(&[e.to_string()])
                );
            } else {
                println!("problem: {e}");
                println!("nothing was restored into {}", target.display());
            }
            Ok(1)
        }
        Err(e) => Err(e.into()),
    }
}
