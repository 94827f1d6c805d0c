"""What the tests share besides fixtures: ports, waits on observable conditions, processes, S3 listings."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import psutil
import redis

from genfleet import supervisor
from genfleet.shared import keys, usage
from genfleet.shared.fairshare import backlogs, returned
from genfleet.shared.queue import priority_lists, queue_depth
from genfleet.shared.schema import TERMINAL
from genfleet.shared.settings import Settings

BUCKET = "genfleet-test"
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def settings_of(env: dict[str, str]) -> Settings:
    return Settings(**{k.removeprefix("GENFLEET_").lower(): v for k, v in env.items() if k.startswith("GENFLEET_")})


@dataclass
class Stack:
    """Environment shared by the processes of one test: its own queue and storage prefix."""

    env: dict[str, str]
    tmp: Path
    procs: list[subprocess.Popen] = field(default_factory=list)
    logs: dict[int, Path] = field(default_factory=dict)  # pid: the process's log

    @property
    def settings(self) -> Settings:
        return settings_of(self.env)

    def start_worker(self, **env: str) -> subprocess.Popen:
        log = self.tmp / f"worker-{len(self.procs)}.log"
        full = {**supervisor.worker_env(self.env["GENFLEET_REDIS_URL"], 0), **self.env, **env}
        proc = supervisor.spawn(supervisor.worker_command(settings_of(full)), full, log)
        self.procs.append(proc)
        self.logs[proc.pid] = log
        wait_for(lambda: "ready." in log.read_text(errors="replace"), 60,
                 lambda: f"worker never ready:\n{supervisor.tail(log)}", proc)
        return proc

    def start_api(self, **env: str) -> str:
        proc, base = start_api(self.tmp / f"api-{len(self.procs)}.log", {**self.env, **env})
        self.procs.append(proc)
        return base


def start_api(log: Path, env: dict[str, str]) -> tuple[subprocess.Popen, str]:
    """An API process on a free loopback port, once it answers /healthz; (process, base URL)."""
    port = free_port()
    proc = supervisor.spawn(supervisor.api_command("127.0.0.1", port), env, log)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: healthy(base), 30, lambda: f"API never healthy:\n{supervisor.tail(log)}", proc)
    return proc, base


def healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/healthz", timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def wait_for(predicate, timeout_s: float, message, proc: subprocess.Popen | None = None) -> None:
    """Polls `predicate`; `message` is a string or a callable, read only on failure (e.g. a log's tail)."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        failed = proc is not None and proc.poll() is not None
        if failed or time.monotonic() > deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"process exited ({proc.returncode}): {text}" if failed else text)
        time.sleep(0.1)


