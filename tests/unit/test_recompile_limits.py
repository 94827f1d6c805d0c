"""Dynamo's variant limits are raised by whichever name this torch has: `recompile_limit` now, `cache_size_limit`
in the earlier releases pyproject.toml allows; with neither, compiling refuses, naming both."""

from types import SimpleNamespace

import pytest
import torch._dynamo

from genfleet.workers.fastpath import allow_recompiles

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("prefix", ["recompile", "cache_size"])
def test_the_limits_rise_under_either_name_and_never_fall(monkeypatch, prefix):
    config = SimpleNamespace(**{f"{prefix}_limit": 8, f"accumulated_{prefix}_limit": 512})
    monkeypatch.setattr(torch._dynamo, "config", config)
    allow_recompiles(64)
    assert vars(config) == {f"{prefix}_limit": 64, f"accumulated_{prefix}_limit": 512}


def test_a_torch_with_neither_name_is_refused_naming_both(monkeypatch):
    monkeypatch.setattr(torch._dynamo, "config", SimpleNamespace())
    with pytest.raises(RuntimeError, match="recompile_limit, cache_size_limit"):
        allow_recompiles(64)
