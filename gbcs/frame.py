"""GBCS frames: the MAC header, the grouping header, payload, signature and MAC.

Theory of operation (GBCS 4.3, 7.2; the layout verified on the RTDS frames):

* A frame sent to or from a device over the WAN is a DLMS ``general-ciphering`` APDU
  (tag 0xDD) carrying authenticated-only content. Its six leading header fields are all
  zero-length in GBCS, then a length, then the security header (security control byte,
  4-byte invocation counter), the ``general-signing`` APDU and a 12-byte GMAC tag::

      DD 00 00 00 00 00 00 <len> SC IC[4] | DF 09 ... payload <sig-len> <sig> | MAC[12]

* The ``general-signing`` APDU (tag 0xDF) is what GBCS calls the grouping header plus
  payload plus signature. Its transaction-id is always 9 bytes (hence ``DF 09``): the
  CRA flag and the 8-byte originator counter. Then come the originator and recipient
  EUI-64s (length 8 each), an optional 12-byte DLMS date-time, the other-information
  (message code, optionally the supplementary remote party fields), the content length
  and the payload, and finally the signature (length 0, or 64 bytes r || s).

* Responses and alerts travel as a bare ``general-signing`` APDU. A *pre-command* (the
  DCC's unsigned form of a command, handed to the user for signing) stops right after
  the payload with no signature field at all; only a command may do that.

The ECDSA signature covers the bytes from the one after 0xDF to the end of the
payload; :attr:`Frame.signed_data` keeps exactly those received bytes so verification
never depends on a re-encoding.
"""

from __future__ import annotations

import msgspec
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature

from . import _der
from .codes import CraFlag, message_code_name
from .errors import (
    BadField,
    BadLength,
    BadSignatureField,
    BadTag,
    EncodeError,
    TrailingBytes,
    TruncatedFrame,
)
from .payloads import Payload, decode_payload_at, encode_payload
from .times import DlmsDateTime

GENERAL_CIPHERING = 0xDD
GENERAL_SIGNING = 0xDF
TRANSACTION_ID_SIZE = 9  # CRA flag + 8-byte originator counter
EUI64_SIZE = 8
SIGNATURE_SIZE = 64  # ECDSA P-256 r || s
MAC_SIZE = 12  # GMAC tag
SECURITY_HEADER_SIZE = 5  # security control byte + 4-byte invocation counter
_GENERAL_CIPHERING_EMPTY_FIELDS = 6  # transaction-id .. key-info, all zero-length in GBCS
MESSAGE_CODE_SIZE = 2
# Other-information sizes (GBCS 7.2.x): message code, + supplementary remote party ID,
# + its counter, + supplementary originator counter; longer carries a certificate.
_OTHER_INFO_SRP = 2 + 8
_OTHER_INFO_SRP_COUNTER = 2 + 8 + 8
_OTHER_INFO_ORIGINATOR_COUNTER = 2 + 8 + 8 + 8


class MacHeader(msgspec.Struct, frozen=True):
    """The general-ciphering security header of a WAN frame."""

    security_control: int = 0x11
    invocation_counter: int = 0


class GroupingHeader(msgspec.Struct, frozen=True):
    """The GBCS grouping header (the general-signing header fields)."""

    cra_flag: CraFlag
    originator_counter: int
    originator: bytes
    recipient: bytes
    message_code: int
    date_time: DlmsDateTime | None = None
    supplementary_remote_party: bytes | None = None
    supplementary_remote_party_counter: int | None = None
    supplementary_originator_counter: int | None = None
    supplementary_certificate: bytes | None = None


class Frame(msgspec.Struct, frozen=True):
    """A decoded GBCS frame.

    Attributes:
        header: the grouping header.
        payload: the decoded payload (``OpaquePayload`` for codes the gateway ignores).
        raw_payload: the payload bytes as received.
        signature: the 64-byte r || s signature, or None when there is none.
        signature_field: False for a pre-command, which has no signature field at all.
        mac_header: the general-ciphering security header, None for a bare frame.
        mac: the 12-byte MAC of a general-ciphering frame, else None.
        signed_data: exactly the received bytes the signature covers.
    """

    header: GroupingHeader
    payload: Payload
    raw_payload: bytes
    signature: bytes | None
    signature_field: bool
    mac_header: MacHeader | None
    mac: bytes | None
    signed_data: bytes

    @property
    def is_signed(self) -> bool:
        """True when the frame carries a signature (not whether it is valid)."""
        return self.signature is not None

    @property
    def message_code_name(self) -> str:
        """Readable name of the message code."""
        return message_code_name(self.header.message_code)


