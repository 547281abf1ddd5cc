//! Page accounting of the whole store: every page of page.db is exactly one of page 0, the
//! free-space map, free, the catalog, a queue index, or payload data.
//!
//! This is the core of `check()` (the maintenance issue extends it into a report); the
//! crash sweeps run it after every reopen.

use std::collections::HashSet;

use super::index::{IndexValue, VALUE_LEN};
use super::Store;
use crate::btree;
use crate::catalog::{self, CATALOG_ROOT};
use crate::error::{Error, Result};
use crate::page::{PageId, PAGE_DB};
use crate::records;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Owner {
    None,
    Superblocks,
    FreeMap,
    Free,
    Catalog,
    Index,
    Payload,
}

fn claim(owners: &mut [Owner], id: PageId, who: Owner) -> Result<()> {
    let slot = owners.get_mut(id as usize).ok_or_else(|| {
        Error::corruption(
            PAGE_DB,
            format!("page {id}"),
            format!("{who:?} page beyond the file"),
        )
    })?;
    if *slot != Owner::None {
        return Err(Error::corruption(
            PAGE_DB,
            format!("page {id}"),
            format!("used twice: as {:?} and as {who:?}", *slot),
        ));
    }
    *slot = who;
    Ok(())
}

impl Store {
    /// Walks every structure and checks that each page has exactly one use (no leak, no
    /// double use) and that queue counters match the indexes. Returns the pages checked.
    #[doc(hidden)]
    pub fn check_pages(&self) -> Result<u64> {
        let e = self.engine()?;
        let mut view = e.kernel.read_view()?;
        let page_count = e.kernel.page_count();
        let mut owners = vec![Owner::None; page_count as usize];
        claim(&mut owners, 0, Owner::Superblocks)?;
        for id in e.kernel.free_map_page_ids() {
            claim(&mut owners, id, Owner::FreeMap)?;
        }
        for id in e.kernel.free_page_ids() {
            claim(&mut owners, id, Owner::Free)?;
        }
        let root = view.root(CATALOG_ROOT);
        let loaded = catalog::load(&mut view, root, page_count)?;
        for &id in &loaded.pages {
            claim(&mut owners, id, Owner::Catalog)?;
        }
        for (meta, _) in &loaded.queues {
            let stats = btree::check(&mut view, meta.index_root, VALUE_LEN)?;
            for &id in &stats.pages {
                claim(&mut owners, id, Owner::Index)?;
            }
            if stats.entries != meta.messages {
                return Err(Error::corruption(
                    PAGE_DB,
                    format!("queue `{}`", meta.name),
                    format!(
                        "catalog counts {} messages, index holds {}",
                        meta.messages, stats.entries
                    ),
                ));
            }
            let mut entries = Vec::new();
            btree::range(
                &mut view,
                meta.index_root,
                VALUE_LEN,
                0,
                usize::MAX,
                |k, v| entries.push((k, v.to_vec())),
            )?;
            let mut pages = HashSet::new();
            let mut bytes = 0u64;
            for (k, v) in entries {
                let iv = IndexValue::decode(&meta.name, k, &v)?;
                bytes += u64::from(iv.size);
                pages.extend(records::pages_of(&mut view, iv.loc)?);
            }
            if bytes != meta.bytes {
                return Err(Error::corruption(
                    PAGE_DB,
                    format!("queue `{}`", meta.name),
                    format!("catalog counts {} bytes, messages hold {bytes}", meta.bytes),
                ));
            }
            for id in pages {
                claim(&mut owners, id, Owner::Payload)?;
            }
        }
        if let Some(id) = owners.iter().position(|o| *o == Owner::None) {
            return Err(Error::corruption(
                PAGE_DB,
                format!("page {id}"),
                "leaked: neither free nor used by any structure",
            ));
        }
        Ok(page_count)
    }
}
