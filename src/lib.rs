//! # stowage
//!
//! An embedded storage engine for message brokers: persistent queues of messages kept safe
//! on local disk, modelled on the SwiftMQ router's store (a `page.db` of fixed-size pages, an
//! LRU page cache, a `transaction.log` with checkpoints) and rebuilt without its weaknesses.
//!
//! The layers, bottom-up, each in its own module:
//! - [`mod@file`]: the file layer every byte of I/O goes through (real and simulated);
//! - [`page`]: the on-disk page format (page header, superblock codec);
//! - [`pagedb`]: `page.db` itself: twin superblocks, growth, the persisted free-space map;
//! - [`cache`]: the page cache with pin/unpin, latches, LRU and the WAL rule;
//! - [`log`]: `transaction.log`, group commit and recycling; [`redo`]: what a commit logs;
//! - [`kernel`]: transactional pages: the commit path, checkpoints, recovery at open;
//! - [`btree`]: the per-queue index; [`records`]: payloads in slotted data pages and
//!   overflow chains; [`catalog`]: queue name to queue metadata;
//! - the store facade ([`Store`], [`Transaction`]): the broker-facing API.
//!
//! The lower layers are public so that tools and tests can drive them; brokers use the
//! store facade (see `API.md`).

#![deny(missing_docs)]
#![forbid(unsafe_op_in_unsafe_fn)]

pub mod btree;
mod bytes;
pub mod cache;
pub mod catalog;
pub mod config;
#[cfg(feature = "toml")]
mod config_toml;
pub mod durables;
pub mod error;
pub mod file;
#[doc(hidden)]
pub mod fuzzing;
pub mod kernel;
pub mod log;
pub mod page;
pub mod pagedb;
#[doc(hidden)]
pub mod planted;
pub mod poison;
pub mod records;
mod recovery;
pub mod redo;
mod store;
pub mod swap;
pub mod xalog;

pub use btree::LostRange;
pub use config::StoreConfig;
pub use durables::DurableSubscription;
pub use error::{Error, Result};
pub use log::Durability;
#[doc(hidden)]
pub use store::fuzz_xa;
pub use store::{
    CacheStats, CheckReport, Entry, Message, NewMessage, QueueInfo, QueueRepair, RepairReport,
    SaveSet, ScanReport, ShrinkReport, Store, StoreStats, Transaction, Xid,
};
pub use swap::{SwapPointer, SwapQueue, SwapRecord};
