#!/usr/bin/env bash
# DICOM ingest benchmark of issue 8, on this machine, every number in one run:
#  1. a 300-slice 512×512 phantom CT (vertebra-phantom, Explicit VR LE, ~0.5 MB a slice) sent
#     by DCMTK storescu over one association to `vertebrad serve` (every object written,
#     fsynced, renamed, directory fsynced and indexed in its SQLite store before Success) and
#     to DCMTK storescp (writes files, no fsync, no index), TCP_NODELAY=1 for the DCMTK tools;
#  2. the same with stock senders: no TCP_NODELAY in storescu's environment (vertebrad sets
#     TCP_NODELAY on its own sockets; storescp keeps TCP_NODELAY=1);
#  3. 4 concurrent associations (the series in 4 parts, one storescu each; storescp --fork);
#  4. vertebrad's peak RSS (VmHWM) while receiving one ~2 GB multi-frame object
#     (scripts/make_multiframe.py, streamed to disk), sent by storescu (skip with BIG=0).
# Each configuration runs REPS times (default 3), alternating receivers; the table gives the
# median instances/s and the ratio vertebrad / storescp. Receivers start fresh for each run
# (new state dir: no duplicates). A perf profile of one vertebrad run is written when
# PROFILE_PERF=1.
# Usage: bash scripts/bench-ingest.sh   (env: PROFILE=dev|bench-fast, REPS, BIG, WORK, BIN_DIR)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-dev}
reps=${REPS:-3}
big=${BIG:-1}
venv=${VERTEBRA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/vertebra/venv}
for tool in storescu storescp echoscu; do
  [ -x "/usr/bin/$tool" ] || { echo "bench-ingest: DCMTK /usr/bin/$tool is missing" >&2; exit 1; }
done
if [ -n "${BIN_DIR:-}" ]; then
  bin=$BIN_DIR  # vertebrad and vertebra-phantom already built there
else
  cargo build --quiet --profile "$profile" -p vertebrad -p vertebra-core --bin vertebrad --bin vertebra-phantom
  bin=${CARGO_TARGET_DIR:-target}/$([ "$profile" = dev ] && echo debug || echo "$profile")
fi
# On the same file system as the spool and storescp's output: a real disk, not tmpfs.
work=$(mktemp -d "${WORK:-/var/tmp}/bench-ingest.XXXXXX")
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
echo "bench-ingest: $(nproc) cores, $(uname -r), work dir $work ($(df -T "$work" | awk 'NR==2 {print $2}')), profile $profile"

"$bin/vertebra-phantom" study --seed 42 --from T6 --to L5 --in-plane 512 --slices 300 \
  --format dicom --out "$work/series" > /dev/null
series="$work/series/dicom"
count=$(find "$series" -type f | wc -l)
bytes=$(du -sb "$series" | cut -f1)
echo "series: $count files, $((bytes / 1024 / 1024)) MiB"
for part in 0 1 2 3; do mkdir -p "$work/part$part"; done
i=0
for f in $(find "$series" -type f | sort); do
  ln -s "$f" "$work/part$((i % 4))/$(basename "$f")"
  i=$((i + 1))
done

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
now() { date +%s.%N; }

# Starts vertebrad on a fresh state dir; sets $vpid and $vport.
start_vertebrad() {
  local state="$work/state-$1"
  mkdir -p "$state"
  cat > "$state/vertebrad.toml" <<EOF
[dicom]
bind = "127.0.0.1"
port = 0
ae_title = "VERTEBRA"
[[dicom.peers]]
ae_title = "BENCH"
addresses = ["127.0.0.1"]
[dicom.limits]
max_associations = 8
max_object_bytes = 3221225472
[dicom.completion]
stable_after_s = 3600
[web]
enabled = false
EOF
  VERTEBRA_LOG=warn "$bin/vertebrad" --state-dir "$state" serve --config "$state/vertebrad.toml" \
    > "$state/stdout" 2> "$state/stderr" &
  vpid=$!
  pids+=("$vpid")
  for _ in $(seq 600); do
    grep -q '^listening on ' "$state/stdout" 2>/dev/null && break
    sleep 0.05
  done
  vport=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$state/stdout")
  [ -n "$vport" ] || { cat "$state/stderr" >&2; echo "vertebrad did not start" >&2; exit 1; }
}

