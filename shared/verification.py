"""What an image says of where it came from: its Content Credentials, validated, and the watermark in its
pixels. `genfleet verify FILE_OR_URL` and `POST /v1/verify` answer with this report.

The manifest reads as Trusted when its signer chains to a root the settings trust (GENFLEET_TRUST_ANCHORS, and
the development CA this machine made, if any), Valid when its signature and hashes hold under another root, and
Invalid when they do not (one changed pixel breaks its hash of the image).
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError
from pydantic import BaseModel

from genfleet.shared.provenance import MIME, ManifestReport, read
from genfleet.shared.settings import Settings
from genfleet.shared.signing import DEV_FOLDER


class WatermarkReport(BaseModel):
    checked: bool
    detected: bool = False  # bit accuracy at or above shared/watermark.py's DETECTED (0.75)
    payload: str | None = None  # hex, as read
    expected: str | None = None  # the payload this server writes (GENFLEET_WATERMARK_PAYLOAD)
    bit_accuracy: float | None = None
    scale: int | None = None  # read at this many times the picture's size
    reason: str | None = None  # why it was not checked


class Verification(BaseModel):
    format: str
    width: int
    height: int
    manifest: ManifestReport
    watermark: WatermarkReport


class NotAnImage(ValueError):
    pass


def trust_anchors(settings: Settings) -> list[bytes]:
    found = [settings.trust_anchors.read_bytes()] if settings.trust_anchors else []
    dev = settings.data_dir / DEV_FOLDER / "ca.pem"
    return [*found, dev.read_bytes()] if dev.exists() else found


def _watermark(image: Image.Image, settings: Settings) -> WatermarkReport:
    try:  # numpy, OpenCV and the package come with the worker extra; the API's slim image may lack them
        from genfleet.shared import watermark

        reading = watermark.detect(image, settings.watermark_payload)
    except ImportError:
        return WatermarkReport(checked=False, reason="invisible-watermark is not installed here (the worker extra)")
    if reading is None:
        return WatermarkReport(checked=False, reason=f"{image.width}x{image.height} is under the "
                                                     f"{watermark.MIN_PIXELS} pixels a watermark needs, even at 2x")
    return WatermarkReport(checked=True, detected=reading.detected, payload=reading.payload,
                           expected=settings.watermark_payload.lower(), bit_accuracy=reading.bit_accuracy,
                           scale=reading.scale)


def verify(data: bytes, settings: Settings) -> Verification:
    """The report on `data`, a PNG, JPEG or WebP; NotAnImage for anything else."""
    try:
        with Image.open(io.BytesIO(data)) as im:
            fmt, mime = im.format or "", MIME.get(im.format or "")
            if mime is None:
                raise NotAnImage(f"a {fmt or 'unknown'} image; send PNG, JPEG or WebP")
            im.load()
            image = im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        raise NotAnImage(f"not an image this server can read ({e})") from None
    return Verification(format=fmt.lower(), width=image.width, height=image.height,
                        manifest=read(data, mime, trust_anchors(settings)), watermark=_watermark(image, settings))
