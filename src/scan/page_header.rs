//! The page headers of a column chunk, read before parquet's decoders see
//! them. parquet-rs sizes a dictionary from the count its header claims
//! (`DictDecoder::set_dict`) before decoding it, so a 9 KB file whose
//! dictionary page claims two billion values made it allocate 8.5 GB (found
//! by the fuzzer). A dictionary page is PLAIN-encoded: its values cannot be
//! more than its uncompressed bytes hold, which this checks. It also reserves
//! a page's claimed uncompressed size before decompressing it, so no page
//! may claim more than a gigabyte.
//!
//! The header is Thrift's compact protocol (`PageHeader` in parquet.thrift);
//! only the fields checked are read, the rest skipped.

use parquet::basic::Type as PhysicalType;

/// `PageType::DICTIONARY_PAGE` in parquet.thrift.
const DICTIONARY_PAGE: i64 = 2;
/// The largest page accepted, uncompressed: writers keep pages near a
/// megabyte (arrow-rs and parquet-mr both default to 1 MiB).
const MAX_PAGE_BYTES: i64 = 1 << 30;

/// What a dictionary page header says, when the chunk starts with one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DictionaryHeader {
    pub num_values: i64,
    pub uncompressed_size: i64,
}

/// What a page header says that is checked before decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PageClaims {
    pub uncompressed_size: i64,
    pub dictionary: Option<DictionaryHeader>,
}

/// The pages of a column chunk, found by walking its page headers (a
/// dictionary page may come anywhere: parquet-rs decodes one wherever it
/// meets it). The walk stops at a header it cannot read, which parquet will
/// report when it reads it.
pub(crate) fn page_claims(chunk: &[u8]) -> Vec<PageClaims> {
    let mut found = Vec::new();
    let mut pos = 0usize;
    while pos < chunk.len() {
        let Some((header, length)) = page_header(&chunk[pos..]) else {
            break;
        };
        found.push(PageClaims {
            uncompressed_size: header.uncompressed_size,
            dictionary: header.dictionary,
        });
        let Some(next) = usize::try_from(header.compressed_size)
            .ok()
            .and_then(|size| pos.checked_add(length)?.checked_add(size))
        else {
            break;
        };
        pos = next;
    }
    found
}

/// What the walk needs of a page header.
struct PageHeader {
    compressed_size: i64,
    uncompressed_size: i64,
    dictionary: Option<DictionaryHeader>,
}

/// The page header at the start of `bytes`, and its length in bytes.
fn page_header(bytes: &[u8]) -> Option<(PageHeader, usize)> {
    let mut reader = Compact { bytes, pos: 0 };
    let (mut page_type, mut uncompressed, mut compressed, mut num_values) = (None, None, None, None);
    let mut last = 0i16;
    loop {
        let (id, kind) = reader.field(&mut last)?;
        if kind == STOP {
            break;
        }
        match (id, kind) {
            (1, I32) => page_type = Some(reader.i32()?),
            (2, I32) => uncompressed = Some(reader.i32()?),
            (3, I32) => compressed = Some(reader.i32()?),
            (7, STRUCT) => {
                let mut inner_last = 0i16;
                loop {
                    let (id, kind) = reader.field(&mut inner_last)?;
                    match (id, kind) {
                        (_, STOP) => break,
                        (1, I32) => num_values = Some(reader.i32()?),
                        (_, kind) => reader.skip(kind, 0)?,
                    }
                }
            }
            (_, kind) => reader.skip(kind, 0)?,
        }
    }
    let dictionary = match page_type? {
        DICTIONARY_PAGE => Some(DictionaryHeader {
            num_values: num_values?,
            uncompressed_size: uncompressed?,
        }),
        _ => None,
    };
    let header = PageHeader {
        compressed_size: compressed?,
        uncompressed_size: uncompressed?,
        dictionary,
    };
    Some((header, reader.pos))
}

/// Whether a page of `physical` values (`type_length` bytes each for
/// fixed-length byte arrays) could hold what its header claims: the
/// problem, when it cannot.
pub(crate) fn check_page(claims: PageClaims, physical: PhysicalType, type_length: i32) -> Result<(), String> {
    if !(0..=MAX_PAGE_BYTES).contains(&claims.uncompressed_size) {
        return Err(format!(
            "a page claims {} uncompressed bytes (at most {MAX_PAGE_BYTES} are accepted)",
            claims.uncompressed_size
        ));
    }
    match claims.dictionary {
        Some(dictionary) => check_dictionary(dictionary, physical, type_length),
        None => Ok(()),
    }
}

