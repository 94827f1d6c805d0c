"""The embedded model from its shipped weights: data set, pipeline, scorer. The suite never retrains."""

import os

import numpy as np
import pytest
import torch

from genfleet.shared.fastpath import FastPath
from genfleet.workers import fastpath
from genfleet.workers.embedded.data import (
    COLOUR_NAMES,
    HELD_OUT,
    RESOLUTION,
    TEST_PAIRS,
    VALIDATION_PAIRS,
    Scene,
    Split,
    all_scenes,
    make_dataset,
    sample_scenes,
)
from genfleet.workers.embedded.evaluate import scorer_accuracy
from genfleet.workers.embedded.pipeline import PIPELINE_DIR, WEIGHTS_DIR, load_embedded
from genfleet.workers.embedded.scorer import Ask, load_scorer, parse_prompt


@pytest.fixture(scope="module")
def pipe():
    os.environ["HF_HUB_OFFLINE"] = "1"  # proves no network is needed
    p = load_embedded()
    p.set_progress_bar_config(disable=True)
    return p


def test_dataset_is_deterministic_in_its_seed():
    a, sa = make_dataset(32, seed=5)
    b, sb = make_dataset(32, seed=5)
    c, _ = make_dataset(32, seed=6)
    assert a.shape == (32, 3, RESOLUTION, RESOLUTION) == (32, 3, 64, 64) and a.dtype == np.uint8
    assert np.array_equal(a, b) and sa == sb and not np.array_equal(a, c)


def test_the_three_splits_are_disjoint_and_every_colour_is_trained_in_both_roles():
    training = sample_scenes(5000, seed=1)
    assert not {(s.cat, s.hat) for s in training} & HELD_OUT
    assert {s.cat for s in training if s.cat} == {s.hat for s in training if s.hat} == set(COLOUR_NAMES)
    assert len(TEST_PAIRS) == len(VALIDATION_PAIRS) == len(COLOUR_NAMES) == 8 and not TEST_PAIRS & VALIDATION_PAIRS
    for split, pairs in ((Split.test, TEST_PAIRS), (Split.validation, VALIDATION_PAIRS)):
        assert {s.caption for s in all_scenes(split)} == {f"a {c} cat with a {h} hat" for c, h in pairs}
        assert {(s.cat, s.hat) for s in sample_scenes(500, seed=2, split=split)} == pairs  # pairs only
        for role in (0, 1):  # each colour once as a cat and once as a hat
            assert sorted(p[role] for p in pairs) == sorted(COLOUR_NAMES)
    assert len(all_scenes(Split.train)) == 64 - 16 + 16 and len(all_scenes(None)) == 64 + 16
    kinds = {(s.cat is not None, s.hat is not None) for s in training}
    assert kinds == {(True, True), (True, False), (False, True)}


def test_captions():
    assert Scene("purple", "red").caption == "a purple cat with a red hat"
    assert Scene("green", None).caption == "a green cat" and Scene(None, "yellow").caption == "a yellow hat"


def test_prompt_parsing():
    assert parse_prompt("A purple cat with a red hat") == Ask("purple", "red")
    assert parse_prompt("a green cat") == Ask("green", None)
    assert parse_prompt("a yellow hat") == Ask(None, "yellow")
    assert parse_prompt("a cat wearing a hat") == Ask("", "")
    assert parse_prompt("a dog") is None


def test_the_shipped_weights_stay_under_30_mb():
    files = [f for f in WEIGHTS_DIR.rglob("*") if f.is_file()]
    assert {f.parent.name for f in files if f.suffix == ".safetensors"} == {"vae", "unet", "text_encoder", "scorer"}
    assert sum(f.stat().st_size for f in files) <= 30_000_000


