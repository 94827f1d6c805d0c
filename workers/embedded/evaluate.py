"""`genfleet eval-embedded`: how good is the shipped model? JSON on the last line.

- adherence_seen / adherence_unseen: share of first-attempt images whose every attribute (cat colour or none,
  hat colour or none), as the scorer reads it, is what the prompt asked; on training pairs and on held-out pairs.
- frechet_scorer_space: Frechet distance between generated and freshly rendered images of the same scenes, in
  the adherence scorer's 128-d feature space. It is not Inception FID; `frechet_scorer_space_floor` is the same
  distance between two rendered sets, the value a perfect generator would get at this sample size.
- seconds_per_64: wall time for 64 images at the shipped resolution and default steps (after a warm-up).
- scorer_attribute_accuracy: the scorer's per-attribute accuracy on rendered images it never saw.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from genfleet.workers.embedded.data import Scene, all_scenes, make_dataset, render
from genfleet.workers.embedded.pipeline import load_embedded
from genfleet.workers.embedded.scorer import AdherenceScorer, load_scorer, scene_labels, to_tensor

# The first and the last three are held-out pairs, never seen in training
GRID_PROMPTS = ["a purple cat with a red hat", "a red cat with a blue hat", "a yellow cat with a green hat",
                "a white cat with a purple hat", "a green cat with a pink hat", "a blue cat", "a yellow hat",
                "a red cat with a green hat", "a blue cat with a white hat", "a pink cat with a orange hat"]


def generate(pipe, prompts: list[str], seed: int, batch: int = 64) -> list[Image.Image]:
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images += pipe(chunk, generator=gens).images
    return images


def adherence(scorer: AdherenceScorer, images: list[Image.Image], scenes: list[Scene]) -> float:
    cat, hat = scorer.predict(to_tensor(images))
    want = torch.tensor([scene_labels(s) for s in scenes])
    return float(((cat.argmax(-1) == want[:, 0]) & (hat.argmax(-1) == want[:, 1])).float().mean())


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to two feature sets (the FID formula, another feature space)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)  # same trace-sqrt as sqrtm(cov_a @ cov_b)
    spread = np.trace(cov_a) + np.trace(cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + spread)


def features(scorer: AdherenceScorer, images) -> np.ndarray:
    with torch.no_grad():
        return scorer.features(to_tensor(images)).numpy().astype(np.float64)


def scorer_accuracy(scorer: AdherenceScorer, n: int, seed: int) -> float:
    images, scenes = make_dataset(n, seed=seed, held_out=None)
    cat, hat = scorer.predict(to_tensor(images))
    want = torch.tensor([scene_labels(s) for s in scenes])
    return float(torch.cat([cat.argmax(-1) == want[:, 0], hat.argmax(-1) == want[:, 1]]).float().mean())


def save_grid(pipe, path: Path, per_row: int = 8, seed: int = 1234, zoom: int = 4) -> None:
    images = generate(pipe, [p for p in GRID_PROMPTS for _ in range(per_row)], seed)
    side = images[0].width
    grid = Image.new("RGB", (side * per_row, side * len(GRID_PROMPTS)))
    for i, im in enumerate(images):
        grid.paste(im, ((i % per_row) * side, (i // per_row) * side))
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.resize((grid.width * zoom, grid.height * zoom), Image.Resampling.NEAREST).save(path)


def seconds_per_64(pipe) -> float:
    generate(pipe, ["a cat"] * 8, 0)  # warm-up
    start = time.perf_counter()
    generate(pipe, ["a red cat with a blue hat"] * 64, 0)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="genfleet eval-embedded", description=__doc__.splitlines()[0])
    ap.add_argument("--per-prompt", type=int, default=8, help="images per prompt for the adherence rates")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--grid", type=Path, default=Path("docs/embedded-samples.png"))
    args = ap.parse_args(argv)
    pipe, scorer = load_embedded(), load_scorer()
    pipe.set_progress_bar_config(disable=True)
    result: dict[str, float | int | str] = {}
    feats: dict[str, list[np.ndarray]] = {"gen": [], "real": []}
    for name, held in (("seen", False), ("unseen", True)):
        scenes = [s for s in all_scenes(held) for _ in range(args.per_prompt)]
        images = generate(pipe, [s.caption for s in scenes], args.seed)
        result[f"adherence_{name}"] = round(adherence(scorer, images, scenes), 4)
        feats["gen"].append(features(scorer, images))
        feats["real"].append(features(scorer, [render(s, args.seed + i) for i, s in enumerate(scenes)]))
    gen, real = np.concatenate(feats["gen"]), np.concatenate(feats["real"])
    other, _ = make_dataset(len(real), seed=args.seed + 1, held_out=None)
    result["frechet_scorer_space"] = round(frechet(gen, real), 3)
    result["frechet_scorer_space_floor"] = round(frechet(features(scorer, other), real), 3)
    result["scorer_attribute_accuracy"] = round(scorer_accuracy(scorer, 2000, args.seed + 2), 4)
    result["seconds_per_64"] = round(seconds_per_64(pipe), 2)
    result["images_scored"] = len(gen)
    save_grid(pipe, args.grid)
    result["grid"] = str(args.grid)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
