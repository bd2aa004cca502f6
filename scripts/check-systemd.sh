#!/usr/bin/env bash
# Checks the systemd integration in systemd/ (docs/deployment.md):
#   1. `systemd-analyze verify` of every unit, the CPU unit alone and with the GPU drop-in,
#      in a scratch root holding the real vertebrad binary and helper scripts (verify refuses
#      an ExecStart= that is not executable there). ANY output fails: a misspelled directive
#      is only a warning with exit status 0.
#   2. `systemd-analyze security --offline=yes`: the CPU unit must stay at exposure <= 2.0
#      (--threshold is ten times the printed exposure); the GPU variant's score is printed.
#   3. sysusers.d and tmpfiles.d files applied to the scratch root.
#   4. The first-boot TLS script, and the database init script against a throwaway
#      PostgreSQL server followed by `vertebrad migrate` (twice: both must be idempotent).
# Works without systemd as PID 1 (containers): these tools only read files.
#
# Usage: scripts/check-systemd.sh [path/to/vertebrad]  (default: builds it with cargo)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
fail() { echo "check-systemd: FAIL: $*" >&2; exit 1; }
for tool in systemd-analyze systemd-sysusers systemd-tmpfiles setpriv openssl psql; do
  command -v "$tool" >/dev/null ||
    fail "$tool is missing (Debian: systemd, util-linux, openssl, postgresql-client; scripts/provision-system.sh)"
done
[ -d /usr/lib/systemd/system ] || fail "/usr/lib/systemd/system is missing (Debian package systemd)"

bin=${1:-}
if [ -z "$bin" ]; then
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-/var/cache/vertebra/target}
  cargo build -p vertebrad --bin vertebrad --locked --quiet
  bin=$CARGO_TARGET_DIR/debug/vertebrad
fi
[ -x "$bin" ] || fail "$bin is not an executable vertebrad"

work=$(mktemp -d "${TMPDIR:-/tmp}/check-systemd.XXXXXX")
chmod 711 "$work"  # the PostgreSQL server user must reach its directory inside
trap 'rm -rf "$work"' EXIT

# A scratch root laid out as the appliance image installs it: the distribution's units (for
# sysinit.target, postgresql.service…) plus ours, the binaries they start.
make_root() {
  local root=$1
  mkdir -p "$root/usr/lib/systemd/system" "$root/usr/bin" "$root/usr/libexec/vertebrad" \
    "$root/usr/lib/sysusers.d" "$root/usr/lib/tmpfiles.d" "$root/etc"
  cp -a /usr/lib/systemd/system/. "$root/usr/lib/systemd/system/"
  cp systemd/*.service "$root/usr/lib/systemd/system/"
  [ -f "$root/usr/lib/systemd/system/postgresql.service" ] ||
    fail "postgresql.service is not installed on this machine (Debian package postgresql)"
  # A hard link where possible: a debug build is hundreds of megabytes.
  ln -f "$bin" "$root/usr/bin/vertebrad" 2>/dev/null || cp "$bin" "$root/usr/bin/vertebrad"
  cp "$(command -v setpriv)" "$root/usr/bin/setpriv"
  cp systemd/vertebrad-db-init "$root/usr/libexec/vertebrad/db-init"
  cp systemd/vertebrad-tls-init "$root/usr/libexec/vertebrad/tls-init"
  cp systemd/vertebrad.sysusers "$root/usr/lib/sysusers.d/vertebrad.conf"
  cp systemd/vertebrad.tmpfiles "$root/usr/lib/tmpfiles.d/vertebrad.conf"
  : >"$root/etc/passwd"
  : >"$root/etc/group"
}
cpu=$work/cpu
gpu=$work/gpu
make_root "$cpu"
make_root "$gpu"
mkdir -p "$gpu/etc/systemd/system/vertebrad.service.d"
cp systemd/vertebrad-gpu.conf "$gpu/etc/systemd/system/vertebrad.service.d/gpu.conf"

units=(vertebrad.service vertebrad-db-init.service vertebrad-tls-init.service)
for variant in cpu gpu; do
  root=$work/$variant
  echo "== systemd-analyze verify ($variant): ${units[*]}"
  out=$(cd "$root" && systemd-analyze verify --root="$root" "${units[@]}" 2>&1) ||
    fail "systemd-analyze verify ($variant) exited non-zero:"$'\n'"$out"
  [ -z "$out" ] || fail "systemd-analyze verify ($variant) printed warnings:"$'\n'"$out"
done

echo "== systemd-analyze security --offline (CPU unit, must be <= 2.0)"
score() {
  systemd-analyze security --offline=yes --root="$1" vertebrad.service 2>&1 |
    sed -n 's/.*Overall exposure level for vertebrad.service: \([0-9.]*\).*/\1/p'
}
cpu_score=$(score "$cpu")
gpu_score=$(score "$gpu")
[ -n "$cpu_score" ] && [ -n "$gpu_score" ] || fail "no exposure level in systemd-analyze security's output"
if ! systemd-analyze security --offline=yes --root="$cpu" --threshold=20 vertebrad.service >"$work/security.txt" 2>&1; then
  cat "$work/security.txt" >&2
  fail "vertebrad.service exposure $cpu_score is above 2.0"
