//! A bounds-checked reader over bytes that came from disk.
//!
//! Invariant: every read checks the bytes present first; a short input becomes the
//! caller's `Error::Corruption` (built by the closure it passes, which names the file and
//! the location), never a panic or an allocation from an unchecked length.

use byteorder::{ByteOrder, LittleEndian as LE};

use crate::error::{Error, Result};

/// Reads little-endian fields from `b`, failing through `err(offset, detail)`.
pub(crate) struct ByteReader<'a> {
    b: &'a [u8],
    at: usize,
    err: &'a dyn Fn(usize, String) -> Error,
}

impl<'a> ByteReader<'a> {
    pub(crate) fn new(b: &'a [u8], err: &'a dyn Fn(usize, String) -> Error) -> Self {
        ByteReader { b, at: 0, err }
    }

    /// The caller's corruption error at the current offset.
    pub(crate) fn bad(&self, detail: impl Into<String>) -> Error {
        (self.err)(self.at, detail.into())
    }

    /// True once every byte was read.
    pub(crate) fn at_end(&self) -> bool {
        self.at == self.b.len()
    }

    pub(crate) fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| self.bad(format!("{n} bytes needed past the end")))?;
        let s = &self.b[self.at..end];
        self.at = end;
        Ok(s)
    }

    pub(crate) fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    pub(crate) fn u32(&mut self) -> Result<u32> {
        Ok(LE::read_u32(self.take(4)?))
    }

    pub(crate) fn i32(&mut self) -> Result<i32> {
        Ok(LE::read_i32(self.take(4)?))
    }

    pub(crate) fn u64(&mut self) -> Result<u64> {
        Ok(LE::read_u64(self.take(8)?))
    }

    /// A `u32` length, then that many bytes.
    pub(crate) fn bytes(&mut self) -> Result<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_input_is_the_callers_error_at_the_offset() {
        let err = |at: usize, d: String| Error::corruption("f", format!("byte {at}"), d);
        let data = [1u8, 2, 0, 0, 0, 9, 9];
        let mut r = ByteReader::new(&data, &err);
        assert_eq!(r.u8().unwrap(), 1);
        assert_eq!(r.bytes().unwrap(), &[9, 9]);
        assert!(r.at_end());
        let mut r = ByteReader::new(&data[..4], &err);
        r.u8().unwrap();
        let e = r.u64().unwrap_err();
        assert!(e.to_string().contains("byte 1"), "{e}");
        let lying = [0xff, 0xff, 0xff, 0xff];
        assert!(ByteReader::new(&lying, &err).bytes().is_err());
    }
}
