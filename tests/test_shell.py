"""The shell (gateway/service.py) without a broker: in-memory fakes of the state store and
the transport, the real engine, and a clock the test sets by hand.

What is checked is the shell's own job: acknowledge a batch only after its commit,
withhold every acknowledgement when the commit fails or a publish is refused, and wake
housekeeping at the engine's next deadline.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio

from gateway import wire
from gateway.config import load_config
from gateway.core.events import Activation, ActivationFields, AlertDecision
from gateway.logs import JsonLog
from gateway.metrics import Metrics
from gateway.service import Gateway
from gateway.state.audit import CommandRecord
from gateway.state.restorations import RestorationRecord
from gateway.state.rows import PendingReport, ReportCursor
from gateway.state.sqlite import QuarantineEntry, StoreError, StoreReason
from gateway.transport.mqtt import PublishRefused
from gateway.transport.protocol import DeliveryHandler, EventSink, Transport
from gateway.wire import SuppressionRecord

from .e2e_support import OTHER_CHF, Home, cs06

pytestmark = pytest.mark.asyncio

T0 = 1_900_000_000_000
MIN = 60_000


class FakeStore:
    """An in-memory StateStore whose commits can be held or made to fail."""

    def __init__(self) -> None:
        self.queued: list[tuple[str, Any]] = []
        self.committed: list[tuple[str, Any]] = []
        self.gate = asyncio.Event()
        self.gate.set()
        self.failures = 0  # the next N flushes fail
        self.counters: dict[tuple[bytes, bytes], int] = {}

    def _queue(self, kind: str, value: Any) -> None:
        self.queued.append((kind, value))

    def put_activation(self, a: Activation) -> None:
        self._queue("activation", a)

    def delete_activation(self, a: Activation) -> None:
        self._queue("delete", a)

    def set_counter(self, originator: bytes, device: bytes, counter: int) -> None:
        self.counters[(originator, device)] = counter
        self._queue("counter", counter)

    def put_decision(self, decision: AlertDecision, *, effect_done: bool) -> None:
        self._queue("decision", decision.alert_id)

    def append_suppression(self, record: SuppressionRecord, encoded: bytes | None = None) -> None:
        self._queue("suppression", record.alert_id)

    def mark_reported_range(
        self, first: int, last: int, report_id: str, *, before_ms: int | None = None
    ) -> None:
        self._queue("reported", report_id)

    def set_report_cursor(self, cursor: ReportCursor) -> None:
        self._queue("cursor", cursor)

    def prune_decisions(self, before_ms: int) -> None:
        self._queue("prune", before_ms)

    def prune_suppressions(self, before_ms: int) -> None:
        self._queue("prune-suppressions", before_ms)

    def prune_quarantine(self, before_ms: int) -> None:
        self._queue("prune-quarantine", before_ms)

    def delete_counter(self, originator: bytes, device: bytes, counter: int) -> None:
        if self.counters.get((originator, device)) == counter:
            del self.counters[(originator, device)]
        self._queue("delete-counter", (originator, device, counter))

    def put_quarantine(self, entry: QuarantineEntry) -> None:
        self._queue("quarantine", entry.id)

    def put_command(self, command: CommandRecord) -> None:
        self._queue("command", command)

    def prune_commands(self, before_ms: int) -> None:
        self._queue("prune-commands", before_ms)

    def put_restoration(self, restoration: RestorationRecord) -> None:
        self._queue("restoration", restoration)

    def prune_restorations(self, before_ms: int) -> None:
        self._queue("prune-restorations", before_ms)

    async def flush(self) -> None:
        await self.gate.wait()
        if self.failures:
            self.failures -= 1
            raise StoreError(StoreReason.COMMIT_FAILED, "injected: disk full")
        self.committed += self.queued
        self.queued = []

    async def aclose(self) -> None:
        return None

    def close(self) -> None:
        self.queued = []

    def load_activations(self) -> list[Activation]:
        return []

    def activation_fields(self) -> list[ActivationFields]:
        return []

    def load_decisions(self, since_ms: int) -> list[tuple[AlertDecision, bool]]:
        return []

    def decision(self, alert_id: str) -> tuple[AlertDecision, bool] | None:
        return None

    def last_counter(self, originator: bytes, device: bytes) -> int | None:
        return self.counters.get((originator, device))

    def counters_after(
        self, after: tuple[bytes, bytes], limit: int
    ) -> list[tuple[bytes, bytes, int]]:
        keys = sorted(key for key in self.counters if key > after)[:limit]
        return [(o, d, self.counters[(o, d)]) for o, d in keys]

    def unreported(self, limit: int) -> list[tuple[int, SuppressionRecord]]:
        return []

    async def read_unreported(
        self, limit: int, *, before_ms: int | None = None
    ) -> list[tuple[int, SuppressionRecord]]:
        return []

    def unreported_count(self) -> int:
        return 0

    def report_cursor(self) -> ReportCursor | None:
        return None

    def reported(self, pending: PendingReport) -> list[SuppressionRecord]:
        return []

    async def read_evidence(
        self, start_ms: int, end_ms: int
    ) -> tuple[list[AlertDecision], list[RestorationRecord]]:
        kept = [r for kind, r in self.committed if kind == "restoration"]
        return [], [r for r in kept if start_ms <= r.received_at < end_ms]


class FakeTransport:
    """An in-memory Transport: publishes are recorded (or refused), nothing is sent."""

    def __init__(self, on_delivery: DeliveryHandler, on_event: EventSink) -> None:
        self.deliver = on_delivery
        self.published: list[tuple[str, bytes]] = []
        self.refuse = False
        self.held = False
        self.inbound = 0
        self.inbound_peak = 0
        self.inbound_limit = 4000
        self.pauses = 0
        self.window_size = 100
        self.failed: asyncio.Future[BaseException] = asyncio.get_running_loop().create_future()
        del on_event

    connected = True
    inflight_publishes = 0
    reconnects = 0
    withheld_not_leader = 0

    async def connect(self) -> None:
        return None

    async def subscribe(self, topics: list[str]) -> None:
        return None

    async def close(self) -> None:
        return None

    async def wait_failed(self) -> BaseException:
        return await self.failed

    def hold_intake(self) -> None:
        self.held = True

    def release_intake(self) -> None:
        self.held = False

    async def publish(self, topic: str, payload: bytes) -> None:
        await self.publish_many([(topic, payload)])

    async def publish_many(self, messages: list[tuple[str, bytes]]) -> None:
        await asyncio.sleep(0)
        if self.refuse:
            raise PublishRefused(messages[0][0], 0x87)
        self.published += messages

    def publish_soon(self, topic: str, payload: bytes) -> Any:
        return asyncio.ensure_future(self.publish(topic, payload))


class FakeDelivery:
    """What the transport hands the shell with each message."""

    def __init__(self, topic: str) -> None:
        self.topic = topic
        self.started = time.monotonic()
        self.acked = False
        self.failed: BaseException | None = None

    def ack(self) -> None:
        self.acked = True

    def fail(self, exc: BaseException) -> None:
        self.failed = exc


class Shell:
    """A Gateway on fakes, and what a test needs to drive it."""

    def __init__(self, gateway: Gateway, store: FakeStore, clock: list[int]) -> None:
        self.gateway = gateway
        self.store = store
        self.clock = clock

    @property
    def transport(self) -> FakeTransport:
        transport = self.gateway.mqtt
        assert isinstance(transport, FakeTransport)
        return transport

    def send(self, topic: str, payload: bytes) -> FakeDelivery:
        delivery = FakeDelivery(topic)
        self.transport.deliver(topic, payload, delivery)
        return delivery

    def alert(self, alert_id: str, chf: bytes) -> FakeDelivery:
        env = wire.DccAlertEnvelope(
            v=1,
            kind="dcc-alert",
            code="AD1",
            alert_id=alert_id,
            device_id=chf,
            raised_at=self.clock[0],
            sent_at=self.clock[0],
        )
        return self.send("csp/dcc/alert", wire.encode(env))

    def command(self, frame: bytes) -> FakeDelivery:
        env = wire.GbcsEnvelope(v=1, kind="gbcs", frame=frame, sent_at=self.clock[0])
        return self.send("dsp/gbcs/command", wire.encode(env))


async def settle(until: Callable[[], bool], limit_s: float = 5) -> None:
    deadline = time.monotonic() + limit_s
    while not until():
        assert time.monotonic() < deadline, "the shell did not get there"
        await asyncio.sleep(0.001)


@pytest_asyncio.fixture
async def shell(tmp_path: Path) -> AsyncIterator[Shell]:
    home = Home(tmp_path / "gw", 1)
    clock = [T0]
    store = FakeStore()

    def open_store(_path: Path) -> FakeStore:
        return store

    def make_transport(on_delivery: DeliveryHandler, on_event: EventSink) -> Transport:
        return FakeTransport(on_delivery, on_event)

    gateway = Gateway(
        load_config(home.config, env={}),
        log=JsonLog(io.StringIO()),
        metrics=Metrics(),
        clock=lambda: clock[0],
        open_store=open_store,
        make_transport=make_transport,
    )
    await gateway.start()
    running = asyncio.create_task(gateway.run_forever())
    shell = Shell(gateway, store, clock)
    shell.home = home  # type: ignore[attr-defined]
    try:
        yield shell
    finally:
        gateway.stop()
        await running
        await gateway.close()


async def test_a_batch_is_acknowledged_only_after_its_commit(shell: Shell) -> None:
    shell.store.gate.clear()  # the commit does not complete yet
    deliveries = [shell.alert(f"a-{i}", OTHER_CHF) for i in range(3)]
    await settle(lambda: len(shell.transport.published) == 3)
    await asyncio.sleep(0.05)
    assert not any(d.acked for d in deliveries)  # published, not yet durable
    shell.store.gate.set()
    await settle(lambda: all(d.acked for d in deliveries))
    assert [k for k, _ in shell.store.committed] == ["decision"] * 3


async def test_a_failed_commit_withholds_every_acknowledgement_until_it_succeeds(
    shell: Shell,
) -> None:
    shell.store.failures = 1
    deliveries = [shell.alert(f"b-{i}", OTHER_CHF) for i in range(3)]
    await settle(lambda: shell.transport.held)  # intake held while the store fails
    assert not any(d.acked or d.failed for d in deliveries)
    await settle(lambda: all(d.acked for d in deliveries))  # the probe's retry committed
    assert not shell.transport.held
    assert len(shell.transport.published) == 3  # each output once: nothing redelivered


async def test_a_refused_publish_withholds_the_acknowledgement(shell: Shell) -> None:
    shell.transport.refuse = True
    deliveries = [shell.alert(f"c-{i}", OTHER_CHF) for i in range(2)]
    await settle(lambda: all(d.failed is not None for d in deliveries))
    assert not any(d.acked for d in deliveries)
    assert all(isinstance(d.failed, PublishRefused) for d in deliveries)
    assert shell.store.committed == []


async def test_housekeeping_is_armed_for_the_engines_next_deadline(shell: Shell) -> None:
    home: Home = shell.home  # type: ignore[attr-defined]
    assert shell.gateway.housekeeping_due == T0 + 60_000  # nothing tracked: the guard only
    # A future-dated window whose first check falls between a second and a minute away:
    # the one timer moves to exactly that deadline (not a poll every second).
    delivery = shell.command(cs06(home, 500, execution_ms=T0 + 30_000))
    await settle(lambda: delivery.acked)
    deadline = shell.gateway.engine.next_deadline()
    assert deadline is not None
    assert T0 + 1_000 < deadline < T0 + 60_000
    assert shell.gateway.housekeeping_due == deadline
