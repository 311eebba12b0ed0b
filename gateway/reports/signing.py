"""Detached signatures of report files: a DNO can tell that the DSP wrote a report.

Theory of operation
-------------------
A report's TRAILER holds the SHA-256 of its data records, which catches a truncated or
damaged file but proves nothing about who wrote it: anyone who edits a row can
recompute the digest. So each report file is also signed with the DSP's private key,
and the DNO checks the signature with the DSP's public key (docs/decisions.md D30).

The signature of ``NAME.csv`` is ``NAME.csv.sig`` beside it (and ``NAME.xlsx.sig`` for
an ``.xlsx`` copy): the DER-encoded ECDSA signature (``SEQUENCE { r, s }``, 70-72 bytes)
with the NIST P-256 curve over the SHA-256 of the file's exact bytes, the whole file,
HEADER and TRAILER included. That is what ``openssl dgst -sha256 -sign`` writes, so a DNO
checks a report without our software::

    openssl dgst -sha256 -verify dsp-reports.pub.pem -signature NAME.csv.sig NAME.csv

or with ``poa-gateway report verify NAME.csv --key dsp-reports.pub.pem``, which also
checks the TRAILER.

Signatures are deterministic (RFC 6979) when the OpenSSL that ``cryptography`` links
supports it (3.2 or later; the wheels bundle one): the same report then gets the same
signature, byte for byte, as the CSV itself is the same when it is written again after a
crash. With an older OpenSSL each signature uses a fresh random nonce; it verifies the
same way.

This module signs and checks bytes; :func:`gateway.reports.files.write_report` writes
the ``.sig`` files (atomically, like the reports). The private key is read once, at
start-up, from the PEM file ``reports.signing_key`` names, and never logged: only its
public key's fingerprint is.
"""

from __future__ import annotations

import enum
import hashlib
from pathlib import Path
from typing import TYPE_CHECKING, Final

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from gateway.errors import GatewayError, StartupError, StartupReason

if TYPE_CHECKING:
    from gateway.logs import JsonLog

__all__ = [
    "SIGNATURE_SUFFIX",
    "SignatureStatus",
    "Signer",
    "SigningKeyError",
    "check_signature",
    "fingerprint",
    "load_public_key",
    "signature_path",
    "startup_signer",
]

SIGNATURE_SUFFIX: Final = ".sig"
"""Appended to a report file's name to name its detached signature."""

_MAX_KEY_BYTES: Final = 64 * 1024  # a PEM key or certificate is a few hundred bytes
_MAX_SIGNATURE_BYTES: Final = 1024  # a DER P-256 signature is at most 72 bytes


class SigningKeyError(GatewayError):
    """A key file that cannot be used: unreadable, not PEM, encrypted, or not P-256.

    The message says why and names the file; it never holds key material.
    """


class SignatureStatus(enum.StrEnum):
    """What :func:`check_signature` found (the ``signature`` field of ``--json``)."""

    OK = "ok"
    MISSING = "missing"  # no .sig file beside the report
    BAD = "bad"  # a .sig that does not verify with the key (or is not a signature)


def signature_path(path: Path) -> Path:
    """The detached signature of ``path``: the same name with ``.sig`` appended."""
    return path.with_name(path.name + SIGNATURE_SUFFIX)


def fingerprint(key: ec.EllipticCurvePublicKey) -> str:
    """SHA-256 of the public key's DER SubjectPublicKeyInfo, in lowercase hex.

    The same as ``openssl pkey -pubin -in PUB.pem -outform DER | sha256sum``: the DSP
    and the DNO compare it to agree on the key without sending it again.
    """
    der = key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(der).hexdigest()


