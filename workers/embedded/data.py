"""Cats and hats drawn by code: the embedded model's whole world.

Every image is drawn at 2x and box-filtered down to `RESOLUTION`, so edges are antialiased the way a photo
downsample would be. Everything is a pure function of a seed: the same seed gives the same pixels and captions.

The 64 (cat, hat) colour pairs fall in three disjoint splits: training pairs, validation pairs (every choice of
steps, guidance, checkpoint and architecture is made on them) and test pairs (reported, never chosen by).
Cats alone and hats alone are all training scenes.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
from PIL import Image, ImageDraw

RESOLUTION = 64
_SUPER = 2  # draw at 2x, then downsample

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "orange": (245, 140, 20),
    "yellow": (240, 225, 40),
    "green": (40, 180, 50),
    "blue": (40, 80, 230),
    "purple": (140, 40, 200),
    "pink": (250, 130, 200),
    "white": (245, 245, 245),
}
COLOUR_NAMES: tuple[str, ...] = tuple(COLOURS)



class Split(StrEnum):
    train = "train"
    validation = "validation"
    test = "test"


def _pairs(offset: int) -> frozenset[tuple[str, str]]:
    """Each colour once as a cat and once as a hat, so every colour is still trained in both roles, only never in
    these pairings."""
    n = len(COLOUR_NAMES)
    return frozenset((COLOUR_NAMES[i], COLOUR_NAMES[(i + offset) % n]) for i in range(n))


TEST_PAIRS = _pairs(3)  # the pairs the pixel-space model held out, so earlier figures stay comparable
VALIDATION_PAIRS = _pairs(5)
HELD_OUT = TEST_PAIRS | VALIDATION_PAIRS  # never shown in training


@dataclass(frozen=True)
class Scene:
    """What one picture shows. `cat` or `hat` is None when that thing is absent."""

    cat: str | None
    hat: str | None

    @property
    def caption(self) -> str:
        if self.cat and self.hat:
            return f"a {self.cat} cat with a {self.hat} hat"
        if self.cat:
            return f"a {self.cat} cat"
        if self.hat:
            return f"a {self.hat} hat"
        raise ValueError("a scene shows a cat, a hat or both")


def split_of(scene: Scene) -> Split:
    pair = (scene.cat, scene.hat)
    return Split.test if pair in TEST_PAIRS else Split.validation if pair in VALIDATION_PAIRS else Split.train


def all_scenes(split: Split | None = Split.train) -> list[Scene]:
    """Every scene of `split` (None: of all three); only the training split has cats alone and hats alone."""
    pairs = [Scene(c, h) for c in COLOUR_NAMES for h in COLOUR_NAMES]
    singles = [Scene(c, None) for c in COLOUR_NAMES] + [Scene(None, h) for h in COLOUR_NAMES]
    return [s for s in pairs + singles if split is None or split_of(s) is split]


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int = 18) -> tuple[int, int, int]:
    r, g, b = (max(0, min(255, c + rng.randint(-amount, amount))) for c in rgb)  # drawn in order: r, g, b
    return r, g, b


def _background(rng: random.Random) -> tuple[int, int, int]:
    # Muted, darkish and low in saturation, so every named colour (white included) stands out against it.
    base = rng.randint(35, 100)
    r, g, b = (max(0, min(255, base + rng.randint(-15, 15))) for _ in range(3))
    return r, g, b


def _draw_hat(d: ImageDraw.ImageDraw, cx: float, base_y: float, size: float, rgb, style: int) -> None:
    """A hat whose brim sits on `base_y`, centred on `cx`; `size` is the brim's width."""
    if style == 0:  # top hat
        d.rectangle([cx - size / 2, base_y - size * 0.18, cx + size / 2, base_y], fill=rgb)
        d.rectangle([cx - size * 0.3, base_y - size * 0.85, cx + size * 0.3, base_y - size * 0.1], fill=rgb)
    elif style == 1:  # party cone
        d.polygon([(cx - size / 2, base_y), (cx + size / 2, base_y), (cx, base_y - size * 0.95)], fill=rgb)
    else:  # bowler
        d.rectangle([cx - size / 2, base_y - size * 0.15, cx + size / 2, base_y], fill=rgb)
        d.pieslice([cx - size * 0.33, base_y - size * 0.7, cx + size * 0.33, base_y + size * 0.1], 180, 360, fill=rgb)


