//! The `stowage` command on a real store: check is clean, stats/scan/dump work, `--json`
//! output parses, and exit codes follow docs/operations.md (0 fine, 2 usage/I-O error).

use std::process::Command;

use stowage::{NewMessage, Store, StoreConfig, Xid};

fn stowage(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_stowage"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn store() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreConfig {
            initial_db_size_pages: 64,
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
