"""The CBOR envelopes of the broker contract (WIRE.md) and the boundary that reads them.

Theory of operation
-------------------
Every MQTT payload the gateway reads or writes is one CBOR map with text keys (RFC 8949).
Each kind of payload is a frozen :class:`msgspec.Struct` below; field names are the CBOR
keys, times are integers (milliseconds since the Unix epoch, UTC) and EUI-64 identifiers
are 8-byte byte strings.

Bytes from the broker become a Struct in exactly one place, :func:`_decode`, behind one
public function per envelope (:func:`decode_gbcs` ...). It works in three steps:

1. **CBOR.** A payload larger than ``max_payload`` bytes is refused before any of it is
   read. Then cbor2 reads one data item with the defences a decoder facing the network
   needs: duplicate map keys are refused (two readers could disagree on which
   ``device_id`` counts), indefinite-length items are refused (the contract never uses
   them), nesting is bounded by :data:`MAX_DEPTH` (the envelopes are flat maps), map keys
   must be text or byte strings (no hash-collision games) and nothing may follow the map
   (``cbor2.loads`` would silently ignore trailing bytes, so the decoder is driven by
   hand and its position checked). Semantic tags are refused as soon as their head is
   read, before the tagged item is: cbor2 evaluates bignums, decimal fractions and
   bigfloats natively, and a tag-4 value with a 100 KB mantissa took seconds of the event
   loop. The contract needs no tag; the self-describe tag 55799 (RFC 8949 section 3.4.6),
   which adds no meaning, is accepted as the payload's first three bytes only.
2. **Header.** The top level must be a map with text keys. ``v`` is checked first, since
   a future version may change every other field; then ``kind``, so that an envelope on
   the wrong topic is reported as such rather than as a pile of unknown fields.
3. **Fields.** ``msgspec.convert(strict=True)`` builds the Struct: no coercion between
   types (a text string is never taken for a byte string), unknown keys refused, and the
   constraints on each field (``ge=0`` times, 8-byte identifiers...) checked.

Whatever goes wrong, the caller sees a :class:`WireError` whose ``reason`` is one stable
code (a log field and a metric label) and whose ``field`` names the offending key when
there is one. Third-party exceptions are translated once, in :func:`_decode`, and chained
with ``raise ... from``; nothing else escapes a decode function.

:func:`encode` is the inverse for the envelopes the gateway publishes: byte strings stay
CBOR byte strings and absent optional fields are left out of the map.
"""

from __future__ import annotations

import enum
import io
import re
import typing
from collections.abc import Mapping
from typing import Annotated, Any, Final, Literal, NoReturn, TypeAlias, TypeVar

import cbor2
import msgspec

from .core.devices import DeviceStatus, DeviceType
from .errors import GatewayError
from .eui import EUI64_LENGTH

__all__ = [
    "DEFAULT_MAX_PAYLOAD",
    "MAX_DEPTH",
    "ActivationKind",
    "AlertId",
    "DccAlertEnvelope",
    "DeviceStatus",
    "DeviceType",
    "Envelope",
    "EpochMillis",
    "Eui64",
    "GbcsEnvelope",
    "InventoryEnvelope",
    "MpanDigits",
    "QuarantineNotice",
    "ReportNotice",
    "Sha256Hex",
    "SuppressionRecord",
    "Uint",
    "WireError",
    "WireReason",
    "decode_dcc_alert",
    "decode_gbcs",
    "decode_inventory",
    "decode_quarantine_notice",
    "decode_report_notice",
    "decode_suppression_record",
    "encode",
]

MAX_DEPTH = 8
"""Deepest CBOR nesting accepted (the top-level map counts as 1).

Every envelope is a flat map, so 2 would do; the slack lets a value of the wrong shape
(an array where a byte string belongs) be reported as ``bad-field`` naming the field,
while still bounding the decoder's recursion.
"""

DEFAULT_MAX_PAYLOAD = 64 * 1024
"""Largest payload a decode function reads by default, in bytes (``[broker] max_payload``).

The largest envelopes of the contract are ``gbcs`` ones, whose frames are GBCS APDUs (the
RTDS 4.5.0 frames are 55 to 1,894 bytes); 64 KiB leaves ample room for them while
bounding the work a hostile payload can cause.
"""

Uint: TypeAlias = Annotated[int, msgspec.Meta(ge=0)]
"""A CBOR ``uint``: 0 .. 2**64 - 1.

msgspec cannot express an upper bound beyond int64 (an 8-byte GBCS originator counter
needs the full range); none is needed: a CBOR integer has at most 64 bits, and the
bignum tags that could carry more are refused by :func:`_decode`.
"""

