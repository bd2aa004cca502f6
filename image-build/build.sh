#!/usr/bin/env bash
# Builds the VertebraFormer appliance image (docs/deployment.md, "Appliance image"):
#
#   out/rootfs/          the root file system (a directory; the nspawn test boots it)
#   out/rootfs.ext4      the same as an ext4 image: one A/B slot
#   out/disk.raw         GPT disk: root-a (rootfs.ext4), root-b (empty, same size),
#                        vertebra-data (persistent: PostgreSQL, spool, site configuration)
#   out/vmlinuz, out/initrd.img   the image's kernel and initramfs (direct boot under QEMU)
#   out/update.raucb     signed RAUC update bundle carrying rootfs.ext4
#   out/manifest.txt     every installed Debian package and version
#   out/build-info.txt   inputs (hashes), SOURCE_DATE_EPOCH, sizes and step timings
#
# Usage: image-build/build.sh [--vertebrad PATH] [--out DIR] [--version V]
#        image-build/build.sh --print-candidates   (the pinned list at the mirror's versions)
#   --vertebrad  the release binary (default $CARGO_TARGET_DIR/release/vertebrad, else
#                target/release/vertebrad; build it with `cargo build --release -p vertebrad`)
#   --out        output directory (default image-build/out, not committed)
#   --version    the update bundle's version (default: git describe)
# Environment:
#   SOURCE_DATE_EPOCH   default: the commit time of HEAD. File times in the image are clamped
#                       to it; mmdebstrap, mke2fs and systemd-repart use it or seeds from it.
#   VERTEBRA_IMAGE_ROOT_SIZE   size of each root slot (default 2G)
#   VERTEBRA_IMAGE_DATA_SIZE   size of the data partition in the disk image (default 1G;
#                              grow it to the disk when installing)
#   VERTEBRA_RAUC_KEYS  directory of the update-signing CA and key (default
#                       ~/.local/share/vertebra/rauc-dev). Made on first use: a DEVELOPMENT CA,
#                       to be replaced by the vendor's (docs/deployment.md).
#   VERTEBRA_IMAGE_TRUSTED_KEY  model-signing public key the image trusts (default
#                       keys/demo.pub, which only suits a demonstration image)
#   VERTEBRA_IMAGE_BUNDLE  model bundle directory (default models/demo-bundle, the demo's)
# Runs as root (mmdebstrap's root mode, file ownership in the images). Host tools:
# image-build/provision.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { echo "[image] $*"; }
fail() { echo "[image] FAILED: $*" >&2; exit 1; }

packages_file=$here/packages.txt
pinned() { grep -v '^\s*#' "$packages_file" | grep -v '^\s*$'; }
if [ "${1:-}" = "--print-candidates" ]; then
  for p in $(pinned | cut -d= -f1); do
    echo "$p=$(apt-cache policy "$p" | awk '/Candidate:/ {print $2}')"
  done
  exit 0
fi

bin=""
out=$here/out
version=""
while [ $# -gt 0 ]; do
  case $1 in
    --vertebrad) bin=$2; shift 2 ;;
    --out) out=$2; shift 2 ;;
    --version) version=$2; shift 2 ;;
    *) fail "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ "$(id -u)" = 0 ] || fail "run as root (mmdebstrap root mode; the image keeps file owners)"
for tool in mmdebstrap mke2fs systemd-repart rauc mksquashfs openssl readelf sfdisk; do
  command -v "$tool" >/dev/null || fail "$tool is missing: run image-build/provision.sh"
done

if [ -z "$bin" ]; then
  bin=${CARGO_TARGET_DIR:-$repo/target}/release/vertebrad
