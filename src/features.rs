//! Features: Arrow columns of a decoded row group -> the model's
//! [`FeatureBlock`], by feature name, every value an f64.
//!
//! Integers (signed and unsigned), floats (16, 32, 64 bit), decimals, booleans,
//! all-null columns and dictionary-encoded columns of any of these are numbers.
//! Nulls and NaNs are missing, and become each feature's `missing_value`.
//!
//! Two sources, one result: the common physical types (the usual ints, floats,
//! booleans and small decimals, in top-level columns) are converted straight
//! from parquet's decoded values ([`LeafReader`], no Arrow arrays in between,
//! about a third faster); every other numeric type goes through an Arrow array.

use std::path::PathBuf;

use arrow::array::{Array, AsArray, BooleanArray, PrimitiveArray};
use arrow::buffer::NullBuffer;
use arrow::datatypes::{
    ArrowPrimitiveType, DataType, Decimal32Type, Decimal64Type, Decimal128Type, Decimal256Type, Float16Type,
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type, UInt32Type, UInt64Type,
};
use num_traits::ToPrimitive;

use parquet::basic::Type as PhysicalType;
use parquet::schema::types::ColumnDescriptor;

use crate::model::{Categories, Feature, FeatureBlock};
use crate::scan::{LeafReader, LeafValues};

#[derive(Debug, thiserror::Error)]
pub enum FeatureError {
    #[error(
        "column `{column}` of `{}`, row group {row_group}, holds category {category:?}, which is not in the training set \
         of the model (XGBoost refuses unseen categories; the model knows {known})",
        path.display()
    )]
    UnknownCategory {
        path: PathBuf,
        row_group: usize,
        column: String,
        category: String,
        known: usize,
    },
    /// The same, in a batch scored in memory ([`crate::scorer`]).
    #[error(
        "column `{column}` of {source_name} holds category {category:?}, which is not in the training set of the \
         model (XGBoost refuses unseen categories; the model knows {known})"
    )]
    UnknownCategoryInBatch {
        source_name: String,
        column: String,
        category: String,
        known: usize,
    },
    #[error(
        "column `{column}` of `{}` has type `{data_type}`, which cannot be a numeric model feature{hint}",
        path.display()
    )]
    NotNumeric {
        path: PathBuf,
        column: String,
        data_type: DataType,
        hint: &'static str,
    },
}

/// Why a type is not a number, for the error message.
fn not_numeric_hint(data_type: &DataType) -> &'static str {
    match data_type {
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => " (it holds strings)",
        DataType::Dictionary(_, value) if !is_numeric(value) => " (its dictionary values are not numbers)",
        DataType::Date32 | DataType::Date64 | DataType::Timestamp(_, _) | DataType::Time32(_) | DataType::Time64(_) => {
            " (derive a number from it, such as days since an event, when preparing the table)"
        }
        _ => "",
    }
}

/// Whether a column of this type can feed a numeric feature.
pub fn is_numeric(data_type: &DataType) -> bool {
    use DataType::*;
    match data_type {
        Null
        | Boolean
        | Int8
        | Int16
        | Int32
        | Int64
        | UInt8
        | UInt16
        | UInt32
        | UInt64
        | Float16
        | Float32
        | Float64
        | Decimal32(_, _)
        | Decimal64(_, _)
        | Decimal128(_, _)
        | Decimal256(_, _) => true,
        Dictionary(_, value) => !matches!(**value, Dictionary(_, _)) && is_numeric(value),
        _ => false,
    }
}

/// Whether a column holds strings, directly or through a dictionary.
pub fn holds_strings(data_type: &DataType) -> bool {
    use DataType::*;
    match data_type {
        Utf8 | LargeUtf8 | Utf8View => true,
        Dictionary(_, value) => matches!(value.as_ref(), Utf8 | LargeUtf8 | Utf8View),
        _ => false,
    }
}

/// Checks that a column of `data_type` can feed `feature`: a number, or
/// strings when the model knows the feature's categories by name.
pub fn check_feature_column(
    path: &std::path::Path,
    feature: &Feature,
    data_type: &DataType,
) -> Result<(), FeatureError> {
    let named_categories = feature.categories.as_ref().is_some_and(|c| !c.are_numbers());
    if named_categories && holds_strings(data_type) {
        return Ok(());
    }
    check_numeric(path, &feature.name, data_type)
}

