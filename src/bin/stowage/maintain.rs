//! `stowage repair | shrink`: salvage a damaged store, reclaim free space.
//!
//! Exit codes: `repair` 0 when nothing was lost, 1 when messages or structures were lost
//! (the report names them), 2 usage or I/O error (or a store repair cannot read, such as
//! unreadable superblocks); `shrink` 0 done, 2 error. `--json` prints one JSON document.

use stowage::Store;

use crate::inspect::{json_str, json_strs, open, Res};
use crate::progress::spin;
use crate::Target;

/// `repair`: the store must not be open elsewhere (the directory lock enforces it).
pub fn repair(t: &Target) -> Res<i32> {
    if !t.dir.join("page.db").exists() {
        return Err(format!("{} holds no store (no page.db)", t.dir.display()).into());
    }
    let config = t.config()?;
    let report = spin(format!("repairing {}", t.dir.display()), || {
        Store::repair(&t.dir, config)
    })?;
    if t.json {
        let queues: Vec<String> = report
            .queues
            .iter()
            .map(|q| {
                let keys: Vec<String> = q.lost_keys.iter().map(u64::to_string).collect();
                let ranges: Vec<String> = q
                    .lost_ranges
                    .iter()
                    .map(|r| {
                        format!(
                            "{{\"from\":{},\"to\":{},\"why\":{}}}",
                            r.lo,
                            r.hi.map_or("null".to_string(), |h| h.to_string()),
                            json_str(&r.why)
                        )
                    })
                    .collect();
                format!(
                    "{{\"name\":{},\"recovered\":{},\"lost_messages\":{},\"lost_keys\":[{}],\"lost_ranges\":[{}]}}",
                    json_str(&q.name),
                    q.recovered,
                    q.lost_messages,
                    keys.join(","),
                    ranges.join(",")
                )
            })
            .collect();
        println!(
            "{{\"lossless\":{},\"messages_recovered\":{},\"messages_lost\":{},\"prepared_kept\":{},\"queues\":[{}],\"problems\":{}}}",
            report.is_lossless(),
            report.messages_recovered,
            report.messages_lost,
            report.prepared_kept,
            queues.join(","),
            json_strs(&report.problems)
        );
    } else {
        println!(
            "repaired {}: {} messages recovered, {} lost, {} prepared transactions kept",
            t.dir.display(),
            report.messages_recovered,
            report.messages_lost,
            report.prepared_kept
        );
        for q in &report.queues {
            println!(
                "queue {:?}: {} recovered, {} lost",
                q.name, q.recovered, q.lost_messages
            );
            if !q.lost_keys.is_empty() {
                println!("  lost keys: {:?}", q.lost_keys);
            }
            for r in &q.lost_ranges {
                let hi = r.hi.map_or("end".to_string(), |h| h.to_string());
                println!("  lost keys in {}..{hi}: {}", r.lo, r.why);
            }
        }
        for p in &report.problems {
            println!("problem: {p}");
        }
    }
    Ok(if report.is_lossless() { 0 } else { 1 })
}

/// `shrink`: moves live pages off the end of page.db and truncates it.
pub fn shrink(t: &Target) -> Res<i32> {
    let s = open(t)?;
    let r = spin(format!("shrinking {}", t.dir.display()), || s.shrink())?;
    s.close()?;
    if t.json {
        println!(
            "{{\"bytes_before\":{},\"bytes_after\":{},\"pages_moved\":{},\"payloads_moved\":{}}}",
            r.bytes_before, r.bytes_after, r.pages_moved, r.payloads_moved
        );
    } else {
        println!(
            "page.db: {} -> {} bytes ({} index pages and {} payloads moved)",
            r.bytes_before, r.bytes_after, r.pages_moved, r.payloads_moved
        );
    }
    Ok(0)
}
