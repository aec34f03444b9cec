//! The output side of a run: which partitions resume keeps, scoring the
//! rest into staging and judging the pass, then publishing the staged
//! partitions and side tables through the run's transaction.

use super::pass::score_files;
use super::*;

/// Partitions `--mode resume` keeps, with their records.
pub(crate) type ReusedPartitions = Vec<(PathBuf, PartitionRecord)>;

/// A partition to write: its folder, its resume key, and its files (indices
/// into the plan).
pub(crate) type PartitionToWrite = (PathBuf, String, Vec<usize>);

/// The table's partitions, split into those `--mode resume` keeps and those
/// to write. A partition's key digests lakescore's version, `identity` (the
/// bytes of the model, or of the policy), `options` and every input file's
/// path, size and footer.
pub(crate) fn partitions_to_write(
    plan: &TablePlan,
    transaction: &dyn Committer,
    identity: &str,
    options: &str,
) -> (ReusedPartitions, Vec<PartitionToWrite>) {
    let files_by_partition = commit::partitions_of(plan.files.iter().map(|f| f.listed.relative_path.as_path()));
    let file_index: BTreeMap<&Path, usize> = plan
        .files
        .iter()
        .enumerate()
        .map(|(i, f)| (f.listed.relative_path.as_path(), i))
        .collect();
    let mut reused = Vec::new();
    let mut to_write = Vec::new();
    for (partition, files) in &files_by_partition {
        let indices: Vec<usize> = files.iter().map(|f| file_index[f.as_path()]).collect();
        let inputs: Vec<(&Path, u64, &str)> = indices
            .iter()
            .map(|&i| {
                let f = &plan.files[i];
                (
                    f.listed.relative_path.as_path(),
                    f.file.size_bytes,
                    f.file.footer_fingerprint.as_str(),
                )
            })
            .collect();
        let key = commit::partition_key(identity, options, &inputs);
        match transaction.reusable_partition(partition, &key) {
            Some(record) => {
                tracing::info!(partition = %partition.display(), "partition already committed; reusing it");
                reused.push((partition.clone(), record));
            }
            None => to_write.push((partition.clone(), key, indices)),
        }
    }
    (reused, to_write)
}

/// The records of the partitions a run staged, from each file's (rows,
/// bytes) as written.
pub(crate) fn staged_records(
    plan: &TablePlan,
    to_write: Vec<PartitionToWrite>,
    written: &BTreeMap<usize, (u64, u64)>,
    run_id: &str,
) -> Vec<PartitionRecord> {
    to_write
        .into_iter()
        .map(|(partition, key, indices)| PartitionRecord {
            partition,
            key,
            run_id: run_id.to_string(),
            files: indices
                .iter()
                .map(|i| OutputFileRecord {
                    path: plan.files[*i].listed.relative_path.clone(),
                    rows: written[i].0,
                    bytes: written[i].1,
                })
                .collect(),
        })
        .collect()
}

/// Scores what resume cannot reuse into staging, and judges it. Returns the
/// pass, the staged partitions' records, and the reused partitions.
pub(super) fn stage_and_judge(
    pool: &rayon::ThreadPool,
    package: &Package,
    table: &PreparedTable,
    facts: &TableFacts,
    transaction: &mut dyn Committer,
    options: &RunOptions,
) -> Result<(Scored, Vec<PartitionRecord>, ReusedPartitions)> {
    let plan = &table.plan;
    let output_options = format!(
        "ids={:?};scores={:?};flags={}",
        plan.id_columns, table.score_columns, table.flags
    );
    let (reused, to_score) = partitions_to_write(plan, transaction, &package.output_identity, &output_options);

    let files: Vec<usize> = to_score
        .iter()
        .flat_map(|(_, _, indices)| indices.iter().copied())
        .collect();
    let destination = |relative: &Path| transaction.staged_path(relative);
    let side_paths = SidePaths {
        quarantine: transaction.staged_side_path("quarantine.parquet"),
        shadow: transaction.staged_side_path("shadow.parquet"),
    };
    let scored = score_files(
        pool,
        package,
        table,
        &files,
        Some(&destination),
        Some(&side_paths),
        options,
    )?;
    let mut scored = judge(package, table, facts, scored);
    if let Some(profile) = &scored.profile {
        let path = transaction.staged_side_path("profile.json");
        crate::util::write_atomically(&path, &profile.to_json()).map_err(|source| Error::Output {
            what: "run profile",
            path,
            source,
        })?;
    }
    let written: BTreeMap<usize, (u64, u64)> = files.iter().copied().zip(scored.files.iter().copied()).collect();
    let staged = staged_records(plan, to_score, &written, transaction.run_id());
    scored.files.clear();
    Ok((scored, staged, reused))
}

/// Side outputs a published run leaves in `OUT/_lakescore/`.
pub(super) struct SideOutputs {
    pub quarantine: Option<PathBuf>,
    pub profile: Option<PathBuf>,
    pub shadow: Option<PathBuf>,
}

/// Publishes the staged partitions, then the side outputs. Returns every
/// partition's record (reused ones included) and where the side outputs went.
pub(super) fn publish(
    scored: &Scored,
    staged: Vec<PartitionRecord>,
    reused: &[(PathBuf, PartitionRecord)],
    table: &PreparedTable,
    transaction: &mut dyn Committer,
) -> Result<(Vec<PartitionRecord>, SideOutputs)> {
    // Side outputs go first: once a partition is published, a crash and a
    // resume reuse it, so its quarantined rows must already be in OUT (in
    // this run's quarantine table, which its ledger entry names).
    let run_id = transaction.run_id().to_string();
    let quarantine = match scored.quarantined_rows {
        0 => None,
        _ => Some(transaction.publish_side("quarantine.parquet", "quarantine", &format!("{run_id}.parquet"))?),
    };
    let profile = match scored.profile {
        Some(_) => Some(transaction.publish_side("profile.json", "profiles", &format!("{run_id}.json"))?),
        None => None,
    };
    let shadow = match scored.shadow_rows {
        0 => None,
        _ => Some(transaction.publish_side("shadow.parquet", "shadow", &format!("{run_id}.parquet"))?),
    };
    let files_by_partition = commit::partitions_of(table.plan.files.iter().map(|f| f.listed.relative_path.as_path()));
    let all_partitions: Vec<&Path> = files_by_partition.keys().map(PathBuf::as_path).collect();
    transaction.publish(&staged, &all_partitions)?;
    let mut records = staged;
    records.extend(reused.iter().map(|(_, record)| record.clone()));
    records.sort_by(|a, b| a.partition.cmp(&b.partition));
    Ok((
        records,
        SideOutputs {
            quarantine,
            profile,
            shadow,
        },
    ))
}
