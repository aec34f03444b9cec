#!/usr/bin/env python3
"""The table of benches/gpu-check.sh, from what it left in OUT and WORK.

usage: gpu_check_table.py LOGS WORK DEVICE KERNEL_ROWS
Reads LOGS/results.tsv (one line per check: kind, name, exit code, then seconds for a
run or compare_scores.py's verdict for a comparison),
LOGS/report-*.json (lakescore's run reports: wall and per-stage seconds),
LOGS/bandwidth.txt (TB/s), LOGS/gpu.txt and the criterion estimates under WORK/target/criterion.
Prints Markdown. Standard library only.
"""
import glob, json, os, sys

out, work, device, kernel_rows = sys.argv[1:5]
results = [line.rstrip("\n").split("\t") for line in open(os.path.join(out, "results.tsv")) if line.strip()]


def read(path, default=""):
    try:
        return open(path).read().strip()
    except OSError:
        return default


gpu = read(os.path.join(out, "gpu.txt"), "no GPU")
build = read(os.path.join(work, "bundle", "BUILD")).replace("\n", ", ")
print(f"## GPU check: {gpu}\n\n{build}; device `{device}`\n")

print("| check | result |\n| --- | --- |")
for r in results:
    if r[0] in ("parity", "kernel"):
        print(f"| {r[1]} | {'pass' if r[2] == '0' else 'FAIL (exit ' + r[2] + ')'} |")
for r in results:
    if r[0] == "compare":
        verdict = "pass" if r[2] == "0" else "FAIL"
        print(f"| {r[1]}: cpu and {device} outputs per customer | {verdict}: {r[3] if len(r) > 3 else ''} |")
print()

bandwidth = read(os.path.join(out, "bandwidth.txt"))
try:
    bandwidth = float(bandwidth.split()[-1])
except (ValueError, IndexError):
    bandwidth = None
kernel = []
for bench in glob.glob(os.path.join(work, "target", "criterion", "cuda_trees", "*", "*", "new", "benchmark.json")):
    meta = json.load(open(bench))
    estimates = json.load(open(os.path.join(os.path.dirname(bench), "estimates.json")))
    seconds = estimates["median"]["point_estimate"] / 1e9
    rows = int(meta["value_str"])
    elements = meta["throughput"]["Elements"]
    kernel.append((meta["function_id"], rows, seconds, elements / seconds))
if kernel:
    print("Tree kernel alone (`benches/cuda_trees.rs`): 300 random trees, 34 standard-normal features (float64 in,")
    print("float32 compares and sums), median launch time; target 1e11 row·trees/s (10M rows x 300 depth-6 trees in 30 ms).")
    if bandwidth:
        print(f"Copy bandwidth measured {bandwidth:.2f} TB/s (read + write); the floor is reading the features once.")
    print()
    print("| trees | rows | ms | row·trees/s | ÷ 1e11 | feature-read floor ms |\n| --- | --- | --- | --- | --- | --- |")
    for name, rows, seconds, rate in sorted(kernel, key=lambda k: (k[0][:7], k[1], k[0])):
        floor = f"{rows * 34 * 8 / (bandwidth * 1e12) * 1e3:.2f}" if bandwidth else "?"
        print(f"| {name} | {rows:,} | {seconds * 1e3:.2f} | {rate:.3g} | {rate / 1e11:.2f} | {floor} |")
    print()

e2e = {r[1]: (r[2], float(r[3]) if len(r) > 3 and r[2] == "0" else None) for r in results if r[0] == "e2e"}
models = []
for tag in e2e:
    name = tag.rsplit("-", 1)[0]
    if name not in models:
        models.append(name)
if models:
    cores = os.cpu_count()
    print(f"End to end, `lakescore score` on the generated lake, all {cores} cores (wall s; thread-seconds of the")
    print("decode and model stages from the run report):\n")
    print(f"| model | cpu wall s | {device} wall s | {device} ÷ cpu | cpu decode / model thread-s | {device} decode / model thread-s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name in models:
        cells = []
        stages = []
        for dev in ("cpu", "gpu"):
            code, wall = e2e.get(f"{name}-{dev}", ("?", None))
            cells.append(f"{wall:.2f}" if wall is not None else f"failed ({code})")
            try:
                report = json.load(open(os.path.join(out, f"report-{name}-{dev}.json")))
                s = report["stage_seconds"]
                stages.append(f"{s['decode']:.2f} / {s['model']:.2f}")
            except (OSError, KeyError, ValueError):
                stages.append("?")
        walls = [e2e.get(f"{name}-{d}", (None, None))[1] for d in ("cpu", "gpu")]
        ratio = f"{walls[1] / walls[0]:.2f}" if None not in walls else "?"
        print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} | {stages[0]} | {stages[1]} |")
failed = [r for r in results if r[2] != "0"]
print(f"\n{len(results) - len(failed)} of {len(results)} checks passed")
