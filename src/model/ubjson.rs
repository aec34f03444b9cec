//! Universal Binary JSON (<https://ubjson.org>), as XGBoost's `save_model`
//! writes `.ubj` files, decoded into a [`serde_json::Value`] so that one
//! loader serves both of XGBoost's formats.
//!
//! Everything is big-endian. Containers may be "optimised": `[$d#L<n>` is an
//! array of `n` float32 with no per-element markers, which is how XGBoost
//! stores its node arrays. Numbers keep their exact value: float32 becomes the
//! f64 of the same value, so casting back to f32 is lossless.

use serde_json::{Map, Number, Value};

#[derive(Debug, thiserror::Error)]
#[error("UBJSON at byte {offset}: {problem}")]
pub struct UbjsonError {
    pub offset: usize,
    pub problem: String,
}

/// Decodes one UBJSON value that must span all of `bytes`.
pub fn parse(bytes: &[u8]) -> Result<Value, UbjsonError> {
    let mut reader = Reader {
        bytes,
        pos: 0,
        depth: 0,
    };
    let marker = reader.marker()?;
    let value = reader.value(marker)?;
    while reader.pos < bytes.len() && bytes[reader.pos] == b'N' {
        reader.pos += 1;
    }
    if reader.pos != bytes.len() {
        return Err(reader.error(format!("{} bytes after the end of the value", bytes.len() - reader.pos)));
    }
    Ok(value)
}

/// Containers nest at most this deep; a model is a handful of levels.
const MAX_DEPTH: usize = 128;

/// The most elements an array reserves room for before it has read them.
const RESERVE_LIMIT: usize = 4096;

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    depth: usize,
}

impl Reader<'_> {
    fn error(&self, problem: String) -> UbjsonError {
        UbjsonError {
            offset: self.pos,
            problem,
        }
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], UbjsonError> {
        let end = self.pos.checked_add(N).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error("unexpected end of data".into()));
        };
        let out = self.bytes[self.pos..end].try_into().expect("length checked");
        self.pos = end;
        Ok(out)
    }

    fn slice(&mut self, len: usize) -> Result<&[u8], UbjsonError> {
        let end = self.pos.checked_add(len).filter(|&end| end <= self.bytes.len());
        let Some(end) = end else {
            return Err(self.error(format!("a length of {len} runs past the end of the data")));
        };
        let out = &self.bytes[self.pos..end];
        self.pos = end;
        Ok(out)
    }

    /// The next marker, skipping no-ops.
    fn marker(&mut self) -> Result<u8, UbjsonError> {
        loop {
            let [m] = self.take::<1>()?;
            if m != b'N' {
                return Ok(m);
            }
        }
    }

    fn integer(&mut self, marker: u8) -> Result<i64, UbjsonError> {
        Ok(match marker {
            b'i' => i8::from_be_bytes(self.take()?) as i64,
            b'U' => u8::from_be_bytes(self.take()?) as i64,
            b'I' => i16::from_be_bytes(self.take()?) as i64,
            b'l' => i32::from_be_bytes(self.take()?) as i64,
            b'L' => i64::from_be_bytes(self.take()?),
            other => return Err(self.error(format!("expected an integer marker, found {:?}", other as char))),
        })
    }

    fn length(&mut self) -> Result<usize, UbjsonError> {
        let marker = self.marker()?;
        let n = self.integer(marker)?;
        usize::try_from(n).map_err(|_| self.error(format!("negative length {n}")))
    }

    fn string(&mut self) -> Result<String, UbjsonError> {
        let len = self.length()?;
        let start = self.pos;
        let bytes = self.slice(len)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| UbjsonError {
            offset: start,
            problem: "string is not UTF-8".into(),
        })
    }

    fn value(&mut self, marker: u8) -> Result<Value, UbjsonError> {
        Ok(match marker {
            b'Z' => Value::Null,
            b'T' => Value::Bool(true),
            b'F' => Value::Bool(false),
            b'i' | b'U' | b'I' | b'l' | b'L' => Value::from(self.integer(marker)?),
            b'd' => float(f32::from_be_bytes(self.take()?) as f64),
            b'D' => float(f64::from_be_bytes(self.take()?)),
            b'H' => {
                let text = self.string()?;
                let number: Number = text
                    .parse()
                    .map_err(|_| self.error(format!("high-precision number {text:?} is not a number")))?;
                Value::Number(number)
            }
            b'C' => Value::String(char::from(self.take::<1>()?[0]).to_string()),
            b'S' => Value::String(self.string()?),
            b'[' => self.nested(Self::array)?,
            b'{' => self.nested(Self::object)?,
            other => return Err(self.error(format!("unknown marker {:?}", other as char))),
        })
    }

    fn nested(&mut self, read: fn(&mut Self) -> Result<Value, UbjsonError>) -> Result<Value, UbjsonError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self.error(format!("containers nest deeper than {MAX_DEPTH}")));
        }
        let value = read(self);
        self.depth -= 1;
        value
    }

    /// The optional `$type` and `#count` after an opening bracket.
    fn container_header(&mut self) -> Result<(Option<u8>, Option<usize>), UbjsonError> {
        let mut element_type = None;
        if self.bytes.get(self.pos) == Some(&b'$') {
            self.pos += 1;
            let t = self.take::<1>()?[0];
            // Markers without a payload would let a tiny file claim any count.
            if matches!(t, b'Z' | b'T' | b'F' | b'N') {
                return Err(self.error(format!(
                    "typed container of {:?} (no payload) is not supported",
                    t as char
                )));
            }
            element_type = Some(t);
            if self.bytes.get(self.pos) != Some(&b'#') {
                return Err(self.error("a typed container must give its count".into()));
            }
        }
        let mut count = None;
        if self.bytes.get(self.pos) == Some(&b'#') {
            self.pos += 1;
            count = Some(self.length()?);
        }
        Ok((element_type, count))
    }

    fn array(&mut self) -> Result<Value, UbjsonError> {
        let (element_type, count) = self.container_header()?;
        let Some(count) = count else {
            let mut items = Vec::new();
            loop {
                let marker = self.marker()?;
                if marker == b']' {
                    return Ok(Value::Array(items));
                }
                items.push(self.value(marker)?);
            }
        };
        // Each element takes at least one byte (or is a markerless typed
        // value), so a count beyond the remaining bytes is corrupt data.
        if element_type.is_none_or(|t| !matches!(t, b'Z' | b'T' | b'F' | b'N')) && count > self.bytes.len() - self.pos {
            return Err(self.error(format!("array of {count} elements is longer than the file")));
        }
        // Reserve what a count claims only up to a bound: nested arrays each
        // claiming the rest of the file would otherwise reserve the file's
        // size once per level. Past it, the vector grows with what is
        // actually read, and every element read took a byte of the file.
        let mut items = Vec::with_capacity(count.min(RESERVE_LIMIT));
        for _ in 0..count {
            let marker = match element_type {
                Some(t) => t,
                None => self.marker()?,
            };
            items.push(self.value(marker)?);
        }
        Ok(Value::Array(items))
    }

    fn object(&mut self) -> Result<Value, UbjsonError> {
        let (element_type, count) = self.container_header()?;
        let mut map = Map::new();
        let mut remaining = count;
        loop {
            match remaining.as_mut() {
                Some(0) => return Ok(Value::Object(map)),
                Some(n) => *n -= 1,
                None => {
                    if self.bytes.get(self.pos) == Some(&b'}') {
                        self.pos += 1;
                        return Ok(Value::Object(map));
                    }
                }
            }
            let key = self.string()?;
            let marker = match element_type {
                Some(t) => t,
                None => self.marker()?,
            };
            let value = self.value(marker)?;
            map.insert(key, value);
        }
    }
}

