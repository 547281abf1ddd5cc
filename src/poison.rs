//! The latched failure state shared by every writer of one open store.
//!
//! Invariant: once latched it never clears; every later check fails with
//! `Error::Poisoned` naming the first failure. Only reopening the store (which runs
//! recovery) gets a fresh one. A failed write or fsync may have left the files in a state
//! only recovery can sort out (Linux drops dirty pages after a failed fsync), so carrying on
//! would risk acknowledging data that is not on disk.

use std::sync::atomic::{AtomicBool, Ordering};

use parking_lot::Mutex;

use crate::error::{Error, Result};

/// A latch set by the first I/O failure of a write path.
#[derive(Debug, Default)]
pub struct Poison {
    set: AtomicBool,
    cause: Mutex<Option<String>>,
}

impl Poison {
    /// A clear latch.
    pub fn new() -> Self {
        Self::default()
    }

    /// `Err(Poisoned)` once latched.
    pub fn check(&self) -> Result<()> {
        if !self.set.load(Ordering::Acquire) {
            return Ok(());
        }
        Err(Error::Poisoned {
            cause: self.cause.lock().clone().unwrap_or_default(),
        })
    }

    /// Latches with `e` as the cause (the first cause wins) and returns `e`.
    pub fn latch(&self, e: Error) -> Error {
        let mut c = self.cause.lock();
        if c.is_none() {
            tracing::warn!(cause = %e, "store poisoned: writes stop until it is reopened");
            *c = Some(e.to_string());
        }
        self.set.store(true, Ordering::Release);
        e
    }

    /// True once latched.
    pub fn is_set(&self) -> bool {
        self.set.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_cause_wins_and_the_latch_never_clears() {
        let p = Poison::new();
        p.check().unwrap();
        let e = p.latch(Error::invalid_argument("first"));
        assert!(matches!(e, Error::InvalidArgument { .. }));
        p.latch(Error::invalid_argument("second"));
        for _ in 0..2 {
            match p.check() {
                Err(Error::Poisoned { cause }) => assert!(cause.contains("first"), "{cause}"),
                other => panic!("{other:?}"),
            }
        }
        assert!(p.is_set());
    }
}
