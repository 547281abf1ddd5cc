//! Store configuration.
//!
//! Owns: [`StoreConfig`], its defaults and its validation rules (API.md's table).
//! Invariant: `Store::open` never runs with a config for which [`StoreConfig::validate`]
//! fails; every violation names the field it concerns.

use std::path::PathBuf;
use std::time::Duration;

use crate::error::{Error, Result};

/// Smallest supported page size in bytes.
pub const MIN_PAGE_SIZE: u32 = 2048;
/// Largest supported page size in bytes.
pub const MAX_PAGE_SIZE: u32 = 65536;

/// Configuration of a store. Plain fields; start from [`StoreConfig::default`].
///
/// ```
/// use stowage::StoreConfig;
/// let cfg = StoreConfig { page_size: 4096, cache_max_pages: 4096, ..StoreConfig::default() };
/// cfg.validate().unwrap();
/// ```
///
/// With the `toml` feature (on by default) it also loads from TOML:
/// [`StoreConfig::from_toml_str`], [`StoreConfig::from_toml_file`]; the format is in
/// `docs/operations.md` and `examples/stowage.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(
    feature = "toml",
    derive(serde::Serialize, serde::Deserialize),
    serde(default, deny_unknown_fields)
)]
pub struct StoreConfig {
    /// Page size used when `page.db` is created (a power of two, 2048..=65536).
    /// An existing file keeps the page size stored in it.
    pub page_size: u32,
    /// Largest page size a scan may recommend (power of two, 2048..=65536, >= `page_size`).
    pub page_size_max: u32,
    /// Page size recommended by a scan; used by resize on startup.
    #[cfg_attr(feature = "toml", serde(skip_serializing_if = "Option::is_none"))]
    pub page_size_recommended: Option<u32>,
    /// Pages `page.db` is created with; also the first growth chunk (>= 10).
    pub initial_db_size_pages: u64,
    /// Rewrite `page.db` densely after recovery at open.
    pub perform_compact_on_startup: bool,
    /// Rewrite `page.db` at `page_size_recommended` after recovery at open.
    pub perform_resize_on_startup: bool,
    /// Frames the page cache keeps at least (>= 512, <= `cache_max_pages`).
    pub cache_min_pages: usize,
    /// Frames the page cache never exceeds (>= 512).
    pub cache_max_pages: usize,
    /// Bytes of `transaction.log` that trigger a checkpoint (>= 1 MiB).
    pub checkpoint_size: u64,
    /// True: commits default to `Durability::Sync`; false: to `Durability::Flush`.
    pub force_sync: bool,
    /// Longest time an `Async` commit stays unsynced (> 0).
    #[cfg_attr(feature = "toml", serde(with = "crate::config_toml::duration"))]
    pub async_flush_interval: Duration,
    /// Size after which a swap file rolls over to a new one (>= 1 MiB).
    pub swap_roll_over_size: u64,
    /// Directory `backup()` writes save sets into.
    #[cfg_attr(feature = "toml", serde(skip_serializing_if = "Option::is_none"))]
    pub backup_path: Option<PathBuf>,
    /// Complete save sets `backup()` keeps (>= 1).
    pub backup_keep_generations: usize,
    /// Largest payload accepted, in bytes (1..=1 GiB).
    pub max_message_size: u64,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            page_size: 2048,
            page_size_max: 32768,
            page_size_recommended: None,
            initial_db_size_pages: 25600,
            perform_compact_on_startup: false,
            perform_resize_on_startup: false,
            cache_min_pages: 1024,
            cache_max_pages: 2048,
            checkpoint_size: 104_857_600,
            force_sync: true,
            async_flush_interval: Duration::from_millis(100),
            swap_roll_over_size: 10_485_760,
            backup_path: None,
            backup_keep_generations: 3,
            max_message_size: 16_777_216,
        }
    }
}

/// The names of [`StoreConfig`]'s fields, in declaration order: the names
/// [`Error::InvalidConfig`] uses and the keys of the TOML form.
pub const FIELDS: [&str; 15] = [
    "page_size",
    "page_size_max",
    "page_size_recommended",
    "initial_db_size_pages",
    "perform_compact_on_startup",
    "perform_resize_on_startup",
    "cache_min_pages",
    "cache_max_pages",
    "checkpoint_size",
    "force_sync",
    "async_flush_interval",
    "swap_roll_over_size",
    "backup_path",
    "backup_keep_generations",
    "max_message_size",
];

