"""The GPU check's measurements (`genfleet gpu-check`, genfleet/gpucheck.py runs them as stages): a pipeline's
images/s at a batch size, eager and with the fast path, DeepCache's speed-up, each fast-path part against eager,
and how far each one's pictures are from eager's. Timings synchronize the device; peaks are GPU memory that
tensors held."""

from __future__ import annotations

import argparse
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genfleet.bench import emit, spread
from genfleet.shared.fastpath import FULL_GRAPH, Compile, CompileMode, FastPath, Quantize
from genfleet.workers import deepcache, quantize
from genfleet.workers.architectures import build
from genfleet.workers.fastpath import apply
from genfleet.workers.models import load_pipeline
from genfleet.workers.sampling import GroupKey, ImageSpec, call_kwargs

Arch = tuple[str, int, int]  # architecture, size, steps
# The recipe the lease after 2026-12-04 measures: on an H200 the regional compile with channels_last outside a
# graph ran 0.91x eager (channels_last alone 0.93x), so channels_last is now inside the one graph only.
FAST = FULL_GRAPH
_FULL = FastPath(compile=Compile.full)
MAX_DIFF = 0.05  # pixels in [0, 1]: a part whose pictures moved further from eager's is no faster path to them
# The whole recipe first, then each part alone, in alternation with eager (the part's options on a plain full
# compile, so each line says what that option adds to one graph), then the regional compile that cold-start
# sensitive deployments keep, and the modes with CUDA graphs, whose compiles are longest: a run cut short keeps
# the most.
PARTS = {"full_graph": FULL_GRAPH, "compile_full": _FULL,
         "inductor_tuning": _FULL.model_copy(update={"inductor_tuning": True}),
         "compile_vae": _FULL.model_copy(update={"compile_vae": True}),
         "channels_last_in_graph": _FULL.model_copy(update={"channels_last": True}),
         "fuse_qkv": _FULL.model_copy(update={"fuse_qkv": True}),
         "cudnn_benchmark": _FULL.model_copy(update={"cudnn_benchmark": True}),
         "freezing": _FULL.model_copy(update={"freezing": True}),
         "max_autotune_no_cudagraphs": _FULL.model_copy(
             update={"compile_mode": CompileMode.max_autotune_no_cudagraphs}),
         "fp8": _FULL.model_copy(update={"quantize": Quantize.fp8}),
         "full_graph_fp8": FULL_GRAPH.model_copy(update={"quantize": Quantize.fp8}),
         "int8_weight": _FULL.model_copy(update={"quantize": Quantize.int8_weight}),
         "compile_regional": FastPath(compile=Compile.regional, fuse_qkv=True),
         "cuda_graphs": FastPath(compile=Compile.full, compile_mode=CompileMode.reduce_overhead),
         "max_autotune": FastPath(compile=Compile.full, compile_mode=CompileMode.max_autotune)}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float | None:
    """The most GPU memory tensors held since the last reset (None on the CPU)."""
    return torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def pictures(pipe: Any, arch: Arch, batch: int, device: torch.device) -> np.ndarray:
    _, size, steps = arch
    specs = [ImageSpec("a red cat with a blue hat", None, seed) for seed in range(batch)]
    kwargs = call_kwargs(GroupKey("check", size, size, steps, None), specs, device)
    return np.asarray(pipe(**kwargs, output_type="np").images, dtype=np.float32)


