//! Judging a pass: the contract's facts from outside the pass (column types,
//! the table's newest date), then rules, guards and drift from the merged
//! inspections, with example rows named by their ids.

use super::*;

/// The checks of a table whose schema already breaks a failing type rule:
/// the pass would be pointless (or impossible), so the run stops here.
pub(super) fn rejected_by_schema(contract: &Contract, facts: &TableFacts) -> Option<contract::Checks> {
    let failing = facts
        .types
        .iter()
        .any(|(rule, passed, _)| !passed && contract.rules[*rule].policy == contract::Policy::Fail);
    if !failing {
        return None;
    }
    let inspection = contract.inspection(&[], 0);
    let profile = TableProfile {
        format: crate::profile::PROFILE_FORMAT.into(),
        source: String::new(),
        rows: 0,
        columns: Vec::new(),
    };
    let mut checks = contract::judge_rules(contract, &inspection, &profile, facts, None, &|_| String::new());
    checks
        .rules
        .retain(|r| r.kind == "type" || r.kind == "min_rows" || r.kind == "freshness");
    checks.verdict = Status::Fail;
    Some(checks)
}

/// What the contract needs to know beyond the pass: column types from the
/// footers, the row count, and the table's newest date.
pub(super) fn table_facts(
    pool: &rayon::ThreadPool,
    table: &PreparedTable,
    contract: &Contract,
    options: &RunOptions,
) -> Result<TableFacts> {
    let mut facts = TableFacts {
        rows: table.plan.total_rows(),
        types: Vec::new(),
        newest: Err("no freshness rule".into()),
        as_of: options.as_of(),
    };
    for &(rule, feature, kind) in &contract.type_rules {
        let column = &contract.columns[feature];
        let mismatch = table.plan.files.iter().find_map(|file| {
            let root = file.feature_roots[feature];
            let data_type = file.file.schema().field(root).data_type().clone();
            (!is_kind(&data_type, kind)).then(|| (file.listed.relative_path.clone(), data_type))
        });
        let (passed, detail) = match mismatch {
            None => (true, format!("`{column}` is {} in every file", kind.name())),
            Some((path, data_type)) => (
                false,
                format!(
                    "`{column}` is {data_type} in `{}`; the contract says {}",
                    path.display(),
                    kind.name()
                ),
            ),
        };
        facts.types.push((rule, passed, detail));
    }
    if let Some(freshness) = &contract.freshness {
        facts.newest = match &freshness.source {
            contract::FreshnessSource::Partition(key) => newest_partition(&table.plan, key),
            contract::FreshnessSource::Column(column) => pool.install(|| newest_in_column(&table.plan, column))?,
        };
    }
    Ok(facts)
}

pub(crate) fn is_kind(data_type: &DataType, kind: ColumnKind) -> bool {
    use DataType::*;
    match data_type {
        Dictionary(_, values) => is_kind(values, kind),
        _ => match kind {
            ColumnKind::Integer => data_type.is_integer(),
            ColumnKind::Float => {
                data_type.is_floating()
                    || matches!(
                        data_type,
                        Decimal32(..) | Decimal64(..) | Decimal128(..) | Decimal256(..)
                    )
            }
            ColumnKind::Numeric => features::is_numeric(data_type),
            ColumnKind::Boolean => matches!(data_type, Boolean),
            ColumnKind::String => matches!(data_type, Utf8 | LargeUtf8 | Utf8View),
        },
    }
}

/// The newest value of Hive key `key` over all files, as a date or
/// timestamp; or which file has no such partition value, or one that is not
/// a date.
fn newest_partition(plan: &TablePlan, key: &str) -> Result<(i64, String), String> {
    let mut newest: Option<(i64, String)> = None;
    for file in &plan.files {
        let path = file.listed.relative_path.display();
        let value = file
            .listed
            .partition_values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
            .ok_or_else(|| format!("`{path}` is not under a `{key}=` partition"))?;
        let instant = crate::util::parse_instant(value)
            .ok_or_else(|| format!("`{path}`: partition {key}={value} is not a date or timestamp"))?;
        if newest.as_ref().is_none_or(|(n, _)| instant > *n) {
            newest = Some((instant, format!("partition {key}={value}")));
        }
    }
    newest.ok_or_else(|| "the table has no files to date".to_string())
}

