"""The simulator: a seeded population and timeline, ground truth that agrees with the
engine, the scorecard's pass/fail logic, and three end-to-end runs against a real
mosquitto (one that passes, two deliberately misconfigured gateways that fail)."""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter
from pathlib import Path

import pytest

import gbcs
from gateway.cli import simulate as cli_simulate
from gateway.config import load_config
from gateway.core.devices import DeviceRecord, DeviceType
from gateway.core.engine import Engine, EngineConfig
from gateway.core.events import (
    ActivationCancelled,
    ActivationTracked,
    CommandSeen,
    DeviceOutcomeSeen,
)
from gateway.guids import GuidList
from gateway.simulator.frames import FrameFactory
from gateway.simulator.population import (
    AREA_SIZE,
    ATTACKER,
    OTHER_SUPPLIER,
    PARTIES,
    SUPPLIER,
    BrokerAddress,
    Category,
    Credentials,
    Population,
    build_population,
    write_gateway_home,
)
from gateway.simulator.runner import command_counts, evidence_counts
from gateway.simulator.scorecard import Evidence, Observation, Scorecard, compute, percentile
from gateway.simulator.timeline import (
    ActivationAlertSent,
    Ad1Sent,
    Ad1Truth,
    CommandSent,
    ResponseSent,
    RestorationSent,
    Timeline,
    TimelineParams,
    build_timeline,
)
from gateway.simulator.windows import WindowBook, refusal_for
from gateway.state.inventory import Inventory
from gateway.wire import DccAlertEnvelope

from .e2e_support import Broker

MIN = 60_000
RETAIN = 10 * MIN
SEC = 1_000


@pytest.fixture(scope="module")
def estate() -> Population:
    return build_population(10_000, seed=7)


@pytest.fixture(scope="module")
def timeline(estate: Population) -> Timeline:
    return build_timeline(estate, seed=7, scale=60)


# -- population ---------------------------------------------------------------------------


def test_population_is_the_same_for_the_same_seed() -> None:
    assert build_population(500, seed=3) == build_population(500, seed=3)
    assert build_population(500, seed=3) != build_population(500, seed=4)


def test_population_has_the_requested_shares(estate: Population) -> None:
    counts = estate.counts()
    assert counts == {
        "listed": 6000,
        "lg-not-on-guid-list": 500,
        "other-make": 2500,
        "smets1": 1000,
        "skewed-clock": 1000,
        "registered-supplier": 5000,
    }
    ids = [p.esme for p in estate.premises] + [p.chf for p in estate.premises]
    assert len(set(ids)) == 20_000
    for p in estate.premises:
        assert abs(p.clock_offset_ms) <= estate.max_clock_offset_ms
        assert p.covered == (p.manufacturer == "Landis+Gyr" and p.smets == 2 and p.on_guid_list)
        if p.category is Category.OTHER_MAKE:
            assert p.manufacturer != "Landis+Gyr"
        if p.category is Category.SMETS1:
            assert p.smets == 1
            assert not p.on_guid_list


def test_population_refuses_shares_that_do_not_fit() -> None:
    with pytest.raises(ValueError, match="add up"):
        build_population(10, seed=1, share_listed=0.8, share_other_makes=0.3)
    with pytest.raises(ValueError, match="between 0 and 1"):
        build_population(10, seed=1, share_skewed_clock=1.5)


def test_inventory_puts_each_esme_on_its_own_hub(estate: Population) -> None:
    records = estate.inventory_records()
    assert len(records) == 20_000
    esmes = {r.device_id: r for r in records if r.device_type is DeviceType.ESME}
    for p in estate.premises[:100]:
        assert esmes[p.esme].chf_id == p.chf
        assert esmes[p.esme].manufacturer == p.manufacturer
        assert esmes[p.esme].supplier_id == p.supplier_id
    assert len(estate.guid_list()) == 6000
    assert {r.supplier_id for r in esmes.values()} == {SUPPLIER, None}


def test_gateway_home_is_scaled_and_loadable(tmp_path: Path) -> None:
    population = build_population(200, seed=1)
    credentials = Credentials.generate([population.premises[0].esme])
    home = write_gateway_home(
        population,
        tmp_path / "home",
        credentials=credentials,
        broker=BrokerAddress("127.0.0.1", 1884),
        scale=60,
        metrics_port=9999,
    )
    config = load_config(home.config, env={})
    s = config.suppression
    assert (s.window, s.lead, s.skew) == (30_000, 2_000, 5_000)
    assert config.reports.period == 60_000
    assert config.broker.port == 1884
    assert home.metrics_url == "http://127.0.0.1:9999/metrics"
    trust = gbcs.TrustStore.from_directory(home.root / "trust")
    # The five remote parties and one ESME; never the attacker.
    assert len(trust) == 6
    assert ATTACKER not in trust
    roles = {eui: signers[0].role for eui, signers in trust.identities.items()}
    assert {eui: roles[eui] for eui, _ in PARTIES.values()} == dict(PARTIES.values())
    with GuidList.open(config.paths.guid_list) as guids:
        assert len(guids) == len(population.guid_list())
    with Inventory.open(config.paths.inventory, create=False) as inventory:
        assert inventory.count() == 400
        for p in population.premises:
            record = inventory.get(p.esme)
            assert record is not None
            assert record.supplier_id == p.supplier_id


