//! Which kernel runs each float32 tree on this CPU: the byte kernel
//! ([`super::binned`]) where a tree fits it, else the gather kernel of the
//! widest instruction set ([`super::simd`]), else the scalar evaluator. The
//! widest set the kernels may use can be capped with `LAKESCORE_SIMD`, so
//! that every path can be tested and measured on whatever CPU runs it.

use std::fmt;
use std::sync::OnceLock;

use super::binned::BinnedForest;
use super::kernel::{BlockViews, PerfectSource, SimdTrees};
use super::simd::{Isa, PerfectForest};

/// The environment variable that caps the tree kernels' instruction set.
pub const SIMD_ENV: &str = "LAKESCORE_SIMD";

/// The widest instruction set the tree kernels may use. Each level allows
/// the ones below it: `avx512` allows the AVX2 byte kernel too.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum SimdLevel {
    /// The scalar evaluator only (the reference every kernel is tested against).
    Scalar,
    Avx2,
    Avx512,
}

/// A process-wide cap set by the program (the command's `--simd`): it wins
/// over `LAKESCORE_SIMD`.
static CAP: OnceLock<SimdLevel> = OnceLock::new();

/// Caps the tree kernels of every model compiled from now on in this
/// process; false when a cap was already set (the first one stays).
pub fn cap(level: SimdLevel) -> bool {
    CAP.set(level).is_ok()
}

/// The cap in force: [`cap`]'s, else `LAKESCORE_SIMD`'s, else none (the
/// widest). (An unknown level in the variable is the command's to refuse;
/// here it caps nothing.)
pub fn level() -> SimdLevel {
    match CAP.get() {
        Some(&level) => level,
        None => SimdLevel::from_env().unwrap_or(SimdLevel::Avx512),
    }
}

/// A SIMD level's name that names no level.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{value:?} is not a SIMD level: use scalar, avx2 or avx512")]
pub struct UnknownSimdLevel {
    pub value: String,
}

impl SimdLevel {
    /// `scalar`, `avx2` or `avx512`.
    pub fn parse(value: &str) -> Result<SimdLevel, UnknownSimdLevel> {
        match value.trim().to_ascii_lowercase().as_str() {
            "scalar" => Ok(SimdLevel::Scalar),
            "avx2" => Ok(SimdLevel::Avx2),
            "avx512" | "avx-512" => Ok(SimdLevel::Avx512),
            _ => Err(UnknownSimdLevel {
                value: value.to_string(),
            }),
        }
    }

    /// The cap `LAKESCORE_SIMD` sets; no cap (the widest) when it is unset
    /// or empty.
    pub fn from_env() -> Result<SimdLevel, UnknownSimdLevel> {
        match std::env::var(SIMD_ENV) {
            Ok(value) if !value.trim().is_empty() => SimdLevel::parse(&value),
            _ => Ok(SimdLevel::Avx512),
        }
    }
}

impl fmt::Display for SimdLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
        })
    }
}

/// The shallowest tree the byte kernel takes where a gather kernel could.
pub const BYTES_MIN_DEPTH: u32 = 4;

/// Which kernels a program gets (tests and benches pick them one by one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KernelChoice {
    /// The byte kernel, for the trees it takes.
    pub bytes: bool,
    /// The gather kernel, for the trees left.
    pub gather: Option<Isa>,
}

impl KernelChoice {
    /// No vector kernel: every tree on the scalar evaluator.
    pub const SCALAR: KernelChoice = KernelChoice {
        bytes: false,
        gather: None,
    };

    /// The fastest kernels `level` allows on this CPU.
    pub fn best(level: SimdLevel) -> KernelChoice {
        let gather = match level {
            SimdLevel::Scalar => None,
            SimdLevel::Avx2 => Some(Isa::Avx2).filter(|isa| isa.available()),
            SimdLevel::Avx512 => Isa::best(),
        };
        KernelChoice {
            bytes: level >= SimdLevel::Avx2 && super::binned::available(),
            gather,
        }
    }
}

/// The vector kernels of a float32 program.
#[derive(Debug)]
pub struct CpuKernels {
    bytes: Option<BinnedForest>,
    gather: Option<PerfectForest>,
    n_trees: usize,
}