def timed(pipe: Any, arch: Arch, batch: int, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    pictures(pipe, arch, batch, device)
    sync(device)
    return time.perf_counter() - start


def rates(pipe: Any, arch: Arch, batch: int, device: torch.device, repeats: int) -> dict[str, float]:
    """Images/s of `repeats` timed calls of a warm pipeline: median, min and max."""
    return spread([batch / timed(pipe, arch, batch, device) for _ in range(max(repeats, 1))])


def distance(a: np.ndarray, b: np.ndarray, what: str) -> dict[str, float]:
    gap = np.abs(a - b)
    return {f"max_abs_diff_vs_{what}": float(gap.max()), f"mean_abs_diff_vs_{what}": float(gap.mean())}


def failure(e: BaseException, keep: int = 4000) -> str:
    """An error as its line prints it: its type and the end of its message (where a child's traceback ends)."""
    return f"{type(e).__name__}: {e}"[-keep:]


def load(arch: str, device: torch.device) -> Any:
    dtype = torch.float16 if device.type == "cuda" else torch.float32
    pipe = build(arch).to(device, dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def save_folder(pipe: Any, folder: Path) -> None:
    """The pipeline as a diffusers folder, whole or not at all (a cut-off save never passes for a model)."""
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    pipe.save_pretrained(str(partial))
    partial.rename(folder)


def raw(name: str, arch: Arch, device: torch.device, args: argparse.Namespace, fast: FastPath | None,
        batch1: bool = False, deep: bool = False, save_to: Path | None = None) -> float:
    """Eager at batch 1 (optional) and B, DeepCache (optional), then with `fast` at B (when given): returns the
    last figure's images/s."""
    batch, repeats = args.batch, args.repeats
    pipe = load(arch[0], device)
    if save_to is not None and not save_to.exists():
        save_folder(pipe, save_to)
    if batch1:
        pictures(pipe, arch, 1, device)  # warm: kernels, allocator, autotuning
        _reset_peak(device)
        emit(measure="raw", model=name, mode="eager", batch=1, images_per_s=rates(pipe, arch, 1, device, repeats),
             peak_memory_gib=peak_gib(device))
    _reset_peak(device)
    eager = pictures(pipe, arch, batch, device)  # warm at B, and the pictures the others are held to
    eager_rate = rates(pipe, arch, batch, device, repeats)
    emit(measure="raw", model=name, mode="eager", batch=batch, images_per_s=eager_rate,
         peak_memory_gib=peak_gib(device))
    if deep:
        deep_cache(name, pipe, arch, device, args, eager)
    if fast is None:
        return eager_rate["median"]
    skipped = quantize.probe(fast.quantize, device, pipe.dtype)  # what this device cannot run: said, not hidden
    if skipped:
        fast = fast.model_copy(update={"quantize": Quantize.off})
    applied = apply(pipe, fast)
    start = time.perf_counter()
    compiled = pictures(pipe, arch, batch, device)  # the first call compiles
    first = time.perf_counter() - start
    _reset_peak(device)
    rate = rates(pipe, arch, batch, device, repeats)
    emit(measure="raw", model=name, mode="compiled", batch=batch, images_per_s=rate, applied=applied,
         **({"quantize_skipped": skipped} if skipped else {}), first_call_s=first,
         speedup_vs_eager=rate["median"] / eager_rate["median"], peak_memory_gib=peak_gib(device),
         **distance(compiled, eager, "eager"))
    del pipe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rate["median"]


def deep_cache(name: str, pipe: Any, arch: Arch, device: torch.device, args: argparse.Namespace,
               plain: np.ndarray, interval: int = 3) -> None:
    """DeepCache's speed-up, as seconds uncached over seconds cached in alternating rounds, and its distance from
    the uncached pictures `plain`; it is off again afterwards."""
    deepcache.enable(pipe.unet, interval)
    cached = pictures(pipe, arch, args.batch, device)  # warm, and the pictures
    ratios = []
    for _ in range(max(args.repeats, 1)):
        deepcache.disable(pipe.unet)
        off = timed(pipe, arch, args.batch, device)
        deepcache.enable(pipe.unet, interval)
        ratios.append(off / timed(pipe, arch, args.batch, device))
    deepcache.disable(pipe.unet)
    found = spread(ratios)
    emit(measure="deep_cache", model=name, interval=interval, batch=args.batch, rounds=len(ratios),
         speedup=found["median"], speedup_min=found["min"], speedup_max=found["max"],
         **distance(cached, plain, "uncached"))


def parts(folder: Path, arch: Arch, device: torch.device, args: argparse.Namespace) -> dict[str, float]:
    """Each part of the fast path alone, as a second pipeline from the same folder beside an eager one, the two
    timed in alternation: each line's speed-up is the median of eager's seconds over the part's, call by call.
    Returns each part's median speed-up, for those whose pictures stayed within `MAX_DIFF` of eager's."""
    found: dict[str, float] = {}
    eager = load_pipeline(str(folder), device)
    want = pictures(eager, arch, args.batch, device)  # warm, and the pictures each part is held to
    for name in args.parts:
        fast = PARTS[name]
        if skipped := quantize.probe(fast.quantize, device, eager.dtype):
            emit(measure="part", part=name, skipped=skipped)
            continue
        try:
            pipe = load_pipeline(str(folder), device)
            applied = apply(pipe, fast)
            start = time.perf_counter()
            pictures(pipe, arch, args.batch, device)  # a compile's first call
            first = time.perf_counter() - start
            _reset_peak(device)
            ratios = [timed(eager, arch, args.batch, device) / timed(pipe, arch, args.batch, device)
                      for _ in range(max(args.repeats, 1))]
            # From a call after the timed ones: CUDA graphs record on an early call and replay after, and a replay
            # that overwrote a buffer still in use would show here.
            got = pictures(pipe, arch, args.batch, device)
            far = distance(got, want, "eager")
            emit(measure="part", part=name, applied=applied, batch=args.batch, first_call_s=first, rounds=len(ratios),
                 **{f"speedup_{k}": v for k, v in spread(ratios).items()}, **far,
                 peak_memory_gib_both_pipelines=peak_gib(device))
            if far["max_abs_diff_vs_eager"] <= MAX_DIFF:
                found[name] = spread(ratios)["median"]
        except Exception as e:  # one part that will not apply (a graph break under `full`) leaves the others
            emit(measure="part", part=name, error=failure(e))
        finally:
            pipe = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
    return found