/// Appends the codes of a string column's categories: a category's position
/// in the model's list; nulls are missing, and so are unknown categories
/// unless they are an error (then `Err(category)`).
pub fn append_categories(
    array: &dyn Array,
    categories: &Categories,
    missing: f64,
    unknown: f64,
    dst: &mut Vec<f64>,
) -> Result<(), String> {
    let code = |name: Option<&str>| match name {
        None => Ok(missing),
        Some(name) => match categories.code_of_name(name) {
            Some(code) => Ok(code),
            None if categories.unknown_is_error => Err(name.to_string()),
            None => Ok(unknown),
        },
    };
    let strings = match array.data_type() {
        DataType::Dictionary(_, _) => {
            let dictionary = array.as_any_dictionary();
            // Each dictionary entry is looked up once, not once per row; an
            // unknown entry that no row uses is no error.
            let entry_codes: Vec<Result<f64, String>> = strings_of(dictionary.values().as_ref()).map(code).collect();
            let keys = dictionary.normalized_keys();
            let nulls = array.logical_nulls();
            for (row, &key) in keys.iter().enumerate() {
                if nulls.as_ref().is_some_and(|n| n.is_null(row)) {
                    dst.push(missing);
                } else {
                    dst.push(entry_codes.get(key).cloned().unwrap_or(Ok(missing))?);
                }
            }
            return Ok(());
        }
        _ => strings_of(array),
    };
    for name in strings {
        dst.push(code(name)?);
    }
    Ok(())
}

/// The values of a string column (plain, large or view).
fn strings_of(array: &dyn Array) -> Box<dyn Iterator<Item = Option<&str>> + '_> {
    match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        other => unreachable!("{other} is not strings; check_feature_column runs at plan time"),
    }
}

/// Checks that `data_type` can feed a numeric feature, naming the file and
/// column when it cannot.
pub fn check_numeric(path: &std::path::Path, column: &str, data_type: &DataType) -> Result<(), FeatureError> {
    if is_numeric(data_type) {
        return Ok(());
    }
    Err(FeatureError::NotNumeric {
        path: path.to_path_buf(),
        column: column.to_string(),
        data_type: data_type.clone(),
        hint: not_numeric_hint(data_type),
    })
}

/// Where one feature's values come from in a row group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FeatureSource {
    /// Column `position` of the decoded Arrow batch.
    Arrow { position: usize },
    /// The `reader`-th leaf reader, converted as `conversion` says.
    Leaf { reader: usize, conversion: LeafConversion },
}

/// How the physical values of a leaf column become numbers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum LeafConversion {
    Boolean,
    Int32,
    /// Unsigned 8, 16 or 32-bit integers, stored in INT32.
    UInt32,
    Int64,
    /// Unsigned 64-bit integers, stored in INT64.
    UInt64,
    Float,
    Double,
    /// A decimal stored in INT32 or INT64: unscaled value and its scale.
    Decimal {
        scale: i8,
    },
}

/// The fast conversion for a column whose Arrow type is `data_type`, if its
/// leaf is a top-level, non-repeated column of a physical type that maps onto
/// that Arrow type one to one. `None` means: read it through Arrow.
pub fn leaf_conversion(descriptor: &ColumnDescriptor, data_type: &DataType) -> Option<LeafConversion> {
    if descriptor.max_rep_level() != 0 || descriptor.max_def_level() > 1 || descriptor.path().parts().len() != 1 {
        return None;
    }
    use DataType::*;
    let value_type = match data_type {
        Dictionary(_, value) => value.as_ref(),
        other => other,
    };
    let conversion = match (descriptor.physical_type(), value_type) {
        (PhysicalType::BOOLEAN, Boolean) => LeafConversion::Boolean,
        (PhysicalType::INT32, Int8 | Int16 | Int32) => LeafConversion::Int32,
        (PhysicalType::INT32, UInt8 | UInt16 | UInt32) => LeafConversion::UInt32,
        (PhysicalType::INT64, Int64) => LeafConversion::Int64,
        (PhysicalType::INT64, UInt64) => LeafConversion::UInt64,
        (PhysicalType::FLOAT, Float32) => LeafConversion::Float,
        (PhysicalType::DOUBLE, Float64) => LeafConversion::Double,
        (
            PhysicalType::INT32 | PhysicalType::INT64,
            Decimal32(_, scale) | Decimal64(_, scale) | Decimal128(_, scale),
        ) => LeafConversion::Decimal { scale: *scale },
        _ => return None,
    };
    Some(conversion)
}