/// Whether a dictionary page could hold what its header claims.
fn check_dictionary(header: DictionaryHeader, physical: PhysicalType, type_length: i32) -> Result<(), String> {
    let DictionaryHeader {
        num_values,
        uncompressed_size,
    } = header;
    if num_values < 0 || !(0..=MAX_PAGE_BYTES).contains(&uncompressed_size) {
        return Err(format!(
            "its dictionary page claims {num_values} values in {uncompressed_size} bytes"
        ));
    }
    // The fewest bits one PLAIN value takes.
    let bits: i64 = match physical {
        PhysicalType::BOOLEAN => 1,
        PhysicalType::INT32 | PhysicalType::FLOAT => 32,
        PhysicalType::INT64 | PhysicalType::DOUBLE => 64,
        PhysicalType::INT96 => 96,
        PhysicalType::FIXED_LEN_BYTE_ARRAY => 8 * i64::from(type_length.max(1)),
        // A length prefix of four bytes, at least.
        PhysicalType::BYTE_ARRAY => 32,
    };
    if num_values.saturating_mul(bits) > uncompressed_size.saturating_mul(8) {
        return Err(format!(
            "its dictionary page claims {num_values} values in {uncompressed_size} bytes, more than they can hold"
        ));
    }
    Ok(())
}

const STOP: u8 = 0;
const BOOL_TRUE: u8 = 1;
const BOOL_FALSE: u8 = 2;
const BYTE: u8 = 3;
const I16: u8 = 4;
const I32: u8 = 5;
const I64: u8 = 6;
const DOUBLE: u8 = 7;
const BINARY: u8 = 8;
const LIST: u8 = 9;
const SET: u8 = 10;
const MAP: u8 = 11;
const STRUCT: u8 = 12;

/// Nesting deeper than this is not a page header.
const MAX_DEPTH: usize = 16;