EpochMillis: TypeAlias = Uint
"""A point in time: milliseconds since the Unix epoch, UTC."""

Eui64: TypeAlias = Annotated[bytes, msgspec.Meta(min_length=EUI64_LENGTH, max_length=EUI64_LENGTH)]
"""An EUI-64 device or party identifier: exactly 8 bytes (``bstr .size 8``)."""

AlertId: TypeAlias = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
"""A DCC alert identifier: the de-duplication key, so never empty, and bounded."""

RequestId: TypeAlias = Annotated[str, msgspec.Meta(max_length=256)]
"""A DUIS RequestID (``originator:target:counter``, about 60 characters); bounded so a
rogue value cannot bloat logs, records and report cells."""

Sha256Hex: TypeAlias = Annotated[str, msgspec.Meta(max_length=64, pattern="^[0-9a-f]{64}$")]
"""A SHA-256 digest as 64 lowercase hex digits.

``max_length`` is not redundant: ``$`` also matches before a final newline.
"""

_NonEmptyStr: TypeAlias = Annotated[str, msgspec.Meta(min_length=1)]

MpanDigits: TypeAlias = Annotated[str, msgspec.Meta(max_length=13, pattern="^[0-9]{13}$")]
"""An MPAN core as the wire carries it: exactly 13 ASCII digits, no spaces. The check
digit is not checked here but by the inventory (gateway/core/mpan.py), which refuses a
wrong one with ``invalid-record`` naming ``mpan``."""

ActivationKind: TypeAlias = Literal["on-demand", "future-dated"]
"""How the CS06 that opened a suppression window asked for activation."""


# Every envelope is frozen (a value, not state), refuses unknown keys (a producer's typo
# fails with the key's name), omits None optionals when encoded, and is built with
# keywords only: the records carry several integer times side by side, and a positional
# mix-up of raised_at and sent_at would still type-check.