fi
[ -x "$bin" ] || fail "$bin is not an executable vertebrad (cargo build --release -p vertebrad, or --vertebrad PATH)"
ort=$(bash "$repo/scripts/provision-onnxruntime.sh" | tail -1)
[ -f "$ort" ] || fail "ONNX Runtime library not found at $ort"
bundle=${VERTEBRA_IMAGE_BUNDLE:-$repo/models/demo-bundle}
trusted_key=${VERTEBRA_IMAGE_TRUSTED_KEY:-$repo/keys/demo.pub}
[ -f "$bundle/manifest.toml" ] && [ -f "$bundle/manifest.sig" ] || fail "$bundle is not a signed model bundle"
[ -f "$trusted_key" ] || fail "trusted model key $trusted_key is missing"
root_size=${VERTEBRA_IMAGE_ROOT_SIZE:-2G}
data_size=${VERTEBRA_IMAGE_DATA_SIZE:-1G}
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$repo" log -1 --format=%ct)}
version=${version:-$(git -C "$repo" describe --always --dirty 2>/dev/null || echo "$SOURCE_DATE_EPOCH")}
keys=${VERTEBRA_RAUC_KEYS:-$HOME/.local/share/vertebra/rauc-dev}

# A GNU_STACK marked RWE makes the loader map every thread's stack executable, which
# MemoryDenyWriteExecute= (vertebrad.service) refuses: check before shipping the library.
if readelf -lW "$ort" | grep GNU_STACK | grep -q RWE; then
  fail "$ort asks for an executable stack (GNU_STACK RWE)"
fi

t_start=$(date +%s)
step_times=()
step() { # step NAME: records how long the previous step took
  local now; now=$(date +%s)
  [ -n "${step_name:-}" ] && step_times+=("$step_name: $((now - step_t)) s")
  step_name=$1; step_t=$now
  [ "$1" = done ] || say "$1"
}

# An interrupted mmdebstrap can leave /proc, /sys or /dev mounted inside the old root: never
# delete through a mount.
if findmnt -rn -o TARGET | grep -q "^$out/"; then
  fail "something is mounted under $out (an interrupted build?): unmount it first"
fi
rm -rf --one-file-system "$out"
mkdir -p "$out"
work=$out/.work
mkdir -p "$work"
root=$out/rootfs

step "mmdebstrap: Debian bookworm minbase + $(pinned | wc -l) pinned packages"
# The mirror: what this machine's apt uses (deb822 or one-line sources).
sources=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
  [ -s "$f" ] || continue
  # Backports (which image-build/provision.sh adds for the host's QEMU) stay out of the image.
  case $f in *backports*) continue ;;
             *.sources) grep -q '^Suites:.*bookworm' "$f" || continue ;;
             *) grep -q '^deb .*bookworm' "$f" || continue ;; esac
  sources+=("$f")
