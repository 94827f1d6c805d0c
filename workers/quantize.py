"""The denoiser's linear layers in fewer bits, with torchao (a fast path's `quantize`, shared/fastpath.py).

- `fp8`: activations and weights in FP8 (e4m3), scaled dynamically, the matmuls on FP8 tensor cores: what the
  MLPerf SDXL submissions run their UNet in, and flux-fast its transformer. It needs a GPU of compute capability
  8.9 or newer (Ada, Hopper, Blackwell); torchao refuses anything else, the CPU included.
- `int8-weight`: weights stored in int8 and dequantized on the fly; half the weights' memory, for memory-bound
  small batches. It runs anywhere, which is how the suite checks this module's wiring on the CPU.

Quantize before compiling (inductor then fuses the scaling into the matmuls) and after fusing QKV (so the fused
projection is quantized whole). Only linear layers whose both dimensions are multiples of 16 are converted, as
FP8's scaled matmul requires (`quantize` returns how many were); convolutions, norms and the VAE stay as they
are.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from genfleet.shared.fastpath import Quantize

log = logging.getLogger(__name__)

FP8_CAPABILITY = (8, 9)
_FP8_NEEDS = "FP8 needs a CUDA GPU of compute capability {}.{} or newer (Ada, Hopper)".format(*FP8_CAPABILITY)


def unsupported(kind: Quantize, device: torch.device) -> str | None:
    """Why `kind` cannot run on `device` here, or None when it can."""
    if kind is Quantize.off:
        return None
    try:
        import torchao  # noqa: F401
    except ImportError:
        return "torchao is not installed (it comes with genfleet's worker extra)"
    if kind is Quantize.fp8:
        if device.type != "cuda":
            return f"{_FP8_NEEDS}; this device is {device.type}"
        capability = torch.cuda.get_device_capability(device)
        if capability < FP8_CAPABILITY:
            return f"{_FP8_NEEDS}; this GPU has {capability[0]}.{capability[1]}"
    return None


def probe(kind: Quantize, device: torch.device, dtype: torch.dtype) -> str | None:
    """Why `kind` cannot run here, or None once it has converted and run a small linear layer: where torchao and
    this torch disagree, a GPU check learns it in a second instead of after building a model."""
    if (why := unsupported(kind, device)) is not None or kind is Quantize.off:
        return why
    try:
        layer = torch.nn.Sequential(torch.nn.Linear(64, 64)).to(device, dtype)
        quantize(layer, kind)
        layer(torch.randn(16, 64, device=device, dtype=dtype))
    except Exception as e:  # whatever torchao raises: the reason is the figure
        return f"{type(e).__name__}: {e}"
    return None


def convertible(module: torch.nn.Module, _name: str = "") -> bool:
    return isinstance(module, torch.nn.Linear) and module.in_features % 16 == 0 and module.out_features % 16 == 0


def _config(kind: Quantize, dtype: torch.dtype) -> Any:
    from torchao.quantization import Float8DynamicActivationFloat8WeightConfig, Int8WeightOnlyConfig, PerRow, PerTensor

    # set_inductor_config=False: torchao would otherwise change inductor's global options for every later
    # compile in the process; the fast path's own `inductor_tuning` sets them for its compile only.
    if kind is Quantize.fp8:
        # A scale per row where the model runs in bfloat16; cuBLAS's row-wise FP8 matmul returns bfloat16 only,
        # so a float16 model gets one scale per tensor.
        granularity = PerRow() if dtype == torch.bfloat16 else PerTensor()
        return Float8DynamicActivationFloat8WeightConfig(granularity=granularity, set_inductor_config=False)
    return Int8WeightOnlyConfig(set_inductor_config=False)


def quantize(net: torch.nn.Module, kind: Quantize) -> int:
    """Converts `net`'s convertible linear layers to `kind` in place; returns how many it converted."""
    from torchao.quantization import quantize_

    count = sum(1 for module in net.modules() if convertible(module))
    quantize_(net, _config(kind, next(net.parameters()).dtype), filter_fn=convertible)
    return count


def apply(net: torch.nn.Module, kind: Quantize, device: torch.device) -> str | None:
    """`quantize` where `kind` can run here; else a warning, and the model stays as it was (a fleet of mixed GPUs
    can share one setting). Returns the name of what was applied, or None."""
    if kind is Quantize.off:
        return None
    if (why := unsupported(kind, device)) is not None:
        log.warning("quantize %s skipped: %s", kind.value, why)
        return None
    converted = quantize(net, kind)
    log.info("quantize %s: %d linear layers", kind.value, converted)
    return f"quantize_{kind.name}"
