"""Content Credentials signed with c2pa-python and read back with its own Reader; the signer rules; the
watermark's survival. No process, no network: signing is local."""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from PIL import Image

from genfleet.shared import watermark
from genfleet.shared.provenance import GENERATION, TRAINED, Made, Signer, read
from genfleet.shared.settings import Settings
from genfleet.shared.signing import NoSigner, development, require
from tests.provenance_helpers import blocks, encoded, one_pixel_changed

pytestmark = pytest.mark.unit
PAYLOAD = "67656e666c74"


@pytest.fixture(scope="module")
def dev(tmp_path_factory):
    return development(tmp_path_factory.mktemp("data") / "provenance")


@pytest.mark.parametrize(("fmt", "mime"), [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("WEBP", "image/webp")])
def test_a_signed_image_validates_and_says_what_made_it(dev, fmt, mime):
    made = Made("embedded", "job-1", 0, 42, ["watermark"], title=f"0.{fmt.lower()}")
    signed = Signer(dev).sign(encoded(blocks(64), fmt), mime, made)
    report = read(signed, mime, [dev.ca])
    assert report.present and report.valid and report.state == "Trusted", report
    created = report.assertions["c2pa.actions.v2"]["actions"][0]
    assert created["action"] == "c2pa.created" and created["digitalSourceType"] == TRAINED
    assert report.assertions[GENERATION] == {"model": "embedded", "job_id": "job-1", "image": 0, "seed": 42,
                                             "marks": ["watermark"]}  # no prompt unless allowed
    assert report.signer["issuer"].startswith("genfleet development")
    assert read(signed, mime).state == "Valid"  # a reader not told to trust the development CA
    assert Image.open(io.BytesIO(signed)).size == (64, 64)


def test_one_changed_pixel_fails_validation(dev):
    signed = Signer(dev).sign(encoded(blocks(64)), "image/png", Made("embedded", "j", 0, 1, []))
    forged = read(one_pixel_changed(signed), "image/png", [dev.ca])
    assert forged.present and not forged.valid and forged.state == "Invalid"
    assert "assertion.dataHash.mismatch" in forged.failures


def test_an_input_with_a_manifest_is_named_as_an_ingredient_and_the_prompt_only_when_allowed(dev):
    signer = Signer(dev)
    first = signer.sign(encoded(blocks(64)), "image/png", Made("embedded", "a", 0, 1, []))
    second = signer.sign(encoded(blocks(64, seed=1)), "image/png",
                         Made("embedded", "b", 0, 2, [], prompt="a red cat"), ingredient=(first, "image/png"))
    report = read(second, "image/png", [dev.ca])
    assert report.valid and [i["relationship"] for i in report.ingredients] == ["inputTo"]
    assert report.assertions[GENERATION]["prompt"] == "a red cat"
    assert read(encoded(blocks(64)), "image/png").present is False


def test_one_signer_signs_from_many_threads_at_once(dev):
    """Each thread keeps a native signer of its own (shared/provenance.py): four threads signing at once, eight
    images each, all validate and each names its own job."""
    signer = Signer(dev)

    def sign_eight(thread: int) -> list[tuple[str, bytes]]:
        return [(f"{thread}-{i}", signer.sign(encoded(blocks(64, seed=i)), "image/png",
                                              Made("embedded", f"{thread}-{i}", 0, i, []))) for i in range(8)]

    with ThreadPoolExecutor(4) as pool:
        signed = [item for batch in pool.map(sign_eight, range(4)) for item in batch]
    for job_id, data in signed:
        report = read(data, "image/png", [dev.ca])
        assert report.state == "Trusted" and report.assertions[GENERATION]["job_id"] == job_id


def test_who_signs(tmp_path):
    external = {"redis_url": "redis://redis:6379/0", "data_dir": tmp_path}
    assert require(Settings(**external, provenance="off")) is None
    with pytest.raises(NoSigner, match="GENFLEET_SIGNING_CERTS"):
        require(Settings(**external))  # production, no signer: the worker does not start
    assert require(Settings(**external, provenance="dev")).development
    assert require(Settings(data_dir=tmp_path)).development  # the embedded default
    made = development(tmp_path / "made")
    (tmp_path / "chain.pem").write_bytes(made.certs)
    (tmp_path / "key.pem").write_bytes(made.key)
    given = require(Settings(**external, signing_certs=tmp_path / "chain.pem", signing_key=tmp_path / "key.pem"))
    assert given is not None and not given.development and given.key == made.key
    with pytest.raises(NoSigner, match="both"):
        require(Settings(**external, signing_key=tmp_path / "key.pem"))


def test_a_key_that_is_not_the_certificates_fails_to_sign(dev):
    other = ec.generate_private_key(ec.SECP256R1()).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with pytest.raises(Exception, match="signature"):
        Signer(type(dev)(dev.certs, other)).sign(encoded(blocks(64)), "image/png", Made("m", "j", 0, 1, []))


def test_the_watermark_survives_a_jpeg_and_a_halving_and_is_not_found_where_it_is_not():
    picture = blocks(512)
    marked = watermark.embed(picture, PAYLOAD)
    stored = watermark.detect(Image.open(io.BytesIO(encoded(marked))), PAYLOAD)
    assert stored is not None and stored.bit_accuracy == 1.0 and stored.payload == PAYLOAD
    jpeg = watermark.detect(Image.open(io.BytesIO(encoded(marked, "JPEG", quality=75))), PAYLOAD)
    assert jpeg is not None and jpeg.detected, jpeg
    halved = watermark.detect(marked.resize((256, 256), Image.Resampling.BICUBIC), PAYLOAD)
    assert halved is not None and halved.detected and halved.scale == 2, halved
    clean = watermark.detect(picture, PAYLOAD)
    assert clean is not None and not clean.detected, clean
    assert watermark.embed(blocks(64), PAYLOAD) is not None and not watermark.markable(blocks(64))
    assert watermark.detect(blocks(64), PAYLOAD) is None  # too small to carry one, or to read

