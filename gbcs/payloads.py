"""Payloads the gateway acts on: CS06 command and response, the Future Dated Firmware
Activation Alert (0x00CA) and ECS80 power restoration alerts (0x0067).

Theory of operation: the grouping header's message code (and CRA flag) says which
payload follows (GBCS 13.3.5). CS06 and 0x00CA payloads are ASN.1 DER (GBCS ASN.1
module, ``ActivateFirmware``); ECS80 is a DLMS DATA-NOTIFICATION (GBCS 10.2.2). Every
other message code keeps its payload as opaque bytes: the 8F66/8F67 alerts of other
use cases (0x00CB, CS02b) must never be read as firmware outcomes.
"""

from __future__ import annotations

import datetime as dt

import msgspec

from . import _der
from .codes import ActivationResponseCode, CraFlag, MessageCode
from .errors import BadPayload, EncodeError, TrailingBytes
from .times import (
    DlmsDateTime,
    format_generalized_time,
    is_cancellation_time,
    parse_generalized_time,
)

IMAGE_HASH_SIZE = 32  # SHA-256 of the manufacturer image (GBCS 11.2, CS06)
# The ranges of the DER INTEGERs, checked before a value is converted (see
# _der.Reader.der_uint). An originator counter is the 8-octet counter of the
# transaction-id, repeated in the payload. An alert code is 2 octets (GBCS Table 16.2; the RTDS
# alerts encode 0x8F66 as 02 03 00 8F 66). GBCS defines response codes 0..3 only; one
# octet is accepted, so that a code a later GBCS version adds is reported as undefined
# (ExecutionOutcome.response None) rather than failing the whole alert.
MAX_ORIGINATOR_COUNTER = (1 << 64) - 1
MAX_ALERT_CODE = 0xFFFF
MAX_RESPONSE_CODE = 0xFF


class ExecutionOutcome(msgspec.Struct, frozen=True):
    """``ActivateFirmwareExecutionOutcome``: response code and the running firmware version."""

    response_code: int
    firmware_version: bytes

    @property
    def response(self) -> ActivationResponseCode | None:
        """The response code as an enum, or None for a code the spec does not define."""
        try:
            return ActivationResponseCode(self.response_code)
        except ValueError:
            return None


class ActivateFirmwareCommand(msgspec.Struct, frozen=True, tag=True):
    """CS06 Activate Firmware command (message code 0x0012, CRA command).

    ``execution_time`` is None for an on-demand activation; a future-dated one carries
    it; the GBCS/DUIS sentinel dates mean "cancel the pending activation".
    """

    image_hash: bytes
    originator_counter: int
    execution_time: dt.datetime | None = None

    @property
    def is_cancellation(self) -> bool:
        """True when the ExecutionDateTime is the cancellation sentinel."""
        return self.execution_time is not None and is_cancellation_time(self.execution_time)

    @property
    def is_future_dated(self) -> bool:
        """True when an ExecutionDateTime is present and is not the cancellation sentinel."""
        return self.execution_time is not None and not self.is_cancellation


class ActivateFirmwareResponse(msgspec.Struct, frozen=True, tag=True):
    """CS06 response: ``outcome`` None means "command accepted" (a future-dated
    activation was scheduled or cancelled); otherwise the immediate outcome."""

    outcome: ExecutionOutcome | None = None


class FutureDatedActivationAlert(msgspec.Struct, frozen=True, tag=True):
    """Future Dated Firmware Activation Alert (message code 0x00CA), alert code
    0x8F66 (success) or 0x8F67 (failure), with the counter of the scheduling command."""

    alert_code: int
    execution_time: dt.datetime
    originator_counter: int
    outcome: ExecutionOutcome


class PowerRestorationAlert(msgspec.Struct, frozen=True, tag=True):
    """ECS80 power restoration alert (message code 0x0067): a DLMS DATA-NOTIFICATION
    whose body is a structure of alert code, alert time-stamp and further date-times.

    The gateway counts these; it never suppresses on them.
    """

    invoke_id: int
    alert_code: int
    alert_time: DlmsDateTime
    notification_time: DlmsDateTime | None = None
    body_times: tuple[DlmsDateTime, ...] = ()


class OpaquePayload(msgspec.Struct, frozen=True, tag=True):
    """The payload of any message code the gateway does not act on, kept as bytes."""

    data: bytes


Payload = (
    ActivateFirmwareCommand
    | ActivateFirmwareResponse
    | FutureDatedActivationAlert
    | PowerRestorationAlert
    | OpaquePayload
)