/// A float as a JSON number; JSON has no NaN or infinity, so those become
/// strings that the XGBoost loader reads back (XGBoost writes them as such).
fn float(v: f64) -> Value {
    match Number::from_f64(v) {
        Some(n) => Value::Number(n),
        None if v.is_nan() => Value::String("NaN".into()),
        None if v > 0.0 => Value::String("Infinity".into()),
        None => Value::String("-Infinity".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn decodes_scalars_strings_and_containers() {
        // {"a": [1, 2.5, "x"], "b": true, "c": null}
        let mut bytes = vec![b'{'];
        bytes.extend([b'i', 1, b'a', b'[', b'i', 1, b'd']);
        bytes.extend(2.5f32.to_be_bytes());
        bytes.extend([b'S', b'i', 1, b'x', b']']);
        bytes.extend([b'i', 1, b'b', b'T', b'i', 1, b'c', b'Z', b'}']);
        assert_eq!(
            parse(&bytes).unwrap(),
            json!({"a": [1, 2.5, "x"], "b": true, "c": null})
        );
    }

    #[test]
    fn decodes_typed_counted_arrays_big_endian() {
        let mut bytes = vec![b'[', b'$', b'd', b'#', b'L'];
        bytes.extend(2i64.to_be_bytes());
        bytes.extend(0.1f32.to_be_bytes());
        bytes.extend((-3.0f32).to_be_bytes());
        let value = parse(&bytes).unwrap();
        let items: Vec<f32> = value
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap() as f32)
            .collect();
        assert_eq!(items, vec![0.1f32, -3.0]);

        let mut ints = vec![b'[', b'$', b'l', b'#', b'i', 3];
        for v in [7i32, -1, 1 << 30] {
            ints.extend(v.to_be_bytes());
        }
        assert_eq!(parse(&ints).unwrap(), json!([7, -1, 1 << 30]));
    }

    #[test]
    fn counted_objects_and_high_precision_numbers() {
        let mut bytes = vec![b'{', b'#', b'U', 1, b'U', 2, b'h', b'p', b'H', b'U', 3];
        bytes.extend(b"1.5");
        assert_eq!(parse(&bytes).unwrap(), json!({"hp": 1.5}));
    }

    #[test]
    fn truncated_and_corrupt_input_is_an_error_not_a_panic() {
        let mut bytes = vec![b'[', b'$', b'd', b'#', b'L'];
        bytes.extend(1_000_000i64.to_be_bytes());
        let err = parse(&bytes).unwrap_err();
        assert!(err.problem.contains("longer than the file"), "{err}");
        assert!(parse(b"{").is_err());
        assert!(parse(b"[i").is_err());
        assert!(parse(b"Q").unwrap_err().problem.contains("unknown marker"));
        assert!(parse(b"TT").unwrap_err().problem.contains("after the end"));
        let deep = vec![b'['; 1000];
        assert!(parse(&deep).unwrap_err().problem.contains("nest deeper"));
        let mut nulls = vec![b'[', b'$', b'Z', b'#', b'L'];
        nulls.extend(i64::MAX.to_be_bytes());
        assert!(parse(&nulls).unwrap_err().problem.contains("no payload"));
    }

    #[test]
    fn non_finite_floats_survive_as_strings() {
        let mut bytes = vec![b'[', b'$', b'd', b'#', b'i', 2];
        bytes.extend(f32::NAN.to_be_bytes());
        bytes.extend(f32::NEG_INFINITY.to_be_bytes());
        assert_eq!(parse(&bytes).unwrap(), json!(["NaN", "-Infinity"]));
    }
}
