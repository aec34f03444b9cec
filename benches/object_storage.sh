#!/usr/bin/env bash
# Object storage side by side: the benchmark lake of benches/side_by_side.sh
# served by a local S3 server (moto_server, on loopback), scored by
# lakescore from S3 and from the local disk, and by pyarrow's S3FileSystem +
# xgboost (benches/peer_s3.py) from S3, in one run, on this machine.
#
#   benches/object_storage.sh [--repeat R] [--work DIR]
#
# Prints, per pipeline, the median wall seconds of R runs and that run's peak
# RSS; then what lakescore fetched from S3 (its report's bytes_read and
# requests) against what it needs (the projected column chunks and the
# footers, from the files' metadata). moto is a Python server: its own speed
# bounds every S3 row, lakescore's and the peer's alike.
#
# Needs what benches/side_by_side.sh made in the work folder (the lake, the
# trained models and the peers' venv): run it first once. moto goes to a venv
# of its own there.
set -euo pipefail
REPEAT=3
WORK=${WORK:-/tmp/lakescore-side-by-side}
ROWS=10000000
while [ $# -gt 0 ]; do
  case "$1" in
    --repeat) REPEAT=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
REPO=$(cd "$(dirname "$0")/.." && pwd)
cd "$REPO"
LAKE=$WORK/customers-$ROWS
MODELS=$WORK/models
P=$WORK/venv/bin/python
for need in "$LAKE/.complete" "$MODELS/xgb.json" "$P"; do
  [ -e "$need" ] || { echo "missing $need: run benches/side_by_side.sh first" >&2; exit 1; }
done
cargo build --release --quiet --bin lakescore
BIN=${CARGO_TARGET_DIR:-$REPO/target}/release/lakescore
MOTO=$WORK/moto-venv
[ -x "$MOTO/bin/moto_server" ] || { python3 -m venv "$MOTO" && "$MOTO/bin/pip" install -q 'moto[server]==5.2.6'; }

port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$MOTO/bin/moto_server" -H 127.0.0.1 -p "$port" > "$WORK/moto.log" 2>&1 &
moto=$!
trap 'kill $moto 2> /dev/null || true' EXIT
export AWS_ENDPOINT_URL=http://127.0.0.1:$port AWS_ALLOW_HTTP=true AWS_ACCESS_KEY_ID=bench \
  AWS_SECRET_ACCESS_KEY=bench AWS_REGION=us-east-1
for _ in $(seq 1 100); do curl -fs "$AWS_ENDPOINT_URL/" > /dev/null 2>&1 && break; sleep 0.2; done
echo "== uploading the lake ($(du -sh "$LAKE" | cut -f1)) to moto"
"$MOTO/bin/python" - "$LAKE" <<'PY'
import boto3, os, sys
s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"], region_name="us-east-1")
s3.create_bucket(Bucket="bench")
root = sys.argv[1]
for folder, _, files in os.walk(root):
    for name in files:
        if name.endswith(".parquet"):
            path = os.path.join(folder, name)
            s3.upload_file(path, "bench", "customers/" + os.path.relpath(path, root))
PY

OUT=$WORK/out-s3
RESULTS=$WORK/object_storage.tsv
: > "$RESULTS"
time_it() {
  local name=$1; shift
  local runs=()
  for _ in $(seq "$REPEAT"); do
    rm -rf "$OUT"
    /usr/bin/time -f "%e %M" -o "$WORK/time.txt" "$@" > /dev/null 2> "$WORK/stderr.txt" \
      || { cat "$WORK/stderr.txt" >&2; echo "$* failed" >&2; exit 1; }
    runs+=("$(cat "$WORK/time.txt")")
  done
  printf '%s\n' "${runs[@]}" | sort -n | sed -n "$(( (REPEAT + 1) / 2 ))p" \
    | awk -v name="$name" '{ printf "%s\t%.2f\t%.0f\n", name, $1, $2 / 1024 }' >> "$RESULTS"
}
cat "$LAKE"/dt=*/*.parquet > /dev/null
time_it "lakescore xgb, local disk" "$BIN" score --model "$MODELS/xgb.json" --input "$LAKE" --output "$OUT"
time_it "lakescore xgb, from S3" "$BIN" score --model "$MODELS/xgb.json" --input s3://bench/customers \
  --output "$OUT" --report "$WORK/s3-report.json"
time_it "lakescore xgb, S3 to S3" "$BIN" score --model "$MODELS/xgb.json" --input s3://bench/customers \
  --output s3://bench/scores --mode overwrite
time_it "pyarrow S3FileSystem + xgboost" "$P" benches/peer_s3.py "$MODELS" s3://bench/customers "$OUT" \
  --endpoint "$AWS_ENDPOINT_URL" --threads "$(nproc)"

echo
echo "CPU: $(lscpu | sed -n 's/^Model name: *//p') ($(nproc) threads); median of $REPEAT runs"
printf '%-34s %8s %10s\n' pipeline "wall s" "peak MB"
while IFS=$'\t' read -r name secs mb; do printf '%-34s %8s %10s\n' "$name" "$secs" "$mb"; done < "$RESULTS"
echo
"$P" - "$LAKE" "$MODELS/features.txt" "$WORK/s3-report.json" <<'PY'
import glob, json, os, sys
import pyarrow.parquet as pq
lake, features, report = sys.argv[1], open(sys.argv[2]).read().split(), json.load(open(sys.argv[3]))
wanted = set(features) | {"customer_id"}
needed = row_groups = files = 0
for path in sorted(glob.glob(os.path.join(lake, "**", "*.parquet"), recursive=True)):
    meta = pq.ParquetFile(path).metadata
    files += 1
    with open(path, "rb") as f:
        f.seek(-8, 2)
        needed += int.from_bytes(f.read(4), "little") + 8
    for r in range(meta.num_row_groups):
        row_groups += 1
        group = meta.row_group(r)
        for c in range(group.num_columns):
            column = group.column(c)
            if column.path_in_schema in wanted:
                start = column.dictionary_page_offset or column.data_page_offset
                needed += column.total_compressed_size
print(f"fetched from S3: {report['bytes_read'] / 1e6:.1f} MB in {report['requests']} requests; "
      f"needed {needed / 1e6:.1f} MB (projected chunks + footers): x{report['bytes_read'] / needed:.3f}; "
      f"{files} files, {row_groups} row groups: {report['requests'] / row_groups:.2f} requests per row group")
PY
