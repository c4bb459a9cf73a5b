#!/usr/bin/env bash
# One prepared run for a lent GPU machine (about 8 minutes on an H100): the CUDA tests, then
# bench.gpu in stages, each under its own time limit and each writing its JSON as it goes, so a
# slow stage costs only its own figures. Results land in $OUT (default ./gpu-check).
#
#   bash bench/gpu_check.sh            # on the GPU machine
#   bash bench/gpu_check.sh --dry-run  # toy sizes on any machine (tests this script; no GPU needed)
#
# Stages: cuda tests | tiny: image encoder, exact path (1 and 3 objects), preset vs the reference's
# vos_optimized, preset-vs-exact masks | families: EdgeTAM, small, base+, EfficientTAM (preset,
# default compile mode to fit the time) | e2e: 720p H.264, 300 frames, 3 objects, ProRes 4444 + PNG |
# matting: soft edges' alpha_matte per object at 1080p on the GPU (issue 18's target: <= 10 ms).
set -u
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check}"
mkdir -p "$OUT"
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
DRY=""
LIMITS=(110 220 80 80 20)  # seconds per stage: tests, tiny, families, e2e, matting
if [ "${1:-}" = "--dry-run" ]; then
  DRY="--dry-run"
  LIMITS=(600 900 600 600 600)
fi

run() {  # run NAME LIMIT CMD...: log to $OUT/NAME.log, note the exit code
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  timeout --signal=INT --kill-after=15 "$limit" "$@" >"$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s" | tee -a "$OUT/summary.txt"
}

: >"$OUT/summary.txt"
"$PY" - <<'PY' | tee -a "$OUT/summary.txt"
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda,
      "device", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
PY
if [ -z "$DRY" ]; then
  run cuda_tests "${LIMITS[0]}" "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider -rA
else
  run cuda_tests "${LIMITS[0]}" "$PY" -m pytest -m cuda tests/test_cuda.py -q -p no:cacheprovider --co
fi
run bench_tiny "${LIMITS[1]}" "$PY" -m bench.gpu $DRY --sections image exact preset agreement \
  --frames 32 --repeats 10 --json "$OUT/bench_tiny.json"
run bench_families "${LIMITS[2]}" "$PY" -m bench.gpu $DRY --sections families --frames 24 --compile-mode default \
  --json "$OUT/bench_families.json"
run bench_e2e "${LIMITS[3]}" "$PY" -m bench.gpu $DRY --sections e2e --json "$OUT/bench_e2e.json"
if [ -z "$DRY" ]; then
  run bench_matting "${LIMITS[4]}" "$PY" -m bench.matting --device cuda --device-only
else
  run bench_matting "${LIMITS[4]}" "$PY" -m bench.matting --device cpu --device-only
fi
for log in "$OUT"/bench_*.log; do tail -n 30 "$log"; done
cat "$OUT/summary.txt"