def _draw_cat(d: ImageDraw.ImageDraw, rng: random.Random, rgb, s: int) -> tuple[float, float, float]:
    """Draws a sitting or lying cat; returns (head centre x, top of head y, head radius) for the hat."""
    scale = rng.uniform(0.75, 1.05) * s
    lying = rng.random() < 0.35
    facing = rng.choice((-1, 1))
    bw, bh = (0.62 * scale, 0.3 * scale) if lying else (0.38 * scale, 0.42 * scale)
    bx = rng.uniform(bw / 2 + 0.05 * s, s - bw / 2 - 0.05 * s)
    by = rng.uniform(0.62 * s, 0.88 * s - bh / 2) if not lying else rng.uniform(0.7 * s, 0.9 * s - bh / 2)
    dark = (20, 20, 20)
    # tail first, behind the body
    tx = bx - facing * bw / 2
    d.line([(tx, by + bh * 0.3), (tx - facing * 0.12 * scale, by - bh * 0.4)], fill=rgb,
           width=max(2, int(0.06 * scale)))
    d.ellipse([bx - bw / 2, by - bh / 2, bx + bw / 2, by + bh / 2], fill=rgb)
    r = 0.16 * scale
    hx = bx + facing * bw * (0.38 if lying else 0.12)
    hy = by - bh / 2 - r * (0.2 if lying else 0.55)
    for side in (-1, 1):  # ears
        ex = hx + side * r * 0.6
        ear = [(ex - r * 0.38, hy - r * 0.6), (ex + r * 0.38, hy - r * 0.6), (ex + side * r * 0.1, hy - r * 1.45)]
        d.polygon(ear, fill=rgb)
    d.ellipse([hx - r, hy - r, hx + r, hy + r], fill=rgb)
    for side in (-1, 1):  # eyes
        ex, ey = hx + side * r * 0.4 + facing * r * 0.15, hy - r * 0.1
        d.ellipse([ex - r * 0.15, ey - r * 0.15, ex + r * 0.15, ey + r * 0.15], fill=dark)
    return hx, hy - r * 0.75, r


def render(scene: Scene, seed: int, vivid: bool = False) -> Image.Image:
    """One RGB picture of `scene` at RESOLUTION; the same (scene, seed) always gives the same pixels.
    `vivid` draws on a background of any colour (the scorer trains on some, to read pictures whatever their
    background: the generator's drift brighter and more saturated than the data's)."""
    rng = random.Random(f"{seed}:{scene.caption}")
    s = RESOLUTION * _SUPER
    background = _background(rng)
    if vivid:
        background = (rng.randint(0, 255), rng.randint(0, 255), rng.randint(0, 255))
    img = Image.new("RGB", (s, s), background)
    d = ImageDraw.Draw(img)
    style = rng.randrange(3)
    if scene.cat:
        hx, top, r = _draw_cat(d, rng, _jitter(COLOURS[scene.cat], rng), s)
        if scene.hat:
            _draw_hat(d, hx, top + r * 0.15, r * rng.uniform(1.8, 2.3), _jitter(COLOURS[scene.hat], rng), style)
    elif scene.hat:
        size = rng.uniform(0.4, 0.7) * s
        cx = rng.uniform(size / 2 + 2, s - size / 2 - 2)
        base = rng.uniform(0.6 * s, 0.92 * s)
        _draw_hat(d, cx, base, size, _jitter(COLOURS[scene.hat], rng), style)
    return img.resize((RESOLUTION, RESOLUTION), Image.Resampling.BOX)


def sample_scenes(n: int, seed: int, split: Split | None = Split.train) -> list[Scene]:
    """`n` scenes of `split` drawn with replacement: about 70% cats in hats, 15% cats alone, 15% hats alone
    (pairs only where the split has no singles)."""
    rng = random.Random(seed)
    scenes = all_scenes(split)
    pairs = [x for x in scenes if x.cat and x.hat]
    singles = [x for x in scenes if not (x.cat and x.hat)]
    return [rng.choice(pairs if (rng.random() < 0.7 or not singles) else singles) for _ in range(n)]


def make_dataset(n: int, seed: int, split: Split | None = Split.train,
                 vivid: float = 0.0) -> tuple[np.ndarray, list[Scene]]:
    """`n` rendered images as uint8 (n, 3, H, W) and their scenes; deterministic in `seed`. A share `vivid`
    of them get backgrounds of any colour."""
    scenes = sample_scenes(n, seed, split)
    images = np.stack([np.asarray(render(sc, seed * 1_000_003 + i, vivid=(i * 0.618034) % 1 < vivid))
                       for i, sc in enumerate(scenes)])
    return images.transpose(0, 3, 1, 2).copy(), scenes
