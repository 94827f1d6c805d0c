"""The GPU workers (`genfleet.workers`).

Celery's prefork pool forks its pool process from the worker's main process, which imported torch. PyTorch
refuses CUDA from Python in a child forked after the parent asked the CUDA runtime how many devices there are
(`torch.cuda.is_available()` does, and so does some import on a CUDA machine): "Cannot re-initialize CUDA in
forked subprocess". On an H200 that failed every batch of a worker (docs/benchmarks.md#genfleet-gpu-check).
With this setting, PyTorch's own switch for it, the question goes to NVML and leaves the runtime untouched. It
is set here, before anything below can ask, and inherited by the pool and writer processes.
"""

import os

os.environ.setdefault("PYTORCH_NVML_BASED_CUDA_CHECK", "1")