# -- decoding ---------------------------------------------------------------------


def decode_frame(data: bytes) -> Frame:
    """Decode one GBCS frame (0xDD... or 0xDF09...).

    Raises:
        GbcsError: any leaf, with a reason code and byte offset; nothing else escapes.
    """
    data = bytes(data)
    r = _der.Reader(data)
    first = r.peek()
    if first == GENERAL_CIPHERING:
        frame = _decode_general_ciphering(r)
    elif first == GENERAL_SIGNING:
        frame = _decode_general_signing(r, mac_header=None, mac=None)
    elif first is None:
        raise TruncatedFrame("empty frame", offset=0)
    else:
        raise BadTag(f"frame starts with 0x{first:02X}, not 0xDD or 0xDF", offset=0)
    if not r.at_end():
        raise TrailingBytes(f"{r.remaining()} bytes after the frame", offset=r.pos)
    return frame


def _decode_general_ciphering(r: _der.Reader) -> Frame:
    r.u8("general-ciphering tag")
    for i in range(_GENERAL_CIPHERING_EMPTY_FIELDS):
        at = r.pos
        if r.u8("general-ciphering header") != 0:
            # GBCS uses none of these fields; a non-zero one is another protocol (GBT).
            raise BadField(f"general-ciphering header field {i} is not empty", offset=at)
    at = r.pos
    content_len = r.length("ciphered content length")
    if content_len < SECURITY_HEADER_SIZE + MAC_SIZE:
        raise BadLength(f"ciphered content of {content_len} bytes is too short", offset=at)
    content = r.sub(content_len, "ciphered content")
    mac_header = MacHeader(
        security_control=content.u8("security control"),
        invocation_counter=content.uint(4, "invocation counter"),
    )
    inner = _der.Reader(content.data, content.pos, content.end - MAC_SIZE)
    mac = content.data[content.end - MAC_SIZE : content.end]
    if inner.peek() != GENERAL_SIGNING:
        raise BadTag("general-ciphering content is not a general-signing APDU", offset=inner.pos)
    frame = _decode_general_signing(inner, mac_header=mac_header, mac=mac)
    if not inner.at_end():
        raise TrailingBytes(
            f"{inner.remaining()} bytes between the signature and the MAC", offset=inner.pos
        )
    return frame


def _fixed(r: _der.Reader, size: int, what: str) -> bytes:
    at = r.pos
    n = r.u8(what)
    if n != size:
        raise BadField(f"{what} has length {n}, must be {size}", offset=at)
    return r.take(size, what)


