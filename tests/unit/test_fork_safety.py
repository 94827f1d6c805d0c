"""A worker's pool process is forked from a main process that imported torch: the worker package makes PyTorch
ask NVML, not the CUDA runtime, whether there is a GPU, so the fork can still use CUDA. Without it, on an H200,
every batch failed with "Cannot re-initialize CUDA in forked subprocess" (docs/benchmarks.md). No GPU is here:
this checks that the worker's app, imported with the variable unset, leaves torch reading it as set."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration  # a fresh interpreter: the variable must be unset before the import


def test_the_worker_app_makes_torch_check_cuda_through_nvml():
    env = {k: v for k, v in os.environ.items() if k != "PYTORCH_NVML_BASED_CUDA_CHECK"}
    probe = ("import genfleet.workers.app, torch.cuda; "
             "print(torch.cuda._nvml_based_avail(), torch.cuda.is_initialized())")
    out = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, env={**env, "PYTHONPATH": str(ROOT),
                         "GENFLEET_REDIS_URL": "redis://127.0.0.1:1/0"}, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "False"]  # NVML answers; the parent never initialized CUDA
