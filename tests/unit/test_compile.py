"""The compiled fast path (workers/fastpath.py) on a real pipeline at toy width: a worker that compiles keeps
serving as new batch buckets and image sizes arrive, past the 8 variants Dynamo allows a function by default."""

import numpy as np
import pytest
import torch
import torch._dynamo

from genfleet.shared.fastpath import Compile, FastPath
from genfleet.workers.architectures import build
from genfleet.workers.fastpath import RECOMPILE_LIMIT, apply


@pytest.mark.slow  # five compiles: about 15 s on 2 cores
@torch._dynamo.config.patch(recompile_limit=8)  # Dynamo's default, whatever ran before; restored after
def test_a_compiled_denoiser_serves_more_shapes_than_dynamos_default_limit():
    torch._dynamo.reset()  # variants other tests compiled count against the same limit (one shared code object)
    eager, compiled = build("tiny-sd"), build("tiny-sd")
    assert apply(compiled, FastPath(compile=Compile.regional)) == ["compile_regional"]
    assert torch._dynamo.config.recompile_limit == RECOMPILE_LIMIT
    for p in (eager, compiled):
        p.set_progress_bar_config(disable=True)
    # Each size compiles the repeated block in two shapes: the fifth size is the ninth and tenth variants, which
    # raised FailOnRecompileLimitHit under the default limit (fullgraph=True has no eager fallback).
    for size in (40, 48, 56, 64, 72):
        call = {"num_inference_steps": 1, "width": size, "height": size, "output_type": "np"}
        want = np.asarray(eager(["a cat"], generator=torch.Generator().manual_seed(size), **call).images)
        got = np.asarray(compiled(["a cat"], generator=torch.Generator().manual_seed(size), **call).images)
        assert np.abs(got - want).max() < 1e-4  # pixels in [0, 1]
