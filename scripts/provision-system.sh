#!/usr/bin/env bash
# Installs the Debian packages the test suite talks to (idempotent). Needs root; without root it
# only reports what is missing.
set -euo pipefail
packages=(dcmtk postgresql openssl systemd chromium chromium-driver)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
  echo "provision-system: all packages present (${packages[*]})"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "provision-system: missing Debian packages: ${missing[*]} (run as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "provision-system: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
