"""A job's scheduler, on real pipelines: the embedded model, and the SD classes built from config at toy width
(random weights: the pictures are noise, the code path is SD's)."""

import numpy as np
import pytest
import torch

from genfleet.shared.registry import Registry
from genfleet.shared.schema import Job, JobRequest, Scheduler
from genfleet.workers.architectures import build
from genfleet.workers.models import load_pipeline
from genfleet.workers.sampling import Sampler, group_jobs, group_key, image_specs
from genfleet.workers.schedulers import SCHEDULERS

CPU = torch.device("cpu")


def pixels(sampler: Sampler, pipe, scheduler: Scheduler | None, model: str = "embedded") -> np.ndarray:
    job = Job.new(JobRequest(prompt="a purple cat with a red hat", seed=5, steps=6, scheduler=scheduler), model)
    return np.asarray(sampler.sample(pipe, group_key(job), image_specs(job))[0], dtype=np.int16)


@pytest.fixture(scope="module")
def embedded():
    return load_pipeline("embedded", CPU)


def test_a_scheduler_changes_the_pixels_repeatably_and_the_default_comes_back(embedded):
    sampler = Sampler(CPU, max_batch=4)
    default = pixels(sampler, embedded, None)
    unipc = pixels(sampler, embedded, Scheduler.unipc)
    assert np.abs(unipc - default).mean() > 1  # another sampler, another picture from the same noise
    assert np.array_equal(pixels(sampler, embedded, Scheduler.unipc), unipc)  # the same job, the same pixels
    assert np.array_equal(pixels(sampler, embedded, None), default)  # the model's own scheduler is back
    # the embedded model's own scheduler is DPM++ 2M: asking for it by name changes nothing
    assert np.array_equal(pixels(sampler, embedded, Scheduler.dpmpp_2m), default)
    assert Registry().spec("embedded").schedulers == set(Scheduler) - {Scheduler.ddim}


def test_every_scheduler_runs_on_the_sd_classes():
    pipe = build("tiny-sd")
    own = pipe.scheduler.config
    sampler = Sampler(CPU, max_batch=4)
    seen = {}
    for name in Scheduler:
        seen[name] = pixels(sampler, pipe, name, "tiny-sd")
        assert type(pipe.scheduler) is SCHEDULERS[name][0]  # the call ran with the one asked for
        # built from the model's own config: its noise schedule carries over
        assert (pipe.scheduler.config.beta_start, pipe.scheduler.config.beta_end) == (own.beta_start, own.beta_end)
    assert len({v.tobytes() for v in seen.values()}) == len(Scheduler)  # five samplers, five pictures


def test_jobs_with_different_schedulers_never_share_a_call():
    jobs = [Job.new(JobRequest(prompt="a", scheduler=s), "embedded") for s in (None, Scheduler.unipc, None)]
    groups = group_jobs(jobs)
    assert sorted(len(g) for g in groups.values()) == [1, 2]
    assert {k.scheduler for k in groups} == {None, Scheduler.unipc}
