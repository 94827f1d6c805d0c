"""Starting and stopping genfleet's processes: the Redis it needs, the API, the worker.

shared/ never imports api or workers: they run as child processes, named by import string.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from genfleet.embedded_redis import embedded_redis
from genfleet.shared.queue import model_queues, webhook_queue
from genfleet.shared.settings import Settings


@contextmanager
def redis_for(settings: Settings) -> Iterator[str]:
    """The configured Redis, or the embedded one for the whole block."""
    if settings.redis_url:
        yield settings.redis_url
    else:
        with embedded_redis(settings.data_dir) as url:
            yield url


def child_env(redis_url: str, **extra: str) -> dict[str, str]:
    env = {**os.environ, "GENFLEET_REDIS_URL": redis_url, **extra}
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _celery_worker(module: str, name: str, pool: str, concurrency: int, queue: str, loglevel: str) -> list[str]:
    return [sys.executable, "-m", "celery", "-A", module, "worker", "--pool", pool, "--concurrency",
            str(concurrency), "--queues", queue, "--hostname", f"{name}@%h", "--loglevel", loglevel,
            "--without-gossip", "--without-mingle"]


def worker_command(settings: Settings, loglevel: str = "INFO") -> list[str]:
    """A worker consuming the queues of the models it serves, its first model's first (kombu's Redis transport
    then takes a waiting job of that model before another model's of the same priority)."""
    return _celery_worker("genfleet.workers.app", "genfleet", "prefork", 1,
                          ",".join(model_queues(settings, settings.serving)), loglevel)


def webhooks_command(settings: Settings, loglevel: str = "INFO") -> list[str]:
    return _celery_worker("genfleet.workers.webhooks", "genfleet-webhooks", "threads", 8, webhook_queue(settings.queue),
                          loglevel)


def api_command(host: str, port: int) -> list[str]:
    return [sys.executable, "-m", "uvicorn", "genfleet.api.app:app", "--host", host, "--port", str(port),
            "--no-access-log"]


def worker_env(redis_url: str, metrics_port: int) -> dict[str, str]:
    """Each worker gets its own multiprocess metrics folder, so stale files of a past run never add up."""
    metrics_dir = tempfile.mkdtemp(prefix="genfleet-metrics-")
    return child_env(redis_url, GENFLEET_METRICS_PORT=str(metrics_port), PROMETHEUS_MULTIPROC_DIR=metrics_dir)


def spawn(cmd: list[str], env: dict[str, str], log: Path | None = None) -> subprocess.Popen:
    if log is None:
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL)
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)


def stop(proc: subprocess.Popen, grace_s: float = 30.0) -> int:
    """SIGTERM (Celery's warm shutdown: finish the current job), then SIGKILL after the grace period."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
    return proc.wait()


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
