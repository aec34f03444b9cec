"""Delta tables lakescore writes, read back by the Python `deltalake` package
and Polars (`read_delta`): the same rows and scores as lakescore's Parquet
output, one commit per run in the history, overwrite replacing only the
run's partitions, and a log that stays valid when another writer commits
while lakescore scores.

Run by `.ci/run` (pytest, in a virtual environment from requirements.txt),
against the binary `LAKESCORE_BIN` names; the concurrent-writer test needs a
binary with the test hooks (`cargo test` builds `target/debug/lakescore`
with them).
"""

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import deltalake
import polars as pl
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

ROOT = Path(__file__).resolve().parents[2]
BIN = os.environ.get("LAKESCORE_BIN", str(ROOT / "target/debug/lakescore"))
MODEL = ROOT / "datasets/sample/model.json"
LAKE = ROOT / "datasets/sample/customers"


def score(out, *extra, lake=LAKE, env=None, check=True):
    command = [BIN, "score", "--model", str(MODEL), "--input", str(lake), "--output", str(out), *extra]
    run = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **(env or {})})
    if check:
        assert run.returncode == 0, run.stderr
    return run


def rows(table):
    """(dt, customer_id, score) rows, sorted."""
    return sorted(zip(*(table.column(name).to_pylist() for name in ("dt", "customer_id", "score"))))


def parquet_rows(folder):
    table = ds.dataset(folder, format="parquet", partitioning="hive").to_table()
    table = table.set_column(table.schema.get_field_index("dt"), "dt", table.column("dt").cast(pa.string()))
    return rows(table)


def one_partition(tmp_path, date):
    lake = tmp_path / f"only-{date}"
    (lake / f"dt={date}").mkdir(parents=True)
    for source in (LAKE / f"dt={date}").iterdir():
        (lake / f"dt={date}" / source.name).write_bytes(source.read_bytes())
    return lake


def test_a_delta_output_reads_back_in_deltalake_and_polars_with_one_commit_per_run(tmp_path):
    plain, out = tmp_path / "plain", tmp_path / "delta"
    score(plain)
    report = tmp_path / "report.json"
    score(out, "--output-format", "delta", "--report", str(report))
    run_id = json.loads(report.read_text())["run_id"]

    table = deltalake.DeltaTable(str(out))
    assert table.version() == 0
    assert table.metadata().partition_columns == ["dt"]
    assert rows(table.to_pyarrow_table()) == parquet_rows(plain)
    assert rows(pl.read_delta(str(out)).to_arrow()) == parquet_rows(plain)
    history = table.history()
    assert len(history) == 1
    assert history[0]["operation"] == "WRITE"
    assert history[0]["lakescore"]["runId"] == run_id
    assert history[0]["engineInfo"].startswith("lakescore/")
    # Statistics every reader can use: row counts per file.
    adds = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    assert sum(adds["num_records"]) == table.to_pyarrow_table().num_rows

    # Overwrite from one partition's input: a second commit replaces that
    # partition's files only.
    before = {path for path, dt in zip(adds["path"], adds["partition.dt"]) if dt == "2026-11-24"}
    score(out, "--mode", "overwrite", lake=one_partition(tmp_path, "2026-11-25"))
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 1
    assert len(table.history()) == 2
    adds = pa.table(table.get_add_actions(flatten=True)).to_pydict()
    after = dict(zip(adds["path"], adds["partition.dt"]))
    assert {p for p, dt in after.items() if dt == "2026-11-24"} == before
    assert not {p for p, dt in after.items() if dt == "2026-11-25"} & before
    assert rows(table.to_pyarrow_table()) == parquet_rows(plain)
    # Time travel to the first version still works: its files stay.
    assert rows(deltalake.DeltaTable(str(out), version=0).to_pyarrow_table()) == parquet_rows(plain)


def has_test_hooks():
    return "target/debug" in BIN


@pytest.mark.skipif(not has_test_hooks(), reason="needs a binary with test hooks (target/debug/lakescore)")
def test_a_deltalake_writer_committing_meanwhile_is_merged_or_conflicts_and_the_log_stays_valid(tmp_path):
    out = tmp_path / "table"
    lake = one_partition(tmp_path, "2026-11-25")
    score(out, "--output-format", "delta", lake=lake)
    ours = deltalake.DeltaTable(str(out)).to_pyarrow_table().select(["customer_id", "score", "dt"])

    def race(date):
        """An overwrite of the run's partition, slowed at its commit, while
        deltalake appends rows to the partition `date`."""
        result = {}

        def run():
            result["run"] = score(
                out,
                "--mode",
                "overwrite",
                lake=lake,
                env={"LAKESCORE_TEST_DELTA_COMMIT_DELAY_MS": "3000"},
                check=False,
            )

        thread = threading.Thread(target=run)
        thread.start()
        sidecars = out / "_lakescore/delta"
        deadline = time.time() + 120
        while not (sidecars.exists() and any(sidecars.iterdir())):
            assert time.time() < deadline, "lakescore never reached its commit"
            time.sleep(0.02)
        other = ours.slice(0, 3).set_column(2, "dt", pa.array([date] * 3))
        deltalake.write_deltalake(str(out), other, mode="append")
        thread.join()
        return result["run"]

    # deltalake appends to another partition: both commits land.
    run = race("2031-01-01")
    assert run.returncode == 0, run.stderr
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 2
    dates = table.to_pyarrow_table().column("dt").to_pylist()
    assert dates.count("2031-01-01") == 3
    assert dates.count("2026-11-25") == ours.num_rows

    # deltalake appends to the run's partition: lakescore fails clearly and
    # commits nothing; deltalake and Polars still read the table.
    for sidecar in (out / "_lakescore/delta").iterdir():
        sidecar.unlink()
    run = race("2026-11-25")
    assert run.returncode == 1
    assert "committed nothing" in run.stderr and "dt=2026-11-25" in run.stderr, run.stderr
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 3
    assert table.history()[0].get("engineInfo", "").startswith("delta-rs")
    assert pl.read_delta(str(out)).height == table.to_pyarrow_table().num_rows


def test_the_checkpoint_lakescore_writes_every_tenth_version_is_read_by_deltalake_and_polars(tmp_path):
    out = tmp_path / "table"
    lake = one_partition(tmp_path, "2026-11-25")
    score(out, "--output-format", "delta", lake=lake)
    expected = rows(deltalake.DeltaTable(str(out)).to_pyarrow_table())
    for _ in range(10):
        score(out, "--mode", "overwrite", lake=lake)
    log = out / "_delta_log"
    assert (log / "00000000000000000010.checkpoint.parquet").exists()
    # Readers must start from the checkpoint: the commits before it go.
    for version in range(10):
        (log / f"{version:020}.json").unlink()
    table = deltalake.DeltaTable(str(out))
    assert table.version() == 10
    assert rows(table.to_pyarrow_table()) == expected
    assert rows(pl.read_delta(str(out)).to_arrow()) == expected
