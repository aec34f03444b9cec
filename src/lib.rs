//! lakescore: score Parquet customer tables in a data lake with machine-learning
//! models, in parallel, and publish the scored table with an atomic commit.
//!
//! The data flows one way through the modules, each named after its stage:
//!
//! ```text
//! source -> plan -> scan -> features -> contract -> model -> contract -> sink -> commit
//!                                       (rules,              (guards,
//!                                        profiles)            score profiles)
//! ```
//!
//! A table's bytes come from a [`source::TableSource`] (a local folder, mapped
//! or read, or objects on S3, Azure or GCS through [`store`]); Arrow batches
//! already in memory go through [`scorer`] instead, the same per-block steps
//! without files. A run publishes through a [`commit::OutputTable`]: a local
//! folder (renames) or object storage (multipart uploads completed at the
//! commit).
//!
//! A model comes from a [`package`] (artifact, [`manifest`], contract,
//! reference profile);
//! [`profile`] and [`drift`] hold the statistics the [`contract`] judges by.
//!
//! [`pipeline`] is the only module that knows both the lake (Arrow, Parquet) and
//! the models; models see only [`model::FeatureBlock`]s of plain numbers.
//!
//! Experiments build on the same pass: [`evaluate`] and [`compare`] watch the
//! scores of a [`model::set::ModelSet`] (several models, one feature block);
//! [`campaign`] assigns campaign arms, learns from outcomes and estimates
//! policies off-line, with the arithmetic of [`bandit`].
//!
//! Around a run, for the pipelines that call it: [`lock`] (one writer per
//! output), [`cancel`] (a token that stops a run), [`progress`], [`sla`],
//! [`observe`] (metrics, lineage) and [`runs`] (the ledger, listed and drawn as a
//! trend across runs).
//!
//! The library keeps no process-wide mutable state: a run's settings, its
//! cancel token and its log context (a `tracing` span) travel with it, so a
//! program can run several at once. The command line, its settings layers,
//! the log format, the progress bar, signals and exit codes are the binary's
//! (`src/cli/`, the `cli` feature).
//! See ARCHITECTURE.md for the map and the invariants.

pub mod bandit;
pub mod campaign;
pub mod cancel;
pub mod commit;
pub mod compare;
pub mod contract;
pub mod datagen;
pub mod device;
pub mod drift;
pub mod error;
pub mod evaluate;
pub mod features;
pub mod html;
pub mod identity;
pub mod lock;
pub mod manifest;
pub mod mlflow;
pub mod model;
pub mod observe;
pub mod package;
pub mod pipeline;
pub mod plan;
pub mod profile;
pub mod progress;
pub mod report;
pub mod runs;
pub mod scan;
pub mod scorer;
pub mod sink;
pub mod sla;
pub mod source;
pub mod store;
pub mod test_hooks;
pub mod util;

pub use error::{Error, Result};
