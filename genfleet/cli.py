"""The `genfleet` command."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from uuid import UUID

import httpx
from celery import Celery
from pydantic import ValidationError

from genfleet import supervisor
from genfleet.client import Client, SubmitError, download, submit, wait
from genfleet.shared.batches import BatchStore
from genfleet.shared.fairshare import Fairness
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import enqueue, priority_lists, publisher, queue_for
from genfleet.shared.redis_server import async_client, client
from genfleet.shared.schema import TERMINAL, Job, JobRequest, Priority
from genfleet.shared.settings import Settings, get_settings
from genfleet.shared.storage import LocalStorage, open_storage


def _fail(message: str, code: int = 2) -> int:
    print(f"genfleet: {message}", file=sys.stderr)
    return code


def _job_params(args: argparse.Namespace) -> dict:
    """The job parameters given on the command line (see `_add_job_options`); unset ones are left out."""
    fields = {"negative_prompt": args.negative, "width": args.width, "height": args.height, "steps": args.steps,
              "guidance": args.guidance, "seed": args.seed, "num_images": args.num_images, "model": args.model,
              "priority": args.priority}
    return {k: v for k, v in fields.items() if v is not None}


def _requests(args: argparse.Namespace) -> list[JobRequest]:
    return [JobRequest(prompt=p, **_job_params(args)) for p in args.prompts]


def _where(url: str, settings: Settings) -> str:
    storage = open_storage(settings.storage_url, settings.s3_endpoint_url)
    if isinstance(storage, LocalStorage) and url.startswith("file://"):
        path = Path(url.removeprefix("file://"))
        return str(path.relative_to(Path.cwd())) if path.is_relative_to(Path.cwd()) else str(path)
    return url


def _report(job: Job, settings: Settings) -> None:
    t = job.timings
    total = (job.finished_at - job.created_at).total_seconds() if job.finished_at else 0.0
    parts = ", ".join(f"{k.removesuffix('_s')} {v:.2f}s" for k, v in t.items() if k.endswith("_s"))
    batch = f"; sampled in a batch of {t['batch_images']:.0f} images" if "batch_images" in t else ""
    print(f"job {job.id} {job.status.value} in {total:.2f}s ({parts}{batch})")
    if job.error:
        print(f"  error: {job.error}")
    for o in job.outputs:
        score = "n/a" if o.score is None else f"{o.score:.3f}"
        print(f"  {_where(o.url, settings)}  seed {o.seed}  score {score}  {o.width}x{o.height}")


def _wait(store: JobStore, ids: list[UUID], worker: subprocess.Popen[bytes] | None, log: Path,
          timeout_s: float) -> list[Job]:
    deadline = time.monotonic() + timeout_s
    while True:
        jobs = [j for j in store.get_many(ids) if j is not None and j.status.terminal]
        if len(jobs) == len(ids):
            return jobs
        if worker is not None and worker.poll() is not None:
            raise RuntimeError(f"the worker exited with code {worker.returncode}; its log:\n{supervisor.tail(log)}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"jobs not finished after {timeout_s:.0f}s")
        time.sleep(0.1)


async def _enqueue_all(jobs: list[Job], store: JobStore, url: str, app: Celery, settings: Settings) -> None:
    ar = async_client(url)
    try:
        for job in jobs:
            await enqueue(job, store, ar, app, queue_for(settings, job.model))
    finally:
        await ar.aclose()


def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    try:
        requests = _requests(args)
    except ValidationError as e:
        err = e.errors()[0]
        return _fail(f"{'.'.join(map(str, err['loc'])) or 'request'}: {err['msg']}")
    log = settings.data_dir / "worker.log"
    with supervisor.redis_for(settings) as url:
        store = JobStore(client(url), settings.job_ttl_s, fairness=Fairness.of(settings))
        worker = None if args.no_worker else supervisor.spawn(
            supervisor.worker_command(settings), supervisor.worker_env(url, 0), log)
        try:
            app = publisher(settings, url)
            jobs = [Job.new(r, settings.model) for r in requests]
            asyncio.run(_enqueue_all(jobs, store, url, app, settings))
            print(f"queued {len(jobs)} job(s); waiting" + ("" if args.no_worker else f" (worker log: {log})"))
            done = _wait(store, [j.id for j in jobs], worker, log, args.timeout)
        except (RuntimeError, TimeoutError) as e:
            return _fail(str(e), 1)
        finally:
            if worker is not None:
                supervisor.stop(worker)
    for job in done:
        _report(job, settings)
    return 0 if all(j.status.value == "succeeded" for j in done) else 1


def _run_children(children: list[subprocess.Popen], grace_s: float = 30.0) -> int:
    """Waits until any child exits, Ctrl-C or SIGTERM (Kubernetes stopping the pod), then stops them all:
    SIGTERM first, so a worker finishes its batch (Celery's warm shutdown) within `grace_s`."""
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    try:
        while all(c.poll() is None for c in children) and not stopping:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    codes = [supervisor.stop(c, grace_s) for c in children]
    return next((c for c in codes if c not in (0, -15)), 0)


def cmd_up(args: argparse.Namespace, settings: Settings) -> int:
    with supervisor.redis_for(settings) as url:
        api = supervisor.spawn(supervisor.api_command(args.host, args.port), supervisor.child_env(url))
        worker = supervisor.spawn(supervisor.worker_command(settings),
                                  supervisor.worker_env(url, settings.metrics_port))
        children = [api, worker]
        if settings.webhook_secret:
            children.append(supervisor.spawn(supervisor.webhooks_command(settings), supervisor.child_env(url)))
        print(f"genfleet up: web page on http://{args.host}:{args.port}/ui, API docs at /docs, one worker"
              f"{', webhooks' if len(children) == 3 else ''}; Ctrl-C stops")
        return _run_children(children)


def cmd_api(args: argparse.Namespace, settings: Settings) -> int:
    with supervisor.redis_for(settings) as url:
        api = supervisor.spawn(supervisor.api_command(args.host, args.port), supervisor.child_env(url))
        return _run_children([api])


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    port = settings.metrics_port if args.metrics_port is None else args.metrics_port
    with supervisor.redis_for(settings) as url:
        return _run_children([supervisor.spawn(supervisor.worker_command(settings, args.loglevel),
                                              supervisor.worker_env(url, port))],
                             grace_s=settings.hard_time_limit_s + 30)


def cmd_status(args: argparse.Namespace, settings: Settings) -> int:
    """A job's or a batch's record: through the API with --api, else straight from Redis."""
    if args.api:
        api = Client(args.api, args.api_key)
        for kind in ("jobs", "batches"):
            r = api.http.get(f"/v1/{kind}/{args.id}")
            if r.status_code == 200:
                print(json.dumps(r.json(), indent=2))
                return 0
            if r.status_code not in (404, 422):
                return _fail(f"{args.api}: {r.status_code} {r.text}", 1)
        return _fail(f"no job or batch {args.id}", 1)
    with supervisor.redis_for(settings) as url:
        store = JobStore(client(url), settings.job_ttl_s)
        job = store.get(args.id)
        record = job or BatchStore(store).get(args.id)
    if record is None:
        return _fail(f"no job or batch {args.id}", 1)
    print(record.model_dump_json(indent=2))
    return 0


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    api = Client(args.api, args.api_key)
    try:
        batches = submit(Path(args.file), api, _job_params(args))
        for b in batches:
            print(f"batch {b['id']}: {b['total']} job(s) queued")
        if args.wait or args.download:
            batches = wait(api, batches, args.timeout)
            counts = {k.value: sum(b["counts"][k] for b in batches) for k in TERMINAL}
            print("finished: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
            if args.download:
                print(f"downloaded {download(api, batches, Path(args.download))} image(s) to {args.download}")
            return 0 if counts["failed"] == counts["cancelled"] == 0 else 1
    except SubmitError as e:
        return _fail(str(e), 1)
    except httpx.HTTPError as e:
        return _fail(f"cannot reach the API at {args.api}: {e}", 1)
    return 0


def cmd_queues(args: argparse.Namespace, settings: Settings) -> int:
    """Each served model's queue and its Redis lists, most urgent first: what KEDA's triggers and a worker's
    GENFLEET_WORKER_MODELS refer to. One JSON line a model."""
    for model in settings.models:
        queue = queue_for(settings, model)
        print(json.dumps({"model": model, "family": settings.registry.family(model).value, "queue": queue,
                          "lists": priority_lists(queue)}))
    return 0


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    """An image's Content Credentials and watermark, as JSON; exit 0 when its manifest validates, 1 when it has
    none or it does not, 2 when the file cannot be read."""
    from genfleet.shared.verification import NotAnImage, verify  # c2pa and the watermark: only when asked

    try:
        if args.target.startswith(("http://", "https://")):
            data = httpx.get(args.target, timeout=60, follow_redirects=True).raise_for_status().content
        else:
            data = Path(args.target).read_bytes()
        report = verify(data, settings)
    except (OSError, httpx.HTTPError, NotAnImage) as e:
        return _fail(f"cannot verify {args.target}: {e}")
    print(report.model_dump_json(indent=2))
    return 0 if report.manifest.valid else 1


def cmd_webhooks(args: argparse.Namespace, settings: Settings) -> int:
    with supervisor.redis_for(settings) as url:
        return _run_children([supervisor.spawn(supervisor.webhooks_command(settings), supervisor.child_env(url))])


# Commands that are programs of their own, with their own options; imported only when asked for, since they
# need the worker's dependencies (torch, diffusers) that the API and the client do without.
PROGRAMS = {"train-embedded": "genfleet.workers.embedded.train", "eval-embedded": "genfleet.workers.embedded.evaluate",
            "bench": "genfleet.bench", "gpu-check": "genfleet.gpucheck"}


def _add_job_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--num-images", type=int)
    p.add_argument("--seed", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--guidance", type=float)
    p.add_argument("--width", type=int)
    p.add_argument("--height", type=int)
    p.add_argument("--negative", help="negative prompt")
    p.add_argument("--model", help="default: GENFLEET_MODEL")
    p.add_argument("--priority", choices=[level.value for level in Priority])


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="genfleet", description="Distributed text-to-image generation.")
    sub = p.add_subparsers(dest="command", required=True)
    g = sub.add_parser("generate", help="run prompts through the whole system, print where the images are")
    g.add_argument("prompts", nargs="+", metavar="PROMPT")
    _add_job_options(g)
    g.add_argument("--timeout", type=float, default=900)
    g.add_argument("--no-worker", action="store_true", help="use the workers already running on the queue")
    g.set_defaults(func=cmd_generate)
    for name, fn, text in (("up", cmd_up, "API and one worker together, in the foreground"),
                           ("api", cmd_api, "serve the HTTP API")):
        a = sub.add_parser(name, help=text)
        a.add_argument("--host", default="127.0.0.1")
        a.add_argument("--port", type=int, default=8000)
        a.set_defaults(func=fn)
    w = sub.add_parser("worker", help="run a GPU (or CPU) worker")
    w.add_argument("--metrics-port", type=int, help="default: GENFLEET_METRICS_PORT; 0 turns metrics off")
    w.add_argument("--loglevel", default="INFO")
    w.set_defaults(func=cmd_worker)
    api_url = os.environ.get("GENFLEET_API_URL", "http://127.0.0.1:8000")
    s = sub.add_parser("status", help="print a job's or a batch's record")
    s.add_argument("id")
    s.add_argument("--api", help="ask this API (e.g. $GENFLEET_API_URL) rather than Redis")
    s.add_argument("--api-key", default=os.environ.get("GENFLEET_API_KEY"))
    s.set_defaults(func=cmd_status)
    b = sub.add_parser("submit", help="queue every prompt of a file (.txt: one a line; .jsonl) through the API")
    b.add_argument("file")
    b.add_argument("--api", default=api_url, help="default: $GENFLEET_API_URL or http://127.0.0.1:8000")
    b.add_argument("--api-key", default=os.environ.get("GENFLEET_API_KEY"), help="default: $GENFLEET_API_KEY")
    _add_job_options(b)
    b.add_argument("--wait", action="store_true", help="show progress until every job has finished")
    b.add_argument("--download", metavar="DIR", help="then download the images into DIR (implies --wait)")
    b.add_argument("--timeout", type=float, default=24 * 3600)
    b.set_defaults(func=cmd_submit)
    h = sub.add_parser("webhooks", help="deliver webhooks (a small Celery worker; no GPU)")
    h.set_defaults(func=cmd_webhooks)
    sub.add_parser("queues", help="each served model's queue and Redis lists (for KEDA), as JSON lines"
                   ).set_defaults(func=cmd_queues)
    v = sub.add_parser("verify", help="an image's Content Credentials and watermark (a file or a URL), as JSON")
    v.add_argument("target", metavar="FILE_OR_URL")
    v.set_defaults(func=cmd_verify)
    for name, module in PROGRAMS.items():
        sub.add_parser(name, help=f"python -m {module} (--help for its options)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in PROGRAMS:
        program: Callable[[list[str]], object] = importlib.import_module(PROGRAMS[argv[0]]).main
        code = program(argv[1:])
        return code if isinstance(code, int) else 0
    args = parser().parse_args(argv)
    try:
        settings = get_settings()
    except ValidationError as e:
        return _fail(f"bad settings: {e}")
    return args.func(args, settings)


if __name__ == "__main__":
    sys.exit(main())
