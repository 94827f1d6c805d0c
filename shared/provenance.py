"""C2PA Content Credentials: a signed manifest in every stored image, and reading one back.

Signed with the official `c2pa-python` bindings, after the image's final encode (a re-encode strips a manifest)
and before its upload, so an image is never stored unsigned while provenance is on. The manifest says:
- a `c2pa.created` action whose digitalSourceType is `trainedAlgorithmicMedia` (what EU AI Act Article 50's
  machine-readable marking asks of generated images), its softwareAgent the model;
- the generator, genfleet and its version (`claim_generator_info`);
- `org.genfleet.generation`: the model, the job, the seed, the marks the pixels carry, and the prompt only when
  GENFLEET_PROVENANCE_PROMPT allows it (prompts can be private);
- for image-to-image and inpainting, an input that carries a manifest of its own, as an `inputTo` ingredient.

No thumbnail is embedded (C2PA's default adds one: 30 KB on a 64x64 PNG).
"""

from __future__ import annotations

import functools
import io
import json
import threading
from dataclasses import dataclass
from importlib import metadata
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from genfleet.shared.signing import Credentials

if TYPE_CHECKING:  # imported where used: a worker with provenance off runs without the c2pa-python wheel (16 MB)
    import c2pa

TRAINED = "http://cv.iptc.org/newscodes/digitalsourcetype/trainedAlgorithmicMedia"
GENERATION = "org.genfleet.generation"
MIME = {"PNG": "image/png", "JPEG": "image/jpeg", "WEBP": "image/webp"}


@dataclass(frozen=True)
class Made:
    """What a manifest says of one image."""

    model: str
    job_id: str
    index: int
    seed: int
    marks: list[str]  # what else the image carries: `watermark`
    prompt: str | None = None  # only where the settings allow it
    title: str = ""


def _context(trust: list[bytes] | None = None) -> c2pa.Context:
    import c2pa

    settings: dict[str, Any] = {"builder": {"thumbnail": {"enabled": False}}}
    if trust:
        settings["trust"] = {"trust_anchors": b"".join(trust).decode()}
        settings["verify"] = {"verify_trust": True}
    return c2pa.Context(c2pa.Settings.from_dict(settings))


@functools.cache
def _version() -> str:
    """genfleet's version, read once: importlib.metadata parses the package's METADATA on every call (1.2 ms, most
    of what a manifest cost beside its signature)."""
    return metadata.version("genfleet")


def manifest(made: Made) -> dict[str, Any]:
    generation = {"model": made.model, "job_id": made.job_id, "image": made.index, "seed": made.seed,
                  "marks": made.marks, **({"prompt": made.prompt} if made.prompt is not None else {})}
    return {"claim_generator_info": [{"name": "genfleet", "version": _version()}],
            "title": made.title,
            "assertions": [
                {"label": "c2pa.actions", "data": {"actions": [{
                    "action": "c2pa.created", "digitalSourceType": TRAINED, "softwareAgent": {"name": made.model}}]}},
                {"label": GENERATION, "data": generation}]}


class Signer:
    """Signs encoded images with one signer's credentials. Thread-safe: each thread keeps a native signer of its
    own, made on its first image (parsing the key and chain is about a sixth of a signature's CPU)."""

    def __init__(self, credentials: Credentials) -> None:
        self.credentials = credentials
        self._context = _context()
        self._local = threading.local()

    def _native(self) -> c2pa.Signer:
        import c2pa

        native: c2pa.Signer | None = getattr(self._local, "signer", None)
        if native is None:
            creds = self.credentials
            native = self._local.signer = c2pa.Signer.from_info(
                c2pa.C2paSignerInfo(creds.alg.encode(), creds.certs, creds.key, None))
        return native

    def sign(self, data: bytes, mime: str, made: Made, ingredient: tuple[bytes, str] | None = None) -> bytes:
        """`data` (an encoded image of type `mime`) with its manifest; `ingredient`: an input (bytes, mime) that
        carries a manifest of its own. Raises c2pa.C2paError when signing fails."""
        import c2pa

        builder = c2pa.Builder(json.dumps(manifest(made)), context=self._context)
        if ingredient is not None:
            builder.add_ingredient({"title": "input", "relationship": "inputTo"}, ingredient[1],
                                   io.BytesIO(ingredient[0]))
        out = io.BytesIO()
        try:
            builder.sign(self._native(), mime, io.BytesIO(data), out)
        except c2pa.C2paError:
            self._local.signer = None  # a signer in a bad state is not kept: the retry makes a new one
            raise
        return out.getvalue()


class ManifestReport(BaseModel):
    present: bool
    valid: bool = False  # its signature and its hashes of the image hold (Valid or Trusted)
    state: str | None = None  # C2PA's: Invalid, Valid, or Trusted (Valid, and signed under a trusted root)
    signer: dict[str, Any] | None = None  # issuer, common name, algorithm, as the signature says
    assertions: dict[str, Any] = {}  # by label
    ingredients: list[dict[str, Any]] = []
    failures: list[str] = []  # C2PA's codes for what did not hold (`signingCredential.untrusted`: an unknown root)
    error: str | None = None


def read(data: bytes, mime: str, trust: list[bytes] | None = None) -> ManifestReport:
    """The manifest `data` carries, validated; `trust`: PEM roots whose signers read as Trusted."""
    import c2pa

    try:
        reader = c2pa.Reader(mime, io.BytesIO(data), context=_context(trust))
    except c2pa.C2paError as e:
        if "ManifestNotFound" in type(e).__name__ or "not found" in str(e).lower():
            return ManifestReport(present=False)
        return ManifestReport(present=False, error=f"{type(e).__name__}: {e}")
    active = reader.get_active_manifest() or {}
    results = reader.get_validation_results() or {}
    failures = [f.get("code", "") for f in (results.get("activeManifest") or {}).get("failure", [])]
    state = reader.get_validation_state()
    return ManifestReport(present=True, valid=state in ("Valid", "Trusted"), state=state,
                          signer=active.get("signature_info"),
                          assertions={a["label"]: a.get("data") for a in active.get("assertions", [])},
                          ingredients=active.get("ingredients", []), failures=failures)


def has_manifest(data: bytes, mime: str) -> bool:
    return read(data, mime).present