fi
echo "exposure: vertebrad.service (CPU) $cpu_score, with vertebrad-gpu.conf $gpu_score"

echo "== sysusers.d and tmpfiles.d"
systemd-sysusers --root="$cpu" >"$work/sysusers.log" 2>&1 ||
  fail "systemd-sysusers: $(cat "$work/sysusers.log")"
grep -q '^vertebra:x:[0-9]*:[0-9]*:[^:]*:/var/lib/vertebra:/usr/sbin/nologin$' "$cpu/etc/passwd" ||
  fail "sysusers did not create the vertebra system user: $(cat "$cpu/etc/passwd")"
systemd-tmpfiles --root="$cpu" --create >"$work/tmpfiles.log" 2>&1 ||
  fail "systemd-tmpfiles: $(cat "$work/tmpfiles.log")"
[ "$(stat -c %a "$cpu/etc/vertebra/tls")" = 700 ] || fail "/etc/vertebra/tls is not mode 0700"

echo "== first-boot TLS certificates"
VERTEBRA_TLS_DIR=$work/tls sh systemd/vertebrad-tls-init >/dev/null
for name in dicom web; do
  openssl x509 -in "$work/tls/$name.crt" -noout -checkend 86400 >/dev/null ||
    fail "tls-init made no valid $name certificate"
  [ "$(stat -c %a "$work/tls/$name.key")" = 600 ] || fail "$name.key is not mode 0600"
done
before=$(sha256sum "$work/tls/dicom.key")
VERTEBRA_TLS_DIR=$work/tls sh systemd/vertebrad-tls-init >/dev/null
[ "$before" = "$(sha256sum "$work/tls/dicom.key")" ] || fail "tls-init replaced an existing key"

echo "== database init + vertebrad migrate on a throwaway PostgreSQL"
pgbin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
[ -n "$pgbin" ] || fail "no PostgreSQL server under /usr/lib/postgresql (Debian package postgresql)"
pg=$work/pg
mkdir -p "$pg"
as_pg=()
if [ "$(id -u)" = 0 ]; then
  # PostgreSQL refuses to run as root.
  chown postgres: "$pg"
  as_pg=(setpriv --reuid=postgres --regid=postgres --clear-groups)
fi
"${as_pg[@]}" "$pgbin/initdb" -D "$pg/data" -U postgres --auth=trust --no-sync -E UTF8 \
  --locale=C >"$work/initdb.log" 2>&1 || { cat "$work/initdb.log" >&2; fail "initdb"; }
"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -l "$pg/server.log" -w -s \
  -o "-k $pg -c listen_addresses= -c fsync=off" start
trap '"${as_pg[@]}" "$pgbin/pg_ctl" -D "$pg/data" -m immediate -s stop || true; rm -rf "$work"' EXIT
url="postgres://vertebra@localhost/vertebra?host=$pg"
for round in 1 2; do
  PGHOST=$pg PGUSER=postgres sh systemd/vertebrad-db-init >/dev/null
  "$bin" migrate --database "$url" >"$work/migrate-$round.txt" ||
    fail "vertebrad migrate (round $round) failed"
done
owner=$(psql -h "$pg" -U postgres -d vertebra -tAc \
  "SELECT tableowner FROM pg_tables WHERE tablename = 'jobs'")
[ "$owner" = vertebra ] || fail "the jobs table belongs to '$owner', not vertebra"
public=$(psql -h "$pg" -U postgres -d postgres -tAc \
  "SELECT has_database_privilege('public', 'vertebra', 'CONNECT')")
[ "$public" = f ] || fail "PUBLIC may still connect to the vertebra database"
grep -q "schema at version" "$work/migrate-2.txt" || fail "second migrate printed no schema version"
echo "check-systemd: OK (CPU exposure $cpu_score, GPU exposure $gpu_score)"
