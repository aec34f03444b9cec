#!/usr/bin/env bash
# Regenerates datasets/sample/package/: the sample linear model as a model
# package, with the sample table as its drift reference. `lakescore model
# package` writes the artifact, the reference profile and a starting contract
# (every rule at `warn`); this script then tightens the table rules and guards
# the way a team would before the package ships.
#
#   bash datasets/make_sample_package.sh
set -euo pipefail
cd "$(dirname "$0")/.."
out=datasets/sample/package
rm -rf "$out"
cargo run --release --quiet -- -q model package \
  --model datasets/sample/model.json \
  --reference datasets/sample/customers \
  --output "$out" --name propensity-sample --version 1.0.0
python3 - "$out/lakescore.toml" <<'PY'
import sys
path = sys.argv[1]
text = open(path).read()
text = text.replace("[table]\n", '[table]\nmin_rows = 10000\nunique = ["customer_id"]\n', 1)
text = text.replace("[guards]\n", "[guards]\nmax_missing_share = 0.5\nmax_mean_shift = 0.05\n", 1)
# Ages outside what the model was trained on are not scored but quarantined.
text = text.replace("[features.age]\n", "[features.age]\nrange_policy = \"quarantine\"\n", 1)
open(path, "w").write(text)
PY
echo "wrote $out"
