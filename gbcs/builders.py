"""Ready-made frames of the use cases the gateway acts on, for tests and the simulator.

Each builder returns the wire bytes; signing keys are supplied by the caller.
"""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

from .codes import ActivationResponseCode, AlertCode, CraFlag, MessageCode
from .frame import GroupingHeader, MacHeader, encode_frame
from .payloads import (
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ExecutionOutcome,
    FutureDatedActivationAlert,
    PowerRestorationAlert,
)
from .times import DlmsDateTime

DEFAULT_IMAGE_HASH = bytes(range(32))
DEFAULT_FIRMWARE_VERSION = bytes.fromhex("0123ABCF")


def _header(
    flag: CraFlag, code: MessageCode, *, originator: bytes, recipient: bytes, counter: int
) -> GroupingHeader:
    return GroupingHeader(
        cra_flag=flag,
        originator_counter=counter,
        originator=originator,
        recipient=recipient,
        message_code=code,
    )


def cs06_command(
    *,
    originator: bytes,
    target: bytes,
    counter: int,
    signer: ec.EllipticCurvePrivateKey | None,
    execution_time: dt.datetime | None = None,
    image_hash: bytes = DEFAULT_IMAGE_HASH,
    signature: bytes | None = None,
    payload_counter: int | None = None,
) -> bytes:
    """A CS06 Activate Firmware command as the DSP sends it (general-ciphering, signed).

    With ``signer`` None and no ``signature`` the signature field is empty (unsigned).
    The payload repeats the header's originator counter unless ``payload_counter`` says
    otherwise (a malformed command, for tests and the simulator).
    """
    header = _header(
        CraFlag.COMMAND,
        MessageCode.CS06_ACTIVATE_FIRMWARE,
        originator=originator,
        recipient=target,
        counter=counter,
    )
    payload = ActivateFirmwareCommand(
        image_hash, counter if payload_counter is None else payload_counter, execution_time
    )
    return encode_frame(header, payload, signer=signer, signature=signature, mac_header=MacHeader())


def cs06_response(
    *,
    device: bytes,
    originator: bytes,
    counter: int,
    signer: ec.EllipticCurvePrivateKey | None,
    outcome: ActivationResponseCode | None,
    firmware_version: bytes = DEFAULT_FIRMWARE_VERSION,
) -> bytes:
    """The ESME's response to a CS06 command (``outcome`` None: "command accepted")."""
    header = _header(
        CraFlag.RESPONSE,
        MessageCode.CS06_ACTIVATE_FIRMWARE,
        originator=device,
        recipient=originator,
        counter=counter,
    )
    payload = ActivateFirmwareResponse(
        None if outcome is None else ExecutionOutcome(int(outcome), firmware_version)
    )
    return encode_frame(header, payload, signer=signer)


def future_dated_alert(
    *,
    device: bytes,
    originator: bytes,
    alert_counter: int,
    command_counter: int,
    execution_time: dt.datetime,
    outcome: ActivationResponseCode,
    signer: ec.EllipticCurvePrivateKey | None,
    firmware_version: bytes = DEFAULT_FIRMWARE_VERSION,
) -> bytes:
    """The 0x00CA Future Dated Firmware Activation Alert (8F66 on success, else 8F67)."""
    header = _header(
        CraFlag.ALERT,
        MessageCode.CS06_FUTURE_DATED_ALERT,
        originator=device,
        recipient=originator,
        counter=alert_counter,
    )
    code = (
        AlertCode.FUTURE_DATED_ACTIVATION_SUCCESS
        if outcome is ActivationResponseCode.SUCCESS
        else AlertCode.FUTURE_DATED_ACTIVATION_FAILURE
    )
    payload = FutureDatedActivationAlert(
        int(code), execution_time, command_counter, ExecutionOutcome(int(outcome), firmware_version)
    )
    return encode_frame(header, payload, signer=signer)


def restoration_alert(
    *,
    device: bytes,
    recipient: bytes,
    alert_counter: int,
    alert_time: dt.datetime,
    outage_start: dt.datetime,
    signer: ec.EllipticCurvePrivateKey | None,
    code: AlertCode = AlertCode.SUPPLY_OUTAGE_RESTORED_OUTAGE_3MIN,
) -> bytes:
    """An ECS80 power restoration alert (DLMS DATA-NOTIFICATION, message code 0x0067)."""
    header = _header(
        CraFlag.ALERT,
        MessageCode.ECS80_POWER_RESTORATION_ALERT,
        originator=device,
        recipient=recipient,
        counter=alert_counter,
    )
    payload = PowerRestorationAlert(
        invoke_id=0x20000000 | (alert_counter & 0xFFFFFF),
        alert_code=int(code),
        alert_time=DlmsDateTime.from_datetime(alert_time),
        body_times=(
            DlmsDateTime.from_datetime(outage_start),
            DlmsDateTime.from_datetime(alert_time),
        ),
    )
    return encode_frame(header, payload, signer=signer)
