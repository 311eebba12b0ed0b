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
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, "POA TEST PARTY"),
            x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, f"{int(role):02X}"),
            # A BIT STRING value (0 unused bits + EUI-64); cryptography takes bytes here
            # only with an explicit ASN.1 type.
            x509.NameAttribute(
                OID_X500_UNIQUE_IDENTIFIER, b"\x00" + eui64, _type=x509.name._ASN1Type.BitString
            ),
        ]
    )
    cert = _builder(subject, key).sign(key, hashes.SHA256())
    return Identity(eui64, key, cert.public_bytes(serialization.Encoding.PEM))


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
