//! The swap record format: a 24-byte header followed by the payload.
//!
//! Owns: the header codec and its validation. Invariants: a header is accepted only if its
//! magic, state byte, reserved bytes (through the CRC) and header CRC check out and its
//! length is at most [`MAX_PAYLOAD`]; the header CRC also covers the file number and the
//! offset the header was written at (not stored), so a header is only valid where it was
//! written. Nothing here reads a file.
//!
//! | offset | size | field |
//! |---|---|---|
//! | 0 | 4 | magic `SWP1` |
//! | 4 | 1 | state: `L` live, `R` removed |
//! | 5 | 3 | reserved (0) |
//! | 8 | 4 | payload length (u32 LE, <= 1 GiB) |
//! | 12 | 4 | delivery count (u32 LE) |
//! | 16 | 4 | payload CRC32 |
//! | 20 | 4 | header CRC32 over file number (u32 LE), offset (u64 LE) and bytes 0..20 |

/// Bytes of a record header.
pub(crate) const HEADER_LEN: usize = 24;
/// `HEADER_LEN` as a file-offset quantity.
pub(crate) const HEADER_LEN64: u64 = HEADER_LEN as u64;
/// The first four bytes of every record.
pub(crate) const MAGIC: [u8; 4] = *b"SWP1";
/// Largest payload a record may hold (the largest `max_message_size`): 1 GiB.
pub(crate) const MAX_PAYLOAD: u64 = 1 << 30;

const LIVE: u8 = b'L';
const REMOVED: u8 = b'R';

/// A decoded, validated record header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Header {
    /// False once the record was removed.
    pub live: bool,
    /// Payload length in bytes (<= [`MAX_PAYLOAD`]).
    pub len: u32,
    /// The delivery count.
    pub delivery_count: u32,
    /// CRC32 of the payload.
    pub payload_crc: u32,
}

/// The CRC32 of a payload.
pub(crate) fn payload_crc(payload: &[u8]) -> u32 {
    crc32fast::hash(payload)
}

fn header_crc(file: u32, offset: u64, first20: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(&file.to_le_bytes());
    h.update(&offset.to_le_bytes());
    h.update(first20);
    h.finalize()
}

fn u32_at(b: &[u8; HEADER_LEN], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl Header {
    /// The header's bytes for a record written in `file` at `offset`.
    pub(crate) fn encode(&self, file: u32, offset: u64) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..4].copy_from_slice(&MAGIC);
        b[4] = if self.live { LIVE } else { REMOVED };
        b[8..12].copy_from_slice(&self.len.to_le_bytes());
        b[12..16].copy_from_slice(&self.delivery_count.to_le_bytes());
        b[16..20].copy_from_slice(&self.payload_crc.to_le_bytes());
        let crc = header_crc(file, offset, &b[..20]);
        b[20..24].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Validates header bytes read from `file` at `offset`; the error is the detail of a
    /// corruption report.
    pub(crate) fn decode(b: &[u8; HEADER_LEN], file: u32, offset: u64) -> Result<Header, String> {
        if b[0..4] != MAGIC {
            return Err(format!(
                "no record header (magic {:02x?}, expected {:02x?})",
                &b[0..4],
                MAGIC
            ));
        }
        let stored = u32_at(b, 20);
        let computed = header_crc(file, offset, &b[..20]);
        if stored != computed {
            return Err(format!(
                "record header checksum mismatch (stored {stored:#010x}, computed {computed:#010x})"
            ));
        }
        let live = match b[4] {
            LIVE => true,
            REMOVED => false,
            other => return Err(format!("unknown record state byte {other:#04x}")),
        };
        if b[5..8] != [0, 0, 0] {
            return Err("reserved header bytes are not zero".into());
        }
        let len = u32_at(b, 8);
        if u64::from(len) > MAX_PAYLOAD {
            return Err(format!(
                "payload length {len} exceeds the maximum {MAX_PAYLOAD}"
            ));
        }
        Ok(Header {
            live,
            len,
            delivery_count: u32_at(b, 12),
            payload_crc: u32_at(b, 16),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_position_binding() {
        let h = Header {
            live: true,
            len: 5,
            delivery_count: 7,
            payload_crc: payload_crc(b"hello"),
        };
        let b = h.encode(3, 100);
        assert_eq!(Header::decode(&b, 3, 100), Ok(h));
        assert!(Header::decode(&b, 3, 101).is_err(), "offset is covered");
        assert!(
            Header::decode(&b, 4, 100).is_err(),
            "file number is covered"
        );
        let removed = Header { live: false, ..h };
        assert_eq!(Header::decode(&removed.encode(3, 100), 3, 100), Ok(removed));
        for i in 0..HEADER_LEN {
            let mut bad = b;
            bad[i] ^= 0x01;
            assert!(Header::decode(&bad, 3, 100).is_err(), "flip at byte {i}");
        }
    }

    #[test]
    fn oversized_length_is_rejected_even_with_a_valid_crc() {
        let h = Header {
            live: true,
            len: u32::MAX,
            delivery_count: 0,
            payload_crc: 0,
        };
        let e = Header::decode(&h.encode(0, 0), 0, 0).unwrap_err();
        assert!(e.contains("exceeds"), "{e}");
    }
}
