//! XA two-phase commit: `Xid`, prepare, commit/rollback of prepared transactions, and the
//! in-doubt set that survives restarts and checkpoints.
//!
//! Owns: the in-doubt map (xid -> the transaction's operations and the row locks it holds)
//! and the encoding of the XA records the kernel logs and saves in `xa.log`.
//!
//! Invariants:
//! - `prepare` logs one record holding the xid *and every operation* in one Sync commit
//!   frame, so a crash leaves the transaction prepared with all its operations or not
//!   prepared at all (SwiftMQ wrote the prepare record and the data separately).
//! - Nothing of a prepared transaction touches a page until `commit_prepared`, which applies
//!   its operations and logs the resolution in the same frame; `rollback_prepared` logs only
//!   the resolution. So each resolved transaction is applied exactly once.
//! - Row locks of a prepared transaction stay in the store's lock table until it is
//!   resolved, and are taken again at open for every in-doubt transaction; keys its inserts
//!   hold are kept from the key counters at open.
//! - A checkpoint saves the in-doubt set in `xa.log` before it recycles the log.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::Mutex;

use super::txn::{install, stage, Op};
use super::{Engine, Store};
use crate::bytes::ByteReader;
use crate::error::{Error, Result};
use crate::log::Durability;
use crate::store::types::NewMessage;
use crate::xalog::XA_LOG;

/// An X/Open XA transaction id.
///
/// ```
/// use stowage::Xid;
/// let x = Xid::new(7, b"global-1", b"branch")?;
/// assert_eq!(x.format_id(), 7);
/// assert!(Xid::new(7, b"", b"").is_err());
/// # Ok::<(), stowage::Error>(())
/// ```
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Xid {
    format_id: i32,
    gtrid: Vec<u8>,
    bqual: Vec<u8>,
}

impl Xid {
    /// An xid: the global transaction id is 1..=64 bytes, the branch qualifier 0..=64.
    pub fn new(format_id: i32, gtrid: &[u8], bqual: &[u8]) -> Result<Xid> {
        if gtrid.is_empty() || gtrid.len() > 64 {
            return Err(Error::invalid_argument(format!(
                "xid global transaction id must be 1..=64 bytes, got {}",
                gtrid.len()
            )));
        }
        if bqual.len() > 64 {
            return Err(Error::invalid_argument(format!(
                "xid branch qualifier must be 0..=64 bytes, got {}",
                bqual.len()
            )));
        }
        Ok(Xid {
            format_id,
            gtrid: gtrid.to_vec(),
            bqual: bqual.to_vec(),
        })
    }

    /// The format id.
    pub fn format_id(&self) -> i32 {
        self.format_id
    }

    /// The global transaction id.
    pub fn gtrid(&self) -> &[u8] {
        &self.gtrid
    }

    /// The branch qualifier.
    pub fn bqual(&self) -> &[u8] {
        &self.bqual
    }
}

impl fmt::Debug for Xid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Xid({}:", self.format_id)?;
        for b in &self.gtrid {
            write!(f, "{b:02x}")?;
        }
        write!(f, ":")?;
        for b in &self.bqual {
            write!(f, "{b:02x}")?;
        }
        write!(f, ")")
    }
}

/// A transaction in doubt.
#[derive(Debug, Clone)]
pub(crate) struct Prepared {
    pub(crate) txn_id: u64,
    pub(crate) ops: Vec<Op>,
    pub(crate) locked: Vec<(u64, u64)>,
}

/// The in-doubt set, shared with the kernel's checkpoint (through the XA source).
pub(crate) type InDoubt = Arc<Mutex<HashMap<Xid, Prepared>>>;

const REC_PREPARE: u8 = 1;
const REC_RESOLVE: u8 = 2;
const OP_INSERT: u8 = 1;
const OP_REMOVE: u8 = 2;
const OP_COUNT: u8 = 3;

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

fn put_xid(out: &mut Vec<u8>, x: &Xid) {
    out.extend_from_slice(&x.format_id.to_le_bytes());
    put_bytes(out, &x.gtrid);
    put_bytes(out, &x.bqual);
}