def test_gateway_home_can_be_misconfigured_on_purpose(tmp_path: Path) -> None:
    population = build_population(50, seed=1)
    home = write_gateway_home(
        population,
        tmp_path,
        credentials=Credentials.generate(),
        broker=BrokerAddress(),
        scale=600,
        window_override_ms=MIN,
        empty_guid_list=True,
    )
    config = load_config(home.config, env={})
    assert config.suppression.window == 100
    with GuidList.open(config.paths.guid_list) as guids:
        assert len(guids) == 0


def test_skew_tolerance_covers_the_largest_clock_offset(tmp_path: Path) -> None:
    population = build_population(50, seed=1, max_clock_offset_ms=9 * MIN)
    home = write_gateway_home(
        population, tmp_path, credentials=Credentials.generate(), broker=BrokerAddress(), scale=60
    )
    assert load_config(home.config, env={}).suppression.skew == 10 * SEC


def test_broker_address_is_parsed_from_a_url() -> None:
    assert BrokerAddress.parse("mqtt://127.0.0.1:1884") == BrokerAddress("127.0.0.1", 1884)
    assert BrokerAddress.parse("localhost") == BrokerAddress("localhost", 1883)
    for bad in ("mqtt://host:port", "http://x/y", "mqtt://:1883", ""):
        with pytest.raises(ValueError, match="not a broker address"):
            BrokerAddress.parse(bad)


# -- window rules ---------------------------------------------------------------------------


def _book() -> WindowBook:
    return WindowBook(window_ms=30 * MIN, lead_ms=2 * MIN, retain_ms=RETAIN)


CHF, ESME = b"C" * 8, b"E" * 8


def test_on_demand_window_starts_on_arrival_with_the_lead_before_it() -> None:
    book = _book()
    book.command(10 * MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=None)
    now = 10 * MIN
    assert book.covering(CHF, 8 * MIN, now) is not None
    assert book.covering(CHF, 8 * MIN - 1, now) is None
    assert book.covering(CHF, 40 * MIN - 1, now) is not None
    assert book.covering(CHF, 40 * MIN, now) is None
    assert book.covering(b"X" * 8, 20 * MIN, now) is None


def test_an_ended_window_still_covers_late_arrivals_until_its_retention_ends() -> None:
    book = _book()
    book.command(10 * MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=None)
    assert book.covering(CHF, 35 * MIN, now=40 * MIN) is not None  # raised inside, late
    assert book.covering(CHF, 35 * MIN, now=40 * MIN + RETAIN - 1) is not None
    assert book.covering(CHF, 35 * MIN, now=40 * MIN + RETAIN) is None


def test_a_later_command_replaces_a_pending_one_and_a_cancellation_removes_it() -> None:
    book = _book()
    book.command(MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=60 * MIN)
    assert book.has_pending(CHF, ESME, 2 * MIN)
    book.command(2 * MIN, chf=CHF, esme=ESME, counter=2, command_id=2, execution_ms=90 * MIN)
    assert book.covering(CHF, 61 * MIN, 2 * MIN) is None
    window = book.covering(CHF, 91 * MIN, 2 * MIN)
    assert window is not None
    assert window.command_id == 2
    book.command(
        3 * MIN, chf=CHF, esme=ESME, counter=3, command_id=3, execution_ms=None, cancel=True
    )
    assert book.covering(CHF, 91 * MIN, 3 * MIN) is None


def test_a_running_window_is_never_cut_short_by_a_command() -> None:
    book = _book()
    book.command(MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=None)
    book.command(
        5 * MIN, chf=CHF, esme=ESME, counter=2, command_id=2, execution_ms=None, cancel=True
    )
    assert book.covering(CHF, 20 * MIN, 5 * MIN) is not None


