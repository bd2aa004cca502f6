#!/usr/bin/env bash
# Installs, idempotently, the host tools that image-build/build.sh and image-build/test.sh need
# (docs/deployment.md, "Appliance image"). Run as root. Only for building and testing the
# appliance image: CI does not need them, so they are not in scripts/provision-system.sh.
#
#   mmdebstrap            the root file system (variant minbase) from the configured mirror
#   e2fsprogs, dosfstools mke2fs -d (ext4 without loop devices); mkfs.vfat for systemd-repart
#   fdisk                 sfdisk, to read back the GPT layout
#   systemd-container     systemd-nspawn (boot test) and systemd-repart's runtime pieces
#   rauc                  the A/B update bundles (bundle, info, verify)
#   squashfs-tools        RAUC bundles are squashfs images
#   cryptsetup-bin        veritysetup: test.sh checks a bundle's payload against its signed
#                         dm-verity root hash, as the appliance's kernel does on install
#   qemu-system-x86       the disk-image boot test (TCG). From bookworm-backports: the host
#                         already has backports' qemu-utils, and bookworm's qemu-system-x86
#                         7.2 conflicts with it. The backports source uses the mirror of
#                         /etc/apt/sources.list.d/debian.sources.
#   dcmtk, openssl, curl  the DICOM and HTTPS checks of test.sh
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "image-build/provision.sh: run as root" >&2; exit 1; }

packages=(mmdebstrap e2fsprogs dosfstools fdisk systemd-container rauc squashfs-tools
  cryptsetup-bin dcmtk openssl curl)
missing=()
for p in "${packages[@]}" qemu-system-x86; do
  dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && { echo "image-build/provision.sh: all host tools present"; exit 0; }

backports=/etc/apt/sources.list.d/bookworm-backports.sources
if [ ! -f "$backports" ]; then
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  mirror=${mirror:-http://deb.debian.org/debian}
  cat > "$backports" <<SRC
Types: deb
URIs: $mirror
Suites: bookworm-backports
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${packages[@]}"
# Backports packages are never chosen by default (priority 100): ask for them by release.
apt-get install -y -qq --no-install-recommends -t bookworm-backports qemu-system-x86
echo "image-build/provision.sh: installed ${missing[*]}"