/// A category the model does not know, where that is an error.
#[derive(Debug, Clone, PartialEq)]
pub struct UnknownCategory {
    pub column: String,
    pub category: String,
    pub known: usize,
}

impl UnknownCategory {
    /// In the in-memory batches of `source_name`.
    pub fn in_batch(self, source_name: &str) -> FeatureError {
        FeatureError::UnknownCategoryInBatch {
            source_name: source_name.to_string(),
            column: self.column,
            category: self.category,
            known: self.known,
        }
    }

    pub fn at(self, path: &std::path::Path, row_group: usize) -> FeatureError {
        FeatureError::UnknownCategory {
            path: path.to_path_buf(),
            row_group,
            column: self.column,
            category: self.category,
            known: self.known,
        }
    }
}

/// The code a category the model does not know gets in the contract's view
/// of a feature block (codes are never negative).
pub const UNKNOWN_CATEGORY: f64 = -1.0;

/// The feature block of one batch of `n_rows` rows: the Arrow `columns` of the
/// batch, and the current batch of each leaf reader. A category the model
/// does not know (and reads as missing) becomes `unknown_category`: the
/// feature's missing value for scoring, [`UNKNOWN_CATEGORY`] for the
/// contract's rules, which tell it from a null.
pub fn build_block(
    sources: &[FeatureSource],
    columns: &[&dyn Array],
    leaves: &[LeafReader],
    features: &[Feature],
    n_rows: usize,
    unknown_category: Option<f64>,
) -> Result<FeatureBlock, UnknownCategory> {
    debug_assert_eq!(sources.len(), features.len());
    // Appending (rather than zeroing, then overwriting) touches each value once.
    let mut values = Vec::with_capacity(n_rows * features.len());
    for (source, feature) in sources.iter().zip(features) {
        let missing = feature.missing_value;
        let start = values.len();
        match *source {
            FeatureSource::Arrow { position } => match &feature.categories {
                Some(categories) if holds_strings(columns[position].data_type()) => {
                    let unknown = unknown_category.unwrap_or(missing);
                    append_categories(columns[position], categories, missing, unknown, &mut values).map_err(
                        |category| UnknownCategory {
                            column: feature.name.clone(),
                            category,
                            known: categories.len(),
                        },
                    )?
                }
                _ => append_column(columns[position], missing, &mut values),
            },
            FeatureSource::Leaf { reader, conversion } => {
                append_leaf(&leaves[reader], conversion, missing, &mut values)
            }
        }
        // Categories that are numbers (a pandas category of ints): the
        // column holds the category values, the model wants their codes.
        if let Some(categories) = &feature.categories
            && categories.are_numbers()
        {
            for v in &mut values[start..] {
                if v.is_nan() {
                    continue;
                }
                match categories.code_of_number(*v) {
                    Some(code) => *v = code,
                    None if categories.unknown_is_error => {
                        return Err(UnknownCategory {
                            column: feature.name.clone(),
                            category: v.to_string(),
                            known: categories.len(),
                        });
                    }
                    None => *v = unknown_category.unwrap_or(missing),
                }
            }
        }
    }
    debug_assert_eq!(values.len(), n_rows * features.len());
    Ok(FeatureBlock {
        n_rows,
        n_features: features.len(),
        values,
    })
}

/// Appends a leaf reader's current batch as f64.
pub fn append_leaf(leaf: &LeafReader, conversion: LeafConversion, missing: f64, dst: &mut Vec<f64>) {
    let levels = leaf.definition_levels();
    let float = |v: f64| if v.is_nan() { missing } else { v };
    match leaf.values() {
        LeafValues::Bool(_, values) => expand(values, levels, missing, dst, |v| f64::from(u8::from(v))),
        LeafValues::Int32(_, values) => expand_integers(
            values,
            levels,
            missing,
            dst,
            conversion,
            |v| v as f64,
            |v| v as u32 as f64,
        ),
        LeafValues::Int64(_, values) => expand_integers(
            values,
            levels,
            missing,
            dst,
            conversion,
            |v| v as f64,
            |v| v as u64 as f64,
        ),
        LeafValues::Float(_, values) => expand(values, levels, missing, dst, |v| float(v as f64)),
        LeafValues::Double(_, values) => expand(values, levels, missing, dst, float),
    }
}

