"""Trust store and signature verification.

The trust store maps an EUI-64 to the P-256 public keys allowed to sign for it.
Identities come from the certificate itself, never from a file name (GBCS 4.3.2):

* remote parties (Supplier, Network Operator, ACB ...): the subject's
  x500UniqueIdentifier (OID 2.5.4.45) holds the EUI-64 and OU holds the role code;
* devices: the subjectAltName otherName hardwareModuleName (RFC 4108,
  OID 1.3.6.1.5.5.7.8.4) holds it as hwSerialNum.

Only certificates whose key usage allows digital signatures are kept; key-agreement
certificates sit in the same folders and are skipped. Validity dates are not checked:
GBCS devices do not check them either, and RTDS certificates are past their notAfter.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from pathlib import Path

import msgspec
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from . import _der
from .codes import RemotePartyRole
from .errors import BadCertificate, GbcsError
from .frame import EUI64_SIZE, SIGNATURE_SIZE, Frame

OID_X500_UNIQUE_IDENTIFIER = x509.ObjectIdentifier("2.5.4.45")
OID_HARDWARE_MODULE_NAME = x509.ObjectIdentifier("1.3.6.1.5.5.7.8.4")
_TAG_OID = 0x06
_TAG_BIT_STRING = 0x03
_ECDSA_SHA256 = ec.ECDSA(hashes.SHA256())


class TrustedSigner(msgspec.Struct, frozen=True):
    """One signing identity: EUI-64, role (None for a device) and its public key."""

    eui64: bytes
    role: RemotePartyRole | None
    public_key: ec.EllipticCurvePublicKey
    source: str = ""

    @property
    def is_remote_party(self) -> bool:
        """True for a remote party (Supplier, Network Operator ...), False for a device."""
        return self.role is not None


class SignatureStatus(enum.StrEnum):
    """Outcome of checking a frame's signature."""

    VALID = "valid"
    INVALID = "invalid"  # signed, signer known, signature does not verify
    UNKNOWN_SIGNER = "unknown-signer"  # signed, no trusted key for the originator
    UNSIGNED = "unsigned"  # no signature (pre-command or zero-length field)


class Verification(msgspec.Struct, frozen=True):
    """The result of :func:`verify_frame`; ``signer`` is set only when VALID."""

    status: SignatureStatus
    signer: TrustedSigner | None = None

    @property
    def valid(self) -> bool:
        """True only for a verified signature."""
        return self.status is SignatureStatus.VALID


def format_eui64(eui: bytes) -> str:
    """``00-DB-12-34-56-78-90-A0``."""
    return eui.hex("-").upper()


class TrustStore:
    """Public keys by EUI-64, loaded from PEM certificates."""

    def __init__(self, signers: Iterable[TrustedSigner] = ()) -> None:
        self._by_eui: dict[bytes, tuple[TrustedSigner, ...]] = {}
        # (file, why) for every file loaded but not used for signatures.
        self.skipped: list[tuple[str, str]] = []
        for signer in signers:
            self.add(signer)

    def add(self, signer: TrustedSigner) -> None:
        """Trust one more key (several keys per EUI-64 are allowed, e.g. rotation)."""
        self._by_eui[signer.eui64] = (*self._by_eui.get(signer.eui64, ()), signer)

    def signers_for(self, eui64: bytes) -> tuple[TrustedSigner, ...]:
        """Every trusted key for ``eui64`` (empty when unknown)."""
        return self._by_eui.get(eui64, ())

    def __len__(self) -> int:
        return sum(len(v) for v in self._by_eui.values())

    def __contains__(self, eui64: object) -> bool:
        return eui64 in self._by_eui

    @property
    def identities(self) -> Mapping[bytes, tuple[TrustedSigner, ...]]:
        """Read-only view of the store."""
        return dict(self._by_eui)

    @classmethod
    def from_pem_files(cls, files: Iterable[tuple[str, bytes]]) -> TrustStore:
        """Build from ``(name, pem bytes)`` pairs; key-agreement certificates are skipped.

        Raises:
            BadCertificate: naming the file, for a file that is not a usable certificate.
        """
        store = cls()
        for name, pem in files:
            if b"-----BEGIN CERTIFICATE-----" not in pem and b"-----BEGIN PUBLIC KEY-----" in pem:
                store.skipped.append((name, "bare public key: no identity, no key usage"))
                continue
            signer = signer_from_certificate(pem, name)
            if signer is None:
                store.skipped.append((name, "key usage does not allow digital signatures"))
            else:
                store.add(signer)
        return store

    @classmethod
    def from_directory(cls, path: str | Path) -> TrustStore:
        """Load every ``*.pem`` in a folder (the only I/O in this package)."""
        folder = Path(path)
        if not folder.is_dir():
            raise BadCertificate(f"trust store {folder} is not a directory")
        files = sorted(folder.glob("*.pem"))
        return cls.from_pem_files((str(f), f.read_bytes()) for f in files)