done
[ ${#sources[@]} -gt 0 ] || fail "no bookworm source in /etc/apt/sources.list*"
# Left out of every package (also for packages installed later: mmdebstrap keeps these in the
# image's dpkg configuration): documentation, manual pages, translations, and PostgreSQL's
# LLVM JIT with the LLVM and Z3 libraries that only it uses (jit = off in postgresql.conf).
# Copyright files stay: they are the licences the image must carry. PostgreSQL's own manual
# pages (/usr/share/postgresql/15/man) stay too: its maintainer scripts register them as
# update-alternatives targets and fail without them.
excludes=(
  '/usr/share/doc/*' '/usr/share/man/*' '/usr/share/info/*' '/usr/share/locale/*' '/usr/share/lintian/*'
  '/usr/lib/postgresql/15/lib/llvmjit*' '/usr/lib/postgresql/15/lib/bitcode/*'
  '/usr/lib/x86_64-linux-gnu/libLLVM-14.so*' '/usr/lib/llvm-14/*' '/usr/lib/x86_64-linux-gnu/libz3.so*'
)
dpkgopts=()
for e in "${excludes[@]}"; do dpkgopts+=(--dpkgopt="path-exclude=$e"); done
dpkgopts+=(--dpkgopt='path-include=/usr/share/doc/*/copyright')
include=$(pinned | paste -sd, -)
mmdebstrap --mode=root --variant=minbase --format=directory --architectures=amd64 \
  --aptopt='APT::Install-Recommends "false"' --aptopt='APT::Install-Suggests "false"' \
  "${dpkgopts[@]}" --include="$include" \
  bookworm "$root" "${sources[@]}" > "$work/mmdebstrap.log" 2>&1 \
  || { tail -30 "$work/mmdebstrap.log" >&2; fail "mmdebstrap failed (log: $work/mmdebstrap.log)"; }

step "installing vertebrad, ONNX Runtime, the model bundle, units and configuration"
# Owned by root whatever user owns the checkout.
cp -a --no-preserve=ownership "$here/overlay/." "$root/"
install -D -m 0755 "$bin" "$root/usr/bin/vertebrad"
install -D -m 0644 "$ort" "$root/usr/lib/vertebrad/$(basename "$ort")"
install -d -m 0755 "$root/usr/share/vertebrad/model"
install -m 0644 "$bundle"/* "$root/usr/share/vertebrad/model/"
for unit in "$repo"/systemd/*.service; do
  install -m 0644 "$unit" "$root/usr/lib/systemd/system/"
done
# The GPU drop-in ships inactive: a GPU host copies it to vertebrad.service.d/ (and needs the
# GPU ONNX Runtime build, docs/deployment.md).
install -D -m 0644 "$repo/systemd/vertebrad-gpu.conf" "$root/usr/share/vertebrad/vertebrad-gpu.conf"
install -D -m 0644 "$repo/systemd/vertebrad.sysusers" "$root/usr/lib/sysusers.d/vertebrad.conf"
install -D -m 0644 "$repo/systemd/vertebrad.tmpfiles" "$root/usr/lib/tmpfiles.d/vertebrad.conf"
install -D -m 0755 "$repo/systemd/vertebrad-db-init" "$root/usr/libexec/vertebrad/db-init"
install -D -m 0755 "$repo/systemd/vertebrad-tls-init" "$root/usr/libexec/vertebrad/tls-init"
install -D -m 0644 "$repo/docs/deployment.md" "$root/usr/share/doc/vertebrad/deployment.md"
systemd-sysusers --root="$root" 2>&1 | sed "s/^/[image]   /"
systemd-tmpfiles --root="$root" --create "$root/usr/lib/tmpfiles.d/vertebrad.conf"
install -m 0644 "$repo/systemd/vertebrad.toml" "$root/etc/vertebra/vertebrad.toml"
install -m 0644 "$trusted_key" "$root/etc/vertebra/trusted-keys/$(basename "$trusted_key")"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tvertebra\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' > "$root/etc/hosts"

# The update-signing keys: a development CA made once per build machine, outside the
# repository. A vendor replaces them with its own (docs/deployment.md).
if [ ! -f "$keys/ca.cert.pem" ]; then
  say "making a DEVELOPMENT update-signing CA in $keys (replace with the vendor's)"
  install -d -m 0700 "$keys"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
    -subj "/O=VertebraFormer DEVELOPMENT/CN=VertebraFormer development update CA" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign \
    -keyout "$keys/ca.key.pem" -out "$keys/ca.cert.pem" 2>/dev/null
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -subj "/O=VertebraFormer DEVELOPMENT/CN=VertebraFormer development update signer" \
    -keyout "$keys/signer.key.pem" -out "$keys/signer.csr" 2>/dev/null
  openssl x509 -req -in "$keys/signer.csr" -CA "$keys/ca.cert.pem" -CAkey "$keys/ca.key.pem" \
    -CAcreateserial -days 3650 -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n') \
    -out "$keys/signer.cert.pem" 2>/dev/null
  rm -f "$keys/signer.csr"
  chmod 0600 "$keys"/*.key.pem
fi
install -m 0644 "$keys/ca.cert.pem" "$root/etc/rauc/keyring.pem"
# PostgreSQL's package made the cluster with the first port free on the BUILD host (5433 if
# the build host runs a server on 5432); the appliance's clients (psql in vertebrad-db-init,
# vertebrad) use the default 5432 on the unix socket.
sed -i -E 's/^port = [0-9]+/port = 5432/' "$root/etc/postgresql/15/main/postgresql.conf"
grep -q '^port = 5432' "$root/etc/postgresql/15/main/postgresql.conf" || fail "cannot set PostgreSQL's port"

systemctl --root="$root" enable systemd-networkd.service systemd-resolved.service \
  systemd-timesyncd.service postgresql.service vertebrad.service vertebrad-db-init.service \
  vertebrad-tls-init.service data.mount vertebra-data-setup.service var-lib-postgresql.mount \
  var-lib-vertebra.mount etc-vertebra.mount vertebra-mark-good.service 2>"$work/enable.log" \
  || { cat "$work/enable.log" >&2; fail "systemctl enable failed"; }
ln -sf /run/systemd/resolve/stub-resolv.conf "$root/etc/resolv.conf"

# What lives on the data partition moves to the factory copy that vertebra-data-setup
# fills the partition from on first boot; the root keeps empty mount points.
install -d -m 0755 "$root/usr/share/factory/var/lib" "$root/usr/share/factory/etc" "$root/data"
mv "$root/var/lib/postgresql" "$root/usr/share/factory/var/lib/postgresql"
mv "$root/etc/vertebra" "$root/usr/share/factory/etc/vertebra"
install -d -m 0755 "$root/var/lib/postgresql" "$root/etc/vertebra"
install -d -m 0700 "$root/var/lib/vertebra"

# Build leftovers and per-machine identity: made fresh on each appliance's first boot.
rm -rf "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* "$root"/var/log/*.log \
  "$root"/var/log/apt/* "$root"/tmp/* "$root"/var/cache/ldconfig/aux-cache
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
cp -L "$root/boot/vmlinuz" "$out/vmlinuz" 2>/dev/null || cp "$root"/boot/vmlinuz-* "$out/vmlinuz"
cp -L "$root/boot/initrd.img" "$out/initrd.img" 2>/dev/null || cp "$root"/boot/initrd.img-* "$out/initrd.img"
(chroot "$root" dpkg-query -W -f='${Package}=${Version}\n' | sort) > "$out/manifest.txt"
# Every pinned package must be installed at exactly its pinned version.
while read -r want; do
  grep -qx -- "$want" "$out/manifest.txt" || fail "$want is not what was installed ($(grep "^${want%%=*}=" "$out/manifest.txt" || echo absent))"
done < <(pinned)
# Clamp file times for reproducible images (mksquashfs in the RAUC bundle reads
# SOURCE_DATE_EPOCH itself).
find "$root" -xdev -newermt "@$SOURCE_DATE_EPOCH" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +

step "ext4 slot image (mke2fs -d, $root_size) and data image ($data_size)"
# Fixed UUIDs and hash seed derived from SOURCE_DATE_EPOCH; E2FSPROGS_FAKE_TIME pins the
# superblock times.
uuid_of() { python3 -c "import uuid,sys; print(uuid.uuid5(uuid.NAMESPACE_URL, sys.argv[1]))" "$1"; }
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -t ext4 -L root -U "$(uuid_of "vertebra-root-$SOURCE_DATE_EPOCH")" \
  -E "hash_seed=$(uuid_of "vertebra-root-hash-$SOURCE_DATE_EPOCH")" -d "$root" "$out/rootfs.ext4" "$root_size"
mkdir -p "$work/data-empty"
E2FSPROGS_FAKE_TIME=$SOURCE_DATE_EPOCH mke2fs -q -t ext4 -L vertebra-data -U "$(uuid_of "vertebra-data-$SOURCE_DATE_EPOCH")" \
  -E "hash_seed=$(uuid_of "vertebra-data-hash-$SOURCE_DATE_EPOCH")" -d "$work/data-empty" "$work/data.ext4" "$data_size"

step "GPT disk (systemd-repart): root-a, root-b, vertebra-data"
mkdir -p "$work/repart.d"
root_bytes=$(stat -c %s "$out/rootfs.ext4")
for f in "$here"/repart.d/*.conf; do
  sed -e "s|@ROOT_IMAGE@|$out/rootfs.ext4|" -e "s|@ROOT_SIZE@|$root_bytes|" \
    -e "s|@DATA_IMAGE@|$work/data.ext4|" "$f" > "$work/repart.d/$(basename "$f")"
done
systemd-repart --empty=create --size=auto --dry-run=no --no-pager \
  --seed="$(uuid_of "vertebra-disk-$SOURCE_DATE_EPOCH")" \
  --definitions="$work/repart.d" "$out/disk.raw" > "$work/repart.log" 2>&1 \
  || { cat "$work/repart.log" >&2; fail "systemd-repart failed"; }
# repart copies the slot and data images block by block, zeros included: make them holes again.
fallocate --dig-holes "$out/disk.raw"

step "RAUC update bundle (verity, signed with $keys)"
mkdir -p "$work/bundle"
ln "$out/rootfs.ext4" "$work/bundle/rootfs.ext4"
cat > "$work/bundle/manifest.raucm" <<EOF
[update]
compatible=vertebra-appliance-x86_64
version=$version
build=$SOURCE_DATE_EPOCH

[bundle]
format=verity

[image.rootfs]
filename=rootfs.ext4
EOF
rauc bundle --cert="$keys/signer.cert.pem" --key="$keys/signer.key.pem" \
  --keyring="$keys/ca.cert.pem" --mksquashfs-args="-comp zstd" \
  "$work/bundle" "$out/update.raucb" > "$work/rauc.log" 2>&1 \
  || { cat "$work/rauc.log" >&2; fail "rauc bundle failed"; }
rm -rf "$work/bundle" "$work/data-empty"

step done
du_root=$(du -sx --block-size=1M "$root" | cut -f1)
used_ext4=$(du --block-size=1M "$out/rootfs.ext4" | cut -f1)
{
  echo "version: $version"
  echo "SOURCE_DATE_EPOCH: $SOURCE_DATE_EPOCH"
  echo "vertebrad: $(sha256sum "$bin" | cut -d' ' -f1) ($bin)"
  echo "onnxruntime: $(sha256sum "$ort" | cut -d' ' -f1) ($(basename "$ort"))"
  echo "model bundle manifest: $(sha256sum "$bundle/manifest.toml" | cut -d' ' -f1)"
  echo "packages: $(wc -l < "$out/manifest.txt") installed"
  echo "root file system: $du_root MiB (ext4 slot image ${root_size}, $used_ext4 MiB allocated)"
  echo "disk.raw: $(( $(stat -c %s "$out/disk.raw") / 1048576 )) MiB apparent, $(du --block-size=1M "$out/disk.raw" | cut -f1) MiB allocated"
  echo "update.raucb: $(( $(stat -c %s "$out/update.raucb") / 1048576 )) MiB"
  echo "largest parts of the root: $(du -sx --block-size=1M "$root"/usr/lib/modules "$root"/usr/bin/vertebrad "$root"/usr/lib/vertebrad "$root"/usr/lib/postgresql "$root"/usr/share/vertebrad "$root"/boot 2>/dev/null | awk '{printf "%s %s MiB; ", $2, $1}' | sed "s|$root||g")"
  printf 'step: %s\n' "${step_times[@]}"
  echo "total: $(( $(date +%s) - t_start )) s"
} > "$out/build-info.txt"
cat "$out/build-info.txt"
sfdisk --dump "$out/disk.raw" | sed -n '/^label:/,$p' | grep -v '^$'
say "done: $out"
