"""Conformance: every RTDS 4.5.0 frame in ../shared/vectors, one test per file.

The expected values are spelled out here, read off the frames and the RTDS file names
(see ../shared/vectors/README.md); they are not computed by the codec under test.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import NamedTuple

import pytest

import gbcs
from gbcs import (
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ActivationResponseCode,
    AlertCode,
    CraFlag,
    FutureDatedActivationAlert,
    OpaquePayload,
    PowerRestorationAlert,
    SignatureStatus,
)

from .conftest import read_vector, vector_by_name, vector_files

C, R, A = CraFlag.COMMAND, CraFlag.RESPONSE, CraFlag.ALERT
UTC = dt.UTC
SUPPLIER = bytes.fromhex("90B3D51F30010000")
ESME = bytes.fromhex("00DB1234567890A0")
IMAGE_HASH = bytes.fromhex("AA758690730934FF0685AA758690730934FF0685657788990011223344556677")


class V(NamedTuple):
    name: str
    cra: CraFlag
    counter: int
    originator: str
    recipient: str
    message_code: int


EXPECTED = [
    V("CS08_11.2_ERROR_COMMAND_GBCS.HEX", C, 0x515, "90B3D51F30000002", "00DB1234567890A5", 0x0129),
    V(
        "CS08_11.2_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x515,
        "00DB1234567890A5",
        "90B3D51F30000002",
        0x0129,
    ),
    V(
        "CS08_11.2_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x514,
        "90B3D51F30000002",
        "00DB1234567890A4",
        0x0129,
    ),
    V(
        "CS08_11.2_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x514,
        "00DB1234567890A4",
        "90B3D51F30000002",
        0x0129,
    ),
    V(
        "CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX",
        A,
        0x7D0,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x00CA,
    ),
    V(
        "CS06_11.3_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX",
        A,
        0x7D1,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x00CA,
    ),
    V(
        "CS06_11.3_CANCELLATION_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_CANCELLATION_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_CANCELLATION_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3EA,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3EC,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3EC,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3EC,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_FUTURE_DATED_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E9,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3ED,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3ED,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3ED,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0012,
    ),
    V(
        "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0012,
    ),
    V("CS11_3.3_ERROR_COMMAND_GBCS.HEX", C, 0x3E9, "90B3D51F30010000", "00DB1234567890A1", 0x0015),
    V("CS11_3.3_ERROR_RESPONSE_GBCS.HEX", R, 0x3E9, "00DB1234567890A1", "90B3D51F30010000", 0x0015),
    V(
        "CS11_3.3_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A1",
        0x0015,
    ),
    V(
        "CS11_3.3_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A1",
        "90B3D51F30010000",
        0x0015,
    ),
    V(
        "ECS17b_4.1.1_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0027,
    ),
    V(
        "ECS17b_4.1.1_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3E9,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0027,
    ),
    V(
        "ECS17b_4.1.1_SINGLE_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0027,
    ),
    V(
        "ECS17b_4.1.1_SINGLE_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0027,
    ),
    V(
        "ECS17b_4.1.1_TWIN_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x4B0,
        "90B3D51F30020000",
        "00DB1234567890A0",
        0x0027,
    ),
    V(
        "ECS17b_4.1.1_TWIN_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x4B0,
        "00DB1234567890A0",
        "90B3D51F30020000",
        0x0027,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX",
        A,
        0x7D0,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x00CB,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX",
        A,
        0x7D2,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x00CB,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_CANCELLATION_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_CANCELLATION_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_CANCELLATION_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3EA,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3EC,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3EC,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3EC,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_FUTURE_DATED_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E9,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3EB,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3EB,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3EB,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0102,
    ),
    V(
        "CS02bSupplierBySupplier_6.15.1_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0102,
    ),
    V("ECS42_7.1_ERROR_COMMAND_GBCS.HEX", C, 0x3E9, "90B3D51F30010000", "00DB1234567890A0", 0x004F),
    V(
        "ECS42_7.1_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3E9,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x004F,
    ),
    V(
        "ECS42_7.1_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3E9,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x004F,
    ),
    V(
        "ECS42_7.1_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x004F,
    ),
    V(
        "ECS42_7.1_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x004F,
    ),
    V(
        "ECS42_7.1_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x004F,
    ),
    V("ECS45_7.4_ERROR_COMMAND_GBCS.HEX", C, 0x3EA, "90B3D51F30010000", "00DB1234567890A0", 0x0052),
    V(
        "ECS45_7.4_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3EA,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0052,
    ),
    V(
        "ECS45_7.4_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0052,
    ),
    V(
        "ECS45_7.4_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0052,
    ),
    V(
        "ECS70Commission_8.1.1_ERROR_COMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0062,
    ),
    V(
        "ECS70Commission_8.1.1_ERROR_PRECOMMAND_GBCS.HEX",
        C,
        0x3EA,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0062,
    ),
    V(
        "ECS70Commission_8.1.1_ERROR_RESPONSE_GBCS.HEX",
        R,
        0x3EA,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0062,
    ),
    V(
        "ECS70Commission_8.1.1_SUCCESS_COMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0062,
    ),
    V(
        "ECS70Commission_8.1.1_SUCCESS_PRECOMMAND_GBCS.HEX",
        C,
        0x3E8,
        "90B3D51F30010000",
        "00DB1234567890A0",
        0x0062,
    ),
    V(
        "ECS70Commission_8.1.1_SUCCESS_RESPONSE_GBCS.HEX",
        R,
        0x3E8,
        "00DB1234567890A0",
        "90B3D51F30010000",
        0x0062,
    ),
    V("ECS80_NA_8F36_ALERT_GBCS.HEX", A, 0x7D3, "00DB1234567890A0", "90B3D51F30020000", 0x0067),
    V("FDRA-DLMS_NA_8F72_ALERT_GBCS.HEX", A, 0x7D0, "00DB1234567890A0", "90B3D51F30010000", 0x00CE),
    V("GCA-DLMS_NA_8F30_ALERT_GBCS.HEX", A, 0x7D0, "00DB1234567890A0", "90B3D51F30010000", 0x1000),
]
BY_NAME = {v.name: v for v in EXPECTED}


def _frame(name: str) -> gbcs.Frame:
    return gbcs.decode_frame(vector_by_name(name))


def test_every_vector_file_has_an_expectation() -> None:
    assert {p.name for p in vector_files()} == set(BY_NAME)


@pytest.mark.parametrize("v", EXPECTED, ids=[v.name for v in EXPECTED])
def test_vector_header_fields(v: V) -> None:
    frame = _frame(v.name)
    assert frame.header.cra_flag is v.cra
    assert frame.header.originator_counter == v.counter
    assert frame.header.originator == bytes.fromhex(v.originator)
    assert frame.header.recipient == bytes.fromhex(v.recipient)
    assert frame.header.message_code == v.message_code
    # Commands travel wrapped in general-ciphering with a MAC; pre-commands,
    # responses and alerts of critical use cases are bare general-signing APDUs.
    data = vector_by_name(v.name)
    assert (frame.mac_header is not None) == (data[0] == 0xDD)
    assert (frame.mac is not None) == (data[0] == 0xDD)


# -- CS06 Activate Firmware ---------------------------------------------------------

CS06_COMMANDS = {
    "CS06_11.3_IMMEDIATE_SUCCESS": (0x3E8, None),
    "CS06_11.3_IMMEDIATE_ERROR": (0x3ED, None),
    "CS06_11.3_FUTURE_DATED_SUCCESS": (0x3E9, dt.datetime(2030, 1, 15, 9, 0, 0, tzinfo=UTC)),
    "CS06_11.3_FUTURE_DATED_ERROR": (0x3EC, dt.datetime(2030, 1, 1, 0, 0, 0, tzinfo=UTC)),
    "CS06_11.3_CANCELLATION_SUCCESS": (0x3EA, dt.datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
}


@pytest.mark.parametrize("kind", ["COMMAND", "PRECOMMAND"])
@pytest.mark.parametrize("stem", sorted(CS06_COMMANDS))
def test_cs06_command_payload(stem: str, kind: str) -> None:
    counter, execution_time = CS06_COMMANDS[stem]
    payload = _frame(f"{stem}_{kind}_GBCS.HEX").payload
    assert isinstance(payload, ActivateFirmwareCommand)
    assert payload.image_hash == IMAGE_HASH
    assert payload.originator_counter == counter
    assert payload.execution_time == execution_time
    assert payload.is_cancellation == stem.endswith("CANCELLATION_SUCCESS")
    assert payload.is_future_dated == ("FUTURE_DATED" in stem)


def test_cancellation_sentinel_is_the_gbcs_constant() -> None:
    payload = _frame("CS06_11.3_CANCELLATION_SUCCESS_COMMAND_GBCS.HEX").payload
    assert isinstance(payload, ActivateFirmwareCommand)
    assert payload.execution_time == gbcs.CANCELLATION_TIME


def test_duis_cancellation_date_is_also_a_cancellation() -> None:
    assert gbcs.is_cancellation_time(dt.datetime(3000, 12, 31, tzinfo=UTC))
    assert not gbcs.is_cancellation_time(dt.datetime(3000, 12, 30, 23, 59, 59, tzinfo=UTC))


@pytest.mark.parametrize(
    ("name", "code", "version"),
    [
        (
            "CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX",
            ActivationResponseCode.SUCCESS,
            "0123ABCE",
        ),
        (
            "CS06_11.3_IMMEDIATE_ERROR_RESPONSE_GBCS.HEX",
            ActivationResponseCode.NO_IMAGE_HELD,
            "0123ABCF",
        ),
    ],
)
def test_cs06_immediate_response_carries_the_outcome(
    name: str, code: ActivationResponseCode, version: str
) -> None:
    payload = _frame(name).payload
    assert isinstance(payload, ActivateFirmwareResponse)
    assert payload.outcome is not None
    assert payload.outcome.response is code
    assert payload.outcome.firmware_version == bytes.fromhex(version)


@pytest.mark.parametrize(
    "name",
    [
        "CS06_11.3_FUTURE_DATED_SUCCESS_RESPONSE_GBCS.HEX",
        "CS06_11.3_FUTURE_DATED_ERROR_RESPONSE_GBCS.HEX",
        "CS06_11.3_CANCELLATION_SUCCESS_RESPONSE_GBCS.HEX",
    ],
)
def test_cs06_future_dated_response_is_command_accepted(name: str) -> None:
    frame = _frame(name)
    assert isinstance(frame.payload, ActivateFirmwareResponse)
    assert frame.payload.outcome is None
    # These responses carry a grouping-header date-time: 2015-01-01 00:00:00.
    assert frame.header.date_time is not None
    assert frame.header.date_time.to_datetime() == dt.datetime(2015, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(
    ("name", "alert", "when", "counter", "code"),
    [
        (
            "CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX",
            AlertCode.FUTURE_DATED_ACTIVATION_SUCCESS,
            dt.datetime(2030, 1, 15, 9, 0, tzinfo=UTC),
            0x3E9,
            ActivationResponseCode.SUCCESS,
        ),
        (
            "CS06_11.3_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX",
            AlertCode.FUTURE_DATED_ACTIVATION_FAILURE,
            dt.datetime(2030, 1, 1, 0, 0, tzinfo=UTC),
            0x3EC,
            ActivationResponseCode.HASH_MISMATCH,
        ),
    ],
)
def test_future_dated_activation_alert_fields(
    name: str, alert: AlertCode, when: dt.datetime, counter: int, code: ActivationResponseCode
) -> None:
    frame = _frame(name)
    payload = frame.payload
    assert isinstance(payload, FutureDatedActivationAlert)
    assert payload.alert_code == alert
    assert payload.execution_time == when
    # The counter of the CS06 command that scheduled the activation, not the alert's own.
    assert payload.originator_counter == counter
    assert payload.originator_counter != frame.header.originator_counter
    assert payload.outcome.response is code
    assert payload.outcome.firmware_version == bytes.fromhex("0123ABCF")


@pytest.mark.parametrize(
    "name",
    [
        "CS02bSupplierBySupplier_6.15.1_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX",
        "CS02bSupplierBySupplier_6.15.1_8F67_FUTURE_DATED_ERROR_ALERT_GBCS.HEX",
    ],
)
def test_other_use_case_8f66_8f67_alerts_are_not_firmware_outcomes(name: str) -> None:
    frame = _frame(name)
    assert frame.header.message_code == 0x00CB
    assert isinstance(frame.payload, OpaquePayload)
    assert not isinstance(frame.payload, FutureDatedActivationAlert)


def test_ecs80_power_restoration_alert_fields() -> None:
    payload = _frame("ECS80_NA_8F36_ALERT_GBCS.HEX").payload
    assert isinstance(payload, PowerRestorationAlert)
    assert payload.alert_code == AlertCode.SUPPLY_OUTAGE_RESTORED_OUTAGE_3MIN
    assert payload.invoke_id == 0x200007D3
    assert payload.notification_time is None
    assert payload.alert_time.to_datetime() == dt.datetime(2015, 1, 1, tzinfo=UTC)
    assert [t.to_datetime() for t in payload.body_times] == [
        dt.datetime(2014, 12, 31, 23, 50, tzinfo=UTC),
        dt.datetime(2014, 12, 31, 23, 59, tzinfo=UTC),
    ]


@pytest.mark.parametrize(
    "name", ["FDRA-DLMS_NA_8F72_ALERT_GBCS.HEX", "GCA-DLMS_NA_8F30_ALERT_GBCS.HEX"]
)
def test_other_dlms_alerts_decode_at_header_level_only(name: str) -> None:
    assert isinstance(_frame(name).payload, OpaquePayload)


def test_supplementary_remote_party_fields_are_decoded() -> None:
    header = _frame("CS08_11.2_SUCCESS_COMMAND_GBCS.HEX").header
    assert header.supplementary_remote_party == SUPPLIER
    assert header.supplementary_remote_party_counter == 0x3E8
    assert header.supplementary_originator_counter is None


# -- signatures -----------------------------------------------------------------------

SIGNED = [p.name for p in vector_files() if "PRECOMMAND" not in p.name]


@pytest.fixture(scope="module")
def store(keystore_dir: Path) -> gbcs.TrustStore:
    return gbcs.TrustStore.from_directory(keystore_dir)


@pytest.mark.parametrize("name", SIGNED)
def test_signed_vector_verifies_and_any_flipped_byte_breaks_it(
    name: str, store: gbcs.TrustStore
) -> None:
    data = vector_by_name(name)
    frame = gbcs.decode_frame(data)
    if frame.signature is None:
        assert gbcs.verify_frame(frame, store).status is SignatureStatus.UNSIGNED
        return
    assert store.signers_for(frame.header.originator), "signer certificate not in keystore"
    result = gbcs.verify_frame(frame, store)
    assert result.status is SignatureStatus.VALID
    assert result.signer is not None
    assert result.signer.eui64 == frame.header.originator

    # The signature covers everything after 0xDF up to the end of the payload; flip
    # each of those bytes, and each signature byte, and the frame must not verify.
    start = data.index(frame.signed_data)
    covered = range(start, start + len(frame.signed_data))
    sig_at = data.index(frame.signature)
    for i in [*covered, *range(sig_at, sig_at + 64)]:
        mutated = bytearray(data)
        mutated[i] ^= 0xFF
        try:
            other = gbcs.decode_frame(bytes(mutated))
        except gbcs.GbcsError:
            continue
        assert gbcs.verify_frame(other, store).status is not SignatureStatus.VALID, i


@pytest.mark.parametrize("name", [p.name for p in vector_files() if "PRECOMMAND" in p.name])
def test_precommand_is_unsigned_and_never_valid(name: str, store: gbcs.TrustStore) -> None:
    frame = _frame(name)
    assert frame.signature is None
    assert not frame.signature_field
    assert gbcs.verify_frame(frame, store).status is SignatureStatus.UNSIGNED


def test_signer_role_comes_from_the_certificate(store: gbcs.TrustStore) -> None:
    (supplier,) = store.signers_for(SUPPLIER)
    assert supplier.role is gbcs.RemotePartyRole.SUPPLIER
    (device,) = store.signers_for(ESME)
    assert device.role is None


def test_key_agreement_certificates_are_not_signers(keystore_dir: Path) -> None:
    ka_only = gbcs.TrustStore.from_pem_files(
        [(p.name, p.read_bytes()) for p in keystore_dir.glob("*-ka.pem")]
    )
    assert len(ka_only) == 0
    assert ka_only.skipped


# -- encoding -------------------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p in vector_files() if "PRECOMMAND" in p.name], ids=str)
def test_precommand_fields_reencode_to_the_same_bytes(path: Path) -> None:
    data = read_vector(path)
    frame = gbcs.decode_frame(data)
    assert gbcs.encode_frame(frame.header, frame.payload, signature_field=False) == data


@pytest.mark.parametrize("path", vector_files(), ids=lambda p: p.name)
def test_every_vector_reencodes_to_the_same_bytes(path: Path) -> None:
    data = read_vector(path)
    f = gbcs.decode_frame(data)
    again = gbcs.encode_frame(
        f.header,
        f.payload,
        signature=f.signature,
        signature_field=f.signature_field,
        mac_header=f.mac_header,
        mac=f.mac,
    )
    assert again == data