def signer_from_certificate(pem: bytes, name: str = "<certificate>") -> TrustedSigner | None:
    """The signing identity of one PEM certificate, or None if it is not for signing.

    Raises:
        BadCertificate: unreadable, not P-256, or carrying no EUI-64.
    """
    try:
        cert = x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise BadCertificate(f"{name}: not a PEM certificate ({exc})") from exc
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        raise BadCertificate(f"{name}: no key usage extension") from None
    if not usage.digital_signature:
        return None
    key = cert.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise BadCertificate(f"{name}: signing key is not ECDSA P-256")
    eui, role = _identity(cert, name)
    return TrustedSigner(eui64=eui, role=role, public_key=key, source=name)


def _identity(cert: x509.Certificate, name: str) -> tuple[bytes, RemotePartyRole | None]:
    unique = cert.subject.get_attributes_for_oid(OID_X500_UNIQUE_IDENTIFIER)
    if unique:
        eui = _bit_string_value(unique[0].value, name)
        ous = cert.subject.get_attributes_for_oid(x509.NameOID.ORGANIZATIONAL_UNIT_NAME)
        if not ous:
            raise BadCertificate(f"{name}: remote party certificate without OU role code")
        try:
            role = RemotePartyRole(int(str(ous[0].value), 16))
        except ValueError:
            raise BadCertificate(f"{name}: unknown role code OU={ous[0].value!r}") from None
        return eui, role
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise BadCertificate(f"{name}: no x500UniqueIdentifier and no subjectAltName") from None
    for other in san.get_values_for_type(x509.OtherName):
        if other.type_id == OID_HARDWARE_MODULE_NAME:
            return _hardware_serial(other.value, name), None
    raise BadCertificate(f"{name}: subjectAltName has no hardwareModuleName")


def _bit_string_value(value: object, name: str) -> bytes:
    # cryptography returns the x500UniqueIdentifier BIT STRING contents: one
    # "unused bits" octet (0) followed by the 8-byte EUI-64.
    raw = value if isinstance(value, bytes) else str(value).encode("latin-1")
    if len(raw) == EUI64_SIZE + 1 and raw[0] == 0:
        return raw[1:]
    raise BadCertificate(f"{name}: x500UniqueIdentifier is not an 8-byte EUI-64")


def _hardware_serial(der: bytes, name: str) -> bytes:
    # HardwareModuleName ::= SEQUENCE { hwType OBJECT IDENTIFIER, hwSerialNum OCTET STRING }
    try:
        r = _der.Reader(der)
        seq = r.der(_der.TAG_SEQUENCE, "HardwareModuleName")
        seq.der(_TAG_OID, "hwType")
        serial = seq.der_octets("hwSerialNum")
    except GbcsError as exc:
        raise BadCertificate(f"{name}: bad hardwareModuleName ({exc})") from exc
    if len(serial) != EUI64_SIZE:
        raise BadCertificate(f"{name}: hwSerialNum is not an 8-byte EUI-64")
    return serial


def verify_signature(signed_data: bytes, signature: bytes, key: ec.EllipticCurvePublicKey) -> bool:
    """Check a 64-byte r || s ECDSA P-256/SHA-256 signature over ``signed_data``."""
    if len(signature) != SIGNATURE_SIZE:
        return False
    r = int.from_bytes(signature[:32], "big")
    s = int.from_bytes(signature[32:], "big")
    if r == 0 or s == 0:
        return False
    try:
        key.verify(encode_dss_signature(r, s), signed_data, _ECDSA_SHA256)
    except InvalidSignature:
        return False
    return True


def verify_frame(frame: Frame, store: TrustStore) -> Verification:
    """Verify a frame's signature against the originator's trusted keys.

    The check runs over :attr:`Frame.signed_data`, the bytes as received.
    """
    if frame.signature is None:
        return Verification(SignatureStatus.UNSIGNED)
    signers = store.signers_for(frame.header.originator)
    if not signers:
        return Verification(SignatureStatus.UNKNOWN_SIGNER)
    for signer in signers:
        if verify_signature(frame.signed_data, frame.signature, signer.public_key):
            return Verification(SignatureStatus.VALID, signer)
    return Verification(SignatureStatus.INVALID)
