"""PNG encoding with the job's provenance in text chunks, and the manifest."""

from __future__ import annotations

import io
import json

from PIL import Image
from PIL.PngImagePlugin import PngInfo

from genfleet.shared.schema import ImageOutput, Job


def png_bytes(image: Image.Image, job: Job, out: ImageOutput, compress_level: int) -> bytes:
    """The PNG, carrying prompt, seed, model and scores so a file alone says how it was made."""
    info = PngInfo()
    req, score = job.request, out.score
    for key, value in (("prompt", req.prompt), ("negative_prompt", req.negative_prompt or ""),
                       ("seed", str(out.seed)), ("model", job.model),
                       ("score", "" if score is None else f"{score:.4f}"), ("scores", json.dumps(out.scores)),
                       ("job_id", str(job.id)), ("steps", "" if req.steps is None else str(req.steps)),
                       ("guidance", "" if req.guidance is None else str(req.guidance)),
                       ("scheduler", req.scheduler or ""), ("task", req.task.value),
                       ("image", req.image or ""), ("mask", req.mask or ""),
                       ("strength", "" if req.strength is None else str(req.strength)),
                       ("adapters", json.dumps([a.model_dump() for a in req.adapters])),
                       ("nsfw", "" if out.nsfw is None else str(out.nsfw).lower())):
        info.add_text(key, value)
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info, compress_level=compress_level)
    return buf.getvalue()


def manifest_bytes(job: Job, outputs: list[ImageOutput]) -> bytes:
    body = {
        "job_id": str(job.id),
        "model": job.model,
        "seed": job.seed,
        "request": job.request.model_dump(mode="json"),
        "images": [o.model_dump(mode="json") for o in outputs],
    }
    return json.dumps(body, indent=2).encode()
