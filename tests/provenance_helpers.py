"""What the provenance tests share: signing settings, pictures, and a PNG whose pixels changed under its
manifest."""

from __future__ import annotations

import io
import struct

import numpy as np
from PIL import Image


def blocks(side: int, seed: int = 0) -> Image.Image:
    """A picture of flat colour blocks, 8 to a side: as hard on a DCT watermark as generated pictures get."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, (8, 8, 3))
    return Image.fromarray(np.kron(colours, np.ones((side // 8, side // 8, 1))).astype(np.uint8))


def encoded(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    """(type, whole chunk) of each chunk of a PNG."""
    found, i = [], 8
    while i < len(png):
        (length,) = struct.unpack(">I", png[i:i + 4])
        found.append((png[i + 4:i + 8], png[i:i + 12 + length]))
        i += 12 + length
    return found


def one_pixel_changed(signed_png: bytes) -> bytes:
    """The signed PNG with one pixel changed and its manifest (the `caBX` chunk) kept, as a forger would try."""
    image = Image.open(io.BytesIO(signed_png)).convert("RGB")
    x, y = image.width // 2, image.height // 2
    r, g, b = image.getpixel((x, y))  # type: ignore[misc]
    image.putpixel((x, y), (255 - r, g, b))
    plain = _chunks(encoded(image))
    manifest = b"".join(raw for kind, raw in _chunks(signed_png) if kind == b"caBX")
    assert manifest, "the signed PNG carries no manifest chunk"
    return signed_png[:8] + plain[0][1] + manifest + b"".join(raw for _, raw in plain[1:])
