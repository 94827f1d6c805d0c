"""Image encoding with the job's provenance (PNG text chunks; EXIF's ImageDescription, as JSON, for JPEG and
WebP), and the manifest."""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genfleet.shared.schema import ImageOutput, Job, OutputFormat

LOSSY_QUALITY = 90  # JPEG and WebP: visually lossless for generated pictures, about a fifth of the PNG's bytes
EXIF_DESCRIPTION = 0x010E  # ImageDescription: a field every EXIF reader shows


def encoded(image: Image.Image, job: Job, out: ImageOutput, compress_level: int) -> bytes:
    """The image in the job's `output_format`, carrying prompt, seed, model and scores so a file alone says how
    it was made."""
    fields = provenance(job, out)
    buf = io.BytesIO()
    if job.request.output_format is OutputFormat.png:
        info = PngInfo()
        for key, value in fields.items():
            info.add_text(key, value)
        image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    else:
        exif = Image.Exif()
        exif[EXIF_DESCRIPTION] = json.dumps(fields)
        image.save(buf, format=job.request.output_format.value.upper(), quality=LOSSY_QUALITY, exif=exif)
    return buf.getvalue()


def provenance(job: Job, out: ImageOutput) -> dict[str, str]:
    req, score = job.request, out.score
    return dict((("prompt", req.prompt), ("negative_prompt", req.negative_prompt or ""),
                 ("seed", str(out.seed)), ("model", job.model),
                 ("score", "" if score is None else f"{score:.4f}"), ("scores", json.dumps(out.scores)),
                 ("job_id", str(job.id)), ("steps", "" if req.steps is None else str(req.steps)),
                 ("guidance", "" if req.guidance is None else str(req.guidance)),
                 ("scheduler", req.scheduler or ""), ("task", req.task.value),
                 ("image", req.image or ""), ("mask", req.mask or ""),
                 ("strength", "" if req.strength is None else str(req.strength)),
                 ("adapters", json.dumps([a.model_dump() for a in req.adapters])),
                 ("nsfw", "" if out.nsfw is None else str(out.nsfw).lower())))


def manifest_bytes(job: Job, outputs: list[ImageOutput]) -> bytes:
    body = {
        "job_id": str(job.id),
        "model": job.model,
        "seed": job.seed,
        "request": job.request.model_dump(mode="json"),
        "images": [o.model_dump(mode="json") for o in outputs],
    }
    return json.dumps(body, indent=2).encode()
