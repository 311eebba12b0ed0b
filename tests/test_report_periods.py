"""Reports per UTC period (issue 13, point 1): a report for every period, empty ones
too, each record in the period of its decision time, numbered parts past max_records,
names that follow from the period and part alone; across a restart and a backlog. And
what the daemon puts in them (point 2): the MPAN and distributor from the inventory, the
rules in force, and each distributor's file beside the consolidated report.

The gateway runs on a real SQLite store and the in-memory transport of test_shell, with
the clock in the test's hands."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import pytest_asyncio

from gateway import wire
from gateway.config import load_config
from gateway.core.mpan import GB_AREAS
from gateway.logs import JsonLog
from gateway.metrics import Metrics
from gateway.reports.files import ReportContents, format_time, read_report
from gateway.service import Gateway
from gateway.state.inventory import Inventory
from gateway.state.protocol import StateStore
from gateway.state.sqlite import Store
from gateway.transport.protocol import DeliveryHandler, EventSink, Transport

from .e2e_support import CHF, ESME, Home, cs06
from .test_inventory import esme
from .test_shell import FakeDelivery, FakeTransport, settle

pytestmark = pytest.mark.asyncio

HOUR = 3_600_000
P0 = 1_900_000_800_000 - 1_900_000_800_000 % HOUR  # a period's start (UTC hour)


@dataclass
class Harness:
    """A gateway on a real store whose clock the test sets; restartable."""

    home: Home
    clock: list[int]
    gateway: Gateway | None = None

    async def start(self) -> Gateway:
        def open_store(path: Path) -> StateStore:
            return Store.open(path)

        def make_transport(on_delivery: DeliveryHandler, on_event: EventSink) -> Transport:
            return FakeTransport(on_delivery, on_event)

        self.gateway = Gateway(
            load_config(self.home.config, env={}),
            log=JsonLog(io.StringIO()),
            metrics=Metrics(),
            clock=lambda: self.clock[0],
            open_store=open_store,
            make_transport=make_transport,
        )
        await self.gateway.start()
        return self.gateway

    async def stop(self) -> None:
        assert self.gateway is not None
        await self.gateway.close()
        self.gateway = None

    def send(self, topic: str, payload: bytes) -> FakeDelivery:
        assert self.gateway is not None
        transport = self.gateway.mqtt
        assert isinstance(transport, FakeTransport)
        delivery = FakeDelivery(topic)
        transport.deliver(topic, payload, delivery)
        return delivery

    async def gbcs(self, topic: str, frame: bytes, at: int) -> None:
        """At ``at``: a GBCS frame on ``topic`` (a command or inbound), until handled."""
        self.clock[0] = at
        env = wire.GbcsEnvelope(v=1, kind="gbcs", frame=frame, sent_at=at)
        delivery = self.send(topic, wire.encode(env))
        await settle(lambda: delivery.acked)

    async def alerts(self, at: int, alert_ids: list[str]) -> None:
        """At ``at``: an AD1 of CHF per id, raised then, until all are handled."""
        self.clock[0] = at
        deliveries = []
        for alert_id in alert_ids:
            alert = wire.DccAlertEnvelope(
                v=1,
                kind="dcc-alert",
                code="AD1",
                alert_id=alert_id,
                device_id=CHF,
                raised_at=at,
                sent_at=at,
            )
            deliveries.append(self.send("csp/dcc/alert", wire.encode(alert)))
        await settle(lambda: all(d.acked for d in deliveries))

    async def window_and_alerts(self, at: int, counter: int, alerts: list[str]) -> None:
        """At ``at``: a CS06 opening a window on CHF, then an AD1 of CHF per id."""
        await self.gbcs("dsp/gbcs/command", cs06(self.home, counter), at)
        await self.alerts(at, alerts)

    async def rotate(self, at: int) -> None:
        assert self.gateway is not None
        self.clock[0] = at
        await self.gateway.rotate_reports()

    def reports(self) -> list[ReportContents]:
        """Every report in the outbox, by period then part."""
        outbox = self.home.root / "outbox"
        # The period summaries beside them are not reports (gateway/reports/summary.py).
        found = [read_report(p) for p in outbox.glob("*.csv") if not p.stem.endswith("-summary")]
        return sorted(found, key=lambda r: (r.period_start_ms, r.report_id))


@pytest_asyncio.fixture
async def harness(tmp_path: Path) -> AsyncIterator[Callable[..., Harness]]:
    made: list[Harness] = []

    def make(**reports: object) -> Harness:
        home = Home(tmp_path / f"gw{len(made)}", 1, reports={"period": "1h", **reports})
        h = Harness(home, [P0])
        made.append(h)
        return h

    yield make
    for h in made:
        if h.gateway is not None:
            await h.stop()


def ids(report: ReportContents) -> list[str]:
    return [r.alert_id for r in report.records]


async def test_a_restart_across_three_periods_reports_each_period_once(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    await h.start()
    await h.window_and_alerts(P0 + 10 * 60_000, 1000, ["a", "b"])
    await h.stop()  # down from P0 + 10 min ...
    h.clock[0] = P0 + 3 * HOUR + 5 * 60_000  # ... to P3 + 5 min
    await h.start()
    await h.rotate(h.clock[0])
    reports = h.reports()
    # P0 with its two records, P1 and P2 empty; P3 is still open.
    assert [(r.period_start_ms, r.period_end_ms) for r in reports] == [
        (P0, P0 + HOUR),
        (P0 + HOUR, P0 + 2 * HOUR),
        (P0 + 2 * HOUR, P0 + 3 * HOUR),
    ]
    assert [ids(r) for r in reports] == [["a", "b"], [], []]
    stamp = format_time(P0).replace("-", "").replace(":", "").replace(".000", "")
    assert reports[0].name == f"POA-SUPPRESSION_{stamp}_PT1H-001"
    # Nothing twice: a second pass at the same time writes nothing more.
    await h.rotate(h.clock[0])
    assert len(h.reports()) == 3


async def test_a_backlog_puts_each_record_in_the_period_of_its_decision(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    await h.start()
    await h.window_and_alerts(P0 + 50 * 60_000, 1000, ["early"])
    await h.window_and_alerts(P0 + HOUR + 5 * 60_000, 1001, ["later-1", "later-2"])
    await h.window_and_alerts(P0 + 2 * HOUR + 1, 1002, ["open"])
    await h.rotate(P0 + 2 * HOUR + 30 * 60_000)  # one pass, two periods behind
    reports = h.reports()
    assert [ids(r) for r in reports] == [["early"], ["later-1", "later-2"]]
    assert [r.period_start_ms for r in reports] == [P0, P0 + HOUR]
    # The record decided in the open period waits for it.
    await h.rotate(P0 + 3 * HOUR + 2_000)
    assert ids(h.reports()[-1]) == ["open"]


async def test_an_empty_day_gets_a_report_for_every_hour(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    await h.start()
    await h.rotate(P0 + 24 * HOUR + 2_000)
    reports = h.reports()
    assert len(reports) == 24
    starts = [r.period_start_ms for r in reports]
    assert starts == [P0 + n * HOUR for n in range(24)]
    assert all(r.records == [] for r in reports)
    assert len({r.name for r in reports}) == 24


async def test_a_period_past_max_records_is_split_into_numbered_parts(
    harness: Callable[..., Harness],
) -> None:
    h = harness(max_records=3)
    await h.start()
    alerts = [f"s-{n}" for n in range(7)]
    await h.window_and_alerts(P0 + 60_000, 1000, alerts)
    await h.rotate(P0 + 2 * 60_000)  # the open period: its full parts go out now
    assert [ids(r) for r in h.reports()] == [alerts[:3], alerts[3:6]]
    await h.rotate(P0 + HOUR + 2_000)  # the period ends: its last part
    reports = h.reports()
    assert [ids(r) for r in reports] == [alerts[:3], alerts[3:6], alerts[6:]]
    assert [r.name.rsplit("_", 1)[1] for r in reports] == ["PT1H-001", "PT1H-002", "PT1H-003"]
    assert {(r.period_start_ms, r.period_end_ms) for r in reports} == {(P0, P0 + HOUR)}


def give_mpan(home: Home, mpan: str) -> None:
    """Record the test meter's MPAN in the home's inventory (as an import would)."""
    with Inventory.open(home.root / "inventory.sqlite") as inventory:
        inventory.upsert(esme(ESME, CHF, mpan=mpan), 1)


async def test_records_carry_the_mpan_and_distributor_the_inventory_holds_at_writing(
    harness: Callable[..., Harness],
) -> None:
    h = harness()
    await h.start()
    await h.window_and_alerts(P0 + 60_000, 1000, ["no-mpan"])
    await h.rotate(P0 + HOUR + 2_000)
    await h.stop()
    give_mpan(h.home, "1012345678903")
    await h.start()
    await h.window_and_alerts(P0 + HOUR + 60_000, 1001, ["with-mpan"])
    await h.rotate(P0 + 2 * HOUR + 2_000)
    first, second = h.reports()
    # A meter the inventory has no MPAN for: the record is there, its cells empty, and
    # the TRAILER counts it.
    assert ids(first) == ["no-mpan"]
    assert (first.records[0].mpan, first.records[0].distributor) == (None, None)
    assert first.trailer["records_without_mpan"] == "1"
    row = second.records[0]
    assert (row.mpan, row.distributor_id, row.distributor) == (
        "1012345678903",
        "10",
        "Eastern (UKPN)",
    )
    assert row.alert_code == "AD1"
    assert second.trailer["records_without_mpan"] == "0"
    # The rules in force: the GUID list's digest (the test list's is all zeros), the
    # window and lead of the home's configuration.
    header = second.header
    assert (header["guid_list_sha256"], header["window"], header["lead"]) == (
        "0" * 64,
        "PT30M",
        "PT2M",
    )
    assert header["profile"] == "dno"
    # The DNO's layout has no Supplier identity.
    assert "originator" not in second.columns
    assert "request_id" not in second.columns


async def test_split_by_distributor_writes_every_area_a_file_beside_the_consolidated_one(
    harness: Callable[..., Harness],
) -> None:
    h = harness(split="distributor")
    give_mpan(h.home, "2312345678900")  # Yorkshire
    gateway = await h.start()
    await h.window_and_alerts(P0 + 60_000, 1000, ["y-1", "y-2"])
    await h.rotate(P0 + HOUR + 2_000)
    reports = {r.report_id: r for r in h.reports()}
    assert set(reports) == {"PT1H-001"} | {f"PT1H-001-D{area}" for area in GB_AREAS}
    assert ids(reports["PT1H-001"]) == ["y-1", "y-2"]
    assert ids(reports["PT1H-001-D23"]) == ["y-1", "y-2"]
    assert reports["PT1H-001-D23"].header["scope_name"] == "Yorkshire (NPg)"
    assert all(
        r.records == [] for key, r in reports.items() if key not in {"PT1H-001", "PT1H-001-D23"}
    )
    # A notice for each file, the distributor's named.
    await settle(lambda: len(notices(gateway)) == 15)
    assert sorted(n.distributor or "" for n in notices(gateway)) == ["", *sorted(GB_AREAS)]


def notices(gateway: Gateway) -> list[wire.ReportNotice]:
    transport = gateway.mqtt
    assert isinstance(transport, FakeTransport)
    return [
        wire.decode_report_notice(payload)
        for topic, payload in transport.published
        if topic == "gateway/reports"
    ]
