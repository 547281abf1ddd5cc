//! The error taxonomy of the engine.
//!
//! Owns: [`Error`] and the crate-wide [`Result`] alias.
//! Invariants: every message says what happened and what the caller can do about it;
//! `Corruption` always names the file and the location inside it; `Poisoned` is returned
//! for every call after an I/O failure that may have left a write half-done, until reopen.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// The result type of every fallible stowage call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in stowage.
///
/// Match variants with `{ .. }` patterns: fields may be added in later versions.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// An operating-system I/O call failed.
    Io {
        /// What the engine was doing, including the file involved.
        context: String,
        /// The underlying OS error.
        source: io::Error,
    },
    /// Bytes read from disk failed validation (checksum, magic, bounds).
    Corruption {
        /// The file the bad bytes are in (e.g. `page.db`).
        file: String,
        /// Where in the file (e.g. `page 17`, `superblock 1`, `offset 4096`).
        location: String,
        /// What check failed.
        detail: String,
    },
    /// A `StoreConfig` field (or a rule between two fields) is violated.
    InvalidConfig {
        /// The field's name.
        param: &'static str,
        /// Which rule it breaks.
        reason: String,
    },
    /// An argument passed to an API call is invalid.
    InvalidArgument {
        /// What is wrong with it.
        reason: String,
    },
    /// Another handle, in this or another process, holds the store directory open.
    Locked {
        /// The store directory.
        path: PathBuf,
    },
    /// `create_queue` of a queue that already exists.
    QueueExists {
        /// The queue's name.
        queue: String,
    },
    /// The named queue does not exist.
    QueueNotFound {
        /// The queue's name.
        queue: String,
    },
    /// No message with that key is in the queue.
    MessageNotFound {
        /// The queue's name.
        queue: String,
        /// The message key.
        key: u64,
    },
    /// Another open or prepared transaction already removes or updates that message.
    MessageLocked {
        /// The queue's name.
        queue: String,
        /// The message key.
        key: u64,
    },
    /// A payload is larger than `max_message_size`.
    TooLarge {
        /// The payload's size in bytes.
        size: u64,
        /// The configured maximum.
        max: u64,
    },
    /// `prepare` with an xid that is already in doubt.
    XidExists {
        /// The xid, formatted.
        xid: String,
    },
    /// `commit_prepared` / `rollback_prepared` of an xid that is not in doubt.
    XidNotFound {
        /// The xid, formatted.
        xid: String,
    },
    /// Every cache frame stayed pinned for the whole wait.
    CacheExhausted {
        /// Frames in the cache (its maximum).
        frames: usize,
        /// How long the caller waited, in milliseconds.
        waited_ms: u64,
    },
    /// The store was closed; this handle can no longer be used.
    Closed,
    /// An earlier I/O failure may have left a write half-done; the store refuses all work
    /// until it is reopened (recovery then restores a consistent state).
    Poisoned {
        /// The failure that poisoned the store.
        cause: String,
    },
}

impl Error {
    /// An [`Error::Io`] with a description of the operation that failed.
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    /// An [`Error::Corruption`] naming the file and location.
    pub fn corruption(
        file: impl Into<String>,
        location: impl Into<String>,
        detail: impl Into<String>,
    ) -> Self {
        Error::Corruption {
            file: file.into(),
            location: location.into(),
            detail: detail.into(),
        }
    }

    /// An [`Error::InvalidArgument`].
    pub fn invalid_argument(reason: impl Into<String>) -> Self {
        Error::InvalidArgument {
            reason: reason.into(),
        }
    }

    /// True for errors after which the engine must stop writing (I/O failures).
    pub fn is_io(&self) -> bool {
        matches!(self, Error::Io { .. })
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Io { context, source } => write!(
                f,
                "I/O error while {context}: {source}; check the disk and permissions, then reopen the store"
            ),
            Error::Corruption {
                file,
                location,
                detail,
            } => write!(
                f,
                "corruption in {file} at {location}: {detail}; run `stowage check`, then `stowage repair` or restore a backup"
            ),
            Error::InvalidConfig { param, reason } => {
                write!(f, "invalid configuration: `{param}` {reason}")
            }
            Error::InvalidArgument { reason } => write!(f, "invalid argument: {reason}"),
            Error::Locked { path } => write!(
                f,
                "store {} is locked by another open handle or process; close it first",
                path.display()
            ),
            Error::QueueExists { queue } => write!(f, "queue `{queue}` already exists"),
            Error::QueueNotFound { queue } => {
                write!(f, "queue `{queue}` does not exist; create it first")
            }
            Error::MessageNotFound { queue, key } => {
                write!(f, "no message with key {key} in queue `{queue}`")
            }
            Error::MessageLocked { queue, key } => write!(
                f,
                "message {key} in queue `{queue}` is held by another open or prepared transaction; retry after it ends"
            ),
            Error::TooLarge { size, max } => write!(
                f,
                "payload of {size} bytes exceeds max_message_size ({max} bytes); raise the limit or split the message"
            ),
            Error::XidExists { xid } => write!(f, "xid {xid} is already prepared (in doubt)"),
            Error::XidNotFound { xid } => write!(f, "xid {xid} is not an in-doubt transaction"),
            Error::CacheExhausted { frames, waited_ms } => write!(
                f,
                "all {frames} page-cache frames stayed pinned for {waited_ms} ms; raise cache_max_pages or hold fewer pages at once"
            ),
            Error::Closed => write!(f, "the store is closed; open it again to continue"),
            Error::Poisoned { cause } => write!(
                f,
                "the store stopped after an I/O failure ({cause}); reopen it to recover"
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_name_what_happened_and_what_to_do() {
        let e = Error::corruption("page.db", "page 7", "checksum mismatch");
        let s = e.to_string();
        assert!(s.contains("page.db") && s.contains("page 7") && s.contains("checksum"));
        assert!(s.contains("repair"));
        let e = Error::InvalidConfig {
            param: "page_size",
            reason: "must be a power of two".into(),
        };
        assert!(e.to_string().contains("`page_size`"));
        let e = Error::io("syncing page.db", io::Error::other("boom"));
        assert!(e.is_io());
        assert!(std::error::Error::source(&e).is_some());
        assert!(e.to_string().contains("syncing page.db"));
    }
}