/// True when `size` is a supported page size.
pub fn is_valid_page_size(size: u32) -> bool {
    size.is_power_of_two() && (MIN_PAGE_SIZE..=MAX_PAGE_SIZE).contains(&size)
}

fn invalid(param: &'static str, reason: impl Into<String>) -> Error {
    Error::InvalidConfig {
        param,
        reason: reason.into(),
    }
}

fn check_page_size(param: &'static str, size: u32) -> Result<()> {
    if is_valid_page_size(size) {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("must be a power of two from {MIN_PAGE_SIZE} to {MAX_PAGE_SIZE}, got {size}"),
        ))
    }
}

fn check_at_least(param: &'static str, value: u64, min: u64) -> Result<()> {
    if value >= min {
        Ok(())
    } else {
        Err(invalid(
            param,
            format!("must be at least {min}, got {value}"),
        ))
    }
}

impl StoreConfig {
    /// Checks every rule of the configuration table; the error names the offending field.
    pub fn validate(&self) -> Result<()> {
        check_page_size("page_size", self.page_size)?;
        check_page_size("page_size_max", self.page_size_max)?;
        if self.page_size_max < self.page_size {
            return Err(invalid(
                "page_size_max",
                format!(
                    "must be >= page_size ({}), got {}",
                    self.page_size, self.page_size_max
                ),
            ));
        }
        if let Some(rec) = self.page_size_recommended {
            check_page_size("page_size_recommended", rec)?;
            if rec > self.page_size_max {
                return Err(invalid(
                    "page_size_recommended",
                    format!(
                        "must be <= page_size_max ({}), got {rec}",
                        self.page_size_max
                    ),
                ));
            }
        }
        check_at_least("initial_db_size_pages", self.initial_db_size_pages, 10)?;
        check_at_least("cache_min_pages", self.cache_min_pages as u64, 512)?;
        check_at_least("cache_max_pages", self.cache_max_pages as u64, 512)?;
        if self.cache_min_pages > self.cache_max_pages {
            return Err(invalid(
                "cache_min_pages",
                format!(
                    "must be <= cache_max_pages ({}), got {}",
                    self.cache_max_pages, self.cache_min_pages
                ),
            ));
        }
        check_at_least("checkpoint_size", self.checkpoint_size, 1_048_576)?;
        if self.async_flush_interval.is_zero() {
            return Err(invalid("async_flush_interval", "must be greater than zero"));
        }
        check_at_least("swap_roll_over_size", self.swap_roll_over_size, 1_048_576)?;
        check_at_least(
            "backup_keep_generations",
            self.backup_keep_generations as u64,
            1,
        )?;
        if !(1..=1_073_741_824).contains(&self.max_message_size) {
            return Err(invalid(
                "max_message_size",
                format!(
                    "must be from 1 to 1073741824 bytes, got {}",
                    self.max_message_size
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Asserts that `cfg` fails validation naming `param`, and that its Display names it.
    fn rejects(cfg: StoreConfig, param: &str) {
        match cfg.validate() {
            Err(e @ Error::InvalidConfig { .. }) => {
                let Error::InvalidConfig { param: p, .. } = &e else {
                    unreachable!()
                };
                assert_eq!(*p, param, "wrong field named: {e}");
                assert!(e.to_string().contains(param), "{e}");
            }
            other => panic!("expected InvalidConfig for {param}, got {other:?}"),
        }
    }

    fn base() -> StoreConfig {
        StoreConfig::default()
    }

    #[test]
    fn default_is_valid_and_matches_the_api_table() {
        let c = base();
        c.validate().unwrap();
        assert_eq!(c.page_size, 2048);
        assert_eq!(c.page_size_max, 32768);
        assert_eq!(c.page_size_recommended, None);
        assert_eq!(c.initial_db_size_pages, 25600);
        assert!(!c.perform_compact_on_startup && !c.perform_resize_on_startup);
        assert_eq!((c.cache_min_pages, c.cache_max_pages), (1024, 2048));
        assert_eq!(c.checkpoint_size, 104_857_600);
        assert!(c.force_sync);
        assert_eq!(c.async_flush_interval, Duration::from_millis(100));
        assert_eq!(c.swap_roll_over_size, 10_485_760);
        assert_eq!(c.backup_path, None);
        assert_eq!(c.backup_keep_generations, 3);
        assert_eq!(c.max_message_size, 16_777_216);
    }

    #[test]
    fn page_size_must_be_power_of_two_in_range() {
        for bad in [0, 1024, 3000, 131072, 4097] {
            rejects(
                StoreConfig {
                    page_size: bad,
                    ..base()
                },
                "page_size",
            );
        }
        for good in [2048, 4096, 8192, 16384, 32768] {
            StoreConfig {
                page_size: good,
                ..base()
            }
            .validate()
            .unwrap();
        }
    }

    #[test]
    fn page_size_max_must_be_power_of_two_in_range() {
        for bad in [1024, 5000, 131072] {
            rejects(
                StoreConfig {
                    page_size_max: bad,
                    ..base()
                },
                "page_size_max",
            );
        }
        StoreConfig {
            page_size_max: 65536,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn page_size_max_must_not_be_below_page_size() {
        rejects(
            StoreConfig {
                page_size: 8192,
                page_size_max: 4096,
                ..base()
            },
            "page_size_max",
        );
        StoreConfig {
            page_size: 8192,
            page_size_max: 8192,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn page_size_recommended_must_be_valid_and_within_max() {
        rejects(
            StoreConfig {
                page_size_recommended: Some(3000),
                ..base()
            },
            "page_size_recommended",
        );
        rejects(
            StoreConfig {
                page_size_recommended: Some(65536),
                ..base()
            },
            "page_size_recommended",
        );
        StoreConfig {
            page_size_recommended: Some(8192),
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn initial_db_size_pages_at_least_ten() {
        rejects(
            StoreConfig {
                initial_db_size_pages: 9,
                ..base()
            },
            "initial_db_size_pages",
        );
        StoreConfig {
            initial_db_size_pages: 10,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn cache_min_pages_at_least_512() {
        rejects(
            StoreConfig {
                cache_min_pages: 511,
                ..base()
            },
            "cache_min_pages",
        );
        StoreConfig {
            cache_min_pages: 512,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn cache_max_pages_at_least_512() {
        rejects(
            StoreConfig {
                cache_min_pages: 512,
                cache_max_pages: 511,
                ..base()
            },
            "cache_max_pages",
        );
    }

    #[test]
    fn cache_min_pages_not_above_max() {
        rejects(
            StoreConfig {
                cache_min_pages: 4096,
                cache_max_pages: 2048,
                ..base()
            },
            "cache_min_pages",
        );
        StoreConfig {
            cache_min_pages: 2048,
            cache_max_pages: 2048,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn checkpoint_size_at_least_one_mib() {
        rejects(
            StoreConfig {
                checkpoint_size: 1_048_575,
                ..base()
            },
            "checkpoint_size",
        );
        StoreConfig {
            checkpoint_size: 1_048_576,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn async_flush_interval_positive() {
        rejects(
            StoreConfig {
                async_flush_interval: Duration::ZERO,
                ..base()
            },
            "async_flush_interval",
        );
        StoreConfig {
            async_flush_interval: Duration::from_nanos(1),
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn swap_roll_over_size_at_least_one_mib() {
        rejects(
            StoreConfig {
                swap_roll_over_size: 1_048_575,
                ..base()
            },
            "swap_roll_over_size",
        );
        StoreConfig {
            swap_roll_over_size: 1_048_576,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn backup_keep_generations_at_least_one() {
        rejects(
            StoreConfig {
                backup_keep_generations: 0,
                ..base()
            },
            "backup_keep_generations",
        );
        StoreConfig {
            backup_keep_generations: 1,
            ..base()
        }
        .validate()
        .unwrap();
    }

    #[test]
    fn max_message_size_from_one_byte_to_one_gib() {
        rejects(
            StoreConfig {
                max_message_size: 0,
                ..base()
            },
            "max_message_size",
        );
        rejects(
            StoreConfig {
                max_message_size: 1_073_741_825,
                ..base()
            },
            "max_message_size",
        );
        StoreConfig {
            max_message_size: 1,
            ..base()
        }
        .validate()
        .unwrap();
        StoreConfig {
            max_message_size: 1_073_741_824,
            ..base()
        }
        .validate()
        .unwrap();
    }
}