def _decode_general_signing(
    r: _der.Reader, *, mac_header: MacHeader | None, mac: bytes | None
) -> Frame:
    start = r.pos
    r.expect(GENERAL_SIGNING, "general-signing tag")
    transaction = _fixed(r, TRANSACTION_ID_SIZE, "transaction-id")
    try:
        cra = CraFlag(transaction[0])
    except ValueError:
        raise BadField(
            f"CRA flag 0x{transaction[0]:02X} is not 1, 2 or 3", offset=start + 2
        ) from None
    counter = int.from_bytes(transaction[1:], "big")
    originator = _fixed(r, EUI64_SIZE, "originator system title")
    recipient = _fixed(r, EUI64_SIZE, "recipient system title")

    at = r.pos
    dt_len = r.u8("date-time length")
    date_time = None
    if dt_len == DlmsDateTime.SIZE:
        date_time = DlmsDateTime.from_bytes(r.take(dt_len, "date-time"), at + 1)
    elif dt_len != 0:
        raise BadField(f"date-time has length {dt_len}, must be 0 or 12", offset=at)

    at = r.pos
    info = r.sub(r.length("other-information length"), "other-information")
    size = info.remaining()
    if size < MESSAGE_CODE_SIZE:
        raise BadField(f"other-information of {size} bytes has no message code", offset=at)
    message_code = info.uint(2, "message code")
    srp = srp_counter = orig_counter = certificate = None
    if size != MESSAGE_CODE_SIZE:
        if size < _OTHER_INFO_SRP_COUNTER and size != _OTHER_INFO_SRP:
            raise BadField(f"other-information of {size} bytes", offset=at)
        srp = info.take(8, "supplementary remote party ID")
        if size >= _OTHER_INFO_SRP_COUNTER:
            srp_counter = info.uint(8, "supplementary remote party counter")
        if size == _OTHER_INFO_ORIGINATOR_COUNTER:
            orig_counter = info.uint(8, "supplementary originator counter")
        elif size > _OTHER_INFO_ORIGINATOR_COUNTER:
            certificate = info.take(info.remaining(), "supplementary certificate")
        elif size > _OTHER_INFO_SRP_COUNTER:
            raise BadField(f"other-information of {size} bytes", offset=at)

    content_len = r.length("content length")
    payload_start = r.pos
    raw_payload = r.take(content_len, "payload")
    payload_end = r.pos
    header = GroupingHeader(
        cra_flag=cra,
        originator_counter=counter,
        originator=originator,
        recipient=recipient,
        message_code=message_code,
        date_time=date_time,
        supplementary_remote_party=srp,
        supplementary_remote_party_counter=srp_counter,
        supplementary_originator_counter=orig_counter,
        supplementary_certificate=certificate,
    )
    payload = decode_payload_at(message_code, cra, r.data, payload_start, payload_end)

    signature: bytes | None = None
    signature_field = True
    if r.at_end():
        # Only an unsigned command (a pre-command) may omit the signature field; a
        # response or an alert cut here is a truncated frame.
        if mac_header is not None or cra != CraFlag.COMMAND:
            raise BadSignatureField("signature field missing", offset=r.pos)
        signature_field = False
    else:
        at = r.pos
        sig_len = r.length("signature length")
        if sig_len == SIGNATURE_SIZE:
            signature = r.take(sig_len, "signature")
        elif sig_len != 0:
            raise BadSignatureField(
                f"signature of {sig_len} bytes, must be 0 or {SIGNATURE_SIZE}", offset=at
            )
    return Frame(
        header=header,
        payload=payload,
        raw_payload=raw_payload,
        signature=signature,
        signature_field=signature_field,
        mac_header=mac_header,
        mac=mac,
        signed_data=r.data[start + 1 : payload_end],
    )


# -- encoding ---------------------------------------------------------------------


def _enc_other_information(h: GroupingHeader) -> bytes:
    out = h.message_code.to_bytes(2, "big")
    extras = (
        h.supplementary_remote_party_counter,
        h.supplementary_originator_counter,
        h.supplementary_certificate,
    )
    if h.supplementary_remote_party is None:
        if any(v is not None for v in extras):
            raise EncodeError("supplementary fields need a supplementary remote party")
        return out
    if len(h.supplementary_remote_party) != EUI64_SIZE:
        raise EncodeError("supplementary remote party must be 8 bytes")
    out += h.supplementary_remote_party  # no length prefix inside other-information
    if h.supplementary_remote_party_counter is None:
        if (
            h.supplementary_originator_counter is not None
            or h.supplementary_certificate is not None
        ):
            raise EncodeError("supplementary counter missing")
        return out
    out += h.supplementary_remote_party_counter.to_bytes(8, "big")
    if h.supplementary_originator_counter is not None:
        if h.supplementary_certificate is not None:
            raise EncodeError(
                "a supplementary originator counter and certificate exclude each other"
            )
        out += h.supplementary_originator_counter.to_bytes(8, "big")
    elif h.supplementary_certificate is not None:
        # The decoder tells a certificate from an 8-byte originator counter by size
        # alone (other-information longer than 26 bytes), so a certificate must be
        # longer than 8 bytes to survive a round trip; real ones are hundreds long.
        if (
            len(h.supplementary_certificate)
            <= _OTHER_INFO_ORIGINATOR_COUNTER - _OTHER_INFO_SRP_COUNTER
        ):
            raise EncodeError("a supplementary certificate must be longer than 8 bytes")
        out += h.supplementary_certificate
    return out


