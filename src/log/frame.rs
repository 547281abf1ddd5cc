//! Byte format of `transaction.log`: the twin log headers and the frames.
//!
//! Owns: encoding, decoding and the tail scan. No I/O beyond reading through a
//! [`FileHandle`] in [`scan`].
//!
//! Invariants: a frame is accepted only if its CRC matches, its generation is the header's
//! and its LSN is exactly the next expected one, so a stale frame of an earlier generation,
//! a torn frame and garbage are all rejected; a length field is checked against the bytes
//! left in the file before anything is allocated.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};
use crate::file::FileHandle;
use crate::page::Lsn;

/// The file name of the write-ahead log.
pub const LOG_FILE: &str = "transaction.log";
/// Sector size: each write batch is padded to it, so a later batch never shares (and so can
/// never tear) a sector holding an earlier, synced batch.
pub const SECTOR: u64 = 512;
/// Bytes reserved at the start of the file for the two header copies.
pub const LOG_HEADER_AREA: u64 = 2 * SECTOR;
/// Size of a frame header.
pub const FRAME_HEADER_LEN: usize = 32;
const LOG_MAGIC: [u8; 8] = *b"STOWLOG\x01";
const LOG_VERSION: u32 = 1;

/// What a frame holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FrameKind {
    /// A committed transaction: all its changes and its commit mark.
    Commit = 1,
    /// A prepared (XA) transaction's changes and its xid.
    Prepare = 2,
    /// Resolution of a prepared transaction.
    Resolve = 3,
}

impl FrameKind {
    fn from_u8(b: u8) -> Option<FrameKind> {
        match b {
            1 => Some(FrameKind::Commit),
            2 => Some(FrameKind::Prepare),
            3 => Some(FrameKind::Resolve),
            _ => None,
        }
    }
}

/// One copy of the log header: which generation the frames belong to and the LSN they
/// continue from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogHeader {
    /// Bumped at every recycle; frames of other generations are stale.
    pub generation: u32,
    /// The first frame of this generation has LSN `base_lsn + 1`.
    pub base_lsn: Lsn,
}

// Header copy layout (one sector): magic[8] version u32 generation u32 base_lsn u64
// zero.. crc u32 at 508 over 0..508.
impl LogHeader {
    /// Encodes one header sector.
    pub fn encode(&self) -> [u8; SECTOR as usize] {
        let mut b = [0u8; SECTOR as usize];
        b[..8].copy_from_slice(&LOG_MAGIC);
        LE::write_u32(&mut b[8..12], LOG_VERSION);
        LE::write_u32(&mut b[12..16], self.generation);
        LE::write_u64(&mut b[16..24], self.base_lsn);
        let crc = crc32fast::hash(&b[..508]);
        LE::write_u32(&mut b[508..], crc);
        b
    }

    /// Decodes one header copy.
    pub fn decode(b: &[u8], slot: usize) -> Result<LogHeader> {
        let bad = |d: &str| Error::corruption(LOG_FILE, format!("log header {slot}"), d);
        if b.len() < SECTOR as usize {
            return Err(bad("too short"));
        }
        if b[..8] != LOG_MAGIC {
            return Err(bad("bad magic (not a stowage transaction.log)"));
        }
        if LE::read_u32(&b[508..512]) != crc32fast::hash(&b[..508]) {
            return Err(bad("checksum mismatch"));
        }
        if LE::read_u32(&b[8..12]) != LOG_VERSION {
            return Err(bad("unsupported log format version"));
        }
        Ok(LogHeader {
            generation: LE::read_u32(&b[12..16]),
            base_lsn: LE::read_u64(&b[16..24]),
        })
    }

    /// The valid copy with the highest generation, from the first 1024 bytes.
    pub fn choose(area: &[u8]) -> Result<(LogHeader, usize)> {
        let a = LogHeader::decode(area.get(..512).unwrap_or(&[]), 0);
        let b = LogHeader::decode(area.get(512..).unwrap_or(&[]), 1);
        match (a, b) {
            (Ok(a), Ok(b)) if b.generation > a.generation => Ok((b, 1)),
            (Ok(a), _) => Ok((a, 0)),
            (Err(_), Ok(b)) => Ok((b, 1)),
            (Err(e), Err(_)) => Err(e),
        }
    }
}

/// A decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// What the frame holds.
    pub kind: FrameKind,
    /// Its LSN.
    pub lsn: Lsn,
    /// The LSN the log knew to be durable when this frame was written.
    pub synced_upto: Lsn,
    /// The opaque payload (the log never interprets it).
    pub payload: Vec<u8>,
}

// Frame layout: len u32 (payload bytes) | crc u32 over 8..32 and the payload | lsn u64 |
// generation u32 | kind u8 | reserved[3] | synced_upto u64 | payload.

/// Encodes a frame into `out`, which is exactly `FRAME_HEADER_LEN + payload.len()` bytes
/// long (its prior content does not matter: every byte is written).
pub fn encode_frame_into(
    out: &mut [u8],
    generation: u32,
    kind: FrameKind,
    lsn: Lsn,
    synced_upto: Lsn,
    payload: &[u8],
) {
    debug_assert_eq!(out.len(), FRAME_HEADER_LEN + payload.len());
    let (h, body) = out.split_at_mut(FRAME_HEADER_LEN);
    body.copy_from_slice(payload);
    h.fill(0);
    // Payloads are bounded by max_message_size batches far below 4 GiB; the commit path
    // refuses larger ones before encoding.
    LE::write_u32(&mut h[0..4], payload.len() as u32);
    LE::write_u64(&mut h[8..16], lsn);
    LE::write_u32(&mut h[16..20], generation);
    h[20] = kind as u8;
    LE::write_u64(&mut h[24..32], synced_upto);
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[8..]);
    crc.update(body);
    LE::write_u32(&mut h[4..8], crc.finalize());
}

