"""`genfleet submit FILE`: prompts from a file to the API as batches, with a progress bar, optionally waiting
for the results and downloading the images.

A file of more than 10,000 prompts goes as several batches. Each batch is sent with an Idempotency-Key made
from its content, so running the same command again after a network error does not queue the work twice.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import httpx
from tqdm import tqdm

from genfleet.shared.batches import MAX_PROMPTS
from genfleet.shared.schema import TERMINAL


class SubmitError(Exception):
    pass


def read_prompts(path: Path) -> list:
    """`.jsonl`: one JSON string or {"prompt", "negative_prompt", "seed"} a line; anything else: one prompt a
    line (blank lines and lines starting with # are skipped)."""
    if not path.is_file():
        raise SubmitError(f"{path}: no such file")
    items: list = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip() or (path.suffix != ".jsonl" and line.lstrip().startswith("#")):
            continue
        if path.suffix == ".jsonl":
            try:
                items.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise SubmitError(f"{path}:{n}: not JSON: {e}") from None
        else:
            items.append(line.strip())
    if not items:
        raise SubmitError(f"{path}: no prompts in it")
    return items


class Client:
    def __init__(self, api: str, key: str | None, timeout_s: float = 60) -> None:
        headers = {"authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=api.rstrip("/"), headers=headers, timeout=timeout_s)

    def _check(self, r: httpx.Response) -> dict:
        if r.status_code >= 400:
            try:
                detail = r.json().get("detail")
            except ValueError:
                detail = r.text
            raise SubmitError(f"{r.request.method} {r.request.url.path}: {r.status_code} {json.dumps(detail)}")
        return r.json()

    def post_batch(self, prompts: list, params: dict) -> dict:
        body = {"prompts": prompts, "params": params}
        key = "submit-" + hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:32]
        return self._check(self.http.post("/v1/batches", json=body, headers={"idempotency-key": key}))

    def get(self, path: str) -> dict:
        return self._check(self.http.get(path))


def submit(path: Path, client: Client, params: dict) -> list[dict]:
    items = read_prompts(path)
    chunks = [items[i:i + MAX_PROMPTS] for i in range(0, len(items), MAX_PROMPTS)]
    return [client.post_batch(chunk, params) for chunk in tqdm(chunks, desc="submitting", unit="batch",
                                                               disable=len(chunks) == 1)]


def wait(client: Client, batches: list[dict], timeout_s: float) -> list[dict]:
    total = sum(b["total"] for b in batches)
    deadline = time.monotonic() + timeout_s
    with tqdm(total=total, desc="generating", unit="job") as bar:
        while True:
            batches = [client.get(f"/v1/batches/{b['id']}") for b in batches]
            finished = sum(sum(b["counts"][s] for s in TERMINAL)
                           for b in batches)
            bar.update(finished - bar.n)
            if all(b["status"] == "finished" for b in batches):
                return batches
            if time.monotonic() > deadline:
                raise SubmitError(f"not finished after {timeout_s:.0f}s ({finished}/{total} jobs)")
            time.sleep(1.0)


def download(client: Client, batches: list[dict], folder: Path) -> int:
    """Every image of every succeeded job, as FOLDER/{job_id}/{n}.png; returns how many."""
    count = 0
    for batch in batches:
        manifest = _fetch(batch["manifest_url"])
        jobs = [j for j in json.loads(manifest)["jobs"] if j["status"] == "succeeded"]
        for entry in tqdm(jobs, desc="downloading", unit="job"):
            job = client.get(f"/v1/jobs/{entry['id']}")
            for out in job["outputs"]:
                target = folder / out["key"]
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(_fetch(out["download_url"]))
                count += 1
    return count


def _fetch(link: str) -> bytes:
    """A presigned URL over HTTP, or a path on this machine (local storage)."""
    if link.startswith(("http://", "https://")):
        r = httpx.get(link, timeout=60)
        r.raise_for_status()
        return r.content
    with open(link, "rb") as f:
        return f.read()


