//! Recovery at open: redo the log's frames after the checkpoint onto page.db through the
//! cache.
//!
//! Invariants:
//! - Redo only, in LSN order, from the superblock's checkpoint LSN: frames at or below it
//!   are already reflected in page.db and are skipped.
//! - A page image is applied unconditionally (it repairs a torn page.db write; the
//!   records after it roll the page forward again); a delta applies only to a page whose
//!   LSN is older than its frame, so replaying twice changes nothing.
//! - Nothing is appended to the log while replaying; the caller ends recovery with a
//!   checkpoint, after which a crash replays from the new checkpoint.

use crate::error::{Error, Result};
use crate::kernel::Shared;
use crate::log::frame::{FrameKind, LOG_FILE};
use crate::log::Found;
use crate::page::{page_lsn, set_page_lsn, Lsn};
use crate::redo::{self, Record};

/// Replays the log into the kernel's cache and allocator; returns the frames applied.
/// XA records of frames after `xa_lsn` (the LSN `xa.log` reflects) are appended to `xa`.
pub(crate) fn recover(
    shared: &Shared,
    found: Found,
    xa_lsn: Lsn,
    xa: &mut Vec<Vec<u8>>,
) -> Result<u64> {
    let checkpoint = shared.pagedb.superblock().checkpoint_lsn;
    if found.base_lsn() > checkpoint {
        return Err(Error::corruption(
            LOG_FILE,
            "log header",
            format!(
                "the log starts after LSN {} but page.db was checkpointed at {checkpoint}: frames in between are missing",
                found.base_lsn()
            ),
        ));
    }
    let sb = shared.pagedb.superblock();
    if sb.clean_close && found.base_lsn() == checkpoint {
        // A clean close checkpointed everything and recycled the log: nothing to replay.
        // (The open that follows writes a superblock without the mark before any commit.)
        tracing::debug!(checkpoint, "clean close: no log to replay");
        return Ok(0);
    }
    tracing::info!(
        checkpoint,
        clean_close = sb.clean_close,
        "replaying the log"
    );
    let started = std::time::Instant::now();
    let page_size = shared.pagedb.page_size();
    let mut applied = 0;
    shared.log.replay(found, |frame| {
        if frame.lsn <= checkpoint {
            return Ok(());
        }
        match frame.kind {
            FrameKind::Commit => {
                let recs = redo::decode(&frame.payload, frame.lsn, page_size)?;
                for r in recs {
                    match r {
                        Record::Xa(bytes) => {
                            if frame.lsn > xa_lsn {
                                xa.push(bytes);
                            }
                        }
                        r => apply(shared, r, frame.lsn)?,
                    }
                }
            }
            other => {
                return Err(Error::corruption(
                    LOG_FILE,
                    format!("frame {}", frame.lsn),
                    format!("frame kind {other:?} is not supported by this version"),
                ))
            }
        }
        applied += 1;
        Ok(())
    })?;
    let ms = started.elapsed().as_millis() as u64;
    tracing::info!(frames = applied, ms, "recovery replayed the log");
    Ok(applied)
}

fn apply(shared: &Shared, r: Record, lsn: Lsn) -> Result<()> {
    match r {
        Record::PageCount(n) => shared.pagedb.recover_page_count(n),
        Record::Alloc(id) => shared.pagedb.recover_alloc(id),
        Record::Free(id) => {
            shared.cache.discard(id);
            shared.pagedb.recover_free(id)
        }
        Record::Root { slot, page } => {
            shared.writer.lock().set_root(usize::from(slot), page);
            if let Some(r) = shared.roots.lock().get_mut(usize::from(slot)) {
                *r = page;
            }
            Ok(())
        }
        Record::Image { page, bytes } => {
            let pinned = shared.cache.pin_new(page)?;
            let mut g = pinned.write(lsn);
            g.copy_from_slice(&bytes);
            set_page_lsn(&mut g, lsn);
            Ok(())
        }
        // Collected by the caller; nothing to apply to pages.
        Record::Xa(_) => Ok(()),
        Record::Delta { page, runs } => {
            let pinned = shared.cache.pin(page)?;
            if page_lsn(&pinned.read()) >= lsn {
                return Ok(());
            }
            let mut g = pinned.write(lsn);
            redo::apply_runs(&mut g, &runs);
            set_page_lsn(&mut g, lsn);
            Ok(())
        }
    }
}
