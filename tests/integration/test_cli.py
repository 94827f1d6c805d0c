"""`genfleet generate` on the embedded default: nothing configured, its own Redis, local storage."""

import json
import os

from PIL import Image

from tests.helpers import run_cli


def test_generate_on_the_embedded_default(tmp_path, monkeypatch):
    for k in [k for k in os.environ if k.startswith("GENFLEET_")]:
        monkeypatch.delenv(k)
    r = run_cli("generate", "a purple cat with a red hat", "-n", "2", "--seed", "1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    job_dirs = list((tmp_path / "genfleet-output").iterdir())
    assert len(job_dirs) == 1
    manifest = json.loads((job_dirs[0] / "manifest.json").read_text())
    assert len(manifest["images"]) == 2
    for i, image in enumerate(manifest["images"]):
        png = Image.open(job_dirs[0] / f"{i}.png")
        assert image["attempts"][0]["seed"] == 1 + i  # a quality retry, if any, used a seed derived from it
        assert png.text["seed"] == str(image["seed"]) and f"genfleet-output/{job_dirs[0].name}/{i}.png" in r.stdout
    assert "succeeded" in r.stdout and "score" in r.stdout
    # the embedded Redis kept its data (AOF): status reads the finished job back after generate exited
    status = run_cli("status", job_dirs[0].name, cwd=tmp_path)
    assert status.returncode == 0 and json.loads(status.stdout)["status"] == "succeeded"


def test_generate_names_a_bad_argument(tmp_path):
    r = run_cli("generate", "a cat", "--width", "7", cwd=tmp_path)
    assert r.returncode == 2 and "width" in r.stderr and "multiple of 8" in r.stderr
    assert not (tmp_path / "genfleet-output").exists()


def test_up_serves_api_and_worker_until_terminated(tmp_path, monkeypatch):
    import signal
    import subprocess
    import sys

    import httpx

    from tests.helpers import ROOT, free_port, wait_for, wait_terminal
    for k in [k for k in os.environ if k.startswith("GENFLEET_")]:
        monkeypatch.delenv(k)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(ROOT), "GENFLEET_METRICS_PORT": str(free_port())}
    # a file, not a pipe nobody reads until the end: a full pipe blocks; the child keeps its own descriptor
    with open(tmp_path / "up.log", "w") as log:
        proc = subprocess.Popen([sys.executable, "-m", "genfleet", "up", "--port", str(port)], cwd=tmp_path,
                                env=env, stdout=log, stderr=subprocess.STDOUT, text=True)
    try:
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, "genfleet up never became ready", proc)
        job = httpx.post(f"{base}/v1/jobs", json={"prompt": "a yellow hat", "steps": 4}).json()
        assert wait_terminal(base, job["id"])["status"] == "succeeded"
        assert (tmp_path / "genfleet-output" / job["id"] / "manifest.json").exists()
        page = httpx.get(f"{base}/ui/")  # the web page, on the embedded default (tests/ui drives it in a browser)
        assert page.status_code == 200 and "text/html" in page.headers["content-type"], page.text[:200]
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(f"{base}/v1/fleet").json()["models"] == ["embedded"]
        # the README's OpenAI SDK call, as written there (but for the port)
        readme = (ROOT / "README.md").read_text()
        snippet = readme.split("### OpenAI clients", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
        monkeypatch.chdir(tmp_path)  # where it writes cat.png
        exec(snippet.replace("127.0.0.1:8000", f"127.0.0.1:{port}"), {})  # noqa: S102  # our own README
        with Image.open(tmp_path / "cat.png") as cat:
            assert cat.format == "PNG" and cat.size == (64, 64)
    finally:
        # SIGTERM, as Kubernetes, Docker and systemd stop it (and Ctrl-C's SIGINT may be ignored: a shell starts
        # background jobs with SIGINT ignored, and Python then leaves it so)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    out = (tmp_path / "up.log").read_text()
    assert proc.returncode == 0, out
    assert '"GET /v1/jobs/' not in out  # the API runs with --no-access-log, and JSON logging keeps it off


def test_submit_waits_and_downloads(stack, tmp_path):
    api = stack.start_api()
    stack.start_worker()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# cats\na green cat\n\na red hat\na purple cat with a blue hat\n")
    r = run_cli("submit", str(prompts), "--api", api, "--steps", "3", "-n", "2", "--download", str(tmp_path / "out"),
                cwd=tmp_path, env=stack.env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "3 job(s) queued" in r.stdout and "3 succeeded" in r.stdout and "downloaded 6 image(s)" in r.stdout
    pngs = sorted((tmp_path / "out").glob("*/*.png"))
    assert len(pngs) == 6 and all(Image.open(p).size == (64, 64) for p in pngs)
    assert "generating" in r.stderr  # the progress bar
    batch_id = r.stdout.split()[1].rstrip(":")
    status = run_cli("status", batch_id, "--api", api, cwd=tmp_path, env=stack.env)
    assert status.returncode == 0 and json.loads(status.stdout)["counts"]["succeeded"] == 3
    # the same file again is the same batch (its Idempotency-Key is made from the content): nothing new queued
    again = run_cli("submit", str(prompts), "--api", api, "--steps", "3", "-n", "2", cwd=tmp_path, env=stack.env)
    assert again.returncode == 0 and f"batch {batch_id}:" in again.stdout


def test_submit_names_what_is_wrong(stack, tmp_path):
    api = stack.start_api()
    bad = tmp_path / "bad.jsonl"
    bad.write_text('"a cat"\n{"prompt": "a hat", "colour": "red"}\n')
    r = run_cli("submit", str(bad), "--api", api, cwd=tmp_path, env=stack.env)
    assert r.returncode == 1 and "422" in r.stderr and "colour" in r.stderr
    missing = run_cli("submit", str(tmp_path / "nope.txt"), "--api", api, cwd=tmp_path, env=stack.env)
    assert missing.returncode == 1 and "nope.txt: no such file" in missing.stderr
    down = run_cli("submit", str(bad), "--api", "http://127.0.0.1:9", cwd=tmp_path, env=stack.env)
    assert down.returncode == 1 and "cannot reach the API" in down.stderr


def test_queues_names_each_models_queue_and_lists(tmp_path):
    from genfleet.shared.queue import priority_lists, queue_for
    from genfleet.shared.settings import Settings

    extra = "stabilityai/sdxl-turbo,some/other-model"
    out = run_cli("queues", cwd=tmp_path, env={"GENFLEET_EXTRA_MODELS": extra, "GENFLEET_QUEUE": "gf"})
    assert out.returncode == 0, out.stderr
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    settings = Settings(extra_models=extra, queue="gf")
    assert [line["model"] for line in lines] == ["embedded", "stabilityai/sdxl-turbo", "some/other-model"]
    assert [line["family"] for line in lines] == ["embedded", "sdxl-turbo", "generic"]
    assert lines[0]["queue"] == "gf" and len({line["queue"] for line in lines}) == 3
    for line in lines:
        assert line["lists"] == priority_lists(queue_for(settings, line["model"]))
