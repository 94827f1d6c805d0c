"""`genfleet gpu-check --toy` end to end on the CPU: the GPU check's whole sequence on toy-width SD 1.5 and SDXL
architectures. It checks what the run shows, never its speed: the compiled path matches eager, DeepCache moves
the pictures only a little, and a second cold start loads its compiled kernels from the cache the first one
left instead of compiling again."""

import json

from tests.helpers import run_cli


def test_gpu_check_runs_end_to_end_at_toy_size(tmp_path):
    r = run_cli("gpu-check", "--toy", "--batch", "2", "--repeats", "1", "--rounds", "1",
                "--work-dir", str(tmp_path / "work"), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [json.loads(line) for line in r.stdout.splitlines() if line.startswith("{")]
    measures = [(x["measure"], x.get("model"), x.get("mode")) for x in lines]
    assert measures == [("setup", None, None), ("raw", "sd15", "eager"), ("raw", "sd15", "eager"),
                        ("raw", "sd15", "compiled"), ("deep_cache", "sd15", None), ("cold_start", None, None),
                        ("cold_start", None, None), ("system", "sd15", None), ("system", "sd15", None),
                        ("raw", "sdxl", "eager"), ("raw", "sdxl", "compiled"), ("summary", None, None)]
    for compiled in (x for x in lines if x.get("mode") == "compiled"):
        assert compiled["applied"] == ["fuse_qkv", "channels_last", "compile_regional"]
        assert compiled["max_abs_diff_vs_eager"] < 1e-3, compiled  # pixels in [0, 1]
    cached = next(x for x in lines if x["measure"] == "deep_cache")
    assert cached["interval"] == 3 and cached["speedup_min"] <= cached["speedup"] <= cached["speedup_max"]
    assert 0 < cached["mean_abs_diff_vs_uncached"] < 0.5  # it moved the pictures, a little: pixels in [0, 1]
    empty, warm = (x for x in lines if x["measure"] == "cold_start")
    assert empty["cache"] == "empty" and empty["fxgraph_cache_miss"] > 0 and empty["fxgraph_cache_hit"] == 0
    assert warm["cache"] == "warm" and warm["fxgraph_cache_hit"] > 0 and warm["fxgraph_cache_miss"] == 0
    systems = {x["write_in"]: x for x in lines if x["measure"] == "system"}
    assert sorted(systems) == ["process", "threads"]  # the writes on threads, and in a writer process
    assert all(x["system_images_per_s"]["median"] > 0 and x["ratio"] > 0 for x in systems.values())
    summary = lines[-1]
    assert summary["cold_start_cached_s"] == warm["seconds"]
    rates = {k: x["system_images_per_s"]["median"] for k, x in systems.items()}
    assert summary["system_images_per_s_by_write_in"] == rates
    assert summary["sd15_system_images_per_s"] == max(rates.values())
