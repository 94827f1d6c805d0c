import pytest
from pydantic import ValidationError

from genfleet.shared.settings import Settings


def test_defaults_are_the_embedded_setup(monkeypatch):
    for k in ("GENFLEET_REDIS_URL", "GENFLEET_STORAGE_URL", "GENFLEET_MODEL"):
        monkeypatch.delenv(k, raising=False)
    s = Settings()
    assert (s.redis_url, s.storage_url, s.model) == (None, "file://./genfleet-output", "embedded")


def test_environment_prefix(monkeypatch):
    monkeypatch.setenv("GENFLEET_MODEL", "some/model")
    monkeypatch.setenv("GENFLEET_EXTRA_MODELS", "embedded, other/model")
    assert Settings().models == ["some/model", "embedded", "other/model"]


def test_storage_outage_window_must_end_before_the_soft_limit():
    with pytest.raises(ValidationError, match="STORAGE_OUTAGE_S"):
        Settings(hard_time_limit_s=600, soft_time_limit_s=500, storage_outage_s=500)
    assert Settings(hard_time_limit_s=600, soft_time_limit_s=500, storage_outage_s=499).storage_outage_s == 499
    with pytest.raises(ValidationError, match="SOFT_TIME_LIMIT_S"):
        Settings(hard_time_limit_s=600, soft_time_limit_s=600)


def test_a_fast_path_names_torch_compiles_mode_and_a_wrong_one_is_refused_by_field(monkeypatch):
    monkeypatch.setenv("GENFLEET_FASTPATH", '{"sd15": {"compile": "full", "compile_mode": "max-autotune"}}')
    fast = Settings().fastpath["sd15"]
    assert (fast.compile, fast.compile_mode) == ("full", "max-autotune")
    assert Settings(fastpath='{"*": {"compile": "regional"}}').fastpath["*"].compile_mode == "default"
    with pytest.raises(ValidationError, match="compile_mode"):
        Settings(fastpath='{"*": {"compile": "full", "compile_mode": "fastest"}}')
    with pytest.raises(ValidationError, match="compile_mode needs compile"):  # it would do nothing, silently
        Settings(fastpath='{"*": {"compile_mode": "max-autotune"}}')
