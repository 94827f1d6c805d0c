"""Many models on one worker: an LRU of pipelines bounded by the memory their weights take, with pinned
models, evictions and loads counted as metrics."""

import pytest
import torch
from prometheus_client import REGISTRY

from genfleet.workers.architectures import save
from genfleet.workers.models import PipelineCache, weight_bytes

CPU = torch.device("cpu")


def count(metric: str, model: str) -> float:
    return REGISTRY.get_sample_value(metric, {"model": model}) or 0.0


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("models")
    return [str(save("tiny-sd", tmp / f"m{n}", seed=n)) for n in range(3)]


def test_a_budget_of_two_models_evicts_the_least_recently_used_and_reloads_it(models):
    a, b, c = models
    size = weight_bytes(PipelineCache(CPU).get(a))
    cache = PipelineCache(CPU, budget_bytes=int(2.5 * size))
    before = {m: (count("genfleet_model_loads_total", m), count("genfleet_model_evictions_total", m)) for m in models}
    cache.get(a), cache.get(b)
    assert cache.warm == [b, a]
    cache.get(a)  # used: b is now the least recent
    cache.get(c)
    assert cache.warm == [c, a]
    cache.get(b)
    assert cache.warm == [b, c]
    loads = {m: count("genfleet_model_loads_total", m) - before[m][0] for m in models}
    evictions = {m: count("genfleet_model_evictions_total", m) - before[m][1] for m in models}
    assert loads == {a: 1, b: 2, c: 1} and evictions == {a: 1, b: 1, c: 0}
    assert count("genfleet_model_load_seconds", b) > 0


def test_a_pinned_model_stays_and_one_too_big_still_loads(models):
    a, b, c = models
    size = weight_bytes(PipelineCache(CPU).get(a))
    cache = PipelineCache(CPU, budget_bytes=int(1.5 * size), pinned={a})
    cache.get(a), cache.get(b), cache.get(c)
    assert cache.warm == [c, a]  # b went; a is pinned, so c sits over the budget rather than failing
    tiny = PipelineCache(CPU, budget_bytes=1)
    tiny.get(b), tiny.get(c)
    assert tiny.warm == [c]