def _eui(value: bytes, what: str) -> bytes:
    if len(value) != EUI64_SIZE:
        raise EncodeError(f"{what} must be 8 bytes, got {len(value)}")
    return bytes((EUI64_SIZE,)) + value


def encode_grouping_header(header: GroupingHeader, content_length: int) -> bytes:
    """The general-signing header up to and including the content length."""
    try:
        transaction = bytes((int(header.cra_flag),)) + header.originator_counter.to_bytes(8, "big")
        date_time = (
            b"\x00"
            if header.date_time is None
            else bytes((DlmsDateTime.SIZE,)) + header.date_time.to_bytes()
        )
        info = _enc_other_information(header)
    except OverflowError as exc:
        raise EncodeError(f"grouping header field out of range: {exc}") from exc
    return (
        bytes((GENERAL_SIGNING, TRANSACTION_ID_SIZE))
        + transaction
        + _eui(header.originator, "originator")
        + _eui(header.recipient, "recipient")
        + date_time
        + _der.enc_length(len(info))
        + info
        + _der.enc_length(content_length)
    )


def sign_bytes(data: bytes, key: ec.EllipticCurvePrivateKey) -> bytes:
    """ECDSA P-256/SHA-256 over ``data``, as the 64-byte r || s GBCS carries."""
    if not isinstance(key.curve, ec.SECP256R1):
        raise EncodeError("GBCS signatures use P-256 keys")
    r, s = decode_dss_signature(key.sign(data, ec.ECDSA(hashes.SHA256())))
    return r.to_bytes(32, "big") + s.to_bytes(32, "big")


def encode_frame(
    header: GroupingHeader,
    payload: Payload | bytes,
    *,
    signer: ec.EllipticCurvePrivateKey | None = None,
    signature: bytes | None = None,
    signature_field: bool = True,
    mac_header: MacHeader | None = None,
    mac: bytes | None = None,
) -> bytes:
    """Build a frame.

    Args:
        header: grouping header fields.
        payload: a payload structure, or raw payload bytes.
        signer: sign the frame with this P-256 key (over the bytes after 0xDF up to
            the end of the payload).
        signature: a ready 64-byte signature instead of ``signer`` (tests of forgeries).
        signature_field: False builds a pre-command (no signature field, no wrapping).
        mac_header: wrap in a general-ciphering APDU with this security header.
        mac: the 12-byte MAC for a wrapped frame (default 12 zero bytes: the MAC key is
            the device's and the gateway never checks it).
    """
    raw = payload if isinstance(payload, bytes) else encode_payload(payload)
    signing = encode_grouping_header(header, len(raw)) + raw
    if signer is not None and signature is not None:
        raise EncodeError("give a signer or a signature, not both")
    if signer is not None:
        signature = sign_bytes(signing[1:], signer)
    if signature is not None and len(signature) != SIGNATURE_SIZE:
        raise EncodeError(f"signature must be {SIGNATURE_SIZE} bytes")
    if not signature_field:
        if signature is not None or mac_header is not None:
            raise EncodeError("a pre-command has no signature and no MAC header")
        return signing
    signing += _der.enc_length(len(signature or b"")) + (signature or b"")
    if mac_header is None:
        if mac is not None:
            raise EncodeError("a MAC needs a MAC header")
        return signing
    mac = bytes(MAC_SIZE) if mac is None else mac
    if len(mac) != MAC_SIZE:
        raise EncodeError(f"MAC must be {MAC_SIZE} bytes")
    try:
        security = bytes((mac_header.security_control,)) + mac_header.invocation_counter.to_bytes(
            4, "big"
        )
    except (OverflowError, ValueError) as exc:
        raise EncodeError(f"MAC header field out of range: {exc}") from exc
    content = security + signing + mac
    return (
        bytes((GENERAL_CIPHERING,))
        + bytes(_GENERAL_CIPHERING_EMPTY_FIELDS)
        + _der.enc_length(len(content))
        + content
    )
