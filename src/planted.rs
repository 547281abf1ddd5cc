//! Deliberate bugs, switched on only by the crash harness's self-tests to prove that the
//! harness catches each kind of mistake (TESTING.md, "Harness self-test").
//!
//! Invariant: `PlantedBugs::default()` (all off) is what every real open uses; nothing
//! outside tests sets a field.

/// Which deliberate bugs are switched on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PlantedBugs {
    /// Skip the directory fsync after creating or renaming files.
    pub skip_dir_fsync: bool,
    /// Acknowledge `Sync` commits without syncing the log.
    pub ack_before_log_sync: bool,
    /// Grow page.db without syncing the new length before using it.
    pub grow_without_sync: bool,
    /// Accept pages and log frames whose checksum does not match.
    pub ignore_checksum: bool,
}