impl CpuKernels {
    /// The kernels of `choice` this CPU has, for the trees they take; none
    /// when no tree runs in one.
    pub fn new(source: &dyn PerfectSource, choice: KernelChoice) -> Option<CpuKernels> {
        // Trees of depth 3 or less do too little work to pay for the
        // binning: the gather kernels are faster there (Zen 4, depth 3:
        // 0.78 ns per row·tree with AVX-512, 0.95 with AVX2, 1.18 in bytes;
        // depth 4: 1.27, 1.87 and 1.40).
        let min_depth = if choice.gather.is_some() { BYTES_MIN_DEPTH } else { 1 };
        let bytes = choice.bytes.then(|| BinnedForest::new(source, min_depth)).flatten();
        // Every tree the byte kernel takes, the gather kernel would too: it is
        // only worth building when some tree is left.
        let gather = match &bytes {
            Some(bytes) if bytes.n_trees() == source.n_trees() => None,
            _ => choice.gather.and_then(|isa| PerfectForest::for_isa(source, isa)),
        };
        (bytes.is_some() || gather.is_some()).then(|| CpuKernels {
            bytes,
            gather,
            n_trees: source.n_trees(),
        })
    }

    /// The kernel each tree runs on, in words (reports and logs):
    /// `"avx2 bytes 280, avx512 gather 20, scalar 0 of 300 trees"`.
    pub fn describe(&self) -> String {
        describe_paths(self.n_trees, &self.counts())
    }

    fn counts(&self) -> Vec<(&'static str, usize)> {
        let mut counts = Vec::new();
        let mut left = self.n_trees;
        if let Some(bytes) = &self.bytes {
            counts.push(("avx2 bytes", bytes.n_trees()));
            left -= bytes.n_trees();
        }
        if let Some(gather) = &self.gather {
            let name = match gather.isa() {
                Isa::Avx512 => "avx512 gather",
                Isa::Avx2 => "avx2 gather",
            };
            let taken = (0..self.n_trees)
                .filter(|&t| gather.takes(t) && !self.bytes.as_ref().is_some_and(|b| b.takes(t)))
                .count();
            counts.push((name, taken));
            left -= taken;
        }
        counts.push(("scalar", left));
        counts
    }
}

/// `"avx2 bytes 280, scalar 20 of 300 trees"`, leaving out kernels with no
/// tree (but always naming one).
pub fn describe_paths(n_trees: usize, counts: &[(&str, usize)]) -> String {
    let named: Vec<String> = counts
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {n}"))
        .collect();
    match named.is_empty() {
        true => format!("scalar {n_trees} of {n_trees} trees"),
        false => format!("{} of {n_trees} trees", named.join(", ")),
    }
}

impl SimdTrees<f32> for CpuKernels {
    fn needs_row_major(&self) -> bool {
        self.bytes.as_ref().is_none_or(|b| b.n_trees() != self.n_trees)
    }

    fn bins_buffer(&self) -> Vec<i8> {
        self.bytes.as_ref().map_or_else(Vec::new, BinnedForest::bins_buffer)
    }

    fn begin_block(&self, columns: &[f32], n_rows: usize, bins: &mut [i8]) {
        if let Some(bytes) = &self.bytes {
            bytes.bin_block(columns, n_rows, bins);
        }
    }

    fn run(&self, tree: usize, block: &BlockViews<f32>, sums: &mut [f32]) -> bool {
        if let Some(bytes) = &self.bytes
            && bytes.run(tree, block.bins, sums)
        {
            return true;
        }
        self.gather
            .as_ref()
            .is_some_and(|gather| gather.run(tree, block.rows, block.columns, block.n_views, sums))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_parse_and_order() {
        assert_eq!(SimdLevel::parse("AVX2"), Ok(SimdLevel::Avx2));
        assert_eq!(SimdLevel::parse(" scalar "), Ok(SimdLevel::Scalar));
        assert_eq!(SimdLevel::parse("avx-512"), Ok(SimdLevel::Avx512));
        let err = SimdLevel::parse("sse4").unwrap_err();
        assert_eq!(
            err.to_string(),
            "\"sse4\" is not a SIMD level: use scalar, avx2 or avx512"
        );
        assert!(SimdLevel::Scalar < SimdLevel::Avx2 && SimdLevel::Avx2 < SimdLevel::Avx512);
        assert_eq!(KernelChoice::best(SimdLevel::Scalar), KernelChoice::SCALAR);
        assert_ne!(KernelChoice::best(SimdLevel::Avx2).gather, Some(Isa::Avx512));
    }

    #[test]
    fn paths_are_described_with_their_tree_counts() {
        assert_eq!(
            describe_paths(300, &[("avx2 bytes", 280), ("avx512 gather", 0), ("scalar", 20)]),
            "avx2 bytes 280, scalar 20 of 300 trees"
        );
        assert_eq!(describe_paths(3, &[]), "scalar 3 of 3 trees");
    }
}