class Signer:
    """Signs report bytes with the DSP's ECDSA P-256 private key."""

    def __init__(self, key: ec.EllipticCurvePrivateKey) -> None:
        if not isinstance(key.curve, ec.SECP256R1):
            raise SigningKeyError(f"an ECDSA key on {key.curve.name}, not P-256 (secp256r1)")
        self._key = key
        self._algorithm = ec.ECDSA(hashes.SHA256(), deterministic_signing=True)
        self._prehashed = ec.ECDSA(Prehashed(hashes.SHA256()), deterministic_signing=True)
        try:
            key.sign(b"", self._algorithm)
        except UnsupportedAlgorithm:  # pragma: no cover - an OpenSSL before 3.2
            self._algorithm = ec.ECDSA(hashes.SHA256())
            self._prehashed = ec.ECDSA(Prehashed(hashes.SHA256()))

    @classmethod
    def from_pem_file(cls, path: Path) -> Signer:
        """Load an unencrypted PEM private key (PKCS#8 or SEC1 ``EC PRIVATE KEY``).

        Raises:
            SigningKeyError: the file cannot be read, is not such a key, is encrypted,
                or is not ECDSA P-256.
        """
        pem = _read_pem(path, "private key")
        try:
            key = serialization.load_pem_private_key(pem, password=None)
        except TypeError:
            # The daemon has nobody to type a passphrase: the file's permissions (or a
            # systemd credential) protect the key instead.
            raise SigningKeyError(
                f"{path}: the key is encrypted; give the daemon an unencrypted key readable "
                "only by its user"
            ) from None
        except (ValueError, UnsupportedAlgorithm):
            # The library's message may quote the file; it is not repeated.
            raise SigningKeyError(f"{path}: not a PEM private key") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise SigningKeyError(f"{path}: not an ECDSA key: reports are signed with P-256")
        try:
            return cls(key)
        except SigningKeyError as exc:
            raise SigningKeyError(f"{path}: {exc}") from None

    @property
    def public_key(self) -> ec.EllipticCurvePublicKey:
        """The public half, which the DNOs are given to check reports."""
        return self._key.public_key()

    def sign(self, data: bytes) -> bytes:
        """The DER ECDSA P-256 signature over SHA-256 of ``data`` (a ``.sig`` file's bytes)."""
        return self._key.sign(data, self._algorithm)

    def sign_digest(self, digest: bytes) -> bytes:
        """As :meth:`sign`, given the SHA-256 of the data rather than the data (for a file
        hashed as it was written): the same signature, byte for byte."""
        return self._key.sign(digest, self._prehashed)

    def __repr__(self) -> str:
        return f"Signer(P-256, fingerprint {fingerprint(self.public_key)[:16]}...)"


def _read_pem(path: Path, what: str) -> bytes:
    # A key file's bytes, read no further than a key can be: a file named by mistake
    # (a log, a device) is refused without being read whole.
    try:
        with path.open("rb") as file:
            pem = file.read(_MAX_KEY_BYTES + 1)
    except OSError as exc:
        raise SigningKeyError(f"{path}: cannot read: {exc.strerror or exc}") from None
    if len(pem) > _MAX_KEY_BYTES:
        raise SigningKeyError(f"{path}: over {_MAX_KEY_BYTES} bytes: not a PEM {what}")
    return pem


def load_public_key(path: Path) -> ec.EllipticCurvePublicKey:
    """The DSP's public key from a PEM file: a ``PUBLIC KEY`` or a ``CERTIFICATE``.

    Raises:
        SigningKeyError: the file cannot be read or holds no P-256 public key.
    """
    pem = _read_pem(path, "public key")
    key: object
    try:
        if b"-----BEGIN CERTIFICATE-----" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, UnsupportedAlgorithm):
        if b"PRIVATE KEY-----" in pem:
            raise SigningKeyError(
                f"{path}: a private key: give the public key (openssl pkey -pubout)"
            ) from None
        raise SigningKeyError(f"{path}: not a PEM public key or certificate") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise SigningKeyError(f"{path}: not an ECDSA P-256 public key")
    return key


def check_signature(
    path: Path, key: ec.EllipticCurvePublicKey
) -> tuple[SignatureStatus, str | None]:
    """Check the detached signature beside ``path`` over the file's bytes.

    Returns the status and, unless it is OK, one line saying what is wrong.

    Raises:
        OSError: ``path`` itself cannot be read.
    """
    data = path.read_bytes()
    sig_path = signature_path(path)
    try:
        with sig_path.open("rb") as file:
            signature = file.read(_MAX_SIGNATURE_BYTES + 1)
    except FileNotFoundError:
        return SignatureStatus.MISSING, f"no signature: {sig_path.name} is missing"
    except OSError as exc:
        return (
            SignatureStatus.MISSING,
            f"signature {sig_path.name}: cannot read: {exc.strerror or exc}",
        )
    try:
        key.verify(signature, data, ec.ECDSA(hashes.SHA256()))
    except InvalidSignature:
        return SignatureStatus.BAD, (
            f"signature {sig_path.name} does not match: the file was changed after it was "
            "signed, or signed with another key"
        )
    return SignatureStatus.OK, None


def startup_signer(key_path: str, log: JsonLog) -> Signer | None:
    """The daemon's report signer from ``reports.signing_key`` (resolved), or None.

    An empty path leaves reports unsigned and says so once (``reports.unsigned``, at
    info: it is the default, and a clean start of the default configuration logs no
    warning); otherwise the key's public fingerprint is logged (``reports.signing``).

    Raises:
        StartupError: the key cannot be used (reason ``signing-key``); the message names
            ``reports.signing_key`` and the file, never the key.
    """
    if not key_path:
        log.info(
            "reports.unsigned",
            detail="reports.signing_key is empty: report files get no signature",
        )
        return None
    try:
        signer = Signer.from_pem_file(Path(key_path))
    except SigningKeyError as exc:
        raise StartupError(StartupReason.SIGNING_KEY, f"reports.signing_key: {exc}") from None
    log.info("reports.signing", key=key_path, fingerprint=fingerprint(signer.public_key))
    return signer
