//! Quick start: open a store under ./stowage-data, create a queue, publish and consume with
//! durable commits, reopen, and print what was found and the engine's counters.
//!
//! Run with `cargo run --release --example quickstart`.

use stowage::{Durability, NewMessage, Store, StoreConfig};

fn main() -> Result<(), stowage::Error> {
    let dir = "stowage-data";
    let store = Store::open(dir, StoreConfig::default())?;
    if !store.queues()?.iter().any(|q| q.name == "orders") {
        store.create_queue("orders")?;
    }

    // Publish ten messages in one durable transaction.
    let mut tx = store.begin();
    let mut keys = Vec::new();
    for i in 0..10 {
        let payload = format!("order #{i}").into_bytes();
        keys.push(tx.insert("orders", NewMessage::new(payload).priority(4))?);
    }
    tx.commit_with(Durability::Sync)?;
    println!("published keys {:?}", keys);

    // Consume (acknowledge) the first three.
    let mut tx = store.begin();
    for m in store.messages("orders", 0, 3)? {
        println!(
            "consumed {} = {}",
            m.key,
            String::from_utf8_lossy(&m.payload)
        );
        tx.remove("orders", m.key)?;
    }
    tx.commit()?;
    store.close()?;

    // Reopen: everything committed is still there.
    let store = Store::open(dir, StoreConfig::default())?;
    for q in store.queues()? {
        println!(
            "queue {}: {} messages, {} bytes",
            q.name, q.messages, q.bytes
        );
    }
    let entries = store.entries("orders", 0, 5)?;
    println!(
        "first entries after reopen: {:?}",
        entries.iter().map(|e| e.key).collect::<Vec<_>>()
    );
    let st = store.stats();
    println!(
        "stats: {} queues, {} messages, {} pages of {} bytes ({} free), cache hits {} misses {}",
        st.queues,
        st.messages,
        st.pages_total,
        st.page_size,
        st.pages_free,
        st.cache.hits,
        st.cache.misses
    );
    println!("check: {:?}", store.check()?.problems);
    store.close()
}