def test_outcome_1_closes_the_window_on_arrival_or_drops_it_before_its_start() -> None:
    book = _book()
    book.command(MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=None)
    assert book.outcome(2 * MIN, chf=CHF, esme=ESME, counter=1, code=0) is None  # success
    book.outcome(3 * MIN, chf=CHF, esme=ESME, counter=1, code=1)
    assert book.covering(CHF, 3 * MIN - 1, now=3 * MIN - 1) is not None
    assert book.covering(CHF, 3 * MIN - 1, now=3 * MIN) is not None  # raised before the close
    assert book.covering(CHF, 3 * MIN, now=3 * MIN) is None  # closed at the outcome
    other = b"F" * 8
    book.command(MIN, chf=CHF, esme=other, counter=1, command_id=2, execution_ms=60 * MIN)
    book.outcome(59 * MIN, chf=CHF, esme=other, counter=1, code=1)  # clock ahead: early
    assert book.covering(CHF, 59 * MIN, 59 * MIN) is None


def test_coverage_is_judged_with_what_had_arrived() -> None:
    book = _book()
    window = book.command(10 * MIN, chf=CHF, esme=ESME, counter=1, command_id=1, execution_ms=None)
    assert window is not None
    book.outcome(12 * MIN, chf=CHF, esme=ESME, counter=1, code=1)
    lead = 2 * MIN
    assert not window.covered_as_of(9 * MIN, arrival=10 * MIN - 1, lead_ms=lead, retain_ms=RETAIN)
    assert window.covered_as_of(11 * MIN, arrival=11 * MIN, lead_ms=lead, retain_ms=RETAIN)
    # Raised before the early close, arriving after it: still covered (retention).
    assert window.covered_as_of(11 * MIN, arrival=13 * MIN, lead_ms=lead, retain_ms=RETAIN)
    assert not window.covered_as_of(12 * MIN, arrival=13 * MIN, lead_ms=lead, retain_ms=RETAIN)
    assert not window.covered_as_of(
        11 * MIN, arrival=12 * MIN + RETAIN, lead_ms=lead, retain_ms=RETAIN
    )


def test_refusals_follow_the_engine_order() -> None:
    def refused(**overrides: object) -> str | None:
        facts: dict[str, object] = {
            "signer": "supplier",
            "smets": 2,
            "manufacturer": "Landis + Gyr",
            "on_guid_list": True,
            "counter": 5,
            "last_counter": 4,
        }
        return refusal_for(**(facts | overrides))  # type: ignore[arg-type]

    assert refused() is None
    assert refused(signer="impostor", smets=1) == "bad-signature"
    assert refused(signer="untrusted") == "untrusted-signer"
    assert refused(smets=1, manufacturer="EDMI") == "not-smets2"
    assert refused(manufacturer="EDMI", on_guid_list=False) == "manufacturer-not-listed"
    assert refused(on_guid_list=False, counter=1) == "not-on-guid-list"
    assert refused(counter=4) == "replay"
    for role in ("network-operator", "acb", "other-user"):
        assert refused(signer=role, payload_counter=1, smets=1) == "wrong-role"
    assert refused(signer="impostor", payload_counter=1) == "bad-signature"
    assert refused(payload_counter=6, smets=1) == "counter-mismatch"
    assert refused(payload_counter=5) is None
    other = {"signer": "other-supplier", "originator": OTHER_SUPPLIER}
    assert refused(**other) is None  # no supplier registered: any Supplier will do
    assert refused(**other, registered_supplier=SUPPLIER, counter=4) == "not-registered-supplier"
    assert refused(**other, registered_supplier=SUPPLIER, on_guid_list=False) == (
        "not-on-guid-list"
    )
    assert refused(originator=SUPPLIER, registered_supplier=SUPPLIER) is None


# -- timeline -------------------------------------------------------------------------------


def _commands(timeline: Timeline) -> list[CommandSent]:
    return [e for e in timeline.events if isinstance(e, CommandSent)]


def test_timeline_is_the_same_for_the_same_seed(estate: Population, timeline: Timeline) -> None:
    assert build_timeline(estate, seed=7, scale=60) == timeline
    assert build_timeline(estate, seed=8, scale=60) != timeline


def test_events_are_in_playing_order(timeline: Timeline) -> None:
    keys = [(e.at_ms, e.seq) for e in timeline.events]
    assert keys == sorted(keys)
    assert [e.seq for e in timeline.events] == list(range(1, len(timeline.events) + 1))
    assert timeline.end_ms <= timeline.params.duration_ms


def test_a_few_hundred_meters_activate_about_13_percent_future_dated(timeline: Timeline) -> None:
    rollout = [c for c in _commands(timeline) if c.purpose == "rollout"]
    assert len(rollout) == 400
    share = sum(c.kind == "future-dated" for c in rollout) / len(rollout)
    assert 0.09 <= share <= 0.17
    purposes = Counter(c.purpose for c in _commands(timeline))
    for purpose in ("reschedule", "cancel", "replay", "forgery"):
        assert purposes[purpose] > 0, purpose


