//! The policy file: a campaign's arms with their Beta posteriors, the
//! holdout, the exploration floor and the salt, versioned, with the history
//! of every update. TOML or JSON (by extension: `.json` is JSON, anything
//! else TOML), written back in the format it was read in.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::datagen::Rng;

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read policy `{}`", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("policy `{}` is not valid {format}: {problem}", path.display())]
    Parse {
        path: PathBuf,
        format: &'static str,
        problem: String,
    },
    #[error("policy `{}` is invalid: `{field}` {problem}", path.display())]
    Invalid {
        path: PathBuf,
        field: String,
        problem: String,
    },
    #[error("cannot write policy `{}`", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "policy `{}` changed while this run read its outcomes (another `feedback`?); nothing was written: run \
         again on the new version",
        path.display()
    )]
    Changed { path: PathBuf },
}

/// The `format` a policy file declares.
pub const POLICY_FORMAT: &str = "lakescore-policy/1";

fn default_format() -> String {
    POLICY_FORMAT.to_string()
}

fn default_id_column() -> String {
    "customer_id".to_string()
}

fn default_draws() -> u32 {
    100_000
}

/// One variant of the campaign.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Arm {
    pub name: String,
    /// Beta posterior of the arm's conversion rate (the prior until the
    /// first feedback).
    pub alpha: f64,
    pub beta: f64,
    /// A model whose score is the arm's expected value for a customer,
    /// written next to each assignment (path relative to the policy file).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<PathBuf>,
}

/// What one feedback run did to the policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryEntry {
    /// The version the update produced.
    pub version: u64,
    pub updated_at: String,
    /// The outcome tables read, and the SHA-256 of each of their files' bytes
    /// (not of the name): a file applied once is refused after.
    pub outcomes: Vec<PathBuf>,
    pub outcome_files: Vec<String>,
    /// Per arm, in arm order: outcomes counted and conversions among them.
    pub sends: Vec<u64>,
    pub conversions: Vec<u64>,
    pub holdout_sends: u64,
    pub holdout_conversions: u64,
    /// Outcomes left out, counted.
    pub duplicates: u64,
    pub unknown_arms: u64,
    pub missing_values: u64,
    /// The posteriors after the update, per arm: (alpha, beta).
    pub posteriors: Vec<(f64, f64)>,
    /// The allocation shares the new version gives.
    pub shares: Vec<f64>,
}

/// A campaign's policy, one version of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    #[serde(default = "default_format")]
    pub format: String,
    pub campaign: String,
    pub version: u64,
    /// Secret mixed into every customer's hash: the holdout and the draws
    /// depend on it, so a new salt is a new experiment.
    pub salt: String,
    /// Share of customers held out of every arm, permanently (by the salted
    /// hash of their id alone).
    pub holdout_share: f64,
    /// The least share any arm gets, so that every arm keeps being explored.
    pub exploration_floor: f64,
    #[serde(default = "default_id_column")]
    pub id_column: String,
    /// Monte Carlo draws for the probability that each arm is best.
    #[serde(default = "default_draws")]
    pub draws: u32,
    pub arms: Vec<Arm>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<HistoryEntry>,
}

/// A policy and where it came from.
#[derive(Debug, Clone)]
pub struct PolicyFile {
    pub path: PathBuf,
    pub policy: Policy,
    /// SHA-256 of the file's bytes.
    pub sha256: String,
}

fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e.eq_ignore_ascii_case("json"))
}

/// An exclusive lock on a policy, held by `feedback` from reading it to
/// writing its next version, so that two updates take turns: the second then
/// reads the version the first wrote. The lock is `flock` on a file next to
/// the policy (`.<name>.lock`), which, unlike the policy, is never replaced.
pub struct PolicyLock {
    _file: std::fs::File,
}

impl PolicyLock {
    /// Waits for the lock of the policy at `path`.
    pub fn acquire(path: &Path) -> Result<PolicyLock, PolicyError> {
        use std::os::fd::AsRawFd;
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let lock_path = path.with_file_name(format!(".{name}.lock"));
        let error = |source| PolicyError::Write {
            path: lock_path.clone(),
            source,
        };
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(error)?;
        // SAFETY: flock on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(error(std::io::Error::last_os_error()));
        }
        Ok(PolicyLock { _file: file })
    }
}

/// The most arms a policy may have.
pub const MAX_ARMS: usize = 1000;

/// The largest policy file read from object storage.
const MAX_POLICY_BYTES: u64 = 64 << 20;