/// The record `prepare` logs.
pub(crate) fn encode_prepare(xid: &Xid, ops: &[Op]) -> Vec<u8> {
    let mut out = vec![REC_PREPARE];
    put_xid(&mut out, xid);
    out.extend_from_slice(&(ops.len() as u32).to_le_bytes());
    for op in ops {
        match op {
            Op::Insert {
                queue,
                queue_id,
                key,
                msg,
            } => {
                out.push(OP_INSERT);
                put_bytes(&mut out, queue.as_bytes());
                out.extend_from_slice(&queue_id.to_le_bytes());
                out.extend_from_slice(&key.to_le_bytes());
                out.push(msg.priority);
                out.extend_from_slice(&msg.expiration.unwrap_or(u64::MAX).to_le_bytes());
                put_bytes(&mut out, &msg.payload);
            }
            Op::Remove {
                queue,
                queue_id,
                key,
            } => {
                out.push(OP_REMOVE);
                put_bytes(&mut out, queue.as_bytes());
                out.extend_from_slice(&queue_id.to_le_bytes());
                out.extend_from_slice(&key.to_le_bytes());
            }
            Op::SetDeliveryCount {
                queue,
                queue_id,
                key,
                count,
            } => {
                out.push(OP_COUNT);
                put_bytes(&mut out, queue.as_bytes());
                out.extend_from_slice(&queue_id.to_le_bytes());
                out.extend_from_slice(&key.to_le_bytes());
                out.extend_from_slice(&count.to_le_bytes());
            }
        }
    }
    out
}

/// The record a resolution (commit or rollback) logs.
pub(crate) fn encode_resolve(xid: &Xid) -> Vec<u8> {
    let mut out = vec![REC_RESOLVE];
    put_xid(&mut out, xid);
    out
}

/// A decoded XA record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum XaRecord {
    Prepare(Xid, Vec<Op>),
    Resolve(Xid),
}

fn string(r: &mut ByteReader<'_>) -> Result<String> {
    let b = r.bytes()?;
    String::from_utf8(b.to_vec()).map_err(|_| r.bad("queue name is not UTF-8"))
}

fn xid(r: &mut ByteReader<'_>) -> Result<Xid> {
    let format_id = r.i32()?;
    let g = r.bytes()?;
    let q = r.bytes()?;
    Xid::new(format_id, g, q).map_err(|_| r.bad("invalid xid"))
}

/// Decodes an XA record; damage is `Error::Corruption`.
pub(crate) fn decode(b: &[u8]) -> Result<XaRecord> {
    let err = |at: usize, d: String| Error::corruption(XA_LOG, format!("XA record byte {at}"), d);
    let mut r = ByteReader::new(b, &err);
    let rec = match r.u8()? {
        REC_PREPARE => {
            let xid = xid(&mut r)?;
            let n = r.u32()?;
            let mut ops = Vec::new();
            for _ in 0..n {
                let tag = r.u8()?;
                let queue: std::sync::Arc<str> = string(&mut r)?.into();
                let queue_id = r.u64()?;
                let key = r.u64()?;
                ops.push(match tag {
                    OP_INSERT => {
                        let priority = r.u8()?;
                        let exp = r.u64()?;
                        let payload = r.bytes()?.to_vec();
                        Op::Insert {
                            queue,
                            queue_id,
                            key,
                            msg: NewMessage::new(payload)
                                .priority(priority)
                                .expiration((exp != u64::MAX).then_some(exp)),
                        }
                    }
                    OP_REMOVE => Op::Remove {
                        queue,
                        queue_id,
                        key,
                    },
                    OP_COUNT => Op::SetDeliveryCount {
                        queue,
                        queue_id,
                        key,
                        count: r.u32()?,
                    },
                    _ => return Err(r.bad("unknown operation")),
                });
            }
            XaRecord::Prepare(xid, ops)
        }
        REC_RESOLVE => XaRecord::Resolve(xid(&mut r)?),
        _ => return Err(r.bad("unknown XA record type")),
    };
    if !r.at_end() {
        return Err(r.bad("trailing bytes"));
    }
    Ok(rec)
}

/// Entry point for the `decode_xa` fuzz target: `xa.log` bytes, then each record.
#[doc(hidden)]
pub fn fuzz_xa(bytes: &[u8]) {
    if let Ok(s) = crate::xalog::decode(bytes) {
        for r in &s.records {
            let _ = decode(r);
        }
    }
    let _ = decode(bytes);
}

/// Folds the recovered records into the in-doubt set, takes their locks again and keeps
/// their insert keys from the key counters.
pub(crate) fn restore(e: &Engine, records: Vec<Vec<u8>>) -> Result<HashMap<Xid, Prepared>> {
    Ok(adopt(e, fold(records, &mut Err)?))
}

/// Folds XA records (prepares and resolutions, in log order) into the operations of the
/// transactions still in doubt. A record that does not decode goes to `bad`, which fails
/// the fold (open) or notes it and lets the fold skip the record (repair).
pub(crate) fn fold(
    records: Vec<Vec<u8>>,
    bad: &mut dyn FnMut(Error) -> Result<()>,
) -> Result<HashMap<Xid, Vec<Op>>> {
    let mut map: HashMap<Xid, Vec<Op>> = HashMap::new();
    for r in records {
        match decode(&r) {
            Ok(XaRecord::Prepare(x, ops)) => {
                map.insert(x, ops);
            }
            Ok(XaRecord::Resolve(x)) => {
                map.remove(&x);
            }
            Err(e) => bad(e)?,
        }
    }
    Ok(map)
}

