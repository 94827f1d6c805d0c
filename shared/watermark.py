"""An invisible watermark in the pixels: it survives what strips a manifest (a re-encode, a screenshot).

`invisible-watermark`, the package SDXL's diffusers pipeline uses, with its `dwtDctSvd` method rather than the
`dwtDct` SDXL uses: on SD-size pictures (docs/provenance.md) `dwtDct` read back 0.88 of its bits from a lossless
copy and chance (0.49) after JPEG at quality 75, `dwtDctSvd` 1.0 and 0.82 to 0.84, for 1.4 to 2.5 times its CPU.
The payload is 48 bits (`GENFLEET_WATERMARK_PAYLOAD`, hex). The package refuses pictures under 256x256 pixels,
so smaller ones (the embedded model's 64x64) carry no watermark, and their record says so.

Reading it back, `detect` also tries the picture scaled up twice: a picture halved after marking reads as chance
at its own size (0.5) and 0.97 to 0.99 scaled back. Two tries barely raise the odds of a false match: an
unmarked picture matches a 48-bit payload in 36 bits or more (`DETECTED`) about 3 times in 10,000 a try.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

METHOD = "dwtDctSvd"
MIN_PIXELS = 256 * 256  # what the package takes
DETECTED = 0.75  # bit accuracy at or above which a payload counts as found
SCALES = (1, 2)


def bits(payload_hex: str) -> list[int]:
    return [int(b) for b in np.unpackbits(np.frombuffer(bytes.fromhex(payload_hex), np.uint8))]


def markable(image: Image.Image) -> bool:
    return image.width * image.height >= MIN_PIXELS


def embed(image: Image.Image, payload_hex: str) -> Image.Image:
    """`image` with the payload in its pixels (RGB); unchanged when it is too small to carry one."""
    if not markable(image):
        return image
    from imwatermark import WatermarkEncoder  # the worker extra: an API without it can still read manifests

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", bits(payload_hex))
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"))[:, :, ::-1])
    return Image.fromarray(np.ascontiguousarray(encoder.encode(bgr, METHOD)[:, :, ::-1]))


@dataclass(frozen=True)
class Reading:
    payload: str  # hex, as read
    bit_accuracy: float  # the share of the expected payload's bits read back
    scale: int  # the picture was read scaled up this many times

    @property
    def detected(self) -> bool:
        return self.bit_accuracy >= DETECTED


def detect(image: Image.Image, payload_hex: str) -> Reading | None:
    """The best reading of the expected payload at each of `SCALES`; None when the picture is too small."""
    from imwatermark import WatermarkDecoder

    expected = np.array(bits(payload_hex))
    best: Reading | None = None
    for scale in SCALES:
        seen = image if scale == 1 else image.resize((image.width * scale, image.height * scale),
                                                     Image.Resampling.BICUBIC)
        if not markable(seen):
            continue
        bgr = np.ascontiguousarray(np.asarray(seen.convert("RGB"))[:, :, ::-1])
        read = np.array(WatermarkDecoder("bits", len(expected)).decode(bgr, METHOD), dtype=np.uint8)
        reading = Reading(np.packbits(read).tobytes().hex(), float(np.mean(read == expected)), scale)
        if best is None or reading.bit_accuracy > best.bit_accuracy:
            best = reading
    return best
