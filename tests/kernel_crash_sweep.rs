//! Crash sweeps of the storage kernel's commit, checkpoint, growth and recovery paths, and
//! the harness self-test: each planted bug must be caught.
//!
//! The workload keeps "cells": a directory page (root slot 0) maps a cell number to a page
//! holding the cell's value. Steps put and delete cells with every durability, run
//! checkpoints, grow page.db, and close.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use stowage::file::FileSystem;
use stowage::kernel::{Kernel, OpenOptions, WriteTxn};
use stowage::page::{PageId, PageType};
use stowage::planted::PlantedBugs;
use stowage::{Durability, StoreConfig};
use support::{assert_clean, sweep, Scenario, SweepConfig};

const DIR: &str = "/store";
const DIR_SLOT: usize = 0;

type Cells = BTreeMap<u32, Vec<u8>>;

fn config() -> StoreConfig {
    StoreConfig {
        page_size: 2048,
        initial_db_size_pages: 10,
        cache_min_pages: 512,
        cache_max_pages: 512,
        checkpoint_size: 1 << 20,
        ..StoreConfig::default()
    }
}

/// One step of the workload.
#[derive(Debug, Clone)]
enum Step {
    /// One transaction of puts (`Some`) and deletes (`None`).
    Tx(Vec<(u32, Option<Vec<u8>>)>, Durability),
    Checkpoint,
    /// One pass of the background cleaner (it flushes the log, then writes pages back).
    Clean,
}

fn value(cell: u32, version: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(7) ^ (cell as u8) ^ version)
        .collect()
}

// Directory page layout after the 16-byte header: count u32, then (cell u32, page u64).
fn read_dir(page: &[u8]) -> BTreeMap<u32, PageId> {
    let n = u32::from_le_bytes(page[16..20].try_into().unwrap()) as usize;
    (0..n)
        .map(|i| {
            let at = 20 + i * 12;
            let cell = u32::from_le_bytes(page[at..at + 4].try_into().unwrap());
            let id = u64::from_le_bytes(page[at + 4..at + 12].try_into().unwrap());
            (cell, id)
        })
        .collect()
}

fn write_dir(page: &mut [u8], dir: &BTreeMap<u32, PageId>) {
    page[16..20].copy_from_slice(&(dir.len() as u32).to_le_bytes());
    for (i, (cell, id)) in dir.iter().enumerate() {
        let at = 20 + i * 12;
        page[at..at + 4].copy_from_slice(&cell.to_le_bytes());
        page[at + 4..at + 12].copy_from_slice(&id.to_le_bytes());
    }
}

fn apply_tx(tx: &mut WriteTxn<'_>, ops: &[(u32, Option<Vec<u8>>)]) -> stowage::Result<()> {
    let mut dir_page = tx.root(DIR_SLOT);
    if dir_page == 0 {
        dir_page = tx.allocate(PageType::Raw)?;
        tx.set_root(DIR_SLOT, dir_page)?;
    }
    let mut dir = read_dir(tx.page(dir_page)?);
    for (cell, v) in ops {
        match (v, dir.get(cell).copied()) {
            (Some(v), existing) => {
                let id = match existing {
                    Some(id) => id,
                    None => tx.allocate(PageType::Raw)?,
                };
                let p = tx.page_mut(id)?;
                p[16..20].copy_from_slice(&(v.len() as u32).to_le_bytes());
                p[20..20 + v.len()].copy_from_slice(v);
                dir.insert(*cell, id);
            }
            (None, Some(id)) => {
                tx.free(id)?;
                dir.remove(cell);
            }
            (None, None) => {}
        }
    }
    write_dir(tx.page_mut(dir_page)?, &dir);
    Ok(())
}

/// Reads the cells and checks that every page is exactly one of: page 0, the free-space
/// map, free, the directory, or a cell (no leak, no double use).
fn read_cells(k: &Kernel) -> Result<Cells, String> {
    let mut cells = Cells::new();
    let mut used = vec![0u64];
    used.extend(k.free_map_page_ids());
    used.extend(k.free_page_ids());
    let dir_page = k.root(DIR_SLOT);
    if dir_page != 0 {
        used.push(dir_page);
        let dir = read_dir(&k.read(dir_page).map_err(|e| e.to_string())?.read());
        for (cell, id) in dir {
            used.push(id);
            let p = k
                .read(id)
                .map_err(|e| format!("cell {cell} page {id}: {e}"))?;
            let p = p.read();
            let len = u32::from_le_bytes(p[16..20].try_into().unwrap()) as usize;
            cells.insert(cell, p[20..20 + len].to_vec());
        }
    }
    used.sort_unstable();
    let expect: Vec<u64> = (0..k.page_count()).collect();
    if used != expect {
        return Err(format!(
            "page accounting broken: {} pages listed for {} in the file",
            used.len(),
            expect.len()
        ));
    }
    Ok(cells)
}

struct CellScenario {
    name: &'static str,
    steps: Vec<Step>,
}

