"""The marks an image gets on its way to storage: an invisible watermark in its pixels before the encode, and
Content Credentials on the encoded bytes after it (shared/watermark.py, shared/provenance.py).

Signing is retried as a storage fault is (`RideOut`'s policy: backoff with jitter, up to
GENFLEET_STORAGE_OUTAGE_S), then fails the job's write: an image is never stored unsigned while provenance is
on. Each failed attempt is counted (`genfleet_signing_failures_total`).
"""

from __future__ import annotations

import io
import logging

import tenacity
from PIL import Image

from genfleet.shared import metrics, watermark
from genfleet.shared.failpoints import failpoint
from genfleet.shared.provenance import MIME, Made, Signer, has_manifest
from genfleet.shared.schema import ImageOutput, Job
from genfleet.shared.settings import Settings
from genfleet.shared.signing import require
from genfleet.shared.storage import Storage

log = logging.getLogger(__name__)

C2PA = "c2pa"
WATERMARK = "watermark"


class SigningFailed(RuntimeError):
    """Signing still failed after the retry window."""


class Marker:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        credentials = require(settings)  # NoSigner where a worker must not start unsigned
        self.signer = Signer(credentials) if credentials is not None else None
        self._skip = settings.unwatermarked
        self._retry = tenacity.Retrying(
            stop=tenacity.stop_after_delay(settings.storage_outage_s),
            wait=tenacity.wait_exponential_jitter(multiplier=0.5, max=15.0), reraise=False,
            before_sleep=lambda state: log.warning("signing failed (%s); retrying",
                                                   state.outcome.exception() if state.outcome else None))

    def pixels(self, image: Image.Image, job: Job) -> tuple[Image.Image, list[str]]:
        """The image as stored, and the marks its pixels carry."""
        s = self.settings
        if not s.watermark or job.model in self._skip or not watermark.markable(image):
            return image, []
        return watermark.embed(image, s.watermark_payload), [WATERMARK]

    def sign(self, data: bytes, job: Job, output: ImageOutput, marks: list[str],
             ingredient: tuple[bytes, str] | None) -> bytes:
        """The encoded image with its Content Credentials (or as it is, with provenance off); `ingredient`: the
        job's input, from `ingredient`, read once for all its images."""
        if self.signer is None:
            return data
        made = Made(job.model, str(job.id), output.index, output.seed, marks,
                    job.request.prompt if self.settings.provenance_prompt else None, output.key.rsplit("/", 1)[-1])
        signer = self.signer

        def attempt() -> bytes:
            try:
                failpoint("write.sign")
                return signer.sign(data, job.request.output_format.content_type, made, ingredient)
            except Exception:
                metrics.SIGNING_FAILURES.labels(job.model).inc()
                raise

        try:
            return self._retry(attempt)
        except tenacity.RetryError as e:
            raise SigningFailed(f"signing: {e.last_attempt.exception()}") from e

    def marks(self, watermarked: list[str]) -> list[str]:
        return [*watermarked, *([C2PA] if self.signer is not None else [])]

    def ingredient(self, job: Job, storage: Storage) -> tuple[bytes, str] | None:
        """The job's input image, when provenance is on and it carries a manifest of its own (an earlier genfleet
        output, a camera's signed photo)."""
        key = job.request.image
        if key is None or self.signer is None:
            return None
        data = storage.get(key)
        with Image.open(io.BytesIO(data)) as im:
            mime = MIME.get(im.format or "")
        return (data, mime) if mime is not None and has_manifest(data, mime) else None
