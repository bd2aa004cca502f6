#!/usr/bin/env bash
# Tests the appliance image end to end (docs/deployment.md, "Appliance image"). Not in
# .ci/run: it needs a release vertebrad (a fat-LTO build, ~26 min on two cores) and boots
# the image twice; its measured duration is in docs/deployment.md.
#
#   1. provision the host tools, build the image (image-build/build.sh) unless --no-build
#   2. static checks of the root file system: pinned packages, units enabled, configuration,
#      the model bundle and trusted key, no docs/man pages/LLVM, PostgreSQL on its unix socket
#      only, libonnxruntime without an executable stack; the GPT layout of disk.raw
#   3. RAUC: `rauc info` verifies update.raucb against the image's keyring and refuses a
#      bundle with a changed signature byte or signed by another CA; the payload matches the
#      signed dm-verity root hash (veritysetup), and a changed payload byte does not
#   4. systemd-nspawn --boot --register=no --keep-unit --ephemeral of the root file system
#      (sharing the host's network: PostgreSQL is on a unix socket only, and vertebrad's ports
#      104, 2762 and 8443 must be free): /healthz over HTTPS verified with the certificate the
#      image made on its first boot; C-ECHO (DCMTK echoscu); a phantom study sent with DCMTK
#      storescu, and the SEG and SR back at a DCMTK storescp on the host
#   5. QEMU (TCG; /dev/kvm does not work here) boots disk.raw with the image's kernel and
#      initramfs (direct boot, root=PARTLABEL=root-a), the data partition mounted and filled
#      on first boot, to /healthz (forwarded to a host port)
#   In both boots no unit may fail (in the container: except networkd-wait-online, as
#   networkd needs CAP_NET_ADMIN, which a container sharing the host's network lacks).
#
# Usage: image-build/test.sh [--no-build] [--out DIR] [--vertebrad PATH] [--phantom PATH]
#   --phantom  a vertebra-phantom binary (default $CARGO_TARGET_DIR/release/vertebra-phantom,
#              built with `cargo build --release -p vertebra-core --bin vertebra-phantom`)
#   Other arguments as for build.sh. VERTEBRA_IMAGE_TEST_SKIP_QEMU=1 skips step 5.
# Runs as root. Prints each step's duration; exits non-zero on the first failure.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/.." && pwd)
say() { echo "[image-test] $*"; }
fail() { echo "[image-test] FAILED: $*" >&2; exit 1; }

build=1
out=$here/out
build_args=()
phantom=""
while [ $# -gt 0 ]; do
  case $1 in
    --no-build) build=0; shift ;;
    --out) out=$2; build_args+=(--out "$2"); shift 2 ;;
    --vertebrad) build_args+=(--vertebrad "$2"); shift 2 ;;
    --phantom) phantom=$2; shift 2 ;;
    *) fail "unknown argument $1 (see the header of $0)" ;;
  esac
done
[ "$(id -u)" = 0 ] || fail "run as root"
phantom=${phantom:-${CARGO_TARGET_DIR:-$repo/target}/release/vertebra-phantom}
[ -x "$phantom" ] || fail "$phantom is missing (cargo build --release -p vertebra-core --bin vertebra-phantom, or --phantom PATH)"

t0=$(date +%s)
timings=()
lap() { timings+=("$1: $(( $(date +%s) - t_lap )) s"); t_lap=$(date +%s); }
t_lap=$t0

bash "$here/provision.sh"
if [ "$build" = 1 ]; then
  bash "$here/build.sh" "${build_args[@]}"
  lap "build"
fi
root=$out/rootfs
[ -d "$root/usr" ] && [ -f "$out/disk.raw" ] && [ -f "$out/update.raucb" ] || fail "no image in $out"
work=$(mktemp -d /tmp/image-test.XXXXXX)
chmod 755 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do
    for _ in $(seq 1 60); do kill -0 "$p" 2>/dev/null || break; sleep 1; done
    kill -9 "$p" 2>/dev/null || true
  done
  [ "${VERTEBRA_IMAGE_TEST_KEEP:-0}" = 1 ] && { echo "[image-test] kept $work"; return; }
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

# ---------------------------------------------------------------- 2. static checks
say "static checks of $root"
check() { "$@" || fail "static check failed: $*"; }
grep -v '^\s*#' "$here/packages.txt" | grep -v '^\s*$' | while read -r pin; do
  grep -qx -- "$pin" "$out/manifest.txt" || fail "$pin is not installed at that version"
