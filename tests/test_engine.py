"""The suppression engine, rule by rule, with time advanced by hand (no clock, no I/O)."""

from __future__ import annotations

import datetime as dt
import itertools

import pytest
from msgspec.structs import replace as msgspec_replace

import gbcs
from gateway import pki
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.core.engine import Engine, EngineConfig, pack_decision, unpack_decision
from gateway.core.events import (
    ActivationCancelled,
    ActivationTracked,
    AlertDecision,
    AlertReason,
    CommandRefused,
    CommandSeen,
    DedupeExpired,
    DeviceOutcomeSeen,
    OutcomeKind,
    OutcomeReason,
    RefusalReason,
    WindowEnded,
    WindowExpired,
    WindowOpened,
)
from gateway.wire import DccAlertEnvelope
from gbcs import ActivationResponseCode, RemotePartyRole, SignatureStatus, builders

MIN = 60_000
T0 = 1_800_000_000_000  # 2027-01-15T08:00:00Z, in ms
SUPPLIER = bytes.fromhex("90B3D51F30010000")
OTHER_SUPPLIER = bytes.fromhex("90B3D51F30020000")
ESME = bytes.fromhex("00DB1234567890A0")
CHF = bytes.fromhex("00DB123456789001")
OTHER_CHF = bytes.fromhex("00DB123456789002")

_alert_ids = itertools.count()


def esme(
    *,
    device_id: bytes = ESME,
    chf: bytes | None = CHF,
    device_type: DeviceType = DeviceType.ESME,
    smets: int = 2,
    manufacturer: str = "Landis+Gyr",
    supplier_id: bytes | None = None,
) -> DeviceRecord:
    return DeviceRecord(
        device_id=device_id,
        device_type=device_type,
        smets=smets,
        manufacturer=manufacturer,
        status=DeviceStatus.COMMISSIONED,
        chf_id=chf,
        supplier_id=supplier_id,
    )


def utc(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, dt.UTC)


def command(
    counter: int,
    *,
    execution_ms: int | None = None,
    execution_time: dt.datetime | None = None,
    target: DeviceRecord | None = None,
    signature: SignatureStatus = SignatureStatus.VALID,
    role: gbcs.RemotePartyRole | None = gbcs.RemotePartyRole.SUPPLIER,
    on_guid_list: bool = True,
    last_counter: int | None = None,
    sent_at: int = T0,
    known: bool = True,
    originator: bytes = SUPPLIER,
    payload_counter: int | None = None,
) -> CommandSeen:
    if execution_ms is not None:
        execution_time = utc(execution_ms)
    device = target if target is not None else esme()
    frame = gbcs.decode_frame(
        builders.cs06_command(
            originator=originator,
            target=device.device_id,
            counter=counter,
            signer=None,
            execution_time=execution_time,
            payload_counter=payload_counter,
        )
    )
    return CommandSeen(
        frame=frame,
        signature=signature,
        signer_role=role,
        target=device if known else None,
        on_guid_list=on_guid_list,
        last_counter=last_counter,
        sent_at=sent_at,
    )


def ad1(
    raised_at: int, *, chf: bytes = CHF, code: str = "AD1", alert_id: str = ""
) -> DccAlertEnvelope:
    return DccAlertEnvelope(
        v=1,
        kind="dcc-alert",
        code=code,
        alert_id=alert_id or f"alert-{next(_alert_ids)}",
        device_id=chf,
        raised_at=raised_at,
        sent_at=raised_at,
    )


def response(
    counter: int,
    outcome: ActivationResponseCode | None,
    *,
    signature: SignatureStatus = SignatureStatus.VALID,
) -> DeviceOutcomeSeen:
    frame = gbcs.decode_frame(
        builders.cs06_response(
            device=ESME, originator=SUPPLIER, counter=counter, signer=None, outcome=outcome
        )
    )
    return DeviceOutcomeSeen(frame=frame, signature=signature, device=esme(), sent_at=T0)


def fd_alert(
    command_counter: int, execution_ms: int, outcome: ActivationResponseCode
) -> DeviceOutcomeSeen:
    frame = gbcs.decode_frame(
        builders.future_dated_alert(
            device=ESME,
            originator=SUPPLIER,
            alert_counter=0x7D0,
            command_counter=command_counter,
            execution_time=utc(execution_ms),
            outcome=outcome,
            signer=None,
        )
    )
    return DeviceOutcomeSeen(
        frame=frame, signature=SignatureStatus.UNKNOWN_SIGNER, device=esme(), sent_at=execution_ms
    )


@pytest.fixture
def engine() -> Engine:
    return Engine(EngineConfig(), T0)


def suppressed(engine: Engine, at: int, *, now: int | None = None, chf: bytes = CHF) -> bool:
    return engine.on_dcc_alert(ad1(at, chf=chf), at if now is None else now).suppressed


# -- commands that open windows -------------------------------------------------------


