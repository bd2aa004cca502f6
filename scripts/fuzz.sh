#!/usr/bin/env bash
# Fuzzes what peers send vertebrad, for a bounded time per target (default 60 s; CI runs this):
#   pdu      — a byte stream read as the association loop reads it (PDU framing, dicom-ul's
#              PDU decoder, command reassembly, CommandSet::decode + encode round trip)
#   dataset  — a received data set behind our Part 10 header, read by C-STORE ingest and
#              opened the way the series loader opens it
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]
#
# cargo-fuzz (pinned) is installed once under $VERTEBRA_CACHE (default /var/cache/vertebra);
# the instrumented build and the growing corpus live there too, so reruns are incremental and
# the clone stays clean. The committed seeds (fuzz/seeds/) are read, never written. A crash
# leaves its input in fuzz/artifacts/TARGET/ and fails the script: fix the bug and keep the
# input as a unit test next to the code (see dicom-wire/src/lengths.rs). Inputs are at most
# 64 KiB; a single allocation over 128 MiB (-malloc_limit_mb) counts as a crash, since it
# means a length was believed rather than checked.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-60}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(pdu dataset)
cache=${VERTEBRA_CACHE:-/var/cache/vertebra}
version=0.13.1

root="$cache/cargo-fuzz"
if ! "$root/bin/cargo-fuzz" --version 2>/dev/null | grep -qx "cargo-fuzz $version"; then
  echo "fuzz: installing cargo-fuzz $version into $root"
  CARGO_TARGET_DIR="$root/build" cargo install --root "$root" cargo-fuzz --version "$version" --locked
fi
export PATH="$root/bin:$PATH"
# cargo-fuzz passes nightly-only flags (-Zsanitizer=address); the stable toolchain accepts
# them when told it is building itself.
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="$cache/fuzz-target"
# The committed lock file must already cover fuzz/Cargo.toml (no silent re-resolution).
cargo tree --locked --manifest-path fuzz/Cargo.toml >/dev/null

start=$(date +%s)
for target in "${targets[@]}"; do
  corpus="$cache/fuzz-corpus/$target"
  log="$cache/fuzz-$target.log"
  mkdir -p "$corpus"
  b=$(date +%s)
  cargo fuzz build --fuzz-dir fuzz --debug-assertions "$target"
  echo "fuzz: $target built in $(( $(date +%s) - b )) s; fuzzing for $seconds s"
  set +e
  cargo fuzz run --fuzz-dir fuzz --debug-assertions "$target" "$corpus" "fuzz/seeds/$target" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -malloc_limit_mb=128 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1
  rc=$?
  set -e
  grep -E '^(stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 60 "$log" >&2
    echo "fuzz: $target failed (exit $rc); failing inputs are in fuzz/artifacts/$target/" >&2
    exit 1
  fi
done
echo "fuzz: done in $(( $(date +%s) - start )) s"