def test_future_dated_executions_fall_on_whole_real_seconds_later_in_the_run(
    timeline: Timeline,
) -> None:
    for c in _commands(timeline):
        if c.kind == "future-dated" and c.purpose in ("rollout", "reschedule"):
            assert c.execution_ms is not None
            assert c.execution_ms % (60 * SEC) == 0  # scale 60: a real second
            assert c.at_ms + 15 * MIN <= c.execution_ms <= timeline.params.duration_ms


def test_every_kind_of_ad1_is_in_the_run(timeline: Timeline) -> None:
    causes = timeline.causes()
    for cause in (
        "firmware-listed",
        "firmware-late",
        "firmware-unlisted",
        "genuine",
        "genuine-in-window",
    ):
        assert causes.get(cause, 0) > 0, cause
    ids = [t.alert_id for t in timeline.truths]
    assert len(ids) == len(set(ids))
    redelivered = [e for e in timeline.events if isinstance(e, Ad1Sent) and e.redelivery]
    assert redelivered
    assert {e.alert_id for e in redelivered} <= set(ids)
    for t in timeline.truths:
        assert t.should_suppress == (t.cause in ("firmware-listed", "genuine-in-window"))


def test_the_storm_takes_out_whole_areas_at_once(estate: Population, timeline: Timeline) -> None:
    storm = [t for t in timeline.truths if t.storm]
    assert timeline.storm_at_ms is not None
    assert len(storm) >= AREA_SIZE
    by_chf = {p.chf: p for p in estate.premises}
    assert len({by_chf[t.chf].area for t in storm}) <= 3
    arrivals = [t.arrival_ms for t in storm]
    assert max(arrivals) - min(arrivals) <= 60 * SEC
    assert any(t.cause == "genuine-in-window" for t in storm)


def _executed(timeline: Timeline, estate: Population, t: Ad1Truth) -> tuple[int, int]:
    # When the meter ran the activation behind a firmware AD1: (earliest, latest).
    commands = {c.command_id: c for c in _commands(timeline)}
    offset = {p.chf: p.clock_offset_ms for p in estate.premises}
    assert t.command_id is not None
    command = commands[t.command_id]
    if command.execution_ms is None:
        return command.at_ms + 2 * SEC, command.at_ms + 8 * SEC
    at = command.execution_ms - offset[t.chf]  # when the meter's clock says so
    return at, at


def _restorations(timeline: Timeline) -> dict[bytes, list[int]]:
    out: dict[bytes, list[int]] = {}
    for e in timeline.events:
        if isinstance(e, RestorationSent):
            out.setdefault(e.chf, []).append(e.at_ms)
    return out


def test_firmware_reboots_raise_an_ad1_about_3_minutes_in(
    estate: Population, timeline: Timeline
) -> None:
    offset = {p.chf: p.clock_offset_ms for p in estate.premises}
    checked = 0
    for t in timeline.truths:
        if not t.cause.startswith("firmware") or t.slow_flash:
            continue
        executed = _executed(timeline, estate, t)
        assert executed[0] + 165 * SEC <= t.arrival_ms <= executed[1] + 195 * SEC
        assert t.raised_ms == t.arrival_ms + offset[t.chf]
        checked += 1
    assert checked


def test_by_default_a_firmware_reboot_sends_no_restoration_alert_as_a5_says(
    estate: Population, timeline: Timeline
) -> None:
    assert not timeline.params.restoration_on_reboot
    restorations = _restorations(timeline)
    genuine = {t.chf for t in timeline.truths if t.cause.startswith("genuine")}
    rebooted = {t.chf for t in timeline.truths if t.cause.startswith("firmware")}
    assert rebooted - genuine
    for chf in rebooted - genuine:
        assert chf not in restorations
    # Genuine outages still end with one each.
    assert genuine <= set(restorations)


def test_told_to_a_firmware_reboot_sends_a_restoration_alert_when_power_returns() -> None:
    estate = build_population(3_000, seed=7)
    params = TimelineParams(restoration_on_reboot=True, share_targeted=0.1)
    timeline = build_timeline(estate, seed=7, scale=60, params=params)
    restorations = _restorations(timeline)
    checked = 0
    for t in timeline.truths:
        if not t.cause.startswith("firmware") or t.slow_flash:
            continue
        executed = _executed(timeline, estate, t)
        back = [r for r in restorations[t.chf] if r > t.arrival_ms]
        assert executed[0] + 12 * MIN + 10 * SEC <= min(back) <= executed[1] + 15 * MIN + 40 * SEC
        checked += 1
    assert checked
    # Power returns inside the 30-minute window: every covered meter's reboot gives a
    # restoration alert inside a window, the evidence against A5 the gateway counts.
    covered = sum(1 for t in timeline.truths if t.cause == "firmware-listed")
    assert timeline.expected_restorations_in_window >= covered


