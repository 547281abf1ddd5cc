//! The `stowage` command on a real store: check is clean, stats/scan/dump work, backup then
//! restore gives a store that checks clean with the same contents, `--json` output parses,
//! logging goes to stderr only when asked, and exit codes follow docs/operations.md (0 fine,
//! 1 problems found, 2 usage/I-O error).

use std::path::Path;
use std::process::Command;

use stowage::{NewMessage, Store, StoreConfig, Xid};

/// Runs the command with `env` set (and `STOWAGE_LOG` unset otherwise): (exit code,
/// stdout, stderr).
fn run(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stowage"));
    cmd.args(args).env_remove("STOWAGE_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn stowage(args: &[&str]) -> (i32, String) {
    let (code, out, _) = run(args, &[]);
    (code, out)
}

/// Runs the command and parses its stdout as JSON, asserting the exit code.
fn json(args: &[&str], code: i32) -> serde_json::Value {
    let (c, out, err) = run(args, &[]);
    assert_eq!(c, code, "{args:?}: stdout {out}, stderr {err}");
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("{args:?}: {e}: {out}"))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// `args` and, with the toml feature, `--config` with the smallest log: the log is
/// preallocated to 1.25 x `checkpoint_size` (growing at an open with a larger one) and a
/// backup copies it, so this keeps the tests' backups small.
fn small<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut v = args.to_vec();
    if cfg!(feature = "toml") {
        v.extend([
            "--config",
            concat!(env!("CARGO_MANIFEST_DIR"), "/tests/support/small_log.toml"),
        ]);
    }
    v
}

