"""The independent judge (a rule over pixels) and the evaluation's measures. The judge must read rendered scenes,
tell a cat from a hat by outline alone, and agree with the scorer on generated pictures it never trained for."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from genfleet.workers.embedded import judge
from genfleet.workers.embedded.data import COLOURS, Scene, all_scenes, make_dataset, render
from genfleet.workers.embedded.evaluate import generate, scorer_verdicts
from genfleet.workers.embedded.measures import Rate, frechet, inception_score, joint
from genfleet.workers.embedded.pipeline import load_embedded
from genfleet.workers.embedded.scorer import load_scorer


def test_judge_reads_rendered_scenes_of_every_kind():
    images, scenes = make_dataset(600, seed=41, split=None)
    hits = judge.verdicts(list(images.transpose(0, 2, 3, 1)), scenes)
    assert hits.mean() >= 0.97  # 0.9965 on 2,000 at 64x64 (docs/embedded-model.md)
    for kind in (lambda s: s.cat and s.hat, lambda s: s.cat and not s.hat, lambda s: s.hat and not s.cat):
        assert np.mean([h for h, s in zip(hits, scenes, strict=True) if kind(s)]) >= 0.95


def test_judge_tells_cat_from_hat_by_outline_and_place():
    assert judge.read(render(Scene(None, "green"), seed=3)) == judge.Reading(None, "green")
    assert judge.read(render(Scene("green", None), seed=3)) == judge.Reading("green", None)
    assert judge.read(render(Scene("green", "green"), seed=3)) == judge.Reading("green", "green")
    # upside down, the hat is below the cat: the roles swap, so the judge reads places, not colours alone
    flipped = ImageOps.flip(render(Scene("blue", "orange"), seed=5))
    assert judge.read(render(Scene("blue", "orange"), seed=5)) == judge.Reading("blue", "orange")
    assert judge.read(flipped).hat == "blue"
    assert judge.read(Image.new("RGB", (64, 64), (70, 70, 70))) == judge.Reading(None, None)
    assert judge.read(Image.new("RGB", (64, 64), COLOURS["red"])).hat == "red"  # a flat field: flat bottom


def test_measures():
    assert Rate.of(np.array([True] * 3 + [False])) == Rate(rate=0.75, se=0.2165, n=4)
    sharp = np.eye(5)
    assert inception_score(sharp) == pytest.approx(5.0)  # every class, each read with certainty: the ceiling
    assert inception_score(np.full((5, 5), 0.2)) == pytest.approx(1.0)  # every image the same blur
    assert joint(np.array([[0.5, 0.5]]), np.array([[1.0, 0.0]])).tolist() == [[0.5, 0.0, 0.5, 0.0]]
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(2000, 4)), rng.normal(size=(2000, 4))
    assert frechet(a, b) < 0.05 and frechet(a, b + 1) == pytest.approx(4.0, abs=0.1)


def test_judge_and_scorer_agree_on_generated_pictures():
    pipe, scorer = load_embedded(), load_scorer()
    pipe.set_progress_bar_config(disable=True)
    scenes = all_scenes(None)[::2] * 2  # 80 images over 40 scenes, held-out pairs among them
    images = generate(pipe, [s.caption for s in scenes], seed=77)
    agree = (scorer_verdicts(scorer, images, scenes) == judge.verdicts(images, scenes)).mean()
    print(f"judge/scorer agreement on {len(scenes)} generated images: {agree:.3f}")
    assert agree >= 0.85  # 0.976 on 704 (docs/embedded-model.md)
