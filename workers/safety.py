"""The safety flag: diffusers' `StableDiffusionSafetyChecker` marks each kept image `nsfw: true` or `false` in the
job's record, its PNG and its manifest, and never blacks it out (the checker's own forward zeroes what it flags:
it is handed throwaway arrays, and only its flags are read).

`GENFLEET_SAFETY` says what a flag does (`Safety` in shared/settings.py): `off` (the default), `keep`, `separate`
(under `flagged/`, so a bucket policy can keep flagged images apart) or `fail`.

The checker loads from `GENFLEET_SAFETY_CHECKER` (a folder, or a Hugging Face id already in the local cache), on
first use; it is never downloaded. Without its weights, a job that needs it fails saying so: a fleet told to
check images does not pass unchecked ones.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch
from PIL import Image

from genfleet.shared.errors import SafetyUnavailable
from genfleet.shared.settings import Safety
from genfleet.workers.quality import Candidate
from genfleet.workers.results import Failed, Ok

log = logging.getLogger(__name__)


class Flagged(Exception):
    """A job under the `fail` policy with images the checker flagged."""


class SafetyChecker:
    def __init__(self, source: str, device: torch.device) -> None:
        self.source, self.device = source, device
        self._checker: Any = None
        self._processor: Any = None

    def _load(self) -> None:
        if self._checker is not None:
            return
        from diffusers.pipelines.stable_diffusion.safety_checker import StableDiffusionSafetyChecker
        from transformers import CLIPImageProcessor

        try:
            checker = StableDiffusionSafetyChecker.from_pretrained(self.source, local_files_only=True)
            self._processor = CLIPImageProcessor.from_pretrained(self.source, local_files_only=True)
        except OSError as e:
            raise SafetyUnavailable(f"no safety checker weights at {self.source!r} (GENFLEET_SAFETY_CHECKER; never "
                                    f"downloaded): {str(e).splitlines()[0]}") from e
        self._checker = checker.to(self.device).eval()
        log.info("safety checker loaded from %s", self.source)

    @torch.no_grad()
    def flags(self, images: list[Image.Image]) -> list[bool]:
        """Whether the checker flags each image; the images are not touched."""
        self._load()
        pixels = self._processor(images=[im.convert("RGB") for im in images], return_tensors="pt").pixel_values
        throwaway = [np.zeros((1, 1, 3)) for _ in images]  # what the checker would black out
        _, nsfw = self._checker(clip_input=pixels.to(self.device, self._checker.dtype), images=throwaway)
        return [bool(f) for f in nsfw]


def check(results: list[Ok[list[Candidate]] | Failed], checker: SafetyChecker, policy: Safety
          ) -> list[Ok[list[Candidate]] | Failed]:
    """Flags the kept image of every slot, in one checker call for the group; under `fail`, a job with a flagged
    image becomes `Failed`. Without the checker, every job of the group fails with the reason."""
    slots = [s for r in results if isinstance(r, Ok) for s in r.value]
    if policy is Safety.off or not slots:
        return results
    try:
        flags = checker.flags([s.image for s in slots])  # type: ignore[misc]  # every slot holds an image by now
    except SafetyUnavailable as e:
        log.error("%s", e)
        return [Failed(e) if isinstance(r, Ok) else r for r in results]
    for slot, flag in zip(slots, flags, strict=True):
        slot.nsfw = flag
    if policy is not Safety.fail:
        return results
    checked: list[Ok[list[Candidate]] | Failed] = []
    for r in results:
        flagged = [n for n, s in enumerate(r.value) if s.nsfw] if isinstance(r, Ok) else []
        checked.append(Failed(Flagged(f"the safety checker flagged image(s) {flagged}; nothing was stored "
                                      "(GENFLEET_SAFETY=fail)")) if flagged else r)
    return checked
