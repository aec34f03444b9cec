//! The integration tests: one binary, a module per topic. They drive the real
//! `lakescore` binary on tables made by the seeded generator or written here,
//! and read the output back with the parquet crate.

mod browser;
mod budgets;
mod citizen;
mod commit;
mod common;
mod contract;
mod crash;
mod delta;
mod delta_output;
mod disk;
mod embedded;
mod errors;
mod experiments;
mod fuzzed;
mod hostile;
mod imports;
mod layout;
mod memory;
mod mlflow;
mod object_storage;
mod onnx;
mod parity;
mod pushgateway;
mod reports;
mod scoring;
mod sources;
mod trees;
mod trend;
mod types;
