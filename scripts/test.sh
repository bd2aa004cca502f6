#!/usr/bin/env bash
# The whole test suite: provisions what the tests need (Debian packages, the Python reference
# tools), then runs every Rust test in the workspace, doc tests included.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/provision-system.sh
bash scripts/provision-python.sh
# ONNX Runtime for the export parity tests (pinned wheel, sha256-checked, cached).
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$(bash scripts/provision-onnxruntime.sh | tail -1)}
export VERTEBRA_VENV=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast --lib --bins --tests
fi
cargo test --workspace --doc
