#!/usr/bin/env bash
# The main job (README): one synthetic spinal CT study through the whole appliance.
#
#   phantom CT series ──C-STORE──▶ vertebrad (embedded SQLite store, committed demo bundle on
#   ONNX Runtime) ──analysis──▶ SEG + SR ──C-STORE──▶ a local PACS (DCMTK storescp)
#
# Provisions what it needs (Debian packages when run as root, the Python venv, the pinned ONNX
# Runtime library), builds vertebrad and vertebra-phantom, runs the chain on free local ports,
# prints the findings against the phantom's ground truth, the timings and where every output
# is, and exits non-zero if any link of the chain failed. Not for diagnostic use.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
out=${VERTEBRA_DEMO_OUT:-$repo/out/demo}
seed=${VERTEBRA_DEMO_SEED:-2026}
slices=${VERTEBRA_DEMO_SLICES:-}   # default: enough for T11–L5 at 1.25 mm
timeout_s=${VERTEBRA_DEMO_TIMEOUT:-600}
say() { echo "[demo] $*"; }
fail() { echo "[demo] FAILED: $*" >&2; exit 1; }

say "provisioning (Debian packages, Python tools, ONNX Runtime library)"
if [ "$(id -u)" = 0 ]; then bash scripts/provision-system.sh; else
  bash scripts/provision-system.sh || say "not root: install the packages above, continuing"; fi
bash scripts/provision-python.sh
ORT_DYLIB_PATH=$(bash scripts/provision-onnxruntime.sh | tail -1)
export ORT_DYLIB_PATH

if [ -n "${VERTEBRA_DEMO_BIN_DIR:-}" ]; then
  # Prebuilt binaries, e.g. a release build for timing: `cargo build --release -p vertebrad
  # -p vertebra-core --bin vertebrad --bin vertebra-phantom`, then point here at target/release.
  bin=$VERTEBRA_DEMO_BIN_DIR
  for b in vertebrad vertebra-phantom; do [ -x "$bin/$b" ] || fail "$bin/$b is missing"; done
  say "using the prebuilt binaries in $bin"
else
  say "building vertebrad and vertebra-phantom (dev profile, optimised dependencies; the first build takes several minutes)"
  cargo build --quiet -p vertebrad -p vertebra-core --bin vertebrad --bin vertebra-phantom
  bin=${CARGO_TARGET_DIR:-target}/debug
fi

rm -rf "$out"
mkdir -p "$out/pacs" "$out/state" "$out/logs"
say "generating the phantom study (seed $seed, T11–L5, 512×512 slices, 3 lesions) into $out/study"
"$bin/vertebra-phantom" study --seed "$seed" --from T11 --to L5 --domain ct-standard \
  --in-plane 512 ${slices:+--slices "$slices"} --lesions 3 --format dicom --out "$out/study" \
  > "$out/logs/phantom.txt"
sed -n '1,12p' "$out/logs/phantom.txt"

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
scp_port=$(free_port); pacs_port=$(free_port); web_port=$(free_port)
cat > "$out/vertebrad.toml" <<TOML
[dicom]
bind = "127.0.0.1"
port = $scp_port
ae_title = "VERTEBRA"

[[dicom.peers]]
ae_title = "DEMO_MODALITY"
addresses = ["127.0.0.1/32"]
stable_after_s = 3

[inference]
bundle = "$repo/models/demo-bundle"
trusted_keys = "$repo/keys"
providers = ["cpu"]

[forward]
calling_ae_title = "VERTEBRA"

[web]
bind = "127.0.0.1"
port = $web_port
TOML

pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

command -v storescp >/dev/null || fail "DCMTK storescp is missing (apt-get install dcmtk, or run as root)"
say "starting the PACS (DCMTK storescp, AE PACS, port $pacs_port)"
TCP_NODELAY=1 storescp -aet PACS -od "$out/pacs" "$pacs_port" > "$out/logs/pacs.log" 2>&1 &
pids+=($!)

"$bin/vertebrad" --state-dir "$out/state" migrate > "$out/logs/migrate.log"
"$bin/vertebrad" --state-dir "$out/state" destination add --name demo-pacs --ae-title PACS \
  --host 127.0.0.1 --port "$pacs_port" > "$out/logs/destination.log"
say "starting vertebrad (AE VERTEBRA, port $scp_port, embedded SQLite store in $out/state)"
VERTEBRA_LOG=info "$bin/vertebrad" --state-dir "$out/state" serve --config "$out/vertebrad.toml" \
  > "$out/logs/vertebrad.out" 2> "$out/logs/vertebrad.log" &