def test_on_demand_command_opens_a_window_from_when_it_was_sent(engine: Engine) -> None:
    result = engine.on_command(command(1000, sent_at=T0), T0 + 500)
    assert isinstance(result, ActivationTracked)
    a = result.activation
    assert (a.chf, a.esme, a.counter, a.kind) == (CHF, ESME, 1000, "on-demand")
    assert (a.start_ms, a.end_ms) == (T0, T0 + 30 * MIN)
    assert suppressed(engine, T0 + 3 * MIN)
    assert suppressed(engine, T0 + 30 * MIN - 1)
    assert not suppressed(engine, T0 + 30 * MIN)  # the end is exclusive


def test_alert_inside_window_is_not_forwarded_and_names_the_activation(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + 3 * MIN), T0 + 3 * MIN)
    assert decision.suppressed
    assert decision.reason == "inside-window"
    assert decision.activation is not None
    assert decision.activation.request_id == "90-B3-D5-1F-30-01-00-00:00-DB-12-34-56-78-90-A0:1000"


def test_future_dated_command_opens_the_window_at_execution_time(engine: Engine) -> None:
    start = T0 + 24 * 60 * MIN
    result = engine.on_command(command(1001, execution_ms=start), T0)
    assert isinstance(result, ActivationTracked)
    assert result.activation.kind == "future-dated"
    assert (result.activation.start_ms, result.activation.end_ms) == (start, start + 30 * MIN)
    assert not suppressed(engine, T0 + 3 * MIN)
    assert suppressed(engine, start + 3 * MIN)
    assert not suppressed(engine, start + 31 * MIN)


def test_lead_tolerance_covers_meter_clocks_a_little_ahead(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1001, execution_ms=start), T0)
    assert suppressed(engine, start - 2 * MIN)
    assert not suppressed(engine, start - 2 * MIN - 1)


def test_window_length_and_lead_are_configurable() -> None:
    engine = Engine(EngineConfig(window_ms=10 * MIN, lead_ms=0), T0)
    engine.on_command(command(1000), T0)
    assert suppressed(engine, T0 + 9 * MIN)
    assert not suppressed(engine, T0 + 10 * MIN)
    assert not suppressed(engine, T0 - 1)


