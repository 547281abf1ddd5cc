//! [`StoreConfig`] from and to TOML (the `toml` feature).
//!
//! The keys are the field names; a missing key takes its default; an unknown key is an
//! error naming it. Durations are strings with a unit (`"100ms"`); `Option` fields are
//! left out for `None`. The complete format, with every default, is
//! `examples/stowage.toml`, quoted in `docs/operations.md`.
//!
//! Invariant: a config returned by [`StoreConfig::from_toml_str`] has passed
//! [`StoreConfig::validate`], so a bad value gives the same `Error::InvalidConfig` whether it
//! came from TOML or from code.

use std::path::Path;

use crate::config::{StoreConfig, FIELDS};
use crate::error::{Error, Result};

/// Durations as an integer and a unit: `ns`, `us`, `ms`, `s`, `min` or `h` (`"100ms"`,
/// `"2 s"`). Written in the largest unit that holds the value exactly, so a round trip is
/// lossless.
pub(crate) mod duration {
    use std::time::Duration;

    use serde::{de, Deserializer, Serializer};

    /// (unit, nanoseconds in it), largest first.
    const UNITS: [(&str, u128); 6] = [
        ("h", 3_600_000_000_000),
        ("min", 60_000_000_000),
        ("s", 1_000_000_000),
        ("ms", 1_000_000),
        ("us", 1_000),
        ("ns", 1),
    ];

    const EXPECTED: &str =
        "a string with an integer and a unit (ns, us, ms, s, min, h), e.g. \"100ms\"";

    /// `"<integer><unit>"` to a duration; the error says what form is expected.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
        let (digits, unit) = (&t[..split], t[split..].trim());
        let n: u128 = digits
            .parse()
            .map_err(|_| format!("{text:?}: expected {EXPECTED}"))?;
        let per = UNITS
            .iter()
            .find(|(u, _)| *u == unit)
            .map(|(_, per)| *per)
            .ok_or_else(|| format!("{text:?}: unknown unit {unit:?}; expected {EXPECTED}"))?;
        let nanos = n
            .checked_mul(per)
            .filter(|ns| *ns / 1_000_000_000 <= u128::from(u64::MAX))
            .ok_or_else(|| format!("{text:?} is too long a duration"))?;
        Ok(Duration::new(
            (nanos / 1_000_000_000) as u64,
            (nanos % 1_000_000_000) as u32,
        ))
    }

    /// The duration in the largest unit that holds it exactly (`"0ms"` for zero).
    pub fn format(d: Duration) -> String {
        let nanos = d.as_nanos();
        if nanos == 0 {
            return "0ms".to_string();
        }
        let (unit, per) = UNITS
            .iter()
            .find(|(_, per)| nanos % per == 0)
            .copied()
            .unwrap_or(("ns", 1));
        format!("{}{unit}", nanos / per)
    }

    /// serde's `with` hook: writes [`format`].
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    /// serde's `with` hook: reads [`parse`]; any other type is an error saying the form.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        struct Text;
        impl de::Visitor<'_> for Text {
            type Value = Duration;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str(EXPECTED)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Duration, E> {
                parse(v).map_err(E::custom)
            }
        }
        d.deserialize_str(Text)
    }
}

