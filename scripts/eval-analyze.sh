#!/usr/bin/env bash
# The inference issue's proof that the appliance's command line gives the trainer's numbers:
# the held-out phantom cases of a run go through `vertebrad analyze` (a separate process, the
# committed bundle on ONNX Runtime CPU); `vertebra-train score-analyze` scores the outputs with
# the trainer's metrics next to the trainer's path on the same bundle, both on the source grid,
# with `vertebra-train evaluate-bundle`'s numbers (prepared grid) as an informational column.
#
#   scripts/eval-analyze.sh [RUN_DIR] [BUNDLE_DIR]   (defaults: models/cpu-demo models/demo-bundle)
#
# Needs RUN_DIR/eval-test-best-bundle/comparison.json (from `vertebra-train evaluate-bundle
# RUN_DIR --bundle BUNDLE_DIR`, about 12 min for 20 cases); writes RUN_DIR/eval-test-analyze/.
# Exits 1 when analyze and the trainer's path differ by more than 0.5 points on a metric. Env: MAX_CASES (default all),
# PROFILE (cargo profile, default dev — optimised in this workspace), KEEP=1 keeps the work directory.
set -euo pipefail
cd "$(dirname "$0")/.."
run=${1:-models/cpu-demo}
bundle=${2:-models/demo-bundle}
profile=${PROFILE:-dev}
reference="$run/eval-test-best-bundle/comparison.json"
[ -f "$reference" ] || {
  echo "eval-analyze: $reference is missing: run vertebra-train evaluate-bundle $run --bundle $bundle first" >&2
  exit 2
}
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash scripts/provision-onnxruntime.sh | tail -1)}
export ORT_DYLIB_PATH
limit=()
[ -n "${MAX_CASES:-}" ] && limit=(--max-cases "$MAX_CASES")
echo "== building vertebrad and vertebra-train ($profile)"
cargo build --quiet --profile "$profile" -p vertebrad --bin vertebrad
cargo build --quiet --profile "$profile" -p vertebra-trainer --bin vertebra-train
bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
work=$(mktemp -d)
[ "${KEEP:-0}" = 1 ] || trap 'rm -rf "$work"' EXIT
echo "== exporting the held-out cases to $work/cases"
"$bin/vertebra-train" export-cases "$run" --out "$work/cases" "${limit[@]}" --quiet
mapfile -t cases < "$work/cases/cases.txt"
i=0
for c in "${cases[@]}"; do
  i=$((i + 1))
  echo "== vertebrad analyze $i/${#cases[@]} $c"
  "$bin/vertebrad" analyze "$work/cases/$c.nii.gz" --bundle "$bundle" --trusted-keys keys \
    --out "$work/outputs/$c" --quiet > /dev/null
done
echo "== scoring"
"$bin/vertebra-train" score-analyze "$run" --outputs "$work/outputs" --bundle "$bundle" \
  --trusted-keys keys --reference "$reference" "${limit[@]}"
