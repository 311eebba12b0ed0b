"""The daemon: runs the event loop, handles signals and systemd notification, and wires
the sans-I/O engine to the broker, the stores and the report files.

Theory of operation
-------------------
Start-up: load configuration, trust store, GUID list, inventory and durable state;
rebuild the engine (its timer wheel included) from the stored activations and recent
decisions and expire what is past; only then connect and subscribe, so no alert is
judged before its windows are back; then tell systemd READY=1.

Each inbound message is handled by one coroutine that returns only when the message's
effect is durable; the MQTT adapter (gateway/transport/mqtt.py) sends the PUBACK when it
returns:

* ``csp/dcc/alert``: the engine decides. Suppressed: the record goes out live on
  ``gateway/suppressed``, and once the broker has acknowledged it, the record and the
  decision are committed to the suppression log (group commit, fsync) before the
  acknowledgement. Forwarded: the payload is republished byte for byte on
  ``dno/dcc/alert`` and, once the broker has acknowledged that, the decision is
  committed before the acknowledgement. The alerts handed over in one pass of the event
  loop do this together, as one batch (docs/decisions.md D20). An alert that cannot be
  read is forwarded unread (safety direction) and counted as rejected with its reason.
* ``dsp/gbcs/command``: CS06 commands go through the engine's rules with the facts the
  engine needs (signature, inventory, GUID list, last counter); the resulting state
  change is committed before the acknowledgement.
* ``csp/gbcs/inbound``: CS06 responses and 0x00CA alerts may close a window early;
  ECS80 restoration alerts are counted and reported.
* ``dsp/inventory``: the Smart Metering Inventory is updated.

Every input ends forwarded, suppressed (and logged), applied, or rejected with a reason
in the logs and the metrics. A failure to make an effect durable withholds the
acknowledgement, and the broker redelivers the message.

Re-delivery after a crash: the decision of every alert is stored with its effect; a
redelivered alert whose effect is on record is acknowledged without repeating it, so a
SIGKILL between the effect and the acknowledgement yields the output once.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Final, TypeAlias

import msgspec

import gbcs
from gbcs import (
    ActivateFirmwareResponse,
    CraFlag,
    FutureDatedActivationAlert,
    GbcsError,
    MessageCode,
    PowerRestorationAlert,
    TrustStore,
)

from . import __version__
from .config import TOPIC_NAMES, Config
from .core import pipeline
from .core.devices import DeviceRecord
from .core.engine import Engine
from .core.events import (
    NOTEWORTHY_REFUSALS,
    ActivationCancelled,
    ActivationTracked,
    AlertDecision,
    AlertOutcome,
    AlertReason,
    CommandRefused,
    CommandSeen,
    DedupeExpired,
    DeviceOutcomeSeen,
    Housekeeping,
    IgnoredReason,
    WindowEnded,
    WindowOpened,
)
from .daemon_status import write_status
from .errors import StartupError, StartupReason
from .guids import GuidList, GuidListError
from .ha import LeaseKeeper, LeaseLost, LossReason
from .logs import JsonLog
from .metrics import Metrics
from .quarantine import (
    HANDLER_ATTEMPTS,
    NOT_THE_MESSAGE,
    Poisoned,
    attempt,
    describe,
    quarantine_entry,
    quarantine_notice,
)
from .reports.files import ReportFile, Rotation, by_distributor, write_report
from .reports.profile import load_profile
from .reports.signing import Signer, startup_signer
from .reports.summary import write_summary
from .retention import PRUNE_EVERY_MS, CounterSweep, sweep_outbox
from .sdnotify import Notifier
from .state.inventory import MPANS_PER_CALL, InventoryError, InventoryStore, from_envelope
from .state.inventory_store import open_inventory
from .state.protocol import OpenStore, StateStore
from .state.rows import PendingReport, ReportCursor
from .state.sqlite import QuarantineEntry, Store, StoreError
from .transport.mqtt import (
    ConnectionRefusedPermanently,
    Delivery,
    MqttAdapter,
    MqttSettings,
    install_exception_filter,
)
from .transport.protocol import DeliveryHandler, EventSink, MakeTransport, Transport
from .wire import (
    DccAlertEnvelope,
    SuppressionRecord,
    WireError,
    decode_dcc_alert,
    decode_gbcs,
    decode_inventory,
    encode,
)

# The collector's thresholds while the daemon runs: far fewer collections than the
# default, whose young collections the objects of messages in flight would trigger every
# few messages to no purpose (see run(); docs/decisions.md D26).
GC_THRESHOLDS: tuple[int, int, int] = (50_000, 20, 100)


_BatchedAlert: TypeAlias = tuple[DccAlertEnvelope, bytes, int, Delivery]

# While the state store cannot commit, it is retried with this backoff (seconds).
STORE_RETRY_MIN_S: Final = 0.5
STORE_RETRY_MAX_S: Final = 5.0

# Housekeeping wakes at its deadlines (see Gateway._arm_housekeeping), and at least this
# often, so that a step of the wall clock cannot leave a window open for long.
HOUSEKEEPING_GUARD_MS: Final = 60_000


class _AlertBatch:
    """DCC alerts handed over in one pass of the event loop, decided together."""

    __slots__ = ("alerts", "done")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.alerts: list[_BatchedAlert] = []
        self.done: asyncio.Future[None] = loop.create_future()


def mqtt_settings(config: Config, **overrides: Any) -> MqttSettings:
    """The broker connection settings of ``config`` (``overrides`` replace fields)."""
    b = config.broker
    settings = MqttSettings(
        host=b.host,
        port=b.port,
        client_id=b.client_id,
        username=b.username or None,
        password=config.broker_password(),
        tls=b.tls,
        ca_file=b.ca_file or None,
        cert_file=b.cert_file or None,
        key_file=b.key_file or None,
        keepalive_s=max(1, b.keepalive // 1000),
        reconnect_min_s=b.reconnect_min / 1000,
        reconnect_max_s=b.reconnect_max / 1000,
        inflight=b.inflight,
        receive_maximum=b.receive_maximum,
        protocol=b.protocol,
    )
    return msgspec.structs.replace(settings, **overrides) if overrides else settings


def state_store(config: Config) -> OpenStore:
    """How to open the state store ``[state]`` names: the SQLite file at ``paths.state``
    (the default), or the PostgreSQL database of ``state.dsn``, with the password from the
    variable named by ``state.password_env``."""
    if config.state.backend != "postgresql":
        return Store.open
    # Imported here: a SQLite install never loads the PostgreSQL driver.
    from .state.postgresql import PostgresStore  # noqa: PLC0415

    dsn = config.state.dsn
    password = None if config.state_password is None else config.state_password.reveal()

    def open_postgres(_path: Path) -> StateStore:
        return PostgresStore.open(dsn, password=password)

    return open_postgres


def sqlite_and_mqtt(config: Config) -> tuple[OpenStore, MakeTransport]:
    """The production state store (SQLite, or PostgreSQL when ``[state]`` says so:
    :func:`state_store`) and transport (MQTT) for ``config``."""

    def make_transport(on_delivery: DeliveryHandler, on_event: EventSink) -> Transport:
        return MqttAdapter(mqtt_settings(config), on_delivery=on_delivery, on_event=on_event)

    return state_store(config), make_transport


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """No cyclic garbage collection while the state loads: a promotion makes millions of
    objects (1.4 million windows), none in a reference cycle, and the collections they
    would trigger cost a third of the load."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def wall_ms() -> int:
    """Wall-clock UTC in milliseconds: the domain time (activation windows are calendar times)."""
    return time.time_ns() // 1_000_000