pids+=($!)
for _ in $(seq 1 100); do
  grep -q "^listening on" "$out/logs/vertebrad.out" 2>/dev/null && break
  kill -0 "${pids[-1]}" 2>/dev/null || { cat "$out/logs/vertebrad.log" >&2; fail "vertebrad exited"; }
  sleep 0.2
done
for _ in $(seq 1 100); do
  grep -q "inference engine ready\|inference engine not available" "$out/logs/vertebrad.log" && break
  sleep 0.2
done
grep -q "inference engine ready" "$out/logs/vertebrad.log" \
  || { cat "$out/logs/vertebrad.log" >&2; fail "the inference engine did not start"; }

n=$(ls "$out/study/dicom" | wc -l)
say "sending $n CT images over C-STORE"
t_send=$(date +%s.%N)
if command -v storescu >/dev/null; then
  TCP_NODELAY=1 storescu -aet DEMO_MODALITY -aec VERTEBRA +sd 127.0.0.1 "$scp_port" "$out/study/dicom" \
    > "$out/logs/storescu.log" 2>&1 || fail "storescu failed (see $out/logs/storescu.log)"
  sender="DCMTK storescu"
else
  "$bin/vertebrad" send --to "VERTEBRA@127.0.0.1:$scp_port" --calling-ae DEMO_MODALITY \
    "$out/study/dicom" > "$out/logs/send.log" 2>&1 || fail "vertebrad send failed"
  sender="vertebrad send"
fi
t_sent=$(date +%s.%N)
say "sent with $sender in $(python3 -c "print(f'{$t_sent - $t_send:.1f}')") s; waiting for the series to be stable, analysed and delivered"

deadline=$(( $(date +%s) + timeout_s ))
while :; do
  sr=$(ls "$out/pacs" 2>/dev/null | grep '^SR' | head -1 || true)
  seg=$(ls "$out/pacs" 2>/dev/null | grep '^SG' | head -1 || true)
  [ -n "$sr" ] && [ -n "$seg" ] && break
  kill -0 "${pids[-1]}" 2>/dev/null || { tail -20 "$out/logs/vertebrad.log" >&2; fail "vertebrad exited"; }
  if grep -q "job failed\|series not analysable" "$out/logs/vertebrad.log"; then
    grep "job failed\|not analysable" "$out/logs/vertebrad.log" >&2; fail "the analysis failed"
  fi
  [ "$(date +%s)" -lt "$deadline" ] || { tail -20 "$out/logs/vertebrad.log" >&2; fail "no SR at the PACS after ${timeout_s} s"; }
  state=$(grep -o "analysis stored\|job finished\|delivered" "$out/logs/vertebrad.log" | tail -1 || true)
  printf '\r[demo] %3d s after the last image: %s   ' "$(python3 -c "import time; print(int(time.time() - $t_sent))")" "${state:-waiting for the series to be stable / analysing}"
  sleep 1
done
t_done=$(date +%s.%N)
rss_kb=$(grep VmHWM "/proc/${pids[-1]}/status" | awk '{print $2}')
echo
result=$(ls -d "$out"/state/results/series-*/ | head -1)
say "SEG and SR received by the PACS $(python3 -c "print(f'{$t_done - $t_sent:.1f}')") s after the last image (includes the 3 s series-stable wait); vertebrad peak RSS $(python3 -c "print(f'{$rss_kb / 1048576:.2f}')") GiB"
echo
echo "NOT FOR DIAGNOSTIC USE — synthetic data, demonstration model (signed with the DEMO key)."
python3 scripts/demo_report.py "$out/study/truth.json" "$result/result.json"
echo
echo "outputs:"
echo "  study (DICOM + truth.json):  $out/study"
echo "  analysis (result.json, labels.nii.gz, seg.dcm, sr.dcm):  $result"
echo "  received at the PACS:        $out/pacs/$seg, $out/pacs/$sr"
echo "  logs:                        $out/logs"
echo "  web console:                 https://127.0.0.1:$web_port/ (while the demo runs; self-signed"
echo "    certificate, SHA-256 in $out/logs/vertebrad.log). First run: open /setup and enter the"
echo "    one-time token from $out/state/web-setup-token, choose the admin's name and password,"
echo "    then log in and set a new password (docs/web-console.md)."
echo "    To browse the results afterwards: $bin/vertebrad --state-dir $out/state serve --config $out/vertebrad.toml"