stop_pid() { kill "$1" 2>/dev/null || true; wait "$1" 2>/dev/null || true; }

# Starts storescp (accepting any AE title) on a free port into a fresh dir; sets $spid, $sport.
start_storescp() {
  local out="$work/storescp-$1"
  mkdir -p "$out"
  sport=$(free_port)
  TCP_NODELAY=1 /usr/bin/storescp $2 -od "$out" -aet VERTEBRA "$sport" > "$out.log" 2>&1 &
  spid=$!
  pids+=("$spid")
  for _ in $(seq 200); do
    /usr/bin/echoscu -aet BENCH -aec VERTEBRA 127.0.0.1 "$sport" >/dev/null 2>&1 && return
    sleep 0.05
  done
  echo "storescp did not start" >&2; exit 1
}

# Sends with storescu: $1 port, $2 nodelay (1/0), $3 associations (1 or 4). Prints seconds.
send() {
  local port=$1 nodelay=$2 assocs=$3 t0 t1 env=()
  [ "$nodelay" = 1 ] && env=(TCP_NODELAY=1)
  t0=$(now)
  if [ "$assocs" = 1 ]; then
    env "${env[@]}" /usr/bin/storescu -aet BENCH -aec VERTEBRA +sd 127.0.0.1 "$port" "$series" \
      > "$work/storescu.log" 2>&1 || { cat "$work/storescu.log" >&2; exit 1; }
  else
    local ps=()
    for part in 0 1 2 3; do
      env "${env[@]}" /usr/bin/storescu -aet BENCH -aec VERTEBRA +sd 127.0.0.1 "$port" \
        "$work/part$part" > "$work/storescu$part.log" 2>&1 &
      ps+=($!)
    done
    for p in "${ps[@]}"; do wait "$p" || { cat "$work"/storescu?.log >&2; exit 1; }; done
  fi
  t1=$(now)
  python3 -c "print(f'{$t1 - $t0:.3f}')"
}

# Checks that every instance arrived: $3 files named like $2 under the receiver's dir $1.
check_count() {
  local n
  n=$(find "$1" -type f -name "$2" | wc -l)
  [ "$n" = "$3" ] || { echo "expected $3 stored files in $1, found $n" >&2; exit 1; }
}

results="$work/results.tsv"
: > "$results"
run=0
for config in "nodelay 1 1" "stock 0 1" "concurrent 1 4"; do
  set -- $config
  name=$1 nodelay=$2 assocs=$3
  for rep in $(seq "$reps"); do
    run=$((run + 1))
    start_vertebrad "$run"
    s=$(send "$vport" "$nodelay" "$assocs")
    check_count "$work/state-$run/spool" "*.dcm" "$count"
    stop_pid "$vpid"
    echo -e "$name\tvertebrad\t$s" >> "$results"
    fork=""; [ "$assocs" = 4 ] && fork="--fork"
    start_storescp "$run" "$fork"
    s=$(send "$sport" "$nodelay" "$assocs")
    check_count "$work/storescp-$run" "*" "$count"
    stop_pid "$spid"
    echo -e "$name\tstorescp\t$s" >> "$results"
  done
done