def test_alert_is_judged_at_its_raised_time_not_its_arrival(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    # Raised inside the window, delivered an hour later: still firmware-caused.
    assert suppressed(engine, T0 + 5 * MIN, now=T0 + 90 * MIN)
    # Raised before the window (minus lead), delivered inside it: genuine.
    assert not suppressed(engine, T0 - 10 * MIN, now=T0 + 5 * MIN)


def test_raised_time_far_in_the_future_is_not_trusted(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    # raised_at claims a time inside the window but lies 6 min ahead of now (skew 5):
    # judged at now, which is before the window.
    decision = engine.on_dcc_alert(ad1(T0 + 3 * MIN), T0 - 3 * MIN)
    assert decision.judged_at == T0 - 3 * MIN
    assert not decision.suppressed


def test_alert_from_another_chf_is_forwarded(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    assert not suppressed(engine, T0 + MIN, chf=OTHER_CHF)


def test_other_dcc_alert_codes_are_always_forwarded(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + MIN, code="AD2"), T0 + MIN)
    assert not decision.suppressed
    assert decision.reason == "not-ad1"


def test_two_esmes_on_one_chf_are_tracked_separately(engine: Engine) -> None:
    second = esme(device_id=bytes.fromhex("00DB1234567890A1"))
    engine.on_command(command(1000, execution_ms=T0 + 60 * MIN), T0)
    engine.on_command(command(2000, execution_ms=T0 + 120 * MIN, target=second), T0)
    assert engine.tracked_count == 2
    assert suppressed(engine, T0 + 61 * MIN)
    assert suppressed(engine, T0 + 121 * MIN)
    assert not suppressed(engine, T0 + 100 * MIN)


# -- refusals ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seen", "reason"),
    [
        (command(1000, signature=SignatureStatus.UNSIGNED), RefusalReason.UNSIGNED),
        (command(1000, signature=SignatureStatus.UNKNOWN_SIGNER), RefusalReason.UNTRUSTED_SIGNER),
        (command(1000, role=None), RefusalReason.UNTRUSTED_SIGNER),
        (command(1000, signature=SignatureStatus.INVALID), RefusalReason.BAD_SIGNATURE),
        (command(1000, last_counter=1000), RefusalReason.REPLAY),
        (command(1000, last_counter=5000), RefusalReason.REPLAY),
        (command(1000, known=False), RefusalReason.UNKNOWN_DEVICE),
        (command(1000, target=esme(device_type=DeviceType.GSME)), RefusalReason.NOT_ESME),
        (command(1000, target=esme(smets=1)), RefusalReason.NOT_SMETS2),
        (
            command(1000, target=esme(manufacturer="Secure Meters")),
            RefusalReason.MANUFACTURER_NOT_LISTED,
        ),
        (command(1000, on_guid_list=False), RefusalReason.NOT_ON_GUID_LIST),
        (command(1000, target=esme(chf=None)), RefusalReason.UNKNOWN_CHF),
        (command(1000, role=RemotePartyRole.NETWORK_OPERATOR), RefusalReason.WRONG_ROLE),
        (command(1000, role=RemotePartyRole.ACCESS_CONTROL_BROKER), RefusalReason.WRONG_ROLE),
        (command(1000, role=RemotePartyRole.OTHER_USER), RefusalReason.WRONG_ROLE),
        (command(1000, payload_counter=999), RefusalReason.COUNTER_MISMATCH),
        (
            command(1000, originator=OTHER_SUPPLIER, target=esme(supplier_id=SUPPLIER)),
            RefusalReason.NOT_REGISTERED_SUPPLIER,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, RefusalReason) else "",
)
def test_command_failing_a_rule_is_refused_with_its_reason(
    engine: Engine, seen: CommandSeen, reason: RefusalReason
) -> None:
    result = engine.on_command(seen, T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is reason
    assert engine.tracked_count == 0
    assert not suppressed(engine, T0 + MIN)


@pytest.mark.parametrize(
    "role", [r for r in RemotePartyRole if r is not RemotePartyRole.SUPPLIER], ids=lambda r: r.name
)
def test_only_a_supplier_may_activate_firmware(engine: Engine, role: RemotePartyRole) -> None:
    result = engine.on_command(command(1000, role=role), T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is RefusalReason.WRONG_ROLE
    assert f"role is {role.name} (0x{role.value:02X})" in result.detail


def test_commands_signed_with_non_supplier_keys_are_refused_for_their_role(
    engine: Engine,
) -> None:
    # Real certificates and signatures, verified as the daemon does: each party signs
    # with its own key and names itself as the originator.
    parties = {
        role: pki.remote_party(bytes.fromhex(f"90B3D51F3003{int(role):04X}"), role)
        for role in (
            RemotePartyRole.NETWORK_OPERATOR,
            RemotePartyRole.ACCESS_CONTROL_BROKER,
            RemotePartyRole.OTHER_USER,
            RemotePartyRole.SUPPLIER,
        )
    }
    trust = gbcs.TrustStore.from_pem_files(
        (role.name, party.certificate_pem) for role, party in parties.items()
    )
    got = {}
    for counter, (role, party) in enumerate(parties.items(), start=1000):
        frame = gbcs.decode_frame(
            builders.cs06_command(
                originator=party.eui64, target=ESME, counter=counter, signer=party.key
            )
        )
        verified = gbcs.verify_frame(frame, trust)
        assert verified.signer is not None
        seen = CommandSeen(
            frame=frame,
            signature=verified.status,
            signer_role=verified.signer.role,
            target=esme(),
            on_guid_list=True,
            last_counter=None,
            sent_at=T0,
        )
        result = engine.on_command(seen, T0)
        got[role] = result.reason if isinstance(result, CommandRefused) else "tracked"
    assert got == {
        RemotePartyRole.NETWORK_OPERATOR: RefusalReason.WRONG_ROLE,
        RemotePartyRole.ACCESS_CONTROL_BROKER: RefusalReason.WRONG_ROLE,
        RemotePartyRole.OTHER_USER: RefusalReason.WRONG_ROLE,
        RemotePartyRole.SUPPLIER: "tracked",
    }
    assert engine.tracked_count == 1


def test_payload_counter_differing_from_the_header_is_refused_naming_both(
    engine: Engine,
) -> None:
    result = engine.on_command(command(1000, payload_counter=1001), T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is RefusalReason.COUNTER_MISMATCH
    assert result.counter == 1000
    assert "payload originator counter 1001 != header originator counter 1000" in result.detail
    # The counter was not accepted: the same header counter, well formed, still opens.
    assert isinstance(engine.on_command(command(1000), T0), ActivationTracked)


def test_registered_supplier_is_the_only_one_whose_command_opens_a_window(
    engine: Engine,
) -> None:
    meter = esme(supplier_id=SUPPLIER)
    result = engine.on_command(command(5000, originator=OTHER_SUPPLIER, target=meter), T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is RefusalReason.NOT_REGISTERED_SUPPLIER
    assert result.originator == OTHER_SUPPLIER
    assert result.detail == (
        "signed by supplier 90-B3-D5-1F-30-02-00-00; the inventory's registered supplier "
        "is 90-B3-D5-1F-30-01-00-00"
    )
    assert not suppressed(engine, T0 + MIN)
    tracked = engine.on_command(command(1000, target=meter), T0)
    assert isinstance(tracked, ActivationTracked)
    assert tracked.activation.originator == SUPPLIER


def test_any_supplier_may_activate_when_the_inventory_names_none(engine: Engine) -> None:
    result = engine.on_command(command(1000, originator=OTHER_SUPPLIER, target=esme()), T0)
    assert isinstance(result, ActivationTracked)
    assert result.activation.originator == OTHER_SUPPLIER


@pytest.mark.parametrize(
    ("seen", "reason"),
    [
        # The signature first: a forgery is a forgery, whatever else is wrong with it.
        (
            command(1000, signature=SignatureStatus.INVALID, payload_counter=1),
            RefusalReason.BAD_SIGNATURE,
        ),
        (
            command(1000, signature=SignatureStatus.UNSIGNED, role=None, payload_counter=1),
            RefusalReason.UNSIGNED,
        ),
        (
            command(1000, role=RemotePartyRole.NETWORK_OPERATOR, payload_counter=1),
            RefusalReason.WRONG_ROLE,
        ),
        # A property of the frame: before anything the inventory says about the target.
        (command(1000, payload_counter=1, known=False), RefusalReason.COUNTER_MISMATCH),
        # The registered supplier matters only for a meter the gateway covers...
        (
            command(1000, originator=OTHER_SUPPLIER, target=esme(supplier_id=SUPPLIER, smets=1)),
            RefusalReason.NOT_SMETS2,
        ),
        (
            command(
                1000,
                originator=OTHER_SUPPLIER,
                target=esme(supplier_id=SUPPLIER),
                on_guid_list=False,
            ),
            RefusalReason.NOT_ON_GUID_LIST,
        ),
        # ... and comes before the replay counters, which are the originator's own.
        (
            command(
                1000,
                originator=OTHER_SUPPLIER,
                target=esme(supplier_id=SUPPLIER),
                last_counter=1000,
            ),
            RefusalReason.NOT_REGISTERED_SUPPLIER,
        ),
    ],
    ids=lambda v: v.value if isinstance(v, RefusalReason) else "",
)
def test_first_failing_rule_names_the_refusal(
    engine: Engine, seen: CommandSeen, reason: RefusalReason
) -> None:
    result = engine.on_command(seen, T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is reason


def test_command_with_counter_above_the_last_accepted_is_tracked(engine: Engine) -> None:
    assert isinstance(engine.on_command(command(1001, last_counter=1000), T0), ActivationTracked)


def test_replay_of_a_tracked_command_is_refused_even_before_it_is_persisted(
    engine: Engine,
) -> None:
    engine.on_command(command(1000, execution_ms=T0 + 60 * MIN), T0)
    result = engine.on_command(command(1000, execution_ms=T0 + 90 * MIN), T0 + MIN)
    assert isinstance(result, CommandRefused)
    assert result.reason is RefusalReason.REPLAY


def test_feature_switch_off_tracks_nothing_and_suppresses_nothing() -> None:
    engine = Engine(EngineConfig(enabled=False), T0)
    result = engine.on_command(command(1000), T0)
    assert isinstance(result, CommandRefused)
    assert result.reason is RefusalReason.FEATURE_OFF
    decision = engine.on_dcc_alert(ad1(T0 + MIN), T0 + MIN)
    assert not decision.suppressed
    assert decision.reason == "feature-off"


def test_manufacturer_list_is_configurable_and_spacing_insensitive() -> None:
    engine = Engine(EngineConfig(manufacturers=("Acme Meters",)), T0)
    refused = engine.on_command(command(1000), T0)
    assert isinstance(refused, CommandRefused)
    assert refused.reason is RefusalReason.MANUFACTURER_NOT_LISTED
    acme = esme(manufacturer="ACME  meters")
    assert isinstance(engine.on_command(command(1001, target=acme), T0), ActivationTracked)


def test_manufacturer_default_is_landis_gyr_in_any_spelling(engine: Engine) -> None:
    target = esme(manufacturer="LANDIS + GYR")
    assert isinstance(engine.on_command(command(1000, target=target), T0), ActivationTracked)


# -- replace and cancel ------------------------------------------------------------------


def test_later_command_replaces_the_pending_future_dated_one(engine: Engine) -> None:
    first, second = T0 + 24 * 60 * MIN, T0 + 48 * 60 * MIN
    engine.on_command(command(1000, execution_ms=first), T0)
    result = engine.on_command(command(1001, execution_ms=second), T0 + MIN)
    assert isinstance(result, ActivationTracked)
    assert result.replaced is not None
    assert result.replaced.start_ms == first
    assert engine.tracked_count == 1
    assert not suppressed(engine, first + 3 * MIN)
    assert suppressed(engine, second + 3 * MIN)


def test_on_demand_command_replaces_a_pending_future_dated_one(engine: Engine) -> None:
    engine.on_command(command(1000, execution_ms=T0 + 24 * 60 * MIN), T0)
    result = engine.on_command(command(1001), T0 + MIN)
    assert isinstance(result, ActivationTracked)
    assert result.replaced is not None
    assert not suppressed(engine, T0 + 24 * 60 * MIN + MIN)
    assert suppressed(engine, T0 + 2 * MIN)


def test_cancellation_sentinel_removes_the_pending_activation(engine: Engine) -> None:
    start = T0 + 24 * 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    result = engine.on_command(command(1001, execution_time=gbcs.CANCELLATION_TIME), T0 + MIN)
    assert isinstance(result, ActivationCancelled)
    assert result.cancelled is not None
    assert result.cancelled.start_ms == start
    assert engine.tracked_count == 0
    assert not suppressed(engine, start + 3 * MIN)


def test_duis_cancellation_date_also_cancels(engine: Engine) -> None:
    engine.on_command(command(1000, execution_ms=T0 + 60 * MIN), T0)
    duis = dt.datetime(3000, 12, 31, tzinfo=dt.UTC)
    result = engine.on_command(command(1001, execution_time=duis), T0 + MIN)
    assert isinstance(result, ActivationCancelled)
    assert result.cancelled is not None
    assert engine.tracked_count == 0


def test_cancellation_with_nothing_pending_is_accepted_and_changes_nothing(
    engine: Engine,
) -> None:
    result = engine.on_command(command(1000, execution_time=gbcs.CANCELLATION_TIME), T0)
    assert isinstance(result, ActivationCancelled)
    assert result.cancelled is None


def test_running_window_is_not_cut_short_by_a_new_command(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    engine.on_command(command(1001, execution_ms=T0 + 24 * 60 * MIN), T0 + 5 * MIN)
    engine.on_command(command(1002, execution_time=gbcs.CANCELLATION_TIME), T0 + 6 * MIN)
    assert suppressed(engine, T0 + 29 * MIN)


def test_forged_cancellation_does_not_remove_the_pending_activation(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    forged = command(1001, execution_time=gbcs.CANCELLATION_TIME, signature=SignatureStatus.INVALID)
    assert isinstance(engine.on_command(forged, T0 + MIN), CommandRefused)
    assert suppressed(engine, start + MIN)


# -- device outcomes -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "code", [ActivationResponseCode.NO_IMAGE_HELD, ActivationResponseCode.HASH_MISMATCH]
)
def test_immediate_failure_without_reboot_closes_the_window_early(
    engine: Engine, code: ActivationResponseCode
) -> None:
    engine.on_command(command(1000), T0)
    result = engine.on_device_outcome(response(1000, code), T0 + MIN)
    assert result.kind is OutcomeKind.CLOSED_EARLY
    assert result.activation is not None
    assert result.activation.end_ms == T0 + MIN
    assert suppressed(engine, T0 + MIN - 1)  # raised before the response: still covered
    assert not suppressed(engine, T0 + 3 * MIN)


@pytest.mark.parametrize(
    "code", [ActivationResponseCode.ACTIVATION_FAILURE, ActivationResponseCode.SUCCESS]
)
def test_activation_failure_or_success_keeps_the_window(
    engine: Engine, code: ActivationResponseCode
) -> None:
    engine.on_command(command(1000), T0)
    result = engine.on_device_outcome(response(1000, code), T0 + MIN)
    assert result.kind is OutcomeKind.KEPT
    assert suppressed(engine, T0 + 20 * MIN)


def test_each_device_outcome_names_its_reason_from_one_vocabulary(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    cases = [
        (response(1000, ActivationResponseCode.NO_IMAGE_HELD), OutcomeReason.NEVER_REBOOTED),
        (response(999, ActivationResponseCode.HASH_MISMATCH), OutcomeReason.NO_ACTIVATION),
        (response(1000, None), OutcomeReason.COMMAND_ACCEPTED),
        (
            response(1000, None, signature=SignatureStatus.INVALID),
            OutcomeReason.SIGNATURE_NOT_VALID,
        ),
    ]
    for seen, reason in cases:
        result = engine.on_device_outcome(seen, T0 + MIN)
        assert result.reason is reason
        assert result.detail  # the same said for a person
    assert str(OutcomeReason.NEVER_REBOOTED) == "never-rebooted"  # the log field


def test_command_accepted_response_changes_nothing(engine: Engine) -> None:
    engine.on_command(command(1000, execution_ms=T0 + 60 * MIN), T0)
    assert engine.on_device_outcome(response(1000, None), T0).kind is OutcomeKind.ACCEPTED
    assert suppressed(engine, T0 + 61 * MIN)


def test_forged_failure_response_is_ignored(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    forged = response(1000, ActivationResponseCode.NO_IMAGE_HELD, signature=SignatureStatus.INVALID)
    assert engine.on_device_outcome(forged, T0 + MIN).kind is OutcomeKind.IGNORED
    assert suppressed(engine, T0 + 20 * MIN)


def test_response_for_an_unknown_counter_is_ignored(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    result = engine.on_device_outcome(response(999, ActivationResponseCode.NO_IMAGE_HELD), T0)
    assert result.kind is OutcomeKind.IGNORED
    assert suppressed(engine, T0 + 20 * MIN)


def test_future_dated_failure_alert_closes_the_window(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    result = engine.on_device_outcome(
        fd_alert(1000, start, ActivationResponseCode.HASH_MISMATCH), start + MIN
    )
    assert result.kind is OutcomeKind.CLOSED_EARLY
    assert not suppressed(engine, start + 5 * MIN)


def test_future_dated_activation_failure_keeps_the_window(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    alert = fd_alert(1000, start, ActivationResponseCode.ACTIVATION_FAILURE)
    assert engine.on_device_outcome(alert, start + MIN).kind is OutcomeKind.KEPT
    assert suppressed(engine, start + 5 * MIN)


def test_future_dated_success_is_recorded_against_the_activation(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    result = engine.on_device_outcome(fd_alert(1000, start, ActivationResponseCode.SUCCESS), start)
    assert result.kind is OutcomeKind.SUCCEEDED
    assert result.activation is not None
    assert result.activation.succeeded
    (tracked,) = engine.activations()
    assert tracked.succeeded
    assert suppressed(engine, start + 5 * MIN)


def test_failure_alert_before_the_start_drops_the_pending_activation(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    alert = fd_alert(1000, start, ActivationResponseCode.NO_IMAGE_HELD)
    assert engine.on_device_outcome(alert, T0 + MIN).kind is OutcomeKind.CLOSED_EARLY
    assert engine.tracked_count == 0


# -- duplicates, restoration, housekeeping ----------------------------------------------------


def test_redelivered_alert_gets_the_same_decision_marked_duplicate(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    first = engine.on_dcc_alert(ad1(T0 + MIN, alert_id="a-1"), T0 + MIN)
    # Redelivered after the window has ended: same decision, flagged.
    again = engine.on_dcc_alert(ad1(T0 + MIN, alert_id="a-1"), T0 + 45 * MIN)
    assert first.suppressed
    assert again.suppressed
    assert again.duplicate
    assert not first.duplicate
    assert again.decided_at == first.decided_at


def test_remembered_alert_ids_age_out_after_the_dedupe_horizon() -> None:
    engine = Engine(EngineConfig(dedupe_ms=10 * MIN), T0)
    engine.on_dcc_alert(ad1(T0, alert_id="a-1"), T0)
    assert engine.decision_for("a-1") is not None
    assert DedupeExpired(1) in engine.advance(T0 + 10 * MIN + 1000)
    assert engine.decision_for("a-1") is None


def test_remembered_alert_ids_are_bounded_in_number_oldest_first() -> None:
    engine = Engine(EngineConfig(dedupe_max=3), T0)
    for i in range(5):
        engine.on_dcc_alert(ad1(T0, alert_id=f"a-{i}"), T0 + i)
    assert [engine.decision_for(f"a-{i}") is not None for i in range(5)] == [
        False,
        False,
        True,
        True,
        True,
    ]


def test_a_remembered_decision_comes_back_exactly_as_made(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    suppressed = engine.on_dcc_alert(ad1(T0 + MIN, alert_id="in"), T0 + MIN)
    forwarded = engine.on_dcc_alert(ad1(T0 + MIN, chf=OTHER_CHF, alert_id="out"), T0 + MIN)
    assert suppressed.suppressed
    assert suppressed.activation is not None
    assert not forwarded.suppressed
    # Kept packed (for memory); unpacked, nothing is lost.
    assert engine.decision_for("in") == suppressed
    assert engine.decision_for("out") == forwarded


def test_a_decision_reason_comes_back_as_the_member_it_was() -> None:
    for reason in AlertReason:
        decision = AlertDecision("a-1", CHF, False, reason, T0, T0 + 1)
        packed = pack_decision(decision)
        # The packed format is unchanged: the reason's length and its ASCII text.
        assert (
            packed[25 : 26 + len(reason.value)]
            == bytes([len(reason.value)]) + reason.value.encode()
        )
        back = unpack_decision("a-1", packed)
        assert back == decision
        assert back.reason is reason


def test_a_reason_outside_the_vocabulary_is_neither_packed_nor_unpacked() -> None:
    decision = AlertDecision("a-1", CHF, False, AlertReason.NO_WINDOW, T0, T0 + 1)
    with pytest.raises(ValueError, match="alert reason"):
        pack_decision(msgspec_replace(decision, reason="made-up"))
    packed = pack_decision(decision).replace(b"no-window", b"no-widow!")
    with pytest.raises(ValueError, match="alert reason"):
        unpack_decision("a-1", packed)


def test_an_alert_id_decided_again_is_aged_from_its_new_decision() -> None:
    engine = Engine(EngineConfig(dedupe_ms=10 * MIN), T0)
    engine.on_dcc_alert(ad1(T0, alert_id="a-1"), T0)
    engine.on_dcc_alert(ad1(T0, alert_id="a-2"), T0 + MIN)
    engine.advance(T0 + 10 * MIN + 1000)  # a-1 forgotten, a-2 not yet
    again = engine.on_dcc_alert(ad1(T0 + 11 * MIN, alert_id="a-1"), T0 + 11 * MIN)
    assert not again.duplicate
    engine.advance(T0 + 11 * MIN + 1000)  # a-2's horizon, not the new a-1's
    assert engine.decision_for("a-2") is None
    assert engine.decision_for("a-1") == again


def test_restoration_alert_inside_a_window_is_reported_not_suppressed(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    frame = gbcs.decode_frame(
        builders.restoration_alert(
            device=ESME,
            recipient=SUPPLIER,
            alert_counter=1,
            alert_time=utc(T0 + 14 * MIN),
            outage_start=utc(T0 + MIN),
            signer=None,
        )
    )
    observed = engine.on_restoration(frame, esme(), T0 + 14 * MIN)
    assert observed.in_window
    assert observed.activation is not None
    assert engine.on_restoration(frame, esme(), T0 + 40 * MIN).in_window is False


def test_pending_window_opens_and_expires_through_housekeeping(engine: Engine) -> None:
    start = T0 + 60 * MIN
    engine.on_command(command(1000, execution_ms=start), T0)
    assert (engine.pending_windows, engine.active_windows) == (1, 0)
    assert engine.next_deadline() == start
    assert engine.advance(start - 1) == []
    (opened,) = engine.advance(start)
    assert isinstance(opened, WindowOpened)
    assert (engine.pending_windows, engine.active_windows) == (0, 1)
    assert engine.next_deadline() == start + 30 * MIN
    (ended,) = engine.advance(start + 30 * MIN)
    assert isinstance(ended, WindowEnded)
    assert (engine.active_windows, engine.ended_windows) == (0, 1)
    (expired,) = engine.advance(start + 30 * MIN + engine.config.retain_ms)
    assert isinstance(expired, WindowExpired)
    assert expired.activation.counter == 1000
    assert engine.tracked_count == 0
    assert list(engine.activations()) == []


def test_alert_raised_in_a_window_but_delivered_after_its_end_is_still_suppressed(
    engine: Engine,
) -> None:
    engine.on_command(command(1000), T0)
    engine.advance(T0 + 40 * MIN)  # housekeeping has seen the end
    assert suppressed(engine, T0 + 20 * MIN, now=T0 + 40 * MIN)
    engine.advance(T0 + 30 * MIN + engine.config.retain_ms)
    assert not suppressed(engine, T0 + 20 * MIN, now=T0 + 30 * MIN + engine.config.retain_ms)


def test_alert_raised_before_an_early_close_stays_covered_after_housekeeping(
    engine: Engine,
) -> None:
    engine.on_command(command(1000), T0)
    engine.on_device_outcome(response(1000, ActivationResponseCode.NO_IMAGE_HELD), T0 + MIN)
    engine.advance(T0 + 5 * MIN)
    assert suppressed(engine, T0 + MIN - 1, now=T0 + 5 * MIN)
    assert not suppressed(engine, T0 + MIN, now=T0 + 5 * MIN)


def test_expiry_housekeeping_never_changes_a_decision(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    # Housekeeping not yet run at the end: the decision compares exact times anyway.
    assert not suppressed(engine, T0 + 30 * MIN, now=T0 + 40 * MIN)
    assert suppressed(engine, T0 + 29 * MIN, now=T0 + 40 * MIN)


def test_restore_rebuilds_windows_and_expires_what_is_past(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    engine.on_command(command(2000, execution_ms=T0 + 60 * MIN, target=esme(chf=OTHER_CHF)), T0)
    saved = list(engine.activations())
    fresh = Engine(EngineConfig(), T0 + 45 * MIN)
    due = fresh.restore(saved, T0 + 45 * MIN)
    assert [type(h) for h in due] == [WindowEnded]
    assert not suppressed(fresh, T0 + 45 * MIN)
    assert suppressed(fresh, T0 + 61 * MIN, chf=OTHER_CHF)
    assert fresh.pending_windows == 1


def test_restore_takes_each_window_as_it_stands_now_without_an_opening_per_window(
    engine: Engine,
) -> None:
    # Three windows saved at T0: one open, one that opens during the downtime, one that
    # opens after the restore. A promotion restores up to 1.4 million windows, so the
    # one that opened meanwhile comes back open, with no WindowOpened for it.
    engine.on_command(command(1000), T0)
    engine.on_command(command(2000, execution_ms=T0 + 10 * MIN, target=esme(chf=OTHER_CHF)), T0)
    third = esme(chf=bytes.fromhex("00DB1234567890FF"))
    engine.on_command(command(3000, execution_ms=T0 + 60 * MIN, target=third), T0)
    saved = list(engine.activations())
    now = T0 + 20 * MIN
    fresh = Engine(EngineConfig(), now)
    assert fresh.restore(saved, now) == []
    assert (fresh.active_windows, fresh.pending_windows, fresh.ended_windows) == (2, 1, 0)
    assert suppressed(fresh, now, chf=OTHER_CHF)
    # The pending one still opens on time, and the ended ones end on time.
    opened = fresh.advance(T0 + 60 * MIN)
    assert [type(h) for h in opened].count(WindowOpened) == 1
    assert [type(h) for h in opened].count(WindowEnded) == 2  # at T0 + 30 and + 40 min


# -- near misses (issue 13, point 7) ------------------------------------------------------


def test_an_ad1_forwarded_shortly_after_a_window_ended_is_a_near_miss(engine: Engine) -> None:
    engine.on_command(command(1000), T0)  # window [T0, T0 + 30 min)
    engine.advance(T0 + 40 * MIN)
    decision = engine.on_dcc_alert(ad1(T0 + 37 * MIN), T0 + 40 * MIN)
    assert not decision.suppressed
    assert decision.reason is AlertReason.NO_WINDOW
    assert decision.after_window_ms == 7 * MIN


def test_the_near_miss_horizon_is_inclusive_and_configurable() -> None:
    engine = Engine(EngineConfig(near_miss_ms=5 * MIN), T0)
    engine.on_command(command(1000), T0)
    at_edge = engine.on_dcc_alert(ad1(T0 + 35 * MIN), T0 + 35 * MIN)
    beyond = engine.on_dcc_alert(ad1(T0 + 35 * MIN + 1), T0 + 35 * MIN + 1)
    assert at_edge.after_window_ms == 5 * MIN
    assert beyond.after_window_ms is None


def test_an_ad1_at_the_exact_end_of_a_window_is_a_near_miss_of_zero(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + 30 * MIN), T0 + 30 * MIN)
    assert not decision.suppressed
    assert decision.after_window_ms == 0


def test_an_ad1_beyond_the_default_near_miss_horizon_is_no_near_miss(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + 45 * MIN + 1), T0 + 46 * MIN)
    assert decision.reason is AlertReason.NO_WINDOW
    assert decision.after_window_ms is None


def test_a_window_of_another_hub_makes_no_near_miss(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + 31 * MIN, chf=OTHER_CHF), T0 + 31 * MIN)
    assert not decision.suppressed
    assert decision.after_window_ms is None


def test_an_ad1_inside_an_open_window_is_suppressed_not_a_near_miss(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    decision = engine.on_dcc_alert(ad1(T0 + 29 * MIN), T0 + 29 * MIN)
    assert decision.suppressed
    assert decision.after_window_ms is None


def test_an_ad1_before_a_window_or_with_none_is_no_near_miss(engine: Engine) -> None:
    assert engine.on_dcc_alert(ad1(T0), T0).after_window_ms is None
    engine.on_command(command(1000, execution_ms=T0 + 60 * MIN), T0)
    assert engine.on_dcc_alert(ad1(T0 + MIN), T0 + MIN).after_window_ms is None


def test_an_ad1_after_a_window_closed_early_is_no_near_miss(engine: Engine) -> None:
    # Outcome 1 (no image held): the meter never rebooted, so an AD1 after the close is
    # not a reboot that outlasted the window.
    engine.on_command(command(1000), T0)
    engine.on_device_outcome(response(1000, ActivationResponseCode.NO_IMAGE_HELD), T0 + MIN)
    decision = engine.on_dcc_alert(ad1(T0 + 5 * MIN), T0 + 5 * MIN)
    assert not decision.suppressed
    assert decision.after_window_ms is None


def test_the_nearest_of_two_ended_windows_gives_the_gap(engine: Engine) -> None:
    engine.on_command(command(1000), T0)  # ends at T0 + 30 min
    second = esme(device_id=bytes.fromhex("00DB1234567890A1"))
    engine.on_command(command(2000, sent_at=T0 + 5 * MIN, target=second), T0 + 5 * MIN)
    decision = engine.on_dcc_alert(ad1(T0 + 40 * MIN), T0 + 40 * MIN)
    assert decision.after_window_ms == 5 * MIN  # from the second's end, T0 + 35 min


def test_a_window_is_kept_for_near_misses_beyond_a_shorter_retain() -> None:
    engine = Engine(EngineConfig(retain_ms=5 * MIN, near_miss_ms=15 * MIN), T0)
    engine.on_command(command(1000), T0)
    assert not [h for h in engine.advance(T0 + 36 * MIN) if isinstance(h, WindowExpired)]
    assert engine.on_dcc_alert(ad1(T0 + 40 * MIN), T0 + 40 * MIN).after_window_ms == 10 * MIN
    # ... while only retain_ms of that still judges a late alert raised inside it.
    late = engine.on_dcc_alert(ad1(T0 + 20 * MIN), T0 + 36 * MIN)
    assert not late.suppressed
    expired = engine.advance(T0 + 45 * MIN)
    assert [type(h) for h in expired] == [WindowExpired]


def test_a_near_miss_is_remembered_for_a_redelivery(engine: Engine) -> None:
    engine.on_command(command(1000), T0)
    first = engine.on_dcc_alert(ad1(T0 + 32 * MIN, alert_id="late"), T0 + 32 * MIN)
    again = engine.on_dcc_alert(ad1(T0 + 32 * MIN, alert_id="late"), T0 + 33 * MIN)
    assert again.duplicate
    assert again.after_window_ms == first.after_window_ms == 2 * MIN


def test_a_packed_decision_keeps_its_near_miss_and_its_activation() -> None:
    activation = Engine(EngineConfig(), T0).on_command(command(1000), T0)
    assert isinstance(activation, ActivationTracked)
    for decision in (
        AlertDecision("a-1", CHF, False, AlertReason.NO_WINDOW, T0, T0 + 1, after_window_ms=0),
        AlertDecision(
            "a-2",
            CHF,
            True,
            AlertReason.INSIDE_WINDOW,
            T0,
            T0 + 1,
            activation=activation.activation,
            after_window_ms=7 * MIN,
        ),
    ):
        assert unpack_decision(decision.alert_id, pack_decision(decision)) == decision


def test_a_packed_decision_with_bytes_fitting_no_section_is_refused() -> None:
    decision = AlertDecision("a-1", CHF, False, AlertReason.NO_WINDOW, T0, T0 + 1)
    with pytest.raises(ValueError, match="after the reason"):
        unpack_decision("a-1", pack_decision(decision) + b"\x00" * 3)
    packed = pack_decision(msgspec_replace(decision, after_window_ms=MIN))
    with pytest.raises(ValueError, match="near-miss"):
        unpack_decision("a-1", packed[:-9] + b"X" + packed[-8:])


def test_a_negative_near_miss_horizon_is_refused() -> None:
    with pytest.raises(ValueError, match="near_miss_ms"):
        EngineConfig(near_miss_ms=-1)
