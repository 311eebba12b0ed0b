"""Test and simulation certificates shaped like GBCS ones (keys generated on the spot).

Remote parties carry their EUI-64 in the subject's x500UniqueIdentifier and their role
in OU; devices carry it in the subjectAltName hardwareModuleName (GBCS 4.3.2). Used by
the end-to-end tests and the simulator: nothing secret is ever committed.
"""

from __future__ import annotations

import datetime as dt

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from gbcs import RemotePartyRole
from gbcs.trust import OID_HARDWARE_MODULE_NAME, OID_X500_UNIQUE_IDENTIFIER

# GBCS device certificates name this hwType (an SMKI OID arc); any OID works for tests.
_HW_TYPE_OID_DER = bytes.fromhex("060d2a863a000184 8fb90f01020201".replace(" ", ""))


class Identity:
    """A signing identity: EUI-64, private key and its PEM certificate."""

    def __init__(self, eui64: bytes, key: ec.EllipticCurvePrivateKey, certificate_pem: bytes):
        self.eui64 = eui64
        self.key = key
        self.certificate_pem = certificate_pem


def _builder(subject: x509.Name, key: ec.EllipticCurvePrivateKey) -> x509.CertificateBuilder:
    now = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "poa-gateway test CA")]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=3650))
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


def remote_party(eui64: bytes, role: RemotePartyRole = RemotePartyRole.SUPPLIER) -> Identity:
    """A remote party (Supplier by default) with a fresh P-256 key, self-issued."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = _remote_party_name(eui64, f"{int(role):02X}", key)
    cert = _builder(subject, key).sign(key, hashes.SHA256())
    return Identity(eui64, key, cert.public_bytes(serialization.Encoding.PEM))


def _der(tag: int, body: bytes) -> bytes:
    # One DER TLV: short form length below 128, else the long form (X.690, 8.1.3).
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    length = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(length))) + length + body


def _name_attribute(oid_der: bytes, tag: int, value: bytes) -> bytes:
    # RelativeDistinguishedName: SET { SEQUENCE { type OID, value } }.
    return _der(0x31, _der(0x30, _der(0x06, oid_der) + _der(tag, value)))


def _remote_party_name(eui64: bytes, role_ou: str, key: ec.EllipticCurvePrivateKey) -> x509.Name:
    """Subject CN=POA TEST PARTY, OU=<role>, x500UniqueIdentifier=<EUI-64 as a BIT STRING>.

    cryptography builds a BIT STRING name attribute only through a private type
    (``x509.name._ASN1Type``), so the Name is written in DER here and read back through
    the public API: as the subject of a certification request (whose signature is
    never checked: only its subject is used).
    """
    name = _der(
        0x30,
        _name_attribute(b"\x55\x04\x03", 0x0C, b"POA TEST PARTY")  # CN, UTF8String
        + _name_attribute(b"\x55\x04\x0b", 0x0C, role_ou.encode())  # OU, UTF8String
        # x500UniqueIdentifier (2.5.4.45), a BIT STRING: 0 unused bits, then the EUI-64.
        + _name_attribute(b"\x55\x04\x2d", 0x03, b"\x00" + eui64),
    )
    spki = key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    info = _der(0x30, _der(0x02, b"\x00") + name + spki + b"\xa0\x00")  # version 0, no attrs
    ecdsa_with_sha256 = _der(0x30, _der(0x06, bytes.fromhex("2a8648ce3d040302")))
    request = _der(0x30, info + ecdsa_with_sha256 + _der(0x03, b"\x00"))
    subject = x509.load_der_x509_csr(request).subject
    # The OID the trust store reads (gbcs.trust) is the one written above.
    assert subject.get_attributes_for_oid(OID_X500_UNIQUE_IDENTIFIER)[0].value == b"\x00" + eui64
    return subject


def device(eui64: bytes) -> Identity:
    """A device (ESME) with a fresh P-256 key; the EUI-64 in hardwareModuleName."""
    key = ec.generate_private_key(ec.SECP256R1())
    hw_name = _HW_TYPE_OID_DER + b"\x04\x08" + eui64
    value = b"\x30" + bytes((len(hw_name),)) + hw_name
    cert = (
        _builder(x509.Name([]), key)
        .add_extension(
            x509.SubjectAlternativeName([x509.OtherName(OID_HARDWARE_MODULE_NAME, value)]),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return Identity(eui64, key, cert.public_bytes(serialization.Encoding.PEM))