# DLMS data types used in the ECS80 notification body (IEC 62056-6-2 Table 2).
_DLMS_DATA_NOTIFICATION = 0x0F
_DLMS_STRUCTURE = 0x02
_DLMS_OCTET_STRING = 0x09
_DLMS_LONG_UNSIGNED = 0x12


# -- decoding ---------------------------------------------------------------------


def decode_payload(message_code: int, cra: CraFlag, data: bytes) -> Payload:
    """Decode the payload bytes for ``message_code`` sent with CRA flag ``cra``."""
    return decode_payload_at(message_code, cra, data, 0, len(data))


def decode_payload_at(
    message_code: int, cra: CraFlag, frame: bytes, start: int, end: int
) -> Payload:
    """Decode ``frame[start:end]`` in place, so error offsets are frame offsets."""
    r = _der.Reader(frame, start, end)
    if message_code == MessageCode.CS06_ACTIVATE_FIRMWARE:
        if cra == CraFlag.COMMAND:
            result: Payload = _decode_cs06_command(r)
        elif cra == CraFlag.RESPONSE:
            result = _decode_cs06_response(r)
        else:
            return OpaquePayload(frame[start:end])
    elif message_code == MessageCode.CS06_FUTURE_DATED_ALERT:
        result = _decode_cs06_alert(r)
    elif message_code == MessageCode.ECS80_POWER_RESTORATION_ALERT:
        result = _decode_ecs80(r)
    else:
        return OpaquePayload(frame[start:end])
    if not r.at_end():
        raise TrailingBytes(f"{r.remaining()} bytes after the payload", offset=r.pos)
    return result


def _decode_outcome(r: _der.Reader) -> ExecutionOutcome:
    s = r.der(_der.TAG_SEQUENCE, "ExecutionOutcome")
    code = s.der_uint("ExecutionOutcome.responseCode", MAX_RESPONSE_CODE)
    version = s.der_octets("ExecutionOutcome.firmwareVersion")
    if not s.at_end():
        raise TrailingBytes("extra fields in ExecutionOutcome", offset=s.pos)
    return ExecutionOutcome(response_code=code, firmware_version=version)


def _decode_cs06_command(r: _der.Reader) -> ActivateFirmwareCommand:
    s = r.der(_der.TAG_SEQUENCE, "ActivateFirmware")
    at = s.pos
    image_hash = s.der_octets("ActivateFirmware.manufacturerImageHash")
    if len(image_hash) != IMAGE_HASH_SIZE:
        raise BadPayload(f"image hash must be 32 bytes, got {len(image_hash)}", offset=at)
    counter = s.der_uint("ActivateFirmware.originatorCounter", MAX_ORIGINATOR_COUNTER)
    execution_time = None
    if not s.at_end():
        at = s.pos
        execution_time = parse_generalized_time(
            s.der_generalized_time("ActivateFirmware.executionDateTime"), at
        )
    if not s.at_end():
        raise TrailingBytes("extra fields in ActivateFirmware", offset=s.pos)
    return ActivateFirmwareCommand(image_hash, counter, execution_time)


def _decode_cs06_response(r: _der.Reader) -> ActivateFirmwareResponse:
    if r.peek() == _der.TAG_NULL:
        r.der_null("ActivateFirmwareResponse.commandAccepted")
        return ActivateFirmwareResponse(None)
    return ActivateFirmwareResponse(_decode_outcome(r))


def _decode_cs06_alert(r: _der.Reader) -> FutureDatedActivationAlert:
    s = r.der(_der.TAG_SEQUENCE, "ActivateFirmwareAlert")
    code = s.der_uint("ActivateFirmwareAlert.alertCode", MAX_ALERT_CODE)
    at = s.pos
    when = parse_generalized_time(
        s.der_generalized_time("ActivateFirmwareAlert.executionDateTime"), at
    )
    counter = s.der_uint("ActivateFirmwareAlert.originatorCounter", MAX_ORIGINATOR_COUNTER)
    outcome = _decode_outcome(s)
    if not s.at_end():
        raise TrailingBytes("extra fields in ActivateFirmwareAlert", offset=s.pos)
    return FutureDatedActivationAlert(code, when, counter, outcome)


def _dlms_date_time(r: _der.Reader, what: str) -> DlmsDateTime:
    r.expect(_DLMS_OCTET_STRING, what)
    at = r.pos
    size = r.u8(what)
    if size != DlmsDateTime.SIZE:
        raise BadPayload(f"{what}: date-time octet-string of {size} bytes", offset=at)
    return DlmsDateTime.from_bytes(r.take(DlmsDateTime.SIZE, what))


