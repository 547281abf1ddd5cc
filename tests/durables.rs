//! Durable subscriptions (`stowage::durables`): the API on the real and the simulated file
//! layer, hostile client ids and names, limits, corrupt and truncated files, leftovers of
//! crashed saves, and poisoning after an I/O failure.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use stowage::durables::{file_name, DurableSubscription, Durables, MAX_ID_LEN};
use stowage::file::{CrashOutcome, FileSystem, RealFs, SimFs};
use stowage::Error;

const STORE: &str = "/store";

fn sub(c: &str, n: &str, topic: &str) -> DurableSubscription {
    DurableSubscription {
        client_id: c.into(),
        name: n.into(),
        topic: topic.into(),
        selector: None,
        no_local: false,
    }
}

fn sim_durables() -> (SimFs, Durables) {
    let sim = SimFs::new();
    let d = Durables::open(Arc::new(sim.clone()), Path::new(STORE)).unwrap();
    (sim, d)
}

fn durables_dir() -> PathBuf {
    Path::new(STORE).join("durables")
}

/// save/get/list/remove/replace, then a reopen on the same file system.
fn round_trip(fs: Arc<dyn FileSystem>, store: &Path) {
    let d = Durables::open(Arc::clone(&fs), store).unwrap();
    assert_eq!(d.list().unwrap(), vec![]);
    assert_eq!(d.get("c1", "n1").unwrap(), None);
    let a = DurableSubscription {
        selector: Some("color = 'red'".into()),
        no_local: true,
        ..sub("c1", "n1", "orders")
    };
    let b = sub("c1", "n0", "prices");
    let c = sub("c0", "n9", "news");
    for x in [&a, &b, &c] {
        d.save(x).unwrap();
    }
    assert_eq!(d.get("c1", "n1").unwrap().as_ref(), Some(&a));
    assert_eq!(d.list().unwrap(), vec![c.clone(), b.clone(), a.clone()]);
    // Replace: same (client id, name), every other field changed.
    let a2 = DurableSubscription {
        topic: "orders.eu".into(),
        selector: None,
        no_local: false,
        ..a.clone()
    };
    d.save(&a2).unwrap();
    assert_eq!(d.get("c1", "n1").unwrap().as_ref(), Some(&a2));
    assert_eq!(d.list().unwrap().len(), 3);
    assert!(d.remove("c1", "n0").unwrap());
    assert!(
        !d.remove("c1", "n0").unwrap(),
        "a second remove finds nothing"
    );
    assert_eq!(d.get("c1", "n0").unwrap(), None);
    drop(d);
    let d = Durables::open(Arc::clone(&fs), store).unwrap();
    assert_eq!(d.list().unwrap(), vec![c, a2]);
    // Only the final files are left: no temporary file survives a save.
    let names = fs.read_dir(&store.join("durables")).unwrap();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.ends_with(".durable")), "{names:?}");
}

#[test]
fn round_trip_on_the_real_file_system() {
    let tmp = tempfile::tempdir().unwrap();
    round_trip(Arc::new(RealFs::new()), &tmp.path().join("store"));
}

#[test]
fn round_trip_on_the_simulated_file_system_survives_power_loss() {
    let sim = SimFs::new();
    round_trip(Arc::new(sim.clone()), Path::new(STORE));
    // Everything acknowledged was synced: a power loss that drops every unsynced op
    // changes nothing.
    sim.restart(CrashOutcome::PowerLossPrefix, 0);
    let d = Durables::open(Arc::new(sim), Path::new(STORE)).unwrap();
    assert_eq!(d.list().unwrap().len(), 2);
}

