"""`genfleet train-embedded`: reproduce the shipped weights from scratch.

Three stages, as Stable Diffusion's parts are trained: the scorer (a few minutes), the VAE (on random crops of
the procedural pictures, a few minutes), then the latent diffusion model, on a fixed set of pictures encoded
once by that VAE. Every batch is seeded by (seed, step), so a resumed run sees exactly the batches an unbroken
one would. The VAE and the encoded set are kept in the checkpoint folder, and the diffusion model's state is
written there atomically every `--checkpoint-every` steps; rerunning the command resumes from them.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL, DDPMScheduler
from tqdm import tqdm

from genfleet.workers.embedded.data import RESOLUTION, make_dataset
from genfleet.workers.embedded.pipeline import PIPELINE_DIR, CatHatPipeline, build_pipeline, build_vae
from genfleet.workers.embedded.scorer import SCORER_DIR, AdherenceScorer, scene_labels, shrink

CFG_DROPOUT = 0.1  # share of captions replaced by "" so the model also learns the unconditional score
MIN_SNR_GAMMA = 5.0


def draw_batch(seed: int, step: int, size: int, device: torch.device, vivid: float = 0.0) -> tuple[torch.Tensor, list]:
    images, scenes = make_dataset(size, seed=seed * 1_000_000 + step, vivid=vivid)
    return torch.from_numpy(images).to(device).float() / 127.5 - 1.0, scenes


def scorer_augment(x: torch.Tensor) -> torch.Tensor:
    """What the sampler's pictures do that the renderer's do not: softer edges, shifted brightness and
    contrast, a little noise. (Backgrounds of any colour come from the renderer, `vivid`.)"""
    n = x.shape[0]

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(n, *shape, device=x.device)

    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    x = torch.lerp(x, blurred, rand(1, 1, 1) * 0.6)
    x = (x - x.mean((1, 2, 3), keepdim=True)) * (0.8 + 0.4 * rand(1, 1, 1)) + x.mean((1, 2, 3), keepdim=True)
    x = x + (rand(1, 1, 1) - 0.5) * 0.3 + torch.randn_like(x) * rand(1, 1, 1) * 0.15
    return torch.where(rand(1, 1, 1) < 0.5, x.flip(-1), x)


def train_scorer(steps: int, seed: int, device: torch.device, out: Path, batch: int = 128) -> AdherenceScorer:
    torch.manual_seed(seed)
    scorer = AdherenceScorer().to(device)
    opt = torch.optim.AdamW(scorer.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=2e-3, total_steps=steps)
    bar = tqdm(range(steps), desc="scorer", mininterval=2)
    for step in bar:
        x, scenes = draw_batch(seed + 1, step, batch, device, vivid=0.5)
        x = scorer_augment(shrink(x, scorer.config.resolution))  # augments tuned at the scorer's own size
        labels = torch.tensor([scene_labels(s) for s in scenes], device=device)
        cat, hat = scorer(x)
        loss = F.cross_entropy(cat, labels[:, 0]) + F.cross_entropy(hat, labels[:, 1])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    scorer.eval().to("cpu").save_pretrained(str(out))
    return scorer


def train_vae(steps: int, seed: int, device: torch.device, out: Path, batch: int = 32, crop: int = 32,
              lr: float = 1e-3) -> AutoencoderKL:
    """L1 reconstruction plus Stable Diffusion's small KL weight, on `crop`-pixel crops (the VAE is convolutional:
    crops train it at a quarter of the cost); then the latent scale, as SD's 0.18215 was set: one over the
    latents' standard deviation."""
    if (out / "config.json").exists():
        print(f"VAE from {out}")
        return AutoencoderKL.from_pretrained(str(out)).to(device)
    torch.manual_seed(seed)
    vae = build_vae().to(device).train()
    opt = torch.optim.AdamW(vae.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.05)
    bar = tqdm(range(steps), desc="vae", mininterval=2)
    for step in bar:
        x, _ = draw_batch(seed + 2, step, batch, device)
        i, j = (int(v) * 4 for v in torch.randint(0, (RESOLUTION - crop) // 4 + 1, (2,)))
        x = x[:, :, i:i + crop, j:j + crop]
        posterior = vae.encode(x).latent_dist
        loss = (vae.decode(posterior.sample()).sample - x).abs().mean() + 1e-6 * posterior.kl().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(loss=f"{loss.item():.4f}")
    vae.eval()
    with torch.no_grad():
        x, _ = draw_batch(seed + 3, 0, 256, device)
        std = vae.encode(x).latent_dist.mode().std().item()
    vae.register_to_config(scaling_factor=round(1 / std, 5))
    vae.to("cpu").save_pretrained(str(out))  # the diffusion stage resumes from here
    return vae.to(device)


def encode_dataset(pipe: CatHatPipeline, n: int, seed: int, path: Path,
                   chunk: int = 256) -> tuple[torch.Tensor, list[str]]:
    """`n` pictures as scaled latents and their captions, encoded once (kept at `path` for a resumed run)."""
    if path.exists():
        state = torch.load(path, map_location="cpu")
        return state["latents"], state["captions"]
    latents, captions = [], []
    with torch.no_grad():
        for start in tqdm(range(0, n, chunk), desc="encode", mininterval=5):
            x, scenes = draw_batch(seed + 4, start, min(chunk, n - start), pipe.device)
            latents.append(pipe.encode(x).cpu())
            captions += [s.caption for s in scenes]
    state = {"latents": torch.cat(latents), "captions": captions}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path.with_suffix(".tmp"))
    os.replace(path.with_suffix(".tmp"), path)
    return state["latents"], captions


def _snr_weights(noise_sched: DDPMScheduler, t: torch.Tensor) -> torch.Tensor:
    """Min-SNR-gamma loss weights (Hang et al. 2023): steadier, faster convergence for epsilon prediction."""
    ac = noise_sched.alphas_cumprod.to(t.device)[t]
    snr = ac / (1 - ac)
    return torch.clamp(snr, max=MIN_SNR_GAMMA) / snr


def _load_checkpoint(path: Path, parts: dict) -> int:
    if not path.exists():
        return 0
    state = torch.load(path, map_location="cpu", weights_only=False)
    for name, part in parts.items():
        part.load_state_dict(state[name])
    torch.set_rng_state(state["rng"])
    print(f"resumed from {path} at step {state['step']}")
    return state["step"]


def _save_checkpoint(path: Path, parts: dict, step: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({**{n: p.state_dict() for n, p in parts.items()}, "rng": torch.get_rng_state(), "step": step}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-write leaves the previous checkpoint whole


def train_diffusion(pipe: CatHatPipeline, data: tuple[torch.Tensor, list[str]], steps: int, batch: int,
                    seed: int, out: Path, ckpt: Path, checkpoint_every: int = 250, lr: float = 1e-3) -> None:
    torch.manual_seed(seed)
    device = pipe.vae.device
    unet, text = pipe.unet.to(device).train(), pipe.text_encoder.to(device).train()
    ema = copy.deepcopy(torch.nn.ModuleDict({"unet": unet, "text": text})).eval().requires_grad_(False)
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.04,
                                                final_div_factor=20)
    noise_sched = DDPMScheduler.from_config(pipe.scheduler.config)  # the same noise schedule the sampler inverts
    parts = {"unet": unet, "text": text, "ema": ema, "opt": opt, "sched": sched}
    start = _load_checkpoint(ckpt, parts)
    latents, captions = data
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="diffusion", mininterval=5)
    for step in bar:
        draw = torch.Generator().manual_seed(seed * 1_000_000 + step)
        pick = torch.randint(0, len(captions), (batch,), generator=draw)
        x = latents[pick].to(device)
        words = ["" if torch.rand(()) < CFG_DROPOUT else captions[i] for i in pick.tolist()]
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (batch,), device=device)
        pred = unet(noise_sched.add_noise(x, noise, t), t, **text.encode(words).unet_kwargs(x.dtype)).sample
        loss = (_snr_weights(noise_sched, t) * ((pred - noise) ** 2).mean((1, 2, 3))).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for e, p in zip(ema.parameters(), params, strict=True):
                e.lerp_(p, 1 - decay)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if (step + 1) % checkpoint_every == 0 or step + 1 == steps:
            _save_checkpoint(ckpt, parts, step + 1)
    pipe.unet, pipe.text_encoder = ema["unet"].to("cpu"), ema["text"].to("cpu")
    pipe.register_modules(unet=pipe.unet, text_encoder=pipe.text_encoder, vae=pipe.vae.to("cpu"))
    pipe.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="genfleet train-embedded", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=2600, help="diffusion training steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--scorer-steps", type=int, default=1500)
    ap.add_argument("--vae-steps", type=int, default=3500)
    ap.add_argument("--pictures", type=int, default=32_768, help="pictures encoded once for the diffusion stage")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--checkpoint-dir", type=Path, default=Path("genfleet-train"))
    ap.add_argument("--checkpoint-every", type=int, default=200)
    ap.add_argument("--out", type=Path, default=PIPELINE_DIR.parent, help="writes pipeline/ and scorer/ here")
    ap.add_argument("--skip-scorer", action="store_true", help="keep the scorer already in --out")
    args = ap.parse_args(argv)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    print(f"training on {device}; checkpoints in {args.checkpoint_dir}; weights to {args.out}")
    if not args.skip_scorer:
        train_scorer(args.scorer_steps, args.seed, device, args.out / SCORER_DIR.name)
    vae = train_vae(args.vae_steps, args.seed, device, args.checkpoint_dir / "vae").eval()
    torch.manual_seed(args.seed)  # after the VAE, trained or loaded: a resumed run builds the same UNet
    pipe = build_pipeline(vae)
    data = encode_dataset(pipe.to(device), args.pictures, args.seed, args.checkpoint_dir / "latents.pt")
    train_diffusion(pipe, data, args.steps, args.batch_size, args.seed, args.out / PIPELINE_DIR.name,
                    args.checkpoint_dir / "diffusion.pt", args.checkpoint_every)


if __name__ == "__main__":
    main()
