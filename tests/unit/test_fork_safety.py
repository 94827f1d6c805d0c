"""A worker's pool process is forked from a main process that imported torch: building the worker's app makes
PyTorch ask NVML, not the CUDA runtime, whether there is a GPU, so the fork can still use CUDA. Without it, on an
H200, every batch failed with "Cannot re-initialize CUDA in forked subprocess" (docs/benchmarks.md). No GPU is
here: this checks that the worker's app, built with the variable unset, leaves torch reading it as set, and that
importing the module alone changes nothing."""

import os
import subprocess
import sys

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.integration  # a fresh interpreter: the variable must be unset before the import


def _probe(code: str, **env: str) -> list[str]:
    base = {k: v for k, v in os.environ.items() if k not in ("PYTORCH_NVML_BASED_CUDA_CHECK", "GENFLEET_REDIS_URL")}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**base, "PYTHONPATH": str(ROOT), **env},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout.split()


def test_the_worker_app_makes_torch_check_cuda_through_nvml():
    probe = ("from genfleet.workers.app import create_app; from genfleet.shared.settings import get_settings; "
             "create_app(get_settings()); import torch.cuda; "
             "print(torch.cuda._nvml_based_avail(), torch.cuda.is_initialized())")
    # NVML answers; the parent never initialized CUDA (provenance off: a worker with no signer would not start)
    assert _probe(probe, GENFLEET_REDIS_URL="redis://127.0.0.1:1/0", GENFLEET_PROVENANCE="off") == ["True", "False"]


def test_importing_the_worker_modules_builds_nothing_exits_nothing_and_edits_no_environment():
    # With GENFLEET_REDIS_URL unset, building the app would exit (`genfleet worker` starts the embedded Redis).
    # torch's own import sets TORCHINDUCTOR_CACHE_DIR, and OpenCV's (which diffusers imports once the watermark's
    # package is installed) Qt's paths: the libraries are imported before the environment is read
    probe = ("import os, torch, diffusers, transformers, celery, cv2; before = dict(os.environ); "
             "import genfleet.workers.app as w, genfleet.workers.webhooks as h, genfleet.api.app as a; "
             "print(dict(os.environ) == before, w._worker is None, h._settings is None, 'app' not in vars(a))")
    assert _probe(probe) == ["True", "True", "True", "True"]


def test_a_worker_whose_kombu_lost_a_name_the_leases_need_refuses_to_start_naming_it():
    # what an upgrade that renamed kombu's QoS._dirty would do: `celery -A genfleet.workers.app` asks for `app`
    probe = ("import kombu.transport.virtual as v; init = v.QoS.__init__\n"
             "def moved(self, *a, **k):\n    init(self, *a, **k); self._acked = self.__dict__.pop('_dirty')\n"
             "v.QoS.__init__ = moved; v.QoS.restore_unacked_once = lambda self, stderr=None: None\n"
             "import genfleet.workers.app as w\ntry:\n    w.app\nexcept SystemExit as e:\n    print('refused:', e)\n"
             "print('built' if w._worker else 'nothing built')")
    out = _probe(probe, GENFLEET_REDIS_URL="redis://127.0.0.1:1/0")
    assert " ".join(out) == ("refused: genfleet worker cannot start: kombu: virtual.QoS has no set `_dirty` "
                             "(held messages' leases) nothing built")
