"""Applies a model's fast path (shared/fastpath.py) to its pipeline: diffusers' own hooks where they exist.

Compilation is lazy: the first call of each batch size compiles (with `bucket_batches`, one size per power of
two). Kernels land in inductor's on-disk caches; pointed at a volume (`GENFLEET_COMPILE_CACHE_DIR`), they let a
restarted or scaled-up worker load them instead of compiling again.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch

from genfleet.shared.fastpath import Compile, CompileMode, FastPath
from genfleet.workers import deepcache, quantize

log = logging.getLogger(__name__)

# Compiled variants a compiled function may hold before Dynamo gives up on it (its default is 8). Shapes are static
# (`dynamic=False`), so each (block shape, batch bucket, image size) is a variant of its own: SD 1.5's repeated
# transformer block comes in 4 shapes, times 4 buckets up to batch 8, times each size served. Past the limit a
# `fullgraph=True` compile does not fall back to eager: the call raises (FailOnRecompileLimitHit), so a worker
# failed every job of a new size once it had served a few (seen at toy size on the CPU: the 9th variant).
RECOMPILE_LIMIT = 256


def use_compile_cache(folder: Path | None) -> None:
    """Points inductor's and Triton's caches at `folder` (call before anything compiles). Inductor's FX graph
    cache and its AOTAutograd cache are on by default; a warm cache skips code generation and C++/Triton builds,
    leaving only Dynamo's tracing."""
    if folder is None:
        return
    folder.mkdir(parents=True, exist_ok=True)
    # Set, not defaulted: importing diffusers may already have made inductor resolve (and export) its default.
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(folder.resolve() / "inductor")
    os.environ["TRITON_CACHE_DIR"] = str(folder.resolve() / "triton")
    from torch._inductor.utils import clear_caches  # what torch's own temporary_cache_dir() does on a switch

    clear_caches()


def denoiser(pipe: Any) -> Any:
    """The network a sampling step runs: a UNet, or a transformer (DiT)."""
    module = getattr(pipe, "unet", None) or getattr(pipe, "transformer", None)
    return module if isinstance(module, torch.nn.Module) else None


def apply(pipe: Any, fast: FastPath) -> list[str]:
    """Applies `fast` to `pipe` in place; returns what was applied (logged, and read by the GPU check)."""
    net, vae = denoiser(pipe), getattr(pipe, "vae", None)
    done: list[str] = []
    if net is None:
        return done
    if fast.fuse_qkv and hasattr(net, "fuse_qkv_projections"):
        net.fuse_qkv_projections()
        done.append("fuse_qkv")
    if quantized := quantize.apply(net, fast.quantize, next(net.parameters()).device):  # after fusing, before compiling
        done.append(quantized)
    if fast.channels_last:
        modules: list[Any] = [m for m in (net, vae) if isinstance(m, torch.nn.Module)]
        for module in modules:
            module.to(memory_format=torch.channels_last)  # Module.to takes it; torch's stubs leave it out
        done.append("channels_last")
    if fast.step_cache_threshold and hasattr(net, "enable_cache"):
        from diffusers import FirstBlockCacheConfig

        net.enable_cache(FirstBlockCacheConfig(threshold=fast.step_cache_threshold))
        done.append("step_cache")
    if fast.deep_cache_interval > 1 and deepcache.enable(net, fast.deep_cache_interval):
        done.append("deep_cache")
    if fast.cudnn_benchmark:
        torch.backends.cudnn.benchmark = True  # process-wide: every model's convolutions then get timed once
        done.append("cudnn_benchmark")
    if fast.compile is not Compile.off:
        done.append(compile_denoiser(net, fast))
    decoder = getattr(vae, "decoder", None)
    if fast.compile_vae and isinstance(decoder, torch.nn.Module):
        decoder.compile(**compile_options(fast))
        done.append("compile_vae")
    if done:
        log.info("fast path for %s: %s", type(pipe).__name__, ", ".join(done))
    return done


# diffusers' speed-up guide's and flux-fast's inductor options (`inductor_tuning`)
TUNING = {"conv_1x1_as_mm": True, "coordinate_descent_tuning": True, "epilogue_fusion": False,
          "coordinate_descent_check_all_directions": True}


def compile_options(fast: FastPath) -> dict[str, Any]:
    """torch.compile's arguments for `fast`: one graph, static shapes, and its mode; with inductor options of
    its own (tuning, freezing), the mode goes in as the options it stands for, since torch.compile takes a mode
    or options, not both. The options are this compile's alone: inductor's global config is left as it is."""
    options: dict[str, Any] = {"fullgraph": True, "dynamic": False}
    extra = {**(TUNING if fast.inductor_tuning else {}), **({"freezing": True} if fast.freezing else {})}
    if not extra:
        return {**options, "mode": fast.compile_mode.value}
    from torch._inductor import list_mode_options

    return {**options, "options": {**list_mode_options(fast.compile_mode.value), **extra}}


def compile_denoiser(net: Any, fast: FastPath) -> str:
    """Compiles `net` as `fast` says (lazily: the first call of each shape compiles); returns what it did."""
    allow_recompiles(RECOMPILE_LIMIT)
    options = compile_options(fast)
    suffix = "" if fast.compile_mode is CompileMode.default else f":{fast.compile_mode.value}"
    suffix += "+tuned" if fast.inductor_tuning else ""
    if fast.compile is Compile.regional and getattr(net, "_repeated_blocks", None):
        net.compile_repeated_blocks(**options)
        return "compile_regional" + suffix
    net.compile(**options)
    return "compile_full" + suffix


# Dynamo's variant limits, by their current names first: earlier torch releases (which pyproject.toml allows)
# call them `cache_size_limit`, and have no `recompile_limit`.
RECOMPILE_LIMITS = (("recompile_limit", "cache_size_limit"),
                    ("accumulated_recompile_limit", "accumulated_cache_size_limit"))


def allow_recompiles(limit: int) -> None:
    """Raises Dynamo's per-function variant limit to `limit` (never lowers it: a process may compile other models)."""
    import torch._dynamo

    config = torch._dynamo.config
    for names in RECOMPILE_LIMITS:
        name = next((n for n in names if hasattr(config, n)), None)
        if name is None:
            raise RuntimeError(f"this torch's dynamo config has none of {', '.join(names)}: cannot raise its "
                               "recompile limit, so a compiled worker would fail jobs past it")
        setattr(config, name, max(getattr(config, name), limit))


def bucket(n: int) -> int:
    """The batch size a call of `n` images runs at when batches are bucketed: the next power of two."""
    return 1 << (n - 1).bit_length()


def before_call(pipe: Any, fast: FastPath, n: int) -> None:
    """What a pipeline call of `n` images needs first: the VAE sliced or not for its size, and a step cache that
    starts the run afresh."""
    slice_vae(pipe, fast, n)
    net = denoiser(pipe)
    if net is not None:
        deepcache.reset(net)


def slice_vae(pipe: Any, fast: FastPath, n: int) -> None:
    """Decodes one image at a time from `vae_slicing_from` images a call on, whole batches below it."""
    vae = getattr(pipe, "vae", None)
    if not fast.vae_slicing_from or vae is None or not hasattr(vae, "enable_slicing"):
        return
    if n >= fast.vae_slicing_from:
        vae.enable_slicing()
    else:
        vae.disable_slicing()