/// Every hostile pair must round-trip and every file must stay directly in `durables/`.
fn hostile_pairs() -> Vec<(String, String)> {
    let long_a = format!("{}a", "x".repeat(4000));
    let long_b = format!("{}b", "x".repeat(4000));
    let mut v: Vec<(String, String)> = [
        ("a$b", "c"),
        ("a", "b$c"),
        ("a$", "b"),
        ("a", "$b"),
        ("../x", "n"),
        ("c", "../x"),
        ("/", "/"),
        (".", "."),
        ("..", ".."),
        ("...", ".hidden"),
        ("x/../../y", "x/../../y"),
        ("\\", "C:\\Windows"),
        ("nul\0byte", "tab\tnew\nline"),
        (" ", "  spaces  "),
        ("\u{1}\u{7f}", "\u{1b}[31m"),
        ("%2E", "%24"),
        ("a~b", "~"),
        ("Client", "Name"),
        ("client", "name"),
        ("CLIENT", "name"),
        ("émile", "日本語"),
        ("🦀", "ünïcödé"),
        ("a.durable", "b.durable.tmp"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    v.push(("c".repeat(300), "n".into()));
    v.push(("c".into(), "n".repeat(300)));
    v.push(("c".repeat(4000), "n".repeat(4000)));
    v.push(("é".repeat(MAX_ID_LEN / 2), "/".repeat(MAX_ID_LEN)));
    // Long names differing only after the truncation point (in the client id, in the name).
    v.push((long_a.clone(), "n".into()));
    v.push((long_b.clone(), "n".into()));
    v.push(("c".into(), long_a));
    v.push(("c".into(), long_b));
    // A name just below, at and just above the shortening threshold.
    for len in [240, 241, 242, 243] {
        v.push(("k".into(), "m".repeat(len)));
    }
    v
}

fn check_hostile(fs: Arc<dyn FileSystem>, store: &Path) {
    let d = Durables::open(Arc::clone(&fs), store).unwrap();
    let pairs = hostile_pairs();
    let mut expected = Vec::new();
    for (i, (c, n)) in pairs.iter().enumerate() {
        let s = sub(c, n, &format!("topic{i}"));
        d.save(&s).unwrap_or_else(|e| panic!("save {i}: {e}"));
        expected.push(s);
    }
    for s in &expected {
        assert_eq!(d.get(&s.client_id, &s.name).unwrap().as_ref(), Some(s));
    }
    expected.sort_by(|a, b| (&a.client_id, &a.name).cmp(&(&b.client_id, &b.name)));
    assert_eq!(d.list().unwrap(), expected, "list is complete and sorted");
    let names = fs.read_dir(&store.join("durables")).unwrap();
    assert_eq!(names.len(), pairs.len(), "one file per pair, none shared");
    for n in &names {
        assert!(n.ends_with(".durable"), "{n}");
        assert!(
            n.len() <= 251,
            "{n} leaves no room for .tmp within 255 bytes"
        );
        assert!(
            !n.starts_with('.') && !n.contains('/') && !n.contains('\\'),
            "{n}"
        );
        assert!(!n.contains('\0'), "{n}");
        assert_eq!(n.matches('$').count(), 1, "{n}");
    }
    // Nothing was created next to durables/ or above the store directory.
    assert_eq!(fs.read_dir(store).unwrap(), vec!["durables".to_string()]);
    for s in &expected {
        assert!(d.remove(&s.client_id, &s.name).unwrap());
    }
    assert_eq!(d.list().unwrap(), vec![]);
    assert!(fs.read_dir(&store.join("durables")).unwrap().is_empty());
}

#[test]
fn hostile_names_round_trip_and_stay_inside_the_directory_on_sim() {
    let sim = SimFs::new();
    check_hostile(Arc::new(sim.clone()), Path::new(STORE));
    // Nothing anywhere else in the whole simulated file system.
    assert!(sim.file_names().is_empty(), "{:?}", sim.file_names());
}

#[test]
fn hostile_names_round_trip_and_stay_inside_the_directory_on_real_fs() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    check_hostile(Arc::new(RealFs::new()), &store);
    let top: Vec<_> = std::fs::read_dir(tmp.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(top, vec![std::ffi::OsString::from("store")]);
}

#[test]
fn limits_are_enforced_naming_the_field() {
    let (_sim, d) = sim_durables();
    let ok = sub("c", "n", "t");
    let cases = [
        (
            DurableSubscription {
                client_id: String::new(),
                ..ok.clone()
            },
            "client_id",
        ),
        (
            DurableSubscription {
                name: String::new(),
                ..ok.clone()
            },
            "name",
        ),
        (
            DurableSubscription {
                topic: String::new(),
                ..ok.clone()
            },
            "topic",
        ),
        (
            DurableSubscription {
                client_id: "c".repeat(MAX_ID_LEN + 1),
                ..ok.clone()
            },
            "client_id",
        ),
        (
            DurableSubscription {
                name: "é".repeat(2049),
                ..ok.clone()
            },
            "name",
        ),
        (
            DurableSubscription {
                topic: "t".repeat(4097),
                ..ok.clone()
            },
            "topic",
        ),
        (
            DurableSubscription {
                selector: Some("s".repeat(64 * 1024 + 1)),
                ..ok.clone()
            },
            "selector",
        ),
    ];
    for (s, field) in cases {
        match d.save(&s) {
            Err(Error::InvalidArgument { reason }) => {
                assert!(reason.contains(&format!("`{field}`")), "{reason}")
            }
            other => panic!("{field}: {other:?}"),
        }
    }
    assert!(matches!(d.get("", "n"), Err(Error::InvalidArgument { .. })));
    assert!(matches!(
        d.remove("c", ""),
        Err(Error::InvalidArgument { .. })
    ));
    // The limits themselves are accepted.
    let max = DurableSubscription {
        client_id: "c".repeat(MAX_ID_LEN),
        name: "n".repeat(MAX_ID_LEN),
        topic: "t".repeat(4096),
        selector: Some("s".repeat(64 * 1024)),
        no_local: true,
    };
    d.save(&max).unwrap();
    assert_eq!(d.get(&max.client_id, &max.name).unwrap(), Some(max));
    assert_eq!(d.list().unwrap().len(), 1);
}

/// A durable file's bytes and path, written by a real save.
fn saved_file(sim: &SimFs, d: &Durables, s: &DurableSubscription) -> (PathBuf, Vec<u8>) {
    d.save(s).unwrap();
    let path = durables_dir().join(file_name(&s.client_id, &s.name));
    let bytes = sim.read_file(&path).unwrap();
    (path, bytes)
}

fn expect_corruption<T: std::fmt::Debug>(r: stowage::Result<T>, file: &str, ctx: &str) {
    match r {
        Err(Error::Corruption {
            file: f, location, ..
        }) => {
            assert_eq!(f, file, "{ctx}");
            assert!(
                location == "header" || location.starts_with("byte "),
                "{ctx}: {location}"
            );
        }
        other => panic!("{ctx}: expected Corruption in {file}, got {other:?}"),
    }
}

#[test]
fn every_flipped_byte_is_detected_as_corruption_naming_the_file() {
    let (sim, d) = sim_durables();
    let s = DurableSubscription {
        selector: Some("prio > 4".into()),
        no_local: true,
        ..sub("client", "durable", "topic")
    };
    let other = sub("other", "o", "t");
    d.save(&other).unwrap();
    let (path, good) = saved_file(&sim, &d, &s);
    let file = format!("durables/{}", file_name("client", "durable"));
    let mut cases = 0;
    for i in 0..good.len() {
        for mask in [0x01u8, 0x80, 0xFF] {
            let mut bad = good.clone();
            bad[i] ^= mask;
            sim.write_file_durable(&path, &bad);
            let ctx = format!("byte {i} ^ {mask:#x}");
            match d.get("client", "durable") {
                // Never a wrong value: only the original could ever be acceptable.
                Ok(Some(got)) => assert_eq!(got, s, "{ctx}"),
                r => expect_corruption(r, &file, &ctx),
            }
            expect_corruption(d.list(), &file, &ctx);
            // Other subscriptions stay readable, and open does not read every file.
            assert_eq!(d.get("other", "o").unwrap().as_ref(), Some(&other));
            Durables::open(Arc::new(sim.clone()), Path::new(STORE)).unwrap();
            cases += 1;
        }
    }
    assert_eq!(cases, good.len() * 3);
    sim.write_file_durable(&path, &good);
    assert_eq!(d.get("client", "durable").unwrap(), Some(s));
}

#[test]
fn every_truncation_is_detected_as_corruption() {
    let (sim, d) = sim_durables();
    let s = DurableSubscription {
        selector: Some("a = 1".into()),
        ..sub(&"c".repeat(300), "n", "topic")
    };
    let (path, good) = saved_file(&sim, &d, &s);
    let file = format!("durables/{}", file_name(&s.client_id, "n"));
    for len in 0..good.len() {
        sim.write_file_durable(&path, &good[..len]);
        expect_corruption(d.get(&s.client_id, "n"), &file, &format!("length {len}"));
        expect_corruption(d.list(), &file, &format!("length {len}"));
    }
    // Appended bytes are corruption too.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 3]);
    sim.write_file_durable(&path, &longer);
    expect_corruption(d.get(&s.client_id, "n"), &file, "appended");
    // A huge file is rejected without being read.
    sim.write_file_durable(&path, &vec![0xAB; 200_000]);
    expect_corruption(d.get(&s.client_id, "n"), &file, "huge");
}

#[test]
fn a_file_holding_other_names_is_never_served() {
    let (sim, d) = sim_durables();
    let a = sub("alice", "a", "ta");
    let (_, a_bytes) = saved_file(&sim, &d, &a);
    // A copy of alice's file under bob's name (a renamed file, or a hash collision).
    let bob_path = durables_dir().join(file_name("bob", "b"));
    sim.write_file_durable(&bob_path, &a_bytes);
    assert_eq!(
        d.get("bob", "b").unwrap(),
        None,
        "must not return alice's subscription"
    );
    expect_corruption(
        d.list(),
        &format!("durables/{}", file_name("bob", "b")),
        "misnamed",
    );
    // remove leaves the foreign file alone, and save refuses to overwrite it.
    assert!(!d.remove("bob", "b").unwrap());
    assert!(matches!(
        d.save(&sub("bob", "b", "tb")),
        Err(Error::InvalidArgument { .. })
    ));
    assert_eq!(sim.read_file(&bob_path).unwrap(), a_bytes);
    // The same with shortened (hashed) names.
    let long = sub(&"l".repeat(500), "x", "tl");
    let (_, long_bytes) = saved_file(&sim, &d, &long);
    let other_long = "l".repeat(501);
    let p = durables_dir().join(file_name(&other_long, "x"));
    sim.write_file_durable(&p, &long_bytes);
    assert_eq!(d.get(&other_long, "x").unwrap(), None);
    assert_eq!(d.get(&long.client_id, "x").unwrap(), Some(long));
}

#[test]
fn corrupt_files_can_be_replaced_and_removed() {
    let (sim, d) = sim_durables();
    let s = sub("c", "n", "t");
    let (path, _) = saved_file(&sim, &d, &s);
    sim.write_file_durable(&path, b"garbage");
    assert!(d.list().is_err());
    let s2 = sub("c", "n", "t2");
    d.save(&s2).unwrap();
    assert_eq!(d.list().unwrap(), vec![s2]);
    sim.write_file_durable(&path, b"garbage");
    assert!(
        d.remove("c", "n").unwrap(),
        "a corrupt file at the path counts as existing"
    );
    assert_eq!(d.list().unwrap(), vec![]);
}

#[test]
fn temporary_files_are_ignored_by_list_and_removed_at_open() {
    let (sim, d) = sim_durables();
    let s = sub("c", "n", "t");
    let (path, bytes) = saved_file(&sim, &d, &s);
    let tmp = durables_dir().join(format!("{}.tmp", file_name("c", "n")));
    let stray = durables_dir().join(format!("{}.tmp", file_name("x", "y")));
    sim.write_file_durable(&tmp, b"half-writ");
    sim.write_file_durable(&stray, &bytes);
    assert_eq!(d.list().unwrap(), vec![s.clone()]);
    // A save with a stale temporary file of its own still works.
    d.save(&s).unwrap();
    drop(d);
    let d = Durables::open(Arc::new(sim.clone()), Path::new(STORE)).unwrap();
    assert_eq!(
        sim.file_names(),
        vec![path],
        "open removes every leftover temporary file"
    );
    assert_eq!(d.list().unwrap(), vec![s]);
}

#[test]
fn an_io_failure_poisons_writes_until_reopen_and_keeps_the_old_version() {
    for op in 0..5u64 {
        let (sim, d) = sim_durables();
        let old = sub("c", "n", "old");
        d.save(&old).unwrap();
        let base = sim.mutating_calls();
        // The save's calls: create temp, write, sync, rename, sync dir.
        sim.fail_call(base + op);
        let new = sub("c", "n", "new");
        assert!(d.save(&new).is_err(), "call {op} failed");
        assert!(
            matches!(d.save(&new), Err(Error::Poisoned { .. })),
            "call {op}: writes refused after a failure"
        );
        assert!(matches!(d.remove("c", "n"), Err(Error::Poisoned { .. })));
        sim.restart(CrashOutcome::PowerLossPrefix, op);
        let d = Durables::open(Arc::new(sim.clone()), Path::new(STORE)).unwrap();
        let got = d.get("c", "n").unwrap().unwrap();
        // Before the rename the old version must remain; after it either may.
        if op < 3 {
            assert_eq!(got, old, "call {op}");
        }
        d.save(&new).unwrap();
        assert_eq!(d.list().unwrap(), vec![new]);
    }
}

#[test]
fn open_creates_the_directories_and_reads_no_subscription() {
    let sim = SimFs::new();
    let store = Path::new("/a/b/store");
    let d = Durables::open(Arc::new(sim.clone()), store).unwrap();
    d.save(&sub("c", "n", "t")).unwrap();
    // The whole chain of directories is durable.
    sim.restart(CrashOutcome::PowerLossSubset, 1);
    assert_eq!(sim.file_names().len(), 1);
    // A corrupt file does not stop open; it stops list and get of that one only.
    sim.write_file_durable(&store.join("durables").join("z$z.durable"), b"junk");
    let d = Durables::open(Arc::new(sim.clone()), store).unwrap();
    assert!(d.get("c", "n").unwrap().is_some());
    assert!(d.get("z", "z").is_err());
    assert!(d.list().is_err());
    // A durables path that is a file, not a directory, fails open cleanly.
    let sim = SimFs::new();
    sim.write_file_durable(Path::new("/s/durables"), b"");
    let fs: Arc<dyn FileSystem> = Arc::new(sim.clone());
    fs.create_dir_all(Path::new("/s")).unwrap();
    assert!(Durables::open(fs, Path::new("/s")).is_err());
}

#[test]
fn durables_are_send_and_sync_and_concurrent_saves_all_land() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Durables>();
    let (_sim, d) = sim_durables();
    let d = Arc::new(d);
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let d = Arc::clone(&d);
            std::thread::spawn(move || {
                for i in 0..25 {
                    d.save(&sub(&format!("c{t}"), &format!("n{i}"), "t"))
                        .unwrap();
                    let _ = d.list().unwrap();
                    if i % 5 == 0 {
                        assert!(d.remove(&format!("c{t}"), &format!("n{i}")).unwrap());
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(d.list().unwrap().len(), 4 * 20);
}
