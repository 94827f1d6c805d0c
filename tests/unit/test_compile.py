"""The compiled fast path (workers/fastpath.py) on a real pipeline at toy width: a worker that compiles keeps
serving as new batch buckets and image sizes arrive, past the 8 variants Dynamo allows a function by default."""

import logging

import numpy as np
import pytest
import torch
import torch._dynamo

from genfleet.shared.fastpath import Compile, CompileMode, FastPath
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


@pytest.mark.slow  # the UNet and the VAE decoder at three batch buckets: about a minute on 2 cores
def test_the_full_graph_recipe_matches_eager_and_compiles_nothing_more_on_a_second_run_of_mixed_batches():
    from torch._dynamo.utils import counters

    from genfleet.shared.fastpath import FULL_GRAPH
    from genfleet.workers.sampling import GroupKey, ImageSpec, Sampler

    torch._dynamo.reset()
    # the recipe as a GPU gets it, less what the CPU has no use for (its autotuning mode, cuDNN), plus freezing
    fast = FULL_GRAPH.model_copy(update={"compile_mode": CompileMode.default, "cudnn_benchmark": False,
                                         "freezing": True})
    eager, compiled = build("tiny-sd"), build("tiny-sd")
    assert apply(compiled, fast) == ["fuse_qkv", "channels_last", "compile_full+tuned", "compile_vae"]
    for p in (eager, compiled):
        p.set_progress_bar_config(disable=True)
    key = GroupKey("m", 64, 64, 1, 0.0)
    sampler = Sampler(torch.device("cpu"), 4, {"m": fast})
    plain = Sampler(torch.device("cpu"), 4)

    def run(sizes: tuple[int, ...]) -> list[np.ndarray]:
        images = []
        for n in sizes:
            specs = [ImageSpec(f"a cat {i}", None, 10 * n + i) for i in range(n)]
            got = sampler.sample(compiled, key, specs)
            want = plain.sample(eager, key, specs)
            images += [np.asarray(g, dtype=float) - np.asarray(w, dtype=float) for g, w in zip(got, want, strict=True)]
        return images

    first = run((1, 3, 2))  # buckets 1, 4 and 2: each compiles once
    graphs = counters["stats"]["unique_graphs"]
    second = run((2, 1, 3, 1, 2))  # the same buckets, in another order
    assert counters["stats"]["unique_graphs"] == graphs, "a batch size seen before compiled again"
    assert max(np.abs(d).max() for d in first + second) <= 2  # 8-bit pixels: rounding apart


def _linears(module: torch.nn.Module) -> list[torch.nn.Linear]:
    return [m for m in module.modules() if isinstance(m, torch.nn.Linear)]


@pytest.mark.slow  # one full compile of the toy UNet: about 20 s on 2 cores
def test_int8_weights_on_the_denoisers_linear_layers_compile_and_stay_near_eager():
    """`quantize` on the CPU, where int8 weights run (FP8 needs a GPU): torchao converts the denoiser's linear
    layers, only those, before the compile, and the pictures stay close to eager's."""
    from genfleet.shared.fastpath import Quantize
    from genfleet.workers.quantize import convertible

    torch._dynamo.reset()
    eager, quantized = build("tiny-sd"), build("tiny-sd")
    assert _linears(quantized.unet) and all(convertible(m) for m in _linears(quantized.unet))
    assert not convertible(torch.nn.Linear(40, 24))  # FP8's scaled matmul wants both sides a multiple of 16
    assert apply(quantized, FastPath(compile=Compile.full, quantize=Quantize.int8_weight)) == [
        "quantize_int8_weight", "compile_full"]
    for m in _linears(quantized.unet):  # torchao's tensors hold the weights in int8 now
        assert type(m.weight).__module__.startswith("torchao"), m
    assert not any(type(m.weight).__module__.startswith("torchao") for m in _linears(quantized.vae))
    for p in (eager, quantized):
        p.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 2, "width": 64, "height": 64, "output_type": "np"}
    plain = np.asarray(eager(["a cat", "a dog"], generator=torch.Generator().manual_seed(1), **call).images)
    got = np.asarray(quantized(["a cat", "a dog"], generator=torch.Generator().manual_seed(1), **call).images)
    assert 0 < np.abs(got - plain).max() < 0.01  # rounded weights move the pixels a little: 0.002 here, of [0, 1]


@pytest.mark.unit
def test_fp8_where_the_device_has_none_is_skipped_and_says_why(caplog):
    """A fleet of mixed GPUs can share one setting: a worker whose device has no FP8 serves unquantized, and its
    log says why (torchao itself refuses FP8 on the CPU)."""
    from genfleet.shared.fastpath import Quantize
    from genfleet.workers.quantize import unsupported

    pipe = build("tiny-sd")
    with caplog.at_level(logging.WARNING, logger="genfleet.workers.quantize"):
        assert apply(pipe, FastPath(quantize=Quantize.fp8)) == []
    assert "quantize fp8 skipped" in caplog.text and "compute capability 8.9" in caplog.text
    assert all(type(m.weight) is torch.nn.Parameter for m in _linears(pipe.unet))
    assert unsupported(Quantize.int8_weight, torch.device("cpu")) is None
    assert unsupported(Quantize.off, torch.device("cpu")) is None
