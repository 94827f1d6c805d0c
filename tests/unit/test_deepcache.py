"""DeepCache for UNets (workers/deepcache.py) on real pipelines: the shipped embedded model and the SD classes
at toy width. The deep blocks really are skipped (counted inside them), the pictures stay near the uncached
ones, every run starts afresh, and turning it off restores the uncached pictures exactly."""

import numpy as np
import pytest
import torch

from genfleet.shared.fastpath import Compile, FastPath
from genfleet.workers import deepcache
from genfleet.workers.architectures import build
from genfleet.workers.embedded.pipeline import load_embedded
from genfleet.workers.fastpath import apply, before_call

PROMPTS = ["a red cat with a blue hat", "a green cat", "a yellow hat", "a white cat with a pink hat"]


@pytest.fixture(scope="module")
def pipe():
    p = load_embedded()
    p.set_progress_bar_config(disable=True)
    return p


def pictures(pipe, n: int = 4, seed: int = 0, **call) -> np.ndarray:
    gens = [torch.Generator().manual_seed(seed + i) for i in range(n)]
    images = pipe((PROMPTS * 2)[:n], generator=gens, **call).images
    return np.stack([np.asarray(im, dtype=np.float32) for im in images])


class Count:
    """Calls that really computed inside a deep block (its first resnet runs only on whole steps)."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.n = 0
        module.register_forward_hook(lambda *_: setattr(self, "n", self.n + 1))


def test_deep_blocks_run_every_nth_step_and_the_pictures_stay_close(pipe):
    count = Count(pipe.unet.mid_block.resnets[0])
    plain = pictures(pipe)
    assert count.n == 12  # the embedded model's 12 steps, every one whole
    other_seed = np.abs(pictures(pipe, seed=50) - plain).mean()
    try:
        assert deepcache.enable(pipe.unet, 3)
        count.n = 0
        cached = pictures(pipe)
        assert count.n == 4  # steps 0, 3, 6, 9
        again = pictures(pipe)
        assert np.array_equal(cached, again)  # the second run started afresh, not from the first's features
        distance = np.abs(cached - plain).mean()
        assert 0 < distance < other_seed / 2, (distance, other_seed)
    finally:
        deepcache.disable(pipe.unet)
    assert np.array_equal(pictures(pipe), plain)  # off: exactly the uncached pictures


def test_a_new_batch_size_or_an_announced_run_starts_afresh(pipe):
    deepcache.enable(pipe.unet, 3)
    try:
        pictures(pipe, n=2)
        three = pictures(pipe, n=3)  # another shape: the run must not reuse two-image features
        deepcache.enable(pipe.unet, 3)
        assert np.array_equal(three, pictures(pipe, n=3))
        clock = pipe.unet._diffusers_hook.get_hook(deepcache.NAME).clock

        def stop(*_):
            raise InterruptedError  # a job cancelled after its fifth step leaves the clock mid-run

        with pytest.raises(InterruptedError):
            pipe(PROMPTS[:2], callback_on_step_end=lambda p, i, t, kw: stop() if i == 4 else kw)
        assert clock.step == 4
        before_call(pipe, FastPath(deep_cache_interval=3), 2)
        assert clock.step == -1 and clock.shape is None
    finally:
        deepcache.disable(pipe.unet)


def test_an_unannounced_run_is_told_by_its_timesteps():
    clock = deepcache.Clock(3)
    for t in (999, 900, 800, 700):
        clock.tick(t, (2, 3, 32, 32))
    assert clock.step == 3 and clock.whole
    clock.tick(700, (2, 3, 32, 32))  # a timestep that does not fall: a new run (a one-step model, say)
    assert clock.step == 0
    clock.tick(600, (4, 3, 32, 32))
    assert clock.step == 0


def test_the_fast_path_applies_it_to_the_sd_classes_and_nowhere_else():
    sd = build("tiny-sd")
    sd.set_progress_bar_config(disable=True)
    call = {"num_inference_steps": 4, "width": 64, "height": 64}
    plain = pictures(sd, n=2, **call)
    count = Count(sd.unet.mid_block.resnets[0])
    assert apply(sd, FastPath(deep_cache_interval=3)) == ["deep_cache"]
    cached = pictures(sd, n=2, **call)
    assert count.n == 2 and not np.array_equal(cached, plain)  # whole at steps 0 and 3 of 4
    assert apply(build("tiny-sd"), FastPath(deep_cache_interval=1)) == []  # 1: every step whole, nothing to do
    assert not deepcache.enable(torch.nn.Linear(2, 2), 3)  # not a UNet


@pytest.mark.slow  # a compile: about 10 s on 2 cores
def test_compiled_blocks_with_deep_cache_give_what_eager_does():
    call = {"num_inference_steps": 4, "width": 64, "height": 64, "output_type": "np"}
    eager, compiled = build("tiny-sd"), build("tiny-sd")
    apply(eager, FastPath(deep_cache_interval=3))
    assert apply(compiled, FastPath(compile=Compile.regional, deep_cache_interval=3)) == ["deep_cache",
                                                                                          "compile_regional"]
    for p in (eager, compiled):
        p.set_progress_bar_config(disable=True)
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    want = np.asarray(eager(["a cat"] * 2, generator=gens, **call).images)
    for _ in range(2):  # a second run: the compiled blocks follow the cache's reset too
        gens = [torch.Generator().manual_seed(i) for i in range(2)]
        got = np.asarray(compiled(["a cat"] * 2, generator=gens, **call).images)
        assert np.abs(got - want).max() < 1e-4  # pixels in [0, 1]
