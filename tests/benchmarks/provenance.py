"""What provenance costs and how well the watermark holds, on SD-size pictures.

    python -m tests.benchmarks.provenance [--sides 256,512,768,1024] [--pictures 4] [--rounds 5] [--sd15]

Pictures: the embedded model's outputs scaled up (bicubic) to each side, the hard case for a DCT watermark
(flat colours), and with `--sd15` Stable Diffusion 1.5's architecture with random weights at 512x512 (its
pictures are noise). For each side, the watermark's bit accuracy (shared/watermark.py, read by its own decoder
against the payload written; the decoder never sees the original) as stored (PNG), after JPEG at quality 75, and
after a 0.5x resize, and of the unmarked picture; then the CPU seconds per image, by the process clock, of the
watermark and of signing (PNG and JPEG), in `--rounds` rounds that interleave them. One JSON line each; the
summary gives medians with min and max over the rounds.
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from PIL import Image

from genfleet.shared import watermark
from genfleet.shared.provenance import Made, Signer
from genfleet.shared.signing import development
from genfleet.workers.models import load_pipeline

PAYLOAD = "67656e666c74"
PROMPTS = ["a red cat with a blue hat", "a green cat with a yellow hat", "a blue cat with a red hat",
           "a yellow cat with a green hat", "a purple cat with an orange hat", "an orange cat with a purple hat"]


def embedded_pictures(n: int) -> list[Image.Image]:
    pipe = load_pipeline("embedded", torch.device("cpu"))
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    return list(pipe(prompt=prompts, generator=[torch.Generator().manual_seed(i) for i in range(n)]).images)


def sd15_pictures(n: int, cache: Path) -> list[Image.Image]:
    from genfleet.workers.architectures import save

    pipe = load_pipeline(str(save("sd15", cache / "sd15")), torch.device("cpu"))
    return list(pipe(prompt=PROMPTS[:n], num_inference_steps=1, guidance_scale=0.0,
                     generator=[torch.Generator().manual_seed(i) for i in range(n)]).images)


def encoded(image: Image.Image, fmt: str, **options) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format=fmt, **options)
    return buf.getvalue()


def accuracy(image: Image.Image) -> float | None:
    reading = watermark.detect(image, PAYLOAD)
    return None if reading is None else reading.bit_accuracy


def holds(pictures: list[Image.Image], source: str, side: int) -> dict:
    """Mean bit accuracy over the pictures, each way."""
    ways: dict[str, list[float | None]] = {"stored": [], "jpeg75": [], "half": [], "unmarked": []}
    for picture in pictures:
        sized = picture.resize((side, side), Image.Resampling.BICUBIC) if picture.size != (side, side) else picture
        marked = watermark.embed(sized, PAYLOAD)
        ways["stored"].append(accuracy(Image.open(io.BytesIO(encoded(marked, "PNG")))))
        ways["jpeg75"].append(accuracy(Image.open(io.BytesIO(encoded(marked, "JPEG", quality=75)))))
        ways["half"].append(accuracy(marked.resize((side // 2, side // 2), Image.Resampling.BICUBIC)))
        ways["unmarked"].append(accuracy(sized))
    mean = {k: round(statistics.mean(v), 3) if None not in v else None for k, v in ways.items()}
    return {"measure": "watermark", "pictures": source, "side": side, "n": len(pictures), **mean,
            "detected_jpeg75": sum(1 for a in ways["jpeg75"] if a is not None and a >= watermark.DETECTED)}


def cpu_per_image(fn, images: list) -> float:
    start = time.process_time()
    for image in images:
        fn(image)
    return (time.process_time() - start) / len(images)


def costs(pictures: list[Image.Image], side: int, signer: Signer, rounds: int) -> dict[str, list[float]]:
    sized = [p.resize((side, side), Image.Resampling.BICUBIC) for p in pictures]
    pngs, jpegs = [encoded(p, "PNG", compress_level=1) for p in sized], [encoded(p, "JPEG", quality=90) for p in sized]
    made = Made("embedded", "bench", 0, 0, [])
    steps = {"watermark_s": lambda: cpu_per_image(lambda p: watermark.embed(p, PAYLOAD), sized),
             "sign_png_s": lambda: cpu_per_image(lambda d: signer.sign(d, "image/png", made), pngs),
             "sign_jpeg_s": lambda: cpu_per_image(lambda d: signer.sign(d, "image/jpeg", made), jpegs),
             "encode_png_s": lambda: cpu_per_image(lambda p: encoded(p, "PNG", compress_level=1), sized)}
    found: dict[str, list[float]] = {name: [] for name in steps}
    for n in range(rounds):
        order = list(steps)[n % len(steps):] + list(steps)[:n % len(steps)]
        row = {name: steps[name]() for name in order}
        for name, value in row.items():
            found[name].append(value)
        print(json.dumps({"measure": "cpu", "side": side, "round": n, **row}), flush=True)
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sides", default="256,512,768,1024")
    ap.add_argument("--pictures", type=int, default=4)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--sd15", action="store_true", help="also SD 1.5's architecture, random weights, at 512")
    ap.add_argument("--cache", type=Path, default=Path(".genfleet/models"))
    args = ap.parse_args()
    sides = [int(s) for s in args.sides.split(",")]
    pictures = embedded_pictures(args.pictures)
    for side in sides:
        print(json.dumps(holds(pictures, "embedded, scaled up", side)), flush=True)
    if args.sd15:
        print(json.dumps(holds(sd15_pictures(args.pictures, args.cache), "sd15 random weights", 512)), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        signer = Signer(development(Path(tmp)))
        for side in sides:
            found = costs(pictures, side, signer, args.rounds)
            print(json.dumps({"measure": "cpu_summary", "side": side, **{
                name: {"median": statistics.median(v), "min": min(v), "max": max(v)} for name, v in found.items()}}),
                flush=True)


if __name__ == "__main__":
    main()
