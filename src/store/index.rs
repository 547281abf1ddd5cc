//! The value of a queue index entry: everything about a message but its payload.
//!
//! Layout (27 bytes): `priority u8 | delivery count u32 | expiration u64 (u64::MAX =
//! none) | size u32 | payload location [10]`. Decoding validates the priority; the
//! location is validated when the payload is loaded.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::page::PAGE_DB;
use crate::records::PayloadLoc;

/// Bytes of an index entry's value.
pub const VALUE_LEN: usize = 27;

/// A decoded index entry value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IndexValue {
    pub priority: u8,
    pub delivery_count: u32,
    pub expiration: Option<u64>,
    pub size: u32,
    pub loc: PayloadLoc,
}

impl IndexValue {
    pub fn encode(&self) -> [u8; VALUE_LEN] {
        let mut b = [0u8; VALUE_LEN];
        b[0] = self.priority;
        LE::write_u32(&mut b[1..5], self.delivery_count);
        LE::write_u64(&mut b[5..13], self.expiration.unwrap_or(u64::MAX));
        LE::write_u32(&mut b[13..17], self.size);
        b[17..27].copy_from_slice(&self.loc.encode());
        b
    }

    pub fn decode(queue: &str, key: u64, b: &[u8]) -> Result<IndexValue> {
        let bad = || {
            Error::corruption(
                PAGE_DB,
                format!("queue `{queue}` key {key}"),
                "invalid index entry",
            )
        };
        if b.len() != VALUE_LEN || b[0] > 9 {
            return Err(bad());
        }
        let exp = LE::read_u64(&b[5..13]);
        Ok(IndexValue {
            priority: b[0],
            delivery_count: LE::read_u32(&b[1..5]),
            expiration: (exp != u64::MAX).then_some(exp),
            size: LE::read_u32(&b[13..17]),
            loc: PayloadLoc::decode(&b[17..27]).ok_or_else(bad)?,
        })
    }
}
