//! A seeded generator of synthetic customer tables, the shape of
//! `../shared/bench/gen_customers.py`: ids, dates, dictionary strings, ints,
//! floats, bools, 2-7% nulls, and an optional `converted` label drawn from a
//! logistic function of the features (so trained models have structure).
//!
//! The same seed gives the same bytes on any machine and any thread count:
//! every row group draws from its own random stream, seeded from (seed, file,
//! row group). Used by `gen-lake` (datasets/), the tests and the benchmarks.

use std::f64::consts::PI;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{
    ArrayRef, BooleanArray, Date32Array, DictionaryArray, Float32Array, Float64Array, Int8Array, Int32Array,
    Int64Array, StringArray,
};
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use rayon::prelude::*;

pub const REGIONS: [&str; 12] = [
    "north", "south", "east", "west", "central", "coastal", "mountain", "metro", "rural", "island", "border", "capital",
];
pub const SEGMENTS: [&str; 5] = ["new", "casual", "regular", "loyal", "lapsed"];
pub const N_BEHAVIOURAL: usize = 20;

/// The 34 numeric columns the benchmark models read, in their order.
pub fn benchmark_features() -> Vec<String> {
    let mut names: Vec<String> = [
        "age",
        "tenure_days",
        "orders_30d",
        "orders_90d",
        "orders_365d",
        "spend_30d",
        "spend_90d",
        "spend_365d",
        "avg_basket",
        "email_opens_30d",
        "email_clicks_30d",
        "days_since_last_order",
        "app_user",
        "loyalty_tier",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    names.extend((0..N_BEHAVIOURAL).map(|j| format!("b{j:02}")));
    names
}

/// What to generate.
#[derive(Debug, Clone)]
pub struct LakeSpec {
    pub rows: u64,
    /// Files per partition.
    pub files: usize,
    pub row_group_rows: usize,
    pub seed: u64,
    pub label: bool,
    /// `dt=` partition values, one folder each; rows are spread evenly.
    pub dates: Vec<String>,
}

impl Default for LakeSpec {
    fn default() -> Self {
        LakeSpec {
            rows: 10_000,
            files: 1,
            row_group_rows: 131_072,
            seed: 7,
            label: false,
            dates: vec!["2026-11-25".to_string()],
        }
    }
}

/// Writes the table under `out` (`out/dt=<date>/part-00000.parquet`, ...) and
/// returns the files written, in path order.
pub fn generate_lake(out: &Path, spec: &LakeSpec) -> Result<Vec<PathBuf>, GenerateError> {
    let n_files = spec.files.max(1) * spec.dates.len().max(1);
    let per_file = spec.rows.div_ceil(n_files as u64);
    let mut jobs = Vec::with_capacity(n_files);
    let mut first_id = 1u64;
    for (date_idx, date) in spec.dates.iter().enumerate() {
        for file in 0..spec.files.max(1) {
            let rows = per_file.min(spec.rows.saturating_sub(first_id - 1));
            let path = out.join(format!("dt={date}")).join(format!("part-{file:05}.parquet"));
            jobs.push((date_idx * spec.files.max(1) + file, path, first_id, rows, date.clone()));
            first_id += rows;
        }
    }
    jobs.par_iter()
        .map(|(file_idx, path, first_id, rows, date)| {
            write_file(path, spec, *file_idx as u64, *first_id as i64, *rows as usize, date)
        })
        .collect::<Result<Vec<()>, _>>()?;
    Ok(jobs.into_iter().map(|(_, path, ..)| path).collect())
}

#[derive(Debug, thiserror::Error)]
pub enum GenerateError {
    #[error("cannot write `{}`", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write `{}`", path.display())]
    Parquet {
        path: PathBuf,
        #[source]
        source: parquet::errors::ParquetError,
    },
    #[error("`{0}` is not a date of the form YYYY-MM-DD")]
    BadDate(String),
}

fn write_file(
    path: &Path,
    spec: &LakeSpec,
    file_idx: u64,
    first_id: i64,
    rows: usize,
    date: &str,
) -> Result<(), GenerateError> {
    let today = days_since_epoch(date).ok_or_else(|| GenerateError::BadDate(date.to_string()))?;
    let io_error = |source| GenerateError::Io {
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(path.parent().expect("files live in a partition folder")).map_err(io_error)?;
    let file = File::create(path).map_err(io_error)?;
    let parquet_error = |source| GenerateError::Parquet {
        path: path.to_path_buf(),
        source,
    };
    let properties = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_max_row_group_row_count(Some(spec.row_group_rows.max(1)))
        .build();
    let mut writer = ArrowWriter::try_new(file, schema(spec.label), Some(properties)).map_err(parquet_error)?;
    let mut done = 0;
    let mut row_group = 0u64;
    while done < rows {
        let n = spec.row_group_rows.max(1).min(rows - done);
        let stream_seed = spec.seed ^ (file_idx << 32) ^ row_group;
        let batch = customer_batch(stream_seed, first_id + done as i64, n, spec.label, today);
        writer.write(&batch).map_err(parquet_error)?;
        writer.flush().map_err(parquet_error)?;
        done += n;
        row_group += 1;
    }
    writer.close().map_err(parquet_error)?;
    Ok(())
}

/// The table's schema; nullable everywhere, as pyarrow writes it.
pub fn schema(label: bool) -> SchemaRef {
    let dictionary = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
    let mut fields = vec![
        Field::new("customer_id", DataType::Int64, true),
        Field::new("signup_date", DataType::Date32, true),
        Field::new("region", dictionary.clone(), true),
        Field::new("segment", dictionary, true),
        Field::new("age", DataType::Int32, true),
        Field::new("tenure_days", DataType::Int32, true),
        Field::new("orders_30d", DataType::Int32, true),
        Field::new("orders_90d", DataType::Int32, true),
        Field::new("orders_365d", DataType::Int32, true),
        Field::new("spend_30d", DataType::Float64, true),
        Field::new("spend_90d", DataType::Float64, true),
        Field::new("spend_365d", DataType::Float64, true),
        Field::new("avg_basket", DataType::Float64, true),
        Field::new("email_opens_30d", DataType::Int32, true),
        Field::new("email_clicks_30d", DataType::Int32, true),
        Field::new("days_since_last_order", DataType::Int32, true),
        Field::new("app_user", DataType::Boolean, true),
        Field::new("loyalty_tier", DataType::Int8, true),
    ];
    fields.extend((0..N_BEHAVIOURAL).map(|j| Field::new(format!("b{j:02}"), DataType::Float32, true)));
    if label {
        fields.push(Field::new("converted", DataType::Boolean, true));
    }
    Arc::new(Schema::new(fields))
}

/// `n` customers with ids from `first_id`, drawn from the stream `seed`;
/// `today` (days since 1970-01-01) anchors the signup dates.
pub fn customer_batch(seed: u64, first_id: i64, n: usize, label: bool, today: i32) -> RecordBatch {
    let mut rng = Rng::new(seed);
    let mut columns = CustomerColumns::with_capacity(n);
    for k in 0..n {
        columns.push_row(&mut rng, first_id + k as i64, label, today);
    }
    columns.finish(label)
}

#[derive(Default)]
struct CustomerColumns {
    id: Vec<i64>,
    signup: Vec<i32>,
    region: Vec<i32>,
    segment: Vec<i32>,
    age: Vec<Option<i32>>,
    tenure: Vec<i32>,
    orders: [Vec<i32>; 3],
    spend: [Vec<f64>; 3],
    basket: Vec<Option<f64>>,
    opens: Vec<i32>,
    clicks: Vec<i32>,
    days_since_last_order: Vec<Option<i32>>,
    app: Vec<bool>,
    tier: Vec<i8>,
    behavioural: Vec<Vec<Option<f32>>>,
    converted: Vec<bool>,
}

impl CustomerColumns {
    fn with_capacity(n: usize) -> Self {
        CustomerColumns {
            behavioural: (0..N_BEHAVIOURAL).map(|_| Vec::with_capacity(n)).collect(),
            ..Default::default()
        }
    }

    fn push_row(&mut self, rng: &mut Rng, id: i64, label: bool, today: i32) {
        let region = rng.below(REGIONS.len() as u64) as i32;
        let segment = rng.below(SEGMENTS.len() as u64) as i32;
        let age = rng.normal(42.0, 13.0).clamp(18.0, 95.0) as i32;
        let age_null = rng.uniform() < 0.04;
        let tenure = rng.gamma2(400.0) as i32;
        let o30 = rng.poisson(0.8) as i32;
        let o90 = o30 + rng.poisson(1.6) as i32;
        let o365 = o90 + rng.poisson(4.0) as i32;
        let basket = rng.normal(3.2, 0.6).exp();
        let basket_null = rng.uniform() < 0.07;
        let opens = rng.poisson(3.0) as i32;
        let clicks = (0..opens).filter(|_| rng.uniform() < 0.2).count() as i32;
        let dslo = rng.exponential(60.0) as i32;
        let app = rng.uniform() < 0.35;
        let tier = rng.below(5) as i8;
        let mut behavioural = [0f32; N_BEHAVIOURAL];
        for value in behavioural.iter_mut() {
            *value = rng.normal(0.0, 1.0) as f32;
        }
        for (j, value) in behavioural.iter().enumerate() {
            let null = rng.uniform() < 0.02;
            self.behavioural[j].push((!null).then_some(*value));
        }
        if label {
            let b = |j: usize| f64::from(behavioural[j]);
            let z = -2.0 + 0.6 * f64::from(o30).ln_1p() + 0.3 * f64::from(o90).ln_1p()
                - 0.004 * f64::from(dslo.min(400))
                + 0.25 * f64::from(clicks)
                + 0.4 * f64::from(u8::from(app))
                + 0.15 * f64::from(tier)
                - 0.01 * f64::from((age - 35).abs())
                + 0.3 * f64::from(u8::from(segment == 3))
                - 0.5 * f64::from(u8::from(segment == 4))
                + 0.2 * f64::from(u8::from(region % 3 == 0))
                + b(0) * 0.5
                - b(1) * 0.3
                + 0.4 * (b(2) * 2.0).sin()
                + 0.2 * b(3) * b(4);
            let p = 1.0 / (1.0 + (-z).exp());
            self.converted.push(rng.uniform() < p);
        }
        self.id.push(id);
        self.signup.push(today - tenure);
        self.region.push(region);
        self.segment.push(segment);
        self.age.push((!age_null).then_some(age));
        self.tenure.push(tenure);
        for (column, value) in self.orders.iter_mut().zip([o30, o90, o365]) {
            column.push(value);
        }
        for (column, orders) in self.spend.iter_mut().zip([o30, o90, o365]) {
            column.push(f64::from(orders) * basket);
        }
        self.basket.push((!basket_null).then_some(basket));
        self.opens.push(opens);
        self.clicks.push(clicks);
        self.days_since_last_order.push((o365 != 0).then_some(dslo));
        self.app.push(app);
        self.tier.push(tier);
    }

    fn finish(self, label: bool) -> RecordBatch {
        let dictionary = |keys: Vec<i32>, values: &[&str]| -> ArrayRef {
            Arc::new(
                DictionaryArray::<Int32Type>::try_new(keys.into(), Arc::new(StringArray::from(values.to_vec())))
                    .expect("keys are in range"),
            )
        };
        let [o30, o90, o365] = self.orders;
        let [s30, s90, s365] = self.spend;
        let mut columns: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(self.id)),
            Arc::new(Date32Array::from(self.signup)),
            dictionary(self.region, &REGIONS),
            dictionary(self.segment, &SEGMENTS),
            Arc::new(Int32Array::from(self.age)),
            Arc::new(Int32Array::from(self.tenure)),
            Arc::new(Int32Array::from(o30)),
            Arc::new(Int32Array::from(o90)),
            Arc::new(Int32Array::from(o365)),
            Arc::new(Float64Array::from(s30)),
            Arc::new(Float64Array::from(s90)),
            Arc::new(Float64Array::from(s365)),
            Arc::new(Float64Array::from(self.basket)),
            Arc::new(Int32Array::from(self.opens)),
            Arc::new(Int32Array::from(self.clicks)),
            Arc::new(Int32Array::from(self.days_since_last_order)),
            Arc::new(BooleanArray::from(self.app)),
            Arc::new(Int8Array::from(self.tier)),
        ];
        columns.extend(
            self.behavioural
                .into_iter()
                .map(|b| Arc::new(Float32Array::from(b)) as ArrayRef),
        );
        if label {
            columns.push(Arc::new(BooleanArray::from(self.converted)));
        }
        RecordBatch::try_new(schema(label), columns).expect("columns match the schema")
    }
}