def wait_job(api: str, job_id: str, done: Callable[[dict[str, Any]], bool], timeout_s: float, what: str,
             headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Polls a job over the API until `done(job)`; the job as it then stands."""
    seen: dict[str, Any] = {}

    def ready() -> bool:
        r = httpx.get(f"{api}/v1/jobs/{job_id}", headers=headers)
        assert r.status_code == 200, f"GET /v1/jobs/{job_id}: {r.status_code} {r.text}"
        seen.update(job=r.json())
        return done(seen["job"])

    wait_for(ready, timeout_s, lambda: f"job {job_id} not {what} after {timeout_s}s: {seen.get('job')}")
    job: dict[str, Any] = seen["job"]
    return job


def wait_terminal(api: str, job_id: str, timeout_s: float = 120) -> dict[str, Any]:
    return wait_job(api, job_id, lambda j: j["status"] in TERMINAL, timeout_s, "finished")


def wait_status(api: str, job_id: str, status: str, timeout_s: float = 60) -> dict[str, Any]:
    return wait_job(api, job_id, lambda j: j["status"] == status, timeout_s, status)


def alive(pid: int) -> bool:
    """Whether a process runs: it exists and is not a zombie (an orphan's zombie waits for whoever reaps it)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return not f.read().rsplit(") ", 1)[1].startswith("Z")
    except FileNotFoundError:
        return False


def pool_children(proc: subprocess.Popen[bytes]) -> list[int]:
    """PIDs of a worker's pool processes (its children)."""
    out = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def kill_tree(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILLs a process and every process under it (a worker's pool and writer), and reaps the first. What a test's
    end needs: its processes gone. A polite stop has tests of its own, and a Celery worker's warm shutdown takes
    over 3 s even when idle (billiard's fixed sleeps as its pool exits), paid again by every test that starts one."""
    if proc.poll() is not None:  # reaped already: its pid may belong to another process by now
        return
    try:
        procs = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        procs = []
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    proc.wait()  # the others are no children of this process: SIGKILL cannot be caught, and init reaps them


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "genfleet", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})


def queued_messages(r: redis.Redis, queue: str) -> list[bytes]:
    """Every message waiting on `queue`: in its lists, pulled back from them, or in its tenants' backlogs."""
    names = [n for ready in priority_lists(queue) for n in (*backlogs(r, ready), returned(ready), ready)]
    return [m for name in names for m in r.lrange(name, 0, -1)]


def tenant_state_written(r: redis.Redis, queue: str, tenant: str) -> list[str]:
    """The keys fair share wrote for `queue` and the usage keys of `tenant`, having forgotten `tenant` in the
    hashes every queue shares: what a benchmark, on a Redis of its own, removes as it ends."""
    for shared in (keys.FAIR_WEIGHTS, keys.FAIR_CAPS, keys.FAIR_INFLIGHT, keys.QUEUED_BY_TENANT):
        r.hdel(shared, tenant)
    r.hdel(keys.USAGE_TOTAL, *(f"{tenant}|{field}" for field in usage.FIELDS))
    patterns = [keys.fair(ready, "*") for ready in priority_lists(queue)] + [keys.usage(tenant, 0)[:-1] + "*"]
    return [k.decode() for pattern in patterns for k in r.scan_iter(pattern, count=1000)]


def depth(stack: Stack, r: redis.Redis) -> int:
    """Messages waiting in the stack's queue, all priorities."""
    return sum(queue_depth(r, stack.env["GENFLEET_QUEUE"]).values())


def _job_prefix(stack: Stack, job_id: str) -> str:
    return f"{stack.env['GENFLEET_STORAGE_URL'].removeprefix(f's3://{BUCKET}/')}/{job_id}/"


def objects(s3: Any, stack: Stack, job_id: str) -> list[str]:
    """The names of a job's objects in S3."""
    listed = s3.list_objects_v2(Bucket=BUCKET, Prefix=_job_prefix(stack, job_id)).get("Contents", [])
    return sorted(o["Key"].rsplit("/", 1)[1] for o in listed)


def versions(s3: Any, stack: Stack, job_id: str) -> dict[str, int]:
    """How many times each object of a job was written (the test bucket keeps every version), so a test sees
    a duplicate write, not only a missing one."""
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=_job_prefix(stack, job_id)).get("Versions", [])
    counts: dict[str, int] = {}
    for v in listed:
        name = v["Key"].rsplit("/", 1)[1]
        counts[name] = counts.get(name, 0) + 1
    return counts


def make_safety_checker(folder: Path, flags: bool) -> Path:
    """A small `StableDiffusionSafetyChecker` with random weights (no real one can be downloaded here), saved with
    its image processor. Its thresholds are set so that it flags every image (`flags`) or none: the checker's own
    forward pass runs either way, and the test can say what the flag must be."""
    from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
    from transformers import CLIPConfig, CLIPImageProcessor

    small = {"hidden_size": 32, "intermediate_size": 37, "num_attention_heads": 4, "num_hidden_layers": 2}
    config = CLIPConfig(text_config={**small, "vocab_size": 100}, projection_dim=32,
                        vision_config={**small, "image_size": 32, "patch_size": 8})
    checker = StableDiffusionSafetyChecker(config)
    # a concept is flagged when cosine(image, concept) - threshold > 0: a threshold of -2 always, of 2 never
    checker.concept_embeds_weights.data.fill_(-2.0 if flags else 2.0)
    checker.special_care_embeds_weights.data.fill_(2.0)
    checker.save_pretrained(folder)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(folder)
    return folder


def make_lora(unet: Any, folder: Path, seed: int, rank: int = 4) -> Path:
    """A small LoRA on `unet`'s attention projections, with random weights in both factors (peft's default
    zeroes one, which would change nothing), saved as diffusers' LoRA file. `unet` is changed: pass a copy.
    No LoRA can be downloaded here, and a random one is enough to tell its effect apart."""
    import torch
    from diffusers import StableDiffusionPipeline
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict

    torch.manual_seed(seed)
    unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, init_lora_weights=False,
                                target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
    state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    StableDiffusionPipeline.save_lora_weights(save_directory=str(folder), unet_lora_layers=state,
                                              safe_serialization=True)
    return folder / "pytorch_lora_weights.safetensors"


def kombu_send(app: Any, job: Any, queue: str) -> None:
    """kombu's own publish of a job's message (genfleet pushes the messages it builds itself: shared/queue.py)."""
    from genfleet.shared.queue import GENERATE_TASK, PRIORITY_STEPS

    app.send_task(GENERATE_TASK, args=[job.model_dump(mode="json")], queue=queue, task_id=str(job.id),
                  priority=PRIORITY_STEPS[job.request.priority], argsrepr=f"[job {job.id}]", kwargsrepr="{}")
