#!/usr/bin/env bash
# The GPU check, prepared for whoever holds a GPU machine: grades reference/ on GPU 0 with the local
# sandbox and, where Docker has the NVIDIA runtime, with the docker sandbox; prints nvidia-smi, torch's CUDA
# view and the per-stage durations (result.json: provenance.durations_s) of each run.
#
#   OUT=/tmp/gpu-check bash bench/gpu_check.sh
#   env: OUT (results; default /tmp/gpu-check), PYTHON (default python3), IMAGE (docker image; default
#        seg-autograder:latest, else the local test image), BUILD=1 (build the production image if missing),
#        STAGE_TIMEOUT_S (per grade command; default 540), BENCH=1 (then the CPU benchmarks pinned to two
#        cores: BENCH_CORES, default 0,1; BENCH_TIMEOUT_S each, default 240; BENCHES, the scripts and their
#        arguments separated by ';', default "overhead.py --rounds 3;scaling.py;regrade.py"),
#        THROUGHPUT=1 (then bench/gpu_throughput.py: K = 1, 2, 4, 8 jobs on GPU 0, bounded by THROUGHPUT_TIMEOUT_S,
#        default 480, with THROUGHPUT_ARGS, default "--n 8 --ks 1,2,4,8 --scale 0.25 --designs ben,eve --budget-s 330": a quarter of
#        the VOC-sized splits so that it fits ~8 minutes; --scale 1 is the full workload), THROUGHPUT=only (the
#        environment and the throughput bench alone).
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OUT="${OUT:-/tmp/gpu-check}"
PYTHON="${PYTHON:-python3}"
IMAGE="${IMAGE:-seg-autograder:latest}"
LIMIT="${STAGE_TIMEOUT_S:-540}"
mkdir -p "$OUT"
cd "$REPO" || exit 1

section() { printf '\n== %s\n' "$*"; }

section "nvidia-smi"
nvidia-smi || echo "nvidia-smi not available"

section "python environment"
# An interpreter that already has the project's dependencies (a GPU image's python with CUDA torch) is used as
# is: a venv made from it would not see its packages when it is itself a venv. Otherwise a venv in $OUT.
if "$PYTHON" -c "import torch, torchvision, numpy, yaml, jinja2, matplotlib, PIL, tqdm" 2>/dev/null; then
  VPY="$PYTHON"; echo "using $("$PYTHON" -c 'import sys; print(sys.executable)') as is"
else
  if [ ! -x "$OUT/venv/bin/python" ]; then "$PYTHON" -m venv --system-site-packages "$OUT/venv"; fi
  VPY="$OUT/venv/bin/python"
  "$VPY" -m pip install -q -e "$REPO" \
    || "$VPY" -m pip install -q --no-deps --no-build-isolation -e "$REPO" \
    || echo "pip install failed: running from the checkout with PYTHONPATH"
fi
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

section "torch CUDA"
"$VPY" - <<'PY'
import torch
print("torch", torch.__version__, "| built for CUDA", torch.version.cuda, "| cudnn", torch.backends.cudnn.version())
print("cuda available:", torch.cuda.is_available(), "| devices:", torch.cuda.device_count())
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"  [{i}] {p.name}, {p.total_memory / 2**30:.1f} GiB, capability {p.major}.{p.minor}")
PY

durations() {  # $1: an --out folder; prints status, score and per-stage seconds of every result.json in it
  "$VPY" - "$1" <<'PY'
import json, sys
from pathlib import Path
found = sorted(Path(sys.argv[1]).glob("*/result.json"))
if not found:
    print("  no result.json under", sys.argv[1])
for path in found:
    result = json.loads(path.read_text())
    prov = result.get("provenance", {})
    print(f"  {result.get('student')}: {result.get('status')} {result.get('score')}/{result.get('max_score')}"
          f" device={prov.get('device')} sandbox={prov.get('sandbox', {}).get('engine', prov.get('sandbox'))}")
    seen = prov.get("device_by_stage") or {}
    for stage, seconds in (prov.get("durations_s") or {}).items():
        print(f"    {stage:10s} {seconds:8.2f} s   runner device: {seen.get(stage)}")
PY
}