impl PolicyFile {
    pub fn read(path: &Path) -> Result<PolicyFile, PolicyError> {
        let text = path.to_string_lossy();
        let bytes = match crate::store::is_remote(&text) {
            true => crate::store::read_object(&text, MAX_POLICY_BYTES, "a policy").map_err(|error| PolicyError::Read {
                path: path.to_path_buf(),
                source: std::io::Error::other(error.to_string()),
            }),
            false => std::fs::read(path).map_err(|source| PolicyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }?;
        PolicyFile::from_bytes(path, &bytes)
    }

    /// A policy from its file's bytes (`path` names it, and its extension
    /// says JSON or TOML).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<PolicyFile, PolicyError> {
        let policy: Policy = match is_json(path) {
            true => serde_json::from_slice(bytes).map_err(|e| PolicyError::Parse {
                path: path.to_path_buf(),
                format: "JSON",
                problem: e.to_string(),
            })?,
            false => {
                let text = String::from_utf8_lossy(bytes);
                toml::from_str(&text).map_err(|e| PolicyError::Parse {
                    path: path.to_path_buf(),
                    format: "TOML",
                    problem: e.to_string().trim().replace('\n', " "),
                })?
            }
        };
        policy.validate(path)?;
        Ok(PolicyFile {
            path: path.to_path_buf(),
            policy,
            sha256: crate::util::sha256_hex(bytes),
        })
    }

    /// Writes `next`, the next version of this policy, to `target`: only if
    /// the file read is still what it was (else `Changed`, so that two
    /// updates never both apply to one version), with arm model paths
    /// relative to the policy's folder rewritten for `target`'s.
    pub fn write_next(&self, next: &Policy, target: &Path) -> Result<(), PolicyError> {
        let now = std::fs::read(&self.path).map_err(|source| PolicyError::Read {
            path: self.path.clone(),
            source,
        })?;
        if crate::util::sha256_hex(&now) != self.sha256 {
            return Err(PolicyError::Changed {
                path: self.path.clone(),
            });
        }
        let mut next = next.clone();
        let folder = |p: &Path| {
            std::path::absolute(p)
                .ok()
                .and_then(|a| a.parent().map(Path::to_path_buf))
        };
        if folder(&self.path) != folder(target) {
            for arm in &mut next.arms {
                if let Some(model) = self.model_path(arm) {
                    arm.model = Some(std::path::absolute(&model).unwrap_or(model));
                }
            }
        }
        next.write(target)
    }

    /// An arm's model, relative to the policy file.
    pub fn model_path(&self, arm: &Arm) -> Option<PathBuf> {
        let model = arm.model.as_ref()?;
        Some(match self.path.parent() {
            Some(folder) if model.is_relative() => folder.join(model),
            _ => model.clone(),
        })
    }
}

