"""Schemathesis against the running API's own /openapi.json: generated requests, valid and invalid, on every
operation, and none may get a 5xx. Bounded in examples so it takes well under a minute.

The events stream is left out of the fuzzing: for a job that exists it stays open until the job ends (no
worker runs here), so each such case would cost a full request timeout. tests/integration/test_progress.py and
test_edge.py cover it. So are the OpenAI-compatible image routes: a valid request waits for its job (up to
GENFLEET_OPENAI_WAIT_S, then a 504 that names it); their refusals are tested in tests/unit/test_openai_schema.py
and, through the official SDK, tests/integration/test_openai.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx


def test_openapi_is_complete_with_examples(stack):
    api = stack.start_api()
    spec = httpx.get(f"{api}/openapi.json").json()
    assert {"/v1/jobs", "/v1/jobs/{job_id}", "/v1/jobs/{job_id}/events", "/v1/batches", "/v1/batches/{batch_id}",
            "/healthz", "/readyz"} <= set(spec["paths"])
    schemas = spec["components"]["schemas"]
    assert schemas["JobRequest"]["examples"] and schemas["BatchRequest"]["examples"]
    post = spec["paths"]["/v1/batches"]["post"]
    assert set(post["requestBody"]["content"]) == {"application/json", "application/x-ndjson"}
    assert {"401", "409", "422", "429", "503"} <= set(spec["paths"]["/v1/jobs"]["post"]["responses"])


def test_schemathesis_finds_no_server_errors(stack, tmp_path):
    api = stack.start_api(GENFLEET_API_KEYS="fuzz:fuzz-key")
    st = shutil.which("st", path=str(Path(sys.executable).parent))
    r = subprocess.run([st, "run", f"{api}/openapi.json", "--checks", "not_a_server_error", "--max-examples", "60",
                        "--header", "Authorization: Bearer fuzz-key", "--request-timeout", "10",
                        "--generation-deterministic", "--phases", "examples,coverage,fuzzing",
                        "--exclude-path-regex", "/events$|^/v1/images/"],
                       capture_output=True, text=True, timeout=600, cwd=tmp_path,
                       env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.integration.st_hooks",
                            "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert "generated" in r.stdout and " passed" in r.stdout
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-2000:]