def test_pipeline_loads_offline_with_the_right_shapes(pipe):
    assert (PIPELINE_DIR / "unet" / "diffusion_pytorch_model.safetensors").exists()
    out = pipe(["a red cat", "a blue hat"], num_images_per_prompt=2, num_inference_steps=4,
               generator=[torch.Generator().manual_seed(i) for i in range(4)])
    assert len(out.images) == 4 and all(im.size == (64, 64) for im in out.images)
    assert pipe(["a red cat"], width=96, height=48, num_inference_steps=2).images[0].size == (96, 48)
    # a latent diffusion model: the UNet denoises 4x16x16 latents and the VAE decodes them to 64x64 pictures
    assert (pipe.unet.config.in_channels, pipe.unet.config.sample_size) == (4, 16)
    latents = []
    pipe(["a red cat"], num_inference_steps=2, callback_on_step_end=lambda p, i, t, k: latents.append(k["latents"]))
    assert latents[-1].shape == (1, 4, 16, 16)


def test_the_workers_vae_slicing_decodes_one_image_at_a_time_with_the_same_pixels(pipe):
    prompts = ["a red cat with a blue hat", "a green hat", "a white cat"]
    decoded: list[int] = []  # the batch size of each VAE decoder call

    def images(slicing_from: int) -> np.ndarray:
        fastpath.before_call(pipe, FastPath(vae_slicing_from=slicing_from), len(prompts))  # as the worker does
        decoded.clear()
        gens = [torch.Generator().manual_seed(i) for i in range(len(prompts))]
        return np.stack([np.asarray(im, np.int16)
                         for im in pipe(prompts, num_inference_steps=3, generator=gens).images])

    hook = pipe.vae.decoder.register_forward_pre_hook(lambda m, args: decoded.append(args[0].shape[0]))
    try:
        sliced = images(slicing_from=3)
        assert decoded == [1, 1, 1]
        whole = images(slicing_from=4)
        assert decoded == [3]
    finally:
        pipe.vae.disable_slicing()
        hook.remove()
    assert np.abs(whole - sliced).max() <= 2  # the same pictures, decoded one at a time or together


def test_same_seed_same_image_other_seed_other_image(pipe):
    def one(seed):
        return np.asarray(pipe(["a pink cat with a green hat"], num_inference_steps=6,
                               generator=[torch.Generator().manual_seed(seed)]).images[0], dtype=np.int16)

    assert np.array_equal(one(7), one(7))
    assert np.abs(one(7) - one(8)).mean() > 5


def test_padding_is_masked_so_an_image_does_not_depend_on_its_batch(pipe):
    enc = pipe.text_encoder
    alone, batched = enc.encode(["a red cat"]), enc.encode(["a red cat", "a purple cat with a white hat"])
    n = alone.words.shape[1]
    assert batched.words.shape[1] > n and int(batched.mask[0].sum()) == n
    assert torch.allclose(alone.words[0], batched.words[0, :n], atol=1e-5)
    assert torch.allclose(alone.pooled[0], batched.pooled[0], atol=1e-5)

    def image(prompts):
        gens = [torch.Generator().manual_seed(3 + i) for i in range(len(prompts))]
        return np.asarray(pipe(prompts, num_inference_steps=4, generator=gens).images[0], dtype=np.int16)

    diff = np.abs(image(["a red cat"]) - image(["a red cat", "a purple cat with a white hat"]))
    assert diff.max() <= 2  # float reassociation across batch sizes, nothing more


def test_scorer_reads_unseen_rendered_images():
    # fresh seeds and the held-out colour pairs too, at 64x64: well above the 95% target, with room for noise
    assert scorer_accuracy(load_scorer(), 600, seed=99) >= 0.95


def test_scorer_scores_against_the_prompt():
    from genfleet.workers.embedded.data import render
    scorer = load_scorer()
    images = [render(Scene("purple", "red"), seed=s) for s in range(8)]
    right = scorer.score(images, ["a purple cat with a red hat"] * 8)
    wrong = scorer.score(images, ["a purple cat with a blue hat"] * 8)
    assert np.mean(right) > 0.5 and max(wrong) < 0.05 and min(r / w for r, w in zip(right, wrong, strict=True)) > 10
    assert scorer.score(images[:1], ["a dog"]) == [None]
