"""`genfleet gpu-check --toy` end to end on the CPU: the GPU check's whole sequence on toy-width SD 1.5 and SDXL
architectures. It checks what the run shows, never its speed: the compiled path matches eager, DeepCache moves
the pictures only a little, FP8 where the device has none is skipped with the reason, and a second cold start
loads its compiled kernels from the cache the first one left instead of compiling again. A failing stage is
reported and the others still run; a budget skips stages."""

import json

import pytest

from tests.helpers import run_cli


def _lines(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_gpu_check_runs_end_to_end_at_toy_size(tmp_path):
    # CUDA graphs have no effect on the CPU, but the mode must reach every stage that compiles
    fast = '{"compile": "regional", "fuse_qkv": true, "compile_mode": "reduce-overhead"}'
    r = run_cli("gpu-check", "--toy", "--batch", "2", "--repeats", "1", "--rounds", "1", "--system-batches", "3",
                "--fast", fast, "--stages", "sd15,extras,cold_start,system,sdxl,system-threads",
                "--work-dir", str(tmp_path / "work"), cwd=tmp_path, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _lines(r.stdout)
    measures = [(x["measure"], x.get("model"), x.get("mode"), x.get("batch")) for x in lines]
    assert measures == [("setup", None, None, 2), ("raw", "sd15", "eager", 2),
                        ("raw", "sd15", "eager", 1), ("raw", "sd15", "eager", 2), ("deep_cache", "sd15", None, 2),
                        ("cold_start", None, None, None), ("cold_start", None, None, None),
                        ("system", "sd15", None, 2), ("raw", "sdxl", "eager", 2), ("raw", "sdxl", "compiled", 2),
                        ("system", "sd15", None, 2), ("summary", None, None, None)]
    sdxl = next(x for x in lines if x.get("mode") == "compiled")
    # FP8 (the SDXL stage's default) needs a GPU with it: on the CPU it is skipped and the line says why
    assert sdxl["applied"] == ["fuse_qkv", "compile_regional:reduce-overhead"]
    assert "this device is cpu" in sdxl["quantize_skipped"]
    assert sdxl["max_abs_diff_vs_eager"] < 1e-3, sdxl  # pixels in [0, 1]
    assert sdxl["speedup_vs_eager"] > 0 and sdxl["first_call_s"] > 0
    assert sdxl["peak_memory_gib"] is None  # the CPU has no GPU memory to report
    cached = next(x for x in lines if x["measure"] == "deep_cache")
    assert cached["interval"] == 3 and cached["speedup_min"] <= cached["speedup"] <= cached["speedup_max"]
    assert 0 < cached["mean_abs_diff_vs_uncached"] < 0.5  # it moved the pictures, a little: pixels in [0, 1]
    empty, warm = (x for x in lines if x["measure"] == "cold_start")
    assert empty["applied"] == warm["applied"] == ["fuse_qkv", "compile_regional:reduce-overhead"]
    assert empty["cache"] == "empty" and empty["fxgraph_cache_miss"] > 0 and empty["fxgraph_cache_hit"] == 0
    assert warm["cache"] == "warm" and warm["fxgraph_cache_hit"] > 0 and warm["fxgraph_cache_miss"] == 0
    assert warm["seconds"] > warm["in_process_s"] > warm["load_s"] > 0  # the process's wall time holds the rest
    systems = {x["write_in"]: x for x in lines if x["measure"] == "system"}
    assert list(systems) == ["process", "threads"]  # the writer process first: the Kubernetes config's
    assert all(x["system_images_per_s"]["median"] > 0 and x["ratio"] > 0 for x in systems.values())
    assert all(x["jobs_a_round"] == 6 for x in systems.values())  # 3 batches of 2
    assert all(x["worker_cpu_ratio"]["median"] > 0 for x in systems.values())
    summary = lines[-1]
    assert summary["failed"] == [] and summary["cold_start_cached_s"] == warm["seconds"]
    assert summary["sd15_eager_images_per_s"] == lines[1]["images_per_s"]["median"]
    rates = {k: x["system_images_per_s"]["median"] for k, x in systems.items()}
    assert summary["system_images_per_s_by_write_in"] == rates
    assert summary["sd15_system_images_per_s"] == max(rates.values())
    assert summary["sdxl_compiled_images_per_s"] == sdxl["images_per_s"]["median"]


def test_a_failing_stage_is_reported_and_the_next_still_runs(tmp_path):
    (tmp_path / "work" / "models" / "tiny-sd").mkdir(parents=True)  # a model folder with no model in it
    r = run_cli("gpu-check", "--toy", "--stages", "cold_start,system", "--work-dir", str(tmp_path / "work"),
                cwd=tmp_path, timeout=300)
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _lines(r.stdout)
    assert [(x["measure"], "error" in x) for x in lines] == [("setup", False), ("cold_start", True),
                                                             ("system", True), ("summary", False)]
    assert lines[-1]["failed"] == ["cold_start", "system"] and "sd15_system_images_per_s" not in lines[-1]


def test_a_budget_skips_what_it_cannot_fit(tmp_path):
    r = run_cli("gpu-check", "--stages", "sdxl,system", "--budget-s", "60", "--work-dir", str(tmp_path / "work"),
                cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _lines(r.stdout)
    assert [(x["measure"], "skipped" in x) for x in lines] == [("setup", False), ("sdxl", True), ("system", True),
                                                               ("summary", False)]
    assert lines[-1]["met"] == {} and lines[-1]["failed"] == []


# Three compiles (the recipe's options alone are held by tests/unit/test_compile.py's recipe test): 150 s alone
# with five, past 300 s beside the end-to-end run on the other runner.
@pytest.mark.timeout(900)
def test_the_parts_stage_times_each_part_against_eager_and_the_system_takes_the_fastest(tmp_path):
    parts = "full_graph,compile_full,int8_weight,fp8"
    r = run_cli("gpu-check", "--toy", "--batch", "2", "--repeats", "1", "--stages", "parts,system", "--rounds", "1",
                "--system-batches", "2", "--parts", parts, "--work-dir", str(tmp_path / "work"), cwd=tmp_path,
                timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = _lines(r.stdout)
    found = [x for x in lines if x["measure"] == "part" and "skipped" not in x]
    assert [x["part"] for x in found] == parts.split(",")[:-1]
    for x in found:
        assert "error" not in x, x
        assert x["rounds"] == 1 and 0 < x["speedup_min"] <= x["speedup_median"] <= x["speedup_max"]
        # none of them changes the maths but int8 weights, which round them: pixels in [0, 1]
        assert x["max_abs_diff_vs_eager"] < (0.05 if x["part"] == "int8_weight" else 1e-3), x
    recipe = ["fuse_qkv", "channels_last", "cudnn_benchmark",  # cuDNN does nothing on the CPU; the flag applies
              "compile_full:max-autotune-no-cudagraphs+tuned", "compile_vae"]
    assert [x["applied"] for x in found] == [
        recipe, ["compile_full"], ["quantize_int8_weight", "compile_full"]]
    # FP8 on the CPU: not timed, not an error, and the line says why
    fp8 = next(x for x in lines if x.get("part") == "fp8")
    assert "compute capability 8.9" in fp8["skipped"]
    # the system stage after it runs with the fastest part, when one beat eager
    summary = lines[-1]
    assert set(summary["parts_speedup"]) == {x["part"] for x in found} and summary["failed"] == []
    fastest = max(summary["parts_speedup"], key=summary["parts_speedup"].get)
    assert summary["speedup_vs_eager"] == summary["parts_speedup"][fastest]
    assert summary.get("best_path") == (fastest if summary["parts_speedup"][fastest] > 1 else None)
    system = next(x for x in lines if x["measure"] == "system")
    assert system["system_images_per_s"]["median"] > 0


def test_the_plan_says_what_would_run_and_about_how_long_without_running_it(tmp_path):
    r = run_cli("gpu-check", "--plan", "--budget-s", "480", "--work-dir", str(tmp_path / "work"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = _lines(r.stdout)
    stages = [x for x in lines if x["measure"] == "plan"]
    assert [x["stage"] for x in stages] == ["sd15", "parts", "system", "sdxl"]  # the order: SDXL last
    assert stages[1]["parts"] == ["full_graph", "compile_full"]
    total = lines[-1]
    assert total["measure"] == "plan_total" and total["estimate_s"] == sum(x["estimate_s"] for x in stages)
    assert total["estimate_s"] <= 480 and total["note"].endswith("within the budget")  # one call, under 8 minutes
    assert total["fast"]["compile"] == "full" and total["fast"]["inductor_tuning"] is True
    assert not (tmp_path / "work").exists()  # nothing ran
