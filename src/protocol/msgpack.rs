//! A strict, zero-copy MessagePack reader over a byte slice.
//!
//! Decoding is done on `rmp`'s marker layer rather than through serde visitors because the
//! spec's typing is strict where serde is lenient: `bin` and `str` must never be confused
//! (serde's string visitors accept bytes, and rmp-serde hands invalid-UTF-8 `str` to
//! visitors as bytes), and map keys must be `str` (derived serde field visitors accept
//! integer keys). Every read is bounds-checked; nothing here can panic on any input.

use rmp::Marker;

use super::error::ProtocolError;

/// An integer read from the wire, in whichever family it was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Int {
    /// A non-negative value.
    Unsigned(u64),
    /// A negative value.
    Negative(i64),
}

/// A cursor over MessagePack bytes.
pub struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

type Result<T> = std::result::Result<T, ProtocolError>;

fn truncated() -> ProtocolError {
    ProtocolError::invalid("truncated MessagePack")
}

fn wrong_type(what: &str, expected: &str) -> ProtocolError {
    ProtocolError::invalid(format!("{what} must be {expected}"))
}

impl<'a> Reader<'a> {
    /// A reader positioned at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Reader { buf, pos: 0 }
    }

    /// Bytes consumed so far.
    pub fn position(&self) -> usize {
        self.pos
    }

    /// True when every byte has been consumed.
    pub fn is_at_end(&self) -> bool {
        self.pos == self.buf.len()
    }

    /// Fails unless every byte has been consumed.
    pub fn expect_end(&self) -> Result<()> {
        if self.is_at_end() {
            Ok(())
        } else {
            Err(ProtocolError::invalid("trailing bytes after MessagePack value"))
        }
    }

    fn take(&mut self, len: usize) -> Result<&'a [u8]> {
        let end = self.pos.checked_add(len).ok_or_else(truncated)?;
        let slice = self.buf.get(self.pos..end).ok_or_else(truncated)?;
        self.pos = end;
        Ok(slice)
    }

    fn take_array<const N: usize>(&mut self) -> Result<[u8; N]> {
        let slice = self.take(N)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }

    fn be_u8(&mut self) -> Result<u8> {
        Ok(self.take_array::<1>()?[0])
    }

    fn be_u16(&mut self) -> Result<u16> {
        Ok(u16::from_be_bytes(self.take_array()?))
    }

    fn be_u32(&mut self) -> Result<u32> {
        Ok(u32::from_be_bytes(self.take_array()?))
    }

    fn be_u64(&mut self) -> Result<u64> {
        Ok(u64::from_be_bytes(self.take_array()?))
    }

    fn marker(&mut self) -> Result<Marker> {
        Ok(Marker::from_u8(self.be_u8()?))
    }

    fn peek_marker(&self) -> Result<Marker> {
        self.buf.get(self.pos).map(|byte| Marker::from_u8(*byte)).ok_or_else(truncated)
    }

    /// True if the next value is `nil` (does not consume it).
    pub fn next_is_nil(&self) -> bool {
        matches!(self.peek_marker(), Ok(Marker::Null))
    }

    /// Reads a map header; `what` names the value in the error.
    pub fn read_map_len(&mut self, what: &str) -> Result<usize> {
        match self.marker()? {
            Marker::FixMap(len) => Ok(len as usize),
            Marker::Map16 => Ok(self.be_u16()? as usize),
            Marker::Map32 => Ok(self.be_u32()? as usize),
            _ => Err(wrong_type(what, "a map")),
        }
    }

    /// Reads an array header; `what` names the value in the error.
    pub fn read_array_len(&mut self, what: &str) -> Result<usize> {
        match self.marker()? {
            Marker::FixArray(len) => Ok(len as usize),
            Marker::Array16 => Ok(self.be_u16()? as usize),
            Marker::Array32 => Ok(self.be_u32()? as usize),
            _ => Err(wrong_type(what, "an array")),
        }
    }

    /// Reads a `str` value (never `bin`) that must be valid UTF-8.
    pub fn read_str(&mut self, what: &str) -> Result<&'a str> {
        let len = match self.marker()? {
            Marker::FixStr(len) => len as usize,
            Marker::Str8 => self.be_u8()? as usize,
            Marker::Str16 => self.be_u16()? as usize,
            Marker::Str32 => self.be_u32()? as usize,
            _ => return Err(wrong_type(what, "a str")),
        };
        let bytes = self.take(len)?;
        std::str::from_utf8(bytes).map_err(|_| ProtocolError::invalid(format!("{what} is not valid UTF-8")))
    }

    /// Reads an array of `str`; `list` and `item` name them in errors.
    pub fn read_str_list(&mut self, list: &str, item: &str) -> Result<Vec<String>> {
        let count = self.read_array_len(list)?;
        let mut values = Vec::with_capacity(count.min(256));
        for _ in 0..count {
            values.push(self.read_str(item)?.to_owned());
        }
        Ok(values)
    }

    /// Reads a `bin` value (never `str`).
    pub fn read_bin(&mut self, what: &str) -> Result<&'a [u8]> {
        let len = match self.marker()? {
            Marker::Bin8 => self.be_u8()? as usize,
            Marker::Bin16 => self.be_u16()? as usize,
            Marker::Bin32 => self.be_u32()? as usize,
            _ => return Err(wrong_type(what, "a bin")),
        };
        self.take(len)
    }

    /// Reads a `bin` value of exactly `N` bytes.
    pub fn read_bin_fixed<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let bytes = self.read_bin(what)?;
        bytes.try_into().map_err(|_| ProtocolError::invalid(format!("{what} must be {N} bytes, got {}", bytes.len())))
    }

    /// Reads an integer of any width and family.
    pub fn read_int(&mut self, what: &str) -> Result<Int> {
        let int = match self.marker()? {
            Marker::FixPos(value) => Int::Unsigned(value as u64),
            Marker::U8 => Int::Unsigned(self.be_u8()? as u64),
            Marker::U16 => Int::Unsigned(self.be_u16()? as u64),
            Marker::U32 => Int::Unsigned(self.be_u32()? as u64),
            Marker::U64 => Int::Unsigned(self.be_u64()?),
            Marker::FixNeg(value) => Int::Negative(value as i64),
            Marker::I8 => signed(self.be_u8()? as i8 as i64),
            Marker::I16 => signed(self.be_u16()? as i16 as i64),
            Marker::I32 => signed(self.be_u32()? as i32 as i64),
            Marker::I64 => signed(self.be_u64()? as i64),
            _ => return Err(wrong_type(what, "an integer")),
        };
        Ok(int)
    }

    /// Reads a non-negative integer.
    pub fn read_uint(&mut self, what: &str) -> Result<u64> {
        match self.read_int(what)? {
            Int::Unsigned(value) => Ok(value),
            Int::Negative(_) => Err(wrong_type(what, "a non-negative integer")),
        }
    }

    /// Reads an integer that fits in `i64`.
    pub fn read_i64(&mut self, what: &str) -> Result<i64> {
        match self.read_int(what)? {
            Int::Negative(value) => Ok(value),
            Int::Unsigned(value) => {
                i64::try_from(value).map_err(|_| ProtocolError::invalid(format!("{what} is out of range")))
            }
        }
    }

    /// Skips one complete value of any type, returning the bytes it occupied.
    ///
    /// Iterative, so deeply nested input cannot exhaust the stack; every element consumes
    /// at least one byte, so the loop is bounded by the input length.
    pub fn skip_value(&mut self) -> Result<&'a [u8]> {
        let start = self.pos;
        let mut pending: u64 = 1;
        while pending > 0 {
            pending -= 1;
            let children: u64 = match self.marker()? {
                Marker::FixPos(_) | Marker::FixNeg(_) | Marker::Null | Marker::True | Marker::False => 0,
                Marker::U8 | Marker::I8 => self.skip(1)?,
                Marker::U16 | Marker::I16 => self.skip(2)?,
                Marker::U32 | Marker::I32 | Marker::F32 => self.skip(4)?,
                Marker::U64 | Marker::I64 | Marker::F64 => self.skip(8)?,
                Marker::FixStr(len) => self.skip(len as usize)?,
                Marker::Str8 | Marker::Bin8 => {
                    let len = self.be_u8()? as usize;
                    self.skip(len)?
                }
                Marker::Str16 | Marker::Bin16 => {
                    let len = self.be_u16()? as usize;
                    self.skip(len)?
                }
                Marker::Str32 | Marker::Bin32 => {
                    let len = self.be_u32()? as usize;
                    self.skip(len)?
                }
                Marker::FixArray(len) => len as u64,
                Marker::Array16 => self.be_u16()? as u64,
                Marker::Array32 => self.be_u32()? as u64,
                Marker::FixMap(len) => 2 * len as u64,
                Marker::Map16 => 2 * self.be_u16()? as u64,
                Marker::Map32 => 2 * self.be_u32()? as u64,
                Marker::FixExt1 => self.skip(2)?,
                Marker::FixExt2 => self.skip(3)?,
                Marker::FixExt4 => self.skip(5)?,
                Marker::FixExt8 => self.skip(9)?,
                Marker::FixExt16 => self.skip(17)?,
                Marker::Ext8 => {
                    let len = self.be_u8()? as usize;
                    self.skip(len + 1)?
                }
                Marker::Ext16 => {
                    let len = self.be_u16()? as usize;
                    self.skip(len + 1)?
                }
                Marker::Ext32 => {
                    let len = self.be_u32()? as usize;
                    self.skip(len.saturating_add(1))?
                }
                Marker::Reserved => return Err(ProtocolError::invalid("reserved MessagePack marker 0xc1")),
            };
            pending = pending.saturating_add(children);
        }
        Ok(&self.buf[start..self.pos])
    }

    /// Consumes `len` bytes; returns 0 (no child values) for use in `skip_value`.
    fn skip(&mut self, len: usize) -> Result<u64> {
        self.take(len).map(|_| 0)
    }
}

