//! The device's fsync rates, measured in the same run (as `stowage bench` does), and the
//! tmpfs guard.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::Instant;

use crate::engines::Res;

/// Device figures for the table's header.
#[derive(Debug, Clone, Default)]
pub struct Device {
    /// 1 KiB append + fdatasync per second.
    pub append_1k: f64,
    /// 4 KiB overwrite of a preallocated file + fdatasync per second.
    pub overwrite_4k: f64,
    /// `df` of the directory: the filesystem type and source.
    pub fs: String,
}

const OPS: usize = 2000;

fn rate(dir: &Path, overwrite: bool) -> Res<f64> {
    let path = dir.join(format!("compare-device-{}", std::process::id()));
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&path)?;
    let size = if overwrite { 4096 } else { 1024 };
    if overwrite {
        let zeros = vec![0u8; 1 << 20];
        for i in 0..(OPS as u64 * 4096).div_ceil(1 << 20) {
            f.write_all_at(&zeros, i << 20)?;
        }
        f.sync_all()?;
    }
    let block = vec![0xA5u8; size];
    let start = Instant::now();
    for i in 0..OPS {
        f.write_all_at(&block, (i * size) as u64)?;
        f.sync_data()?;
    }
    let secs = start.elapsed().as_secs_f64().max(1e-9);
    drop(f);
    std::fs::remove_file(&path)?;
    Ok(OPS as f64 / secs)
}

/// Measures the device under `dir`.
pub fn probe(dir: &Path) -> Res<Device> {
    Ok(Device {
        append_1k: rate(dir, false)?,
        overwrite_4k: rate(dir, true)?,
        fs: describe(dir),
    })
}

/// `df --output=source,fstype` of `dir`, for the record.
fn describe(dir: &Path) -> String {
    std::process::Command::new("df")
        .args(["--output=source,fstype,size"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown".into())
}

/// Flushes every filesystem (so one run's writeback does not land in the next one's clock).
pub fn sync_all() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() };
}

const TMPFS_MAGIC: i64 = 0x0102_1994;
const RAMFS_MAGIC: i64 = 0x8584_58f6;

/// Refuses a directory on tmpfs or ramfs (the nearest existing ancestor is checked).
pub fn refuse_tmpfs(dir: &Path, allow: bool) -> Res<()> {
    let mut p = dir;
    while !p.exists() {
        p = match p.parent() {
            Some(parent) => parent,
            None => return Ok(()),
        };
    }
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes())?;
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a valid NUL-terminated path and `st` a properly sized out-buffer.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(format!(
            "statfs {}: {}",
            p.display(),
            std::io::Error::last_os_error()
        )
        .into());
    }
    let kind = st.f_type as i64;
    if (kind == TMPFS_MAGIC || kind == RAMFS_MAGIC) && !allow {
        return Err(format!(
            "{} is on tmpfs/ramfs: fsync costs nothing there; give a --dir on a real disk \
             (or --allow-tmpfs)",
            p.display()
        )
        .into());
    }
    Ok(())
}
