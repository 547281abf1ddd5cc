//! `stowage check | scan | stats | dump`: read-only looks at a store directory.
//!
//! Exit codes (documented in docs/operations.md): 0 fine, 1 problems found, 2 usage or
//! I/O error. `--json` prints one JSON document for machines.

use stowage::Store;

use crate::progress::spin;
use crate::Target;

pub type Res<T> = Result<T, Box<dyn std::error::Error>>;

/// Opens the store of `t` (never creating one) with its configuration.
pub fn open(t: &Target) -> Res<Store> {
    let dir = &t.dir;
    if !dir.join("page.db").exists() {
        return Err(format!("{} holds no store (no page.db)", dir.display()).into());
    }
    let config = t.config()?;
    Ok(spin(format!("opening {}", dir.display()), || {
        Store::open(dir, config)
    })?)
}

/// `s` as a JSON string literal.
pub fn json_str(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// `items` as a JSON array of strings.
pub fn json_strs(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|i| json_str(i)).collect();
    format!("[{}]", quoted.join(","))
}

/// `check`: 0 when clean, 1 when problems were found.
pub fn check(t: &Target) -> Res<i32> {
    let (s, json) = (open(t)?, t.json);
    let r = spin("checking every page, index and message", || s.check())?;
    if json {
        println!(
            "{{\"clean\":{},\"pages_checked\":{},\"messages_checked\":{},\"problems\":{}}}",
            r.is_clean(),
            r.pages_checked,
            r.messages_checked,
            json_strs(&r.problems)
        );
    } else {
        println!(
            "pages checked: {}, messages checked: {}",
            r.pages_checked, r.messages_checked
        );
        if r.is_clean() {
            println!("clean");
        }
        for p in &r.problems {
            println!("problem: {p}");
        }
    }
    s.close()?;
    Ok(if r.is_clean() { 0 } else { 1 })
}

/// `scan`: the size histogram and the recommended page size.
pub fn scan(t: &Target) -> Res<i32> {
    let (s, json) = (open(t)?, t.json);
    let r = spin("scanning message sizes", || s.scan())?;
    if json {
        let h: Vec<String> = r
            .histogram
            .iter()
            .map(|(b, n)| format!("[{b},{n}]"))
            .collect();
        println!(
            "{{\"messages\":{},\"bytes\":{},\"current_page_size\":{},\"recommended_page_size\":{},\"histogram\":[{}],\"reasoning\":{}}}",
            r.messages, r.bytes, r.current_page_size, r.recommended_page_size, h.join(","), json_str(&r.reasoning)
        );
    } else {
        println!("messages: {}, bytes: {}", r.messages, r.bytes);
        for (bound, n) in r.histogram.iter().filter(|(_, n)| *n > 0) {
            println!("  <= {bound:>12} bytes: {n}");
        }
        println!(
            "page size: current {}, recommended {}",
            r.current_page_size, r.recommended_page_size
        );
        println!("{}", r.reasoning);
    }
    s.close()?;
    Ok(0)
}

/// `stats`: the store's counters.
pub fn stats(t: &Target) -> Res<i32> {
    let (s, json) = (open(t)?, t.json);
    let st = s.stats();
    if json {
        println!(
            "{{\"messages\":{},\"queues\":{},\"bytes\":{},\"page_size\":{},\"pages_total\":{},\"pages_free\":{},\"file_bytes\":{},\"log_bytes\":{},\"prepared\":{},\"cache\":{{\"hits\":{},\"misses\":{},\"evictions\":{},\"pinned\":{},\"dirty\":{},\"resident\":{}}}}}",
            st.messages, st.queues, st.bytes, st.page_size, st.pages_total, st.pages_free, st.file_bytes, st.log_bytes, st.prepared,
            st.cache.hits, st.cache.misses, st.cache.evictions, st.cache.pinned, st.cache.dirty, st.cache.resident
        );
    } else {
        println!(
            "queues {}, messages {}, payload bytes {}",
            st.queues, st.messages, st.bytes
        );
        println!(
            "page.db: {} pages of {} bytes ({} free), {} bytes; log {} bytes; {} prepared XA transactions",
            st.pages_total, st.page_size, st.pages_free, st.file_bytes, st.log_bytes, st.prepared
        );
    }
    s.close()?;
    Ok(0)
}

fn show(payload: &[u8], hex: bool) -> String {
    if !hex {
        if let Ok(t) = std::str::from_utf8(payload) {
            return t.to_string();
        }
    }
    payload.iter().map(|b| format!("{b:02x}")).collect()
}

/// `dump`: queues, their entries (and payloads with `--messages`), prepared xids and
/// durable subscriptions.
pub fn dump(t: &Target, messages: bool, hex: bool, limit: usize) -> Res<i32> {
    let (s, json) = (open(t)?, t.json);
    let mut queues = Vec::new();
    for q in s.queues()? {
        let mut items = Vec::new();
        if messages {
            for m in s.messages(&q.name, 0, limit)? {
                items.push((
                    m.key,
                    m.priority,
                    m.delivery_count,
                    m.payload.len() as u64,
                    Some(show(&m.payload, hex)),
                ));
            }
        } else {
            for e in s.entries(&q.name, 0, limit)? {
                items.push((e.key, e.priority, e.delivery_count, e.size, None));
            }
        }
        queues.push((q, items));
    }
    let prepared = s.prepared()?;
    let durables = s.durables()?;
    if json {
        let qs: Vec<String> = queues
            .iter()
            .map(|(q, items)| {
                let it: Vec<String> = items
                    .iter()
                    .map(|(k, p, d, n, body)| {
                        let body = body.as_ref().map_or(String::new(), |b| format!(",\"payload\":{}", json_str(b)));
                        format!("{{\"key\":{k},\"priority\":{p},\"delivery_count\":{d},\"size\":{n}{body}}}")
                    })
                    .collect();
                format!("{{\"name\":{},\"messages\":{},\"bytes\":{},\"items\":[{}]}}", json_str(&q.name), q.messages, q.bytes, it.join(","))
            })
            .collect();
        let xs: Vec<String> = prepared
            .iter()
            .map(|x| json_str(&format!("{x:?}")))
            .collect();
        let ds: Vec<String> = durables
            .iter()
            .map(|d| {
                format!(
                    "{{\"client_id\":{},\"name\":{},\"topic\":{}}}",
                    json_str(&d.client_id),
                    json_str(&d.name),
                    json_str(&d.topic)
                )
            })
            .collect();
        println!(
            "{{\"queues\":[{}],\"prepared\":[{}],\"durables\":[{}]}}",
            qs.join(","),
            xs.join(","),
            ds.join(",")
        );
    } else {
        for (q, items) in &queues {
            println!(
                "queue {} ({} messages, {} bytes)",
                q.name, q.messages, q.bytes
            );
            for (k, p, d, n, body) in items {
                match body {
                    Some(b) => println!("  {k}: priority {p}, delivered {d}, {n} bytes: {b}"),
                    None => println!("  {k}: priority {p}, delivered {d}, {n} bytes"),
                }
            }
        }
        for x in &prepared {
            println!("prepared {x:?}");
        }
        for d in &durables {
            println!("durable {}${} on {}", d.client_id, d.name, d.topic);
        }
    }
    s.close()?;
    Ok(0)
}