fn signed(value: i64) -> Int {
    if value < 0 {
        Int::Negative(value)
    } else {
        Int::Unsigned(value as u64)
    }
}

/// Tracks which keys of a strict map have been seen, rejecting duplicates.
pub struct SeenKeys {
    seen: u32,
}

impl SeenKeys {
    /// No keys seen yet.
    pub fn new() -> Self {
        SeenKeys { seen: 0 }
    }

    /// Marks key number `index` (< 32) as seen; a second sighting is a 400.
    pub fn mark(&mut self, index: u32, key: &str) -> Result<()> {
        let bit = 1u32 << index;
        if self.seen & bit != 0 {
            return Err(ProtocolError::invalid(format!("duplicate key {key:?}")));
        }
        self.seen |= bit;
        Ok(())
    }

    /// True if key number `index` was seen.
    pub fn has(&self, index: u32) -> bool {
        self.seen & (1u32 << index) != 0
    }
}

impl Default for SeenKeys {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn str_and_bin_are_distinct() {
        let str_bytes = [0xa2, b'h', b'i'];
        assert!(Reader::new(&str_bytes).read_bin("x").is_err());
        assert_eq!(Reader::new(&str_bytes).read_str("x").ok(), Some("hi"));
        let bin_bytes = [0xc4, 2, b'h', b'i'];
        assert!(Reader::new(&bin_bytes).read_str("x").is_err());
        assert_eq!(Reader::new(&bin_bytes).read_bin("x").ok(), Some(&b"hi"[..]));
    }