/// Makes in-doubt transactions the engine's: takes their row locks and keeps their insert
/// keys from the key counters.
pub(crate) fn adopt(e: &Engine, map: HashMap<Xid, Vec<Op>>) -> HashMap<Xid, Prepared> {
    let mut out = HashMap::new();
    let cat = e.catalog.lock();
    let mut locks = e.locks.lock();
    for (xid, ops) in map {
        let txn_id = e.next_txn.fetch_add(1, Ordering::Relaxed);
        let mut locked = Vec::new();
        for op in &ops {
            match op {
                Op::Insert { queue, key, .. } => {
                    if let Some(q) = cat.queues.get(&**queue) {
                        q.next_key.fetch_max(key + 1, Ordering::AcqRel);
                    }
                }
                Op::Remove { queue_id, key, .. } | Op::SetDeliveryCount { queue_id, key, .. } => {
                    locks.insert((*queue_id, *key), txn_id);
                    locked.push((*queue_id, *key));
                }
            }
        }
        out.insert(
            xid,
            Prepared {
                txn_id,
                ops,
                locked,
            },
        );
    }
    out
}

/// The XA source the kernel's checkpoints call: one prepare record per in-doubt xid.
pub(crate) fn source(in_doubt: InDoubt) -> crate::kernel::XaSource {
    Arc::new(move || {
        let map = in_doubt.lock();
        let mut xids: Vec<&Xid> = map.keys().collect();
        xids.sort();
        xids.into_iter()
            .filter_map(|x| map.get(x).map(|p| encode_prepare(x, &p.ops)))
            .collect()
    })
}

impl Store {
    /// The xids of every prepared (in-doubt) transaction; survives restarts.
    pub fn prepared(&self) -> Result<Vec<Xid>> {
        let e = self.engine()?;
        let mut v: Vec<Xid> = e.in_doubt.lock().keys().cloned().collect();
        v.sort();
        Ok(v)
    }

    /// Applies a prepared transaction, durably (`XidNotFound` if it is not in doubt).
    /// Operations on queues deleted since the prepare are dropped.
    pub fn commit_prepared(&self, xid: &Xid) -> Result<()> {
        self.resolve(xid, true)
    }

    /// Discards a prepared transaction, durably (`XidNotFound` if it is not in doubt).
    pub fn rollback_prepared(&self, xid: &Xid) -> Result<()> {
        self.resolve(xid, false)
    }

    fn resolve(&self, xid: &Xid, commit: bool) -> Result<()> {
        let e = self.engine()?;
        let mut tx = e.kernel.begin()?;
        let prepared = e
            .in_doubt
            .lock()
            .get(xid)
            .cloned()
            .ok_or_else(|| Error::XidNotFound {
                xid: format!("{xid:?}"),
            })?;
        let metas = if commit {
            stage(&e, &mut tx, &prepared.ops, true)?
        } else {
            Default::default()
        };
        tx.attach_xa(encode_resolve(xid));
        tx.commit_then(Durability::Sync, || {
            install(&e, metas);
            e.in_doubt.lock().remove(xid);
        })?;
        let mut locks = e.locks.lock();
        for k in &prepared.locked {
            if locks.get(k) == Some(&prepared.txn_id) {
                locks.remove(k);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_corruption() {
        let xid = Xid::new(-3, b"g", &[0xff; 64]).unwrap();
        let ops = vec![
            Op::Insert {
                queue: "q€".into(),
                queue_id: 2,
                key: 9,
                msg: NewMessage::new(vec![1, 2, 3])
                    .priority(7)
                    .expiration(Some(5)),
            },
            Op::Remove {
                queue: "q".into(),
                queue_id: 1,
                key: 4,
            },
            Op::SetDeliveryCount {
                queue: "q".into(),
                queue_id: 1,
                key: 5,
                count: 3,
            },
        ];
        let b = encode_prepare(&xid, &ops);
        assert_eq!(decode(&b).unwrap(), XaRecord::Prepare(xid.clone(), ops));
        assert_eq!(
            decode(&encode_resolve(&xid)).unwrap(),
            XaRecord::Resolve(xid)
        );
        for n in 0..b.len() {
            assert!(decode(&b[..n]).is_err(), "truncated at {n}");
        }
        let mut lying = b.clone();
        lying[5..9].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&lying).is_err());
    }

    #[test]
    fn xids_are_validated() {
        assert!(Xid::new(1, &[0; 65], b"").is_err());
        assert!(Xid::new(1, b"a", &[0; 65]).is_err());
        assert!(Xid::new(1, &[0; 64], &[0; 64]).is_ok());
        assert!(format!("{:?}", Xid::new(1, b"\x01", b"").unwrap()).contains("01"));
    }
}