class GbcsEnvelope(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """A GBCS message as the DSP carries it (``dsp/gbcs/command``, ``csp/gbcs/inbound``).

    ``frame`` is the message exactly as on the wire: signatures are verified over these
    bytes, never over a re-encoding.
    """

    v: Literal[1]
    kind: Literal["gbcs"]
    frame: bytes
    sent_at: EpochMillis
    request_id: RequestId | None = None  # DUIS RequestID "originator:target:counter"


class DccAlertEnvelope(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """A DCC Alert (``csp/dcc/alert``); AD1 is the Power Outage Alert raised for a CHF."""

    v: Literal[1]
    kind: Literal["dcc-alert"]
    code: _NonEmptyStr
    alert_id: AlertId
    device_id: Eui64  # the CHF that raised it
    raised_at: EpochMillis  # event time at the CSP/CHF
    sent_at: EpochMillis  # when it was put on the broker


class InventoryEnvelope(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """One device's Smart Metering Inventory entry (``dsp/inventory``)."""

    v: Literal[1]
    kind: Literal["inventory"]
    device_id: Eui64
    device_type: DeviceType
    smets: Literal[1, 2]
    manufacturer: _NonEmptyStr
    model: str | None = None
    chf_id: Eui64 | None = None  # the CHF on whose HAN the device sits; absent for a CHF
    status: DeviceStatus
    # The remote party id of the meter's registered import supplier, when the DSP knows
    # it: only that Supplier's CS06 then opens a window. Absent: any Supplier's does.
    supplier_id: Eui64 | None = None
    # The 13-digit MPAN core of the meter point, when the DSP knows it (an ESME's):
    # it names the meter point and, by its first two digits, the distributor.
    mpan: MpanDigits | None = None


class SuppressionRecord(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """One suppressed AD1: the live record on ``gateway/suppressed``.

    ``window_start``/``window_end`` are the suppression window the alert fell into, and
    ``originator``/``originator_counter``/``request_id`` identify the CS06 that opened it.
    """

    v: Literal[1]
    kind: Literal["suppression"]
    alert_id: AlertId
    chf_id: Eui64
    esme_id: Eui64
    raised_at: EpochMillis
    received_at: EpochMillis
    window_start: EpochMillis
    window_end: EpochMillis
    request_id: RequestId | None = None
    originator: Eui64
    originator_counter: Uint
    activation: ActivationKind


class ReportNotice(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """A closed suppression report file (``gateway/reports``): name, period, count, digest."""

    v: Literal[1]
    kind: Literal["report"]
    name: _NonEmptyStr
    report_id: _NonEmptyStr
    period_start: EpochMillis
    period_end: EpochMillis
    records: Uint
    sha256: Sha256Hex
    # The two-digit distributor id of a distributor's file (reports.split); absent for
    # the consolidated report.
    distributor: Annotated[str, msgspec.Meta(pattern="^[0-9]{2}$")] | None = None


class QuarantineNotice(
    msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True, kw_only=True
):
    """A message the gateway could not handle (``gateway/quarantine``): kept with its
    topic and exact bytes so that an operator can look at it and replay it once fixed.

    ``id`` is derived from the topic and the bytes, so a redelivered copy of the same
    message names the same entry.
    """

    v: Literal[1]
    kind: Literal["quarantine"]
    id: _NonEmptyStr
    topic: _NonEmptyStr
    payload: bytes
    reason: _NonEmptyStr  # the exception class: a bounded vocabulary
    error: str  # the exception's text, clipped
    attempts: Uint
    received_at: EpochMillis
    quarantined_at: EpochMillis
    forwarded: bool  # a DCC alert is still forwarded to the DNOs (safety direction)


Envelope: TypeAlias = (
    GbcsEnvelope
    | DccAlertEnvelope
    | InventoryEnvelope
    | SuppressionRecord
    | ReportNotice
    | QuarantineNotice
)
"""Any envelope of the contract."""


class WireReason(enum.StrEnum):
    """The stable reason codes of :class:`WireError` (a log field and the ``reason`` label
    of ``poa_decode_errors_total``, and of ``poa_alerts_total`` for a rejected alert)."""

    TOO_LARGE = "too-large"
    BAD_CBOR = "bad-cbor"
    TAG_REFUSED = "tag-refused"
    DUPLICATE_KEY = "duplicate-key"
    TOO_DEEP = "too-deep"
    NOT_A_MAP = "not-a-map"
    UNKNOWN_FIELD = "unknown-field"
    MISSING_FIELD = "missing-field"
    BAD_FIELD = "bad-field"
    WRONG_KIND = "wrong-kind"
    BAD_VERSION = "bad-version"


class WireError(GatewayError):
    """A payload from the broker that is not the envelope it should be.

    Attributes:
        reason: stable, machine-readable code:

            - ``too-large``: the payload is longer than ``max_payload`` bytes (not read);
            - ``bad-cbor``: not well-formed CBOR, truncated, or bytes after the map;
            - ``tag-refused``: a CBOR semantic tag (only a leading 55799 is accepted);
            - ``duplicate-key``: a map has the same key twice;
            - ``too-deep``: nested deeper than :data:`MAX_DEPTH`;
            - ``not-a-map``: the top level is not a map with text keys;
            - ``unknown-field`` / ``missing-field``: a key the envelope does not have,
              or lacks one it requires;
            - ``bad-field``: a value of the wrong type or outside its constraints;
            - ``wrong-kind``: ``kind`` is a text string other than this envelope's
              (typically another envelope on the wrong topic);
            - ``bad-version``: ``v`` is an integer other than 1.
        field: the key concerned, or None when the fault is not about one field.
        detail: human-readable explanation (bounded in length).
    """

    def __init__(self, reason: WireReason, detail: str, *, field: str | None = None) -> None:
        self.reason: WireReason = reason
        self.field = field
        self.detail = detail
        super().__init__(f"{reason}: {detail}")


def decode_gbcs(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> GbcsEnvelope:
    """Decode a ``gbcs`` envelope of at most ``max_payload`` bytes. Raises :class:`WireError`."""
    return _decode(data, GbcsEnvelope, "gbcs", max_payload)


def decode_dcc_alert(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> DccAlertEnvelope:
    """Decode a ``dcc-alert`` envelope of at most ``max_payload`` bytes. Raises
    :class:`WireError`."""
    return _decode(data, DccAlertEnvelope, "dcc-alert", max_payload)


def decode_inventory(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> InventoryEnvelope:
    """Decode an ``inventory`` envelope of at most ``max_payload`` bytes. Raises
    :class:`WireError`."""
    return _decode(data, InventoryEnvelope, "inventory", max_payload)


def decode_suppression_record(
    data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> SuppressionRecord:
    """Decode a ``suppression`` record (``gateway/suppressed``). Raises :class:`WireError`."""
    return _decode(data, SuppressionRecord, "suppression", max_payload)


def decode_report_notice(data: bytes, *, max_payload: int = DEFAULT_MAX_PAYLOAD) -> ReportNotice:
    """Decode a ``report`` notice (``gateway/reports``). Raises :class:`WireError`."""
    return _decode(data, ReportNotice, "report", max_payload)


def decode_quarantine_notice(data: bytes) -> QuarantineNotice:
    """Decode a ``quarantine`` notice (``gateway/quarantine``). Raises :class:`WireError`."""
    return _decode(data, QuarantineNotice, "quarantine")


def encode(envelope: Envelope) -> bytes:
    """The CBOR map for ``envelope``; optional fields left at None are omitted.

    Struct construction does not check the field constraints (``Meta``), so build
    envelopes from values that are already valid: a record that breaks them would be
    refused by every reader.
    """
    # builtin_types keeps bytes as bytes (CBOR byte strings) instead of base64 text.
    return cbor2.dumps(msgspec.to_builtins(envelope, builtin_types=(bytes,)))


_E = TypeVar("_E", bound=msgspec.Struct)


# Tag 55799 as RFC 8949 section 3.4.6 writes it: the head d9 d9 f7 in front of the item.
_SELF_DESCRIBED: Final = b"\xd9\xd9\xf7"


class _TagRefused(GatewayError):
    def __init__(self, tag: int) -> None:
        super().__init__(tag)
        self.tag = tag


def _tag_refused(tag: int) -> WireError:
    return WireError(
        WireReason.TAG_REFUSED,
        f"CBOR tag {tag}: the contract uses no semantic tags "
        "(a leading self-describe tag 55799 excepted)",
    )


class _RefuseEveryTag(dict[int, cbor2.SemanticDecoderCallback]):
    # cbor2 looks the tag number up in ``semantic_decoders`` as soon as it has read a
    # tag's head, before it reads the tagged item, and falls back to its own decoders
    # only on a LookupError. This empty mapping answers every lookup by raising, so no
    # tag is ever evaluated, and records which tag it refused (cbor2 reports the refusal
    # as a CBORDecodeError whose text is its own). One per decode: it holds that state.
    def __init__(self) -> None:
        super().__init__()
        self.refused: int | None = None

    def __missing__(self, tag: int) -> NoReturn:
        self.refused = tag
        raise _TagRefused(tag)


def _decode(
    data: bytes, envelope_type: type[_E], kind: str, max_payload: int = DEFAULT_MAX_PAYLOAD
) -> _E:
    if len(data) > max_payload:
        raise WireError(
            WireReason.TOO_LARGE, f"payload of {len(data)} bytes, at most {max_payload}"
        )
    if data[:3] == _SELF_DESCRIBED:
        data = data[3:]
    stream = io.BytesIO(data)
    tags = _RefuseEveryTag()
    # CBORDecoder rather than cbor2.loads: loads ignores bytes after the first item.
    decoder = cbor2.CBORDecoder(
        stream,
        max_depth=MAX_DEPTH,
        allow_duplicate_keys=False,
        allow_indefinite=False,
        strict_hashable_types=True,
        semantic_decoders=tags,
    )
    try:
        obj = decoder.decode()
    except _TagRefused as exc:  # (cbor2 6 wraps it in a CBORDecodeError)
        raise _tag_refused(exc.tag) from exc
    except cbor2.CBORDecodeError as exc:
        if tags.refused is not None:
            raise _tag_refused(tags.refused) from exc
        raise _cbor_error(exc, envelope_type) from exc
    trailing = len(data) - stream.tell()
    if trailing:
        raise WireError(WireReason.BAD_CBOR, f"{trailing} byte(s) after the end of the map")
    if not isinstance(obj, Mapping):
        raise WireError(WireReason.NOT_A_MAP, f"top level must be a CBOR map, got {_show(obj)}")
    fields = dict(obj)
    _check_header(fields, kind)
    try:
        return msgspec.convert(fields, envelope_type, strict=True, builtin_types=(bytes,))
    except msgspec.ValidationError as exc:
        raise _validation_error(exc, fields, envelope_type) from exc


def _check_header(obj: dict[Any, Any], kind: str) -> None:
    for key in obj:
        if type(key) is not str:
            raise WireError(
                WireReason.NOT_A_MAP, f"map keys must be text strings, got {_show(key)}"
            )
    version = obj.get("v")
    if _is_int(version) and version != 1:
        raise WireError(WireReason.BAD_VERSION, f"v: expected 1, got {_show(version)}", field="v")
    found = obj.get("kind")
    if isinstance(found, str) and found != kind:
        raise WireError(
            WireReason.WRONG_KIND, f"kind: expected {kind!r}, got {_show(found)}", field="kind"
        )


# cbor2 6 reports these faults only through the message text (pinned <7 in
# pyproject.toml; tests/test_wire.py checks each one).
_DUPLICATE_KEY = re.compile(r"Duplicate map key: (?P<key>.*)", re.DOTALL)
_FIELD_NAME = re.compile(r"'(?P<name>[A-Za-z_][A-Za-z0-9_-]*)'")


def _cbor_error(exc: cbor2.CBORDecodeError, envelope_type: type[msgspec.Struct]) -> WireError:
    text = str(exc)
    duplicate = _DUPLICATE_KEY.search(text)
    if duplicate is not None:
        shown = _clip(duplicate["key"])
        name = _FIELD_NAME.fullmatch(shown)
        field = name["name"] if name and name["name"] in envelope_type.__struct_fields__ else None
        return WireError(WireReason.DUPLICATE_KEY, f"duplicate map key {shown}", field=field)
    if "maximum container nesting depth" in text:
        return WireError(WireReason.TOO_DEEP, f"nested deeper than {MAX_DEPTH} levels")
    cause = f" ({exc.__cause__})" if exc.__cause__ is not None else ""
    return WireError(WireReason.BAD_CBOR, _clip(f"not well-formed CBOR: {text}{cause}"))


_UNKNOWN = re.compile(r"Object contains unknown field `(?P<field>.*)`", re.DOTALL)
_MISSING = re.compile(r"Object missing required field `(?P<field>.*)`", re.DOTALL)
_AT_FIELD = re.compile(r"(?P<what>.*) - at `\$\.(?P<field>[A-Za-z_][A-Za-z0-9_]*)[^`]*`", re.DOTALL)
_BYTES_LENGTH = re.compile(r"Expected `bytes` of length [<>]= \d+")


def _validation_error(
    exc: msgspec.ValidationError, obj: dict[str, Any], envelope_type: type[msgspec.Struct]
) -> WireError:
    text = str(exc)
    if match := _UNKNOWN.fullmatch(text):
        field = _clip(match["field"], 64)
        return WireError(WireReason.UNKNOWN_FIELD, f"unknown field {field!r}", field=field)
    if match := _MISSING.fullmatch(text):
        field = match["field"]
        return WireError(WireReason.MISSING_FIELD, f"missing required field {field!r}", field=field)
    match = _AT_FIELD.fullmatch(text)
    if match is None:
        return WireError(WireReason.BAD_FIELD, _clip(text.replace("`", "")))
    field, what = match["field"], match["what"]
    value = obj.get(field)
    if _BYTES_LENGTH.fullmatch(what) and isinstance(value, bytes):
        # The only length-constrained byte strings in the contract are EUI-64s.
        explained = f"expected {EUI64_LENGTH} bytes, got {len(value)}"
    elif what.startswith("Invalid enum value"):
        allowed = ", ".join(repr(v) for v in _literal_values(envelope_type, field))
        explained = f"invalid value {_show(value)}, expected one of {allowed}"
    else:
        explained = what.replace("`", "")
        explained = explained[:1].lower() + explained[1:]
        if "got" not in explained:
            explained += f", got {_show(value)}"
    return WireError(WireReason.BAD_FIELD, _clip(f"{field}: {explained}"), field=field)


def _literal_values(envelope_type: type[msgspec.Struct], field: str) -> tuple[object, ...]:
    hint = typing.get_type_hints(envelope_type).get(field)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return tuple(member.value for member in hint)
    return typing.get_args(hint) if typing.get_origin(hint) is Literal else ()


def _is_int(value: object) -> typing.TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _show(value: object) -> str:
    # A bounded description of a value from the wire, for error messages: never the
    # repr of a large or nested object, and never str() of a huge int (which raises).
    if value is None or isinstance(value, bool | float):
        return repr(value)
    if isinstance(value, int):
        bits = value.bit_length()
        return repr(value) if bits <= 128 else f"an integer of {bits} bits"
    if isinstance(value, str):
        return _clip(repr(value), 48)
    if isinstance(value, bytes):
        return f"a byte string of {len(value)} bytes"
    return f"a {type(value).__name__}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."
