"""The embedded text-to-image pipeline: a pixel-space UNet that cross-attends to a word encoder, with guidance.

It is a `DiffusionPipeline` and takes the same call as Stable Diffusion's (prompt list, negative prompts, one
generator per image, steps, guidance, a step-end callback), so the worker serves it on the same code path. It
serves image-to-image and inpainting in the same call, as diffusers' own pipelines for them do: an input `image`
is noised to the step `strength` says and denoised from there; with a `mask_image`, the region outside the
mask is put back, noised to each step, after every step (how diffusers inpaints with a UNet that has no mask
input), and exactly as it was at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import DiffusionPipeline, DPMSolverMultistepScheduler, ImagePipelineOutput, UNet2DConditionModel
from diffusers.utils.torch_utils import randn_tensor

from genfleet.shared.registry import FAMILIES, Family
from genfleet.workers.embedded.data import COLOUR_NAMES, RESOLUTION
from genfleet.workers.embedded.text_encoder import Encoded, WordEncoder

WEIGHTS_DIR = Path(__file__).parent / "weights"
PIPELINE_DIR = WEIGHTS_DIR / "pipeline"
WORDS = ["a", "an", "cat", "with", "hat", "and", "the", "wearing", *COLOUR_NAMES]
# 12 steps: 64 images in 12 s on 2 CPU cores; 15 steps took 16.6 s for +0.08 held-out adherence (measured).
# Guidance 10: adherence rises with guidance up to about 10 and then stays flat (measured).
DEFAULT_STEPS = FAMILIES[Family.embedded].steps or 12
DEFAULT_GUIDANCE = FAMILIES[Family.embedded].guidance or 10.0
TEXT_DIM = 64


def build_unet() -> UNet2DConditionModel:
    """About 2.5M parameters: convolutions at 32 and 16; at 8x8, transformer blocks whose cross-attention reads
    the prompt's words, as Stable Diffusion's do at every scale. Conditioning by one pooled vector alone
    painted the hat in the cat's colour on held-out pairs; cross-attention lets each region read its own
    words. Finer scales would cost 3 to 8 times more on a CPU."""
    return UNet2DConditionModel(
        sample_size=RESOLUTION,
        in_channels=3,
        out_channels=3,
        block_out_channels=(32, 64, 96),
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        layers_per_block=1,
        norm_num_groups=16,
        attention_head_dim=3,  # diffusers reads this as the number of heads (its own naming quirk): 3 x 32
        cross_attention_dim=TEXT_DIM,
        class_embed_type="identity",  # the pooled prompt vector, added to the timestep embedding
        resnet_time_scale_shift="scale_shift",
    )


def build_scheduler() -> DPMSolverMultistepScheduler:
    # Dynamic thresholding keeps each step's x0 estimate inside the pixel range. A pixel-space model needs it:
    # with the cosine schedule the first steps divide by a tiny sqrt(alpha_bar), and without it the
    # estimates blow up into saturated noise.
    return DPMSolverMultistepScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2",
                                       algorithm_type="dpmsolver++", solver_order=2, thresholding=True,
                                       sample_max_value=1.0)


def build_pipeline() -> CatHatPipeline:
    """A fresh, untrained pipeline (training starts here)."""
    return CatHatPipeline(unet=build_unet(), text_encoder=WordEncoder(WORDS, dim=TEXT_DIM, out_dim=128),
                          scheduler=build_scheduler())


def _pixels(images: list[Any], channels: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """PIL images as a batch in [0, 1], (n, channels, h, w)."""
    arrays = [np.asarray(im.convert("RGB" if channels == 3 else "L"), dtype=np.float32) / 255 for im in images]
    batch = torch.from_numpy(np.stack(arrays))
    batch = batch.permute(0, 3, 1, 2) if channels == 3 else batch[:, None]
    return batch.to(device=device, dtype=dtype)


class CatHatPipeline(DiffusionPipeline):
    model_cpu_offload_seq = "text_encoder->unet"
    _callback_tensor_inputs = ["latents"]
    serves_tasks = True  # image-to-image and inpainting in its own call (workers/models.py `task_pipeline`)

    def __init__(self, unet: UNet2DConditionModel, text_encoder: WordEncoder, scheduler: DPMSolverMultistepScheduler):
        super().__init__()
        self.register_modules(unet=unet, text_encoder=text_encoder, scheduler=scheduler)
        self._interrupt = False

    @property
    def interrupt(self) -> bool:
        return self._interrupt

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
        init = None if image is None else _pixels(image, 3, self.device, dtype) * 2 - 1  # the model's sample space
        mask = None if mask_image is None else (_pixels(mask_image, 1, self.device, dtype) > 0.5).to(dtype)
        if init is not None:  # an input keeps its size
            height, width = init.shape[2], init.shape[3]
        height, width = height or RESOLUTION, width or RESOLUTION
        cond = self._conditioning(prompts, negative, guided).unet_kwargs(dtype)
        shape = (len(prompts), self.unet.config.in_channels, height, width)
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
        out = self._output((latents / 2 + 0.5).clamp(0, 1), output_type)
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
