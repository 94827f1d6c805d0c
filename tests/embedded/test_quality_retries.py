"""Quality retries with the shipped embedded model: K = 3 attempts lift prompt adherence, and the record
shows every attempt. Runs through the worker's own plain functions (run_batch) with real Redis and storage.

The scorer chooses which attempt is kept, so the lift is graded by the judge (a rule over pixels that shares
nothing with the scorer, workers/embedded/judge.py); the scorer's own reading is printed beside it."""

import io

import torch
from PIL import Image

from genfleet.shared.schema import JobStatus
from genfleet.workers.embedded import judge
from genfleet.workers.embedded.data import Split, all_scenes
from genfleet.workers.embedded.scorer import load_scorer, scene_labels, to_tensor
from genfleet.workers.models import load_pipeline
from genfleet.workers.runner import run_batch
from tests.unit.test_batching import make_ctx, queued

# The 8 test pairs (held out, and looked at by no choice), where first attempts miss most, and 24 training
# prompts: cats with and without hats, hats alone
SCENES = all_scenes(Split.test) + all_scenes(Split.train)[::3][:24]


def adherence(ctx, jobs, scenes) -> dict[str, float]:
    """The share of kept images that show what was asked, by the judge and by the scorer."""
    images = [Image.open(io.BytesIO(ctx.storage.get(j.outputs[0].key))).convert("RGB") for j in jobs]
    cat, hat = load_scorer().predict(to_tensor(images))
    want = torch.tensor([scene_labels(s) for s in scenes])
    by_scorer = float(((cat.argmax(-1) == want[:, 0]) & (hat.argmax(-1) == want[:, 1])).float().mean())
    return {"judge": float(judge.verdicts(images, scenes).mean()), "scorer": by_scorer}


def test_three_attempts_lift_adherence_and_every_attempt_is_recorded(redis, tmp_path):
    pipe = load_pipeline("embedded", torch.device("cpu"))
    rates = {}
    for k in (1, 3):
        ctx = make_ctx(redis, tmp_path / f"k{k}", pipe, max_batch=32, quality_attempts=k)
        jobs = [queued(ctx.store, prompt=s.caption, seed=1000 + i, steps=None) for i, s in enumerate(SCENES)]
        done = {j.id: j for j in run_batch(jobs, ctx)}
        done = [done[j.id] for j in jobs]
        assert all(j.status is JobStatus.succeeded for j in done)
        rates[k] = adherence(ctx, done, SCENES)
        for job in done:
            out = job.outputs[0]
            assert 1 <= len(out.attempts) <= k and out.attempts[0].seed == job.seed
            assert out.seed in [a.seed for a in out.attempts] and out.score == max(a.score for a in out.attempts)
            assert all(a.reason for a in out.attempts[:-1])  # every retry was for a reason, recorded
            assert set(out.scores) == {"technical", "adherence"}
    for reader in ("judge", "scorer"):
        print(f"adherence by the {reader}: first attempt {rates[1][reader]:.3f}, 3 attempts {rates[3][reader]:.3f}")
    # The mechanism: retries raise the figure they choose by (0.967 -> 1.000 with the shipped weights). The outcome,
    # by the judge: at least the 0.97 target, never below the first attempts (1.000 -> 1.000 here: the judge
    # passes the first attempts the scorer failed; docs/embedded-model.md)
    assert rates[3]["scorer"] > rates[1]["scorer"]
    assert rates[3]["judge"] >= max(0.97, rates[1]["judge"])