/// The newest value of a date or timestamp column, over every row group (or
/// why there is none).
fn newest_in_column(plan: &TablePlan, column: &str) -> Result<Result<(i64, String), String>> {
    use rayon::prelude::*;
    let units = plan.work_units();
    let newest_per_unit = units
        .par_iter()
        .map(|unit| {
            let file = &plan.files[unit.file_idx].file;
            let schema = file.schema();
            let Ok(root) = schema.index_of(column) else {
                return Err(Error::Usage(format!(
                    "the contract's freshness column `{column}` is not in `{}`",
                    file.path.display()
                )));
            };
            let projection = ProjectionMask::roots(file.metadata.parquet_schema(), [root]);
            if unit.n_rows == 0 {
                return Ok(None);
            }
            let batch = file.read_columns(unit.row_group, &projection)?;
            newest_of_column(batch.column(0), column, &file.path.display().to_string())
        })
        .collect::<Result<Vec<Option<i64>>>>()?;
    Ok(newest_fact(column, newest_per_unit.into_iter().flatten().max()))
}

/// The freshness fact of `column` whose newest value is `newest`: the
/// instant and how reports name it, or why there is none.
pub(crate) fn newest_fact(column: &str, newest: Option<i64>) -> Result<(i64, String), String> {
    newest
        .map(|newest| {
            (
                newest,
                format!("`{column}` {}", crate::util::rfc3339_from_epoch(newest)),
            )
        })
        .ok_or_else(|| format!("`{column}` holds no value in any row"))
}

/// The newest instant in `values` (of the contract's freshness `column`, in
/// `source`), seconds since the epoch; `None` when all are null.
pub(crate) fn newest_of_column(values: &ArrayRef, column: &str, source: &str) -> Result<Option<i64>> {
    let seconds = arrow::compute::cast(values, &DataType::Timestamp(arrow::datatypes::TimeUnit::Second, None))
        .and_then(|t| arrow::compute::cast(&t, &DataType::Int64))
        .map_err(|e| {
            Error::Usage(format!(
                "the contract's freshness column `{column}` in `{source}` is {}, not a date or timestamp: {e}",
                values.data_type()
            ))
        })?;
    let seconds = seconds.as_any().downcast_ref::<Int64Array>().expect("cast to Int64");
    Ok(arrow::compute::max(seconds))
}

/// Turns a pass's inspection into the run's judgement: rules, guards, drift,
/// the score histogram, and the run's profile.
pub(super) fn judge(package: &Package, table: &PreparedTable, facts: &TableFacts, mut scored: Scored) -> Scored {
    let Some(inspection) = scored.inspection.take() else {
        return scored;
    };
    let contract = &package.contract;
    let features = package.model.features();
    let profile = inspection.clone().profile(
        contract,
        features,
        &table.plan.input.display().to_string(),
        table.pass.predict,
    );
    // Positions of example rows whose ids are read back: rule examples, and
    // duplicates when the keys are hashes rather than the ids themselves.
    let keys = std::mem::take(&mut scored.keys);
    let unique_ids = table.unique_ids.as_ref();
    let exact_column = unique_ids.and(table.exact_key_column.as_ref());
    let (unique_values, unique_positions) = match (unique_ids, exact_column) {
        (None, _) => (None, None),
        (Some(_), Some(column)) => {
            let (repeats, values) = contract::duplicate_values(keys);
            let examples = values.iter().map(|&v| format!("{column}={}", v as i64)).collect();
            (Some((repeats, examples)), None)
        }
        (Some(_), None) => {
            let (repeats, positions) = contract::duplicates(&keys);
            let positions: Vec<(usize, usize)> = positions
                .into_iter()
                .map(|global| unit_position(&scored.units, global))
                .collect();
            (None, Some((repeats, positions)))
        }
    };
    let mut wanted: Vec<(usize, usize)> = inspection.tallies.iter().flat_map(|t| t.examples.clone()).collect();
    if let Some((_, positions)) = &unique_positions {
        wanted.extend(positions.iter().copied());
    }
    let ids = describe_rows(table, &scored.units, &wanted);
    let example = |position: (usize, usize)| ids.get(&position).cloned().unwrap_or_default();
    let unique = unique_values.or_else(|| {
        unique_positions.map(|(repeats, positions)| (repeats, positions.into_iter().map(example).collect()))
    });
    scored.judgement = judgement_of(
        package,
        &inspection,
        &profile,
        facts,
        unique,
        &example,
        table.pass.predict,
    );
    scored.inspection = Some(inspection);
    scored.profile = Some(std::sync::Arc::new(profile));
    scored
}

