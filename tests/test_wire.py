"""The CBOR envelopes of WIRE.md: round trips, refusals with their reasons, and EUI-64 text."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

import cbor2
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.core.devices import DeviceStatus, DeviceType
from gateway.eui import eui64_to_int, format_eui64, int_to_eui64, parse_eui64
from gateway.wire import (
    DEFAULT_MAX_PAYLOAD,
    MAX_DEPTH,
    DccAlertEnvelope,
    Envelope,
    GbcsEnvelope,
    InventoryEnvelope,
    ReportNotice,
    SuppressionRecord,
    WireError,
    decode_dcc_alert,
    decode_gbcs,
    decode_inventory,
    decode_report_notice,
    decode_suppression_record,
    encode,
)

CHF = bytes.fromhex("00DB1234567890A0")
ESME = bytes.fromhex("00DB1234567890B1")
SUPPLIER = bytes.fromhex("90B3D51F30010000")

GBCS = GbcsEnvelope(
    v=1,
    kind="gbcs",
    frame=bytes.fromhex("DD0000000000000000"),
    sent_at=1_700_000_000_000,
    request_id="90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-B1:1000",
)
DCC_ALERT = DccAlertEnvelope(
    v=1,
    kind="dcc-alert",
    code="AD1",
    alert_id="ad1-0001",
    device_id=CHF,
    raised_at=1_700_000_000_000,
    sent_at=1_700_000_000_250,
)
INVENTORY = InventoryEnvelope(
    v=1,
    kind="inventory",
    device_id=ESME,
    device_type=DeviceType.ESME,
    smets=2,
    manufacturer="Landis+Gyr",
    model="E470",
    chf_id=CHF,
    status=DeviceStatus.COMMISSIONED,
)
SUPPRESSION = SuppressionRecord(
    v=1,
    kind="suppression",
    alert_id="ad1-0001",
    chf_id=CHF,
    esme_id=ESME,
    raised_at=1_700_000_000_000,
    received_at=1_700_000_000_300,
    window_start=1_699_999_900_000,
    window_end=1_700_001_700_000,
    request_id="90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-B1:1000",
    originator=SUPPLIER,
    originator_counter=1000,
    activation="on-demand",
)
REPORT = ReportNotice(
    v=1,
    kind="report",
    name="suppression-2023-11-14.csv",
    report_id="2023-11-14",
    period_start=1_699_920_000_000,
    period_end=1_700_006_400_000,
    records=42,
    sha256="e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855",
)

Decoder = Callable[[bytes], Envelope]

CASES: list[tuple[Envelope, Decoder]] = [
    (GBCS, decode_gbcs),
    (DCC_ALERT, decode_dcc_alert),
    (INVENTORY, decode_inventory),
    (SUPPRESSION, decode_suppression_record),
    (REPORT, decode_report_notice),
]
DECODERS: list[Decoder] = [decoder for _, decoder in CASES]


def cbor_map(fields: dict[str, Any] | list[tuple[Any, Any]]) -> bytes:
    """A definite-length CBOR map built item by item, so keys may repeat."""
    items = list(fields.items()) if isinstance(fields, dict) else fields
    assert len(items) < 24
    return bytes([0xA0 + len(items)]) + b"".join(
        cbor2.dumps(key) + cbor2.dumps(value) for key, value in items
    )


def alert_fields(**changes: Any) -> dict[str, Any]:
    """The DCC_ALERT map as plain values, with ``changes`` applied (``...`` deletes)."""
    fields: dict[str, Any] = msgspec.to_builtins(DCC_ALERT, builtin_types=(bytes,))
    fields.update(changes)
    return {key: value for key, value in fields.items() if value is not ...}


def refusal(data: bytes, decoder: Decoder = decode_dcc_alert) -> WireError:
    with pytest.raises(WireError) as caught:
        decoder(data)
    return caught.value


# --- round trips ---------------------------------------------------------------------


CASE_IDS = [type(envelope).__name__ for envelope, _ in CASES]


@pytest.mark.parametrize(("envelope", "decoder"), CASES, ids=CASE_IDS)
def test_each_envelope_survives_encode_then_decode(envelope: Envelope, decoder: Decoder) -> None:
    assert decoder(encode(envelope)) == envelope


def test_absent_optional_fields_are_left_out_of_the_map() -> None:
    bare = GbcsEnvelope(v=1, kind="gbcs", frame=b"\xdd", sent_at=0)
    assert cbor2.loads(encode(bare)) == {"v": 1, "kind": "gbcs", "frame": b"\xdd", "sent_at": 0}
    assert decode_gbcs(encode(bare)) == bare


def test_identifiers_are_encoded_as_cbor_byte_strings() -> None:
    assert cbor2.loads(encode(DCC_ALERT))["device_id"] == CHF
    # 0x48: major type 2 (byte string), length 8.
    assert b"\x48" + CHF in encode(DCC_ALERT)


def test_envelope_fields_are_encoded_in_contract_order() -> None:
    assert list(cbor2.loads(encode(INVENTORY))) == [
        "v",
        "kind",
        "device_id",
        "device_type",
        "smets",
        "manufacturer",
        "model",
        "chf_id",
        "status",
    ]


def test_a_hand_built_map_decodes() -> None:
    assert decode_dcc_alert(cbor_map(alert_fields())) == DCC_ALERT


def test_a_self_described_cbor_payload_decodes() -> None:
    # RFC 8949 section 3.4.6: tag 55799 only marks the bytes as CBOR.
    assert decode_dcc_alert(b"\xd9\xd9\xf7" + encode(DCC_ALERT)) == DCC_ALERT


# --- refusals: CBOR level ------------------------------------------------------------


def test_map_with_a_duplicate_key_is_refused() -> None:
    items = [*alert_fields().items(), ("alert_id", "ad1-0002")]
    error = refusal(cbor_map(items))
    assert error.reason == "duplicate-key"
    assert error.field == "alert_id"
    assert str(error) == "duplicate-key: duplicate map key 'alert_id'"
    assert isinstance(error.__cause__, cbor2.CBORDecodeError)


def test_nesting_deeper_than_the_bound_is_refused() -> None:
    nested: Any = b"\xdd"
    for _ in range(MAX_DEPTH):  # the top-level map is one more level
        nested = [nested]
    error = refusal(cbor_map(alert_fields(device_id=nested)))
    assert error.reason == "too-deep"
    assert error.field is None


def test_nesting_within_the_bound_is_a_bad_field() -> None:
    nested: Any = b"\xdd"
    for _ in range(MAX_DEPTH - 1):
        nested = [nested]
    error = refusal(cbor_map(alert_fields(device_id=nested)))
    assert (error.reason, error.field) == ("bad-field", "device_id")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xff",
        b"\x1c",  # reserved additional information
        b"\xa1\x61",  # truncated inside the first key
        bytes.fromhex("a1616162c3"),  # text string that is not UTF-8
        b"\xa1\x61a\x5b" + b"\xff" * 8,  # a byte string announcing 2**64 - 1 bytes
    ],
    ids=["empty", "break", "reserved", "truncated", "bad-utf8", "huge-length"],
)
def test_garbage_is_refused_as_bad_cbor(data: bytes) -> None:
    assert refusal(data).reason == "bad-cbor"


def test_every_strict_prefix_of_an_envelope_is_refused_as_bad_cbor() -> None:
    data = encode(DCC_ALERT)
    for end in range(len(data)):
        assert refusal(data[:end]).reason == "bad-cbor", end


@pytest.mark.parametrize("extra", [b"\x00", b"\xff", encode(DCC_ALERT)], ids=repr)
def test_bytes_after_the_map_are_refused_as_bad_cbor(extra: bytes) -> None:
    error = refusal(encode(DCC_ALERT) + extra)
    assert error.reason == "bad-cbor"
    assert f"{len(extra)} byte(s) after the end of the map" in str(error)


def test_indefinite_length_map_is_refused_as_bad_cbor() -> None:
    definite = cbor_map(alert_fields())
    indefinite = b"\xbf" + definite[1:] + b"\xff"
    assert refusal(indefinite).reason == "bad-cbor"


@pytest.mark.parametrize(
    "data",
    [cbor2.dumps([1, "dcc-alert"]), cbor2.dumps("dcc-alert"), cbor2.dumps(None)],
    ids=["array", "text", "null"],
)
def test_top_level_that_is_not_a_map_is_refused(data: bytes) -> None:
    error = refusal(data)
    assert (error.reason, error.field) == ("not-a-map", None)


def test_map_with_a_byte_string_key_is_refused_as_not_a_map() -> None:
    items = [*alert_fields().items(), (b"alert_id", "x")]
    assert refusal(cbor_map(items)).reason == "not-a-map"


# --- refusals: size and semantic tags -------------------------------------------------

INBOUND_DECODERS = [decode_gbcs, decode_dcc_alert, decode_inventory]


@pytest.mark.parametrize("decoder", INBOUND_DECODERS, ids=lambda d: d.__name__)
def test_payload_larger_than_max_payload_is_refused_without_being_read(
    decoder: Decoder,
) -> None:
    # Not CBOR at all: a decoder that read it would say bad-cbor.
    error = refusal(b"\xff" * (DEFAULT_MAX_PAYLOAD + 1), decoder)
    assert (error.reason, error.field) == ("too-large", None)
    assert str(error) == f"too-large: payload of {DEFAULT_MAX_PAYLOAD + 1} bytes, at most 65536"


@pytest.mark.parametrize("decoder", INBOUND_DECODERS, ids=lambda d: d.__name__)
def test_payload_of_exactly_max_payload_bytes_is_read(decoder: Decoder) -> None:
    assert refusal(b"\xff" * DEFAULT_MAX_PAYLOAD, decoder).reason == "bad-cbor"


def test_max_payload_is_a_keyword_of_each_decode_function() -> None:
    data = encode(DCC_ALERT)
    assert decode_dcc_alert(data, max_payload=len(data)) == DCC_ALERT
    with pytest.raises(WireError) as caught:
        decode_dcc_alert(data, max_payload=len(data) - 1)
    assert caught.value.reason == "too-large"
    assert refusal_of(lambda: decode_gbcs(encode(GBCS), max_payload=10)) == "too-large"
    assert refusal_of(lambda: decode_inventory(encode(INVENTORY), max_payload=10)) == "too-large"


def refusal_of(call: Callable[[], object]) -> str:
    with pytest.raises(WireError) as caught:
        call()
    return caught.value.reason


def tagged(tag: int, item: bytes) -> bytes:
    """A tag head (RFC 8949 section 3.4) in front of ``item``, built by hand."""
    if tag < 24:
        head = bytes([0xC0 | tag])
    elif tag < 0x100:
        head = bytes([0xD8, tag])
    elif tag < 0x10000:
        head = b"\xd9" + tag.to_bytes(2, "big")
    elif tag < 0x1_0000_0000:
        head = b"\xda" + tag.to_bytes(4, "big")
    else:
        head = b"\xdb" + tag.to_bytes(8, "big")
    return head + item


@pytest.mark.parametrize(
    ("tag", "item"),
    [
        (0, cbor2.dumps("2023-11-14T22:13:20Z")),  # date-time text
        (1, cbor2.dumps(1_700_000_000)),  # epoch date-time
        (2, cbor2.dumps(b"\x01" * 9)),  # positive bignum: 2**64 and beyond
        (3, cbor2.dumps(b"\x01" * 9)),  # negative bignum
        (4, cbor2.dumps([-2, 27315])),  # decimal fraction
        (5, cbor2.dumps([-1, 3])),  # bigfloat
        (28, cbor2.dumps([1])),  # shareable
        (30, cbor2.dumps([1, 0])),  # rational 1/0
        (258, cbor2.dumps([1, 2])),  # set
        (55799, cbor2.dumps(1)),  # self-describe, below the top
        (80_000, cbor2.dumps(1)),  # a tag no one registered
        (2**64 - 1, cbor2.dumps(1)),  # the largest tag number
    ],
    ids=lambda v: str(v) if isinstance(v, int) else "",
)
def test_every_semantic_tag_in_a_field_is_refused(tag: int, item: bytes) -> None:
    items = [(cbor2.dumps(k), cbor2.dumps(v)) for k, v in alert_fields().items()]
    items[-1] = (items[-1][0], tagged(tag, item))
    data = bytes([0xA0 + len(items)]) + b"".join(k + v for k, v in items)
    error = refusal(data)
    assert (error.reason, error.field) == ("tag-refused", None)
    assert str(error).startswith(f"tag-refused: CBOR tag {tag}: ")


@pytest.mark.parametrize(
    "prefix",
    [b"\xd9\xd9\xf7" * 2, b"\xda\x00\x00\xd9\xf7", tagged(1, b"")],
    ids=["self-describe-twice", "self-describe-long-head", "epoch-time"],
)
def test_a_tag_around_the_map_is_refused_unless_it_is_one_self_describe_head(
    prefix: bytes,
) -> None:
    assert refusal(prefix + encode(DCC_ALERT)).reason == "tag-refused"


def test_a_tag_is_refused_before_the_item_it_tags_is_read() -> None:
    # The tag's item is missing: read, it would be bad-cbor (truncated).
    assert refusal(b"\xa1\x61v" + tagged(4, b"")).reason == "tag-refused"


def test_decimal_fraction_with_a_60_kb_mantissa_is_refused_unevaluated() -> None:
    # Crash class: cbor2 evaluates tag 4 natively, and {"v": 4([e, 2(100 KB)])} held the
    # event loop for 9 s. Within max_payload, the tag is refused before its item is read.
    mantissa = tagged(2, b"\x5a" + (60_000).to_bytes(4, "big") + b"\x7f" * 60_000)
    data = b"\xa1\x61v" + tagged(4, b"\x82\x22" + mantissa)
    assert len(data) <= DEFAULT_MAX_PAYLOAD
    error = refusal(data, decode_gbcs)
    assert error.reason == "tag-refused"
    assert len(str(error)) < 200


def test_decimal_fraction_with_a_100_kb_mantissa_is_too_large() -> None:
    mantissa = cbor2.CBORTag(2, b"\x7f" * 100_000)
    data = cbor2.dumps({"v": cbor2.CBORTag(4, [-3, mantissa])})
    assert refusal(data, decode_gbcs).reason == "too-large"


# --- refusals: envelope level --------------------------------------------------------


def test_unknown_key_is_refused_and_named() -> None:
    error = refusal(cbor_map(alert_fields(device_id=..., devce_id=CHF)))
    assert (error.reason, error.field) == ("unknown-field", "devce_id")
    assert str(error) == "unknown-field: unknown field 'devce_id'"
    assert isinstance(error.__cause__, msgspec.ValidationError)


def test_missing_required_field_is_named() -> None:
    error = refusal(cbor_map(alert_fields(raised_at=...)))
    assert (error.reason, error.field) == ("missing-field", "raised_at")
    assert str(error) == "missing-field: missing required field 'raised_at'"


@pytest.mark.parametrize("length", [0, 7, 9])
def test_device_id_of_the_wrong_length_is_named(length: int) -> None:
    error = refusal(cbor_map(alert_fields(device_id=bytes(length))))
    assert (error.reason, error.field) == ("bad-field", "device_id")
    assert str(error) == f"bad-field: device_id: expected 8 bytes, got {length}"


def test_text_is_never_taken_for_a_byte_string() -> None:
    # msgspec would otherwise read this as base64 for 8 bytes.
    error = refusal(cbor_map(alert_fields(device_id="AAAAAAAAAAA=")))
    assert (error.reason, error.field) == ("bad-field", "device_id")
    assert str(error) == "bad-field: device_id: expected bytes, got str"


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        (-1, "expected int >= 0, got -1"),
        (-(2**64), "expected int >= 0, got -18446744073709551616"),  # CBOR's most negative
        (1.7e12, "expected int, got float"),
        (True, "expected int, got bool"),
        ("1700000000000", "expected int, got str"),
        ([1], "expected int, got array"),
    ],
    ids=["negative", "most-negative", "float", "bool", "text", "array"],
)
def test_time_of_the_wrong_type_or_range_is_named(value: object, shown: str) -> None:
    error = refusal(cbor2.dumps(alert_fields(sent_at=value)))
    assert (error.reason, error.field) == ("bad-field", "sent_at")
    assert str(error) == f"bad-field: sent_at: {shown}"


def test_the_largest_cbor_integer_is_a_valid_time() -> None:
    assert decode_dcc_alert(cbor2.dumps(alert_fields(sent_at=2**64 - 1))).sent_at == 2**64 - 1


def test_value_outside_an_enumeration_lists_the_allowed_ones() -> None:
    fields = msgspec.to_builtins(INVENTORY, builtin_types=(bytes,)) | {"device_type": "METER"}
    error = refusal(cbor2.dumps(fields), decode_inventory)
    assert (error.reason, error.field) == ("bad-field", "device_type")
    assert str(error) == (
        "bad-field: device_type: invalid value 'METER', expected one of "
        "'ESME', 'GSME', 'CHF', 'GPF', 'PPMID', 'HCALCS', 'TYPE2'"
    )


def test_inventory_supplier_id_is_optional_and_an_eui64() -> None:
    assert INVENTORY.supplier_id is None
    assert "supplier_id" not in cbor2.loads(encode(INVENTORY))
    fields = msgspec.to_builtins(INVENTORY, builtin_types=(bytes,))
    assert decode_inventory(cbor2.dumps(fields | {"supplier_id": SUPPLIER})).supplier_id == (
        SUPPLIER
    )
    for bad in (SUPPLIER[:7], SUPPLIER + b"\x00", format_eui64(SUPPLIER)):
        error = refusal(cbor2.dumps(fields | {"supplier_id": bad}), decode_inventory)
        assert (error.reason, error.field) == ("bad-field", "supplier_id")


def test_inventory_mpan_is_optional_and_thirteen_digits_on_the_wire() -> None:
    assert INVENTORY.mpan is None
    assert "mpan" not in cbor2.loads(encode(INVENTORY))
    fields = msgspec.to_builtins(INVENTORY, builtin_types=(bytes,))
    mpan = "1312345678907"  # a published example core (tests/test_mpan.py)
    assert decode_inventory(cbor2.dumps(fields | {"mpan": mpan})).mpan == mpan
    # Strictly 13 ASCII digits: the spaces of a bill are for CSV extracts typed by people.
    for bad in (
        "131234567890",
        "13123456789070",
        "13 1234 5678 907",
        "1312345678907\n",
        1312345678907,
    ):
        error = refusal(cbor2.dumps(fields | {"mpan": bad}), decode_inventory)
        assert (error.reason, error.field) == ("bad-field", "mpan")
    # The check digit is the inventory's to judge (from_envelope: invalid-record).
    assert decode_inventory(cbor2.dumps(fields | {"mpan": "1312345678900"})).mpan == "1312345678900"


@pytest.mark.parametrize("alert_id", ["", "x" * 129, None, b"ad1-0001"])
def test_bad_alert_id_is_named(alert_id: object) -> None:
    error = refusal(cbor2.dumps(alert_fields(alert_id=alert_id)))
    assert (error.reason, error.field) == ("bad-field", "alert_id")


def test_alert_id_of_128_characters_is_accepted() -> None:
    assert decode_dcc_alert(cbor2.dumps(alert_fields(alert_id="x" * 128))).alert_id == "x" * 128


@pytest.mark.parametrize("digest", ["E3B0" + "0" * 60, "0" * 63, "0" * 64 + "\n", "g" * 64])
def test_sha256_must_be_64_lowercase_hex_digits(digest: str) -> None:
    fields = msgspec.to_builtins(REPORT, builtin_types=(bytes,)) | {"sha256": digest}
    error = refusal(cbor2.dumps(fields), decode_report_notice)
    assert (error.reason, error.field) == ("bad-field", "sha256")


def test_envelope_of_another_kind_is_refused_as_wrong_kind() -> None:
    error = refusal(encode(DCC_ALERT), decode_inventory)
    assert (error.reason, error.field) == ("wrong-kind", "kind")
    assert str(error) == "wrong-kind: kind: expected 'inventory', got 'dcc-alert'"


def test_unheard_of_kind_is_refused_as_wrong_kind() -> None:
    assert refusal(cbor2.dumps(alert_fields(kind="alert"))).reason == "wrong-kind"


def test_kind_that_is_not_text_is_a_bad_field() -> None:
    error = refusal(cbor2.dumps(alert_fields(kind=1)))
    assert (error.reason, error.field) == ("bad-field", "kind")


def test_other_version_is_refused_before_its_fields_are_judged() -> None:
    # A future version may add fields: report the version, not the unknown field.
    error = refusal(cbor2.dumps(alert_fields(v=2, priority="high")))
    assert (error.reason, error.field) == ("bad-version", "v")
    assert str(error) == "bad-version: v: expected 1, got 2"


@pytest.mark.parametrize("version", [True, 1.0, "1"], ids=repr)
def test_version_that_is_not_an_integer_is_a_bad_field(version: object) -> None:
    error = refusal(cbor2.dumps(alert_fields(v=version)))
    assert (error.reason, error.field) == ("bad-field", "v")


def test_missing_version_is_named() -> None:
    error = refusal(cbor2.dumps(alert_fields(v=...)))
    assert (error.reason, error.field) == ("missing-field", "v")


# --- properties ----------------------------------------------------------------------


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(data=st.binary())
def test_any_bytes_decode_or_raise_wire_error(decoder: Decoder, data: bytes) -> None:
    with contextlib.suppress(WireError):
        decoder(data)


FIELD_NAMES = sorted({name for envelope, _ in CASES for name in envelope.__struct_fields__})
cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=10)
    | st.binary(max_size=10)
    | st.sampled_from(["gbcs", "dcc-alert", "inventory", "ESME", "on-demand"]),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=3), children, max_size=3)
    ),
    max_leaves=12,
)


@pytest.mark.parametrize("decoder", DECODERS, ids=lambda d: d.__name__)
@given(fields=st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=4), cbor_values))
def test_any_map_decodes_or_raises_wire_error(decoder: Decoder, fields: dict[str, Any]) -> None:
    with contextlib.suppress(WireError):
        decoder(cbor2.dumps(fields))


@pytest.mark.parametrize(("envelope", "decoder"), CASES, ids=CASE_IDS)
@given(data=st.data())
def test_any_value_in_any_field_decodes_or_raises_wire_error(
    envelope: Envelope, decoder: Decoder, data: st.DataObject
) -> None:
    fields: dict[str, Any] = msgspec.to_builtins(envelope, builtin_types=(bytes,))
    fields[data.draw(st.sampled_from(envelope.__struct_fields__))] = data.draw(cbor_values)
    try:
        decoder(cbor2.dumps(fields))
    except WireError as error:
        failure = error
    else:
        return
    # Only one field was touched, so the error must name it, unless it nests too deep or
    # is tagged (an integer past 64 bits is a bignum tag): both are refused while cbor2
    # reads, before any field is known.
    assert failure.field is not None or failure.reason in ("too-deep", "tag-refused"), failure


uints = st.integers(min_value=0, max_value=2**64 - 1)
euis = st.binary(min_size=8, max_size=8)


@given(
    record=st.builds(
        SuppressionRecord,
        v=st.just(1),
        kind=st.just("suppression"),
        alert_id=st.text(min_size=1, max_size=128),
        chf_id=euis,
        esme_id=euis,
        raised_at=uints,
        received_at=uints,
        window_start=uints,
        window_end=uints,
        request_id=st.none() | st.text(),
        originator=euis,
        originator_counter=uints,
        activation=st.sampled_from(["on-demand", "future-dated"]),
    )
)
def test_any_valid_suppression_record_survives_encode_then_decode(
    record: SuppressionRecord,
) -> None:
    assert decode_suppression_record(encode(record)) == record


# --- EUI-64 text ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "00-DB-12-34-56-78-90-A0",
        "00DB1234567890A0",
        "00:db:12:34:56:78:90:a0",
        "00-db-12-34-56-78-90-A0",
        "  00DB1234567890a0\n",
    ],
)
def test_eui64_is_parsed_in_each_notation(text: str) -> None:
    assert parse_eui64(text) == CHF


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ("00-DB-12-34-56-78-90", "expected 8 groups of 2 hex digits separated by '-'"),
        ("00-DB-12-34-56-78-90-A0-00", "expected 8 groups"),
        ("0-DB-12-34-56-78-90-A00", "expected 8 groups"),
        ("00DB1234567890A", "expected 16 hex digits, got 15 characters"),
        ("00DB1234567890A0FF", "expected 16 hex digits, got 18 characters"),
        ("", "expected 16 hex digits, got 0 characters"),
        ("00DB1234567890AG", "'G' is not a hex digit"),
        ("00 DB 12 34 56 78 90 A0", "expected 16 hex digits"),
        ("00DB 234567890A0", "' ' is not a hex digit"),
        ("00-DB-12-34:56-78-90-A0", "mixes '-' and ':' separators"),
        ("0x00DB1234567890", "'x' is not a hex digit"),
        ("00-DB-12-34-56-78-90-A\u0660", "is not a hex digit"),  # Arabic-Indic zero
    ],
)
def test_eui64_that_is_not_in_one_notation_is_rejected_with_a_reason(
    text: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match="EUI-64") as caught:
        parse_eui64(text)
    assert complaint in str(caught.value)


def test_eui64_is_formatted_in_dcc_notation() -> None:
    assert format_eui64(CHF) == "00-DB-12-34-56-78-90-A0"


def test_eui64_converts_to_and_from_its_big_endian_integer() -> None:
    assert eui64_to_int(CHF) == 0x00DB1234567890A0
    assert int_to_eui64(0x00DB1234567890A0) == CHF
    assert int_to_eui64(2**64 - 1) == b"\xff" * 8


@pytest.mark.parametrize("n", [-1, 2**64])
def test_integer_outside_64_bits_is_not_an_eui64(n: int) -> None:
    with pytest.raises(ValueError, match="out of range"):
        int_to_eui64(n)


@pytest.mark.parametrize("eui", [b"", bytes(7), bytes(9)])
def test_eui64_of_the_wrong_length_has_no_integer(eui: bytes) -> None:
    with pytest.raises(ValueError, match="must be 8 bytes"):
        eui64_to_int(eui)


@given(eui=euis)
def test_eui64_survives_format_then_parse_and_int_round_trip(eui: bytes) -> None:
    assert parse_eui64(format_eui64(eui)) == eui
    assert int_to_eui64(eui64_to_int(eui)) == eui
