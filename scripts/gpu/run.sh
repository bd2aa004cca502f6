#!/usr/bin/env bash
# Runs the GPU measurement kit that scripts/gpu/prepare.sh built; see docs/gpu.md.
#
#   bash scripts/gpu/run.sh receive K N        # device call K of N: stage .gpu/call-K/kit.part
#   bash scripts/gpu/run.sh measure [STEPS]    # on the GPU machine, results in $OUT
#   bash scripts/gpu/run.sh dry-run [STEPS]    # here, on the CPU: the same steps, small sizes
#
# STEPS (default all, in this order): infer tensorrt turnaround unetr train
#   infer       bench_window on the cpu (FP32, FP16) and paper (FP32, FP16; seeded random
#               weights exported on the spot) bundles through ONNX Runtime's CUDA provider, no
#               fallback: per-window latency at batch 1, windows/s at each batch, peak GPU memory
#               (nvidia-smi, sampled every 100 ms), and the largest difference of every output
#               from the CPU provider on the same window.
#   tensorrt    the TensorRT provider on the cpu bundle with an engine cache (cold, then warm);
#               records why it cannot start when TensorRT 10 is missing.
#   turnaround  `vertebrad analyze` of a 512x512x300 phantom CT series on the CUDA provider
#               and, as the same-machine baseline, on the CPU provider.
#   unetr       MONAI UNETR in PyTorch at 128^3 on the same card: FP16-autocast inference by
#               batch, and training steps at batch 2 (the paper's baseline).
#   train       `vertebra-train train --recipe paper --backend wgpu` for a few minutes (only when
#               the kit was built with WITH_TRAIN=1): step time, loss, peak GPU memory.
# Each step has its own time limit; a failed step is reported and the next one runs. The exit
# status is non-zero when any step failed. gpu_bench.py writes the Markdown summary.
set -uo pipefail
cd "$(dirname "$0")/../.."
stage=${VERTEBRA_GPU_STAGE:-/tmp/vertebra-gpu}
mode=${1:-}
shift || true

receive() {
  local k=$1 n=$2 src
  src=$(printf '.gpu/call-%02d' "$k")
  [ -f "$src/kit.part" ] || { echo "run: $src/kit.part is missing (carry it)" >&2; exit 1; }
  mkdir -p "$stage/parts"
  cp "$src/kit.part" "$(printf '%s/parts/%02d' "$stage" "$k")"
  [ -f "$src/kit.tar.xz.sha256" ] && cp "$src/kit.tar.xz.sha256" "$stage/"
  echo "run: staged part $k of $n in $stage/parts ($(ls "$stage/parts" | wc -l) present)"
}