def test_a_slow_flash_reboots_after_its_window_and_its_ad1_is_a_near_miss(
    estate: Population, timeline: Timeline
) -> None:
    late = [t for t in timeline.truths if t.cause == "firmware-late"]
    assert late
    for t in late:
        assert t.slow_flash
        assert not t.should_suppress
        assert t.after_window_ms is not None
        assert MIN <= t.after_window_ms <= timeline.params.near_miss_ms
        executed = _executed(timeline, estate, t)
        window = timeline.params.window_ms
        assert executed[0] + window + 5 * MIN <= t.arrival_ms <= executed[1] + window + 9 * MIN
    assert timeline.expected_near_misses() >= len(late)
    assert all(t.after_window_ms is None for t in timeline.truths if t.should_suppress)


def test_activations_with_no_image_held_cause_no_outage(timeline: Timeline) -> None:
    failed = {
        e.command_id
        for e in timeline.events
        if isinstance(e, ResponseSent | ActivationAlertSent) and e.outcome == 1
    }
    assert failed
    rebooted = {t.command_id for t in timeline.truths if t.command_id is not None}
    assert not failed & rebooted


def test_replays_and_forgeries_are_expected_to_be_refused(timeline: Timeline) -> None:
    commands = {c.command_id: c for c in _commands(timeline)}
    for c in commands.values():
        if c.purpose == "replay":
            assert c.replay_of is not None
            original = commands[c.replay_of]
            assert (c.counter, c.esme, c.execution_ms) == (
                original.counter,
                original.esme,
                original.execution_ms,
            )
            assert c.at_ms > original.at_ms
            assert c.expected == "replay"
        elif c.purpose == "forgery":
            assert c.expected == ("bad-signature" if c.signer == "impostor" else "untrusted-signer")
        elif c.purpose == "cancel" and c.expected != "cancelled":
            assert c.expected in ("not-smets2", "manufacturer-not-listed", "not-on-guid-list")
    assert timeline.expected_refusals["replay"] > 0
    assert timeline.expected_results["replaced"] > 0
    assert timeline.expected_results["cancelled"] > 0


def test_trusted_parties_that_may_not_activate_are_expected_to_be_refused(
    estate: Population, timeline: Timeline
) -> None:
    by_esme = {p.esme: p for p in estate.premises}
    seen: Counter[str] = Counter()
    for c in _commands(timeline):
        if c.purpose == "wrong-role":
            assert c.signer in ("network-operator", "acb", "other-user")
            assert c.expected == "wrong-role"
        elif c.purpose == "other-supplier":
            assert c.signer == "other-supplier"
            assert by_esme[c.esme].supplier_id == SUPPLIER
            assert c.expected == "not-registered-supplier"
        elif c.purpose == "counter-mismatch":
            assert c.signer == "supplier"
            assert c.payload_counter is not None
            assert c.payload_counter != c.counter
            assert c.expected == "counter-mismatch"
        else:
            assert c.payload_counter is None
            continue
        assert by_esme[c.esme].covered  # refused for who sent it, not for the meter
        seen[c.signer] += 1
    assert set(seen) == {"network-operator", "acb", "other-user", "other-supplier", "supplier"}
    for reason in ("wrong-role", "not-registered-supplier", "counter-mismatch"):
        assert timeline.expected_refusals[reason] > 0
    # The meters ignore them: no response, no reboot.
    refused_ids = {
        c.command_id
        for c in _commands(timeline)
        if c.purpose in ("wrong-role", "other-supplier", "counter-mismatch")
    }
    answered = {
        e.command_id for e in timeline.events if isinstance(e, ResponseSent | ActivationAlertSent)
    }
    rebooted = {t.command_id for t in timeline.truths if t.command_id is not None}
    assert refused_ids
    assert not refused_ids & (answered | rebooted)


def test_a_replay_is_the_exact_bytes_of_its_original() -> None:
    population = build_population(300, seed=5)
    tl = build_timeline(population, seed=5, scale=60, params=TimelineParams(share_targeted=0.3))
    credentials = Credentials.generate(tl.responders())
    frames = FrameFactory(credentials, t0_ms=1_900_000_000_000, scale=60)
    built: dict[int, bytes] = {}
    for c in _commands(tl):
        built[c.command_id] = frames.command(c)
        if c.replay_of is not None:
            assert built[c.command_id] == built[c.replay_of]