fn options(bugs: PlantedBugs) -> OpenOptions {
    OpenOptions {
        bugs,
        no_background_threads: true,
        // The default preallocation (1.25 MiB here): frames overwrite a zero-filled file.
        log_prealloc: None,
    }
}

impl Scenario for CellScenario {
    type Model = Cells;

    fn name(&self) -> String {
        self.name.to_string()
    }

    fn run(
        &self,
        fs: Arc<dyn FileSystem>,
        bugs: PlantedBugs,
        step: &mut dyn FnMut(Cells, bool),
    ) -> Result<(), String> {
        let e = |e: stowage::Error| e.to_string();
        let k = Kernel::open_with(fs, Path::new(DIR), &config(), options(bugs)).map_err(e)?;
        let mut model = Cells::new();
        step(model.clone(), true);
        for s in &self.steps {
            match s {
                Step::Tx(ops, durability) => {
                    let mut tx = k.begin().map_err(e)?;
                    apply_tx(&mut tx, ops).map_err(e)?;
                    tx.commit(*durability).map_err(e)?;
                    for (cell, v) in ops {
                        match v {
                            Some(v) => model.insert(*cell, v.clone()),
                            None => model.remove(cell),
                        };
                    }
                    step(model.clone(), *durability == Durability::Sync);
                }
                Step::Checkpoint => {
                    k.checkpoint().map_err(e)?;
                    step(model.clone(), true);
                }
                Step::Clean => {
                    let written = k.clean_cold_pages(128).map_err(e)?;
                    if written == 0 {
                        return Err("the clean step found no dirty page".into());
                    }
                    // The log is durable up to every page written back, not necessarily
                    // to the last commit.
                    step(model.clone(), false);
                }
            }
        }
        k.close().map_err(e)
    }

    fn recover(&self, fs: Arc<dyn FileSystem>, bugs: PlantedBugs) -> Result<Cells, String> {
        let k = Kernel::open_with(fs, Path::new(DIR), &config(), options(bugs))
            .map_err(|e| format!("reopen failed: {e}"))?;
        read_cells(&k)
    }
}

fn put(cell: u32, version: u8, len: usize) -> (u32, Option<Vec<u8>>) {
    (cell, Some(value(cell, version, len)))
}

fn del(cell: u32) -> (u32, Option<Vec<u8>>) {
    (cell, None)
}

/// Commits, deltas after images, a checkpoint, frees, growth past two chunks, the three
/// durabilities, and a pass of the background cleaner.
fn mixed() -> CellScenario {
    use Durability::*;
    let many: Vec<_> = (10..40).map(|c| put(c, 1, 50)).collect();
    CellScenario {
        name: "kernel-mixed",
        steps: vec![
            Step::Tx(vec![put(1, 1, 2000)], Sync),
            Step::Tx(vec![put(2, 1, 1800), put(3, 1, 10)], Sync),
            Step::Tx(vec![put(1, 2, 2000)], Sync),
            Step::Checkpoint,
            Step::Tx(vec![put(1, 3, 120), del(2)], Sync),
            Step::Tx(many, Sync),
            Step::Tx(vec![put(4, 1, 20)], Async),
            Step::Tx(vec![put(5, 1, 20)], Flush),
            Step::Clean,
            Step::Tx(vec![put(6, 1, 20), del(3)], Sync),
            Step::Checkpoint,
            Step::Tx((10..25).map(del).collect(), Sync),
            Step::Tx(vec![put(7, 1, 1900), put(1, 4, 1990)], Sync),
        ],
    }
}

#[test]
fn kernel_mixed_workload_survives_every_crash() {
    let report = sweep(&mixed(), &SweepConfig::default());
    assert_clean(&report, "kernel-mixed");
    assert!(
        report.calls > 40,
        "the workload is too small: {} calls",
        report.calls
    );
}

/// Each planted bug must make the sweep fail somewhere.
#[test]
fn harness_catches_planted_bugs() {
    let bugs = [
        (
            "skip a directory fsync",
            PlantedBugs {
                skip_dir_fsync: true,
                ..PlantedBugs::default()
            },
        ),
        (
            "acknowledge before the log sync",
            PlantedBugs {
                ack_before_log_sync: true,
                ..PlantedBugs::default()
            },
        ),
        (
            "grow the file without syncing",
            PlantedBugs {
                grow_without_sync: true,
                ..PlantedBugs::default()
            },
        ),
        (
            "ignore a checksum",
            PlantedBugs {
                ignore_checksum: true,
                ..PlantedBugs::default()
            },
        ),
    ];
    for (what, bug) in bugs {
        let cfg = SweepConfig {
            bugs: bug,
            seeds: 4,
            recovery_stride: 0,
            stop_at_first: true,
        };
        let report = sweep(&mixed(), &cfg);
        assert!(
            !report.failures.is_empty(),
            "planted bug `{what}` was not caught in {} crash states",
            report.states
        );
        println!("planted bug `{what}` caught: {}", report.failures[0]);
    }
}