echo
echo "| configuration | vertebrad (fsync + SQLite index) inst/s | DCMTK storescp inst/s | ratio |"
echo "|---|---:|---:|---:|"
python3 - "$results" "$count" <<'PY'
import statistics, sys
rows = [l.split("\t") for l in open(sys.argv[1]).read().splitlines()]
n = int(sys.argv[2])
labels = {
    "nodelay": "1 association, TCP_NODELAY=1",
    "stock": "1 association, stock sender (no TCP_NODELAY)",
    "concurrent": "4 associations, TCP_NODELAY=1",
}
for name in ["nodelay", "stock", "concurrent"]:
    rate = {}
    for who in ["vertebrad", "storescp"]:
        secs = [float(r[2]) for r in rows if r[0] == name and r[1] == who]
        rate[who] = [n / s for s in secs]
    v, s = statistics.median(rate["vertebrad"]), statistics.median(rate["storescp"])
    spread = lambda xs: f"{min(xs):.0f}–{max(xs):.0f}"
    print(f"| {labels[name]} | {v:.0f} ({spread(rate['vertebrad'])}) | {s:.0f} ({spread(rate['storescp'])}) | {v / s:.2f}× |")
PY

# The floor of per-object durability on this file system, with no DICOM at all: write a
# 0.5 MB file, fsync it, rename it, fsync the directory (what vertebrad's spool does before
# the index commit), in a loop.
python3 - "$work" "$((bytes / count))" <<'PY'
import os, sys, time
d = os.path.join(sys.argv[1], "fsync-floor"); os.makedirs(d)
buf, n = os.urandom(int(sys.argv[2])), 100
t = time.perf_counter()
for i in range(n):
    tmp = os.path.join(d, f"{i}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.write(fd, buf); os.fsync(fd); os.close(fd)
    os.rename(tmp, os.path.join(d, f"{i}.dcm"))
    dfd = os.open(d, os.O_RDONLY); os.fsync(dfd); os.close(dfd)
ms = (time.perf_counter() - t) / n * 1000
print(f"\ndurability floor (python: write + fsync + rename + directory fsync, {len(buf)} B objects): "
      f"{ms:.1f} ms per object = at most {1000 / ms:.0f} objects/s for one synchronous sender")
PY

if [ "${PROFILE_PERF:-0}" = 1 ]; then
  run=$((run + 1))
  start_vertebrad "$run"
  perf record -F 999 -g -p "$vpid" -o "$work/perf.data" > /dev/null 2>&1 &
  perfpid=$!
  sleep 0.5
  send "$vport" 1 1 > /dev/null
  kill -INT "$perfpid"; wait "$perfpid" || true
  perf report -i "$work/perf.data" --no-children --sort comm,dso --stdio 2>/dev/null | grep -v '^#' | grep -v '^$' | head -15
  stop_pid "$vpid"
fi

if [ "$big" = 1 ]; then
  echo
  "$venv/bin/python" scripts/make_multiframe.py "$work/big.dcm" $((2000 * 1000 * 1000)) > "$work/big.size"
  size=$(cat "$work/big.size")
  run=$((run + 1))
  start_vertebrad "$run"
  sleep 1  # the (failing, no bundle) engine load runs after the listening line
  rss0=$(awk '/^VmHWM/ {print $2}' "/proc/$vpid/status")
  t0=$(now)
  TCP_NODELAY=1 /usr/bin/storescu -aet BENCH -aec VERTEBRA 127.0.0.1 "$vport" "$work/big.dcm" \
    > "$work/big.log" 2>&1 || { cat "$work/big.log" >&2; exit 1; }
  t1=$(now)
  hwm=$(awk '/^VmHWM/ {print $2}' "/proc/$vpid/status")
  check_count "$work/state-$run/spool" "*.dcm" 1
  stop_pid "$vpid"
  python3 - "$size" "$rss0" "$hwm" "$t0" "$t1" <<'PY'
import sys
size, rss0, hwm, t0, t1 = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4]), float(sys.argv[5])
print("| object | receive time | vertebrad peak RSS before | peak RSS after (VmHWM) | peak / object size |")
print("|---|---:|---:|---:|---:|")
print(f"| {size / 1e9:.2f} GB multi-frame (Explicit VR LE, 512×512×16-bit frames) | {t1 - t0:.1f} s "
      f"| {rss0 / 1024:.0f} MiB | {hwm / 1024:.0f} MiB | {hwm * 1024 / size * 100:.1f} % |")
PY
fi