done
for unit in vertebrad.service vertebrad-db-init.service vertebrad-tls-init.service postgresql.service \
    systemd-networkd.service systemd-resolved.service data.mount vertebra-data-setup.service \
    var-lib-postgresql.mount var-lib-vertebra.mount etc-vertebra.mount vertebra-mark-good.service; do
  state=$(systemctl --root="$root" is-enabled "$unit" 2>&1 || true)
  [ "$state" = enabled ] || fail "$unit is not enabled in the image ($state)"
done
# The units the image runs are byte for byte the ones in systemd/.
for unit in "$repo"/systemd/*.service; do
  check cmp -s "$unit" "$root/usr/lib/systemd/system/$(basename "$unit")"
done
factory=$root/usr/share/factory
check cmp -s "$repo/systemd/vertebrad.toml" "$factory/etc/vertebra/vertebrad.toml"
check test -f "$factory/etc/vertebra/trusted-keys/demo.pub"
check test -d "$factory/etc/vertebra/tls"
check test -f "$factory/var/lib/postgresql/15/main/PG_VERSION"
check test -x "$root/usr/bin/vertebrad"
check test -x "$root/usr/libexec/vertebrad/db-init"
check test -x "$root/usr/libexec/vertebrad/tls-init"
for f in "$repo"/models/demo-bundle/*; do
  check cmp -s "$f" "$root/usr/share/vertebrad/model/$(basename "$f")"
done
grep -q '^onnxruntime = "/usr/lib/vertebrad/libonnxruntime.so.1.31.1"' "$factory/etc/vertebra/vertebrad.toml" \
  || fail "the default configuration does not point at the image's ONNX Runtime library"
ort=$root/usr/lib/vertebrad/libonnxruntime.so.1.31.1
check test -f "$ort"
stack=$(readelf -lW "$ort" | grep GNU_STACK) || fail "no GNU_STACK header in $ort"
case $stack in *RWE*) fail "libonnxruntime asks for an executable stack: $stack" ;; esac
check grep -qx "listen_addresses = ''" "$root/etc/postgresql/15/main/conf.d/vertebra.conf"
check grep -qx "jit = off" "$root/etc/postgresql/15/main/conf.d/vertebra.conf"
check grep -q "^port = 5432\b" "$root/etc/postgresql/15/main/postgresql.conf"
[ -z "$(find "$root/usr/lib" -name 'libLLVM*' -o -name 'llvmjit*' | head -1)" ] || fail "LLVM is in the image"
[ -z "$(find "$root/usr/share/man" -type f | head -1)" ] || fail "manual pages are in the image"
[ -z "$(find "$root/usr/share/doc" -type f ! -name copyright ! -path '*/vertebrad/*' | head -1)" ] \
  || fail "documentation besides copyright files is in the image"
[ "$(find "$root/usr/share/doc" -name copyright | wc -l)" -gt 50 ] || fail "copyright files are missing"
check test -s "$root/etc/rauc/keyring.pem"
[ ! -s "$root/etc/machine-id" ] || fail "the image carries a machine id"
layout=$(sfdisk --dump "$out/disk.raw")
for label in root-a root-b vertebra-data; do
  grep -q "name=\"$label\"" <<<"$layout" || fail "disk.raw has no partition $label"
done
say "static checks passed"
lap "static checks"

# ---------------------------------------------------------------- 3. RAUC bundle
say "RAUC: verifying update.raucb with the image's keyring"
rauc_info() { rauc info --keyring="$root/etc/rauc/keyring.pem" --output-format=shell "$1" 2>&1; }
info=$(rauc_info "$out/update.raucb") || { echo "$info" >&2; fail "rauc info refused the bundle"; }
grep -q "^RAUC_MF_COMPATIBLE='vertebra-appliance-x86_64'" <<<"$info" || fail "bundle: wrong compatible: $info"
grep -q "^RAUC_IMAGE_NAME_0='rootfs.ext4'" <<<"$info" || fail "bundle: no rootfs.ext4: $info"
# `rauc info` checks the signature, which covers the manifest; a verity bundle's manifest
# holds the dm-verity root hash of the payload, which the appliance's kernel checks block by
# block while installing. veritysetup does the same check here, in user space.
verity_check() { # verity_check BUNDLE: payload against the signed root hash
  local b=$1 size sig mf payload
  size=$(stat -c %s "$b")
  sig=$(od -An -tu8 --endian=big -j $(( size - 8 )) -N8 "$b" | tr -d ' ')
  mf=$(tail -c $(( sig + 8 )) "$b" | head -c "$sig" | openssl cms -verify -noverify -inform DER 2>/dev/null) \
    || fail "cannot read the manifest of $b"
  payload=$(( size - 8 - sig - $(sed -n 's/^verity-size=//p' <<<"$mf") ))
  veritysetup verify "$b" "$b" "$(sed -n 's/^verity-hash=//p' <<<"$mf")" --no-superblock \
    --format=1 --hash=sha256 --data-block-size=4096 --hash-block-size=4096 \
    --data-blocks=$(( payload / 4096 )) --hash-offset="$payload" \
    --salt="$(sed -n 's/^verity-salt=//p' <<<"$mf")" >/dev/null 2>&1
}
verity_check "$out/update.raucb" || fail "update.raucb: payload does not match its signed verity root hash"
size=$(stat -c %s "$out/update.raucb")
flip() { # flip FILE OFFSET: inverts one byte
  local byte
  byte=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $(( byte ^ 0xff )))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
# A changed byte in the signature (the CMS near the end of the bundle): refused by rauc info.
cp "$out/update.raucb" "$work/tampered.raucb"
flip "$work/tampered.raucb" $(( size - 300 ))
if msg=$(rauc_info "$work/tampered.raucb"); then
  fail "rauc info accepted a bundle with a changed signature byte"
fi
say "  changed signature byte: refused by rauc info ($(grep -m1 -i 'fail\|error\|invalid' <<<"$msg" | cut -c1-100))"
# A changed byte in the payload (the squashfs superblock): the signature still verifies, the
# payload no longer matches the signed root hash.
cp "$out/update.raucb" "$work/tampered.raucb"
flip "$work/tampered.raucb" 100
if verity_check "$work/tampered.raucb"; then
  fail "a bundle with a changed payload byte passed the verity check"
fi
say "  changed payload byte: refused by the dm-verity check of the signed root hash"
rm -f "$work/tampered.raucb"
# Signed by a CA the appliance does not trust.
other=$work/other-ca
mkdir -p "$other/bundle"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 30 -subj /CN=other \
  -keyout "$other/key.pem" -out "$other/cert.pem" 2>/dev/null
printf '[update]\ncompatible=vertebra-appliance-x86_64\nversion=evil\n[bundle]\nformat=verity\n[image.rootfs]\nfilename=rootfs.ext4\n' \
  > "$other/bundle/manifest.raucm"
head -c 1048576 /dev/urandom > "$other/bundle/rootfs.ext4"
rauc bundle --cert="$other/cert.pem" --key="$other/key.pem" "$other/bundle" "$other/other.raucb" >/dev/null 2>&1 \
  || fail "could not make the foreign bundle"
if msg=$(rauc_info "$other/other.raucb"); then fail "rauc info accepted a bundle signed by another CA"; fi
say "  bundle signed by another CA: refused ($(grep -m1 -i 'fail\|error\|invalid' <<<"$msg" | cut -c1-120))"
lap "rauc"

# ---------------------------------------------------------------- 4. nspawn boot
port_free() { ! ss -Htln "sport = :$1" | grep -q .; }
for p in 104 2762 8443; do port_free "$p" || fail "port $p is in use on this host: the nspawn boot shares its network"; done
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
pacs_port=$(free_port)
mkdir -p "$work/test" "$work/test/out" "$work/pacs" "$work/journal" "$work/dropin-vertebrad" "$work/dropin-tls"
chmod 755 "$work/test"; chmod 777 "$work/test/out"
# The image's default configuration, plus one modality (this host) and a short stable wait.
sed 's/^stable_after_s = 30$/stable_after_s = 3/' "$factory/etc/vertebra/vertebrad.toml" > "$work/test/vertebrad.toml"
cat >> "$work/test/vertebrad.toml" <<'TOML'

[[dicom.peers]]
ae_title = "TEST_MODALITY"
addresses = ["127.0.0.1/32"]
TOML
chmod 644 "$work/test/vertebrad.toml"
# Test-only drop-ins: the configuration above, a destination (the host's storescp), and a copy
# of the first-boot certificates where the test can read them.
cat > "$work/dropin-vertebrad/test.conf" <<EOF
[Service]
Environment=VERTEBRA_CONFIG=/opt/vertebra-test/vertebrad.toml
ExecStartPre=-/usr/bin/vertebrad destination add --name host-pacs --ae-title PACS --host 127.0.0.1 --port $pacs_port
EOF
cat > "$work/dropin-tls/test.conf" <<'EOF'
[Service]
ReadWritePaths=/opt/vertebra-test/out
ExecStartPost=/bin/cp /etc/vertebra/tls/web.crt /etc/vertebra/tls/dicom.crt /opt/vertebra-test/out/
EOF
say "phantom study (lumbar, 256×256, 1 lesion)"
"$phantom" study --seed 12 --region lumbar --in-plane 256 --lesions 1 --format dicom \
  --out "$work/study" > "$work/phantom.txt" || fail "vertebra-phantom failed"
TCP_NODELAY=1 storescp -aet PACS -od "$work/pacs" "$pacs_port" > "$work/pacs.log" 2>&1 &
pids+=($!)

say "booting the root file system under systemd-nspawn"
t_boot=$(date +%s)
systemd-nspawn --quiet -D "$root" --boot --register=no --keep-unit --ephemeral \
  --console=passive --link-journal=no \
  --bind="$work/journal:/var/log/journal" \
  --bind-ro="$work/test:/opt/vertebra-test" --bind="$work/test/out:/opt/vertebra-test/out" \
  --bind-ro="$work/dropin-vertebrad:/etc/systemd/system/vertebrad.service.d" \
  --bind-ro="$work/dropin-tls:/etc/systemd/system/vertebrad-tls-init.service.d" \
  > "$work/nspawn.log" 2>&1 &
nspawn_pid=$!
pids+=($nspawn_pid)
journal() { journalctl -D "$work/journal" --no-pager -o short-monotonic "$@" 2>/dev/null | tail -40; }
health() { curl -sS --max-time 5 --cacert "$1" "https://localhost:$2/healthz" -o "$work/health.json" -w '%{http_code}' 2>"$work/curl.err"; }
deadline=$(( $(date +%s) + 300 ))
code=""
while :; do
  kill -0 "$nspawn_pid" 2>/dev/null || { cat "$work/nspawn.log" >&2; journal >&2; fail "the container stopped"; }
  if [ -s "$work/test/out/web.crt" ]; then
    code=$(health "$work/test/out/web.crt" 8443 || true)
    [ "$code" = 200 ] && break
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { journal -u vertebrad -u vertebrad-db-init -u postgresql@15-main >&2; fail "no healthy /healthz within 300 s (last: ${code:-no certificate yet}, $(cat "$work/curl.err"))"; }
  sleep 2
done
say "nspawn: /healthz 200 over HTTPS (verified with the image's first-boot certificate) $(( $(date +%s) - t_boot )) s after start: $(cat "$work/health.json")"
lap "nspawn boot to /healthz"
# Unverified TLS must fail: the check above really verifies the chain.
if curl -sS --max-time 5 "https://localhost:8443/healthz" -o /dev/null 2>/dev/null; then
  fail "the image's self-signed certificate verified against the system CAs"
fi
echoscu -aet TEST_MODALITY -aec VERTEBRA 127.0.0.1 104 > "$work/echoscu.log" 2>&1 \
  || { cat "$work/echoscu.log" >&2; fail "C-ECHO failed"; }
# An unlisted calling AE title is refused (the default configuration is closed).
if echoscu -aet STRANGER -aec VERTEBRA 127.0.0.1 104 > /dev/null 2>&1; then
  fail "an unlisted AE title was accepted"
fi
say "C-ECHO: answered; unlisted AE title refused"
n=$(ls "$work/study/dicom" | wc -l)
t_send=$(date +%s)
TCP_NODELAY=1 storescu -aet TEST_MODALITY -aec VERTEBRA +sd 127.0.0.1 104 "$work/study/dicom" \
  > "$work/storescu.log" 2>&1 || { cat "$work/storescu.log" >&2; fail "storescu failed"; }
say "sent $n images with storescu; waiting for SEG and SR at the host's storescp"
deadline=$(( $(date +%s) + 600 ))
while :; do
  sr=$(ls "$work/pacs" | grep '^SR' | head -1 || true)
  seg=$(ls "$work/pacs" | grep '^SG' | head -1 || true)
  [ -n "$sr" ] && [ -n "$seg" ] && break
  kill -0 "$nspawn_pid" 2>/dev/null || { journal -u vertebrad >&2; fail "the container stopped"; }
  [ "$(date +%s)" -lt "$deadline" ] || { journal -u vertebrad >&2; fail "no SEG+SR at the host after 600 s"; }
  sleep 2
done
dcmdump "$work/pacs/$sr" > "$work/sr.txt" || fail "dcmdump cannot read $sr"
grep -q '^(0008,0060) CS \[SR\]' "$work/sr.txt" && grep -q '^(0040,a040) CS \[CONTAINER\]' "$work/sr.txt" \
  || fail "$sr is not a structured report"
say "SEG $seg and SR $sr received $(( $(date +%s) - t_send )) s after the last image was sent"
# No unit failed during the boot (networkd, and so wait-online, cannot run without
# CAP_NET_ADMIN in a container that shares the host's network).
failed=$(journalctl -D "$work/journal" --no-pager 2>/dev/null | grep -a "Failed to start\|Dependency failed for" \
  | grep -v "systemd-networkd-wait-online.service" || true)
[ -z "$failed" ] || fail "units failed in the container: $failed"
lap "nspawn study to SR"
kill "$nspawn_pid"
for _ in $(seq 1 180); do kill -0 "$nspawn_pid" 2>/dev/null || break; sleep 1; done
# (the time includes nspawn deleting its ephemeral copy of the root file system)
kill -0 "$nspawn_pid" 2>/dev/null && fail "the container did not shut down within 180 s of SIGTERM"
wait "$nspawn_pid" 2>/dev/null || true
say "nspawn: container shut down cleanly"
lap "nspawn shutdown"

# ---------------------------------------------------------------- 5. QEMU boot of disk.raw
if [ "${VERTEBRA_IMAGE_TEST_SKIP_QEMU:-0}" = 1 ]; then
  say "QEMU boot skipped (VERTEBRA_IMAGE_TEST_SKIP_QEMU=1)"
else
  web_port=$(free_port)
  say "booting disk.raw under QEMU (TCG, direct kernel boot); /healthz forwarded to port $web_port"
  t_boot=$(date +%s)
  # -snapshot: the test leaves disk.raw as built.
  qemu-system-x86_64 -accel tcg -cpu max -smp 2 -m 3072 -display none -no-reboot \
    -kernel "$out/vmlinuz" -initrd "$out/initrd.img" \
    -append "root=PARTLABEL=root-a rw console=ttyS0 rauc.slot=root-a systemd.journald.forward_to_console=1" \
    -drive "file=$out/disk.raw,format=raw,if=virtio" -snapshot \
    -netdev "user,id=n0,hostfwd=tcp:127.0.0.1:$web_port-:8443" -device virtio-net-pci,netdev=n0 \
    -serial "file:$work/qemu-console.log" > "$work/qemu.log" 2>&1 &
  qemu_pid=$!
  pids+=($qemu_pid)
  deadline=$(( $(date +%s) + 600 ))
  while :; do
    kill -0 "$qemu_pid" 2>/dev/null || { tail -40 "$work/qemu-console.log" "$work/qemu.log" >&2; fail "QEMU exited"; }
    # The guest made its own certificate on first boot; only its console could show it, so
    # this check does not verify the chain (the nspawn boot above does).
    code=$(curl -sS -k --max-time 10 "https://127.0.0.1:$web_port/healthz" -o "$work/health.json" -w '%{http_code}' 2>/dev/null || true)
    [ "$code" = 200 ] && break
    [ "$(date +%s)" -lt "$deadline" ] || { tail -60 "$work/qemu-console.log" >&2; fail "QEMU: no healthy /healthz within 600 s (last: ${code:-none})"; }
    sleep 5
  done
  say "QEMU: /healthz 200 $(( $(date +%s) - t_boot )) s after power-on: $(cat "$work/health.json")"
  failed=$(grep -a "systemd\[1\]: Failed to start\|systemd\[1\]: Dependency failed for" "$work/qemu-console.log" || true)
  [ -z "$failed" ] || fail "QEMU: units failed: $failed"
  grep -q "vertebra-data-setup: /data/postgresql filled" "$work/qemu-console.log" \
    || fail "QEMU: the data partition was not filled on first boot (console log)"
  grep -q "Mounted.*[Aa]ppliance data partition\|Mounted data.mount" "$work/qemu-console.log" \
    || fail "QEMU: the data partition was not mounted (console log)"
  lap "QEMU boot to /healthz"
fi

say "all checks passed in $(( $(date +%s) - t0 )) s"
printf '  %s\n' "${timings[@]}"
