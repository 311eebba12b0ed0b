"""Properties of the GBCS codec, checked with hypothesis.

* Any bytes either decode to a :class:`gbcs.Frame` or raise :class:`gbcs.GbcsError`;
  nothing else escapes (random bytes, bytes behind a frame tag or a valid grouping
  header, and mutations and splices of the RTDS vectors).
* Every strict prefix of every RTDS vector is rejected (exhaustively, every length).
* encode then decode is the identity on generated frames, and decode then encode gives
  the same bytes back.
* A frame signed with a key generated here verifies against a trust store holding that
  key, and stops verifying when any byte the signature covers is changed.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from hypothesis import given, settings
from hypothesis import strategies as st

import gbcs
from gbcs import (
    CANCELLATION_TIME,
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ActivationResponseCode,
    AlertCode,
    CraFlag,
    DlmsDateTime,
    ExecutionOutcome,
    Frame,
    FutureDatedActivationAlert,
    GroupingHeader,
    MacHeader,
    MessageCode,
    OpaquePayload,
    Payload,
    PowerRestorationAlert,
    RemotePartyRole,
    SignatureStatus,
    TrustedSigner,
    TrustStore,
)

from .conftest import read_vector, vector_files

UTC = dt.UTC
CS06 = MessageCode.CS06_ACTIVATE_FIRMWARE
CS06_ALERT = MessageCode.CS06_FUTURE_DATED_ALERT
ECS80_ALERT = MessageCode.ECS80_POWER_RESTORATION_ALERT
SIGNATURE_SIZE = 64
MAC_SIZE = 12

# Generated here for this test run; nothing secret is committed. Module-level because
# hypothesis tests cannot take function-scoped fixtures.
KEY = ec.generate_private_key(ec.SECP256R1())
OTHER_KEY = ec.generate_private_key(ec.SECP256R1())

VECTOR_PATHS = vector_files()
VECTORS = [read_vector(p) for p in VECTOR_PATHS]


def _decode_or_gbcs_error(data: bytes) -> Frame | None:
    """The decoded frame, or None when the codec rejected the bytes with a GbcsError.

    Any other exception fails the test with its type, so the report names the leak.
    """
    try:
        frame = gbcs.decode_frame(data)
    except gbcs.GbcsError:
        return None
    except Exception as exc:  # noqa: BLE001 - the property is "nothing else escapes"
        pytest.fail(f"decode_frame({data.hex()}) raised {type(exc).__name__}: {exc}")
    assert isinstance(frame, Frame)
    return frame


def _general_signing_start(wire: bytes, frame: Frame) -> int:
    """Offset of the 0xDF tag: the frame is ``[DD header] DF signed_data [sig field] [MAC]``."""
    signature_field = 1 + len(frame.signature or b"") if frame.signature_field else 0
    mac_size = MAC_SIZE if frame.mac_header is not None else 0
    return len(wire) - mac_size - signature_field - len(frame.signed_data) - 1


def _reencode(frame: Frame) -> bytes:
    return gbcs.encode_frame(
        frame.header,
        frame.payload,
        signature=frame.signature,
        signature_field=frame.signature_field,
        mac_header=frame.mac_header,
        mac=frame.mac,
    )


def _assert_same_fields(got: Frame, want: Frame) -> None:
    assert got.header == want.header
    assert got.payload == want.payload
    assert got.signature == want.signature
    assert got.signature_field == want.signature_field
    assert got.mac_header == want.mac_header
    assert got.mac == want.mac


# -- strategies -------------------------------------------------------------------

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 2**32 - 1)
u64 = st.integers(0, 2**64 - 1)
eui64s = st.binary(min_size=8, max_size=8)
# The DER INTEGERs of the payloads, over each field's whole range (docs/codec.md).
counters = u64
alert_codes = u16
response_codes = u8

dlms_date_times = st.builds(
    DlmsDateTime,
    year=u16,
    month=u8,
    day=u8,
    day_of_week=u8,
    hour=u8,
    minute=u8,
    second=u8,
    hundredths=u8,
    deviation=st.integers(-0x8000, 0x7FFF),
    clock_status=u8,
)

# Whole-second UTC instants over the whole GeneralizedTime range (years 1..9999),
# plus the GBCS and DUIS cancellation sentinels.
whole_second_times = st.one_of(
    st.just(CANCELLATION_TIME),
    st.just(dt.datetime(3000, 12, 31, 0, 0, 0, tzinfo=UTC)),
    st.datetimes(timezones=st.just(UTC)).map(lambda t: t.replace(microsecond=0)),
)

outcomes = st.builds(
    ExecutionOutcome,
    response_code=st.one_of(st.sampled_from(ActivationResponseCode).map(int), response_codes),
    firmware_version=st.binary(max_size=40),
)

cs06_commands = st.builds(
    ActivateFirmwareCommand,
    image_hash=st.binary(min_size=32, max_size=32),
    originator_counter=counters,
    execution_time=st.none() | whole_second_times,
)

cs06_responses = st.builds(ActivateFirmwareResponse, outcome=st.none() | outcomes)

cs06_alerts = st.builds(
    FutureDatedActivationAlert,
    alert_code=st.one_of(st.sampled_from(AlertCode).map(int), alert_codes),
    execution_time=whole_second_times,
    originator_counter=counters,
    outcome=outcomes,
)

ecs80_alerts = st.builds(
    PowerRestorationAlert,
    invoke_id=u32,
    alert_code=st.one_of(st.sampled_from(AlertCode).map(int), u16),
    alert_time=dlms_date_times,
    notification_time=st.none() | dlms_date_times,
    body_times=st.lists(dlms_date_times, max_size=4).map(tuple),
)

opaque_payloads = st.builds(OpaquePayload, data=st.binary(max_size=300))

# Codes with a structured payload, every code the gateway names, and any other.
message_codes = st.one_of(
    st.sampled_from([int(CS06), int(CS06_ALERT), int(ECS80_ALERT)]),
    st.sampled_from(MessageCode).map(int),
    u16,
)


def payloads_for(code: int, cra: CraFlag) -> st.SearchStrategy[Payload]:
    """The payload type the decoder reads for ``code`` sent with ``cra``."""
    if code == CS06:
        if cra is CraFlag.COMMAND:
            return cs06_commands
        if cra is CraFlag.RESPONSE:
            return cs06_responses
        return opaque_payloads
    if code == CS06_ALERT:
        return cs06_alerts
    if code == ECS80_ALERT:
        return ecs80_alerts
    return opaque_payloads


class Supplementary(NamedTuple):
    party: bytes | None = None
    party_counter: int | None = None
    originator_counter: int | None = None
    certificate: bytes | None = None


# Supplementary remote party fields, in each combination GBCS allows: none; the
# party; the party and its counter; then either the originator counter or a
# certificate. A certificate is longer than 8 bytes: the decoder tells it from an
# originator counter by size, and the encoder refuses a shorter one (tested below).
supplementary_fields = st.one_of(
    st.just(Supplementary()),
    eui64s.map(Supplementary),
    st.tuples(eui64s, u64).map(lambda t: Supplementary(*t)),
    st.tuples(eui64s, u64, u64).map(lambda t: Supplementary(*t)),
    st.tuples(eui64s, u64, st.binary(min_size=9, max_size=300)).map(
        lambda t: Supplementary(t[0], t[1], certificate=t[2])
    ),
)
ANY_CRA_FLAG = st.sampled_from(CraFlag)
STRUCTURED_CODES = st.sampled_from([int(CS06), int(CS06_ALERT), int(ECS80_ALERT)])
ANY_SIGNING = st.sampled_from(["key", "given", "empty"])


@st.composite
def grouping_headers(
    draw: st.DrawFn,
    cra_flags: st.SearchStrategy[CraFlag] = ANY_CRA_FLAG,
    codes: st.SearchStrategy[int] = message_codes,
) -> GroupingHeader:
    extra = draw(supplementary_fields)
    return GroupingHeader(
        cra_flag=draw(cra_flags),
        originator_counter=draw(u64),
        originator=draw(eui64s),
        recipient=draw(eui64s),
        message_code=draw(codes),
        date_time=draw(st.none() | dlms_date_times),
        supplementary_remote_party=extra.party,
        supplementary_remote_party_counter=extra.party_counter,
        supplementary_originator_counter=extra.originator_counter,
        supplementary_certificate=extra.certificate,
    )


class FrameSpec(NamedTuple):
    """Everything given to :func:`gbcs.encode_frame` for one generated frame."""

    header: GroupingHeader
    payload: Payload
    signed: bool  # signed by KEY while encoding
    signature: bytes | None  # a given signature (never together with ``signed``)
    signature_field: bool
    mac_header: MacHeader | None
    mac: bytes | None

    def encode(self) -> bytes:
        return gbcs.encode_frame(
            self.header,
            self.payload,
            signer=KEY if self.signed else None,
            signature=self.signature,
            signature_field=self.signature_field,
            mac_header=self.mac_header,
            mac=self.mac,
        )


@st.composite
def frame_specs(
    draw: st.DrawFn,
    headers: st.SearchStrategy[GroupingHeader] | None = None,
    signing: st.SearchStrategy[str] = ANY_SIGNING,
    pre_commands: bool = True,
) -> FrameSpec:
    header = draw(grouping_headers() if headers is None else headers)
    payload = draw(payloads_for(header.message_code, header.cra_flag))
    # Only a command may travel as a pre-command (no signature field, never wrapped).
    framings = ["bare", "ciphered"]
    if pre_commands and header.cra_flag is CraFlag.COMMAND:
        framings.append("pre-command")
    framing = draw(st.sampled_from(framings))
    if framing == "pre-command":
        return FrameSpec(header, payload, False, None, False, None, None)
    how = draw(signing)
    signature = (
        draw(st.binary(min_size=SIGNATURE_SIZE, max_size=SIGNATURE_SIZE))
        if how == "given"
        else None
    )
    mac_header = mac = None
    if framing == "ciphered":
        mac_header = MacHeader(security_control=draw(u8), invocation_counter=draw(u32))
        mac = draw(st.binary(min_size=MAC_SIZE, max_size=MAC_SIZE))
    return FrameSpec(header, payload, how == "key", signature, True, mac_header, mac)


signed_frame_specs = frame_specs(
    headers=grouping_headers(codes=STRUCTURED_CODES),
    signing=st.just("key"),
    pre_commands=False,
)


# -- any bytes: a Frame or a GbcsError, nothing else --------------------------------


@settings(max_examples=1000, deadline=None)
@given(data=st.binary(max_size=600))
def test_random_bytes_decode_to_a_frame_or_raise_gbcs_error(data: bytes) -> None:
    _decode_or_gbcs_error(data)


FRAME_STARTS = [
    b"\xdd",
    b"\xdd" + bytes(6),
    b"\xdf",
    b"\xdf\x09",
    b"\xdf\x09\x01",
    b"\xdf\x09\x02",
    b"\xdf\x09\x03",
]


@settings(max_examples=1000, deadline=None)
@given(start=st.sampled_from(FRAME_STARTS), rest=st.binary(max_size=600))
def test_random_bytes_after_a_frame_tag_decode_or_raise_gbcs_error(
    start: bytes, rest: bytes
) -> None:
    _decode_or_gbcs_error(start + rest)


@settings(max_examples=1000, deadline=None)
@given(
    header=grouping_headers(),
    content=st.binary(max_size=300),
    tail=st.binary(max_size=80),
    wrap=st.booleans(),
)
def test_random_payload_behind_a_valid_grouping_header_decodes_or_raises_gbcs_error(
    header: GroupingHeader, content: bytes, tail: bytes, wrap: bool
) -> None:
    # Reaches the payload decoders (CS06, 0x00CA, ECS80) with garbage of the announced
    # length, and the signature / MAC parsing with garbage behind it.
    signing = gbcs.encode_grouping_header(header, len(content)) + content + tail
    if wrap:
        inner = b"\x11\x00\x00\x00\x01" + signing
        signing = b"\xdd" + bytes(6) + _der_length(len(inner)) + inner
    _decode_or_gbcs_error(signing)


def _der_length(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes((0x80 | len(body),)) + body


@st.composite
def mutated_vectors(draw: st.DrawFn) -> bytes:
    """One RTDS vector with a byte replaced, inserted or deleted, or two spliced."""
    base = draw(st.sampled_from(VECTORS))
    at = draw(st.integers(0, len(base) - 1))
    how = draw(st.sampled_from(["replace", "insert", "delete", "splice"]))
    if how == "replace":
        flip = draw(st.integers(1, 0xFF))
        return base[:at] + bytes((base[at] ^ flip,)) + base[at + 1 :]
    if how == "insert":
        return base[:at] + bytes((draw(u8),)) + base[at:]
    if how == "delete":
        return base[:at] + base[at + 1 :]
    other = draw(st.sampled_from(VECTORS))
    return base[:at] + other[draw(st.integers(0, len(other))) :]


@settings(max_examples=2000, deadline=None)
@given(data=mutated_vectors())
def test_mutated_vectors_decode_or_raise_gbcs_error_and_reencode_stably(data: bytes) -> None:
    frame = _decode_or_gbcs_error(data)
    if frame is None:
        return
    # Whatever the decoder accepts, the encoder can write back, to a frame that
    # decodes to the same fields (the wire bytes may differ: lengths are read leniently).
    again = gbcs.decode_frame(_reencode(frame))
    _assert_same_fields(again, frame)


# -- integers bounded by their GBCS size --------------------------------------------


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes((tag,)) + _der_length(len(body)) + body


def _integer(octets: int, first: int) -> bytes:
    """A DER INTEGER of ``octets`` content octets starting with ``first``."""
    return _tlv(0x02, bytes((first,)) + b"\x55" * (octets - 1))


GT = _tlv(0x18, b"20300115090000Z")
VERSION = _tlv(0x04, bytes.fromhex("0123ABCF"))
SMALL = _tlv(0x02, b"\x01")


def _signed_frame(cra: CraFlag, code: int, payload: bytes) -> bytes:
    header = GroupingHeader(
        cra_flag=cra,
        originator_counter=1,
        originator=bytes(8),
        recipient=bytes(8),
        message_code=code,
    )
    return gbcs.encode_frame(header, payload, signer=KEY)


class IntegerField(NamedTuple):
    """A payload INTEGER: its name, the frame that carries it, and its size bound."""

    name: str
    cra: CraFlag
    code: int
    payload: Callable[[bytes], bytes]  # the payload with this INTEGER TLV in place
    octets: int  # the most content octets its range needs (00 first if the top bit is set)
    read: Callable[[Payload], int]


def _counter(p: Payload) -> int:
    assert isinstance(p, ActivateFirmwareCommand | FutureDatedActivationAlert)
    return p.originator_counter


def _alert_code(p: Payload) -> int:
    assert isinstance(p, FutureDatedActivationAlert)
    return p.alert_code


def _response_code(p: Payload) -> int:
    assert isinstance(p, ActivateFirmwareResponse | FutureDatedActivationAlert)
    assert p.outcome is not None
    return p.outcome.response_code


INTEGER_FIELDS = [
    IntegerField(
        "ActivateFirmware.originatorCounter",
        CraFlag.COMMAND,
        CS06,
        lambda n: _tlv(0x30, _tlv(0x04, bytes(32)) + n),
        9,
        _counter,
    ),
    IntegerField(
        "ExecutionOutcome.responseCode",
        CraFlag.RESPONSE,
        CS06,
        lambda n: _tlv(0x30, n + VERSION),
        2,
        _response_code,
    ),
    IntegerField(
        "ActivateFirmwareAlert.alertCode",
        CraFlag.ALERT,
        CS06_ALERT,
        lambda n: _tlv(0x30, n + GT + SMALL + _tlv(0x30, SMALL + VERSION)),
        3,
        _alert_code,
    ),
    IntegerField(
        "ActivateFirmwareAlert.originatorCounter",
        CraFlag.ALERT,
        CS06_ALERT,
        lambda n: _tlv(0x30, SMALL + GT + n + _tlv(0x30, SMALL + VERSION)),
        9,
        _counter,
    ),
    IntegerField(
        "ExecutionOutcome.responseCode",
        CraFlag.ALERT,
        CS06_ALERT,
        lambda n: _tlv(0x30, SMALL + GT + SMALL + _tlv(0x30, n + VERSION)),
        2,
        _response_code,
    ),
]
FIELD_IDS = [f"{f.name}-{f.cra.name.lower()}" for f in INTEGER_FIELDS]


@pytest.mark.parametrize("field", INTEGER_FIELDS, ids=FIELD_IDS)
@pytest.mark.parametrize("first", [0x01, 0x80], ids=["positive", "negative"])
@pytest.mark.parametrize("octets", [0, 1786, 2000], ids=["one-too-many", "1786", "2000"])
def test_integer_longer_than_its_field_is_bad_payload_with_a_short_message(
    field: IntegerField, first: int, octets: int
) -> None:
    # Crash class: a negative INTEGER of 1,786 bytes or more was formatted into the
    # error message, and int -> str raises ValueError past 4,300 digits.
    frame = _signed_frame(
        field.cra, field.code, field.payload(_integer(octets or field.octets + 1, first))
    )
    with pytest.raises(gbcs.BadPayload) as caught:
        gbcs.decode_frame(frame)
    message = str(caught.value)
    assert field.name in message
    assert len(message) < 200


def test_the_reported_negative_counter_of_1786_bytes_is_refused() -> None:
    # The frame of the report (poa-gateway decode printed a traceback on it).
    data = bytes.fromhex(
        "DF09" + "01" + "00" * 8 + "08" + "00" * 8 + "08" + "00" * 8 + "00" + "02" + "0012"
        "820724" + "30820720" + "0420" + "00" * 32 + "028206FA" + "80" + "00" * 1785
    )
    with pytest.raises(gbcs.BadPayload) as caught:
        gbcs.decode_frame(data)
    assert str(caught.value) == (
        "bad-payload at byte 78: ActivateFirmware.originatorCounter: negative INTEGER "
        "80000000000000000000000000000000... (1786 bytes)"
    )


@pytest.mark.parametrize("field", INTEGER_FIELDS, ids=FIELD_IDS)
def test_largest_value_of_each_integer_field_decodes(field: IntegerField) -> None:
    largest = b"\x00" + b"\xff" * (field.octets - 1)  # 2**64 - 1, 0xFFFF, 0xFF
    frame = gbcs.decode_frame(
        _signed_frame(field.cra, field.code, field.payload(_tlv(0x02, largest)))
    )
    assert field.read(frame.payload) == int.from_bytes(largest, "big")


@pytest.mark.parametrize(
    "payload",
    [
        ActivateFirmwareCommand(bytes(32), 2**64),
        FutureDatedActivationAlert(0x10000, CANCELLATION_TIME, 1, ExecutionOutcome(0, b"")),
        FutureDatedActivationAlert(0x8F66, CANCELLATION_TIME, 2**64, ExecutionOutcome(0, b"")),
        ActivateFirmwareResponse(ExecutionOutcome(256, b"")),
        ActivateFirmwareResponse(ExecutionOutcome(-1, b"")),
    ],
    ids=["counter", "alert-code", "alert-counter", "response-code", "negative"],
)
def test_encoder_refuses_an_integer_its_field_cannot_carry(payload: Payload) -> None:
    with pytest.raises(gbcs.EncodeError):
        gbcs.encode_payload(payload)


def test_signed_alert_with_a_2000_byte_response_code_is_refused() -> None:
    # Crash class: such an alert decoded, and the daemon's log line of it raised.
    payload = _tlv(0x30, SMALL + GT + SMALL + _tlv(0x30, _integer(2000, 0x01) + VERSION))
    frame = _signed_frame(CraFlag.ALERT, CS06_ALERT, payload)
    with pytest.raises(gbcs.BadPayload) as caught:
        gbcs.decode_frame(frame)
    assert "ExecutionOutcome.responseCode" in str(caught.value)


@given(value=dlms_date_times)
def test_any_dlms_date_time_has_an_instant_or_none(value: DlmsDateTime) -> None:
    when = value.to_datetime()
    assert when is None or when.tzinfo is not None


def test_dlms_date_time_whose_utc_instant_is_past_9999_has_no_instant() -> None:
    # Crash class: local 9999-12-31T23:59 plus a deviation overflowed datetime, and
    # poa-gateway decode printed a traceback.
    late = DlmsDateTime(9999, 12, 31, 5, 23, 59, 0, 0, 720, 0)
    assert late.to_datetime() is None
    early = DlmsDateTime(1, 1, 1, 1, 0, 0, 0, 0, -720, 0)
    assert early.to_datetime() is None


def test_bad_generalized_time_is_quoted_clipped() -> None:
    payload = _tlv(0x30, _tlv(0x04, bytes(32)) + SMALL + _tlv(0x18, b"9" * 2000))
    with pytest.raises(gbcs.BadTime) as caught:
        gbcs.decode_frame(_signed_frame(CraFlag.COMMAND, CS06, payload))
    assert "(2000 bytes)" in str(caught.value)
    assert len(str(caught.value)) < 200


# -- strict prefixes ---------------------------------------------------------------


@pytest.mark.parametrize("path", VECTOR_PATHS, ids=[p.name for p in VECTOR_PATHS])
def test_every_strict_prefix_of_a_vector_is_rejected(path: Path) -> None:
    data = read_vector(path)
    accepted = [n for n in range(len(data)) if _decode_or_gbcs_error(data[:n]) is not None]
    assert accepted == [], f"prefixes of length {accepted} decode"


BARE_RESPONSES_AND_ALERTS = [
    (p, data)
    for p, data in zip(VECTOR_PATHS, VECTORS, strict=True)
    if data[0] == 0xDF and data[2] != CraFlag.COMMAND
]


@pytest.mark.parametrize(
    ("path", "data"), BARE_RESPONSES_AND_ALERTS, ids=[p.name for p, _ in BARE_RESPONSES_AND_ALERTS]
)
def test_response_or_alert_cut_after_its_payload_is_missing_its_signature(
    path: Path, data: bytes
) -> None:
    frame = gbcs.decode_frame(data)
    cut = 1 + len(frame.signed_data)  # 0xDF, then the signed bytes, then the signature field
    with pytest.raises(gbcs.BadSignatureField):
        gbcs.decode_frame(data[:cut])


def test_vectors_include_bare_responses_and_alerts() -> None:
    cras = {data[2] for _, data in BARE_RESPONSES_AND_ALERTS}
    assert cras == {CraFlag.RESPONSE, CraFlag.ALERT}


@settings(max_examples=300, deadline=None)
@given(spec=frame_specs())
def test_every_strict_prefix_of_a_generated_frame_is_rejected_except_a_pre_command(
    spec: FrameSpec,
) -> None:
    wire = spec.encode()
    full = gbcs.decode_frame(wire)
    for n in range(len(wire)):
        frame = _decode_or_gbcs_error(wire[:n])
        if frame is None:
            continue
        # The one legal exception: a bare command cut right after its payload is the
        # unsigned pre-command of the same command.
        assert full.mac_header is None
        assert full.header.cra_flag is CraFlag.COMMAND
        assert n == 1 + len(full.signed_data)
        assert not frame.signature_field
        assert frame.header == full.header
        assert frame.payload == full.payload


# -- encode / decode round trip ----------------------------------------------------


@settings(max_examples=1000, deadline=None)
@given(spec=frame_specs())
def test_encoded_frame_decodes_to_the_fields_it_was_built_from(spec: FrameSpec) -> None:
    wire = spec.encode()
    frame = gbcs.decode_frame(wire)
    assert frame.header == spec.header
    assert frame.payload == spec.payload
    assert frame.raw_payload == gbcs.encode_payload(spec.payload)
    assert frame.signature_field == spec.signature_field
    assert frame.mac_header == spec.mac_header
    assert frame.mac == spec.mac
    if spec.signed:
        assert frame.signature is not None
        assert len(frame.signature) == SIGNATURE_SIZE
        assert gbcs.verify_signature(frame.signed_data, frame.signature, KEY.public_key())
    else:
        assert frame.signature == spec.signature
    # The signed bytes are the general-signing APDU after 0xDF, up to the payload's end.
    raw = gbcs.encode_payload(spec.payload)
    assert frame.signed_data == (gbcs.encode_grouping_header(spec.header, len(raw)) + raw)[1:]
    start = _general_signing_start(wire, frame)
    assert wire[start] == 0xDF
    assert wire[start + 1 : start + 1 + len(frame.signed_data)] == frame.signed_data
    assert frame.signed_data.endswith(frame.raw_payload)
    assert _reencode(frame) == wire


# -- signatures --------------------------------------------------------------------


def _signed_region(wire: bytes, frame: Frame) -> range:
    """Offsets in ``wire`` of the bytes the signature covers (after 0xDF to payload end)."""
    start = _general_signing_start(wire, frame) + 1
    assert wire[start : start + len(frame.signed_data)] == frame.signed_data
    return range(start, start + len(frame.signed_data))


def _flip(wire: bytes, at: int, mask: int) -> bytes:
    return wire[:at] + bytes((wire[at] ^ mask,)) + wire[at + 1 :]


@settings(max_examples=100, deadline=None)
@given(spec=signed_frame_specs, mask=st.integers(1, 0xFF))
def test_signature_by_a_trusted_key_verifies_until_a_signed_byte_is_changed(
    spec: FrameSpec, mask: int
) -> None:
    wire = spec.encode()
    frame = gbcs.decode_frame(wire)
    eui = spec.header.originator
    signer = TrustedSigner(eui64=eui, role=RemotePartyRole.SUPPLIER, public_key=KEY.public_key())
    store = TrustStore([signer])

    verdict = gbcs.verify_frame(frame, store)
    assert verdict.status is SignatureStatus.VALID
    assert verdict.signer == signer
    assert gbcs.verify_frame(frame, TrustStore()).status is SignatureStatus.UNKNOWN_SIGNER
    impostor = TrustedSigner(
        eui64=eui, role=RemotePartyRole.SUPPLIER, public_key=OTHER_KEY.public_key()
    )
    assert gbcs.verify_frame(frame, TrustStore([impostor])).status is SignatureStatus.INVALID

    region = _signed_region(wire, frame)
    for at in region:
        tampered = _decode_or_gbcs_error(_flip(wire, at, mask))
        if tampered is None:
            continue
        status = gbcs.verify_frame(tampered, store).status
        # A changed originator EUI-64 names a signer the store does not know.
        expected = (
            SignatureStatus.INVALID
            if tampered.header.originator == eui
            else SignatureStatus.UNKNOWN_SIGNER
        )
        assert status is expected, f"byte {at} ^ 0x{mask:02X}: {status}"

    # A changed signature fails too (r or s may then exceed the group order: still
    # a plain INVALID, never an exception).
    for at in range(region.stop + 1, region.stop + 1 + SIGNATURE_SIZE):
        tampered = gbcs.decode_frame(_flip(wire, at, mask))
        assert gbcs.verify_frame(tampered, store).status is SignatureStatus.INVALID

    # The MAC header and the MAC are outside the signature: changing them keeps it valid.
    if frame.mac_header is not None:
        security = range(region.start - 1 - 5, region.start - 1)  # SC, IC[4], then 0xDF
        mac = range(len(wire) - MAC_SIZE, len(wire))
        for at in (*security, *mac):
            tampered = gbcs.decode_frame(_flip(wire, at, mask))
            assert gbcs.verify_frame(tampered, store).status is SignatureStatus.VALID


@pytest.mark.parametrize("r_or_s", ["r", "s"])
@pytest.mark.parametrize("value", [0, 2**256 - 1], ids=["zero", "above-group-order"])
def test_out_of_range_signature_halves_are_invalid_not_errors(r_or_s: str, value: int) -> None:
    header = GroupingHeader(
        cra_flag=CraFlag.ALERT,
        originator_counter=1,
        originator=bytes(8),
        recipient=bytes(8),
        message_code=0x1234,
    )
    good = gbcs.decode_frame(gbcs.encode_frame(header, OpaquePayload(b"x"), signer=KEY))
    assert good.signature is not None
    half = value.to_bytes(32, "big")
    signature = half + good.signature[32:] if r_or_s == "r" else good.signature[:32] + half
    frame = gbcs.decode_frame(gbcs.encode_frame(header, OpaquePayload(b"x"), signature=signature))
    store = TrustStore([TrustedSigner(bytes(8), RemotePartyRole.SUPPLIER, KEY.public_key())])
    assert gbcs.verify_frame(frame, store).status is SignatureStatus.INVALID


@given(st.binary(max_size=8))
def test_supplementary_certificate_of_8_bytes_or_fewer_is_refused_by_the_encoder(
    certificate: bytes,
) -> None:
    header = GroupingHeader(
        cra_flag=CraFlag.COMMAND,
        originator_counter=1,
        originator=b"A" * 8,
        recipient=b"B" * 8,
        message_code=0x1234,
        supplementary_remote_party=b"C" * 8,
        supplementary_remote_party_counter=5,
        supplementary_certificate=certificate,
    )
    with pytest.raises(gbcs.EncodeError):
        gbcs.encode_frame(header, b"xy")
