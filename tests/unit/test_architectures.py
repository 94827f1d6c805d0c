"""Full-size diffusers classes, built from config with random weights (no weights can be downloaded here),
run through the worker's own path: PipelineCache -> run_batch -> Sampler -> pipeline call -> storage."""

import io

import pytest
import torch
from PIL import Image

from genfleet.workers.architectures import build, save
from genfleet.workers.models import load_pipeline
from genfleet.workers.runner import run_batch
from tests.unit.test_batching import DEVICE, Recorder, make_ctx, queued


def test_a_stable_diffusion_folder_loads_on_the_generic_path_and_batches(redis, tmp_path):
    folder = save("tiny-sd", tmp_path / "tiny-sd")
    rec = Recorder(load_pipeline(str(folder), DEVICE))  # DiffusionPipeline.from_pretrained, as for a hub id
    assert type(rec.pipe).__name__ == "StableDiffusionPipeline"
    ctx = make_ctx(redis, tmp_path / "out", rec)
    ctx.pipelines.add(str(folder), rec)
    jobs = [queued(ctx.store, model=str(folder), width=64, height=64, steps=2, seed=i, num_images=1 + i)
            for i in range(2)]
    jobs = [j.model_copy(update={"model": str(folder)}) for j in jobs]
    done = run_batch(jobs, ctx)
    assert [j.status.value for j in done] == ["succeeded"] * 2, [j.error for j in done]
    assert [c["n"] for c in rec.calls] == [3]  # both jobs, three images, one call
    png = Image.open(io.BytesIO(ctx.storage.get(done[1].outputs[1].key)))
    assert png.size == (64, 64) and png.text["seed"] == str(done[1].seed + 1)
    assert done[0].outputs[0].score is not None  # the technical scorer judges models other than embedded


@pytest.mark.slow  # the 860M-parameter UNet
def test_sd15_is_built_at_full_size_and_runs_one_small_step():
    pipe = build("sd15")
    params = sum(p.numel() for p in pipe.unet.parameters())
    assert 850e6 < params < 870e6, params  # SD 1.5's UNet has 859.5M parameters
    assert pipe.text_encoder.config.hidden_size == 768 and pipe.unet.config.cross_attention_dim == 768
    out = pipe(prompt=["a cat", "a hat"], width=64, height=64, num_inference_steps=1,
               generator=[torch.Generator().manual_seed(i) for i in range(2)], output_type="np")
    assert out.images.shape == (2, 64, 64, 3)


@pytest.mark.parametrize("arch, cross", [("sd-turbo", 1024)])
def test_sd_turbo_shape(arch, cross):
    from diffusers import UNet2DConditionModel

    from genfleet.workers.architectures import ARCHITECTURES
    unet = UNet2DConditionModel(**ARCHITECTURES[arch]["unet"])
    assert unet.config.cross_attention_dim == cross and 860e6 < sum(p.numel() for p in unet.parameters()) < 870e6