/// `stowage backup STORE --to DIR --json` (small log); the save set's path.
fn backup(store: &Path, to: &Path) -> std::path::PathBuf {
    let v = json(&small(&["backup", s(store), "--to", s(to), "--json"]), 0);
    Path::new(v["path"].as_str().unwrap()).to_path_buf()
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreConfig {
            initial_db_size_pages: 64,
            checkpoint_size: 1 << 20,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    s.create_queue("orders").unwrap();
    let mut tx = s.begin();
    tx.insert("orders", NewMessage::new(b"hello \"world\"".to_vec()))
        .unwrap();
    tx.insert("orders", NewMessage::new(vec![0xff, 0x00]))
        .unwrap();
    tx.commit().unwrap();
    let mut tx = s.begin();
    tx.insert("orders", NewMessage::new(b"xa".to_vec()))
        .unwrap();
    tx.prepare(Xid::new(1, b"g", b"").unwrap()).unwrap();
    s.close().unwrap();
    dir
}

#[test]
fn check_stats_scan_and_dump_on_a_real_store() {
    let dir = store();
    let d = dir.path().to_str().unwrap();
    let (code, out) = stowage(&["check", d]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("clean"));
    let (code, out) = stowage(&["check", d, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["clean"], true);
    let (code, out) = stowage(&["stats", d, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (
            v["messages"].as_u64(),
            v["queues"].as_u64(),
            v["prepared"].as_u64()
        ),
        (Some(2), Some(1), Some(1))
    );
    let (code, out) = stowage(&["scan", d, "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["messages"].as_u64(), Some(2));
    assert!(v["recommended_page_size"].as_u64().is_some());
    let (code, out) = stowage(&["dump", d, "--messages", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let items = v["queues"][0]["items"].as_array().unwrap();
    assert_eq!(items[0]["payload"], "hello \"world\"");
    assert_eq!(items[1]["payload"], "ff00");
    assert_eq!(v["prepared"].as_array().unwrap().len(), 1);
    let (code, out) = stowage(&["dump", d]);
    assert_eq!(code, 0);
    assert!(out.contains("queue orders (2 messages"), "{out}");
}

#[test]
fn a_missing_store_and_bad_usage_exit_with_2() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = stowage(&["check", dir.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(
        !dir.path().join("page.db").exists(),
        "check must not create a store"
    );
    let (code, _) = stowage(&["frobnicate"]);
    assert_eq!(code, 2);
}

#[test]
fn backup_then_restore_gives_a_clean_store_with_the_same_contents() {
    let dir = store();
    let work = tempfile::tempdir().unwrap();
    let (bk, restored) = (work.path().join("backups"), work.path().join("restored"));
    let v = json(&["backup", s(dir.path()), "--to", s(&bk), "--json"], 0);
    let set = Path::new(v["path"].as_str().unwrap()).to_path_buf();
    assert!(set.starts_with(&bk), "{v}");
    let name = set.file_name().unwrap().to_str().unwrap();
    assert!(
        name.starts_with("saveset_") && name.ends_with("_2048"),
        "{name}"
    );
    assert!(set.join(".completed").exists());
    assert_eq!(v["page_size"].as_u64(), Some(2048));
    assert!(v["bytes"].as_u64().unwrap() > 0);

    let v = json(&["restore", s(&set), s(&restored), "--json"], 0);
    assert_eq!(v["restored"], true);
    assert_eq!(v["saveset"].as_str(), Some(s(&set)));
    assert_eq!(v["target"].as_str(), Some(s(&restored)));

    let v = json(&["check", s(&restored), "--json"], 0);
    assert_eq!(v["clean"], true, "{v}");
    let dump = |d: &Path| json(&["dump", s(d), "--messages", "--json"], 0);
    assert_eq!(dump(&restored), dump(dir.path()));
    assert_eq!(dump(&restored)["prepared"].as_array().unwrap().len(), 1);

    // Human output names the save set and the target.
    let (code, out) = stowage(&small(&["backup", s(dir.path()), "--to", s(&bk)]));
    assert_eq!(code, 0);
    assert!(out.starts_with(&format!("save set: {}", s(&bk))), "{out}");
    let again = work.path().join("again");
    let (code, out) = stowage(&["restore", s(&set), s(&again)]);
    assert_eq!(code, 0);
    assert!(out.contains(&format!("into {}", s(&again))), "{out}");
}

#[test]
fn a_restore_onto_a_store_exits_2_and_leaves_it_alone() {
    let dir = store();
    let work = tempfile::tempdir().unwrap();
    let set = backup(dir.path(), work.path());
    let other = tempfile::tempdir().unwrap();
    let s2 = Store::open(
        other.path(),
        StoreConfig {
            initial_db_size_pages: 64,
            ..StoreConfig::default()
        },
    )
    .unwrap();
    s2.create_queue("mine").unwrap();
    s2.close().unwrap();
    let (code, out, err) = run(&["restore", s(&set), s(other.path()), "--json"], &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.is_empty(), "errors go to stderr: {out}");
    assert!(err.contains("already holds a store"), "{err}");
    let v = json(&["dump", s(other.path()), "--json"], 0);
    assert_eq!(v["queues"][0]["name"], "mine");
    assert_eq!(v["queues"].as_array().unwrap().len(), 1);
}

#[test]
fn a_damaged_save_set_is_refused_with_exit_1_and_nothing_restored() {
    let dir = store();
    let work = tempfile::tempdir().unwrap();
    let set = backup(dir.path(), work.path());
    let db = set.join("page.db");
    let mut bytes = std::fs::read(&db).unwrap();
    bytes[100] ^= 0xff;
    std::fs::write(&db, bytes).unwrap();
    let target = work.path().join("restored");
    let v = json(&["restore", s(&set), s(&target), "--json"], 1);
    assert_eq!(v["restored"], false);
    assert!(
        v["problems"][0].as_str().unwrap().contains("page.db"),
        "{v}"
    );
    assert!(!target.join("page.db").exists());
    let (code, out) = stowage(&["restore", s(&set), s(&target)]);
    assert_eq!(code, 1);
    assert!(out.starts_with("problem: "), "{out}");
    // Not a save set at all: a usage error.
    let (code, _) = stowage(&["restore", s(&work.path().join("nothing")), s(&target)]);
    assert_eq!(code, 2);
}

#[cfg(feature = "toml")]
#[test]
fn backup_into_the_configured_path_keeps_its_generations() {
    let dir = store();
    let work = tempfile::tempdir().unwrap();
    let (code, _, err) = run(&["backup", s(dir.path())], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("--to"), "{err}");
    let bk = work.path().join("generations");
    let config = work.path().join("stowage.toml");
    std::fs::write(
        &config,
        format!(
            "checkpoint_size = 1_048_576\nbackup_path = {:?}\nbackup_keep_generations = 1\n",
            s(&bk)
        ),
    )
    .unwrap();
    let args = ["backup", s(dir.path()), "--config", s(&config), "--json"];
    let first = json(&args, 0)["path"].as_str().unwrap().to_string();
    let second = json(&args, 0)["path"].as_str().unwrap().to_string();
    assert_ne!(first, second);
    let left: Vec<_> = std::fs::read_dir(&bk)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(left, vec![Path::new(&second).to_path_buf()]);
    // A bad configuration is a usage error naming the field.
    std::fs::write(&config, "checkpoint_size = 10\n").unwrap();
    let (code, _, err) = run(&["check", s(dir.path()), "--config", s(&config)], &[]);
    assert_eq!(code, 2);
    assert!(err.contains("`checkpoint_size`"), "{err}");
}

#[test]
fn log_lines_go_to_stderr_when_stowage_log_asks_for_them() {
    let dir = store();
    let work = tempfile::tempdir().unwrap();
    let args = small(&["backup", s(dir.path()), "--to", s(work.path()), "--json"]);
    let (code, out, err) = run(&args, &[]);
    assert_eq!(code, 0);
    assert!(err.is_empty(), "default filter is warn: {err}");
    serde_json::from_str::<serde_json::Value>(&out).unwrap();
    let (code, out, err) = run(&args, &[("STOWAGE_LOG", "info")]);
    assert_eq!(code, 0);
    assert!(
        err.contains("store opened") && err.contains("backup complete"),
        "{err}"
    );
    serde_json::from_str::<serde_json::Value>(&out).expect("stdout stays pure JSON");
}

#[test]
fn repair_reports_lost_messages_with_exit_1_and_shrink_reports_sizes() {
    let dir = store();
    let v = json(&small(&["repair", s(dir.path()), "--json"]), 0);
    assert_eq!(v["lossless"], true);
    assert_eq!(v["messages_recovered"], 2);
    assert_eq!(v["prepared_kept"], 1);
    // Damage the data page holding the payloads.
    let db_path = dir.path().join("page.db");
    let mut db = std::fs::read(&db_path).unwrap();
    let page = 2048;
    let data = (1..db.len() / page)
        .find(|&id| db[id * page] == stowage::page::PageType::Data as u8)
        .unwrap();
    db[data * page + 64..data * page + 96].fill(0x5a);
    std::fs::write(&db_path, &db).unwrap();
    let v = json(&small(&["repair", s(dir.path()), "--json"]), 1);
    assert_eq!(v["lossless"], false);
    assert_eq!(v["messages_lost"], 2);
    assert_eq!(v["queues"][0]["name"], "orders");
    assert_eq!(v["queues"][0]["lost_keys"].as_array().unwrap().len(), 2);
    let (code, out) = stowage(&small(&["check", s(dir.path())]));
    assert_eq!(code, 0, "{out}");
    let v = json(&small(&["shrink", s(dir.path()), "--json"]), 0);
    assert!(v["bytes_after"].as_u64().unwrap() <= v["bytes_before"].as_u64().unwrap());
}

#[test]
fn bench_device_quick_json_parses_and_recommends_a_valid_config() {
    let work = tempfile::tempdir().unwrap();
    let v = json(
        &[
            "bench",
            "--device",
            "--quick",
            "--json",
            "--dir",
            s(work.path()),
        ],
        0,
    );
    for key in [
        "append_fdatasync_4k_per_sec",
        "overwrite_fdatasync_4k_per_sec",
        "overwrite_fdatasync_4k_8_threads_per_sec",
        "sequential_write_mib_per_sec",
    ] {
        assert!(v["device"][key].as_f64().unwrap() > 0.0, "{key}: {v}");
    }
    let r = &v["recommended"];
    assert_eq!(r["force_sync"], true);
    #[cfg(feature = "toml")]
    StoreConfig::from_toml_str(&format!(
        "force_sync = {}\ncheckpoint_size = {}\nasync_flush_interval = {}\n",
        r["force_sync"], r["checkpoint_size"], r["async_flush_interval"]
    ))
    .expect("the recommendation is a valid configuration");
    assert!(!v["notes"].as_array().unwrap().is_empty());
    assert_eq!(
        std::fs::read_dir(work.path()).unwrap().count(),
        0,
        "scratch files left"
    );
}
