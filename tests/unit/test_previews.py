"""Previews from latents (workers/previews.py) on the real embedded pipeline: the fitted projection must draw
what the decoder draws, and each preview must go to the job whose image it is."""

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from genfleet.workers import previews
from genfleet.workers.models import load_pipeline
from genfleet.workers.sampling import Frame, ImageSpec

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def embedded():
    return load_pipeline("embedded", torch.device("cpu"))


def pixels(b64: str, side: int) -> np.ndarray:
    image = Image.open(io.BytesIO(base64.b64decode(b64)))
    assert image.format == "JPEG" and min(image.size) >= previews.MIN_SIDE
    return np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=float)


def test_the_last_steps_preview_looks_like_the_final_image(embedded):
    frames: list[torch.Tensor] = []

    def keep(pipe, step, timestep, tensors):
        frames.append(tensors["latents"].clone())
        return tensors

    out = embedded(prompt=["a red cat with a blue hat", "a green cat with a yellow hat"],
                   generator=[torch.Generator().manual_seed(s) for s in (1, 2)], callback_on_step_end=keep)
    proj = previews.projection(embedded)
    assert proj is previews.projection(embedded)  # fitted once per pipeline
    for n, final in enumerate(out.images):
        shown = pixels(previews.render(frames[-1], proj)[n], 16)
        truth = np.asarray(final.resize((16, 16), Image.Resampling.BOX), dtype=float)
        # a projection that mixed up channels, or dropped the bias, correlates far worse (or negatively)
        assert np.corrcoef(shown.ravel(), truth.ravel())[0, 1] > 0.6
        assert np.abs(shown - truth).mean() < 40


def test_each_preview_goes_to_the_job_whose_image_it_is_and_only_if_wanted(embedded):
    specs = [ImageSpec("p", None, 1, job_id="a", index=0), ImageSpec("p", None, 2, job_id="b", index=0),
             ImageSpec("p", None, 3, job_id="b", index=1), ImageSpec("p", None, 3, job_id="b", index=1)]  # padding
    latents = torch.randn(4, 4, 16, 16)
    shown = previews.of_frame(Frame(embedded, latents, specs), {"b"})
    assert [(job, index) for job, index, _ in shown] == [("b", 0), ("b", 1), ("b", 1)]
    assert previews.of_frame(Frame(embedded, latents, specs), set()) == []
    proj = previews.projection(embedded)
    assert shown[0][2] == previews.render(latents[1:2], proj)[0]  # row 1, not row 0: b's first image


def test_packed_latents_and_pipelines_without_a_vae_get_no_previews(embedded):
    assert previews.render(torch.randn(1, 256, 64), previews.projection(embedded)) == []  # Flux-style tokens
    class NoVae:  # a pipeline of another kind
        pass

    assert previews.projection(NoVae()) is None
