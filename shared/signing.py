"""Who signs the Content Credentials: a private key and its certificate chain, from settings or, for development
only, made here.

- `GENFLEET_SIGNING_CERTS` and `GENFLEET_SIGNING_KEY`: PEM files (a Kubernetes secret mounted as files), or
  `GENFLEET_SIGNING_CERTS_PEM` and `GENFLEET_SIGNING_KEY_PEM`: the PEM text itself (a secret in the environment).
  The chain is the signer's certificate first, then its issuers. `GENFLEET_SIGNING_ALG` names the key's
  algorithm as C2PA does (`es256` for a P-256 key, the default; `es384`, `ps256`, `ed25519`…).
- With none of them, `GENFLEET_PROVENANCE=dev` (and `on` on the embedded default: `GENFLEET_REDIS_URL` unset,
  or genfleet's own embedded server, as `genfleet up` and `genfleet bench` start it) makes a development CA and
  signer under `{data_dir}/provenance/` on first use, and says plainly that it is for development: a reader
  trusts it only when told to (`ca.pem`). Anywhere else, `on` with no signer stops the worker as it starts
  (`require`), rather than storing images nobody can trust.
"""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from genfleet.shared.redis_server import socket_path
from genfleet.shared.settings import Provenance, Settings

log = logging.getLogger(__name__)

DEV_ORGANISATION = "genfleet development (not for production)"
DEV_FOLDER = "provenance"  # under data_dir: ca.pem, chain.pem, key.pem


class NoSigner(RuntimeError):
    """Provenance is on, and no signer is configured."""


@dataclass(frozen=True)
class Credentials:
    certs: bytes  # PEM: the signer's certificate, then its issuers
    key: bytes  # PEM private key
    alg: str = "es256"
    development: bool = False
    ca: bytes | None = None  # the development CA, for readers told to trust it


def configured(settings: Settings) -> Credentials | None:
    """The signer the settings name (files, or PEM text), or None."""
    certs = settings.signing_certs.read_bytes() if settings.signing_certs else None
    key = settings.signing_key.read_bytes() if settings.signing_key else None
    if settings.signing_certs_pem is not None:
        certs = settings.signing_certs_pem.get_secret_value().encode()
    if settings.signing_key_pem is not None:
        key = settings.signing_key_pem.get_secret_value().encode()
    if certs is None and key is None:
        return None
    if certs is None or key is None:
        raise NoSigner("a signing key needs its certificate chain, and a chain its key: set both")
    return Credentials(certs, key, settings.signing_alg)


def require(settings: Settings) -> Credentials | None:
    """The signer a worker uses: None when provenance is off; a development one where allowed; else NoSigner."""
    if settings.provenance is Provenance.off:
        return None
    given = configured(settings)
    if given is not None:
        return given
    if settings.provenance is Provenance.dev or embedded_default(settings):
        return development(settings.data_dir / DEV_FOLDER)
    raise NoSigner("provenance is on and no signer is configured: set GENFLEET_SIGNING_CERTS and "
                   "GENFLEET_SIGNING_KEY (or their _PEM forms), or GENFLEET_PROVENANCE=off to store images "
                   "without Content Credentials (or =dev for a development signer)")


def embedded_default(settings: Settings) -> bool:
    """Whether this runs on the embedded default: no Redis named, or genfleet's own embedded server."""
    url = settings.redis_url
    return url is None or url == f"unix://{socket_path(settings.data_dir)}"


def development(folder: Path) -> Credentials:
    """The development signer under `folder`, made on first use (a CA and a signer certificate, P-256)."""
    paths = {name: folder / f"{name}.pem" for name in ("ca", "chain", "key")}
    if not all(p.exists() for p in paths.values()):
        folder.mkdir(parents=True, exist_ok=True)
        for name, pem in zip(paths, _make_development(), strict=True):
            paths[name].write_bytes(pem)
        paths["key"].chmod(0o600)
        log.warning("made a DEVELOPMENT signing certificate under %s: images signed with it say only that this "
                    "machine made them; set GENFLEET_SIGNING_CERTS and GENFLEET_SIGNING_KEY in production", folder)
    return Credentials(paths["chain"].read_bytes(), paths["key"].read_bytes(), "es256", True,
                       paths["ca"].read_bytes())


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                      x509.NameAttribute(NameOID.ORGANIZATION_NAME, DEV_ORGANISATION)])


def _make_development() -> tuple[bytes, bytes, bytes]:
    """(CA certificate, chain, signer key), PEM. C2PA wants an end-entity certificate that is not self-signed,
    with a digitalSignature key usage and an extended key usage it knows (emailProtection here)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    usage = dict(content_commitment=False, key_encipherment=False, data_encipherment=False, key_agreement=False,
                 encipher_only=False, decipher_only=False)
    ca = (x509.CertificateBuilder().subject_name(_name("genfleet development CA")).issuer_name(_name(
        "genfleet development CA")).public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, key_cert_sign=True, crl_sign=True, **usage), True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256()))
    leaf = (x509.CertificateBuilder().subject_name(_name("genfleet development signer")).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=825))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False, **usage), True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    return (ca.public_bytes(pem), leaf.public_bytes(pem) + ca.public_bytes(pem),
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
