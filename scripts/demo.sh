#!/usr/bin/env bash
# The main job (README): runs the furthest real path of the appliance that exists today.
#
# Today that is the phantom front end: generate a synthetic spinal CT study with lesions
# (512x512 slices, ~300 slices, thoracolumbar), write it as NIfTI (image, label map, mask,
# VerSe-style ground truth JSON) and as a DICOM CT series, and print the ground-truth summary
# and where everything is. Later issues extend this script to the whole appliance.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${VERTEBRA_DEMO_OUT:-$PWD/out/demo}
seed=${VERTEBRA_DEMO_SEED:-2026}
echo "[demo] building vertebra-phantom (optimised; the first build takes a few minutes)..."
cargo build --quiet --profile bench-fast -p vertebra-core --bin vertebra-phantom
bin=${CARGO_TARGET_DIR:-target}/bench-fast/vertebra-phantom
rm -rf "$out"
echo "[demo] generating the phantom study into $out"
"$bin" study --seed "$seed" --from T11 --to L5 --domain ct-standard --in-plane 512 \
  --lesions 3 --format both --out "$out"
echo
echo "[demo] done. Not for diagnostic use: synthetic data for testing the appliance."
