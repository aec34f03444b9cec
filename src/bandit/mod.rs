//! Multi-armed bandits, the arithmetic: a versioned [`policy`] of arms with
//! Beta posteriors and Thompson shares, and the stable hash that decides
//! every customer's fate. What runs campaigns over tables (allocate,
//! feedback, off-policy evaluation) is [`crate::campaign`], built on this.
//!
//! Every customer's fate is a pure function of the policy's salt, its
//! version and the customer's id (hashed here, stably across platforms and
//! lakescore versions): the holdout from the salt and the id alone, so a
//! customer held out stays held out; the arm from a uniform draw of the
//! salt, version and id against the version's shares. A re-run of a version
//! is byte-identical.

pub mod policy;

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Int32Type, Int64Type, UInt32Type, UInt64Type};

fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Continues a hash over `bytes`: 8-byte little-endian words, then the
/// length, each mixed in (SplitMix64's finaliser).
pub fn hash_continue(seed: u64, bytes: &[u8]) -> u64 {
    let mut h = seed;
    let mut words = bytes.chunks_exact(8);
    for word in &mut words {
        h = mix(h ^ u64::from_le_bytes(word.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = mix(h ^ u64::from_le_bytes(last));
    }
    mix(h ^ (bytes.len() as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

/// A hash of several byte strings (each length-delimited).
pub fn hash_bytes(parts: &[&[u8]]) -> u64 {
    parts
        .iter()
        .fold(0x6c61_6b65_7363_6f72, |h, part| hash_continue(h, part))
}

/// A hash as a uniform number in [0, 1).
pub fn unit(hash: u64) -> f64 {
    (hash >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// A customer id, exactly: integers of every width are the same id (an id
/// column widened from int32 to int64 keeps every customer's fate).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum IdKey {
    Int(i128),
    Text(Box<str>),
}

impl IdKey {
    /// The bytes the id is hashed by: an integer's 16 little-endian bytes,
    /// a string's UTF-8.
    pub fn hash_with(&self, seed: u64) -> u64 {
        match self {
            IdKey::Int(v) => hash_continue(seed, &v.to_le_bytes()),
            IdKey::Text(t) => hash_continue(seed, t.as_bytes()),
        }
    }
}

impl std::fmt::Display for IdKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            IdKey::Int(v) => write!(f, "{v}"),
            IdKey::Text(t) => write!(f, "{t}"),
        }
    }
}

/// Whether ids of this type can be read.
pub fn is_id_type(data_type: &DataType) -> bool {
    use DataType::*;
    match data_type {
        Int8 | Int16 | Int32 | Int64 | UInt8 | UInt16 | UInt32 | UInt64 | Utf8 | LargeUtf8 | Utf8View => true,
        Dictionary(_, value) => matches!(value.as_ref(), Utf8 | LargeUtf8),
        _ => false,
    }
}

/// The ids of an array (`None` for a null), of a type [`is_id_type`] accepts.
pub fn id_keys(array: &dyn Array) -> Vec<Option<IdKey>> {
    use DataType::*;
    let int = |v: i128| Some(IdKey::Int(v));
    let text = |t: &str| Some(IdKey::Text(t.into()));
    let valid = |i: usize| array.is_valid(i);
    let n = array.len();
    match array.data_type() {
        Int64 => {
            let a = array.as_primitive::<Int64Type>();
            (0..n)
                .map(|i| valid(i).then(|| int(i128::from(a.value(i)))).flatten())
                .collect()
        }
        Int32 => {
            let a = array.as_primitive::<Int32Type>();
            (0..n)
                .map(|i| valid(i).then(|| int(i128::from(a.value(i)))).flatten())
                .collect()
        }
        UInt64 => {
            let a = array.as_primitive::<UInt64Type>();
            (0..n)
                .map(|i| valid(i).then(|| int(i128::from(a.value(i)))).flatten())
                .collect()
        }
        UInt32 => {
            let a = array.as_primitive::<UInt32Type>();
            (0..n)
                .map(|i| valid(i).then(|| int(i128::from(a.value(i)))).flatten())
                .collect()
        }
        Int8 | Int16 | UInt8 | UInt16 => {
            let cast = arrow::compute::cast(array, &Int64).expect("small integers widen");
            id_keys(cast.as_ref())
        }
        Utf8 => {
            let a = array.as_string::<i32>();
            (0..n).map(|i| valid(i).then(|| text(a.value(i))).flatten()).collect()
        }
        LargeUtf8 => {
            let a = array.as_string::<i64>();
            (0..n).map(|i| valid(i).then(|| text(a.value(i))).flatten()).collect()
        }
        Utf8View => {
            let a = array.as_string_view();
            (0..n).map(|i| valid(i).then(|| text(a.value(i))).flatten()).collect()
        }
        Dictionary(_, _) => {
            let cast = arrow::compute::cast(array, &Utf8).expect("string dictionaries cast to strings");
            id_keys(cast.as_ref())
        }
        other => unreachable!("ids of type {other} are refused before reading"),
    }
}

/// Hashes of every id of an integer or string array with `seed`, without
/// building keys (the allocation's hot path); `None` for nulls.
pub fn id_hashes(array: &dyn Array, seed: u64, out: &mut Vec<Option<u64>>) {
    out.clear();
    let n = array.len();
    let hash_int = |v: i128| hash_continue(seed, &v.to_le_bytes());
    match array.data_type() {
        DataType::Int64 => {
            let a = array.as_primitive::<Int64Type>();
            out.extend((0..n).map(|i| a.is_valid(i).then(|| hash_int(i128::from(a.value(i))))));
        }
        DataType::Int32 => {
            let a = array.as_primitive::<Int32Type>();
            out.extend((0..n).map(|i| a.is_valid(i).then(|| hash_int(i128::from(a.value(i))))));
        }
        DataType::Utf8 => {
            let a = array.as_string::<i32>();
            out.extend((0..n).map(|i| a.is_valid(i).then(|| hash_continue(seed, a.value(i).as_bytes()))));
        }
        DataType::LargeUtf8 => {
            let a = array.as_string::<i64>();
            out.extend((0..n).map(|i| a.is_valid(i).then(|| hash_continue(seed, a.value(i).as_bytes()))));
        }
        _ => out.extend(id_keys(array).iter().map(|k| k.as_ref().map(|k| k.hash_with(seed)))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int32Array, Int64Array, StringArray};

    #[test]
    fn hashes_are_fixed_here_not_by_a_crate() {
        // Pinned: a change to these is a change to every customer's arm.
        assert_eq!(hash_bytes(&[b"salt", b"holdout"]), 2523481649777719055);
        assert_eq!(IdKey::Int(1_000_042).hash_with(99), 10510636257916157962);
        assert_ne!(hash_bytes(&[b"ab", b"c"]), hash_bytes(&[b"a", b"bc"]));
        let u = unit(u64::MAX);
        assert!((0.0..1.0).contains(&u));
    }

    #[test]
    fn integer_ids_hash_alike_in_every_width_and_strings_differ() {
        let (mut a, mut b, mut c) = (Vec::new(), Vec::new(), Vec::new());
        id_hashes(&Int64Array::from(vec![Some(42), None]), 7, &mut a);
        id_hashes(&Int32Array::from(vec![Some(42), None]), 7, &mut b);
        id_hashes(&StringArray::from(vec![Some("42"), None]), 7, &mut c);
        assert_eq!(a, b);
        assert_eq!(a[1], None);
        assert_ne!(a[0], c[0]);
        assert_eq!(Some(IdKey::Int(42).hash_with(7)), a[0]);
    }
}
