#!/usr/bin/env bash
# Builds the GPU measurement kit here (x86-64 build machine) for scripts/gpu/run.sh on a GPU
# machine that has CUDA 13, PyTorch and Python but no Rust toolchain and no network; see
# docs/gpu.md for the whole procedure.
#
#   bash scripts/gpu/prepare.sh            # kit in .gpu/ (git-ignored)
#   bash scripts/gpu/prepare.sh park       # move models/ out of the tree that device calls copy
#   bash scripts/gpu/prepare.sh unpark     # and back
#
# PROFILE (default bench-fast) picks the cargo profile; XZ_LEVEL (default 6) the compression;
# SKIP_BUILD=1 takes the binaries already
# built in that profile's folder (e.g. by the test suite, for a dry run) without building.
#
# The kit: release-like binaries (profile bench-fast: vertebrad, bench_window, vertebra-phantom,
# vertebra-export, init_weights; with WITH_TRAIN=1 also vertebra-train built with the wgpu
# backend), the committed demo bundle (`cpu` preset, FP32) and its FP16 export, the seeded
# window inputs, the MONAI wheel (the GPU image has torch and einops but not MONAI), and the
# ONNX Runtime GPU libraries of the pinned `onnxruntime-gpu==1.31.1` wheel (libonnxruntime,
# the shared and CUDA providers, the TensorRT provider). The `paper` bundles are made on the
# GPU machine from seeded random weights (350 MB each: too large to carry).
#
# Device calls copy the working tree and at most 64 MiB in all, but the CUDA provider alone is
# 284 MB (231 MB compressed): the kit is one xz tarball split into parts of PART_MIB (default
# 50) in .gpu/call-NN/, one part per device call, which run.sh appends on the (warm) device
# machine. The tracked models (~80 MB) must not travel: `park` moves them aside first.
set -euo pipefail
cd "$(dirname "$0")/../.."
kit_root=.gpu
parked=$kit_root/parked

case "${1:-build}" in
  park)
    mkdir -p "$parked"
    [ -e models ] || { echo "prepare: models/ is already parked ($parked/models)" >&2; exit 1; }
    mv models "$parked/models"
    echo "prepare: models/ moved to $parked/models; run 'bash scripts/gpu/prepare.sh unpark' after the device calls"
    exit 0 ;;
  unpark)
    [ -e "$parked/models" ] || { echo "prepare: nothing parked in $parked" >&2; exit 1; }
    [ -e models ] && { echo "prepare: models/ exists; refusing to overwrite it" >&2; exit 1; }
    mv "$parked/models" models
    echo "prepare: models/ restored"
    exit 0 ;;
  build) ;;
  *) echo "usage: prepare.sh [build|park|unpark]" >&2; exit 2 ;;
esac
[ -d models/demo-bundle ] || { echo "prepare: models/demo-bundle is missing (parked? run unpark)" >&2; exit 1; }

