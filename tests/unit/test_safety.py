"""The safety flag's logic on a small checker built from config (workers/safety.py): flags recorded, images never
blacked out, each policy's effect, and a clear failure without weights."""

import numpy as np
import pytest
import torch
from PIL import Image

from genfleet.shared.errors import SafetyUnavailable
from genfleet.shared.settings import Safety
from genfleet.workers.quality import Candidate
from genfleet.workers.results import Failed, Ok
from genfleet.workers.safety import Flagged, SafetyChecker, check
from genfleet.workers.sampling import ImageSpec
from tests.helpers import make_safety_checker

CPU = torch.device("cpu")


def pictures(n: int) -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)) for _ in range(n)]


def results_of(images: list[Image.Image]) -> list[Ok[list[Candidate]] | Failed]:
    slots = [Candidate(ImageSpec("a cat", None, n), image=im) for n, im in enumerate(images)]
    return [Ok(slots[:2]), Failed(RuntimeError("sampling failed")), Ok(slots[2:])]


@pytest.mark.parametrize("flags", [True, False])
def test_the_checker_flags_without_touching_the_images(tmp_path, flags):
    checker = SafetyChecker(str(make_safety_checker(tmp_path, flags)), CPU)
    images = pictures(3)
    before = [im.tobytes() for im in images]
    assert checker.flags(images) == [flags] * 3
    assert [im.tobytes() for im in images] == before  # the checker's black-out never reaches them


def test_policies(tmp_path):
    checker = SafetyChecker(str(make_safety_checker(tmp_path, flags=True)), CPU)
    kept = check(results_of(pictures(3)), checker, Safety.separate)
    assert [s.nsfw for r in kept if isinstance(r, Ok) for s in r.value] == [True, True, True]
    assert isinstance(kept[1], Failed)  # a job that had already failed stays as it was

    failed = check(results_of(pictures(3)), checker, Safety.fail)
    assert all(isinstance(r, Failed) for r in failed)
    assert isinstance(failed[0].error, Flagged) and "image(s) [0, 1]" in str(failed[0].error)
    assert isinstance(failed[2].error, Flagged) and "image(s) [0]" in str(failed[2].error)

    unchecked = check(results_of(pictures(3)), checker, Safety.off)
    assert [s.nsfw for r in unchecked if isinstance(r, Ok) for s in r.value] == [None, None, None]


def test_without_weights_every_job_of_the_group_fails_saying_so(tmp_path):
    checker = SafetyChecker(str(tmp_path / "nowhere"), CPU)
    checked = check(results_of(pictures(3)), checker, Safety.keep)
    assert isinstance(checked[0], Failed) and isinstance(checked[0].error, SafetyUnavailable)
    assert "GENFLEET_SAFETY_CHECKER" in checked[0].reason and isinstance(checked[2], Failed)
