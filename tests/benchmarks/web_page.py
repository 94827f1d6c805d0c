"""The web page's batch view: seconds from navigation until its first page of jobs shows with every thumbnail
loaded, in headless chromium against a real API process, for batches of different sizes. Loopback only.

    python -m tests.benchmarks.web_page [--sizes 100,1000,10000] [--rounds 5] [--redis-url URL]

Each batch's jobs are recorded as the API records them, then marked succeeded through the job store with one
stored 64x64 PNG each (one file shared by all, so a 10,000-job batch does not write 10,000 files; the browser
still fetches each job's image by its own URL). Each round opens every size once, in an order that rotates
between rounds; the summary gives each size's median with its min and max, and the largest size's median over
the smallest's (every size fills a page of 48, so paging should keep it near 1). Target: at most 1 s with 1,000
jobs.
"""

from __future__ import annotations

import argparse
import io
import os
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

from genfleet import supervisor
from genfleet.shared import keys
from genfleet.shared.batches import Batch, BatchStore
from genfleet.shared.jobstore import JobStore
from genfleet.shared.queue import priority_lists
from genfleet.shared.redis_server import client
from genfleet.shared.schema import ImageOutput, JobStatus
from genfleet.shared.storage import LocalStorage
from tests.benchmarks.enqueue import emit, spread
from tests.helpers import start_api, tenant_state_written
from tests.ui.conftest import CHROMIUM

KEY = "bench/0.png"


def finished_batch(base: str, store: JobStore, storage: LocalStorage, n: int) -> str:
    prompts = [f"a cat, take {i}" for i in range(n)]
    reply = httpx.post(f"{base}/v1/batches", json={"prompts": prompts}, timeout=120).raise_for_status()
    batch = Batch.model_validate(reply.json())
    now = datetime.now(UTC)
    output = ImageOutput(index=0, url=KEY, key=KEY, seed=0, score=0.9, width=64, height=64)
    for start in range(0, n, 1000):
        jobs = [j for j in store.get_many(batch.job_ids()[start:start + 1000]) if j is not None]
        store.update_many([j.model_copy(update={"status": JobStatus.succeeded, "finished_at": now,
                                                "outputs": [output]}) for j in jobs])
    BatchStore(store).write_manifest(batch.id, storage)  # as the worker recording the last outcome does
    return str(batch.id)


def open_batch(page, base: str, batch_id: str, expect: int) -> float:
    page.goto("about:blank")
    started = time.perf_counter()
    page.goto(f"{base}/ui/#/batches/{batch_id}")
    page.wait_for_function("""(n) => { const imgs = document.querySelectorAll('.grid .thumb img');
        return imgs.length === n && [...imgs].every((i) => i.complete && i.naturalWidth > 0); }""", arg=expect,
        timeout=30_000)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="100,1000,10000")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--redis-url", default=os.environ.get("GENFLEET_REDIS_URL", "redis://127.0.0.1:6379/10"))
    args = p.parse_args(argv)
    if CHROMIUM is None:
        raise SystemExit("no chromium on PATH (Debian: apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    sizes = [int(s) for s in args.sizes.split(",")]
    folder, queue = Path(tempfile.mkdtemp()), f"genfleet-bench-{uuid.uuid4().hex[:8]}"
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    storage = LocalStorage(folder / "out")
    storage.put(KEY, buf.getvalue(), "image/png")
    env = supervisor.child_env(args.redis_url, GENFLEET_QUEUE=queue, GENFLEET_LOG_FORMAT="text",
                              GENFLEET_STORAGE_URL=(folder / "out").as_uri(), GENFLEET_MAX_QUEUE_DEPTH="10000000")
    env.pop("GENFLEET_API_KEYS", None)
    api, base = start_api(folder / "api.log", env)
    r = client(args.redis_url)
    store = JobStore(r, 3600)
    batches: list[str] = []
    try:
        ids = {n: finished_batch(base, store, storage, n) for n in sizes}
        batches += ids.values()
        emit(measure="setup", cpus=os.cpu_count(), sizes=sizes, rounds=args.rounds)
        seconds: dict[int, list[float]] = {n: [] for n in sizes}
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
            page = browser.new_page()
            open_batch(page, base, ids[sizes[0]], min(48, sizes[0]))  # warm: the page's files cached, as a user's
            for round_no in range(args.rounds):
                order = sizes[round_no % len(sizes):] + sizes[:round_no % len(sizes)]
                for n in order:
                    seconds[n].append(open_batch(page, base, ids[n], min(48, n)))
                emit(measure="round", round=round_no, **{f"jobs_{n}_s": seconds[n][-1] for n in sizes})
            browser.close()
        medians = {n: spread(seconds[n]) for n in sizes}
        emit(measure="summary", **{f"jobs_{n}_s": medians[n] for n in sizes},
             largest_over_smallest=medians[sizes[-1]]["median"] / medians[sizes[0]]["median"])
    finally:
        supervisor.stop(api, grace_s=5)
        made = [*priority_lists(queue), f"_kombu.binding.{queue}", f"_kombu.binding_permanent.{queue}",
                *tenant_state_written(r, queue, "public")]
        for batch_id in batches:
            batch = BatchStore(store).get(batch_id)
            made += [keys.batch(batch_id), keys.batch_counts(batch_id)]
            made += [k for i in (batch.job_ids() if batch else []) for k in (keys.job(i), keys.events(i))]
        for start in range(0, len(made), 1000):
            r.unlink(*made[start:start + 1000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