/// INT32 or INT64 values as signed or unsigned integers, or as decimals.
fn expand_integers<T: Copy>(
    values: &[T],
    levels: Option<&[i16]>,
    missing: f64,
    dst: &mut Vec<f64>,
    conversion: LeafConversion,
    signed: impl Fn(T) -> f64,
    unsigned: impl Fn(T) -> f64,
) {
    match conversion {
        LeafConversion::UInt32 | LeafConversion::UInt64 => expand(values, levels, missing, dst, unsigned),
        LeafConversion::Decimal { scale } => {
            let unit = decimal_unit(scale);
            expand(values, levels, missing, dst, |v| unit.apply(signed(v)))
        }
        _ => expand(values, levels, missing, dst, signed),
    }
}

/// Dense non-null `values` plus definition levels -> one f64 per row.
fn expand<T: Copy>(values: &[T], levels: Option<&[i16]>, missing: f64, dst: &mut Vec<f64>, convert: impl Fn(T) -> f64) {
    let Some(levels) = levels.filter(|levels| levels.len() != values.len()) else {
        // No nulls in this batch: one straight, vectorizable conversion.
        dst.extend(values.iter().map(|v| convert(*v)));
        return;
    };
    // Nulls are a few percent: convert the runs of present values between
    // them, each run a vectorizable loop, rather than branch on every row.
    let (mut row, mut value) = (0, 0);
    while row < levels.len() {
        let run = present_run(&levels[row..]);
        let present = &values[value..value + run];
        dst.extend(present.iter().map(|v| convert(*v)));
        row += run;
        value += run;
        while row < levels.len() && levels[row] == 0 {
            dst.push(missing);
            row += 1;
        }
    }
}

/// How many levels from the start are non-zero (present values).
fn present_run(levels: &[i16]) -> usize {
    let mut run = 0;
    for chunk in levels.chunks_exact(16) {
        // No early exit inside a chunk: the compiler turns it into SIMD.
        if !chunk.iter().fold(true, |all, &level| all & (level != 0)) {
            break;
        }
        run += 16;
    }
    run + levels[run..].iter().take_while(|&&level| level != 0).count()
}

/// Appends one column's values as f64, with `missing` for nulls and NaNs. The
/// type must pass [`is_numeric`].
pub fn append_column(array: &dyn Array, missing: f64, dst: &mut Vec<f64>) {
    use DataType::*;
    // NaN is missing: one select in the conversion, which keeps it one pass.
    let float = |v: f64| if v.is_nan() { missing } else { v };
    match array.data_type() {
        Null => dst.resize(dst.len() + array.len(), missing),
        Boolean => append_boolean(array.as_boolean(), missing, dst),
        Int8 => append_primitive::<Int8Type>(array, missing, dst, |v| v as f64),
        Int16 => append_primitive::<Int16Type>(array, missing, dst, |v| v as f64),
        Int32 => append_primitive::<Int32Type>(array, missing, dst, |v| v as f64),
        Int64 => append_primitive::<Int64Type>(array, missing, dst, |v| v as f64),
        UInt8 => append_primitive::<UInt8Type>(array, missing, dst, |v| v as f64),
        UInt16 => append_primitive::<UInt16Type>(array, missing, dst, |v| v as f64),
        UInt32 => append_primitive::<UInt32Type>(array, missing, dst, |v| v as f64),
        UInt64 => append_primitive::<UInt64Type>(array, missing, dst, |v| v as f64),
        Float16 => append_primitive::<Float16Type>(array, missing, dst, |v| float(v.to_f64())),
        Float32 => append_primitive::<Float32Type>(array, missing, dst, |v| float(v as f64)),
        Float64 => append_primitive::<Float64Type>(array, missing, dst, float),
        Decimal32(_, scale) => {
            let unit = decimal_unit(*scale);
            append_primitive::<Decimal32Type>(array, missing, dst, |v| unit.apply(v as f64))
        }
        Decimal64(_, scale) => {
            let unit = decimal_unit(*scale);
            append_primitive::<Decimal64Type>(array, missing, dst, |v| unit.apply(v as f64))
        }
        Decimal128(_, scale) => {
            let unit = decimal_unit(*scale);
            append_primitive::<Decimal128Type>(array, missing, dst, |v| unit.apply(v as f64))
        }
        Decimal256(_, scale) => {
            let unit = decimal_unit(*scale);
            append_primitive::<Decimal256Type>(array, missing, dst, |v| {
                float(unit.apply(v.to_f64().unwrap_or(f64::NAN)))
            })
        }
        Dictionary(_, _) => append_dictionary(array, missing, dst),
        other => unreachable!("append_column called with non-numeric type {other}; check_numeric runs at plan time"),
    }
}

