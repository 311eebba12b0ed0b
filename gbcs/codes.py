"""GBCS and DUIS code tables used by the gateway.

Only the codes the gateway acts on or reports by name are listed; any other
message code still decodes (at header level) and is reported by number.
"""

from __future__ import annotations

import enum


class CraFlag(enum.IntEnum):
    """CRA flag, first byte of the transaction-id (GBCS section 4.3.1.x, "CRA Flag")."""

    COMMAND = 0x01
    RESPONSE = 0x02
    ALERT = 0x03


class MessageCode(enum.IntEnum):
    """GBCS Message Codes (GBCS Table 13.3.5, "Message Code") the gateway names.

    The gateway acts on CS06 (0x0012), its Future Dated Firmware Activation Alert
    (0x00CA) and the ECS80 power restoration alert (0x0067).
    """

    CS08_READ_PPMID_HCALCS_FIRMWARE_VERSION = 0x0129
    CS11_READ_CHF_DEVICE_LOG = 0x0015
    CS06_ACTIVATE_FIRMWARE = 0x0012
    CS06_FUTURE_DATED_ALERT = 0x00CA
    CS02B_FUTURE_DATED_ALERT = 0x00CB
    DLMS_FUTURE_DATED_ALERT = 0x00CC
    GBZ_FUTURE_DATED_ALERT = 0x00CD
    FIRMWARE_DISTRIBUTION_RECEIPT_ALERT_ESME = 0x00CE
    ECS17B_READ_ELECTRICITY_REGISTERS = 0x0027
    ECS42_READ_ELECTRICITY_SUPPLY_STATE = 0x004F
    ECS45_READ_BOOST_BUTTON_DETAILS = 0x0052
    ECS70_SET_CLOCK = 0x0062
    ECS80_POWER_RESTORATION_ALERT = 0x0067
    GCS_GENERIC_CRITICAL_ALERT = 0x1000


# Names for the CS02b Update Security Credentials family (0x0100..0x0109).
_CS02B_FIRST, _CS02B_LAST = 0x0100, 0x0109


def message_code_name(code: int) -> str:
    """A readable name for a message code, or ``UNKNOWN_0xNNNN``."""
    try:
        return MessageCode(code).name
    except ValueError:
        if _CS02B_FIRST <= code <= _CS02B_LAST:
            return f"CS02B_UPDATE_SECURITY_CREDENTIALS_{code - _CS02B_FIRST}"
        return f"UNKNOWN_0x{code:04X}"


class AlertCode(enum.IntEnum):
    """Device alert codes (GBCS Table 16.2, "Alert Codes") the gateway acts on."""

    FUTURE_DATED_ACTIVATION_SUCCESS = 0x8F66
    FUTURE_DATED_ACTIVATION_FAILURE = 0x8F67
    SUPPLY_OUTAGE_RESTORED = 0x8F35
    SUPPLY_OUTAGE_RESTORED_OUTAGE_3MIN = 0x8F36


# The two ECS80 power restoration alert codes.
RESTORATION_ALERT_CODES = frozenset(
    {AlertCode.SUPPLY_OUTAGE_RESTORED, AlertCode.SUPPLY_OUTAGE_RESTORED_OUTAGE_3MIN}
)


class ActivationResponseCode(enum.IntEnum):
    """ExecutionOutcome response codes of CS06 Activate Firmware (GBCS ASN.1 module,
    ``ActivateFirmwareExecutionOutcome``)."""

    SUCCESS = 0
    NO_IMAGE_HELD = 1
    HASH_MISMATCH = 2
    ACTIVATION_FAILURE = 3


class RemotePartyRole(enum.IntEnum):
    """Remote party role codes carried in a certificate's OU (GBCS Table 4.3.2.x)."""

    ROOT = 0x01
    SUPPLIER = 0x02
    NETWORK_OPERATOR = 0x03
    ACCESS_CONTROL_BROKER = 0x04
    TRANSITIONAL_CHANGE_OF_SUPPLIER = 0x05
    WAN_PROVIDER = 0x06
    ISSUING_AUTHORITY = 0x07
    OTHER_USER = 0x08
    RECOVERY = 0x09
