#!/usr/bin/env bash
# Provisions the ONNX Runtime shared library that the export parity tests and the appliance load
# at run time (ort's `load-dynamic`): the pinned onnxruntime==1.31.1 CPU wheel from PyPI,
# checked against the sha256 recorded below, with libonnxruntime.so.1.31.1 extracted (and
# checked) into a cache directory. Idempotent: a stamp file records what was installed.
#
# Usage: scripts/provision-onnxruntime.sh [DIR]
#   DIR defaults to $VERTEBRA_ORT_DIR, else ${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/onnxruntime-1.31.1.
# Prints the library's path on its last line; tests find it there or via ORT_DYLIB_PATH.
set -euo pipefail

version=1.31.1
# The wheel is Python-tagged but its libonnxruntime.so is the same C library for every tag: we
# pin one wheel (cp311, manylinux_2_28) so the hash does not depend on the local Python.
wheel="onnxruntime-${version}-cp311-cp311-manylinux_2_28_x86_64.whl"
wheel_sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
lib="libonnxruntime.so.${version}"
lib_sha256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3

dir=${1:-${VERTEBRA_ORT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/onnxruntime-${version}}}
stamp="$dir/.provisioned"
want="$wheel_sha256 $lib_sha256"

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -f "$dir/$lib" ] \
  && [ "$(sha256sum "$dir/$lib" | cut -d' ' -f1)" = "$lib_sha256" ]; then
  echo "provision-onnxruntime: $dir is up to date" >&2
  echo "$dir/$lib"
  exit 0
fi

py=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}/bin/python
[ -x "$py" ] || py=$(command -v python3) || { echo "provision-onnxruntime: python3 with pip is required" >&2; exit 1; }
"$py" -m pip --version >/dev/null 2>&1 || { echo "provision-onnxruntime: $py has no pip" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "onnxruntime==${version} --hash=sha256:${wheel_sha256}" > "$tmp/req.txt"
echo "provision-onnxruntime: downloading $wheel" >&2
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
  --implementation cp --abi cp311 -r "$tmp/req.txt" -d "$tmp" >&2
got=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
if [ "$got" != "$wheel_sha256" ]; then
  echo "provision-onnxruntime: $wheel has sha256 $got, expected $wheel_sha256" >&2
  exit 1
fi
"$py" - "$tmp/$wheel" "$tmp" <<'PY'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name.startswith("onnxruntime/capi/libonnxruntime.so"):
            z.extract(name, sys.argv[2])
PY
got=$(sha256sum "$tmp/onnxruntime/capi/$lib" | cut -d' ' -f1)
if [ "$got" != "$lib_sha256" ]; then
  echo "provision-onnxruntime: $lib has sha256 $got, expected $lib_sha256" >&2
  exit 1
fi
# Some builds need an executable stack, which hardened services (MemoryDenyWriteExecute) refuse.
if command -v readelf >/dev/null && readelf -lW "$tmp/onnxruntime/capi/$lib" | grep GNU_STACK | grep -q 'RWE'; then
  echo "provision-onnxruntime: $lib wants an executable stack; refusing" >&2
  exit 1
fi
mkdir -p "$dir"
install -m 0644 "$tmp/onnxruntime/capi/$lib" "$dir/$lib"
ln -sf "$lib" "$dir/libonnxruntime.so"
echo "$want" > "$stamp"
echo "provision-onnxruntime: ready ($dir)" >&2
echo "$dir/$lib"