fn append_primitive<T: ArrowPrimitiveType>(
    array: &dyn Array,
    missing: f64,
    dst: &mut Vec<f64>,
    convert: impl Fn(T::Native) -> f64,
) {
    let array: &PrimitiveArray<T> = array.as_primitive::<T>();
    let start = dst.len();
    dst.extend(array.values().iter().map(|v| convert(*v)));
    if let Some(nulls) = array.nulls() {
        let appended = &mut dst[start..];
        for_each_null(nulls, |i| appended[i] = missing);
    }
}

fn append_boolean(array: &BooleanArray, missing: f64, dst: &mut Vec<f64>) {
    let start = dst.len();
    dst.extend(array.values().iter().map(|v| if v { 1.0 } else { 0.0 }));
    if let Some(nulls) = array.nulls() {
        let appended = &mut dst[start..];
        for_each_null(nulls, |i| appended[i] = missing);
    }
}

fn append_dictionary(array: &dyn Array, missing: f64, dst: &mut Vec<f64>) {
    let dictionary = array.as_any_dictionary();
    let values = dictionary.values();
    if values.is_empty() {
        // Only possible when every key is null.
        dst.resize(dst.len() + array.len(), missing);
        return;
    }
    let mut value_numbers = Vec::with_capacity(values.len());
    append_column(values.as_ref(), missing, &mut value_numbers);
    let start = dst.len();
    dst.extend(dictionary.normalized_keys().into_iter().map(|key| value_numbers[key]));
    if let Some(nulls) = dictionary.keys().nulls() {
        let appended = &mut dst[start..];
        for_each_null(nulls, |i| appended[i] = missing);
    }
}

/// Calls `f` with the index of every null in `nulls`, a 64-bit word at a time,
/// so that the usual few percent of nulls cost next to nothing.
fn for_each_null(nulls: &NullBuffer, mut f: impl FnMut(usize)) {
    if nulls.null_count() == 0 {
        return;
    }
    let chunks = nulls.inner().bit_chunks();
    let mut base = 0;
    for word in chunks.iter() {
        let mut invalid = !word;
        while invalid != 0 {
            f(base + invalid.trailing_zeros() as usize);
            invalid &= invalid - 1;
        }
        base += 64;
    }
    let remainder_len = chunks.remainder_len();
    let mut invalid = !chunks.remainder_bits() & ((1u64 << remainder_len) - 1);
    while invalid != 0 {
        f(base + invalid.trailing_zeros() as usize);
        invalid &= invalid - 1;
    }
}

/// Decimal value = unscaled integer / 10^scale (scale may be negative).
#[derive(Clone, Copy)]
enum DecimalUnit {
    Divide(f64),
    Multiply(f64),
}

impl DecimalUnit {
    fn apply(self, unscaled: f64) -> f64 {
        // Dividing by an exactly representable power of ten rounds once.
        match self {
            DecimalUnit::Divide(power) => unscaled / power,
            DecimalUnit::Multiply(power) => unscaled * power,
        }
    }
}

