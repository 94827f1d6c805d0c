"""The GPU fast path a worker applies to a model's pipeline, chosen per model by settings, each part
switchable (`GENFLEET_FASTPATH`, JSON: model name, or "*" for every model, to a `FastPath`).

    GENFLEET_FASTPATH='{"*": {"compile": "regional", "channels_last": true, "fuse_qkv": true}}'
    GENFLEET_FASTPATH='{"*": {"compile": "full", "compile_mode": "max-autotune-no-cudagraphs",
                              "inductor_tuning": true, "compile_vae": true, "channels_last": true,
                              "cudnn_benchmark": true}}'   # the full-graph recipe (FULL_GRAPH)
    GENFLEET_FASTPATH='{"embedded": {"deep_cache_interval": 3}}'   # one model only
    GENFLEET_FASTPATH='{"sdxl": {"compile": "full", "quantize": "fp8"}}'   # FP8 linear layers (Ada, Hopper)
    GENFLEET_COMPILE_CACHE_DIR=/compile-cache   # a volume: a scale-up reuses the compiled kernels

It lives in shared/ because the API validates it with the rest of the settings; workers/fastpath.py applies it.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field, model_validator


class Compile(StrEnum):
    off = "off"
    regional = "regional"  # the denoiser's repeated blocks only (diffusers' compile_repeated_blocks): short compiles
    full = "full"  # the whole denoiser: a longer compile, sometimes a little faster


class CompileMode(StrEnum):
    """torch.compile's `mode`: how hard inductor works for speed, and whether calls replay as CUDA graphs."""

    default = "default"
    # CUDA graphs: each call replays its kernels as one graph, so Python's launch overhead goes (batch 1 gains
    # most); the graphs keep a memory pool of their own, which costs GPU memory.
    reduce_overhead = "reduce-overhead"
    # Benchmarks matmul and convolution kernels at compile time and keeps the fastest: minutes more to compile
    # a UNet (once per shape, then from the cache), with CUDA graphs.
    max_autotune = "max-autotune"
    max_autotune_no_cudagraphs = "max-autotune-no-cudagraphs"


class Quantize(StrEnum):
    """The denoiser's linear layers in fewer bits, with torchao (workers/quantize.py)."""

    off = "off"
    # FP8 activations and weights, dynamically scaled, on FP8 tensor cores: for SDXL, SD3 and Flux on a GPU of
    # compute capability 8.9 or newer (skipped with a warning elsewhere); the scorers measure its cost
    fp8 = "fp8"
    int8_weight = "int8-weight"  # int8 weights, dequantized on the fly: half their memory; runs anywhere


class FastPath(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    compile: Compile = Compile.off
    compile_mode: CompileMode = CompileMode.default
    # Pad each pipeline call to the next power of two (1, 2, 4, 8, ...), so a new batch size reuses compiled
    # code instead of compiling again; the padding's images are dropped. On by default whenever compiling.
    bucket_batches: bool | None = None
    fuse_qkv: bool = False  # one fused projection for attention's query, key and value
    channels_last: bool = False  # the denoiser's and the VAE's convolutions in NHWC
    # Decode with the VAE one image at a time from this many images a call (0: never): bounds decode memory.
    vae_slicing_from: int = Field(0, ge=0)
    # Step caching for transformer denoisers (diffusers' first-block cache): reuse the rest of the network's
    # output while the first block's changes less than this; 0 turns it off. The scorers measure its cost.
    step_cache_threshold: float = Field(0.0, ge=0.0, le=1.0)
    # Step caching for UNet denoisers (DeepCache, workers/deepcache.py): the whole UNet runs every this many
    # steps, the steps between only its outermost blocks; 0 or 1 turns it off. The scorers measure its cost.
    deep_cache_interval: int = Field(0, ge=0, le=16)
    # The fastest public recipes' inductor options, for this compile only: 1x1 convolutions as matmuls,
    # coordinate-descent tuning in every direction, no epilogue fusion (diffusers' speed-up guide, flux-fast)
    inductor_tuning: bool = False
    compile_vae: bool = False  # the VAE decoder compiled too, with the same options (it is most of a decode)
    freezing: bool = False  # inductor folds the weights in as constants (inference only; longer compiles)
    cudnn_benchmark: bool = False  # cuDNN times its convolution algorithms for each shape and keeps the fastest
    quantize: Quantize = Quantize.off

    @model_validator(mode="after")
    def _options_need_a_compile(self) -> FastPath:
        needs = [name for name in ("inductor_tuning", "compile_vae", "freezing") if getattr(self, name)]
        if self.compile_mode is not CompileMode.default:
            needs.append("compile_mode")
        if self.compile is Compile.off and needs:
            raise ValueError(f"{', '.join(needs)} need{'s' if len(needs) == 1 else ''} compile set to regional or "
                             "full (it is off)")
        return self

    @property
    def buckets(self) -> bool:
        return self.compile is not Compile.off if self.bucket_batches is None else self.bucket_batches


# The full-graph recipe the issue of 2026-12-04 asked the next GPU lease to measure (docs/benchmarks.md): the
# whole UNet and the VAE decoder in one graph each, static shapes, channels_last inside the graph only.
FULL_GRAPH = FastPath(compile=Compile.full, compile_mode=CompileMode.max_autotune_no_cudagraphs,
                      inductor_tuning=True, compile_vae=True, channels_last=True, fuse_qkv=True,
                      cudnn_benchmark=True)


def fastpath_for(model: str, choices: dict[str, FastPath]) -> FastPath:
    return choices.get(model) or choices.get("*") or FastPath()
