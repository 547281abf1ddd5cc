//! Crash sweeps of the queue store with the kernel's harness (tests/support): publish,
//! consume/ack, mixed, and queue create/delete workloads, crashed at every I/O call with
//! every outcome; the reopened store must equal the model after the last durable step or
//! the one in flight, and pass its own page accounting.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage::file::FileSystem;
use stowage::kernel::OpenOptions;
use stowage::planted::PlantedBugs;
use stowage::{Durability, NewMessage, Store, StoreConfig};
use support::{assert_clean, sweep, Scenario, SweepConfig};

const DIR: &str = "/store";

/// queue -> key -> (payload, delivery count)
type Model = BTreeMap<String, BTreeMap<u64, (Vec<u8>, u32)>>;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        initial_db_size_pages: 16,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        max_message_size: 64 * 1024,
        ..StoreConfig::default()
    }
}

#[derive(Debug, Clone)]
enum Step {
    Create(&'static str),
    Delete(&'static str),
    /// Publish payload sizes into a queue in one transaction.
    Publish(&'static str, Vec<usize>, Durability),
    /// Remove the oldest `n` messages and set the delivery count of the next one.
    Consume(&'static str, usize, Durability),
    Checkpoint,
}

fn payload(queue: &str, key: u64, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u64 ^ key.wrapping_mul(131) ^ queue.len() as u64) as u8)
        .collect()
}

struct StoreScenario {
    name: &'static str,
    steps: Vec<Step>,
}

fn open(fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> stowage::Result<Store> {
    Store::open_with(
        fs,
        Path::new(DIR),
        config(),
        OpenOptions {
            bugs,
            no_background_threads: true,
            // A small preallocation: the workloads overwrite it, then append past it (the
            // growth path, which a power loss can cut unless synced).
            log_prealloc: Some(16 * 1024),
        },
    )
}

fn read_model(s: &Store) -> Result<Model, String> {
    let mut m = Model::new();
    for q in s.queues().map_err(|e| e.to_string())? {
        let msgs = s
            .messages(&q.name, 0, usize::MAX)
            .map_err(|e| e.to_string())?;
        if msgs.len() as u64 != q.messages {
            return Err(format!(
                "queue {} counts {} but holds {}",
                q.name,
                q.messages,
                msgs.len()
            ));
        }
        let bytes: u64 = msgs.iter().map(|m| m.payload.len() as u64).sum();
        if bytes != q.bytes {
            return Err(format!(
                "queue {} bytes {} but holds {bytes}",
                q.name, q.bytes
            ));
        }
        m.insert(
            q.name.clone(),
            msgs.into_iter()
                .map(|x| (x.key, (x.payload, x.delivery_count)))
                .collect(),
        );
    }
    s.check_pages()
        .map_err(|e| format!("page accounting: {e}"))?;
    Ok(m)
}

impl Scenario for StoreScenario {
    type Model = Model;

    fn name(&self) -> String {
        self.name.to_string()
    }

    fn run(
        &self,
        fs: Arc<dyn FileSystem>,
        bugs: PlantedBugs,
        step: &mut dyn FnMut(Model, bool),
    ) -> Result<(), String> {
        let e = |e: stowage::Error| e.to_string();
        let s = open(fs, bugs).map_err(e)?;
        let mut model = Model::new();
        step(model.clone(), true);
        for (step_no, st) in self.steps.iter().enumerate() {
            let durable = match st {
                Step::Create(q) => {
                    s.create_queue(q).map_err(e)?;
                    model.insert(q.to_string(), BTreeMap::new());
                    true
                }
                Step::Delete(q) => {
                    s.delete_queue(q).map_err(e)?;
                    model.remove(*q);
                    true
                }
                Step::Publish(q, sizes, d) => {
                    let mut tx = s.begin();
                    let mut added = Vec::new();
                    for (i, &n) in sizes.iter().enumerate() {
                        let p = payload(q, (step_no * 100 + i) as u64, n);
                        let key = tx.insert(q, NewMessage::new(p.clone())).map_err(e)?;
                        added.push((key, p));
                    }
                    tx.commit_with(*d).map_err(e)?;
                    let qm = model.entry(q.to_string()).or_default();
                    for (k, p) in added {
                        qm.insert(k, (p, 0));
                    }
                    *d == Durability::Sync
                }
                Step::Consume(q, n, d) => {
                    let msgs = s.messages(q, 0, n + 1).map_err(e)?;
                    let mut tx = s.begin();
                    for m in msgs.iter().take(*n) {
                        tx.remove(q, m.key).map_err(e)?;
                    }
                    if let Some(m) = msgs.get(*n) {
                        tx.set_delivery_count(q, m.key, m.delivery_count + 1)
                            .map_err(e)?;
                    }
                    tx.commit_with(*d).map_err(e)?;
                    let qm = model.entry(q.to_string()).or_default();
                    for m in msgs.iter().take(*n) {
                        qm.remove(&m.key);
                    }
                    if let Some(m) = msgs.get(*n) {
                        if let Some(v) = qm.get_mut(&m.key) {
                            v.1 = m.delivery_count + 1;
                        }
                    }
                    *d == Durability::Sync
                }
                Step::Checkpoint => {
                    s.checkpoint().map_err(e)?;
                    true
                }
            };
            step(model.clone(), durable);
        }
        s.close().map_err(e)
    }

    fn recover(&self, fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> Result<Model, String> {
        let s = open(fs, bugs).map_err(|e| format!("reopen failed: {e}"))?;
        read_model(&s)
    }
}

fn publish() -> StoreScenario {
    use Durability::*;
    StoreScenario {
        name: "store-publish",
        steps: vec![
            Step::Create("orders"),
            Step::Publish("orders", vec![10, 100], Sync),
            Step::Publish("orders", vec![1500, 0, 5000], Sync),
            Step::Checkpoint,
            Step::Publish("orders", vec![700; 6], Sync),
        ],
    }
}

fn consume() -> StoreScenario {
    use Durability::*;
    StoreScenario {
        name: "store-consume",
        steps: vec![
            Step::Create("q"),
            Step::Publish("q", vec![300; 12], Sync),
            Step::Consume("q", 3, Sync),
            Step::Consume("q", 4, Sync),
            Step::Checkpoint,
            Step::Consume("q", 4, Sync),
        ],
    }
}

fn mixed() -> StoreScenario {
    use Durability::*;
    StoreScenario {
        name: "store-mixed",
        steps: vec![
            Step::Create("a"),
            Step::Publish("a", vec![200; 5], Async),
            Step::Publish("a", vec![3000], Flush),
            Step::Consume("a", 2, Sync),
            Step::Publish("a", vec![50; 3], Sync),
            Step::Consume("a", 3, Async),
            Step::Publish("a", vec![1000, 1000], Sync),
        ],
    }
}

fn create_delete() -> StoreScenario {
    use Durability::*;
    StoreScenario {
        name: "store-create-delete",
        steps: vec![
            Step::Create("a"),
            Step::Create("b"),
            Step::Publish("a", vec![400; 4], Sync),
            Step::Publish("b", vec![4000], Sync),
            Step::Delete("a"),
            Step::Create("c"),
            Step::Publish("c", vec![100; 2], Sync),
            Step::Delete("b"),
        ],
    }
}

fn run(s: StoreScenario) {
    let report = sweep(&s, &SweepConfig::default());
    assert_clean(&report, s.name);
}

#[test]
fn publish_survives_every_crash() {
    run(publish());
}

#[test]
fn consume_survives_every_crash() {
    run(consume());
}

#[test]
fn mixed_survives_every_crash() {
    run(mixed());
}

#[test]
fn create_and_delete_queue_survive_every_crash() {
    run(create_delete());
}
