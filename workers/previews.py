"""Live previews: a small picture of where an image stands, every few steps, made from its latents.

A Stable Diffusion VAE's latents are close to a linear map of the colours they cover (the "approximate" previews
of A1111 and ComfyUI rest on it), so a preview is one small matrix product per image: no decoder call, no extra
weights. Its coefficients are fitted once per pipeline, the first time a preview is asked of it, by least
squares: the model's own VAE encodes a few pictures of flat colour blocks, and each latent is matched with the
mean colour of the pixels it covers. So one method serves every VAE-latent model, the embedded one included,
with nothing stored. Latents of another shape (Flux packs its latents into tokens) get no previews.

Previews are small (the latents' own resolution, scaled up to at least `MIN_SIDE`) JPEGs: a few kilobytes an
event.
"""

from __future__ import annotations

import base64
import io
import logging
import weakref
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from genfleet.workers.sampling import Frame

log = logging.getLogger(__name__)

FIT_PICTURES = 24  # pictures the VAE encodes to fit a projection
FIT_SIDE = 64  # their side in pixels: a multiple of every VAE's factor here
BLOCKS = 4  # colour blocks per side of a fitting picture
MIN_SIDE = 64  # a preview is scaled up (nearest) to at least this side
JPEG_QUALITY = 80

Projection = torch.Tensor  # (channels + 1, 3): latent channels and a bias to RGB in [0, 1]
_fitted: weakref.WeakKeyDictionary[Any, Projection | None] = weakref.WeakKeyDictionary()


def _fit_pictures(generator: torch.Generator) -> torch.Tensor:
    """Pictures of random flat colour blocks, (n, 3, side, side) in [0, 1]: the colours a latent must tell."""
    blocks = torch.rand(FIT_PICTURES, 3, BLOCKS, BLOCKS, generator=generator)
    return F.interpolate(blocks, size=(FIT_SIDE, FIT_SIDE), mode="nearest")


@torch.no_grad()
def fit(pipe: Any) -> Projection | None:
    """The least-squares map from `pipe`'s latents (as its sampling loop holds them: scaled by the VAE's
    scaling factor, shifted by its shift factor if any) to colours; None when the pipeline has no such VAE."""
    vae: Any = getattr(pipe, "vae", None)
    encode = getattr(vae, "encode", None)
    if encode is None:
        return None
    pictures = _fit_pictures(torch.Generator().manual_seed(0))
    param = next(vae.parameters())
    dist = encode((pictures * 2 - 1).to(param.device, param.dtype)).latent_dist
    config = vae.config
    latents = (dist.mode() - (getattr(config, "shift_factor", None) or 0.0)) * config.scaling_factor
    latents = latents.float().cpu()
    n, channels, h, w = latents.shape
    colours = F.adaptive_avg_pool2d(pictures, (h, w))  # the pixels each latent covers
    x = torch.cat([latents.permute(0, 2, 3, 1).reshape(-1, channels), torch.ones(n * h * w, 1)], dim=1)
    y = colours.permute(0, 2, 3, 1).reshape(-1, 3)
    return torch.linalg.lstsq(x, y).solution


def projection(pipe: Any) -> Projection | None:
    """`pipe`'s fitted projection, fitted on first use (and None for good if it cannot be)."""
    try:
        return _fitted[pipe]
    except KeyError:
        pass
    try:
        fitted = fit(pipe)
    except Exception:  # a VAE this cannot drive: no previews for this pipeline, and sampling goes on
        log.warning("no previews for this pipeline: fitting its latent projection failed", exc_info=True)
        fitted = None
    _fitted[pipe] = fitted
    return fitted


def render(latents: torch.Tensor, proj: Projection) -> list[str]:
    """One preview per image of `latents` (images, channels, height, width): JPEG, base64."""
    if latents.ndim != 4 or latents.shape[1] + 1 != proj.shape[0]:
        return []
    flat = latents.detach().float().cpu().permute(0, 2, 3, 1)
    rgb = (torch.cat([flat, torch.ones(*flat.shape[:3], 1)], dim=3) @ proj).clamp(0, 1)
    pixels = (rgb * 255).round().to(torch.uint8).numpy()
    return [_jpeg(p) for p in pixels]


def _jpeg(pixels: np.ndarray) -> str:
    image = Image.fromarray(pixels)
    factor = max(1, -(-MIN_SIDE // min(image.size)))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=JPEG_QUALITY)
    return base64.b64encode(buf.getvalue()).decode()


def of_frame(frame: Frame, wanted: set[str]) -> list[tuple[str, int, str]]:
    """(job id, image index, base64 JPEG) for each image of the frame whose job wants previews."""
    rows = [n for n, spec in enumerate(frame.specs) if spec.job_id in wanted]
    proj = projection(frame.pipe) if rows and frame.latents is not None else None
    if proj is None or frame.latents is None:
        return []
    pictures = render(frame.latents[rows], proj)
    return [(frame.specs[n].job_id, frame.specs[n].index, p) for n, p in zip(rows, pictures, strict=False)]