/// Days since 1970-01-01 of a `YYYY-MM-DD` date.
pub fn days_since_epoch(date: &str) -> Option<i32> {
    let mut parts = date.splitn(3, '-');
    let year: i64 = parts.next()?.parse().ok()?;
    let month: i64 = parts.next()?.parse().ok()?;
    let day: i64 = parts.next()?.parse().ok()?;
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) {
        return None;
    }
    // Howard Hinnant's days-from-civil algorithm.
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    i32::try_from(era * 146_097 + doe - 719_468).ok()
}

/// xoshiro256** seeded through SplitMix64: small, fast, and its sequence is
/// fixed here rather than by a crate's version.
pub struct Rng {
    state: [u64; 4],
    spare_normal: Option<f64>,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            state: [next(), next(), next(), next()],
            spare_normal: None,
        }
    }

    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.state;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform integer in [0, n).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Normal by the Box-Muller transform.
    pub fn normal(&mut self, mean: f64, std_dev: f64) -> f64 {
        if let Some(z) = self.spare_normal.take() {
            return mean + std_dev * z;
        }
        let u1 = 1.0 - self.uniform(); // (0, 1]: ln is finite
        let u2 = self.uniform();
        let radius = (-2.0 * u1.ln()).sqrt();
        self.spare_normal = Some(radius * (2.0 * PI * u2).sin());
        mean + std_dev * radius * (2.0 * PI * u2).cos()
    }

    /// Gamma(shape 2, `scale`): the sum of two exponentials.
    pub fn gamma2(&mut self, scale: f64) -> f64 {
        self.exponential(scale) + self.exponential(scale)
    }

    pub fn exponential(&mut self, mean: f64) -> f64 {
        -(1.0 - self.uniform()).ln() * mean
    }

    /// Poisson by Knuth's product of uniforms (the means used here are small).
    pub fn poisson(&mut self, mean: f64) -> u32 {
        let limit = (-mean).exp();
        let mut product = self.uniform();
        let mut count = 0;
        while product > limit {
            product *= self.uniform();
            count += 1;
        }
        count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(days_since_epoch("1970-01-01"), Some(0));
        assert_eq!(days_since_epoch("2026-11-25"), Some(20_782));
        assert_eq!(days_since_epoch("2000-03-01"), Some(11_017));
        assert_eq!(days_since_epoch("2026-13-01"), None);
    }

    #[test]
    fn distributions_have_their_moments() {
        let mut rng = Rng::new(1);
        let n = 200_000;
        let mean = |f: &mut dyn FnMut() -> f64| (0..n).map(|_| f()).sum::<f64>() / n as f64;
        assert!((mean(&mut || rng.normal(42.0, 13.0)) - 42.0).abs() < 0.2);
        assert!((mean(&mut || rng.gamma2(400.0)) - 800.0).abs() < 8.0);
        assert!((mean(&mut || f64::from(rng.poisson(4.0))) - 4.0).abs() < 0.05);
        assert!((mean(&mut || rng.exponential(60.0)) - 60.0).abs() < 1.0);
        assert!((mean(&mut || rng.below(5) as f64) - 2.0).abs() < 0.02);
    }

    #[test]
    fn same_seed_same_rows() {
        let a = customer_batch(3, 1, 500, true, 20_782);
        let b = customer_batch(3, 1, 500, true, 20_782);
        assert_eq!(a, b);
        assert_ne!(a, customer_batch(4, 1, 500, true, 20_782));
        assert_eq!(a.num_columns(), 39); // as gen_customers.py: 18 + 20 behavioural + label
    }
}
