"""An independent judge of the embedded model's pictures: a rule over pixels that shares nothing with the scorer.

The adherence scorer (scorer.py) is a CNN trained on rendered pictures; grading the generator with it alone
grades one learned model by another. The judge learns nothing. It knows only how the data generator draws
(data.py), and reads a picture by that geometry:

- every thing is painted flat in one of the eight named colours, jittered by at most 18 per channel, on a
  muted grey background, so each pixel is read as the nearest named colour within `MATCH`, or as none
  (background, the cat's dark eyes, a blended edge);
- a hat sits on the cat's head, so of two colours the upper one is the hat's;
- a hat alone stands on its brim or base, so its silhouette's bottom row is its widest (`FLAT_BOTTOM`), while
  a cat's body is an ellipse, rounded below;
- a cat's head ends in two ears, and a hat on it shows one crown instead: a single colour whose top rows hold
  one run of pixels is a cat in a hat of its own colour, two or more runs are ears.

On 2,000 rendered pictures of every scene it reads cat and hat right 99.5 to 99.8% of the time at 32x32, 99.65% at 64x64
(tests/embedded/test_judge.py holds it above 0.97). Its limits: it sees colours and outlines, not how well a
thing is drawn; and a generated hat of the cat's own colour often comes out patchy at the top, where the rule
then sees ears (docs/embedded-model.md measures how often).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from genfleet.workers.embedded.data import COLOUR_NAMES, COLOURS, Scene

MATCH = 70.0  # RGB distance within which a pixel is read as a named colour (jitter reaches about 31)
MIN_SHARE = 0.012  # a colour covering less of the picture than this is noise, not a thing (12 px at 32x32)
FLAT_BOTTOM = 0.9  # a silhouette whose bottom rows are this wide against its widest row stands on a flat base
_TOP_ROWS = 3  # rows, at 32x32, in which ears or a crown are counted

_PALETTE = np.array([COLOURS[c] for c in COLOUR_NAMES], dtype=np.float32)


@dataclass(frozen=True)
class Reading:
    """What the judge saw: the cat's colour and the hat's, None where it saw none."""

    cat: str | None
    hat: str | None

    def shows(self, scene: Scene) -> bool:
        return (self.cat, self.hat) == (scene.cat, scene.hat)


def colour_map(image: Image.Image | np.ndarray) -> np.ndarray:
    """Per pixel, the index of the nearest named colour, or -1 when none is within MATCH."""
    rgb = np.asarray(image, dtype=np.float32)[..., :3]
    distance = np.linalg.norm(rgb[:, :, None, :] - _PALETTE[None, None], axis=-1)
    nearest = distance.argmin(-1)
    return np.where(distance.min(-1) < MATCH, nearest, -1)


def _runs(row: np.ndarray) -> int:
    edges = np.diff(np.concatenate([[0], row.astype(np.int8), [0]]))
    return int((edges == 1).sum())


def _read_one(mask: np.ndarray, colour: str) -> Reading:
    """A single colour: a hat alone, a cat alone, or a cat in a hat of its own colour."""
    rows = np.nonzero(mask.any(1))[0]
    top, bottom = rows.min(), rows.max()
    widths = mask[top:bottom + 1].sum(1)
    edge = max(1, round(2 * mask.shape[0] / 32))  # the bottom two rows at 32x32
    if widths[-edge:].max() >= FLAT_BOTTOM * widths.max():
        return Reading(cat=None, hat=colour)
    depth = max(1, round(_TOP_ROWS * mask.shape[0] / 32))
    peaks = max(_runs(mask[top + i]) for i in range(min(depth, bottom - top + 1)))
    return Reading(cat=colour, hat=colour if peaks == 1 else None)


def read(image: Image.Image | np.ndarray) -> Reading:
    """The cat and hat a picture shows, by the generator's geometry alone."""
    labels = colour_map(image)
    counts = np.bincount(labels[labels >= 0].ravel(), minlength=len(COLOUR_NAMES))
    present = [int(i) for i in np.argsort(-counts)[:2] if counts[i] >= MIN_SHARE * labels.size]
    if not present:
        return Reading(cat=None, hat=None)
    if len(present) == 1:
        return _read_one(labels == present[0], COLOUR_NAMES[present[0]])
    heights = {i: np.nonzero(labels == i)[0].mean() for i in present}
    hat, cat = sorted(present, key=heights.__getitem__)  # image rows grow downwards: the hat is above
    return Reading(cat=COLOUR_NAMES[cat], hat=COLOUR_NAMES[hat])


def verdicts(images: list[Image.Image], scenes: list[Scene]) -> np.ndarray:
    """Per image, whether the judge reads exactly the scene it was asked for."""
    return np.array([read(im).shows(sc) for im, sc in zip(images, scenes, strict=True)], dtype=bool)