@pytest.mark.parametrize("scale", [1, 60, 600])
def test_ground_truth_agrees_with_the_engine(scale: int) -> None:
    """Play a timeline through the real engine, in real milliseconds as the daemon would,
    and check every command result and AD1 decision against the ground truth."""
    causes = play_through_engine(1500, seed=11, scale=scale)
    assert causes >= {"firmware-listed", "firmware-unlisted", "genuine"}
    if scale <= 60:
        # At higher scales the timing guards leave little room inside windows.
        assert "genuine-in-window" in causes


def play_through_engine(premises: int, *, seed: int, scale: int) -> set[str]:
    """Feed a timeline to :class:`Engine` as the daemon would (frames signed and verified,
    counters kept, housekeeping before each input); assert it agrees with the ground
    truth on every command and AD1; return the causes seen."""
    population = build_population(premises, seed=seed)
    params = TimelineParams(share_targeted=0.2, share_storm=0.05)
    tl = build_timeline(population, seed=seed, scale=scale, params=params)
    credentials = Credentials.generate(tl.responders())
    trust = gbcs.TrustStore.from_pem_files(credentials.trust_files().items())
    t0 = 1_900_000_000_000
    frames = FrameFactory(credentials, t0_ms=t0, scale=scale)
    skew = max(5 * MIN, population.max_clock_offset_ms + MIN)
    engine = Engine(
        EngineConfig(
            window_ms=round(params.window_ms / scale),
            lead_ms=round(params.lead_ms / scale),
            skew_ms=round(skew / scale),
            dedupe_ms=round(120 * MIN / scale),
            near_miss_ms=round(params.near_miss_ms / scale),
        ),
        t0,
    )
    inventory: dict[bytes, DeviceRecord] = {r.device_id: r for r in population.inventory_records()}
    guids = {p.esme for p in population.premises if p.on_guid_list}
    counters: dict[tuple[bytes, bytes], int] = {}
    truth = tl.truth_by_id()
    decided = 0
    for e in tl.events:
        now = frames.real_ms(e.at_ms)
        engine.advance(now)
        if isinstance(e, CommandSent):
            frame = gbcs.decode_frame(frames.command(e))
            v = gbcs.verify_frame(frame, trust)
            key = (frame.header.originator, e.esme)
            result = engine.on_command(
                CommandSeen(
                    frame=frame,
                    signature=v.status,
                    signer_role=v.signer.role if v.signer is not None else None,
                    target=inventory.get(e.esme),
                    on_guid_list=e.esme in guids,
                    last_counter=counters.get(key),
                    sent_at=now,
                ),
                now,
            )
            if isinstance(result, ActivationTracked):
                got = "replaced" if result.replaced is not None else "tracked"
                counters[key] = e.counter
            elif isinstance(result, ActivationCancelled):
                got = "cancelled"
                counters[key] = e.counter
            else:
                got = result.reason.value
            assert got == e.expected, (e, result)
        elif isinstance(e, ResponseSent | ActivationAlertSent):
            raw = frames.response(e) if isinstance(e, ResponseSent) else frames.activation_alert(e)
            frame = gbcs.decode_frame(raw)
            engine.on_device_outcome(
                DeviceOutcomeSeen(
                    frame, gbcs.verify_frame(frame, trust).status, inventory.get(e.esme), now
                ),
                now,
            )
        elif isinstance(e, Ad1Sent):
            decision = engine.on_dcc_alert(
                DccAlertEnvelope(
                    v=1,
                    kind="dcc-alert",
                    code="AD1",
                    alert_id=e.alert_id,
                    device_id=e.chf,
                    raised_at=frames.real_ms(e.raised_ms),
                    sent_at=now,
                ),
                now,
            )
            assert decision.duplicate == e.redelivery
            assert decision.suppressed == truth[e.alert_id].should_suppress, truth[e.alert_id]
            # The near miss, as the engine sees it in real time, agrees with the model.
            near_miss = truth[e.alert_id].after_window_ms is not None
            assert (decision.after_window_ms is not None) == near_miss, truth[e.alert_id]
            decided += 1
    assert decided > len(truth)  # redeliveries included
    return {t.cause for t in tl.truths}


def test_timeline_refuses_a_run_too_short_for_its_windows() -> None:
    with pytest.raises(ValueError, match="70 simulated minutes"):
        TimelineParams(duration_ms=30 * MIN)


def test_timeline_refuses_clocks_too_far_off_for_the_lead_tolerance() -> None:
    population = build_population(20, seed=1, max_clock_offset_ms=6 * MIN)
    with pytest.raises(ValueError, match="lead tolerance"):
        build_timeline(population, seed=1, scale=60)


# -- scorecard ------------------------------------------------------------------------------


def _truth(alert_id: str, cause: str) -> Ad1Truth:
    return Ad1Truth(
        alert_id=alert_id,
        chf=bytes(8),
        esme=bytes(8),
        cause=cause,  # type: ignore[arg-type]
        should_suppress=cause in ("firmware-listed", "genuine-in-window"),
        arrival_ms=0,
        raised_ms=0,
        category="listed",
    )


