#!/usr/bin/env bash
# `genfleet gpu-check` on a GPU machine lent for a fixed time, from a checkout with no install step: the Python
# packages the machine lacks come as wheels in .whl/ (tests/benchmarks/gpu_wheels.sh makes them here), its
# own torch, transformers and numpy are used as they are. Everything it prints also goes to $OUT (default:
# ./gpu-lease-out), so a run cut off at its limit still leaves its lines.
#
#   OUT=/tmp/out tests/benchmarks/gpu_lease.sh 520    # the check's time budget in seconds; more arguments go to it
set -uo pipefail
cd "$(dirname "$0")/../.."
budget=${1:-520}
shift || true
out=${OUT:-gpu-lease-out}
mkdir -p "$out"
export PYTHONUNBUFFERED=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/genfleet-site \
    .whl/*.whl || exit 1
  export PYTHONPATH="/tmp/genfleet-site:$PWD"
fi
{
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader
  nproc
  python3 -c 'import sys, torch, diffusers, transformers, celery; print(sys.version.split()[0], torch.__version__,
diffusers.__version__, transformers.__version__, celery.__version__)'
} 2>&1 | tee "$out/machine.txt"
timeout $((${budget%.*} + 50)) python3 -m genfleet gpu-check --budget-s "$budget" --work-dir /tmp/genfleet-gpu-check \
  "$@" 2>"$out/stderr.txt" | tee "$out/gpu-check.jsonl"
code=$?
tail -c 4000 "$out/stderr.txt"
exit $code