/// A reader of Thrift's compact protocol; every read is `None` past the
/// end or on what no page header holds.
struct Compact<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Compact<'_> {
    fn byte(&mut self) -> Option<u8> {
        let b = *self.bytes.get(self.pos)?;
        self.pos += 1;
        Some(b)
    }

    /// A varint of any length, as parquet's Thrift reader takes it: the low
    /// 64 bits of it (bytes past them only end it).
    fn varint(&mut self) -> Option<u64> {
        let mut value = 0u64;
        let mut shift = 0u32;
        loop {
            let b = self.byte()?;
            if shift < 64 {
                value |= u64::from(b & 0x7f) << shift;
            }
            shift += 7;
            if b & 0x80 == 0 {
                return Some(value);
            }
        }
    }

    fn zigzag(&mut self) -> Option<i64> {
        let v = self.varint()?;
        Some((v >> 1) as i64 ^ -((v & 1) as i64))
    }

    /// An `i32` field: a zigzag varint, of which a 32-bit reader keeps the
    /// low 32 bits.
    fn i32(&mut self) -> Option<i64> {
        Some(i64::from(self.zigzag()? as i32))
    }

    /// The next field's id and type (`STOP` at the struct's end).
    fn field(&mut self, last: &mut i16) -> Option<(i16, u8)> {
        let b = self.byte()?;
        let kind = b & 0x0f;
        if kind == STOP {
            return Some((0, STOP));
        }
        let id = match b >> 4 {
            0 => i16::try_from(self.zigzag()?).ok()?,
            delta => last.checked_add(i16::from(delta))?,
        };
        *last = id;
        Some((id, kind))
    }

    fn skip(&mut self, kind: u8, depth: usize) -> Option<()> {
        if depth > MAX_DEPTH {
            return None;
        }
        match kind {
            BOOL_TRUE | BOOL_FALSE => {}
            BYTE => {
                self.byte()?;
            }
            I16 | I32 | I64 => {
                self.varint()?;
            }
            DOUBLE => self.advance(8)?,
            BINARY => {
                let len = usize::try_from(self.varint()?).ok()?;
                self.advance(len)?;
            }
            LIST | SET => {
                let b = self.byte()?;
                let size = match b >> 4 {
                    15 => usize::try_from(self.varint()?).ok()?,
                    size => usize::from(size),
                };
                for _ in 0..size {
                    self.element(b & 0x0f, depth)?;
                }
            }
            MAP => {
                let size = usize::try_from(self.varint()?).ok()?;
                if size > 0 {
                    let kinds = self.byte()?;
                    for _ in 0..size {
                        self.element(kinds >> 4, depth)?;
                        self.element(kinds & 0x0f, depth)?;
                    }
                }
            }
            STRUCT => {
                let mut last = 0i16;
                loop {
                    let (_, kind) = self.field(&mut last)?;
                    if kind == STOP {
                        break;
                    }
                    self.skip(kind, depth + 1)?;
                }
            }
            _ => return None,
        }
        Some(())
    }

    /// One element of a list, set or map: a bool there is a byte of its
    /// own, and every element takes at least a byte (a count from the file
    /// must not loop without reading).
    fn element(&mut self, kind: u8, depth: usize) -> Option<()> {
        let before = self.pos;
        match kind {
            BOOL_TRUE | BOOL_FALSE => {
                self.byte()?;
            }
            kind => self.skip(kind, depth + 1)?,
        }
        (self.pos > before).then_some(())
    }

    fn advance(&mut self, n: usize) -> Option<()> {
        let end = self.pos.checked_add(n).filter(|&end| end <= self.bytes.len())?;
        self.pos = end;
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A compact-protocol page header: type, sizes, and a dictionary page
    /// header of `num_values` (field 7), as parquet writers lay it out.
    fn header(page_type: i64, uncompressed: i64, num_values: i64) -> Vec<u8> {
        fn zigzag(v: i64, out: &mut Vec<u8>) {
            let mut z = ((v << 1) ^ (v >> 63)) as u64;
            while z >= 0x80 {
                out.push((z as u8) | 0x80);
                z >>= 7;
            }
            out.push(z as u8);
        }
        let mut out = Vec::new();
        out.push(0x15); // field 1, i32
        zigzag(page_type, &mut out);
        out.push(0x15); // field 2, i32
        zigzag(uncompressed, &mut out);
        out.push(0x15); // field 3, i32
        zigzag(uncompressed, &mut out);
        out.push(0x18); // field 4 (crc) as binary, to be skipped
        out.extend([2, 0xab, 0xcd]);
        out.push(0x3c); // field 7, struct
        out.push(0x15); // field 1, i32
        zigzag(num_values, &mut out);
        out.push(0x15); // field 2, i32 (encoding)
        zigzag(0, &mut out);
        out.push(0x11); // field 3, bool true
        out.push(0); // end of the dictionary page header
        out.push(0); // end of the page header
        out
    }

    #[test]
    fn walks_the_pages_and_reads_their_claims() {
        // A data page of 4000 bytes, then a dictionary page of 40: headers
        // and bodies in a row, as in a column chunk.
        let mut chunk = header(0, 4000, 0);
        chunk.extend(vec![0u8; 4000]);
        chunk.extend(header(DICTIONARY_PAGE, 40, 10));
        chunk.extend(vec![0u8; 40]);
        assert_eq!(
            page_claims(&chunk),
            vec![
                PageClaims {
                    uncompressed_size: 4000,
                    dictionary: None
                },
                PageClaims {
                    uncompressed_size: 40,
                    dictionary: Some(DictionaryHeader {
                        num_values: 10,
                        uncompressed_size: 40
                    })
                }
            ]
        );
        assert!(
            page_claims(&header(DICTIONARY_PAGE, 4000, 1000)[..5]).is_empty(),
            "cut short"
        );
    }

    #[test]
    fn a_page_claiming_more_than_a_gigabyte_is_refused() {
        let data = |uncompressed_size| PageClaims {
            uncompressed_size,
            dictionary: None,
        };
        assert!(check_page(data(1 << 20), PhysicalType::DOUBLE, 0).is_ok());
        assert!(check_page(data(0), PhysicalType::DOUBLE, 0).is_ok());
        assert!(check_page(data((1 << 30) + 1), PhysicalType::DOUBLE, 0).is_err());
        assert!(check_page(data(-5), PhysicalType::DOUBLE, 0).is_err());
        // Read from the bytes, as the scan does.
        let claims = page_claims(&header(0, i32::MAX as i64, 0));
        assert_eq!(claims.len(), 1);
        assert!(check_page(claims[0], PhysicalType::INT32, 0).is_err());
    }

    #[test]
    fn a_count_that_reads_nothing_ends_the_walk() {
        // Field 5 as a map of two billion bool pairs, and as a list of as
        // many empty structs: each element must take a byte, so both stop
        // at the end of the bytes instead of looping.
        let map = [0x15, 0x04, 0x5b, 0xff, 0xff, 0xff, 0xff, 0x07, 0x11];
        assert!(page_claims(&map).is_empty());
        let list = [0x15, 0x04, 0x59, 0xfc, 0xff, 0xff, 0xff, 0x07];
        assert!(page_claims(&list).is_empty());
    }

    #[test]
    fn a_dictionary_claiming_more_values_than_its_bytes_hold_is_refused() {
        let check = |values, bytes, physical| {
            check_dictionary(
                DictionaryHeader {
                    num_values: values,
                    uncompressed_size: bytes,
                },
                physical,
                0,
            )
        };
        assert!(check(1000, 4000, PhysicalType::FLOAT).is_ok());
        assert!(check(1001, 4000, PhysicalType::FLOAT).is_err());
        assert!(check(1000, 8000, PhysicalType::DOUBLE).is_ok());
        assert!(check(2_130_000_000, 9000, PhysicalType::FLOAT).is_err());
        assert!(check(8, 1, PhysicalType::BOOLEAN).is_ok());
        assert!(check(1000, 4000, PhysicalType::BYTE_ARRAY).is_ok());
        assert!(
            check(1, 2 << 30, PhysicalType::INT32).is_err(),
            "a gigabyte-sized dictionary page"
        );
        assert!(check(-1, 10, PhysicalType::INT32).is_err());
    }
}
