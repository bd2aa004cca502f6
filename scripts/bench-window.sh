#!/usr/bin/env bash
# Inference-engine benchmarks (a) and (d) of the inference issue, on this machine, in one run:
#  (a) per-window latency and volumes/s of the `cpu` bundle (the committed demo bundle, trained)
#      and a `paper` bundle (seeded random initialisation: latency does not depend on weight
#      values) on the product path (vertebrad's Engine + OrtNetwork, ONNX Runtime CPU), against
#      MONAI's UNETR in PyTorch eager on the same CPU, the same seeded input and the same
#      thread count, as a ratio measured in the same round;
#  (d) achieved FLOP/s of those graphs (FLOPs counted from the ONNX graphs) against the
#      machine's GEMM FLOP/s through the same ONNX Runtime (one 2048^3 fp32 MatMul graph, same
#      threads), with numpy's and PyTorch's GEMM for reference.
# Runs ROUNDS rounds (each: cpu bundle, paper bundle, UNETR, numpy GEMM, back to back) and
# prints Markdown tables of medians and spreads for docs/benchmarks.md.
#
#   bash scripts/bench-window.sh            # ROUNDS=3 THREADS=2 PROFILE=dev
#
# Environment: ROUNDS, THREADS (intra-op threads of ONNX Runtime and PyTorch, and BLAS
# threads of numpy), PROFILE (cargo profile of our Rust: dev, bench-fast or release; the
# compute itself is in the prebuilt ONNX Runtime library), PAPER_RUNS / CPU_RUNS / UNETR_RUNS
# (timed runs per round after one warm-up), VERTEBRA_BENCH_VENV (the PyTorch/MONAI venv,
# default ~/.cache/vertebra/bench-venv, made from scripts/requirements-bench.txt; never the
# test venv).
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${ROUNDS:-3}
threads=${THREADS:-2}
profile=${PROFILE:-dev}
paper_runs=${PAPER_RUNS:-3}
cpu_runs=${CPU_RUNS:-10}
unetr_runs=${UNETR_RUNS:-3}

ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash scripts/provision-onnxruntime.sh | tail -1)}
export ORT_DYLIB_PATH
bash scripts/provision-python.sh >&2
py=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}/bin/python

# The PyTorch/MONAI venv (its own; ~3 GB because PyPI's torch is the CUDA build).
bench_venv=${VERTEBRA_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/bench-venv}
req=scripts/requirements-bench.txt
want=$(sha256sum "$req" | cut -d' ' -f1)
stamp="$bench_venv/.vertebra-requirements.sha256"
if ! { [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
       "$bench_venv/bin/python" -c 'import torch, monai, einops' 2>/dev/null; }; then
  echo "bench-window: installing torch + monai into $bench_venv (pinned in $req)" >&2
  python3 -m venv "$bench_venv"
  if ! "$bench_venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2; then
    echo "bench-window: cannot install the PyTorch/MONAI baseline from $req (see pip's" \
         "message above); the comparison (a) needs it" >&2
    exit 1
  fi
  echo "$want" > "$stamp"
fi
tpy=$bench_venv/bin/python

echo "bench-window: building (profile $profile)" >&2
cargo build --quiet --profile "$profile" -p vertebra-export --bin vertebra-export --example init_weights
cargo build --quiet --profile "$profile" -p vertebrad --example bench_window
dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")

work=$(mktemp -d); trap 'rm -rf "$work"' EXIT
"$py" scripts/bench_window.py inputs "$work" > "$work/inputs.json"
"$py" scripts/bench_window.py matmul-graph "$work/gemm.onnx" 2048 > /dev/null

echo "bench-window: exporting the paper preset (seeded random weights) into a bundle" >&2
"$dir/examples/init_weights" paper "$work/paper.safetensors" 1 >&2
"$dir/vertebra-export" export --weights "$work/paper.safetensors" --out "$work/paper-bundle" \
  --name vertebraformer-paper-random-init --seed 1 --key keys/demo.key >&2
cpu_bundle=models/demo-bundle
for b in cpu:"$cpu_bundle" paper:"$work/paper-bundle"; do
  name=${b%%:*} path=${b#*:}
  "$py" scripts/bench_window.py flops "$path/model.onnx" > "$work/flops-$name-main.json"
  "$py" scripts/bench_window.py flops "$path/id_head.onnx" > "$work/flops-$name-id.json"
done

bench=("$dir/examples/bench_window" --trusted-keys keys --threads "$threads" --warmup 1)
for r in $(seq 1 "$rounds"); do
  echo "bench-window: round $r/$rounds (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
  cut -d' ' -f1-3 /proc/loadavg > "$work/load-$r.txt"
  "${bench[@]}" --bundle "$cpu_bundle" --input "$work/input-64.f32" --runs "$cpu_runs" \
    --id-runs 5 --matmul "$work/gemm.onnx" --matmul-n 2048 > "$work/cpu-$r.json"
  "${bench[@]}" --bundle "$work/paper-bundle" --input "$work/input-128.f32" \
    --runs "$paper_runs" --id-runs 1 > "$work/paper-$r.json"
  OMP_NUM_THREADS=$threads MKL_NUM_THREADS=$threads \
    "$tpy" scripts/bench_window.py torch "$work" "$threads" 1 "$unetr_runs" 26 > "$work/unetr-$r.json"
  OPENBLAS_NUM_THREADS=$threads OMP_NUM_THREADS=$threads \
    "$py" scripts/bench_window.py numpy-gemm 2048 5 > "$work/numpy-$r.json"
done
"$py" scripts/bench_window.py report "$work" "$rounds"