TRUTHS = [
    _truth("fw-1", "firmware-listed"),
    _truth("fw-2", "firmware-listed"),
    _truth("un-1", "firmware-unlisted"),
    _truth("gen-1", "genuine"),
    _truth("gen-2", "genuine"),
    _truth("risk-1", "genuine-in-window"),
]
RIGHT = {
    "fw-1": "suppressed",
    "fw-2": "suppressed",
    "un-1": "forwarded",
    "gen-1": "forwarded",
    "gen-2": "forwarded",
    "risk-1": "suppressed",
}


def _score(outcomes: dict[str, str], extra: list[Observation] | None = None) -> Scorecard:
    observations = [
        Observation(a, "forwarded" if o == "forwarded" else "suppressed", 1000 + i)
        for i, (a, o) in enumerate(outcomes.items())
    ]
    return compute(
        TRUTHS,
        observations + (extra or []),
        dict.fromkeys(RIGHT, 1000),
        refusals={"replay": 2},
        expected_refusals={"replay": 2},
    )


def test_scorecard_passes_when_every_ad1_came_out_right() -> None:
    card = _score(RIGHT)
    assert card.passed
    assert card.failures == ()
    assert card.category("firmware-listed").share == 1.0
    assert card.category("genuine").as_expected == 2
    assert card.lost == 0
    assert "PASS" in card.render_table()
    assert json.loads(card.to_json())["passed"] is True


def test_scorecard_fails_when_an_ad1_is_lost() -> None:
    card = _score({k: v for k, v in RIGHT.items() if k != "gen-2"})
    assert not card.passed
    assert card.lost == 1
    assert card.lost_ids == ("gen-2",)
    assert "lost" in card.failures[0]


def test_scorecard_fails_when_a_firmware_ad1_of_a_covered_meter_got_through() -> None:
    card = _score(RIGHT | {"fw-2": "forwarded"})
    assert not card.passed
    assert card.category("firmware-listed").wrong_ids == ("fw-2",)
    assert card.failures == ("1 firmware-caused AD1(s) of covered meters forwarded",)


@pytest.mark.parametrize("alert_id", ["gen-1", "un-1"])
def test_scorecard_fails_when_an_ad1_outside_every_window_is_suppressed(alert_id: str) -> None:
    card = _score(RIGHT | {alert_id: "suppressed"})
    assert not card.passed
    assert "outside every window suppressed" in card.failures[0]


def test_genuine_ad1_inside_a_window_is_the_accepted_risk_either_way() -> None:
    card = _score(RIGHT | {"risk-1": "forwarded"})
    assert card.passed
    assert [a.alert_id for a in card.genuine_in_window] == ["risk-1"]
    assert "risk-1" in card.render_table()


def test_scorecard_counts_duplicates_and_unknown_outputs_without_failing() -> None:
    card = _score(
        RIGHT,
        [Observation("gen-1", "forwarded", 5000), Observation("someone-else", "forwarded", 1)],
    )
    assert card.passed
    assert (card.duplicates, card.duplicate_ids, card.unexpected_outputs) == (1, ("gen-1",), 1)


def test_latency_is_first_output_minus_publish() -> None:
    card = _score(RIGHT)
    assert card.latency_p50_ms == 2.0  # outputs at 1000..1005, published at 1000
    assert card.latency_max_ms == 5.0
    assert percentile([], 50) is None
    assert percentile([float(v) for v in range(1, 101)], 99) == 99.0
    assert percentile([7.0], 99) == 7.0


def test_command_counts_are_read_from_the_metrics() -> None:
    text = (
        "# HELP poa_commands_total ...\n"
        'poa_commands_total{result="refused",reason="replay"} 3.0\n'
        'poa_commands_total{result="refused",reason="unsigned"} 0.0\n'
        'poa_commands_total{result="tracked",reason="on-demand"} 5.0\n'
        'poa_commands_total{result="tracked",reason="future-dated"} 2.0\n'
        'poa_commands_created{result="tracked",reason="on-demand"} 1.7e9\n'
        "poa_up 1.0\n"
    )
    assert command_counts(text) == ({"tracked": 7}, {"replay": 3})


def test_the_evidence_counts_are_read_from_the_metrics() -> None:
    text = (
        'poa_restoration_alerts_total{in_window="true"} 2.0\n'
        'poa_restoration_alerts_total{in_window="false"} 9.0\n'
        "poa_near_miss_total 4.0\n"
        'poa_near_miss_gap_seconds_bucket{le="60.0"} 1.0\n'
    )
    assert evidence_counts(text) == (2, 4)


