#!/usr/bin/env bash
# Inference-engine benchmarks of the inference issue, on this machine, in one run:
#  (b) turnaround of `vertebrad analyze` on a 512×512×300 phantom CT series, by stage;
#  (c) peak RSS of `vertebrad analyze` on a 512×512×600 series (goal ≤ 1.5 GB).
# Uses the committed demo bundle on ONNX Runtime (CPU). Prints a Markdown table for
# docs/benchmarks.md. Times are from one run on a shared machine: compare stages with each
# other, not with other machines.
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-dev}
ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash scripts/provision-onnxruntime.sh | tail -1)}
export ORT_DYLIB_PATH
cargo build --quiet --profile "$profile" -p vertebrad -p vertebra-core --bin vertebrad --bin vertebra-phantom
dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
for slices in 300 600; do
  # 300 slices at 1.25 mm image T6–L5; 600 the whole column C1–L5.
  range=$([ "$slices" = 300 ] && echo "--from T6 --to L5" || echo "--region whole")
  # shellcheck disable=SC2086
  "$dir/vertebra-phantom" study --seed 42 $range --in-plane 512 --slices "$slices" \
    --lesions 2 --format dicom --out "$work/s$slices" > /dev/null
  /usr/bin/time -v "$dir/vertebrad" analyze "$work/s$slices/dicom" --bundle models/demo-bundle \
    --trusted-keys keys --out "$work/o$slices" --quiet > "$work/summary$slices.txt" 2> "$work/time$slices.txt"
  rss_kb=$(grep "Maximum resident set size" "$work/time$slices.txt" | awk '{print $NF}')
  python3 - "$work/o$slices/result.json" "$rss_kb" "$slices" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
t = d["timings_s"]
print(f"512×512×{sys.argv[3]}: peak RSS {int(sys.argv[2]) / 1024 / 1024:.2f} GiB; windows {d['windows']}; "
      f"localisation: {d['localization']['note'] if d['localization'] else 'off'}")
print("| stage | s | share |")
print("|---|---:|---:|")
for k in ["load", "preprocess", "localize", "windows", "identification", "postprocess", "resample_back", "write"]:
    print(f"| {k} | {t[k]:.2f} | {100 * t[k] / t['total']:.0f} % |")
print(f"| total | {t['total']:.2f} | |")
PY
done
