"""The embedded text-to-image pipeline: a miniature Stable Diffusion.

Its parts are Stable Diffusion's, small: a VAE (`AutoencoderKL`) that maps 64x64 pictures to 4x16x16 latents, a
UNet that denoises in that latent space and cross-attends to a word encoder, a DPM-Solver++ scheduler, and
classifier-free guidance; the VAE decodes at the end. It is a `DiffusionPipeline` and takes the same call as
Stable Diffusion's (prompt list, negative prompts, one generator per image, steps, guidance, a step-end
callback), so the worker serves it on the same code path, VAE slicing included.

It serves image-to-image and inpainting in the same call, as diffusers' own pipelines for them do: an input
`image` is encoded by the VAE, noised to the step `strength` says and denoised from there; with a
`mask_image`, the latents outside the mask are put back, noised to each step, after every step (how diffusers
inpaints with a UNet that has no mask input), and the decoded picture keeps the input's own pixels outside the
mask.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    ImagePipelineOutput,
    UNet2DConditionModel,
)
from diffusers.utils.torch_utils import randn_tensor

from genfleet.shared.registry import FAMILIES, Family
from genfleet.workers.embedded.data import COLOUR_NAMES, RESOLUTION
from genfleet.workers.embedded.text_encoder import Encoded, WordEncoder

WEIGHTS_DIR = Path(__file__).parent / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"
WORDS = ["a", "an", "cat", "with", "hat", "and", "the", "wearing", *COLOUR_NAMES]
# Steps and guidance: chosen on the validation pairs (docs/embedded-model.md)
DEFAULT_STEPS = FAMILIES[Family.embedded].steps or 12
DEFAULT_GUIDANCE = FAMILIES[Family.embedded].guidance or 5.0
TEXT_DIM = 64
LATENT_FACTOR = 4  # pixels per latent, each way: the VAE's three blocks halve the side twice
LATENT_CHANNELS = 4  # as Stable Diffusion's


def build_vae() -> AutoencoderKL:
    """About 0.7M parameters; 64x64x3 to 16x16x4, 12 numbers per latent where SD's VAE keeps 48 per latent
    for 8x8 pixels: these pictures are flat colours and outlines."""
    return AutoencoderKL(in_channels=3, out_channels=3, latent_channels=LATENT_CHANNELS, sample_size=RESOLUTION,
                         down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                         block_out_channels=(16, 32, 64), layers_per_block=1, norm_num_groups=8)


def build_unet() -> UNet2DConditionModel:
    """About 5.8M parameters over 16x16 latents: convolutions at 16; at 8 and 4, transformer blocks whose
    cross-attention reads the prompt's words, as Stable Diffusion's do. Conditioning by one pooled vector
    alone painted the hat in the cat's colour on held-out pairs; cross-attention lets each region read its own
    words. Cross-attention at 16 too cost twice the time (measured on 2 CPU cores)."""
    return UNet2DConditionModel(
        sample_size=RESOLUTION // LATENT_FACTOR,
        in_channels=LATENT_CHANNELS,
        out_channels=LATENT_CHANNELS,
        block_out_channels=(64, 96, 128),
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=4,  # diffusers reads this as the number of heads (its own naming quirk)
        cross_attention_dim=TEXT_DIM,
        class_embed_type="identity",  # the pooled prompt vector, added to the timestep embedding
        resnet_time_scale_shift="scale_shift",
    )


def build_scheduler() -> DPMSolverMultistepScheduler:
    # Stable Diffusion's noise schedule: in a latent space there is no pixel range to threshold to, and its
    # last training step keeps a little signal, so the first sampling steps stay well-conditioned.
    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="scaled_linear", beta_start=0.00085,
                                       beta_end=0.012, algorithm_type="dpmsolver++", solver_order=2)


def build_pipeline(vae: AutoencoderKL | None = None) -> CatHatPipeline:
    """A fresh, untrained pipeline (training starts here), on a trained VAE when given one."""
    time_dim = build_unet().config.block_out_channels[0] * 4
    return CatHatPipeline(vae=vae or build_vae(), unet=build_unet(),
                          text_encoder=WordEncoder(WORDS, dim=TEXT_DIM, out_dim=time_dim), scheduler=build_scheduler())


def _pixels(images: list[Any], channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL images as a batch in [0, 1], (n, channels, h, w)."""
    arrays = [np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32) / 255 for im in images]
    batch = torch.from_numpy(np.stack(arrays))
    batch = batch.permute(0, 3, 1, 2) if channels == 3 else batch[:, None]
    return batch.to(device=device, dtype=dtype)


class CatHatPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents"]
    serves_tasks = True  # image-to-image and inpainting in its own call (workers/models.py `task_pipeline`)

    def __init__(self, vae: AutoencoderKL, unet: UNet2DConditionModel, text_encoder: WordEncoder,
                 scheduler: DPMSolverMultistepScheduler):
        super().__init__()
        self.register_modules(vae=vae, unet=unet, text_encoder=text_encoder, scheduler=scheduler)
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] to scaled latents (the distribution's mode: an input gives the same latents each
        time)."""
        return self.vae.encode(pixels).latent_dist.mode() * self.vae.config.scaling_factor

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Scaled latents to pixels in [0, 1]; one image at a time when VAE slicing is on (diffusers' own)."""
        return (self.vae.decode(latents / self.vae.config.scaling_factor).sample / 2 + 0.5).clamp(0, 1)

    def _conditioning(self, prompts: list[str], negative: list[str] | None, guided: bool) -> Encoded:
        # One encoder call for both halves, so they share one padded length
        return self.text_encoder.encode([*(negative or [""] * len(prompts)), *prompts] if guided else prompts)

    def _timesteps(self, steps: int, strength: float) -> torch.Tensor:
        """The steps a call runs: the last `strength` of the schedule (diffusers' `get_timesteps`)."""
        start = steps - min(int(steps * strength), steps)
        if hasattr(self.scheduler, "set_begin_index"):
            self.scheduler.set_begin_index(start * self.scheduler.order)
        return self.scheduler.timesteps[start * self.scheduler.order:]

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str],
        negative_prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = DEFAULT_STEPS,
        guidance_scale: float = DEFAULT_GUIDANCE,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] | None = None,
        image: list[Any] | None = None,
        mask_image: list[Any] | None = None,
        strength: float = 1.0,
        **_unused,
    ):
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        prompts = [p for p in prompts for _ in range(num_images_per_prompt)]
        negative = [negative_prompt] * len(prompts) if isinstance(negative_prompt, str) else negative_prompt
        if negative is not None and num_images_per_prompt > 1:
            negative = [n for n in negative for _ in range(num_images_per_prompt)]
        guided = guidance_scale > 1.0
        self._interrupt = False
        dtype = self.unet.dtype
        pixels = None if image is None else _pixels(image, 3, self.device, dtype)
        init = None if pixels is None else self.encode(pixels * 2 - 1)
        pixel_mask = None if mask_image is None else (_pixels(mask_image, 1, self.device, dtype) > 0.5).to(dtype)
        # a latent is repainted when any of its pixels is: the mask's region is never kept from the input
        mask = None if pixel_mask is None else F.max_pool2d(pixel_mask, LATENT_FACTOR)
        if pixels is not None:  # an input keeps its size
            height, width = pixels.shape[2], pixels.shape[3]
        height, width = height or RESOLUTION, width or RESOLUTION
        cond = self._conditioning(prompts, negative, guided).unet_kwargs(dtype)
        shape = (len(prompts), self.unet.config.in_channels, height // LATENT_FACTOR, width // LATENT_FACTOR)
        self.scheduler.set_timesteps(num_inference_steps, device=self.device)
        timesteps = self._timesteps(num_inference_steps, strength) if init is not None else self.scheduler.timesteps
        # init_noise_sigma and scale_model_input: 1 and the identity for the default DPM++, not for Euler's
        noise = randn_tensor(shape, generator=generator, device=self.device, dtype=dtype)
        if init is None or strength >= 1.0:
            latents = noise * self.scheduler.init_noise_sigma
        else:
            latents = self.scheduler.add_noise(init, noise, timesteps[:1].repeat(len(prompts)))
        self.num_timesteps = len(timesteps)  # what step callbacks read, as in diffusers' pipelines
        for i, t in enumerate(self.progress_bar(timesteps)):
            if self.interrupt:
                break
            scaled = self.scheduler.scale_model_input(latents, t)
            model_in = torch.cat([scaled] * 2) if guided else scaled
            eps = self.unet(model_in, t, **cond).sample
            if guided:
                uncond, text = eps.chunk(2)
                eps = uncond + guidance_scale * (text - uncond)
            latents = self.scheduler.step(eps, t, latents).prev_sample
            if mask is not None and init is not None:  # the known region, noised to the next step (none at the end)
                known = init if i == len(timesteps) - 1 else \
                    self.scheduler.add_noise(init, noise, timesteps[i + 1:i + 2].repeat(len(prompts)))
                latents = (1 - mask) * known + mask * latents
            if callback_on_step_end is not None:
                out = callback_on_step_end(self, i, t, {"latents": latents}) or {}
                latents = out.get("latents", latents)
        images = self.decode(latents)
        if pixel_mask is not None and pixels is not None:  # outside the mask, the input's own pixels
            images = (1 - pixel_mask) * pixels + pixel_mask * images
        out = self._output(images, output_type)
        self.maybe_free_model_hooks()
        return ImagePipelineOutput(images=out) if return_dict else (out,)

    def _output(self, images: torch.Tensor, output_type: str) -> Any:
        if output_type == "pt":
            return images
        out = images.permute(0, 2, 3, 1).float().cpu().numpy()
        return self.numpy_to_pil(out) if output_type == "pil" else out


def load_embedded(path: Path = PIPELINE_DIR, **kwargs) -> CatHatPipeline:
    """The shipped pipeline, from the package's own files: no network, no hub."""
    return CatHatPipeline.from_pretrained(str(path), local_files_only=True, **kwargs)


def load_named(name: str, dtype: torch.dtype) -> CatHatPipeline:
    """The registry's loader for the embedded family (shared/registry.py): the shipped weights, whatever the name."""
    return load_embedded(dtype=dtype)
