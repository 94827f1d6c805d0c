#!/usr/bin/env bash
# The delivery and fault tests under load, as CI's races showed up: RUNS passes of one pytest each, with two
# CPU-burning processes beside them. One line a pass in $OUT/summary.txt; each pass's log and JUnit XML beside it.
#   tests/under_load.sh [RUNS] [TEST...]     (default: 10 passes of the five files docs/delivery.md names)
set -u
cd "$(dirname "$0")/.."
runs=${1:-10}
shift || true
tests=("$@")
[ ${#tests[@]} -gt 0 ] || tests=(tests/integration/test_failover.py tests/integration/test_sentinel.py
  tests/integration/test_durability.py tests/integration/test_chaos.py tests/integration/test_write_overlap.py)
out=${OUT:-$(mktemp -d /tmp/genfleet-under-load.XXXX)}
mkdir -p "$out"
python3 -c 'while True: pass' & b1=$!
python3 -c 'while True: pass' & b2=$!
trap 'kill $b1 $b2' EXIT
for i in $(seq 1 "$runs"); do
  start=$(date +%s)
  CI=true timeout 1200 .venv/bin/pytest -q -p no:cacheprovider "${tests[@]}" --junitxml="$out/run-$i.xml" \
    > "$out/run-$i.log" 2>&1
  rc=$?
  echo "run $i rc=$rc $(( $(date +%s) - start ))s $(tail -1 "$out/run-$i.log")" | tee -a "$out/summary.txt"
done
