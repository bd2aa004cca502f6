#!/usr/bin/env bash
# Rebuilds the committed demo model bundle (models/demo-bundle/ and its .tar) from the demo
# training run (models/cpu-demo/): exports the best checkpoint to ONNX with parity-tested
# graphs, records provenance (commit, recipe, seed, held-out metrics with CIs) and signs the
# manifest with the committed DEMO key (keys/demo.key). The appliance accepts a demo-signed
# bundle only with a loud warning: it is synthetic-data research output, not for diagnostic use.
#
#   bash scripts/build-demo-bundle.sh [RUN_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
RUN=${1:-models/cpu-demo}
CHECKPOINT=${CHECKPOINT:-best}   # best, or last (e.g. while best predates the curriculum ramp)
OUT=models/demo-bundle
EVAL="$RUN/eval-test-$CHECKPOINT/evaluation.json"
for f in "$RUN/checkpoints/$CHECKPOINT/model.safetensors" "$RUN/recipe.json" "$EVAL" keys/demo.key; do
  [[ -f "$f" ]] || { echo "build-demo-bundle: missing $f" >&2; exit 1; }
done
cargo build -q -p vertebra-export --bin vertebra-export
B=${CARGO_TARGET_DIR:-target}/debug/vertebra-export
metrics=$(mktemp)
trap 'rm -f "$metrics"' EXIT
# Flatten the evaluation summary (estimate and 95 % BCa CI per metric) into name → number.
python3 - "$EVAL" "$metrics" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))
out = {}
for m in ev["summary"]:
    out[m["name"]] = m["estimate"]
    if m.get("ci_low") is not None:
        out[m["name"] + "_ci_low"] = m["ci_low"]
        out[m["name"] + "_ci_high"] = m["ci_high"]
json.dump(out, open(sys.argv[2], "w"), indent=1, sort_keys=True)
PY
seed=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["seed"])' "$RUN/recipe.json")
rm -rf "$OUT" "$OUT.tar"
"$B" export --weights "$RUN/checkpoints/$CHECKPOINT/model.safetensors" --out "$OUT" \
  --name vertebraformer-cpu-demo --seed "$seed" --training-config "$RUN/recipe.json" \
  --dataset-manifest "$RUN/recipe.json" --metrics "$metrics" --key keys/demo.key --tar
"$B" verify --bundle "$OUT.tar" --trusted-keys keys
echo "build-demo-bundle: $OUT and $OUT.tar"