unpack() {
  [ -x "$stage/kit/bin/vertebrad" ] && return 0
  [ -f "$stage/kit.tar.xz.sha256" ] || { echo "run: no parts staged in $stage (receive first)" >&2; exit 1; }
  cat "$stage"/parts/* > "$stage/kit.tar.xz"
  (cd "$stage" && sha256sum -c --quiet kit.tar.xz.sha256) ||
    { echo "run: the reassembled kit does not match its sha256 (a part is missing or stale)" >&2; exit 1; }
  tar -C "$stage" -xJf "$stage/kit.tar.xz" && rm -f "$stage/kit.tar.xz"
}

case "$mode" in
  receive) [ $# -eq 2 ] || { echo "usage: run.sh receive K N" >&2; exit 2; }; receive "$1" "$2"; exit 0 ;;
  measure) dry=0; out=${OUT:?measure runs on the device machine, which sets OUT} ;;
  dry-run)
    dry=1
    stage=${VERTEBRA_GPU_STAGE:-$PWD/.gpu/dry-stage}
    out=$PWD/.gpu/dry-run-out
    rm -rf "$stage" "$out"
    n=$(ls -d .gpu/call-* 2>/dev/null | wc -l)
    [ "$n" -gt 0 ] || { echo "run: no kit in .gpu/ (bash scripts/gpu/prepare.sh)" >&2; exit 1; }
    for k in $(seq 1 "$n"); do receive "$k" "$n" > /dev/null; done ;;
  *) sed -n '2,22p' "$0" >&2; exit 2 ;;
esac
steps=${*:-infer tensorrt turnaround unetr train}
mkdir -p "$out"
unpack
kit=$stage/kit
export ORT_DYLIB_PATH=$kit/ort/libonnxruntime.so.1.31.1
failed=()
log() { echo "run: $*" | tee -a "$out/run.log" >&2; }

if [ "$dry" = 0 ]; then
  provider=cuda
  # CUDA 13 cuBLAS/cuRAND/runtime and cuDNN 9 come from PyTorch's nvidia-* packages.
  nv=$(python3 -c 'import nvidia; print(" ".join(nvidia.__path__))' 2>/dev/null || true)
  libdirs=$( [ -n "$nv" ] && find $nv -name 'lib*.so*' -printf '%h\n' | sort -u | tr '\n' ':')
  export LD_LIBRARY_PATH=$kit/ort:${libdirs}${LD_LIBRARY_PATH:-}
  gpu=$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1)
  driver=$(nvidia-smi --query-gpu=driver_version --format=csv,noheader | head -1)
  idle=$(nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits | head -1)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$stage/site" "$kit"/wheels/*.whl ||
    log "MONAI wheel did not install"
  export PYTHONPATH=$stage/site${PYTHONPATH:+:$PYTHONPATH}
  py=python3
  batches_cpu=1,2,4,8,16; batches_paper=1,2,4,8; runs=20; paper_runs=10
  slices=(--slices 300); range=(--from T6 --to L5); in_plane=512
  unetr_args=(cuda 128 1,2,4,8 20 2 10); train_minutes=4; warmup=2
else
  provider=cpu
  export LD_LIBRARY_PATH=$kit/ort${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
  gpu="none (dry run on the CPU: $(nproc) cores)"; driver=none; idle=0
  py=${VERTEBRA_BENCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/bench-venv}/bin/python
  [ -x "$py" ] || py=python3
  batches_cpu=1,2; batches_paper=1; runs=2; paper_runs=1
  slices=(); range=(--from T12 --to L2); in_plane=256
  unetr_args=(cpu 64 1 1 1 2); train_minutes=0; warmup=1
fi
ort_v=$(basename "$(readlink -f "$ORT_DYLIB_PATH")" | sed 's/^libonnxruntime\.so\.//')
torch_v=$("$py" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo "not installed")
cat > "$out/env.json" <<EOF
{"mode": "$([ "$dry" = 1 ] && echo dry-run || echo measure)", "gpu": "$gpu", "driver": "$driver",
 "gpu_memory_used_mib_idle": $idle, "ort": "$ort_v", "torch": "$torch_v",
 "commit": "$(cat "$kit/COMMIT" 2>/dev/null)", "provider": "$provider", "steps": "$steps"}
EOF
log "kit $(cat "$kit/COMMIT" 2>/dev/null) on $gpu; provider $provider; steps: $steps"

# Runs "$@" under a time limit with GPU memory sampled into mem-TAG.txt.
sampled() {
  local tag=$1 limit=$2; shift 2
  local sampler=
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 100 > "$out/mem-$tag.txt" &
    sampler=$!
  fi
  timeout "$limit" "$@"
  local rc=$?
  [ -n "$sampler" ] && kill "$sampler" 2> /dev/null
  return $rc
}
step_failed() { failed+=("$1"); log "step $1 FAILED: $2"; }
# The paper preset's bundles (350 MB each): seeded random weights, exported where they run.
export_paper() {
  rm -rf "$stage/bundles/paper-fp32" "$stage/bundles/paper-fp16"
  mkdir -p "$stage/bundles"
  "$kit/bin/init_weights" paper "$stage/paper.safetensors" 1 > /dev/null || return 1
  for p in fp32 fp16; do
    "$kit/bin/vertebra-export" export --weights "$stage/paper.safetensors" \
      --out "$stage/bundles/paper-$p" --name "vertebraformer-paper-random-init-$p" \
      --precision "$p" --seed 1 --key "$kit/keys/demo.key" > /dev/null || return 1
  done
}

bench=("$kit/bin/bench_window" --trusted-keys "$kit/keys" --threads 0 --warmup "$warmup")
for step in $steps; do
  t0=$(date +%s)
  case "$step" in
    infer)
      if [ ! -d "$stage/bundles/paper-fp16" ]; then
        log "exporting the paper preset (seeded random weights, FP32 and FP16)"
        export_paper || step_failed infer "paper bundle export"
      fi
      for b in cpu-fp32:"$kit/bundles/cpu-fp32":input-64:"$batches_cpu":$runs \
               cpu-fp16:"$kit/bundles/cpu-fp16":input-64:"$batches_cpu":$runs \
               paper-fp32:"$stage/bundles/paper-fp32":input-128:"$batches_paper":$paper_runs \
               paper-fp16:"$stage/bundles/paper-fp16":input-128:"$batches_paper":$paper_runs; do
        IFS=: read -r tag dir input bs n <<< "$b"
        [ -d "$dir" ] || { step_failed "infer-$tag" "no bundle $dir"; continue; }
        log "bench_window $tag (provider $provider, batches $bs, $n runs)"
        sampled "$tag" 240 "${bench[@]}" --bundle "$dir" --input "$kit/inputs/$input.f32" \
          --provider "$provider" --batches "$bs" --runs "$n" --id-runs "$n" --compare-cpu \
          > "$out/bench-$tag.json" 2> "$out/bench-$tag.log" ||
          step_failed "infer-$tag" "$(tail -3 "$out/bench-$tag.log")"
      done ;;
    tensorrt)
      log "TensorRT provider on cpu-fp32 (engine cache: cold build, then warm)"
      for pass in cold warm; do
        if sampled "trt-$pass" 300 "${bench[@]}" --bundle "$kit/bundles/cpu-fp32" \
             --input "$kit/inputs/input-64.f32" --provider tensorrt --tensorrt-cache "$stage/trt-cache" \
             --batches 1 --runs "$runs" --id-runs 0 > "$out/bench-trt-$pass.json" 2> "$out/trt-$pass.log"; then
          echo "$pass run: load $(python3 -c 'import json,sys; print(round(json.load(open(sys.argv[1]))["load_s"], 2))' "$out/bench-trt-$pass.json") s (engine build included when cold)" >> "$out/tensorrt.txt"
        else
          rm -f "$out/bench-trt-$pass.json"
          echo "cannot start: $(grep -m1 -i 'tensorrt\|provider\|error' "$out/trt-$pass.log" | cut -c1-400)" >> "$out/tensorrt.txt"
          [ "$dry" = 1 ] || ldconfig -p | grep -q libnvinfer.so.10 ||
            echo "libnvinfer.so.10 is not on this machine (TensorRT 10 is not in the image)" >> "$out/tensorrt.txt"
          break
        fi
      done ;;
    turnaround)
      log "phantom ${in_plane}² ${range[*]} ${slices[*]} (2 lesions) and vertebrad analyze"
      if [ ! -d "$stage/study/dicom" ]; then
        "$kit/bin/vertebra-phantom" study --seed 42 "${range[@]}" --in-plane "$in_plane" \
          "${slices[@]}" --lesions 2 --format dicom --out "$stage/study" > /dev/null ||
          { step_failed turnaround "phantom"; continue; }
      fi
      for p in $provider cpu; do
        [ "$p" = cpu ] && [ "$provider" = cpu ] && [ -f "$out/turnaround-cpu.json" ] && continue
        rm -rf "$stage/analyze-$p"
        if sampled "turnaround-$p" 300 "$kit/bin/vertebrad" analyze "$stage/study/dicom" \
             --bundle "$kit/bundles/cpu-fp32" --trusted-keys "$kit/keys" --providers "$p" \
             --onnxruntime "$ORT_DYLIB_PATH" --out "$stage/analyze-$p" --quiet \
             > "$out/turnaround-$p.log" 2>&1; then
          python3 - "$stage/analyze-$p/result.json" "$p" > "$out/turnaround-$p.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
ran = d["model"]["execution_provider"]
if ran != sys.argv[2]:
    raise SystemExit(f"asked for {sys.argv[2]}, ran on {ran}")
print(json.dumps({"timings_s": d["timings_s"], "windows": d.get("windows"),
                  "execution_provider": ran, "vertebrae": len(d.get("vertebrae", []))}))
PY
          [ -s "$out/turnaround-$p.json" ] || step_failed "turnaround-$p" "wrong provider"
        else
          step_failed "turnaround-$p" "$(tail -3 "$out/turnaround-$p.log")"
        fi
      done ;;
    unetr)
      log "MONAI UNETR in PyTorch (${unetr_args[*]})"
      sampled unetr 420 "$py" "$kit/gpu_bench.py" unetr "${unetr_args[@]}" \
        > "$out/unetr.json" 2> "$out/unetr.log" ||
        { rm -f "$out/unetr.json"; step_failed unetr "$(tail -3 "$out/unetr.log")"; } ;;
    train)
      if [ ! -x "$kit/bin/vertebra-train" ]; then
        log "train: the kit has no vertebra-train (build it with WITH_TRAIN=1)"; continue
      fi
      if [ "$dry" = 1 ]; then recipe=tiny; args=(--backend flex --max-steps 3)
      else recipe=paper; args=(--backend wgpu --max-minutes "$train_minutes"); fi
      rm -rf "$stage/train"
      log "vertebra-train ${args[*]}"
      sampled train 420 "$kit/bin/vertebra-train" train --recipe "$kit/recipes/$recipe.json" \
        "${args[@]}" --out "$stage/train" --quiet > "$out/train.log" 2>&1 ||
        step_failed train "$(tail -3 "$out/train.log")"
      python3 - "$stage/train/metrics.jsonl" "${args[*]}" "$recipe" > "$out/train.json" <<'PY' || rm -f "$out/train.json"
import json, sys
steps = [json.loads(l) for l in open(sys.argv[1]) if '"kind":"step"' in l.replace(" ", "")]
if not steps:
    raise SystemExit("no step records")
rates = sorted(s["samples_per_s"] for s in steps[1:] or steps)
batch = 2 if sys.argv[3] == "paper" else 1
print(json.dumps({"backend": sys.argv[2], "recipe": sys.argv[3], "steps": steps[-1]["step"],
                  "median_step_s": batch / rates[len(rates) // 2],
                  "first_loss": round(steps[0]["loss"]["total"], 4),
                  "last_loss": round(steps[-1]["loss"]["total"], 4),
                  "losses": [s["loss"]["total"] for s in steps]}))
PY
      ;;
    *) step_failed "$step" "unknown step" ;;
  esac
  log "step $step: $(( $(date +%s) - t0 )) s"
done
python3 "$kit/gpu_bench.py" report "$out" | tee "$out/summary.md"
if [ ${#failed[@]} -gt 0 ]; then
  log "failed steps: ${failed[*]}"
  exit 1
fi
log "all steps passed; results in $out"
