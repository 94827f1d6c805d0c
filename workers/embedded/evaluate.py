"""`genfleet eval-embedded`: how good is the shipped model? JSON on the last line (docs/embedded-model.md).

Every adherence figure is read twice, by the adherence scorer (a CNN, scorer.py) and by the judge (a rule over
pixels that learned nothing, judge.py), each with its n and standard error:
- adherence_seen_pairs / adherence_unseen_pairs: share of first-attempt images of cats in hats that show
  exactly the asked colours, on training pairs and on held-out pairs (the same kind of scene on both sides);
  the held-out pairs are the test split unless `--unseen validation` (what every choice is made on:
  steps, guidance, checkpoint); adherence_singles: cats alone and hats alone (training scenes);
- judge_scorer_agreement: how often the two give the same verdict, over every image generated; the
  disagreements are drawn in `--disagreements`;
- frechet_scorer_space: Frechet distance, in the scorer's 128-d feature space (not Inception's), between the
  generated images and renders of exactly the same scenes; `_floor` is the same distance between two rendered
  sets of those scenes (other seeds): what a perfect generator would get at this sample size;
- is_analogue: Inception Score's formula over the scorer's (cat, hat) classes, for the generated images and for
  renders of the same scenes; its ceiling is the number of distinct scenes asked for;
- judge_accuracy_rendered / scorer_attribute_accuracy: each reader against rendered pictures of known scenes;
- seconds_per_64: wall time for 64 images at the shipped resolution and default steps (after a warm-up).

`--deep-cache N` evaluates with DeepCache (workers/deepcache.py) at interval N: every figure above, plus its
speed-up, measured as the ratio of seconds for 64 images without and with it in alternating rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw

from genfleet.workers import deepcache
from genfleet.workers.embedded import judge
from genfleet.workers.embedded.data import Scene, Split, all_scenes, make_dataset, render, split_of
from genfleet.workers.embedded.measures import Rate, frechet, inception_score, joint
from genfleet.workers.embedded.pipeline import DEFAULT_GUIDANCE, DEFAULT_STEPS, load_embedded
from genfleet.workers.embedded.scorer import AdherenceScorer, load_scorer, scene_labels, to_tensor

# The README's rows: training pairs, singles, and test pairs (never seen in training), marked in the grid
GRID_PROMPTS = ["a purple cat with a red hat", "a red cat with a blue hat", "a yellow cat with a green hat",
                "a white cat with a purple hat", "a green cat with a pink hat", "a blue cat", "a yellow hat",
                "a red cat with a green hat", "a blue cat with a white hat", "a pink cat with a orange hat"]
GRID_MARKS = {Split.test: (230, 40, 40), Split.validation: (240, 160, 20)}  # the bar left of a held-out row


def generate(pipe, prompts: list[str], seed: int, batch: int = 64) -> list[Image.Image]:
    images: list[Image.Image] = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        gens = [torch.Generator().manual_seed(seed + start + i) for i in range(len(chunk))]
        images += pipe(chunk, generator=gens).images
    return images


def probabilities(scorer: AdherenceScorer, images) -> tuple[np.ndarray, np.ndarray]:
    cat, hat = scorer.predict(to_tensor(images))
    return cat.numpy(), hat.numpy()


def scorer_verdicts(scorer: AdherenceScorer, images: list[Image.Image], scenes: list[Scene]) -> np.ndarray:
    cat, hat = probabilities(scorer, images)
    want = np.array([scene_labels(s) for s in scenes])
    return (cat.argmax(-1) == want[:, 0]) & (hat.argmax(-1) == want[:, 1])


def features(scorer: AdherenceScorer, images) -> np.ndarray:
    with torch.no_grad():
        return scorer.features(to_tensor(images)).numpy().astype(np.float64)


def scorer_accuracy(scorer: AdherenceScorer, n: int, seed: int) -> float:
    images, scenes = make_dataset(n, seed=seed, split=None)
    cat, hat = probabilities(scorer, images)
    want = np.array([scene_labels(s) for s in scenes])
    return float(np.concatenate([cat.argmax(-1) == want[:, 0], hat.argmax(-1) == want[:, 1]]).mean())


def judge_accuracy(n: int, seed: int) -> float:
    images, scenes = make_dataset(n, seed=seed, split=None)
    return float(judge.verdicts(list(images.transpose(0, 2, 3, 1)), scenes).mean())


def _name(colour: str | None) -> str:
    return colour or "-"


def save_disagreements(path: Path, images: list[Image.Image], scenes: list[Scene], scorer_ok: np.ndarray,
                       judge_ok: np.ndarray, limit: int = 48, per_row: int = 8, zoom: int = 2) -> None:
    """Tiles of the first `limit` images the two readers disagree on, each captioned: asked (cat/hat), what the
    judge read, and the scorer's verdict."""
    idx = np.nonzero(scorer_ok != judge_ok)[0]
    side, strip = images[0].width * zoom, 36
    rows = max(1, -(-min(len(idx), limit) // per_row))
    grid = Image.new("RGB", (side * per_row, (side + strip) * rows), "white")
    draw = ImageDraw.Draw(grid)
    for n, i in enumerate(idx[:limit]):
        x, y = (n % per_row) * side, (n // per_row) * (side + strip)
        grid.paste(images[i].resize((side, side), Image.Resampling.NEAREST), (x, y))
        seen = judge.read(images[i])
        lines = [f"asked {_name(scenes[i].cat)}/{_name(scenes[i].hat)}",
                 f"judge {_name(seen.cat)}/{_name(seen.hat)}", f"scorer {'yes' if scorer_ok[i] else 'no'}"]
        draw.multiline_text((x + 2, y + side + 1), "\n".join(lines), fill="black", spacing=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def grid_splits() -> list[Split]:
    """The split of each of GRID_PROMPTS' scenes."""
    by_caption = {s.caption: s for s in all_scenes(None)}
    return [split_of(by_caption[p]) for p in GRID_PROMPTS]


def save_grid(pipe, path: Path, per_row: int = 8, seed: int = 1234, zoom: int = 2) -> None:
    """The README's samples: one row per GRID_PROMPTS, held-out rows marked by a bar on their left."""
    images = generate(pipe, [p for p in GRID_PROMPTS for _ in range(per_row)], seed)
    side, bar = images[0].width * zoom, 8
    grid = Image.new("RGB", (bar + side * per_row, side * len(GRID_PROMPTS)), "white")
    for row, split in enumerate(grid_splits()):
        if split in GRID_MARKS:
            grid.paste(GRID_MARKS[split], (0, row * side, bar - 2, (row + 1) * side))
    for i, im in enumerate(images):
        at = (bar + (i % per_row) * side, (i // per_row) * side)
        grid.paste(im.resize((side, side), Image.Resampling.NEAREST), at)
    path.parent.mkdir(parents=True, exist_ok=True)
    grid.save(path)


def seconds_per_64(pipe) -> float:
    generate(pipe, ["a cat"] * 8, 0)  # warm-up
    start = time.perf_counter()
    generate(pipe, ["a red cat with a blue hat"] * 64, 0)
    return time.perf_counter() - start


def deep_cache_speedup(pipe, interval: int, rounds: int = 5) -> dict[str, float | int]:
    """Seconds for 64 images without DeepCache over seconds with it, alternating, `rounds` times."""
    prompts = ["a red cat with a blue hat"] * 64
    generate(pipe, prompts[:8], 0)  # warm-up
    ratios = []
    for _ in range(rounds):
        seconds = {}
        for on in (False, True):
            if on:
                deepcache.enable(pipe.unet, interval)
            start = time.perf_counter()
            generate(pipe, prompts, 0)
            seconds[on] = time.perf_counter() - start
            deepcache.disable(pipe.unet)
        ratios.append(seconds[False] / seconds[True])
    return {"interval": interval, "rounds": rounds, "speedup": round(statistics.median(ratios), 3),
            "speedup_min": round(min(ratios), 3), "speedup_max": round(max(ratios), 3)}


def _sets(per_prompt: int, per_unseen: int, unseen: Split) -> dict[str, list[Scene]]:
    seen = [s for s in all_scenes(Split.train) if s.cat and s.hat]
    singles = [s for s in all_scenes(Split.train) if not (s.cat and s.hat)]
    return {"seen_pairs": [s for s in seen for _ in range(per_prompt)],
            "unseen_pairs": [s for s in all_scenes(unseen) for _ in range(per_unseen)],
            "singles": [s for s in singles for _ in range(per_prompt)]}


class _Defaults:
    """The pipeline, called with other default arguments (what `--steps` and `--guidance` try)."""

    def __init__(self, pipe, **defaults: object) -> None:
        self.pipe, self.defaults = pipe, defaults

    def __call__(self, *args, **kwargs):
        return self.pipe(*args, **{**self.defaults, **kwargs})

    def __getattr__(self, name: str):
        return getattr(self.pipe, name)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="genfleet eval-embedded", description=__doc__.splitlines()[0])
    ap.add_argument("--per-prompt", type=int, default=8, help="images per training scene")
    ap.add_argument("--per-unseen", type=int, default=24, help="images per held-out pair")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--unseen", type=Split, choices=[Split.test, Split.validation], default=Split.test,
                    help="the held-out pairs read: validation while choosing, test to report")
    ap.add_argument("--steps", type=int, help="sampling steps (default: the model's)")
    ap.add_argument("--guidance", type=float, help="guidance scale (default: the model's)")
    ap.add_argument("--deep-cache", type=int, default=0, metavar="N", help="with DeepCache, a whole step every N")
    ap.add_argument("--grid", type=Path, help="default: docs/embedded-samples.png, without --deep-cache")
    ap.add_argument("--disagreements", type=Path, help="default: docs/embedded-disagreements.png, likewise")
    args = ap.parse_args(argv)
    if not args.deep_cache:
        args.grid = args.grid or Path("docs/embedded-samples.png")
        args.disagreements = args.disagreements or Path("docs/embedded-disagreements.png")
    loaded, scorer = load_embedded(), load_scorer()
    loaded.set_progress_bar_config(disable=True)
    pipe = _Defaults(loaded, num_inference_steps=args.steps or DEFAULT_STEPS,
                     guidance_scale=args.guidance or DEFAULT_GUIDANCE)
    result: dict[str, object] = {"unseen_split": str(args.unseen), **pipe.defaults}
    if args.deep_cache:
        result["deep_cache"] = deep_cache_speedup(pipe, args.deep_cache)
        deepcache.enable(pipe.unet, args.deep_cache)
    images: list[Image.Image] = []
    scenes: list[Scene] = []
    verdicts: dict[str, list[np.ndarray]] = {"scorer": [], "judge": []}
    for n, (name, asked) in enumerate(_sets(args.per_prompt, args.per_unseen, args.unseen).items()):
        made = generate(pipe, [s.caption for s in asked], args.seed + 100_000 * n)
        by_scorer, by_judge = scorer_verdicts(scorer, made, asked), judge.verdicts(made, asked)
        result[f"adherence_{name}"] = {"judge": Rate.of(by_judge).as_dict(), "scorer": Rate.of(by_scorer).as_dict()}
        images, scenes = images + made, scenes + asked
        verdicts["scorer"].append(by_scorer)
        verdicts["judge"].append(by_judge)
    by_scorer, by_judge = np.concatenate(verdicts["scorer"]), np.concatenate(verdicts["judge"])
    result["judge_scorer_agreement"] = Rate.of(by_scorer == by_judge).as_dict()
    rendered = [render(s, args.seed + i) for i, s in enumerate(scenes)]
    again = [render(s, args.seed + 7_000_003 + i) for i, s in enumerate(scenes)]
    real = features(scorer, rendered)
    result["frechet_scorer_space"] = round(frechet(features(scorer, images), real), 3)
    result["frechet_scorer_space_floor"] = round(frechet(features(scorer, again), real), 3)
    result["is_analogue"] = round(inception_score(joint(*probabilities(scorer, images))), 2)
    result["is_analogue_rendered"] = round(inception_score(joint(*probabilities(scorer, rendered))), 2)
    result["is_analogue_ceiling"] = len(set(scenes))
    result["judge_accuracy_rendered"] = round(judge_accuracy(2000, args.seed + 3), 4)
    result["scorer_attribute_accuracy"] = round(scorer_accuracy(scorer, 2000, args.seed + 2), 4)
    result["seconds_per_64"] = round(seconds_per_64(pipe), 2)
    result["images_scored"] = len(images)
    result["disagreements"] = int((by_scorer != by_judge).sum())
    if args.disagreements:
        save_disagreements(args.disagreements, images, scenes, by_scorer, by_judge)
    if args.grid:
        save_grid(pipe, args.grid)
        result["grid"] = str(args.grid)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