impl Policy {
    /// Checks what the file's types cannot.
    pub fn validate(&self, path: &Path) -> Result<(), PolicyError> {
        let invalid = |field: &str, problem: String| PolicyError::Invalid {
            path: path.to_path_buf(),
            field: field.to_string(),
            problem,
        };
        if self.format != POLICY_FORMAT {
            return Err(invalid(
                "format",
                format!("is `{}`; this lakescore reads `{POLICY_FORMAT}`", self.format),
            ));
        }
        if self.arms.is_empty() || self.arms.len() > MAX_ARMS {
            return Err(invalid(
                "arms",
                format!("has {} arms; a campaign has 1 to {MAX_ARMS}", self.arms.len()),
            ));
        }
        if self.salt.trim().is_empty() {
            return Err(invalid(
                "salt",
                "is empty; choose a secret string per experiment".into(),
            ));
        }
        if !(0.0..1.0).contains(&self.holdout_share) {
            return Err(invalid(
                "holdout_share",
                format!("is {}; it must be in [0, 1)", self.holdout_share),
            ));
        }
        let k = self.arms.len() as f64;
        if !(self.exploration_floor >= 0.0 && self.exploration_floor * k <= 1.0) {
            return Err(invalid(
                "exploration_floor",
                format!(
                    "is {}; with {} arms it must be in [0, {}] (every arm gets at least the floor)",
                    self.exploration_floor,
                    self.arms.len(),
                    1.0 / k
                ),
            ));
        }
        if self.draws == 0 {
            return Err(invalid("draws", "must be at least 1".into()));
        }
        for (i, arm) in self.arms.iter().enumerate() {
            let field = |key: &str| format!("arms[{i}].{key}");
            if arm.name.is_empty() {
                return Err(invalid(&field("name"), "is empty".into()));
            }
            if self.arms[..i].iter().any(|a| a.name == arm.name) {
                return Err(invalid(&field("name"), format!("`{}` names two arms", arm.name)));
            }
            for (key, value) in [("alpha", arm.alpha), ("beta", arm.beta)] {
                if !(value.is_finite() && value > 0.0) {
                    return Err(invalid(
                        &field(key),
                        format!("is {value}; Beta parameters are positive"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// The seed of this version's Monte Carlo draws.
    fn seed(&self) -> u64 {
        crate::bandit::hash_bytes(&[self.salt.as_bytes(), b"thompson", &self.version.to_le_bytes()])
    }

    /// Thompson sampling's shares: the probability that each arm's rate is
    /// the highest, by `draws` seeded Monte Carlo draws from the posteriors
    /// (ties go to the first arm). The draws use this crate's own generator
    /// (`datagen::Rng`, pinned by its tests) and the platform's `ln`, `sin`,
    /// `cos` and `powf`: the same build gives the same shares, always.
    pub fn probability_best(&self) -> Vec<f64> {
        let mut rng = Rng::new(self.seed());
        let mut wins = vec![0u64; self.arms.len()];
        for _ in 0..self.draws {
            let mut best = (0, f64::NEG_INFINITY);
            for (k, arm) in self.arms.iter().enumerate() {
                let rate = beta(&mut rng, arm.alpha, arm.beta);
                if rate > best.1 {
                    best = (k, rate);
                }
            }
            wins[best.0] += 1;
        }
        wins.iter().map(|&w| w as f64 / f64::from(self.draws)).collect()
    }

    /// The allocation shares among customers not held out: each arm gets the
    /// floor, and the rest in proportion to its probability of being best.
    pub fn shares(&self) -> Vec<f64> {
        self.shares_of(&self.probability_best())
    }

    /// The shares for these probabilities of being best.
    pub fn shares_of(&self, probability_best: &[f64]) -> Vec<f64> {
        let floor = self.exploration_floor;
        let free = 1.0 - floor * self.arms.len() as f64;
        probability_best.iter().map(|p| floor + free * p).collect()
    }

    /// The policy as its file format writes it.
    pub fn to_text(&self, path: &Path) -> String {
        match is_json(path) {
            true => serde_json::to_string_pretty(self).expect("policies serialize") + "\n",
            false => toml::to_string(self).expect("policies serialize"),
        }
    }

    /// Writes the policy to `path`, atomically.
    pub fn write(&self, path: &Path) -> Result<(), PolicyError> {
        crate::util::write_atomically(path, self.to_text(path).as_bytes()).map_err(|source| PolicyError::Write {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Gamma(shape, 1), by Marsaglia and Tsang's method (shape < 1 boosted by
/// a uniform power).
fn gamma(rng: &mut Rng, shape: f64) -> f64 {
    if shape < 1.0 {
        let u = 1.0 - rng.uniform(); // (0, 1]
        return gamma(rng, shape + 1.0) * u.powf(1.0 / shape);
    }
    let d = shape - 1.0 / 3.0;
    let c = 1.0 / (9.0 * d).sqrt();
    loop {
        let x = rng.normal(0.0, 1.0);
        let v = 1.0 + c * x;
        if v <= 0.0 {
            continue;
        }
        let v = v * v * v;
        let u = rng.uniform();
        if u < 1.0 - 0.0331 * x * x * x * x || u.ln() < 0.5 * x * x + d * (1.0 - v + v.ln()) {
            return d * v;
        }
    }
}

/// Beta(alpha, beta) as the ratio of two gammas. For tiny parameters both
/// gammas can underflow to 0; the draw is then the one with the larger
/// logarithm (`ln u / shape` decides which underflowed less), not NaN.
pub fn beta(rng: &mut Rng, alpha: f64, beta: f64) -> f64 {
    let x = gamma(rng, alpha);
    let y = gamma(rng, beta);
    match x + y {
        sum if sum > 0.0 => x / sum,
        _ => {
            let lx = (1.0 - rng.uniform()).ln() / alpha;
            let ly = (1.0 - rng.uniform()).ln() / beta;
            if lx >= ly { 1.0 } else { 0.0 }
        }
    }
}

#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub fn policy(arms: &[(f64, f64)]) -> Policy {
        Policy {
            format: POLICY_FORMAT.into(),
            campaign: "test".into(),
            version: 1,
            salt: "pepper".into(),
            holdout_share: 0.1,
            exploration_floor: 0.05,
            id_column: "customer_id".into(),
            draws: 20_000,
            arms: arms
                .iter()
                .enumerate()
                .map(|(i, &(alpha, beta))| Arm {
                    name: format!("arm{i}"),
                    alpha,
                    beta,
                    model: None,
                })
                .collect(),
            history: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tests_support::policy;

    #[test]
    fn beta_draws_have_the_right_mean_and_variance() {
        let mut rng = Rng::new(1);
        for (a, b) in [(2.0, 5.0), (0.5, 0.5), (30.0, 970.0)] {
            let n = 40_000;
            let draws: Vec<f64> = (0..n).map(|_| beta(&mut rng, a, b)).collect();
            let mean = draws.iter().sum::<f64>() / n as f64;
            let var = draws.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / n as f64;
            let (m, v) = (a / (a + b), a * b / ((a + b) * (a + b) * (a + b + 1.0)));
            assert!(
                (mean - m).abs() < 4.0 * (v / n as f64).sqrt() + 1e-9,
                "{a} {b}: mean {mean} vs {m}"
            );
            assert!((var / v - 1.0).abs() < 0.05, "{a} {b}: var {var} vs {v}");
        }
    }

    #[test]
    fn shares_follow_the_posteriors_keep_the_floor_and_repeat() {
        let p = policy(&[(10.0, 990.0), (40.0, 960.0), (20.0, 980.0)]);
        let shares = p.shares();
        assert!((shares.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        assert!(shares[1] > 0.8, "{shares:?}");
        assert!(shares.iter().all(|&s| s >= 0.05));
        assert_eq!(shares, p.shares(), "seeded: the same version gives the same shares");
        // Equal posteriors: equal shares, within Monte Carlo error.
        let even = policy(&[(1.0, 1.0), (1.0, 1.0)]).shares();
        assert!((even[0] - 0.5).abs() < 0.02, "{even:?}");
    }

    #[test]
    fn invalid_policies_name_the_field() {
        let path = Path::new("p.toml");
        let mut p = policy(&[(1.0, 1.0), (1.0, 1.0)]);
        p.exploration_floor = 0.6;
        let e = p.validate(path).unwrap_err().to_string();
        assert!(
            e.contains("`exploration_floor` is 0.6; with 2 arms it must be in [0, 0.5]"),
            "{e}"
        );
        let mut p = policy(&[(1.0, 1.0), (0.0, 1.0)]);
        p.arms[1].name = "arm0".into();
        let e = p.validate(path).unwrap_err().to_string();
        assert!(e.contains("`arms[1].name` `arm0` names two arms"), "{e}");
        let mut p = policy(&[(1.0, -1.0)]);
        p.holdout_share = 0.0;
        let e = p.validate(path).unwrap_err().to_string();
        assert!(e.contains("`arms[0].beta` is -1"), "{e}");
    }

    #[test]
    fn tiny_beta_parameters_draw_numbers_not_nan() {
        let mut rng = Rng::new(3);
        for _ in 0..1000 {
            let draw = beta(&mut rng, 1e-3, 1e-3);
            assert!((0.0..=1.0).contains(&draw), "{draw}");
        }
        // The shares of a policy are pinned: a change here reassigns customers.
        let p = policy(&[(3.0, 97.0), (5.0, 95.0)]);
        assert_eq!(p.probability_best(), vec![0.22645, 0.77355]);
    }

    #[test]
    fn the_next_version_is_written_only_over_the_version_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        let p = policy(&[(1.0, 2.0), (3.0, 4.0)]);
        p.write(&path).unwrap();
        let read = PolicyFile::read(&path).unwrap();
        let _lock = PolicyLock::acquire(&path).unwrap();
        let mut next = read.policy.clone();
        next.version += 1;
        // Someone else wrote a version meanwhile.
        let mut other = p.clone();
        other.version = 9;
        other.write(&path).unwrap();
        let e = read.write_next(&next, &path).unwrap_err().to_string();
        assert!(e.contains("changed while this run read its outcomes"), "{e}");
        assert_eq!(PolicyFile::read(&path).unwrap().policy.version, 9);
        // Written elsewhere, relative model paths are made absolute.
        let mut with_model = p.clone();
        with_model.arms[0].model = Some("m.json".into());
        with_model.write(&path).unwrap();
        let read = PolicyFile::read(&path).unwrap();
        let target = dir.path().join("next").join("p.toml");
        std::fs::create_dir_all(target.parent().unwrap()).unwrap();
        read.write_next(&read.policy, &target).unwrap();
        let written = PolicyFile::read(&target).unwrap();
        assert_eq!(
            written.policy.arms[0].model.as_deref(),
            Some(dir.path().join("m.json").as_path())
        );
    }

    #[test]
    fn toml_and_json_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let p = policy(&[(1.0, 2.0), (3.0, 4.0)]);
        for name in ["p.toml", "p.json"] {
            let path = dir.path().join(name);
            p.write(&path).unwrap();
            assert_eq!(PolicyFile::read(&path).unwrap().policy, p, "{name}");
        }
        std::fs::write(dir.path().join("bad.toml"), "campaign = 3\n").unwrap();
        let e = PolicyFile::read(&dir.path().join("bad.toml")).unwrap_err().to_string();
        assert!(e.contains("is not valid TOML"), "{e}");
    }
}
