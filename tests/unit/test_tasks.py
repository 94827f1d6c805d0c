"""Image-to-image and inpainting on real pipelines: the embedded one (which serves every task in its own call)
and the SD classes built from config at toy width, through diffusers' own task pipelines (random weights:
the pictures are noise, the code path is SD's)."""

import numpy as np
import pytest
import torch
from PIL import Image

from genfleet.shared.schema import Job, JobRequest, Task
from genfleet.workers.architectures import save
from genfleet.workers.models import PipelineCache, load_pipeline
from genfleet.workers.sampling import Sampler, group_jobs, group_key, image_specs

CPU = torch.device("cpu")
PROMPT = "a purple cat with a green hat"


@pytest.fixture(scope="module")
def embedded():
    return load_pipeline("embedded", CPU)


def px(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def sample(pipe, model: str, inputs: dict, **request) -> Image.Image:
    job = Job.new(JobRequest(prompt=PROMPT, seed=4, **request), model)
    return Sampler(CPU, max_batch=4).sample(pipe, group_key(job), image_specs(job, inputs))[0]


def picture(embedded) -> Image.Image:
    return sample(embedded, "embedded", {}, steps=8)


def test_image_to_image_stays_closer_to_its_input_the_lower_its_strength(embedded):
    source = picture(embedded)
    inputs, redraw = {"in.png": source}, {"task": "image-to-image", "image": "in.png", "width": 32, "height": 32}
    near = sample(embedded, "embedded", inputs, strength=0.2, **redraw)
    far = sample(embedded, "embedded", inputs, strength=0.9, **redraw)
    assert near.size == far.size == source.size
    assert 0 < np.abs(px(near) - px(source)).mean() < np.abs(px(far) - px(source)).mean()
    again = sample(embedded, "embedded", inputs, strength=0.2, **redraw)
    assert np.array_equal(px(again), px(near))  # the same job, the same pixels


def test_inpainting_keeps_every_pixel_outside_the_mask(embedded):
    source = picture(embedded)
    mask = np.zeros((64, 64), np.uint8)
    mask[6:38, 17:49] = 255  # white: repaint (edges off the 4-pixel latent grid: the input's pixels still stay)
    inputs = {"in.png": source, "mask.png": Image.fromarray(mask)}
    out = px(sample(embedded, "embedded", inputs, task="inpaint", image="in.png", mask="mask.png", strength=1.0,
                    width=64, height=64))
    outside = mask == 0
    assert np.array_equal(out[outside], px(source)[outside])
    assert np.abs(out[~outside] - px(source)[~outside]).mean() > 5


@pytest.mark.parametrize("task", [Task.image_to_image, Task.inpaint])
def test_the_sd_classes_run_each_task_through_diffusers_own_pipelines(tmp_path, task):
    folder = str(save("tiny-sd", tmp_path / "tiny-sd"))
    cache = PipelineCache(CPU)
    base = cache.get(folder)
    pipe = cache.get(folder, task)
    assert type(pipe).__name__ == {Task.image_to_image: "StableDiffusionImg2ImgPipeline",
                                   Task.inpaint: "StableDiffusionInpaintPipeline"}[task]
    assert pipe.unet is base.unet  # from_pipe: the same weights, no second copy
    assert cache.get(folder, task) is pipe
    source = sample(base, folder, {}, width=64, height=64, steps=2)
    mask = Image.fromarray(np.pad(np.full((32, 32), 255, np.uint8), 16))
    inputs = {"in.png": source, "mask.png": mask}
    extra = {"mask": "mask.png"} if task is Task.inpaint else {}
    out = sample(pipe, folder, inputs, task=task.value, image="in.png", strength=0.7, width=64, height=64, steps=4,
                 **extra)
    assert out.size == (64, 64) and np.abs(px(out) - px(source)).mean() > 0


def test_only_jobs_one_call_can_take_share_it():
    def job(**request) -> Job:
        return Job.new(JobRequest(prompt=PROMPT, **request), "embedded")

    same = [job(), job(steps=12), job(guidance=5.0)]  # unset steps and guidance are the model's defaults
    apart = [job(task="image-to-image", image="a", strength=0.5), job(task="image-to-image", image="a", strength=0.6),
             job(task="inpaint", image="a", mask="b", strength=0.5), job(adapters=[{"name": "x"}]),
             job(adapters=[{"name": "x", "weight": 0.5}])]
    groups = group_jobs(same + apart)
    assert len(groups) == 1 + len(apart)
    assert [len(g) for g in groups.values()][0] == 3
    # the adapters' order is not what a call depends on
    a = job(adapters=[{"name": "x"}, {"name": "y"}])
    b = job(adapters=[{"name": "y"}, {"name": "x"}])
    assert group_key(a) == group_key(b)