def _decode_ecs80(r: _der.Reader) -> PowerRestorationAlert:
    r.expect(_DLMS_DATA_NOTIFICATION, "DATA-NOTIFICATION")
    invoke_id = r.uint(4, "long-invoke-id-and-priority")
    at = r.pos
    dt_len = r.u8("DATA-NOTIFICATION.date-time")
    notification_time = None
    if dt_len == DlmsDateTime.SIZE:
        notification_time = DlmsDateTime.from_bytes(r.take(dt_len, "date-time"))
    elif dt_len != 0:
        raise BadPayload(f"notification date-time of {dt_len} bytes", offset=at)
    r.expect(_DLMS_STRUCTURE, "notification-body")
    at = r.pos
    count = r.u8("notification-body element count")
    if count < 2:
        raise BadPayload(f"alert structure with {count} elements", offset=at)
    r.expect(_DLMS_LONG_UNSIGNED, "alert code")
    alert_code = r.uint(2, "alert code")
    alert_time = _dlms_date_time(r, "alert time-stamp")
    body = tuple(_dlms_date_time(r, f"body element {i}") for i in range(count - 2))
    return PowerRestorationAlert(invoke_id, alert_code, alert_time, notification_time, body)


# -- encoding ---------------------------------------------------------------------


def _enc_outcome(outcome: ExecutionOutcome) -> bytes:
    return _der.enc_tlv(
        _der.TAG_SEQUENCE,
        _der.enc_uint(outcome.response_code, MAX_RESPONSE_CODE)
        + _der.enc_tlv(_der.TAG_OCTET_STRING, outcome.firmware_version),
    )


def _enc_dlms_date_time(value: DlmsDateTime) -> bytes:
    return bytes((_DLMS_OCTET_STRING, DlmsDateTime.SIZE)) + value.to_bytes()


def encode_payload(payload: Payload) -> bytes:
    """Encode a payload to its wire bytes (DER for CS06/0x00CA, DLMS for ECS80)."""
    try:
        return _encode_payload(payload)
    except (ValueError, OverflowError) as exc:
        raise EncodeError(f"{type(payload).__name__}: {exc}") from exc


def _encode_payload(payload: Payload) -> bytes:
    if isinstance(payload, OpaquePayload):
        return payload.data
    if isinstance(payload, ActivateFirmwareCommand):
        if len(payload.image_hash) != IMAGE_HASH_SIZE:
            raise EncodeError("image hash must be 32 bytes")
        body = _der.enc_tlv(_der.TAG_OCTET_STRING, payload.image_hash) + _der.enc_uint(
            payload.originator_counter, MAX_ORIGINATOR_COUNTER
        )
        if payload.execution_time is not None:
            body += _der.enc_tlv(
                _der.TAG_GENERALIZED_TIME, format_generalized_time(payload.execution_time)
            )
        return _der.enc_tlv(_der.TAG_SEQUENCE, body)
    if isinstance(payload, ActivateFirmwareResponse):
        if payload.outcome is None:
            return bytes((_der.TAG_NULL, 0))
        return _enc_outcome(payload.outcome)
    if isinstance(payload, FutureDatedActivationAlert):
        body = (
            _der.enc_uint(payload.alert_code, MAX_ALERT_CODE)
            + _der.enc_tlv(
                _der.TAG_GENERALIZED_TIME, format_generalized_time(payload.execution_time)
            )
            + _der.enc_uint(payload.originator_counter, MAX_ORIGINATOR_COUNTER)
            + _enc_outcome(payload.outcome)
        )
        return _der.enc_tlv(_der.TAG_SEQUENCE, body)
    # PowerRestorationAlert
    out = bytearray((_DLMS_DATA_NOTIFICATION,))
    out += payload.invoke_id.to_bytes(4, "big")
    if payload.notification_time is None:
        out.append(0)
    else:
        out += bytes((DlmsDateTime.SIZE,)) + payload.notification_time.to_bytes()
    out += bytes((_DLMS_STRUCTURE, 2 + len(payload.body_times)))
    out += bytes((_DLMS_LONG_UNSIGNED,)) + payload.alert_code.to_bytes(2, "big")
    out += _enc_dlms_date_time(payload.alert_time)
    for item in payload.body_times:
        out += _enc_dlms_date_time(item)
    return bytes(out)