impl StoreConfig {
    /// Parses a TOML document whose keys are this struct's field names (see
    /// `examples/stowage.toml`), then [`validate`](StoreConfig::validate)s it. Missing
    /// fields take their defaults.
    ///
    /// Errors: a value of the wrong type or form, or one that breaks a rule, is
    /// `Error::InvalidConfig` naming the field; an unknown field, or text that is not TOML,
    /// is `Error::InvalidArgument` with the field's name or the parser's message.
    ///
    /// ```
    /// use std::time::Duration;
    /// use stowage::StoreConfig;
    /// let cfg = StoreConfig::from_toml_str("page_size = 8192\nasync_flush_interval = \"20ms\"\n")?;
    /// assert_eq!(cfg.page_size, 8192);
    /// assert_eq!(cfg.async_flush_interval, Duration::from_millis(20));
    /// assert_eq!(cfg.cache_max_pages, StoreConfig::default().cache_max_pages);
    /// assert!(StoreConfig::from_toml_str("page_size = 3000").is_err());
    /// # Ok::<(), stowage::Error>(())
    /// ```
    pub fn from_toml_str(text: &str) -> Result<StoreConfig> {
        let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            Error::invalid_argument(format!("configuration is not valid TOML: {e}"))
        })?;
        // Each key on its own first, so that an error can name the field it concerns.
        for (key, value) in &table {
            let Some(param) = FIELDS.iter().copied().find(|f| f == key) else {
                return Err(Error::invalid_argument(format!(
                    "unknown configuration field `{key}`; the fields are: {}",
                    FIELDS.join(", ")
                )));
            };
            let one = toml::Table::from_iter([(key.clone(), value.clone())]);
            one.try_into::<StoreConfig>()
                .map_err(|e| Error::InvalidConfig {
                    param,
                    reason: format!("has a wrong value: {}", e.message().trim_end()),
                })?;
        }
        let config: StoreConfig = table.try_into().map_err(|e: toml::de::Error| {
            Error::invalid_argument(format!("configuration: {}", e.message().trim_end()))
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads `path` and parses it with [`StoreConfig::from_toml_str`]; a file that cannot
    /// be read is `Error::Io`.
    pub fn from_toml_file(path: impl AsRef<Path>) -> Result<StoreConfig> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("reading configuration {}", path.display()), e))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            Error::InvalidArgument { reason } => {
                Error::invalid_argument(format!("{}: {reason}", path.display()))
            }
            other => other,
        })
    }

    /// This configuration as a TOML document that [`StoreConfig::from_toml_str`] reads
    /// back to an equal value (`None` fields are left out). Fails only for a `backup_path`
    /// that is not valid UTF-8.
    pub fn to_toml_string(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| {
            Error::invalid_argument(format!("configuration cannot be written as TOML: {e}"))
        })
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;
    use std::time::Duration;

    use super::*;

    const EXAMPLE: &str = include_str!("../examples/stowage.toml");

    fn field_named(e: Error) -> &'static str {
        match e {
            Error::InvalidConfig { param, .. } => param,
            other => panic!("expected InvalidConfig, got {other:?}"),
        }
    }

    fn every_field_set() -> StoreConfig {
        StoreConfig {
            page_size: 8192,
            page_size_max: 65536,
            page_size_recommended: Some(16384),
            initial_db_size_pages: 1000,
            perform_compact_on_startup: true,
            perform_resize_on_startup: true,
            cache_min_pages: 600,
            cache_max_pages: 9000,
            checkpoint_size: 1 << 30,
            force_sync: false,
            async_flush_interval: Duration::from_micros(2500),
            swap_roll_over_size: 1 << 21,
            backup_path: Some(PathBuf::from("/var/backups/stowage store")),
            backup_keep_generations: 7,
            max_message_size: 1 << 20,
        }
    }

    #[test]
    fn a_full_file_round_trips() {
        let c = every_field_set();
        let text = c.to_toml_string().unwrap();
        assert!(text.contains("async_flush_interval = \"2500us\""), "{text}");
        assert_eq!(StoreConfig::from_toml_str(&text).unwrap(), c);
        let d = StoreConfig::default();
        assert_eq!(
            StoreConfig::from_toml_str(&d.to_toml_string().unwrap()).unwrap(),
            d
        );
    }

    #[test]
    fn fields_is_every_field_in_order() {
        let table: toml::Table = toml::from_str(&every_field_set().to_toml_string().unwrap())
            .expect("our own output parses");
        let keys: Vec<&str> = table.keys().map(String::as_str).collect();
        let mut fields = FIELDS.to_vec();
        fields.sort_unstable();
        let mut sorted = keys.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, fields);
    }

    #[test]
    fn missing_fields_take_the_defaults() {
        assert_eq!(
            StoreConfig::from_toml_str("").unwrap(),
            StoreConfig::default()
        );
        let c = StoreConfig::from_toml_str("force_sync = false\n# a comment\n").unwrap();
        assert_eq!(
            c,
            StoreConfig {
                force_sync: false,
                ..StoreConfig::default()
            }
        );
    }

    #[test]
    fn an_unknown_field_is_named() {
        let e = StoreConfig::from_toml_str("page_size = 4096\npage_sise_max = 8192\n").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(e.to_string().contains("`page_sise_max`"), "{e}");
        let e = StoreConfig::from_toml_str("[cache]\nmax = 1\n").unwrap_err();
        assert!(e.to_string().contains("`cache`"), "{e}");
    }

    #[test]
    fn an_invalid_value_is_named_by_validate() {
        let e = StoreConfig::from_toml_str("page_size = 3000").unwrap_err();
        assert!(e.to_string().contains("power of two"), "{e}");
        assert_eq!(field_named(e), "page_size");
        // A rule between two fields, as validate() names it.
        let e = StoreConfig::from_toml_str("cache_min_pages = 4096\ncache_max_pages = 2048")
            .unwrap_err();
        assert_eq!(field_named(e), "cache_min_pages");
        let e = StoreConfig::from_toml_str("async_flush_interval = \"0ms\"").unwrap_err();
        assert_eq!(field_named(e), "async_flush_interval");
    }

    #[test]
    fn a_value_of_the_wrong_type_or_form_is_named() {
        for (text, field) in [
            ("page_size = \"big\"", "page_size"),
            ("checkpoint_size = -1", "checkpoint_size"),
            ("force_sync = 1", "force_sync"),
            ("async_flush_interval = 100", "async_flush_interval"),
            (
                "async_flush_interval = \"100 fortnights\"",
                "async_flush_interval",
            ),
            ("backup_path = 3", "backup_path"),
            ("page_size = 4096\ncache_max_pages = 1.5", "cache_max_pages"),
        ] {
            let e = StoreConfig::from_toml_str(text).unwrap_err();
            assert!(e.to_string().contains(&format!("`{field}`")), "{text}: {e}");
            assert_eq!(field_named(e), field, "{text}");
        }
        // A bare number for a duration is told the form it needs.
        let e = StoreConfig::from_toml_str("async_flush_interval = 100").unwrap_err();
        assert!(e.to_string().contains("e.g. \"100ms\""), "{e}");
    }

    #[test]
    fn text_that_is_not_toml_is_an_invalid_argument() {
        let e = StoreConfig::from_toml_str("page_size = = 4096").unwrap_err();
        assert!(matches!(e, Error::InvalidArgument { .. }), "{e:?}");
        assert!(e.to_string().contains("not valid TOML"), "{e}");
    }

    #[test]
    fn durations_read_every_unit_and_write_the_largest_exact_one() {
        use super::duration::{format, parse};
        for (text, d) in [
            ("100ms", Duration::from_millis(100)),
            ("2 s", Duration::from_secs(2)),
            (" 7ns ", Duration::from_nanos(7)),
            ("1500us", Duration::from_micros(1500)),
            ("3min", Duration::from_secs(180)),
            ("1h", Duration::from_secs(3600)),
        ] {
            assert_eq!(parse(text), Ok(d), "{text}");
        }
        for bad in [
            "",
            "ms",
            "100",
            "-1ms",
            "1.5s",
            "1 sec",
            "99999999999999999999999h",
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(format(Duration::from_millis(100)), "100ms");
        assert_eq!(format(Duration::from_millis(1500)), "1500ms");
        assert_eq!(format(Duration::from_secs(120)), "2min");
        assert_eq!(format(Duration::from_nanos(1)), "1ns");
        assert_eq!(format(Duration::ZERO), "0ms");
        let max = Duration::new(u64::MAX, 999_999_999);
        assert_eq!(parse(&format(max)), Ok(max));
    }

    #[test]
    fn the_example_file_is_complete_holds_the_defaults_and_is_in_the_docs() {
        assert_eq!(
            StoreConfig::from_toml_str(EXAMPLE).unwrap(),
            StoreConfig::default()
        );
        for f in FIELDS {
            assert!(
                EXAMPLE
                    .lines()
                    .any(|l| l.trim_start_matches("# ").starts_with(&format!("{f} = "))),
                "examples/stowage.toml lacks {f}"
            );
        }
        // The commented-out settings (the fields whose default is "not set") are valid too.
        let uncommented: String = EXAMPLE
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest) if FIELDS.iter().any(|f| rest.starts_with(&format!("{f} = "))) => rest,
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        let c = StoreConfig::from_toml_str(&uncommented).unwrap();
        assert!(c.page_size_recommended.is_some() && c.backup_path.is_some());
        let docs = include_str!("../docs/operations.md");
        assert!(
            docs.contains(EXAMPLE.trim_end()),
            "docs/operations.md must quote examples/stowage.toml verbatim"
        );
    }
}