grade() {  # $1: label, rest: extra grader arguments
  local label="$1"; shift
  section "grade reference: $label"
  local started=$SECONDS
  timeout "$LIMIT" "$VPY" -m grader grade reference --out "$OUT/$label" --rubric rubric.yaml --gpus 0 "$@"
  echo "exit code $? after $((SECONDS - started)) s"
  durations "$OUT/$label"
}

throughput() {  # jobs sharing one GPU: bench/gpu_throughput.py, bounded
  section "bench/gpu_throughput.py ${THROUGHPUT_ARGS:---n 8 --ks 1,2,4,8 --scale 0.25 --designs ben,eve --budget-s 330}"
  # shellcheck disable=SC2086 # the bench's arguments are words
  timeout "${THROUGHPUT_TIMEOUT_S:-480}" "$VPY" bench/gpu_throughput.py \
    ${THROUGHPUT_ARGS:---n 8 --ks 1,2,4,8 --scale 0.25 --designs ben,eve --budget-s 330} || echo "bench/gpu_throughput.py: exit code $?"
}

if [ "${THROUGHPUT:-0}" = only ]; then
  throughput
  exit 0
fi

section "CUDA under the local sandbox's memory rlimits (address space on CPU, data segment on GPU)"
for limit in RLIMIT_AS:6144 RLIMIT_AS:16384 RLIMIT_DATA:6144 RLIMIT_DATA:2048; do
  "$VPY" - "$limit" <<'PY'
import resource, sys, time
name, mb = sys.argv[1].split(":")
resource.setrlimit(getattr(resource, name), (int(mb) << 20, int(mb) << 20))
import torch
try:
    t = time.perf_counter()
    x = torch.ones(4096, 4096, device="cuda") @ torch.ones(4096, 4096, device="cuda")
    torch.cuda.synchronize()
    print(f"  {name} {mb} MB: CUDA works ({time.perf_counter() - t:.2f} s to first result)")
except Exception as exc:
    print(f"  {name} {mb} MB: CUDA FAILS: {type(exc).__name__}: {str(exc).splitlines()[0][:200]}")
try:
    big = bytearray(int(mb) << 21)  # twice the limit, on the host
    print(f"  {name} {mb} MB: a host allocation of twice the limit was NOT refused")
except MemoryError:
    print(f"  {name} {mb} MB: a host allocation of twice the limit is refused (MemoryError)")
PY
done

grade gpu --sandbox local

section "docker"
if ! docker info >/dev/null 2>&1; then
  echo "Docker Engine not reachable: docker variant skipped"
elif ! docker info --format '{{json .Runtimes}}' | grep -q nvidia; then
  echo "Docker has no NVIDIA runtime (install nvidia-container-toolkit): docker variant skipped"
else
  if ! docker image inspect "$IMAGE" >/dev/null 2>&1; then
    if [ "${BUILD:-0}" = 1 ]; then docker build -t "$IMAGE" "$REPO" || IMAGE=test; else IMAGE=test; fi
  fi
  echo "image: $IMAGE"
  grade gpu-docker --sandbox docker --image "$IMAGE"
fi

# BENCH=1: the class-scale CPU benchmarks on two cores of this (quieter, larger) machine, pinned with taskset
# so that "-j 2 on 2 cores" means the same as on the development machine; each bounded by BENCH_TIMEOUT_S.
if [ "${BENCH:-0}" = 1 ]; then
  CORES="${BENCH_CORES:-0,1}"
  IFS=';' read -r -a benches <<< "${BENCHES:-overhead.py --rounds 3;scaling.py;regrade.py}"
  for bench in "${benches[@]}"; do
    section "bench/$bench (taskset -c $CORES)"
    # shellcheck disable=SC2086 # the bench's arguments are words
    timeout "${BENCH_TIMEOUT_S:-240}" taskset -c "$CORES" "$VPY" bench/$bench || echo "bench/$bench: exit code $?"
  done
fi

if [ "${THROUGHPUT:-0}" = 1 ]; then throughput; fi