/// Zero bytes that pad a batch of `len` bytes written at file offset `at` to a sector
/// boundary.
pub fn sector_padding(at: u64, len: usize) -> usize {
    let end = at + len as u64;
    (end.div_ceil(SECTOR) * SECTOR - end) as usize
}

/// Where the valid frames end, and what was found there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScanEnd {
    /// File offset just past the last valid frame, rounded up to a sector (where the next
    /// write batch goes).
    pub tail: u64,
    /// The LSN of the last valid frame (`base_lsn` if none).
    pub last_lsn: Lsn,
}

/// Reads `len` bytes at `off`, or `None` if the file ends first.
fn read_at(file: &dyn FileHandle, off: u64, len: usize, file_len: u64) -> Result<Option<Vec<u8>>> {
    match off.checked_add(len as u64) {
        Some(end) if end <= file_len => {
            let mut b = vec![0u8; len];
            file.read_exact_at(&mut b, off)
                .map_err(|e| Error::io(format!("reading {LOG_FILE} at offset {off}"), e))?;
            Ok(Some(b))
        }
        _ => Ok(None),
    }
}

/// Tries to decode the frame at `off` expecting `generation` and `lsn`.
fn frame_at(
    file: &dyn FileHandle,
    off: u64,
    file_len: u64,
    generation: u32,
    lsn: Option<Lsn>,
    ignore_checksum: bool,
) -> Result<Option<(Frame, u64)>> {
    let Some(h) = read_at(file, off, FRAME_HEADER_LEN, file_len)? else {
        return Ok(None);
    };
    let len = u64::from(LE::read_u32(&h[0..4]));
    let f_lsn = LE::read_u64(&h[8..16]);
    let f_gen = LE::read_u32(&h[16..20]);
    if f_gen != generation || lsn.is_some_and(|l| l != f_lsn) {
        return Ok(None);
    }
    let Some(kind) = FrameKind::from_u8(h[20]) else {
        return Ok(None);
    };
    // The length is checked against the bytes the file holds before allocating.
    let Some(payload) = read_at(file, off + FRAME_HEADER_LEN as u64, len as usize, file_len)?
    else {
        return Ok(None);
    };
    let mut crc = crc32fast::Hasher::new();
    crc.update(&h[8..]);
    crc.update(&payload);
    if crc.finalize() != LE::read_u32(&h[4..8]) && !ignore_checksum {
        return Ok(None);
    }
    let frame = Frame {
        kind,
        lsn: f_lsn,
        synced_upto: LE::read_u64(&h[24..32]),
        payload,
    };
    Ok(Some((frame, off + FRAME_HEADER_LEN as u64 + len)))
}

/// Scans the frames of `header`'s generation, calling `each` for every valid frame in LSN
/// order, and returns where they end.
///
/// A frame that fails validation ends the log (a torn or garbage tail), unless a later
/// valid frame of the same generation records that the log was durable beyond it: then
/// synced data was damaged and the scan fails with `Error::Corruption`.
///
/// `ignore_checksum` is a planted bug for the crash harness's self-test (false otherwise).
pub fn scan(
    file: &dyn FileHandle,
    header: LogHeader,
    ignore_checksum: bool,
    mut each: impl FnMut(Frame) -> Result<()>,
) -> Result<ScanEnd> {
    let file_len = file
        .len()
        .map_err(|e| Error::io(format!("reading length of {LOG_FILE}"), e))?;
    let mut off = LOG_HEADER_AREA;
    let mut expect = header.base_lsn + 1;
    loop {
        match frame_at(
            file,
            off,
            file_len,
            header.generation,
            Some(expect),
            ignore_checksum,
        )? {
            Some((frame, next)) => {
                each(frame)?;
                expect += 1;
                off = next;
            }
            // The rest of a sector after a batch is padding: continue at the boundary.
            None if off % SECTOR != 0 => off = off.div_ceil(SECTOR) * SECTOR,
            None => break,
        }
    }
    check_nothing_durable_beyond(file, header, off, expect, file_len)?;
    Ok(ScanEnd {
        tail: off,
        last_lsn: expect - 1,
    })
}

/// Looks at every later sector for a valid frame of this generation that says the log was
/// durable past the frame that failed (LSN `missing`): that would be lost synced data.
fn check_nothing_durable_beyond(
    file: &dyn FileHandle,
    header: LogHeader,
    tail: u64,
    missing: Lsn,
    file_len: u64,
) -> Result<()> {
    let mut off = tail + SECTOR;
    while off < file_len {
        if let Some((frame, _)) = frame_at(file, off, file_len, header.generation, None, false)? {
            if frame.synced_upto >= missing {
                return Err(Error::corruption(
                    LOG_FILE,
                    format!("offset {tail}"),
                    format!(
                        "frame {missing} is damaged but frame {} at offset {off} records the log durable up to {}",
                        frame.lsn, frame.synced_upto
                    ),
                ));
            }
        }
        off += SECTOR;
    }
    Ok(())
}