/// The contract's judgement of what a pass saw (its merged `inspection`
/// and the `profile` made of it): rules, and when the model ran, guards and
/// the score histogram; drift when the package has a reference. `unique`:
/// the repeats of the unique columns and examples; `example` names a rule's
/// example row.
pub(crate) fn judgement_of(
    package: &Package,
    inspection: &Inspection,
    profile: &TableProfile,
    facts: &TableFacts,
    unique: Option<(u64, Vec<String>)>,
    example: &dyn Fn((usize, usize)) -> String,
    predicted: bool,
) -> Judgement {
    let contract = &package.contract;
    let checks = contract::judge_rules(contract, inspection, profile, facts, unique, example);
    let mut judgement = Judgement {
        checks: Some(checks),
        ..Judgement::default()
    };
    if predicted {
        judgement.guards = Some(contract::judge_guards(
            contract,
            inspection,
            profile,
            package.reference.as_ref(),
        ));
        judgement.score_histogram = contract::score_histogram(profile, package.reference.as_ref());
    }
    if let Some(reference) = &package.reference {
        judgement.drift = Some(contract::judge_drift(
            contract,
            profile,
            reference,
            &package.reference_name(),
        ));
    }
    judgement
}

/// (unit, row within it) of the `global`-th row of the pass.
fn unit_position(units: &[WorkUnit], global: usize) -> (usize, usize) {
    let mut first = 0;
    for (index, unit) in units.iter().enumerate() {
        if global < first + unit.n_rows {
            return (index, global - first);
        }
        first += unit.n_rows;
    }
    (units.len(), 0)
}

/// How reports name a few rows: their id values (`customer_id=17`), read
/// again from the input, or their place in it when the run has no ids.
fn describe_rows(
    table: &PreparedTable,
    units: &[WorkUnit],
    positions: &[(usize, usize)],
) -> HashMap<(usize, usize), String> {
    let mut by_unit: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for &(unit, row) in positions {
        by_unit.entry(unit).or_default().push(row);
    }
    let mut names = HashMap::new();
    for (unit_idx, rows) in by_unit {
        let Some(unit) = units.get(unit_idx) else { continue };
        let file = &table.plan.files[unit.file_idx];
        let place = |row: usize| {
            format!(
                "{} row group {} row {row}",
                file.listed.relative_path.display(),
                unit.row_group
            )
        };
        let ids = (!file.id_roots.is_empty())
            .then(|| {
                let projection =
                    ProjectionMask::roots(file.file.metadata.parquet_schema(), file.id_roots.iter().copied());
                file.file.read_columns(unit.row_group, &projection).ok()
            })
            .flatten();
        for row in rows {
            let name = match &ids {
                Some(batch) => {
                    let values: Vec<String> = (0..batch.num_columns())
                        .map(|c| {
                            let value = arrow::util::display::array_value_to_string(batch.column(c), row)
                                .unwrap_or_else(|_| "?".into());
                            format!("{}={value}", batch.schema().field(c).name())
                        })
                        .collect();
                    values.join(",")
                }
                None => place(row),
            };
            names.insert((unit_idx, row), name);
        }
    }
    names
}
