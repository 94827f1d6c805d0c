"""LoRA adapters per job, on real pipelines: made in the suite with random weights (none can be downloaded
here), on the embedded model (loaded through its UNet's own LoRA API) and on the SD classes at toy width
(through diffusers' pipeline API, with its hot-swap)."""

import numpy as np
import pytest
import torch

from genfleet.shared.storage import LocalStorage
from genfleet.workers.adapters import AdapterError, AdapterSlots
from genfleet.workers.architectures import build
from genfleet.workers.embedded.pipeline import load_embedded
from genfleet.workers.runner import run_batch
from tests.helpers import make_lora
from tests.unit.test_batching import make_ctx, queued


def pixels(pipe, **call) -> np.ndarray:
    image = pipe(prompt=["a red cat with a blue hat"], generator=[torch.Generator().manual_seed(5)], **call).images[0]
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def loras(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("loras")
    return {
        "embedded": {n: str(make_lora(load_embedded().unet, tmp / f"e-{n}", seed)) for n, seed in (("a", 1), ("b", 2))},
        "sd": {n: str(make_lora(build("tiny-sd").unet, tmp / f"s-{n}", seed)) for n, seed in (("a", 1), ("b", 2))},
        "root": tmp,
    }


def pipelines():
    sd = build("tiny-sd")
    sd.set_progress_bar_config(disable=True)
    yield "embedded", load_embedded(), {}
    yield "sd", sd, {"num_inference_steps": 3, "width": 64, "height": 64}


@pytest.mark.parametrize("kind", ["embedded", "sd"])
def test_an_adapter_changes_the_picture_the_same_way_each_time_and_goes_away(loras, kind):
    _, pipe, call = next((k, p, c) for k, p, c in pipelines() if k == kind)
    storage, sources = LocalStorage(loras["root"]), loras[kind]
    slots = AdapterSlots.of(pipe, slots=1, hotswap=False)  # one slot: b takes a's, then a takes b's
    base = pixels(pipe, **call)
    slots.activate((("a", 1.0),), kind, sources, storage, False)
    with_a = pixels(pipe, **call)
    assert np.abs(with_a - base).mean() > 1
    slots.activate((("a", 0.5),), kind, sources, storage, False)
    assert 0 < np.abs(pixels(pipe, **call) - base).mean() < np.abs(with_a - base).mean()
    slots.activate((("b", 1.0),), kind, sources, storage, False)
    assert np.abs(pixels(pipe, **call) - with_a).mean() > 1 and list(slots.held) == ["b"]
    slots.activate((("a", 1.0),), kind, sources, storage, False)  # evicted, loaded again: the same pixels
    assert np.array_equal(pixels(pipe, **call), with_a)
    slots.activate((), kind, sources, storage, False)
    assert np.array_equal(pixels(pipe, **call), base)  # none asked for: none applies


def test_a_hot_swapped_adapter_gives_what_a_freshly_loaded_one_does(loras):
    storage, sources, call = LocalStorage(loras["root"]), loras["sd"], {"num_inference_steps": 3, "width": 64,
                                                                        "height": 64}
    swapped, fresh = build("tiny-sd"), build("tiny-sd")
    slots = AdapterSlots.of(swapped, slots=1, hotswap=True)  # what a compiled pipeline does: weights in place
    slots.activate((("a", 1.0),), "sd", sources, storage, False)
    with_a = pixels(swapped, **call)
    slots.activate((("b", 1.0),), "sd", sources, storage, False)
    AdapterSlots.of(fresh, slots=1, hotswap=False).activate((("b", 1.0),), "sd", sources, storage, False)
    swapped_b, fresh_b = pixels(swapped, **call), pixels(fresh, **call)
    assert np.abs(swapped_b - with_a).mean() > 1  # the swap took: b's picture, not a's
    # The same weights, through other shapes: hot-swap pads every adapter with zeros to one rank and keeps its
    # scale as a tensor, so sums reassociate and a rounding may land one level apart (1 pixel of 12,288 with
    # peft 0.21.2), never more.
    diff = np.abs(swapped_b - fresh_b)
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


def test_an_adapter_from_storage_or_missing(loras, tmp_path):
    storage = LocalStorage(tmp_path)
    with open(loras["embedded"]["a"], "rb") as f:
        storage.put("adapters/a.safetensors", f.read(), "application/octet-stream")
    pipe = load_embedded()
    slots = AdapterSlots.of(pipe, slots=2, hotswap=False)
    slots.activate((("a", 1.0),), "embedded", {"a": "adapters/a.safetensors"}, storage, False)
    assert list(slots.held) == ["a"]
    with pytest.raises(AdapterError, match="no such file"):
        slots.activate((("gone", 1.0),), "embedded", {"gone": "adapters/nope.safetensors"}, storage, False)
    with pytest.raises(AdapterError, match="did not load"):  # not in the local cache, and downloads are off
        slots.activate((("hub", 1.0),), "embedded", {"hub": "hf://someone/some-lora"}, storage, False)


def test_a_job_whose_adapter_will_not_load_fails_alone_with_the_reason(redis, tmp_path):
    ctx = make_ctx(redis, tmp_path, load_embedded(), adapters='{"broken": "/nowhere/at/all.safetensors"}')
    bad, good = queued(ctx.store, adapters=[{"name": "broken"}]), queued(ctx.store)
    done = run_batch([bad, good], ctx)
    assert done[0].status.value == "failed" and "broken" in done[0].error and "no such file" in done[0].error
    assert done[1].status.value == "succeeded"