class Gateway:
    """One running gateway: its stores, engine and broker connection.

    The state store and the transport are handed in (``open_store``, ``make_transport``:
    see :func:`sqlite_and_mqtt` for the production pair), so tests drive the shell with
    fakes and inject faults by wrapping a real store, and a new backend or transport is
    one more implementation of gateway/state/protocol.py or gateway/transport/protocol.py,
    not an edit of this class.
    """

    def __init__(
        self,
        config: Config,
        *,
        log: JsonLog,
        metrics: Metrics,
        open_store: OpenStore,
        make_transport: MakeTransport,
        clock: Callable[[], int] = wall_ms,
        lease: LeaseKeeper | None = None,
    ) -> None:
        self.config = config
        # The leader lease (PostgreSQL state, gateway/ha.py); None: the only instance.
        self._lease = lease
        self._open_store = open_store
        self._make_transport = make_transport
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.topics: dict[str, str] = {name: config.topic(name) for name in TOPIC_NAMES}
        self._handlers = {
            self.topics["gbcs_command"]: self._on_gbcs_command,
            self.topics["gbcs_inbound"]: self._on_gbcs_inbound,
            self.topics["inventory"]: self._on_inventory,
        }
        self._alert_topic = self.topics["dcc_alert"]
        # Payloads above [broker] max_payload are refused before any decoding.
        limit = config.broker.max_payload
        self._decode_alert = partial(decode_dcc_alert, max_payload=limit)
        self._decode_gbcs = partial(decode_gbcs, max_payload=limit)
        self._decode_inventory = partial(decode_inventory, max_payload=limit)
        self._inflight_alerts: dict[str, asyncio.Future[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._batch: _AlertBatch | None = None
        self._stopping = asyncio.Event()
        self._rotation = Rotation(config.reports.period, config.reports.max_records)
        self.notifier = Notifier()
        self.trust: TrustStore
        self.guids: GuidList | None = None
        self.inventory: InventoryStore
        self.store: StateStore
        self.engine: Engine
        self.mqtt: Transport
        self._report_opened_at = 0  # the start of the oldest period not yet closed
        self._parts_written = 0  # parts of that period's report already written
        # A report marked in the store whose file is not known to be written (the last
        # leader stopped in between): written again, first (see _rotate_reports).
        self._pending_report: PendingReport | None = None
        self._unreported = 0
        self._rotating: asyncio.Task[None] | None = None
        # The store's health: set while commits succeed. While it is clear, intake is
        # held and every flush waits for the store to recover (docs/decisions.md D25).
        self._store_ok = asyncio.Event()
        self._store_ok.set()
        self._store_failed_at: float | None = None
        self._store_probe: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None
        self._closing = False
        self._housekeeping_wake = asyncio.Event()
        self._housekeeping_timer: asyncio.TimerHandle | None = None
        self._housekeeping_due: int | None = None  # wall ms the timer is set for
        self._started_at = clock()
        # Retention (see _prune): the first prune a while after the start.
        self._counter_sweep = CounterSweep()
        self._prune_due = self._started_at + PRUNE_EVERY_MS

    # -- start-up and shut-down -----------------------------------------------------

    def load(self) -> None:
        """Load every store and rebuild the engine; nothing is subscribed yet."""
        paths = self.config.paths
        started = time.monotonic()
        self.trust = self._load_trust(paths.trust_dir)
        self._signer: Signer | None = startup_signer(self.config.reports.signing_key, self.log)
        # Checked by load_config already; read again here, once, for the writer.
        self._profile = load_profile(self.config.reports.profile)
        try:
            self.guids = GuidList.open(paths.guid_list)
        except GuidListError as exc:
            # Without the list no command qualifies, so nothing is suppressed: the safe
            # direction. Said loudly, because it defeats the gateway's purpose.
            self.guids = None
            self.log.error("guids.unavailable", reason=exc.reason, detail=str(exc))
        else:
            self.metrics.guid_list_imported.set(self.guids.imported_at_ms / 1000)
        self.inventory = open_inventory(self.config)
        if self._lease is not None and self._lease.epoch is not None:
            # Inventory updates are writes of the leader too, fenced like its commits.
            self.inventory.fence(self._lease.run_id, self._lease.epoch)
        self.store = self._open_store(paths.state)
        now = self.clock()
        self.engine = Engine(self.config.engine_config(), now)
        with collector_paused():
            due, remembered = self._restore(now)
            for decision, _done in remembered:
                self.engine.remember_decision(decision)
        self._apply_housekeeping(due)
        cursor = self.store.report_cursor()
        if cursor is not None:
            # Reporting goes on where the last leader (or the last run) left it: the
            # next period starts where the last report ended, even after downtime.
            self._report_opened_at = self._rotation.period_start(cursor.opened_at_ms)
            self._parts_written = cursor.parts_written
            self._pending_report = cursor.pending
        else:
            pending = self.store.unreported(1)
            first = pending[0][1].received_at if pending else now
            self._report_opened_at = self._rotation.period_start(first)
        # Counted here, not with COUNT(*) per alert: that scan grows with the log.
        self._unreported = self.store.unreported_count()
        self.log.info(
            "state.loaded",
            activations=self.engine.tracked_count,
            windows_active=self.engine.active_windows,
            windows_pending=self.engine.pending_windows,
            trusted_signers=len(self.trust),
            guids=len(self.guids) if self.guids is not None else 0,
            inventory=self.inventory.count(),
            seconds=round(time.monotonic() - started, 3),
        )
        self._update_gauges()

    def _restore(self, now: int) -> tuple[list[Housekeeping], list[tuple[AlertDecision, bool]]]:
        """The engine's windows from the store, and the decisions to remember."""
        dedupe_since = now - self.config.engine_config().dedupe_ms
        if self._lease is None:
            due = self.engine.restore_fields(self.store.activation_fields(), now)
            return due, self.store.load_decisions(dedupe_since)
        # A promotion, in a thread (see start): the decisions are read on another thread
        # while the activations stream in, so that decoding them overlaps the database's
        # work on the activations (docs/ha.md, "Promotion time").
        with ThreadPoolExecutor(1, thread_name_prefix="poa-load") as pool:
            reading = pool.submit(self.store.load_decisions, dedupe_since)
            due = self.engine.restore_fields(self.store.activation_fields(), now)
            return due, reading.result()

    def _load_trust(self, folder: Path) -> TrustStore:
        if not folder.is_dir():
            raise StartupError(
                StartupReason.TRUST_MISSING,
                f"trust folder {folder} does not exist or is not a folder (paths.trust_dir): "
                "put the Suppliers' certificates (PEM) there",
            )
        try:
            trust = TrustStore.from_directory(folder)
        except (GbcsError, OSError) as exc:
            raise StartupError(
                StartupReason.TRUST_UNREADABLE, f"trust folder {folder}: {exc}"
            ) from exc
        for name, why in trust.skipped:
            self.log.debug("trust.skipped", file=name, reason=why)
        if len(trust) == 0:
            # No signer: every CS06 would be refused and no window ever open, silently.
            raise StartupError(
                StartupReason.TRUST_EMPTY,
                f"trust folder {folder} holds no usable certificate "
                f"({len(trust.skipped)} file(s) skipped): no command could be verified",
            )
        return trust

    async def start(self) -> None:
        """Load state, connect, subscribe, and tell systemd we are ready."""
        if self._lease is not None:
            # A promotion: a big state takes seconds to load, so in a thread, while the
            # event loop keeps renewing the lease. Nothing else runs on this gateway yet.
            await asyncio.to_thread(self.load)
        else:
            self.load()
        install_exception_filter(asyncio.get_running_loop(), self._lib_event)
        b = self.config.broker
        self.mqtt = self._make_transport(self._on_delivery, self._mqtt_event)
        # Read when scraped: no loop has to keep them fresh.
        transport = self.mqtt
        self.metrics.inflight_publishes.set_function(lambda: transport.inflight_publishes)
        self.metrics.inbound_in_progress.set_function(lambda: transport.inbound)
        if b.protocol != 5:
            self.log.warning(
                "mqtt.protocol",
                reason="mqtt-3.1.1",
                detail="MQTT 3.1.1 has no reason codes: a publish the broker refuses "
                "(an ACL) looks delivered, and its alert acknowledged; use MQTT 5",
            )
        await self.mqtt.connect()
        await self.mqtt.subscribe([self.topics[t] for t in self._subscribed_topics()])
        self._connection_changed()
        if self._pending_report is not None:
            # The last leader (or run) marked this report and stopped before its file
            # was known to be written: write it now, from the same records.
            self._rotating = asyncio.create_task(
                self._write_report(self._pending_report, None), name="rotate"
            )
            self._rotating.add_done_callback(self._rotation_done)
        self.notifier.ready(f"suppressing; {self.engine.tracked_count} activations tracked")
        self.log.info("gateway.ready", version=__version__, topics=self._subscribed_topics())

    @staticmethod
    def _subscribed_topics() -> list[str]:
        return ["gbcs_command", "gbcs_inbound", "dcc_alert", "inventory"]

    async def run_forever(self) -> None:
        """Housekeeping, report rotation and the watchdog until asked to stop.

        Raises the broker's permanent refusal (bad credentials, not authorised) when it
        comes while running, after stopping: the process must exit non-zero.
        """
        tasks = [
            asyncio.create_task(self._housekeeping_loop(), name="housekeeping"),
            asyncio.create_task(self._watchdog_loop(), name="watchdog"),
        ]
        failed = asyncio.ensure_future(self.mqtt.wait_failed())
        lost = asyncio.ensure_future(self._lease.lost.wait()) if self._lease else None
        try:
            stopping = asyncio.ensure_future(self._stopping.wait())
            waits = {stopping, failed} | ({lost} if lost else set())
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            stopping.cancel()
            if failed.done() and not failed.cancelled():
                self._failure = failed.result()
            elif lost is not None and lost.done() and not self._stopping.is_set():
                self._failure = self.lease_lost()
        finally:
            failed.cancel()
            if lost is not None:
                lost.cancel()
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._failure is not None:
            raise self._failure

    def stop(self) -> None:
        """Ask the gateway to stop (signal handler)."""
        self._stopping.set()

    async def stopped(self) -> None:
        """Return once a stop has been asked for, or the leader lease is lost."""
        waits = [asyncio.ensure_future(self._stopping.wait())]
        if self._lease is not None:
            waits.append(asyncio.ensure_future(self._lease.lost.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiting in waits:
                waiting.cancel()

    def lease_lost(self) -> LeaseLost | None:
        """Why this gateway may no longer act (its lease is lost), or None."""
        if self._lease is None or self._lease.lost_reason is None:
            return None
        return LeaseLost(self._lease.lost_reason, self._lease.epoch)

    async def close(self) -> None:
        """Disconnect (unacknowledged messages stay with the broker) and close the stores.

        Safe on a gateway that was stopped half-way through start-up.
        """
        self.notifier.stopping("stopping")
        self._closing = True  # disconnects from here on are ours: not a warning
        self.metrics.up.set(0)
        if self._store_probe is not None:
            self._store_probe.cancel()
        if self._housekeeping_timer is not None:
            self._housekeeping_timer.cancel()
        if self._rotating is not None and not self._rotating.done():
            with contextlib.suppress(Exception):
                await self._rotating
        if hasattr(self, "mqtt"):
            m = self.mqtt
            self.log.info(
                "mqtt.stats",
                inbound_peak=m.inbound_peak,
                inbound_limit=m.inbound_limit,
                pauses=m.pauses,
                window=m.window_size,
                reconnects=m.reconnects,
                withheld=m.withheld_not_leader,
            )
            with contextlib.suppress(Exception):
                await m.close()
        if hasattr(self, "store"):
            if self._may_act():
                await self.store.aclose()
            else:
                # Stepped down: what is queued belongs to messages not acknowledged,
                # which the new leader gets from the broker; it must not be written.
                self.store.close()
        if hasattr(self, "inventory"):
            self.inventory.close()
        if self.guids is not None:
            self.guids.close()
        self._write_status(running=False)
        self.log.info("gateway.stopped")

    # -- dispatch ---------------------------------------------------------------------

    def _on_delivery(self, topic: str, payload: bytes, delivery: Delivery) -> None:
        received = self.clock()
        if topic == self._alert_topic:
            self._take_alert(payload, received, delivery)
            return
        handler = self._handlers.get(topic)
        if handler is None:
            self.log.warning("message.unexpected_topic", topic=topic)
            self._acknowledge(delivery)
            return
        self._spawn(self._handle(handler, topic, payload, received, delivery))

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str | None = None) -> None:
        # The loop keeps only weak references to tasks: hold them until they finish.
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _handle(
        self,
        handler: Callable[[bytes, int], Awaitable[None]],
        topic: str,
        payload: bytes,
        received: int,
        delivery: Delivery,
    ) -> None:
        # Acknowledged only once everything the handler queued is committed, refusals
        # included: a CS06 refused as a replay of a command whose commit is still
        # pending must not be acknowledged before that commit (it could fail).
        error: BaseException | None = None
        for _ in range(HANDLER_ATTEMPTS):
            try:
                await handler(payload, received)
                await self._durable()
            except NOT_THE_MESSAGE as exc:
                delivery.fail(exc)  # not acknowledged; the adapter says why
                return
            except Exception as exc:  # noqa: BLE001 - a bug on this message: try again
                error = exc
            else:
                self._acknowledge(delivery)
                return
        assert error is not None
        try:
            await self._quarantine(topic, payload, received, error, forward=False)
        except NOT_THE_MESSAGE as exc:
            delivery.fail(exc)
            return
        self._acknowledge(delivery)

    # -- quarantine -------------------------------------------------------------------

    def _quarantine_notice(self, entry: QuarantineEntry) -> tuple[str, bytes]:
        return self.topics["quarantine"], encode(quarantine_notice(entry))

    async def _quarantine(
        self, topic: str, payload: bytes, received: int, error: BaseException, *, forward: bool
    ) -> None:
        """Keep a message whose handling raised on every attempt, tell the operators, and
        (a DCC alert: the safety direction) forward it unread. The caller acknowledges."""
        entry = quarantine_entry(topic, payload, received, error, self.clock(), forward=forward)
        publishes = [self._quarantine_notice(entry)]
        if forward:
            publishes.insert(0, (self.topics["dno_alert"], payload))
        await self.mqtt.publish_many(publishes)
        self.store.put_quarantine(entry)
        await self._durable()
        self._quarantined(entry)

    def _quarantined(self, entry: QuarantineEntry) -> None:
        self.metrics.count_quarantined(entry.topic, entry.reason)
        if entry.forwarded:
            self.metrics.count_alert(AlertOutcome.FORWARDED, AlertReason.QUARANTINED)
        self.log.error(
            "message.quarantined",
            id=entry.id,
            topic=entry.topic,
            reason=entry.reason,
            detail=entry.error,
            attempts=entry.attempts,
            forwarded=entry.forwarded,
            bytes=len(entry.payload),
        )

    # -- the state store's health -----------------------------------------------------

    async def _durable(self) -> None:
        """Return once everything queued in the store is committed.

        A failed commit is not the message's fault: the store keeps the failed writes
        and retries them, intake is held, and this waits until a commit succeeds, so
        the message is acknowledged late rather than redelivered (which would repeat
        its outputs on every attempt). Nothing is acknowledged while the store fails.
        """
        while True:
            if not self._store_ok.is_set():
                await self._store_ok.wait()
            try:
                await self.store.flush()
            except StoreError as exc:
                if exc.reason == "fenced" and self._lease is not None:
                    # The database says another instance leads: step down now.
                    self._lease.lose(LossReason.FENCED)
                if exc.reason != "commit-failed":
                    raise
                self._store_failed(exc)
            else:
                return

    def _store_failed(self, exc: StoreError) -> None:
        self.metrics.store_commit_failures.inc()
        if not self._store_ok.is_set():
            return
        self._store_ok.clear()
        self._store_failed_at = time.monotonic()
        self.metrics.store_ok.set(0)
        self.log.error("store.failed", reason=exc.reason, detail=exc.detail, path=exc.path)
        if hasattr(self, "mqtt"):
            self.mqtt.hold_intake()
        self._store_probe = asyncio.create_task(self._recover_store(), name="store-probe")
        self._write_status()

    async def _recover_store(self) -> None:
        delay = STORE_RETRY_MIN_S
        while True:
            await asyncio.sleep(delay)
            try:
                await self.store.flush()
            except StoreError as exc:
                if exc.reason != "commit-failed":
                    self.log.error("store.failed", reason=exc.reason, detail=exc.detail)
                self.metrics.store_commit_failures.inc()
                delay = min(delay * 2, STORE_RETRY_MAX_S)
                continue
            break
        failed_for = time.monotonic() - (self._store_failed_at or time.monotonic())
        self._store_ok.set()
        self.metrics.store_ok.set(1)
        self.log.warning("store.recovered", failed_for_s=round(failed_for, 3))
        if hasattr(self, "mqtt"):
            self.mqtt.release_intake()
        self._write_status()

    def _may_act(self) -> bool:
        """False once this instance may no longer acknowledge, publish or write reports:
        it lost the leader lease (then another instance has the broker session)."""
        return self._lease is None or self._lease.valid()

    def _acknowledge(self, delivery: Delivery) -> None:
        if not self._may_act():
            # The new leader gets it from the broker session; acknowledging it here
            # could acknowledge it on the new leader's connection's behalf.
            return
        self.metrics.ack_latency.observe(time.monotonic() - delivery.started)
        delivery.ack()

    # -- DCC alerts -------------------------------------------------------------------

    def _take_alert(self, payload: bytes, received: int, delivery: Delivery) -> None:
        try:
            alert = attempt(self._decode_alert, payload)
        except WireError as exc:
            # Cannot read it, so cannot decide: forward it unread.
            self._spawn(self._forward_unread(payload, exc, delivery))
            return
        except Poisoned as exc:
            self._spawn(self._quarantine_alert(payload, received, exc, delivery))
            return
        first = self._inflight_alerts.get(alert.alert_id)
        if first is not None:
            # A redelivery of a message still being handled: its effect comes once, and
            # it is acknowledged when the first copy is.
            first.add_done_callback(partial(self._after_first, alert.alert_id, delivery))
            return
        batch = self._batch
        if batch is None:
            # The alerts handed over in this pass of the event loop go together: read
            # from the socket in one chunk, they share the publish wait and the commit.
            loop = asyncio.get_running_loop()
            batch = self._batch = _AlertBatch(loop)
            loop.call_soon(self._start_batch, batch)
        batch.alerts.append((alert, payload, received, delivery))
        self._inflight_alerts[alert.alert_id] = batch.done

    def _after_first(self, alert_id: str, delivery: Delivery, first: asyncio.Future[None]) -> None:
        if first.cancelled():
            return  # shutting down: nothing is acknowledged
        exc = first.exception()
        if exc is not None:
            delivery.fail(exc)
            return
        self._count_duplicate(alert_id)
        self._acknowledge(delivery)

    async def _quarantine_alert(
        self, payload: bytes, received: int, error: Poisoned, delivery: Delivery
    ) -> None:
        try:
            await self._quarantine(self._alert_topic, payload, received, error, forward=True)
        except NOT_THE_MESSAGE as failed:
            delivery.fail(failed)
            return
        self._acknowledge(delivery)

    async def _forward_unread(self, payload: bytes, exc: WireError, delivery: Delivery) -> None:
        topic = self._alert_topic
        try:
            await self.mqtt.publish(self.topics["dno_alert"], payload)
        except Exception as failed:  # noqa: BLE001 - not acknowledged; the adapter says why
            delivery.fail(failed)
            return
        self.metrics.count_alert(AlertOutcome.REJECTED, exc.reason)
        self.metrics.count_decode_error(topic, exc.reason)
        self.log.warning(
            "alert.rejected", reason=exc.reason, detail=str(exc), topic=topic, forwarded=True
        )
        self._acknowledge(delivery)

    def _start_batch(self, batch: _AlertBatch) -> None:
        self._batch = None
        self._spawn(self._run_batch(batch), name="alerts")

    async def _run_batch(self, batch: _AlertBatch) -> None:
        try:
            await self._decide(batch.alerts)
        except asyncio.CancelledError:
            batch.done.cancel()  # shutting down: nothing is acknowledged
            raise
        except NOT_THE_MESSAGE as exc:
            # Every alert of the batch stays unacknowledged; on redelivery those whose
            # effect was recorded are recognised and not repeated.
            batch.done.set_exception(exc)
            batch.done.exception()  # retrieved here; duplicates waiting on it see it too
            for _, _, _, delivery in batch.alerts:
                delivery.fail(exc)
        except Exception as exc:  # noqa: BLE001 - a bug outside the per-alert guard
            # Redelivering the batch would meet the same bug for ever, and one alert
            # must not hold back the others: each is taken alone, and one that still
            # fails is forwarded unjudged and quarantined.
            self.log.error(
                "alerts.batch_failed",
                reason=type(exc).__name__,
                detail=describe(exc),
                alerts=len(batch.alerts),
            )
            await self._one_by_one(batch.alerts)
            batch.done.set_result(None)
        else:
            batch.done.set_result(None)
            for _, _, _, delivery in batch.alerts:
                self._acknowledge(delivery)
        finally:
            for alert, _, _, _ in batch.alerts:
                if self._inflight_alerts.get(alert.alert_id) is batch.done:
                    del self._inflight_alerts[alert.alert_id]

    async def _one_by_one(self, alerts: list[_BatchedAlert]) -> None:
        for item in alerts:
            _, payload, received, delivery = item
            try:
                try:
                    await self._decide([item])
                except NOT_THE_MESSAGE:
                    raise
                except Exception as exc:  # noqa: BLE001 - this alert alone fails
                    poisoned = Poisoned(exc, 1)
                    await self._quarantine(
                        self._alert_topic, payload, received, poisoned, forward=True
                    )
            except Exception as failed:  # noqa: BLE001 - not acknowledged; the adapter says why
                delivery.fail(failed)
            else:
                self._acknowledge(delivery)

    async def _decide(self, alerts: list[_BatchedAlert]) -> None:
        publishes: list[tuple[str, bytes]] = []
        writes: list[pipeline.Write] = []
        done: list[pipeline.Judged] = []
        poisoned: list[QuarantineEntry] = []
        for alert, payload, received, _ in alerts:
            try:
                judged = attempt(
                    pipeline.judge_alert,
                    self.engine,
                    alert,
                    payload,
                    received,
                    self._effect_on_record,
                )
            except Poisoned as exc:
                # This alert alone: forwarded unjudged (the safety direction) and
                # quarantined; the rest of the batch goes on.
                entry = quarantine_entry(
                    self._alert_topic, payload, received, exc, self.clock(), forward=True
                )
                poisoned.append(entry)
                publishes.append((self.topics["dno_alert"], payload))
                publishes.append(self._quarantine_notice(entry))
                continue
            if judged.duplicate:
                self._count_duplicate(alert.alert_id)
                continue
            if judged.publish is not None:
                publishes.append((self.topics[judged.publish.output], judged.publish.payload))
            writes.extend(judged.writes)
            done.append(judged)
        # Outputs first (the live record, or the alert to the DNOs), then the log and
        # the decisions in one commit, then the acknowledgements: a crash before the
        # commit repeats an output on redelivery (never loses it); after it, nothing.
        await self.mqtt.publish_many(publishes)
        pipeline.apply(self.store, writes)
        for entry in poisoned:
            self.store.put_quarantine(entry)
        await self._durable()
        for judged in done:
            if judged.record is not None:
                self._suppressed(judged.decision, judged.record)
            else:
                self._forwarded(judged.decision)
        for entry in poisoned:
            self._quarantined(entry)

    def _effect_on_record(self, alert_id: str) -> bool:
        stored = self.store.decision(alert_id)
        return stored is not None and stored[1]

    def _count_duplicate(self, alert_id: str) -> None:
        self.metrics.count_alert(AlertOutcome.DUPLICATE, AlertReason.REDELIVERED)
        self.log.info("alert.duplicate", alert_id=alert_id)

    def _suppressed(self, decision: AlertDecision, record: SuppressionRecord) -> None:
        self.metrics.count_alert(AlertOutcome.SUPPRESSED, decision.reason)
        self.metrics.suppression_records.inc()
        self.log.info(
            "alert.suppressed",
            alert_id=record.alert_id,
            chf_id=decision.chf,
            device_id=record.esme_id,
            request_id=record.request_id,
            judged_at=decision.judged_at,
            window_start=record.window_start,
            window_end=record.window_end,
            activation=record.activation,
        )
        self._unreported += 1
        if self._unreported >= self.config.reports.max_records:
            self._start_rotation()  # a full part of the open period goes out now

    def _forwarded(self, decision: AlertDecision) -> None:
        self.metrics.count_alert(AlertOutcome.FORWARDED, decision.reason)
        gap = decision.after_window_ms
        if gap is not None:
            # Rare, and evidence on the window's length (issue 13): said at info.
            self.metrics.count_near_miss(gap)
            self.log.info(
                "alert.near_miss",
                alert_id=decision.alert_id,
                chf_id=decision.chf,
                judged_at=decision.judged_at,
                gap_ms=gap,
            )
        if self.log.enabled_for("debug"):
            # Debug only: at storm rates a line per forwarded alert would swamp the
            # journal; the decision is in the state database (explain) and the metrics.
            self.log.debug(
                "alert.forwarded",
                alert_id=decision.alert_id,
                chf_id=decision.chf,
                reason=decision.reason,
            )

    # -- GBCS -------------------------------------------------------------------------

    def _read_frame(self, payload: bytes, topic: str) -> tuple[gbcs.Frame, int, str | None] | None:
        try:
            env = self._decode_gbcs(payload)
            frame = gbcs.decode_frame(env.frame)
        except (WireError, GbcsError) as exc:
            self.metrics.count_decode_error(topic, exc.reason)
            self.log.warning("gbcs.rejected", reason=exc.reason, detail=str(exc), topic=topic)
            return None
        return frame, env.sent_at, env.request_id

    def _not_acted_on(self, topic: str, frame: gbcs.Frame, why: IgnoredReason) -> None:
        code = frame.header.message_code
        self.metrics.count_frame_ignored(topic, code, why)
        self.log.debug(
            "gbcs.ignored",
            topic=topic,
            message_code=f"0x{code:04X}",
            cra_flag=int(frame.header.cra_flag),
            reason=why,
            device_id=frame.header.recipient,
        )

    async def _on_gbcs_command(self, payload: bytes, received: int) -> None:
        topic = self.topics["gbcs_command"]
        read = self._read_frame(payload, topic)
        if read is None:
            return
        frame, sent_at, request_id = read
        header = frame.header
        if header.message_code != MessageCode.CS06_ACTIVATE_FIRMWARE:
            # Other commands pass by: the gateway only watches CS06.
            self._not_acted_on(topic, frame, IgnoredReason.NOT_CS06)
            return
        if header.cra_flag is not CraFlag.COMMAND:
            self._not_acted_on(topic, frame, IgnoredReason.NOT_A_COMMAND)
            return
        verification = gbcs.verify_frame(frame, self.trust)
        signer = verification.signer
        seen = CommandSeen(
            frame=frame,
            signature=verification.status,
            signer_role=signer.role if signer is not None else None,
            target=self.inventory.get(header.recipient),
            on_guid_list=self.guids is not None and header.recipient in self.guids,
            last_counter=self.store.last_counter(header.originator, header.recipient),
            sent_at=sent_at,
            request_id=request_id,
        )
        result = self.engine.on_command(seen, received)
        fields: dict[str, Any] = {
            "device_id": header.recipient,
            "request_id": request_id,
            "originator": header.originator,
            "counter": header.originator_counter,
        }
        # Every command judged is kept, refused ones too, committed with its other writes
        # before the acknowledgement: explain answers from it weeks later (D33).
        audit = pipeline.command_record(
            result,
            chf=seen.target.chf_id if seen.target is not None else None,
            request_id=request_id,
            seen_at=received,
        )
        if isinstance(result, CommandRefused):
            self.metrics.count_command_refused(result.reason)
            level = "warning" if result.reason in NOTEWORTHY_REFUSALS else "info"
            self.log.log(
                level, "command.refused", reason=result.reason.value, detail=result.detail, **fields
            )
            pipeline.apply(self.store, [audit])
            await self._durable()
            return
        pipeline.apply(self.store, [*pipeline.command_writes(result), audit])
        await self._durable()
        if isinstance(result, ActivationTracked):
            a = result.activation
            self.metrics.count_command_tracked(a.kind, replaced=result.replaced is not None)
            self.log.info(
                "activation.tracked",
                chf_id=a.chf,
                activation=a.kind,
                window_start=a.start_ms,
                window_end=a.end_ms,
                replaced=result.replaced.request_id if result.replaced else None,
                **fields,
            )
        elif isinstance(result, ActivationCancelled):
            self.metrics.count_command_cancelled()
            self.log.info(
                "activation.cancelled",
                cancelled=result.cancelled.request_id if result.cancelled else None,
                **fields,
            )
        self._update_gauges()

    async def _on_gbcs_inbound(self, payload: bytes, received: int) -> None:
        topic = self.topics["gbcs_inbound"]
        read = self._read_frame(payload, topic)
        if read is None:
            return
        frame, sent_at, _ = read
        if frame.header.cra_flag is CraFlag.COMMAND:
            # A command on the northbound topic (a CS06 sent to the wrong topic?): it
            # opens no window here; commands are read from the command topic only.
            self._not_acted_on(topic, frame, IgnoredReason.COMMAND_ON_INBOUND)
            return
        device = self.inventory.get(frame.header.originator)
        if isinstance(frame.payload, PowerRestorationAlert):
            observed = self.engine.on_restoration(frame, device, received)
            # Kept (committed before the acknowledgement) for the period's summary file:
            # the evidence on assumption A5 (gateway/state/restorations.py).
            kept = pipeline.restoration_record(
                observed,
                counter=frame.header.originator_counter,
                alert_code=frame.payload.alert_code,
                received_at=received,
            )
            pipeline.apply(self.store, [kept])
            await self._durable()
            self.metrics.count_restoration_alert(in_window=observed.in_window)
            self.log.info(
                "restoration.observed",
                device_id=observed.esme,
                chf_id=observed.chf,
                in_window=observed.in_window,
                request_id=observed.activation.request_id if observed.activation else None,
            )
            return
        if not isinstance(frame.payload, ActivateFirmwareResponse | FutureDatedActivationAlert):
            self._not_acted_on(topic, frame, IgnoredReason.NOT_HANDLED)
            return
        verification = gbcs.verify_frame(frame, self.trust)
        outcome, writes = pipeline.device_outcome(
            self.engine, DeviceOutcomeSeen(frame, verification.status, device, sent_at), received
        )
        self.metrics.count_device_outcome(outcome.kind)
        a = outcome.activation
        if writes:
            pipeline.apply(self.store, writes)
            await self._durable()
        self.log.info(
            "device.outcome",
            kind=outcome.kind.value,
            reason=outcome.reason.value,
            detail=outcome.detail,
            device_id=frame.header.originator,
            response_code=outcome.response_code,
            request_id=a.request_id if a is not None else None,
        )
        self._update_gauges()

    # -- inventory ------------------------------------------------------------------

    async def _on_inventory(self, payload: bytes, received: int) -> None:
        topic = self.topics["inventory"]
        try:
            record: DeviceRecord = from_envelope(self._decode_inventory(payload))
        except (WireError, InventoryError) as exc:
            reason = exc.reason
            self.metrics.count_decode_error(topic, reason)
            self.log.warning("inventory.rejected", reason=reason, detail=str(exc), topic=topic)
            return
        if not self._may_act():
            # A frozen leader woken after the takeover: the new leader has this message.
            lost = self.lease_lost()
            raise lost if lost is not None else LeaseLost(LossReason.DEADLINE, None)
        self.inventory.upsert(record, received)
        noted = self.engine.on_inventory(record, received)
        self.log.debug(
            "inventory.updated",
            device_id=record.device_id,
            chf_id=record.chf_id,
            tracked=len(noted.tracked),
        )

    # -- housekeeping -----------------------------------------------------------------

    async def _housekeeping_loop(self) -> None:
        while True:
            now = self.clock()
            try:
                self._apply_housekeeping(self.engine.advance(now))
                await self._durable()
                if self._rotation.due(now, self._report_opened_at):
                    self._start_rotation()
                self._update_gauges()
                await self._prune(now)
            except Exception as exc:  # noqa: BLE001 - housekeeping must outlive any one failure
                # Logged at once; the next pass tries again (a store error resolves
                # itself through _durable, which waits for the store to recover).
                self.metrics.housekeeping_failures.inc()
                self.log.error(
                    "housekeeping.failed", reason=type(exc).__name__, detail=describe(exc)
                )
            self._housekeeping_due = None
            self._arm_housekeeping()
            await self._housekeeping_wake.wait()
            self._housekeeping_wake.clear()

    async def _prune(self, now: int) -> None:
        """Retention (gateway/retention.py, docs/decisions.md D31), at most every
        PRUNE_EVERY_MS: one batch of each prune through the store's queue, the counters'
        next page, and the outbox swept in a thread, so the event loop is never held."""
        if now < self._prune_due:
            return
        self._prune_due = now + PRUNE_EVERY_MS
        r = self.config.retention
        self.store.prune_suppressions(now - r.suppressions)  # reported records only
        self.store.prune_decisions(now - r.decisions)
        # Restoration alerts are the near misses' companion evidence: kept as long.
        self.store.prune_restorations(now - r.decisions)
        self.store.prune_quarantine(now - r.refusals)
        self.store.prune_commands(now - r.refusals)  # refused and accepted alike
        counters = await self._counter_sweep.step(
            self.store, lambda device: self.inventory.get(device) is not None, now, r.counters
        )
        await self._durable()
        files: list[str] = []
        if self._may_act():  # the outbox is the leader's, as the reports are
            outbox, prefix = self.config.paths.outbox, self.config.reports.name_prefix
            files = await asyncio.to_thread(sweep_outbox, outbox, prefix, now - r.outbox)
        if counters or files:
            self.log.info("retention.pruned", counters=counters, outbox_files=len(files))

    @property
    def housekeeping_due(self) -> int | None:
        """When housekeeping is next woken (wall ms), None while a pass runs."""
        return self._housekeeping_due

    def _arm_housekeeping(self) -> None:
        """Wake housekeeping at its next deadline: the engine's (a pending window opening,
        a window ending, remembered alert ids ageing out) or the report period's end.

        One timer, re-armed only when a change brings the deadline earlier (called after
        every input that may add a timer to the engine), rather than a poll every second.
        The wait is capped at :data:`HOUSEKEEPING_GUARD_MS`: the deadlines are wall-clock
        times and the timer runs on the monotonic clock, so a step of the wall clock is
        caught within that.
        """
        now = self.clock()
        due = min(
            self._rotation.closes_at(self._report_opened_at),
            self.engine.next_deadline() or now + HOUSEKEEPING_GUARD_MS,
            now + HOUSEKEEPING_GUARD_MS,
        )
        if self._housekeeping_due is not None and self._housekeeping_due <= due:
            return  # already armed for this deadline or an earlier one
        if self._housekeeping_timer is not None:
            self._housekeeping_timer.cancel()
        self._housekeeping_due = due
        self._housekeeping_timer = asyncio.get_running_loop().call_later(
            max(0, due - now) / 1000, self._housekeeping_wake.set
        )

    def _apply_housekeeping(self, events: list[Housekeeping]) -> None:
        # Decisions are kept for retention.decisions (`explain` reads them), longer than
        # the dedupe horizon the engine remembers them for (docs/decisions.md D31).
        keep_ms = int(self.config.retention.decisions)
        pipeline.apply(self.store, pipeline.housekeeping_writes(events, self.clock(), keep_ms))
        names = {WindowOpened: "window.opened", WindowEnded: "window.ended"}
        for event in events:
            if isinstance(event, DedupeExpired):
                continue
            a = event.activation
            self.log.info(
                names.get(type(event), "window.expired"),
                chf_id=a.chf,
                device_id=a.esme,
                request_id=a.request_id,
            )

    async def rotate_reports(self) -> None:
        """Close the report periods due now (and the open period's full parts), as
        housekeeping does by itself when their time comes; for tools and tests."""
        if self._rotating is not None and not self._rotating.done():
            with contextlib.suppress(Exception):
                await self._rotating
        self._rotating = asyncio.create_task(self._rotate_reports(self.clock()), name="rotate")
        await self._rotating

    def _start_rotation(self) -> None:
        # One rotation at a time, off the acknowledgement path: during a storm every
        # suppressed alert past the threshold would otherwise start its own (each
        # reading max_records rows), which starves the event loop.
        if self._rotating is not None and not self._rotating.done():
            return
        self._rotating = asyncio.create_task(self._rotate_reports(self.clock()), name="rotate")
        self._rotating.add_done_callback(self._rotation_done)

    def _rotation_done(self, task: asyncio.Task[None]) -> None:
        if not task.cancelled() and task.exception() is not None:
            # The records stay unreported in the log and the next rotation takes them.
            self.log.error("report.failed", reason=repr(task.exception()))

    async def _rotate_reports(self, now: int) -> None:
        """Close every period that has ended (and settled) by ``now``, oldest first: its
        records go into one report, or into numbered parts of ``max_records``; a period
        with none still gets its (empty) report, so the days a gateway was down are
        reported too.

        Each part is marked in the store and recorded as pending in one fenced commit,
        then its file is written, then the mark is cleared (:meth:`_write_report`): so
        whatever instance stops wherever, every record is in exactly one report. A part
        marked but not known to be written is written again by whoever leads next, from
        the same records and under the same name (an identical file).
        """
        if not self._may_act():
            return  # exactly one instance writes reports: the leader
        if self._pending_report is not None:
            await self._write_report(self._pending_report, None)
        rotation, limit = self._rotation, self.config.reports.max_records
        while rotation.due(now, self._report_opened_at) and self._may_act():
            # Every period that ended, oldest first: after downtime, each missed one.
            start = self._report_opened_at
            end = start + rotation.period_ms
            await self._settled()
            while True:
                rows = await self.store.read_unreported(limit, before_ms=end)
                if not rows and self._parts_written > 0:
                    break
                await self._close_part(start, end, rows)
                if len(rows) < limit:
                    break
            # Before the cursor leaves the period: a leader stopped in between closes
            # it again and writes the same summary (it is read from the store alone).
            await self._write_summary(start, end)
            self._report_opened_at = end
            self._parts_written = 0
            self.store.set_report_cursor(ReportCursor(opened_at_ms=end))
            await self._durable()
        # In a storm the open period's full parts go out as they fill, not at its end:
        # the DNOs get them sooner, and no period's report waits on a million records.
        end = self._report_opened_at + rotation.period_ms
        while self.store.unreported_count() >= limit and self._may_act():
            rows = await self.store.read_unreported(limit, before_ms=end)
            if len(rows) < limit:
                break
            await self._close_part(self._report_opened_at, end, rows)
        self._unreported = self.store.unreported_count()

    async def _write_summary(self, start: int, end: int) -> None:
        """Write the summary of the closed period [start, end): its near misses and
        restoration alerts inside a window (gateway/reports/summary.py)."""
        near_misses, restorations = await self.store.read_evidence(start, end)
        if not self._may_act():
            return
        # The period's part of its report ids ("PT1H" of "PT1H-001"), as its name.
        period_id = self._rotation.report_id(start, 1).rsplit("-", 1)[0]
        written = await asyncio.to_thread(
            write_summary,
            self.config.paths.outbox,
            period_start_ms=start,
            period_end_ms=end,
            period_id=period_id,
            near_misses=near_misses,
            restorations=restorations,
            name_prefix=self.config.reports.name_prefix,
            version=__version__,
            signer=self._signer,
        )
        self.log.info(
            "report.summary_written",
            file=str(written.path),
            near_misses=written.near_misses,
            restorations_in_window=written.restorations_in_window,
        )

    async def _settled(self) -> None:
        """Wait until the alerts in hand now are decided and their records committed, so
        that a period is closed with every record decided before its end."""
        in_hand = [f for f in set(self._inflight_alerts.values()) if not f.done()]
        if in_hand:
            await asyncio.wait(in_hand)
        await self._durable()

    async def _close_part(
        self, start: int, end: int, rows: list[tuple[int, SuppressionRecord]]
    ) -> None:
        part = self._parts_written + 1
        seqs = [seq for seq, _ in rows]
        report = PendingReport(
            report_id=self._rotation.report_id(start, part),
            first_seq=seqs[0] if seqs else None,
            last_seq=seqs[-1] if seqs else None,
            period_start_ms=start,
            period_end_ms=end,
            records=len(rows),
            part=part,
        )
        if seqs:
            self.store.mark_reported_range(seqs[0], seqs[-1], report.report_id, before_ms=end)
        cursor = ReportCursor(opened_at_ms=start, parts_written=part - 1, pending=report)
        self.store.set_report_cursor(cursor)
        await self._durable()
        self._pending_report = report
        await self._write_report(report, [r for _, r in rows])

    async def _write_report(
        self, report: PendingReport, records: list[SuppressionRecord] | None
    ) -> None:
        """Write the file of a report already marked in the store (and, with
        ``reports.split = "distributor"``, each distributor's file of it), then clear
        its mark."""
        if records is None:
            records = self.store.reported(report)
        mpans = await self._mpans(records)
        if not self._may_act():
            return
        written = await asyncio.to_thread(self._write_files, report, records, mpans)
        self.store.set_report_cursor(
            ReportCursor(opened_at_ms=report.period_start_ms, parts_written=report.part)
        )
        await self._durable()
        self._pending_report = None
        self._parts_written = report.part
        for file in written:
            self.mqtt.publish_soon(self.topics["reports"], encode(file.notice()))
        self.metrics.reports.inc()
        self.metrics.report_last_written.set(self.clock() / 1000)
        consolidated = written[-1]
        self.log.info(
            "report.written",
            file=str(consolidated.path),
            records=consolidated.records,
            sha256=consolidated.sha256,
            records_without_mpan=consolidated.records_without_mpan,
            distributor_files=len(written) - 1,
        )

    async def _mpans(self, records: list[SuppressionRecord]) -> dict[bytes, str]:
        """The MPAN core of each record's meter, from the inventory as it is now (a
        meter without one is left out, and its record gets empty MPAN cells)."""
        meters = list(dict.fromkeys(r.esme_id for r in records))
        found: dict[bytes, str] = {}
        for at in range(0, len(meters), MPANS_PER_CALL):
            try:
                found |= self.inventory.mpans(meters[at : at + MPANS_PER_CALL])
            except InventoryError as exc:
                # The report still goes out, complete, with empty MPAN cells (counted in
                # its TRAILER): a DNO gets every record late rather than none.
                self.log.warning("report.mpans_unavailable", detail=str(exc))
                return {}
            await asyncio.sleep(0)  # a slice at a time: the loop keeps acknowledging
        return found

    def _write_files(
        self, report: PendingReport, records: list[SuppressionRecord], mpans: dict[bytes, str]
    ) -> list[ReportFile]:
        """The files of one report, in a thread: each distributor's first (when split),
        the consolidated report last, so that a consolidated report in the outbox has
        its distributors' files beside it."""
        r, s = self.config.reports, self.config.suppression
        write = partial(
            write_report,
            self.config.paths.outbox,
            period_start_ms=report.period_start_ms,
            period_end_ms=report.period_end_ms,
            name_prefix=r.name_prefix,
            version=__version__,
            xlsx=r.xlsx,
            signer=self._signer,
            profile=self._profile,
            mpans=mpans,
            guid_list_sha256=self.guids.sha256 if self.guids is not None else "",
            window_ms=int(s.window),
            lead_ms=int(s.lead),
        )
        written = []
        if r.split == "distributor":
            for distributor, part in by_distributor(records, mpans).items():
                report_id = self._rotation.report_id(
                    report.period_start_ms, report.part, distributor
                )
                written.append(write(part, report_id=report_id, distributor=distributor))
        written.append(write(records, report_id=report.report_id))
        return written

    async def _watchdog_loop(self) -> None:
        interval = self.notifier.watchdog_ping_s()
        if interval is None:
            return
        while True:
            # Pinged from the event loop itself: a stuck loop stops the pings.
            self.notifier.watchdog()
            await asyncio.sleep(interval)

    def _update_gauges(self) -> None:
        e = self.engine
        self.metrics.set_windows(
            active=e.active_windows, pending=e.pending_windows, ended=e.ended_windows
        )
        if self._housekeeping_timer is not None:
            self._arm_housekeeping()  # the input that changed them may add a deadline

    # -- adapters' events ---------------------------------------------------------------

    def _mqtt_event(self, event: str, fields: dict[str, Any]) -> None:
        if event == "mqtt.connected" and fields.get("reconnect"):
            self.metrics.mqtt_reconnects.inc()
        b = self.config.broker
        if event in ("mqtt.disconnected", "mqtt.connect_failed", "mqtt.refused"):
            fields = {"host": b.host, "port": b.port, **fields}
        warn = (
            "mqtt.disconnected",
            "mqtt.connect_failed",
            "mqtt.resync",
            "mqtt.ack_withheld",
            "mqtt.rejected",
            "mqtt.subscribe_refused",
            "mqtt.unexpected_message",
        )
        level = self.log.warning if event in warn and not self._closing else self.log.info
        if event == "mqtt.refused":
            level = self.log.error
        level(event, **fields)
        if event in ("mqtt.connected", "mqtt.disconnected", "mqtt.refused"):
            self._connection_changed()

    def _connection_changed(self) -> None:
        # poa_up and `poa-gateway status` follow the broker connection, not the process.
        connected = hasattr(self, "mqtt") and self.mqtt.connected
        self.metrics.up.set(1 if connected else 0)
        self._write_status()

    def _write_status(self, *, running: bool = True) -> None:
        b = self.config.broker
        try:
            write_status(
                Path(self.config.paths.state),
                version=__version__,
                running=running,
                started_at=self._started_at,
                updated_at=self.clock(),
                host=b.host,
                port=b.port,
                connected=running and hasattr(self, "mqtt") and self.mqtt.connected,
                store_ok=self._store_ok.is_set(),
                role=None if self._lease is None else self._lease.role,
                epoch=None if self._lease is None else self._lease.epoch,
            )
        except OSError as exc:
            # A full disk must not stop the daemon; status then shows the last view.
            self.log.debug("status.unwritten", reason=type(exc).__name__, detail=str(exc))

    def _lib_event(self, event: str, fields: dict[str, Any]) -> None:
        self.log.error(event, **fields)


async def serve(config: Config, log: JsonLog, *, open_store: OpenStore | None = None) -> None:
    """Run until SIGTERM or SIGINT (``open_store``: see :class:`Gateway`; None opens the
    store ``[state]`` names). With the state in PostgreSQL the process is one instance
    of a deployment: a standby until it takes the leader lease (:func:`_serve_ha`)."""
    metrics = Metrics()
    log.flush_once_per_pass(asyncio.get_running_loop())
    server = None
    stopping = asyncio.Event()
    current: list[Gateway] = []  # the gateway running now, for the signal handler

    def stop() -> None:
        stopping.set()
        for gateway in current:
            gateway.stop()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)
    # No live reload: say so instead of dying on SIGHUP (systemctl reload, a closed tty).
    loop.add_signal_handler(
        signal.SIGHUP, lambda: log.warning("signal.ignored", reason="reload-not-supported")
    )
    try:
        if config.metrics.enabled:
            server = metrics.serve(config.metrics.host, config.metrics.port)
        if config.state.backend == "postgresql" and open_store is None:
            await _serve_ha(config, log, metrics, stopping, current)
        else:
            configured, make_transport = sqlite_and_mqtt(config)
            gateway = Gateway(
                config,
                log=log,
                metrics=metrics,
                open_store=configured if open_store is None else open_store,
                make_transport=make_transport,
            )
            current.append(gateway)
            metrics.leader.set(1)
            await _serve(gateway, log)
    except Exception as exc:
        # Said before gateway.stopped, so the journal reads in order: why, then stopped.
        fields: dict[str, Any] = {"reason": getattr(exc, "reason", type(exc).__name__)}
        if isinstance(exc, ConnectionRefusedPermanently):
            fields |= {"host": exc.host, "port": exc.port}
        log.error("gateway.failed", error=type(exc).__name__, detail=describe(exc), **fields)
        raise
    finally:
        for gateway in current:
            await gateway.close()
        if server is not None:
            await asyncio.to_thread(server.close)
        log.flush()


async def _serve_ha(
    config: Config,
    log: JsonLog,
    metrics: Metrics,
    stopping: asyncio.Event,
    current: list[Gateway],
) -> None:
    """One instance of a deployment on PostgreSQL: wait as a standby for the lease, lead
    until it is lost or a stop is asked for, and wait again (gateway/ha.py, docs/ha.md)."""
    from .state.lease import LeaseTable, default_name, new_run_id  # noqa: PLC0415
    from .state.postgresql import PostgresStore  # noqa: PLC0415

    ha = config.ha
    dsn = config.state.dsn
    password = None if config.state_password is None else config.state_password.reveal()
    name = ha.name or default_name()
    table = LeaseTable(
        dsn,
        password,
        run_id=new_run_id(name),
        name=name,
        client_id=config.broker.client_id,
        lease_ms=int(ha.lease),
        lock_timeout_ms=max(50, int(ha.renew * 0.8)),
    )
    keeper = LeaseKeeper(
        table, lease_ms=int(ha.lease), renew_ms=int(ha.renew), log=log, version=__version__
    )
    keeper.on_lost(lambda lost: _stepped_down(metrics, lost))
    notifier = Notifier()
    watchdog = asyncio.create_task(_watchdog(notifier), name="standby-watchdog")

    def open_fenced(_path: Path) -> StateStore:
        store = PostgresStore.open(dsn, password=password)
        assert keeper.epoch is not None
        # A frozen commit holding the lease row is ended by the server well before the
        # lease runs out, so a standby can take it.
        store.fence(keeper.run_id, keeper.epoch, idle_timeout_ms=int(ha.lease) // 2)
        return store

    def make_transport(on_delivery: DeliveryHandler, on_event: EventSink) -> Transport:
        return MqttAdapter(
            mqtt_settings(config), on_delivery=on_delivery, on_event=on_event, may_act=keeper.valid
        )

    try:
        while not stopping.is_set():
            metrics.leader.set(0)
            _standby_status(config, keeper)
            notifier.ready("standby: waiting for the leader lease")
            acquiring = asyncio.create_task(keeper.acquire(), name="acquire-lease")
            halt = asyncio.create_task(stopping.wait(), name="stop-signal")
            await asyncio.wait({acquiring, halt}, return_when=asyncio.FIRST_COMPLETED)
            halt.cancel()
            if not acquiring.done():
                acquiring.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await acquiring
                break
            epoch = acquiring.result()  # a client id conflict raises StartupError
            metrics.leader.set(1)
            metrics.lease_epoch.set(epoch)
            gateway = Gateway(
                config,
                log=log,
                metrics=metrics,
                open_store=open_fenced,
                make_transport=make_transport,
                lease=keeper,
            )
            current[:] = [gateway]
            renewing = asyncio.create_task(keeper.run(), name="renew-lease")
            try:
                await _serve(gateway, log)
            except LeaseLost:
                pass  # said by the keeper (ha.stepped_down); a standby again
            finally:
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
            # Closed here when stopped or stepped down; after a failure, by serve, once
            # gateway.failed is logged (the journal then reads: why, then stopped).
            current.clear()
            await gateway.close()
    finally:
        metrics.leader.set(0)
        watchdog.cancel()
        await keeper.close()


def _standby_status(config: Config, keeper: LeaseKeeper) -> None:
    # The status file of a standby: running, not connected, no lease.
    b = config.broker
    with contextlib.suppress(OSError):
        now = wall_ms()
        write_status(
            Path(config.paths.state),
            version=__version__,
            running=True,
            started_at=now,
            updated_at=now,
            host=b.host,
            port=b.port,
            connected=False,
            store_ok=True,
            role="standby",
            epoch=keeper.epoch,
        )


def _stepped_down(metrics: Metrics, lost: LeaseLost) -> None:
    metrics.leader.set(0)
    if lost.reason is not LossReason.STOPPING:
        metrics.count_stepped_down(lost.reason)


async def _watchdog(notifier: Notifier) -> None:
    # A standby has no gateway, whose loop pings the watchdog: this one does meanwhile.
    interval = notifier.watchdog_ping_s()
    if interval is None:
        return
    while True:
        notifier.watchdog()
        await asyncio.sleep(interval)


async def _serve(gateway: Gateway, log: JsonLog) -> None:
    # Start-up may wait for the broker indefinitely; SIGTERM must still stop it.
    starting = asyncio.create_task(gateway.start(), name="start")
    stopping = asyncio.create_task(gateway.stopped(), name="stop-signal")
    await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if starting.done():
        stopping.cancel()
        starting.result()  # a start-up failure propagates
        # The loaded state lives as long as the process: keep it out of the collector's
        # scans, which otherwise revisit it on every full collection.
        gc.freeze()
        await gateway.run_forever()
    else:
        starting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await starting
        lost = gateway.lease_lost()
        log.info("gateway.start_abandoned", reason="lease lost" if lost else "stop requested")
        if lost is not None:
            raise lost


def run(config: Config, log: JsonLog, *, open_store: OpenStore | None = None) -> None:
    """Entry point of ``poa-gateway run``: uvloop when available."""
    # Thousands of messages in flight are thousands of live tasks and futures, none of
    # them in a reference cycle that needs collecting soon: with the default first
    # threshold (700) the collector ran every few messages and cost a fifth of the CPU.
    gc.set_threshold(*GC_THRESHOLDS)
    try:
        import uvloop  # noqa: PLC0415 - optional speed-up, imported only to run
    except ImportError:  # pragma: no cover
        asyncio.run(serve(config, log, open_store=open_store))
    else:
        uvloop.run(serve(config, log, open_store=open_store))


def state_path(config: Config) -> Path:
    """Where the durable state lives (for ``status`` and ``explain``)."""
    return Path(config.paths.state)
