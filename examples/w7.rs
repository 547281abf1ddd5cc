//! W7, the swap workload (`cargo run --release --example w7 [COUNT] [DIR]`): COUNT
//! (default 1,000,000) appends of 1 KiB to a swap queue, then read and remove all, next to
//! the device's sequential write bandwidth measured in the same run.

#[path = "../src/bin/stowage/swap_bench.rs"]
mod swap_bench;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let count: usize = match args.get(1) {
        Some(s) => s.parse()?,
        None => 1_000_000,
    };
    let dir = match args.get(2) {
        Some(d) => std::path::PathBuf::from(d),
        None => std::env::temp_dir().join(format!("stowage-w7-{}", std::process::id())),
    };
    let figures = swap_bench::w7(&dir, count)?;
    println!("{figures}");
    if args.get(2).is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}
