"""Human- and machine-readable renderings of decoded GBCS frames (JSON-ready dicts).

Used by ``poa-gateway decode`` and, later, ``explain``. Bytes are shown as upper-case
hex, EUI-64s as ``00-DB-12-34-56-78-90-A0``, instants as ISO 8601 UTC with ``Z``.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import msgspec

import gbcs
from gbcs import DlmsDateTime, Frame, Verification, format_eui64


def iso_utc(when: dt.datetime) -> str:
    """``2030-01-15T09:00:00.000Z``: RFC 3339, UTC, milliseconds, as every command prints
    times."""
    return when.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _value(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex().upper()
    if isinstance(v, dt.datetime):
        return iso_utc(v)
    if isinstance(v, DlmsDateTime):
        when = v.to_datetime()
        return {"iso": iso_utc(when) if when else None, **msgspec.to_builtins(v)}
    if isinstance(v, msgspec.Struct):
        return {f: _value(getattr(v, f)) for f in v.__struct_fields__}
    if isinstance(v, tuple | list):
        return [_value(x) for x in v]
    return v


def render_payload(payload: gbcs.Payload) -> dict[str, Any]:
    """The payload's fields, with its type and the derived facts the gateway acts on."""
    out: dict[str, Any] = {"type": type(payload).__name__, **_value(payload)}
    if isinstance(payload, gbcs.ActivateFirmwareCommand):
        out["activation"] = (
            "cancellation"
            if payload.is_cancellation
            else "future-dated"
            if payload.is_future_dated
            else "on-demand"
        )
    if isinstance(payload, gbcs.FutureDatedActivationAlert | gbcs.PowerRestorationAlert):
        out["alert_code"] = f"0x{payload.alert_code:04X}"
    outcome = getattr(payload, "outcome", None)
    if isinstance(outcome, gbcs.ExecutionOutcome):
        name = outcome.response.name if outcome.response is not None else "UNDEFINED"
        out["outcome"]["response_name"] = name
    return out


def render_frame(frame: Frame, verification: Verification | None) -> dict[str, Any]:
    """A JSON-ready description of a frame; ``verification`` None means not checked."""
    h = frame.header
    header: dict[str, Any] = {
        "cra_flag": h.cra_flag.name,
        "originator_counter": h.originator_counter,
        "originator": format_eui64(h.originator),
        "recipient": format_eui64(h.recipient),
        "date_time": _value(h.date_time) if h.date_time is not None else None,
        "message_code": f"0x{h.message_code:04X}",
        "message_code_name": frame.message_code_name,
    }
    if h.supplementary_remote_party is not None:
        header["supplementary_remote_party"] = format_eui64(h.supplementary_remote_party)
        header["supplementary_remote_party_counter"] = h.supplementary_remote_party_counter
        header["supplementary_originator_counter"] = h.supplementary_originator_counter
        if h.supplementary_certificate is not None:
            header["supplementary_certificate"] = h.supplementary_certificate.hex().upper()
    signature: dict[str, Any] = {
        "present": frame.is_signed,
        "field": frame.signature_field,
        "status": verification.status.value if verification is not None else "not-checked",
        # valid is null when nothing was checked: "unchecked" is never shown as valid.
        "valid": verification.valid if verification is not None else None,
    }
    if verification is not None and verification.signer is not None:
        signature["signer"] = format_eui64(verification.signer.eui64)
        role = verification.signer.role
        signature["signer_role"] = role.name if role is not None else "DEVICE"
    return {
        "format": "general-ciphering" if frame.mac_header is not None else "general-signing",
        "mac_header": _value(frame.mac_header) if frame.mac_header is not None else None,
        "header": header,
        "payload": render_payload(frame.payload),
        "payload_length": len(frame.raw_payload),
        "signature": signature,
        "mac": frame.mac.hex().upper() if frame.mac is not None else None,
    }
