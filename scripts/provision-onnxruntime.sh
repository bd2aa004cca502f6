#!/usr/bin/env bash
# Provisions the ONNX Runtime shared library that the export parity tests and the appliance load
# at run time (ort's `load-dynamic`): a pinned 1.31.1 wheel from PyPI, checked against the
# sha256 recorded below, with its libraries extracted (and each checked) into a cache
# directory. Idempotent: a stamp file records what was installed.
#
# Usage: scripts/provision-onnxruntime.sh [--gpu] [DIR]
#   (default) CPU: onnxruntime==1.31.1 → libonnxruntime.so.1.31.1;
#             DIR defaults to $VERTEBRA_ORT_DIR, else ~/.cache/vertebra/onnxruntime-1.31.1.
#   --gpu     GPU hosts: onnxruntime-gpu==1.31.1 → libonnxruntime.so.1.31.1 plus the CUDA and
#             TensorRT execution-provider libraries (libonnxruntime_providers_{shared,cuda,
#             tensorrt}.so), which ONNX Runtime loads from the directory of
#             libonnxruntime.so; CUDA 12/13 runtime, cuDNN 9 and TensorRT 10 libraries come from
#             the host (docs/inference.md). DIR defaults to
#             $VERTEBRA_ORT_DIR, else ~/.cache/vertebra/onnxruntime-gpu-1.31.1. The wheel is 256 MB.
# Prints the library's path on its last line; tests find it there or via ORT_DYLIB_PATH.
set -euo pipefail

version=1.31.1
flavour=cpu
if [ "${1:-}" = "--gpu" ]; then
  flavour=gpu
  shift
fi
lib="libonnxruntime.so.${version}"
# Each wheel is Python-tagged but its libraries are the same C libraries for every tag: we pin
# one wheel (cp311, manylinux_2_28) so the hashes do not depend on the local Python.
if [ "$flavour" = cpu ]; then
  package=onnxruntime
  wheel="onnxruntime-${version}-cp311-cp311-manylinux_2_28_x86_64.whl"
  wheel_sha256=5752bd508126ae7c49894d3b9d2e83f0c3d487319246d04c444b393308d7ad7f
  # file name → sha256, the main library first
  files=("$lib=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3")
  default_dir=onnxruntime-${version}
else
  package=onnxruntime-gpu
  wheel="onnxruntime_gpu-${version}-cp311-cp311-manylinux_2_28_x86_64.whl"
  wheel_sha256=e26c475fe361b2015f45b4b824bd13f0bb20204e59b62814e6f0acd5f3d491a6
  files=(
    "$lib=5104254339ecadae808da771bd0b63b240f0dbd466514234905e54372435c303"
    "libonnxruntime_providers_shared.so=086ec1d5388f64153d9c63470d126693db9a182c8ce236d3a1119068471b8a0d"
    "libonnxruntime_providers_cuda.so=d5290158115fa5569a3fe8f1f4037ee9b0e86658a96e52f852bbb7039aa88137"
    "libonnxruntime_providers_tensorrt.so=1882ee49fdb0e6fc2d272b00cfaf9a3310bf8580a34385c0eec4d82014ea172e"
  )
  default_dir=onnxruntime-gpu-${version}
fi

dir=${1:-${VERTEBRA_ORT_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/$default_dir}}
stamp="$dir/.provisioned"
want="$wheel_sha256 ${files[*]}"

installed() {
  [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] || return 1
  local f
  for f in "${files[@]}"; do
    [ -f "$dir/${f%%=*}" ] && [ "$(sha256sum "$dir/${f%%=*}" | cut -d' ' -f1)" = "${f#*=}" ] || return 1
  done
}
if installed; then
  echo "provision-onnxruntime: $dir is up to date" >&2
  echo "$dir/$lib"
  exit 0
fi

py=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}/bin/python
[ -x "$py" ] || py=$(command -v python3) || { echo "provision-onnxruntime: python3 with pip is required" >&2; exit 1; }
"$py" -m pip --version >/dev/null 2>&1 || { echo "provision-onnxruntime: $py has no pip" >&2; exit 1; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "${package}==${version} --hash=sha256:${wheel_sha256}" > "$tmp/req.txt"
echo "provision-onnxruntime: downloading $wheel" >&2
"$py" -m pip download --quiet --disable-pip-version-check --no-deps --require-hashes \
  --only-binary=:all: --platform manylinux_2_28_x86_64 --python-version 3.11 \
  --implementation cp --abi cp311 -r "$tmp/req.txt" -d "$tmp" >&2
got=$(sha256sum "$tmp/$wheel" | cut -d' ' -f1)
if [ "$got" != "$wheel_sha256" ]; then
  echo "provision-onnxruntime: $wheel has sha256 $got, expected $wheel_sha256" >&2
  exit 1
fi
"$py" - "$tmp/$wheel" "$tmp" "${files[@]%%=*}" <<'PY'
import sys, zipfile
wanted = {"onnxruntime/capi/" + f for f in sys.argv[3:]}
with zipfile.ZipFile(sys.argv[1]) as z:
    for name in z.namelist():
        if name in wanted:
            z.extract(name, sys.argv[2])
PY
for f in "${files[@]}"; do
  name=${f%%=*}
  got=$(sha256sum "$tmp/onnxruntime/capi/$name" | cut -d' ' -f1)
  if [ "$got" != "${f#*=}" ]; then
    echo "provision-onnxruntime: $name has sha256 $got, expected ${f#*=}" >&2
    exit 1
  fi
  # Some builds need an executable stack, which hardened services (MemoryDenyWriteExecute)
  # refuse.
  if command -v readelf >/dev/null && readelf -lW "$tmp/onnxruntime/capi/$name" | grep GNU_STACK | grep -q 'RWE'; then
    echo "provision-onnxruntime: $name wants an executable stack; refusing" >&2
    exit 1
  fi
done
mkdir -p "$dir"
for f in "${files[@]}"; do
  install -m 0644 "$tmp/onnxruntime/capi/${f%%=*}" "$dir/${f%%=*}"
done
ln -sf "$lib" "$dir/libonnxruntime.so"
echo "$want" > "$stamp"
echo "provision-onnxruntime: ready ($flavour, $dir)" >&2
echo "$dir/$lib"