fn decimal_unit(scale: i8) -> DecimalUnit {
    let power = 10f64.powi(i32::from(scale).abs());
    if scale >= 0 {
        DecimalUnit::Divide(power)
    } else {
        DecimalUnit::Multiply(power)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::*;
    use arrow::datatypes::Int32Type;
    use std::sync::Arc;

    fn convert(array: &dyn Array, missing: f64) -> Vec<f64> {
        let mut dst = vec![-7.0];
        append_column(array, missing, &mut dst);
        assert_eq!(dst.remove(0), -7.0, "values before the appended ones stay");
        dst
    }

    #[test]
    fn integers_and_nulls() {
        let a = Int32Array::from(vec![Some(1), None, Some(-3)]);
        assert_eq!(convert(&a, -1.0), vec![1.0, -1.0, -3.0]);
        let u = UInt64Array::from(vec![u64::MAX]);
        assert_eq!(convert(&u, 0.0), vec![u64::MAX as f64]);
        let i = Int8Array::from(vec![Some(-128), None]);
        let out = convert(&i, f64::NAN);
        assert_eq!(out[0], -128.0);
        assert!(out[1].is_nan());
    }

    #[test]
    fn floats_nan_is_missing() {
        let a = Float32Array::from(vec![Some(1.5), Some(f32::NAN), None]);
        assert_eq!(convert(&a, 9.0), vec![1.5, 9.0, 9.0]);
        let h = Float16Array::from(vec![Some(half::f16::from_f32(0.5)), None]);
        assert_eq!(convert(&h, 0.0), vec![0.5, 0.0]);
    }

    #[test]
    fn decimals_booleans_null_type() {
        let d = Decimal128Array::from(vec![Some(12345), None])
            .with_precision_and_scale(10, 2)
            .unwrap();
        assert_eq!(convert(&d, 0.0), vec![123.45, 0.0]);
        let d = Decimal64Array::from(vec![7]).with_precision_and_scale(10, -3).unwrap();
        assert_eq!(convert(&d, 0.0), vec![7000.0]);
        let d = Decimal256Array::from(vec![Some(arrow::datatypes::i256::from_i128(-5))])
            .with_precision_and_scale(40, 1)
            .unwrap();
        assert_eq!(convert(&d, 0.0), vec![-0.5]);
        let b = BooleanArray::from(vec![Some(true), Some(false), None]);
        assert_eq!(convert(&b, 0.5), vec![1.0, 0.0, 0.5]);
        let n = NullArray::new(2);
        assert_eq!(convert(&n, 3.0), vec![3.0, 3.0]);
    }

    #[test]
    fn dictionaries_of_numbers() {
        let values = Arc::new(Float64Array::from(vec![Some(10.0), None, Some(f64::NAN)]));
        let keys = Int32Array::from(vec![Some(0), Some(1), None, Some(2), Some(0)]);
        let dict = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        assert_eq!(convert(&dict, -1.0), vec![10.0, -1.0, -1.0, -1.0, 10.0]);
        let empty = DictionaryArray::<Int32Type>::try_new(
            Int32Array::from(vec![None, None]),
            Arc::new(Float64Array::from(Vec::<f64>::new())),
        )
        .unwrap();
        assert_eq!(convert(&empty, 2.0), vec![2.0, 2.0]);
    }

    #[test]
    fn nulls_past_the_first_word_and_in_slices() {
        let values: Vec<Option<i64>> = (0..200).map(|i| if i % 7 == 0 { None } else { Some(i) }).collect();
        let a = Int64Array::from(values.clone());
        let sliced = a.slice(67, 100);
        let out = convert(&sliced, -1.0);
        for (k, v) in out.iter().enumerate() {
            let expected = values[67 + k].map(|v| v as f64).unwrap_or(-1.0);
            assert_eq!(*v, expected, "row {k}");
        }
    }

    #[test]
    fn expansion_puts_missing_values_where_levels_say_null() {
        for pattern in [
            vec![],
            vec![0],
            vec![1],
            vec![0, 0, 1],
            vec![1, 0, 1, 1, 0, 0],
            vec![1; 40],
            vec![0; 33],
        ] {
            let mut levels = pattern.clone();
            // Long runs too, to go through the 16-at-a-time path.
            levels.extend(std::iter::repeat_n(1, 37));
            levels.push(0);
            levels.extend(pattern.iter().rev());
            let n_present = levels.iter().filter(|&&l| l != 0).count();
            let values: Vec<i32> = (0..n_present as i32).collect();
            let mut out = vec![];
            expand(&values, Some(&levels), -1.0, &mut out, |v| v as f64 * 2.0);
            let mut next = 0;
            let expected: Vec<f64> = levels
                .iter()
                .map(|&l| match l {
                    0 => -1.0,
                    _ => {
                        next += 1;
                        (next - 1) as f64 * 2.0
                    }
                })
                .collect();
            assert_eq!(out, expected, "levels {levels:?}");
        }
    }

    #[test]
    fn strings_and_dates_are_not_numbers() {
        let path = std::path::Path::new("t.parquet");
        let e = check_numeric(path, "region", &DataType::Utf8).unwrap_err();
        assert_eq!(
            e.to_string(),
            "column `region` of `t.parquet` has type `Utf8`, which cannot be a numeric model feature (it holds strings)"
        );
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        assert!(
            check_numeric(path, "segment", &dict)
                .unwrap_err()
                .to_string()
                .contains("dictionary values")
        );
        assert!(check_numeric(path, "d", &DataType::Date32).is_err());
        let numeric_dict = DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Float32));
        assert!(check_numeric(path, "x", &numeric_dict).is_ok());
    }

    fn colours(unknown_is_error: bool) -> Categories {
        let mut c = Categories::from_strings(vec!["blue".into(), "green".into(), "red".into()]);
        c.unknown_is_error = unknown_is_error;
        c
    }

    #[test]
    fn string_categories_become_their_codes_in_every_string_type() {
        let plain = StringArray::from(vec![Some("red"), None, Some("blue"), Some("teal")]);
        let large = LargeStringArray::from(vec![Some("red"), None, Some("blue"), Some("teal")]);
        let view = StringViewArray::from(vec![Some("red"), None, Some("blue"), Some("teal")]);
        let dictionary: DictionaryArray<Int32Type> = vec![Some("red"), None, Some("blue"), Some("teal")]
            .into_iter()
            .collect();
        for array in [&plain as &dyn Array, &large, &view, &dictionary] {
            let mut dst = Vec::new();
            append_categories(array, &colours(false), f64::NAN, f64::NAN, &mut dst).unwrap();
            assert_eq!(dst[0], 2.0, "{:?}", array.data_type());
            assert!(dst[1].is_nan(), "null is missing");
            assert_eq!(dst[2], 0.0);
            assert!(dst[3].is_nan(), "unknown is missing when that is the model's rule");
            let err = append_categories(array, &colours(true), f64::NAN, f64::NAN, &mut Vec::new()).unwrap_err();
            assert_eq!(err, "teal");
        }
    }

    #[test]
    fn unused_unknown_dictionary_entries_are_no_error() {
        // The dictionary holds "teal", but no row uses it.
        let keys = Int32Array::from(vec![Some(0), None, Some(0)]);
        let values = Arc::new(StringArray::from(vec!["green", "teal"]));
        let dictionary = DictionaryArray::<Int32Type>::try_new(keys, values).unwrap();
        let mut dst = Vec::new();
        append_categories(&dictionary, &colours(true), -1.0, -1.0, &mut dst).unwrap();
        assert_eq!(dst, vec![1.0, -1.0, 1.0]);
    }

    #[test]
    fn string_columns_pass_only_for_features_with_named_categories() {
        let path = std::path::Path::new("t.parquet");
        let mut feature = Feature {
            name: "colour".into(),
            missing_value: f64::NAN,
            categories: None,
        };
        assert!(check_feature_column(path, &feature, &DataType::Utf8).is_err());
        feature.categories = Some(Arc::new(colours(false)));
        assert!(check_feature_column(path, &feature, &DataType::Utf8).is_ok());
        let dict = DataType::Dictionary(Box::new(DataType::Int8), Box::new(DataType::LargeUtf8));
        assert!(check_feature_column(path, &feature, &dict).is_ok());
        assert!(
            check_feature_column(path, &feature, &DataType::Float64).is_ok(),
            "codes"
        );
        feature.categories = Some(Arc::new(Categories::from_numbers(vec![3.0, 7.0])));
        assert!(check_feature_column(path, &feature, &DataType::Utf8).is_err());
    }

    #[test]
    fn numeric_categories_map_values_to_codes() {
        let values = Float64Array::from(vec![Some(7.0), None, Some(3.0), Some(5.0)]);
        let columns: Vec<&dyn Array> = vec![&values];
        let mut categories = Categories::from_numbers(vec![3.0, 7.0]);
        let feature = |categories: &Categories| Feature {
            name: "size".into(),
            missing_value: f64::NAN,
            categories: Some(Arc::new(categories.clone())),
        };
        let sources = [FeatureSource::Arrow { position: 0 }];
        let block = build_block(&sources, &columns, &[], &[feature(&categories)], 4, None).unwrap();
        assert_eq!(block.values[0], 1.0);
        assert!(
            block.values[1].is_nan() && block.values[3].is_nan(),
            "null and unknown are missing"
        );
        assert_eq!(block.values[2], 0.0);
        categories.unknown_is_error = true;
        let err = build_block(&sources, &columns, &[], &[feature(&categories)], 4, None).unwrap_err();
        assert_eq!(
            (err.column.as_str(), err.category.as_str(), err.known),
            ("size", "5", 2)
        );
    }
}