def test_a_late_firmware_ad1_suppressed_fails_the_scorecard() -> None:
    truths = [*TRUTHS, _truth("late-1", "firmware-late")]
    observations = [Observation(a, "suppressed", 1000) for a in ("fw-1", "fw-2", "risk-1")]
    observations += [Observation(a, "forwarded", 1000) for a in ("un-1", "gen-1", "gen-2")]
    observations.append(Observation("late-1", "suppressed", 1000))
    card = compute(truths, observations, {}, refusals={}, expected_refusals={})
    assert not card.passed
    assert card.failures == (
        "1 firmware-caused (after the window ended) AD1(s) outside every window suppressed",
    )


def test_the_scorecard_shows_the_evidence_and_notes_a_difference_without_failing() -> None:
    evidence = Evidence(
        restorations_in_window=1,
        expected_restorations_in_window=0,
        near_misses=3,
        expected_near_misses=3,
        near_miss_ms=15 * MIN,
    )
    card = compute(
        TRUTHS,
        [Observation(a, o, 1000) for a, o in RIGHT.items()],  # type: ignore[arg-type]
        {},
        refusals={},
        expected_refusals={},
        evidence=evidence,
    )
    assert card.passed
    table = card.render_table()
    assert "restoration alerts inside a window (A5)" in table
    assert "near misses (AD1 forwarded within 15m after a window ended)" in table
    assert card.notes == ("the gateway counted 1 restoration alert(s) inside a window, 0 expected",)
    assert json.loads(card.to_json())["evidence"]["near_misses"] == 3


# -- end to end -----------------------------------------------------------------------------


def _simulate(
    broker: Broker, home: Path, capsys: pytest.CaptureFixture[str], *extra: str
) -> tuple[int, dict[str, object]]:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    cli_simulate.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(
        [
            "simulate",
            "--broker",
            f"mqtt://127.0.0.1:{broker.port}",
            "--premises",
            "1000",
            "--scale",
            "600",
            "--seed",
            "3",
            "--home",
            str(home),
            "--json",
            *extra,
        ]
    )
    code: int = args.handler(args)
    out, err = capsys.readouterr()
    assert out.strip(), f"simulate printed no scorecard (exit {code}): {err[-3000:]}"
    data: dict[str, object] = json.loads(out)
    return code, data


def _share(data: dict[str, object], cause: str) -> object:
    categories = data["categories"]
    assert isinstance(categories, list)
    row = next(c for c in categories if c["cause"] == cause)
    return row["share"]


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_simulated_run_passes_against_the_real_daemon(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = _simulate(broker, tmp_path / "gw", capsys)
    assert data["failures"] == []
    assert code == 0
    assert _share(data, "firmware-listed") == 1.0
    assert _share(data, "genuine") == 1.0
    assert _share(data, "firmware-unlisted") == 1.0
    assert data["lost"] == 0
    assert data["duplicates"] == 0
    assert data["refusals"] == data["expected_refusals"]
    assert data["accepted"] is not None
    # The near misses are judged at raised_at, planned by the timeline: exact.
    evidence = data["evidence"]
    assert isinstance(evidence, dict)
    assert evidence["near_misses"] == evidence["expected_near_misses"]
    assert evidence["restorations_in_window"] is not None
    home = data["home"]
    assert isinstance(home, dict)
    assert os.path.exists(home["log"])


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_a_window_shorter_than_the_reboot_alert_fails_the_scorecard(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = _simulate(broker, tmp_path / "gw", capsys, "--window-override", "1m")
    assert code == 1
    assert data["passed"] is False
    failures = data["failures"]
    assert isinstance(failures, list)
    assert any("of covered meters forwarded" in f for f in failures)
    assert data["lost"] == 0


@pytest.mark.e2e
@pytest.mark.timeout(120)
def test_an_empty_guid_list_fails_the_scorecard(
    broker: Broker, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, data = _simulate(broker, tmp_path / "gw", capsys, "--empty-guid-list")
    assert code == 1
    assert _share(data, "firmware-listed") == 0.0
    refusals, expected = data["refusals"], data["expected_refusals"]
    assert isinstance(refusals, dict)
    assert isinstance(expected, dict)
    assert refusals["not-on-guid-list"] > expected.get("not-on-guid-list", 0)


@pytest.mark.e2e
def test_the_readme_run_command_passes_on_the_embedded_broker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from gateway.cli.main import main

    home = tmp_path / "home"
    code = main(["simulate", "--premises", "500", "--scale", "600", "--home", str(home), "--json"])
    out = capsys.readouterr().out
    assert code == 0, out
    card = json.loads(out)
    assert card["passed"] is True
    assert list((home / "outbox").glob("POA-SUPPRESSION_*.csv")), "no report in the outbox"
