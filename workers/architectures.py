"""Full-size diffusers architectures built from their configs with random weights, saved as model folders.

No weights can be downloaded on air-gapped machines, but benchmarks and tests still need the real compute of
Stable Diffusion 1.5 or SD-Turbo: the same classes and shapes, with random weights (the pictures are noise).
The folder is an ordinary diffusers model folder, so `GENFLEET_MODEL=/that/folder` loads it on the same path
as any hub model. The tokenizer is CLIP's byte-level BPE with no merges, written here: prompts tokenize to
bytes, which is enough for random weights.

    python -m genfleet.workers.architectures sd15 /tmp/sd15-random
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    StableDiffusionPipeline,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

_SD_BETAS = {"num_train_timesteps": 1000, "beta_start": 0.00085, "beta_end": 0.012, "beta_schedule": "scaled_linear",
             "steps_offset": 1}
_VAE = {"block_out_channels": (128, 256, 512, 512), "down_block_types": ("DownEncoderBlock2D",) * 4,
        "up_block_types": ("UpDecoderBlock2D",) * 4, "latent_channels": 4, "layers_per_block": 2}

ARCHITECTURES: dict[str, dict] = {
    "sd15": {  # Stable Diffusion 1.5: 860M-parameter UNet, CLIP ViT-L/14 text encoder, 512x512
        "unet": {"sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8},
        "vae": _VAE,
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        "scheduler": (DPMSolverMultistepScheduler, _SD_BETAS),
    },
    "sd-turbo": {  # SD-Turbo (SD 2.1 shape): OpenCLIP ViT-H text encoder, linear projections, one step
        "unet": {"sample_size": 64, "cross_attention_dim": 1024, "attention_head_dim": (5, 10, 20, 20),
                 "use_linear_projection": True},
        "vae": _VAE,
        "text": {"hidden_size": 1024, "intermediate_size": 4096, "num_hidden_layers": 23, "num_attention_heads": 16,
                 "hidden_act": "gelu"},
        "scheduler": (EulerAncestralDiscreteScheduler, {**_SD_BETAS, "timestep_spacing": "trailing"}),
    },
    "sdxl": {  # SDXL base: 2.6B-parameter UNet, two text encoders (CLIP ViT-L and OpenCLIP ViT-bigG), 1024x1024
        "unet": {"sample_size": 128, "cross_attention_dim": 2048, "attention_head_dim": (5, 10, 20),
                 "block_out_channels": (320, 640, 1280), "transformer_layers_per_block": (1, 2, 10),
                 "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
                 "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 256,
                 "projection_class_embeddings_input_dim": 2816},
        "vae": {**_VAE, "sample_size": 1024, "scaling_factor": 0.13025},
        "text": {"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12, "num_attention_heads": 12},
        "text_2": {"hidden_size": 1280, "intermediate_size": 5120, "num_hidden_layers": 32, "num_attention_heads": 20,
                   "projection_dim": 1280, "hidden_act": "gelu"},
        "scheduler": (EulerAncestralDiscreteScheduler, _SD_BETAS),
    },
    "tiny-sdxl": {  # the SDXL classes at toy width
        "unet": {"sample_size": 8, "cross_attention_dim": 64, "attention_head_dim": 8, "block_out_channels": (32, 64),
                 "layers_per_block": 1, "transformer_layers_per_block": (1, 2),
                 "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D"),
                 "up_block_types": ("CrossAttnUpBlock2D", "UpBlock2D"), "norm_num_groups": 8,
                 "use_linear_projection": True, "addition_embed_type": "text_time", "addition_time_embed_dim": 8,
                 "projection_class_embeddings_input_dim": 6 * 8 + 32},
        "vae": {**_VAE, "block_out_channels": (16, 32), "down_block_types": ("DownEncoderBlock2D",) * 2,
                "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "norm_num_groups": 8},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        "text_2": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
                   "projection_dim": 32},
        "scheduler": (EulerAncestralDiscreteScheduler, _SD_BETAS),
    },
    "tiny-sd": {  # the SD classes at toy width, for tests of the code path
        "unet": {"sample_size": 8, "cross_attention_dim": 32, "block_out_channels": (32, 64), "layers_per_block": 1,
                 "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
                 "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"), "attention_head_dim": 8,
                 "norm_num_groups": 8},
        "vae": {**_VAE, "block_out_channels": (16, 32), "down_block_types": ("DownEncoderBlock2D",) * 2,
                "up_block_types": ("UpDecoderBlock2D",) * 2, "layers_per_block": 1, "norm_num_groups": 8},
        "text": {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4},
        "scheduler": (DPMSolverMultistepScheduler, _SD_BETAS),
    },
}


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte-to-character table, which CLIP's BPE vocabulary is written in."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, extra = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + extra)
            extra += 1
    return dict(zip(bs, map(chr, cs), strict=True))


def byte_tokenizer(folder: Path) -> CLIPTokenizer:
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    words = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({w: i for i, w in enumerate(words)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), model_max_length=77)


def _text_config(tokenizer: CLIPTokenizer, spec: dict[str, Any]) -> CLIPTextConfig:
    return CLIPTextConfig(vocab_size=len(tokenizer), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, **spec)


def build(arch: str, seed: int = 0) -> Any:
    """A StableDiffusionPipeline, or a StableDiffusionXLPipeline for the architectures with two text encoders."""
    spec = ARCHITECTURES[arch]
    torch.manual_seed(seed)
    tokenizer = byte_tokenizer(Path(_tmpdir()) / "tokenizer")
    text = CLIPTextModel(_text_config(tokenizer, spec["text"]))
    scheduler_cls, scheduler_cfg = spec["scheduler"]
    parts = {"vae": AutoencoderKL(**spec["vae"]), "text_encoder": text, "tokenizer": tokenizer,
             "unet": UNet2DConditionModel(**spec["unet"]), "scheduler": scheduler_cls(**scheduler_cfg)}
    if "text_2" in spec:
        text_2 = CLIPTextModelWithProjection(_text_config(tokenizer, spec["text_2"]))
        return StableDiffusionXLPipeline(**parts, text_encoder_2=text_2, tokenizer_2=tokenizer)
    return StableDiffusionPipeline(**parts, safety_checker=None, feature_extractor=None,
                                   requires_safety_checker=False)


def _tmpdir() -> str:
    import tempfile

    return tempfile.mkdtemp(prefix="genfleet-tok-")


def save(arch: str, out: Path, seed: int = 0) -> Path:
    """Builds `arch` with random weights into `out` (once: an existing folder is reused)."""
    if (out / "model_index.json").exists():
        return out
    build(arch, seed).save_pretrained(str(out))
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description="Save a diffusers architecture with random weights as a model folder.")
    ap.add_argument("arch", choices=sorted(ARCHITECTURES))
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    print(save(args.arch, args.out))


if __name__ == "__main__":
    main()