profile=${PROFILE:-bench-fast}
part_mib=${PART_MIB:-50}
wheel_dir=${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/wheels
ort_wheel=onnxruntime_gpu-1.31.1-cp312-cp312-manylinux_2_28_x86_64.whl
ort_sha256=05d548956197b9d01f59b625de740e0d6be3593f874e241a12dc0362650ecdf7
monai_wheel=monai-1.6.1-py3-none-any.whl
bin_dir=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")

if [ "${SKIP_BUILD:-0}" = 1 ]; then
  echo "prepare: SKIP_BUILD=1: using the binaries already in $bin_dir" >&2
else
  echo "prepare: building (profile $profile)" >&2
  cargo build --quiet --locked --profile "$profile" -p vertebrad --bin vertebrad --example bench_window
  cargo build --quiet --locked --profile "$profile" -p vertebra-core --bin vertebra-phantom
  cargo build --quiet --locked --profile "$profile" -p vertebra-export --bin vertebra-export --example init_weights
  if [ "${WITH_TRAIN:-0}" = 1 ]; then
    # TRAIN_FEATURES= (empty) builds the CPU-only trainer, for a dry run of the train step.
    cargo build --quiet --locked --profile "$profile" -p vertebra-trainer \
      --features "${TRAIN_FEATURES-wgpu}" --bin vertebra-train
  fi
fi
mkdir -p "$wheel_dir"
if ! echo "$ort_sha256  $wheel_dir/$ort_wheel" | sha256sum -c --status 2>/dev/null; then
  echo "prepare: downloading onnxruntime-gpu 1.31.1 (256 MB)" >&2
  python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 -d "$wheel_dir" onnxruntime-gpu==1.31.1
  echo "$ort_sha256  $wheel_dir/$ort_wheel" | sha256sum -c --quiet
fi
[ -f "$wheel_dir/$monai_wheel" ] ||
  python3 -m pip download --quiet --no-deps --only-binary=:all: -d "$wheel_dir" monai==1.6.1

rm -rf "$kit_root"/kit "$kit_root"/call-* "$kit_root"/kit.tar.xz
kit=$kit_root/kit
mkdir -p "$kit"/{bin,bundles,inputs,keys,ort,wheels}
for b in vertebrad vertebra-phantom vertebra-export; do cp "$bin_dir/$b" "$kit/bin/"; done
cp "$bin_dir/examples/bench_window" "$bin_dir/examples/init_weights" "$kit/bin/"
[ "${WITH_TRAIN:-0}" = 1 ] && cp "$bin_dir/vertebra-train" "$kit/bin/"
strip --strip-debug "$kit"/bin/*   # bench-fast keeps debug info: 5x the size
cp -r trainer/recipes "$kit/recipes"
cp keys/*.pub keys/demo.key "$kit/keys/"
cp -r models/demo-bundle "$kit/bundles/cpu-fp32"
"$kit/bin/vertebra-export" export --weights models/cpu-demo/checkpoints/best/model.safetensors \
  --out "$kit/bundles/cpu-fp16" --name vertebraformer-cpu-demo-fp16 --precision fp16 \
  --seed 2026 --key keys/demo.key > /dev/null
bash scripts/provision-python.sh >&2   # numpy for the seeded inputs
"${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}/bin/python" \
  scripts/bench_window.py inputs "$kit/inputs" > "$kit/inputs/inputs.json"
unzip -q -j -o "$wheel_dir/$ort_wheel" -d "$kit/ort" \
  'onnxruntime/capi/libonnxruntime.so.1.31.1' 'onnxruntime/capi/libonnxruntime_providers_shared.so' \
  'onnxruntime/capi/libonnxruntime_providers_cuda.so' 'onnxruntime/capi/libonnxruntime_providers_tensorrt.so'
cp "$wheel_dir/$monai_wheel" "$kit/wheels/"
cp scripts/gpu/gpu_bench.py "$kit/"
git rev-parse HEAD > "$kit/COMMIT" 2>/dev/null || true

echo "prepare: compressing the kit (xz; a few minutes)" >&2
tar -C "$kit_root" -cf - kit | xz -T0 "-${XZ_LEVEL:-6}" > "$kit_root/kit.tar.xz"
(cd "$kit_root" && sha256sum kit.tar.xz > kit.tar.xz.sha256)
split -b "${part_mib}M" -d -a 2 "$kit_root/kit.tar.xz" "$kit_root/part-"
n=0
for p in "$kit_root"/part-*; do
  n=$((n + 1))
  d=$(printf '%s/call-%02d' "$kit_root" "$n")
  mkdir -p "$d"
  mv "$p" "$d/kit.part"
done
cp "$kit_root/kit.tar.xz.sha256" "$kit_root/call-01/"
rm -f "$kit_root/kit.tar.xz"
tree_mib=$(git ls-files -z | xargs -0 du -cb 2>/dev/null | tail -1 | awk '{printf "%d", $1 / 1048576}')
{
  echo "GPU kit: $(du -sh "$kit" | cut -f1) in $n parts of at most $part_mib MiB ($(date -u +%FT%TZ))"
  echo "Working tree that each device call copies: $tree_mib MiB tracked (park models/ first: ~80 MiB)"
  echo
  echo "Device calls, back to back (the machine stays warm 30 s after each call):"
  for i in $(seq 1 "$n"); do
    printf '  run carry=[".gpu/call-%02d"] command="bash scripts/gpu/run.sh receive %d %d"\n' "$i" "$i" "$n"
  done
  echo '  run command="bash scripts/gpu/run.sh measure"  (timeout_s 600; results in $OUT)'
} | tee "$kit_root/plan.txt"
echo "prepare: dry run here with: bash scripts/gpu/run.sh dry-run" >&2
