"""`genfleet train-embedded`: reproduce the shipped weights from scratch.

The scorer trains first (a minute or two), then the diffusion model. Every batch is drawn fresh from the
procedural data set, seeded by (seed, step), so a resumed run sees exactly the batches an unbroken one would.
A checkpoint is written atomically every `--checkpoint-every` steps; rerunning the command resumes from it.
"""

from __future__ import annotations

import argparse
import copy
import os
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from tqdm import tqdm

from genfleet.workers.embedded.data import make_dataset
from genfleet.workers.embedded.pipeline import PIPELINE_DIR, build_pipeline
from genfleet.workers.embedded.scorer import SCORER_DIR, AdherenceScorer, scene_labels

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
        x = scorer_augment(x)
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


def train_diffusion(steps: int, batch: int, seed: int, device: torch.device, out: Path, ckpt: Path,
                    checkpoint_every: int = 250, lr: float = 1e-3) -> None:
    torch.manual_seed(seed)
    pipe = build_pipeline()
    unet, text = pipe.unet.to(device).train(), pipe.text_encoder.to(device).train()
    ema = copy.deepcopy(torch.nn.ModuleDict({"unet": unet, "text": text})).eval().requires_grad_(False)
    params = [*unet.parameters(), *text.parameters()]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.04,
                                                final_div_factor=20)
    noise_sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="squaredcos_cap_v2")
    parts = {"unet": unet, "text": text, "ema": ema, "opt": opt, "sched": sched}
    start = _load_checkpoint(ckpt, parts)
    bar = tqdm(range(start, steps), initial=start, total=steps, desc="diffusion", mininterval=5)
    for step in bar:
        x, scenes = draw_batch(seed, step, batch, device)
        captions = ["" if torch.rand(()) < CFG_DROPOUT else s.caption for s in scenes]
        noise = torch.randn_like(x)
        t = torch.randint(0, 1000, (batch,), device=device)
        pred = unet(noise_sched.add_noise(x, noise, t), t, **text.encode(captions).unet_kwargs(x.dtype)).sample
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
    pipe.register_modules(unet=pipe.unet, text_encoder=pipe.text_encoder)
    pipe.save_pretrained(str(out))


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="genfleet train-embedded", description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=3600, help="diffusion training steps")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--scorer-steps", type=int, default=1500)
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
    train_diffusion(args.steps, args.batch_size, args.seed, device, args.out / PIPELINE_DIR.name,
                    args.checkpoint_dir / "diffusion.pt", args.checkpoint_every)


if __name__ == "__main__":
    main()
