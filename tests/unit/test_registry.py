"""The model registry's light half: which family a model is, what it takes, what it defaults to, which scorers
judge it. It imports no torch (tests/unit/test_layout.py holds shared/ to that): the API validates with it."""

import json

import pytest
from kombu.utils.imports import symbol_by_name

from genfleet.shared.registry import FAMILIES, KNOWN, SCORERS, Family, Registry
from genfleet.shared.schema import JobParams, Scheduler, Task
from genfleet.shared.settings import Settings


def fields(spec_name: str, registry: Registry | None = None, **params) -> set[str]:
    registry = registry or Registry()
    return {f for f, _, _ in registry.spec(spec_name).misfits(JobParams(**params), spec_name)}


def test_a_model_is_known_by_name_by_setting_or_by_its_folder(tmp_path):
    assert Registry().family("embedded") is Family.embedded
    assert Registry().family("stabilityai/sdxl-turbo") is Family.sdxl_turbo
    assert Registry().family("someone/unheard-of") is Family.generic
    assert Registry({"someone/unheard-of": Family.sdxl}).family("someone/unheard-of") is Family.sdxl
    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionXLPipeline"}))
    assert Registry().family(str(tmp_path)) is Family.sdxl
    # the setting reads as JSON from the environment, as the ConfigMap gives it
    assert Settings(model_families='{"my/model": "flux-schnell"}').registry.spec("my/model").steps == 4
    assert all(KNOWN[name] in FAMILIES for name in KNOWN) and set(FAMILIES) == set(Family)


def test_sizes_schedulers_and_tasks_are_checked_against_the_model():
    assert fields("embedded", width=64, height=64) == set()
    assert fields("embedded", width=512) == {"width"}  # its sides are 32..256
    assert fields("embedded", width=16) == {"width"}
    assert fields("stable-diffusion-v1-5/stable-diffusion-v1-5", width=512) == set()
    assert fields("some/model", width=32) == {"width"}  # below 64
    assert fields("black-forest-labs/FLUX.1-dev", width=520) == {"width"}  # 16 divides a Flux side
    assert fields("black-forest-labs/FLUX.1-dev", width=512) == set()
    assert fields("embedded", scheduler="ddim") == {"scheduler"}  # DDIM's x0 clipping ruins its latents
    assert fields("embedded", scheduler="euler") == set()
    assert fields("stabilityai/stable-diffusion-3-medium-diffusers", scheduler="ddim") == {"scheduler"}  # flow
    assert fields("some/model", scheduler="euler") == set()
    assert fields("some/model", task="inpaint", image="x", mask="y") == {"task"}  # generic: text-to-image only
    assert fields("embedded", task="inpaint", image="x", mask="y") == set()


def test_a_task_needs_its_inputs_and_refuses_others():
    def misfit(**params) -> set[str]:
        return {f for f, _, _ in JobParams(**params).task_misfits()}

    assert misfit() == set()
    assert misfit(image="x") == {"image"} and misfit(strength=0.5) == {"strength"}
    assert misfit(task="image-to-image") == {"image"}
    assert misfit(task="image-to-image", image="x", mask="y") == {"mask"}
    assert misfit(task="inpaint", image="x") == {"mask"}
    assert misfit(task="inpaint", image="x", mask="y", strength=0.7) == set()


def test_defaults_and_scorers_come_from_the_family():
    r = Registry()
    assert (r.spec("embedded").steps, r.spec("embedded").guidance) == (12, 5.0)
    assert r.spec("stabilityai/sd-turbo").steps == 1 and r.spec("stabilityai/sd-turbo").guidance == 0.0
    assert r.spec("some/model").steps is None  # generic: the pipeline's own default
    assert r.scorers_for("embedded", None) == ["technical", "adherence"]
    assert r.scorers_for("some/model", None) == ["technical"]
    # adherence judges only the embedded world of cats and hats
    assert r.scorers_for("some/model", ["technical", "adherence", "clip"]) == ["technical", "clip"]
    assert set(SCORERS) == {"technical", "adherence", "clip"}
    assert Task.inpaint in r.spec("embedded").tasks and Scheduler.unipc in r.spec("embedded").schedulers


@pytest.mark.parametrize("name", sorted(SCORERS))
def test_every_scorer_entry_names_a_class_of_the_worker(name):
    assert callable(symbol_by_name(SCORERS[name].factory))  # as workers/scoring.py resolves it