    #[test]
    fn invalid_utf8_str_is_rejected_not_treated_as_bin() {
        let bytes = [0xa1, 0xff];
        assert!(Reader::new(&bytes).read_str("x").is_err());
        assert!(Reader::new(&bytes).read_bin("x").is_err());
    }

    #[test]
    fn ints_of_every_width() {
        for (bytes, expected) in [
            (&[0x05][..], Int::Unsigned(5)),
            (&[0xcc, 0xff][..], Int::Unsigned(255)),
            (&[0xd0, 0x05][..], Int::Unsigned(5)),
            (&[0xd3, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff][..], Int::Negative(-1)),
            (&[0xff][..], Int::Negative(-1)),
        ] {
            assert_eq!(Reader::new(bytes).read_int("x").ok(), Some(expected));
        }
    }

    #[test]
    fn skip_handles_truncation_and_huge_lengths() {
        assert!(Reader::new(&[0xdd, 0xff, 0xff, 0xff, 0xff]).skip_value().is_err());
        assert!(Reader::new(&[0xc6, 0xff, 0xff, 0xff, 0xff]).skip_value().is_err());
        assert!(Reader::new(&[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01]).skip_value().is_err());
        let nested = vec![0x91; 100_000];
        assert!(Reader::new(&nested).skip_value().is_err());
        let mut ok = vec![0x91; 100_000];
        ok.push(0xc0);
        let mut reader = Reader::new(&ok);
        assert_eq!(reader.skip_value().map(|s| s.len()).ok(), Some(100_001));
    }
}
