"""Plays a timeline on the broker in scaled real time and collects the gateway's outputs.

Theory of operation
-------------------
This is the simulator's only I/O with the broker, through the project's own
:class:`~gateway.transport.mqtt.MqttAdapter` (QoS 1 both ways, a client id of its own). A run:

1. connects and subscribes to the gateway's outputs (``dno/dcc/alert``,
   ``gateway/suppressed``, ``gateway/reports``) *before* anything else, so no output
   can be missed;
2. waits until the gateway says it is up (``poa_up 1`` on its metrics endpoint): a
   gateway that has never connected has no session yet, and the broker would drop
   what was published before its first subscription;
3. publishes the inventory, one ``dsp/inventory`` message per device, then a probe (a
   non-AD1 DCC alert, which the gateway forwards untouched) as a barrier: the gateway
   handles messages in order, so once the probe is back every device is known;
4. fixes real time zero on a whole second (ExecutionDateTime has whole seconds) and
   plays each event when its time comes: ``real = t0 + simulated / scale``. The times
   the gateway judges by come from the timeline, not from when the publish happened
   to run: a command's ``sent_at`` and an AD1's ``raised_at`` are the planned instants,
   so a late publish cannot change a decision (see :mod:`.timeline`);
5. waits until every AD1 has an output or the drain timeout passes, then reads the
   gateway's command counts (``poa_commands_total``) from its metrics endpoint.

Latency is measured from just before an AD1 is first published to the receipt of its
first output, both on this machine's wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
import socket
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Final

import msgspec

from gateway.config import format_duration
from gateway.errors import GatewayError
from gateway.transport.mqtt import MqttAdapter, MqttSettings
from gateway.wire import (
    DccAlertEnvelope,
    GbcsEnvelope,
    InventoryEnvelope,
    WireError,
    decode_dcc_alert,
    decode_suppression_record,
    encode,
)

from .frames import FrameFactory
from .population import (
    BrokerAddress,
    Credentials,
    GatewayHome,
    Population,
    build_population,
    write_gateway_home,
)
from .process import GatewayProcess, default_gateway_command
from .scorecard import Evidence, Observation, Scorecard, compute
from .timeline import (
    HOUR_MS,
    ActivationAlertSent,
    Ad1Sent,
    CommandSent,
    Event,
    ResponseSent,
    RestorationSent,
    Timeline,
    TimelineParams,
    build_timeline,
)

__all__ = [
    "RunResult",
    "Runner",
    "SimulationError",
    "SimulationOptions",
    "SimulationOutcome",
    "command_counts",
    "evidence_counts",
    "simulate",
]

TOPIC_COMMAND: Final = "dsp/gbcs/command"
TOPIC_INBOUND: Final = "csp/gbcs/inbound"
TOPIC_ALERT: Final = "csp/dcc/alert"
TOPIC_INVENTORY: Final = "dsp/inventory"
TOPIC_DNO: Final = "dno/dcc/alert"
TOPIC_SUPPRESSED: Final = "gateway/suppressed"
TOPIC_REPORTS: Final = "gateway/reports"
PROBE_CODE: Final = "SIM-PROBE"
"""Code of the barrier alerts: not AD1, so the gateway forwards them untouched."""

_INVENTORY_BATCH: Final = 1_000

Progress = Callable[[str], None]


class SimulationError(GatewayError):
    """The run could not be played (no broker, the gateway never came up ...)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _clock(ms: int) -> str:
    seconds = ms // 1000
    return f"{seconds // 3600}h{seconds // 60 % 60:02d}m{seconds % 60:02d}s"


class RunResult(msgspec.Struct, frozen=True, kw_only=True):
    """What a run observed."""

    observations: tuple[Observation, ...]
    published_ms: dict[str, int]
    """First publish of each alert id (real ms)."""
    accepted: dict[str, int] | None
    refusals: dict[str, int] | None
    t0_ms: int
    seconds: float
    """Real seconds from t0 to the end of the drain."""
    max_lag_ms: int
    """How late the latest event was published compared with its planned time."""
    reports: int
    """Report notices seen on ``gateway/reports``."""
    events: int
    restorations_in_window: int | None = None
    """``poa_restoration_alerts_total{in_window="true"}`` at the end (None: unreadable)."""
    near_misses: int | None = None
    """``poa_near_miss_total`` at the end (None: unreadable)."""


# -- metrics ------------------------------------------------------------------------------

_SAMPLE = re.compile(r"^(?P<name>[A-Za-z_:][A-Za-z0-9_:]*)(?:\{(?P<labels>.*)\})?\s+(?P<value>\S+)")
_LABEL = re.compile(r'(?P<key>[A-Za-z_][A-Za-z0-9_]*)="(?P<value>(?:[^"\\]|\\.)*)"')


def _samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    out = []
    for line in text.splitlines():
        match = _SAMPLE.match(line)
        if match is None or match["name"] != name:
            continue
        labels = {m["key"]: m["value"] for m in _LABEL.finditer(match["labels"] or "")}
        with contextlib.suppress(ValueError):
            out.append((labels, float(match["value"])))
    return out


def command_counts(text: str) -> tuple[dict[str, int], dict[str, int]]:
    """From a Prometheus exposition: commands by accepted result (``tracked``,
    ``replaced``, ``cancelled``) and refused commands by reason (non-zero only)."""
    accepted: dict[str, int] = {}
    refused: dict[str, int] = {}
    for labels, value in _samples(text, "poa_commands_total"):
        result, reason = labels.get("result", ""), labels.get("reason", "")
        if result == "refused":
            if value:
                refused[reason] = refused.get(reason, 0) + int(value)
        else:
            accepted[result] = accepted.get(result, 0) + int(value)
    return accepted, refused


def evidence_counts(text: str) -> tuple[int, int]:
    """From a Prometheus exposition: restoration alerts that came inside a window, and
    near misses (issue 13: the evidence for the modification's assumptions)."""
    restorations = sum(
        int(value)
        for labels, value in _samples(text, "poa_restoration_alerts_total")
        if labels.get("in_window") == "true"
    )
    near_misses = sum(int(value) for _, value in _samples(text, "poa_near_miss_total"))
    return restorations, near_misses


def _gateway_up(text: str) -> bool:
    return any(value == 1.0 for _, value in _samples(text, "poa_up"))


def _fetch(url: str) -> str:
    # The URL is the gateway's own endpoint on 127.0.0.1, built from our configuration.
    with urllib.request.urlopen(url, timeout=2.0) as response:  # noqa: S310
        body: bytes = response.read()
    return body.decode("utf-8", "replace")


# -- the runner -----------------------------------------------------------------------------


class Runner:
    """Plays one timeline against a gateway on a broker."""

    def __init__(
        self,
        population: Population,
        timeline: Timeline,
        credentials: Credentials,
        *,
        broker: BrokerAddress,
        metrics_url: str,
        progress: Progress = lambda _line: None,
        gateway_alive: Callable[[], bool] | None = None,
        drain_timeout_s: float = 20.0,
        ready_timeout_s: float = 60.0,
        progress_every_s: float = 10.0,
        client_id: str | None = None,
    ) -> None:
        self.population = population
        self.timeline = timeline
        self.credentials = credentials
        self.broker = broker
        self.metrics_url = metrics_url
        self.progress = progress
        self.gateway_alive = gateway_alive or (lambda: True)
        self.drain_timeout_s = drain_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.progress_every_s = progress_every_s
        self.token = secrets.token_hex(4)
        self.client_id = client_id or f"poa-simulator-{self.token}"
        self.observations: list[Observation] = []
        self.published_ms: dict[str, int] = {}
        self.output_ids: set[str] = set()
        self.suppressed = 0
        self.forwarded = 0
        self.reports = 0
        self.unreadable = 0
        self.published = 0
        self.ad1s_sent = 0
        self.max_lag_ms = 0
        self._probes: dict[str, asyncio.Future[None]] = {}
        self._adapter = MqttAdapter(
            MqttSettings(
                host=broker.host,
                port=broker.port,
                client_id=self.client_id,
                reconnect_min_s=0.1,
                reconnect_max_s=1.0,
                protocol=broker.protocol,
            ),
            self._on_message,
        )

    # -- outputs ------------------------------------------------------------------------

    async def _on_message(self, topic: str, payload: bytes) -> None:
        received = _now_ms()
        try:
            if topic == TOPIC_DNO:
                alert = decode_dcc_alert(payload)
                if alert.code == PROBE_CODE:
                    probe = self._probes.get(alert.alert_id)
                    if probe is not None and not probe.done():
                        probe.set_result(None)
                    return
                self.forwarded += 1
                self._observed(alert.alert_id, "forwarded", received)
            elif topic == TOPIC_SUPPRESSED:
                record = decode_suppression_record(payload)
                self.suppressed += 1
                self._observed(record.alert_id, "suppressed", received)
            elif topic == TOPIC_REPORTS:
                self.reports += 1
        except WireError:
            self.unreadable += 1

    def _observed(self, alert_id: str, outcome: str, received: int) -> None:
        self.observations.append(
            Observation(alert_id, "forwarded" if outcome == "forwarded" else "suppressed", received)
        )
        self.output_ids.add(alert_id)

    # -- set-up -------------------------------------------------------------------------

    async def _connect(self) -> None:
        try:
            await asyncio.wait_for(self._adapter.connect(), timeout=15)
        except TimeoutError:
            raise SimulationError(f"cannot connect to the broker at {self.broker.url}") from None
        await self._adapter.subscribe([TOPIC_DNO, TOPIC_SUPPRESSED, TOPIC_REPORTS])

    async def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout_s
        while time.monotonic() < deadline:
            if not self.gateway_alive():
                raise SimulationError("the gateway exited before it was ready")
            with contextlib.suppress(OSError):
                if _gateway_up(await asyncio.to_thread(_fetch, self.metrics_url)):
                    return
            await asyncio.sleep(0.2)
        raise SimulationError(
            f"the gateway did not report poa_up 1 at {self.metrics_url} "
            f"within {self.ready_timeout_s:.0f} s"
        )

    async def _probe(self, timeout_s: float = 60.0) -> None:
        alert_id = f"sim-probe-{self.token}-{len(self._probes) + 1}"
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._probes[alert_id] = future
        now = _now_ms()
        envelope = DccAlertEnvelope(
            v=1,
            kind="dcc-alert",
            code=PROBE_CODE,
            alert_id=alert_id,
            device_id=bytes(8),
            raised_at=now,
            sent_at=now,
        )
        await self._adapter.publish(TOPIC_ALERT, encode(envelope))
        try:
            await asyncio.wait_for(future, timeout=timeout_s)
        except TimeoutError:
            raise SimulationError(
                f"the gateway did not forward a probe within {timeout_s:.0f} s"
            ) from None

    async def _publish_inventory(self) -> None:
        records = self.population.inventory_records()
        started = time.monotonic()
        for i in range(0, len(records), _INVENTORY_BATCH):
            batch = records[i : i + _INVENTORY_BATCH]
            await asyncio.gather(
                *(
                    self._adapter.publish(
                        TOPIC_INVENTORY,
                        encode(
                            InventoryEnvelope(
                                v=1,
                                kind="inventory",
                                device_id=r.device_id,
                                device_type=r.device_type,
                                smets=2 if r.smets == 2 else 1,
                                manufacturer=r.manufacturer,
                                model=r.model,
                                chf_id=r.chf_id,
                                status=r.status,
                                supplier_id=r.supplier_id,
                                mpan=r.mpan,
                            )
                        ),
                    )
                    for r in batch
                )
            )
        await self._probe()
        self.progress(
            f"inventory published: {len(records):,} devices in "
            f"{time.monotonic() - started:.1f} s, and taken in by the gateway"
        )

    # -- playing ------------------------------------------------------------------------

    async def _publish(self, event: Event, frames: FrameFactory) -> None:
        at = frames.real_ms(event.at_ms)
        if isinstance(event, Ad1Sent):
            sent = _now_ms()
            envelope = DccAlertEnvelope(
                v=1,
                kind="dcc-alert",
                code="AD1",
                alert_id=event.alert_id,
                device_id=event.chf,
                raised_at=frames.real_ms(event.raised_ms),
                sent_at=sent,
            )
            self.published_ms.setdefault(event.alert_id, sent)
            self.ad1s_sent += 0 if event.redelivery else 1
            await self._adapter.publish(TOPIC_ALERT, encode(envelope))
            return
        if isinstance(event, CommandSent):
            topic, frame = TOPIC_COMMAND, frames.command(event)
            request_id: str | None = frames.request_id(event)
        else:
            topic, request_id = TOPIC_INBOUND, None
            if isinstance(event, ResponseSent):
                frame = frames.response(event)
            elif isinstance(event, ActivationAlertSent):
                frame = frames.activation_alert(event)
            else:
                assert isinstance(event, RestorationSent)
                frame = frames.restoration(event)
        envelope_gbcs = GbcsEnvelope(
            v=1, kind="gbcs", frame=frame, sent_at=at, request_id=request_id
        )
        await self._adapter.publish(topic, encode(envelope_gbcs))

    def _status(self, frames: FrameFactory) -> str:
        sim = max(0, (_now_ms() - frames.t0_ms) * self.timeline.scale)
        minutes = sim // 60_000
        total_ad1 = len(self.timeline.truths)
        return (
            f"[sim {minutes // 60:d}h{minutes % 60:02d}] "
            f"events {self.published:,}/{len(self.timeline.events):,}; "
            f"AD1s sent {self.ad1s_sent}/{total_ad1}, suppressed {self.suppressed}, "
            f"forwarded {self.forwarded}; late by at most {self.max_lag_ms} ms"
        )

    async def _report_progress(self, frames: FrameFactory) -> None:
        while True:
            await asyncio.sleep(self.progress_every_s)
            self.progress(self._status(frames))
            if not self.gateway_alive():
                self.progress("the gateway process has exited")

    async def run(self) -> RunResult:
        """Play the whole timeline; see the module docstring."""
        try:
            await self._connect()
            await self._wait_ready()
            await self._publish_inventory()
            t0 = (_now_ms() // 1000 + 2) * 1000
            frames = FrameFactory(self.credentials, t0_ms=t0, scale=self.timeline.scale)
            real_s = self.timeline.end_ms / self.timeline.scale / 1000
            self.progress(
                f"playing {len(self.timeline.events):,} events: "
                f"{_clock(self.timeline.end_ms)} simulated in about {real_s:.0f} s"
            )
            reporter = asyncio.create_task(self._report_progress(frames))
            try:
                for event in self.timeline.events:
                    due = frames.real_ms(event.at_ms)
                    wait = due - _now_ms()
                    if wait > 0:
                        await asyncio.sleep(wait / 1000)
                    else:
                        self.max_lag_ms = max(self.max_lag_ms, -wait)
                    await self._publish(event, frames)
                    self.published += 1
                await self._drain()
            finally:
                reporter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await reporter
            self.progress(self._status(frames))
            accepted: dict[str, int] | None = None
            refusals: dict[str, int] | None = None
            evidence: tuple[int, int] | tuple[None, None] = (None, None)
            with contextlib.suppress(OSError):
                exposition = await asyncio.to_thread(_fetch, self.metrics_url)
                accepted, refusals = command_counts(exposition)
                evidence = evidence_counts(exposition)
            return RunResult(
                observations=tuple(self.observations),
                published_ms=dict(self.published_ms),
                accepted=accepted,
                refusals=refusals,
                t0_ms=t0,
                seconds=(_now_ms() - t0) / 1000,
                max_lag_ms=self.max_lag_ms,
                reports=self.reports,
                events=self.published,
                restorations_in_window=evidence[0],
                near_misses=evidence[1],
            )
        finally:
            with contextlib.suppress(Exception):
                await self._adapter.close()

    async def _drain(self) -> None:
        expected = {t.alert_id for t in self.timeline.truths}
        deadline = time.monotonic() + self.drain_timeout_s
        while time.monotonic() < deadline and not expected <= self.output_ids:
            if not self.gateway_alive():
                break
            await asyncio.sleep(0.05)
        missing = len(expected - self.output_ids)
        if missing:
            self.progress(f"{missing} AD1(s) still without output after the drain timeout")
        # A moment more for duplicates that may trail the last first output.
        await asyncio.sleep(0.5)


# -- one command: population, home, gateway, run, scorecard ----------------------------


class SimulationOptions(msgspec.Struct, frozen=True, kw_only=True):
    """Everything ``poa-gateway simulate`` asks for."""

    broker: BrokerAddress
    premises: int = 10_000
    scale: int = 60
    seed: int = 1
    duration_ms: int = 2 * HOUR_MS
    home: Path | None = None
    """Where to write the gateway's home; a new temporary folder when None."""
    gateway_command: tuple[str, ...] | None = tuple(default_gateway_command())
    """Command that runs ``poa-gateway`` (``run --config FILE`` is added); None when a
    gateway is already running (``--no-gateway``)."""
    window_override_ms: int | None = None
    """Misconfigure the gateway's window (simulated ms)."""
    empty_guid_list: bool = False
    """Give the gateway an empty GUID list."""
    restoration_on_reboot: bool = False
    """Meters send an ECS80 restoration alert after every firmware reboot, against FIA
    assumption A5 (by default they send none, as A5 says)."""
    drain_timeout_s: float = 20.0
    ready_timeout_s: float | None = None
    """How long to wait for the gateway: 60 s for one we start, 10 minutes otherwise."""


class SimulationOutcome(msgspec.Struct, frozen=True, kw_only=True):
    """A finished simulation: the scorecard and where everything is."""

    scorecard: Scorecard
    home: GatewayHome
    result: RunResult
    gateway_exit: int | None


def _check_broker(broker: BrokerAddress) -> None:
    # Before starting a gateway: one that cannot reach its broker retries for ever.
    try:
        with socket.create_connection((broker.host, broker.port), timeout=5):
            pass
    except OSError as exc:
        raise SimulationError(f"cannot reach the broker at {broker.url}: {exc}") from exc


def _prepare_home(path: Path | None) -> Path:
    if path is None:
        return Path(tempfile.mkdtemp(prefix="poa-sim-"))
    if path.exists() and any(path.iterdir()):
        # A previous run's state would hold its replay counters, and every command of
        # this run would be refused as a replay.
        raise SimulationError(f"{path}: the home folder must be new or empty")
    path.mkdir(parents=True, exist_ok=True)
    return path


async def simulate(
    options: SimulationOptions, progress: Progress, *, check_broker: bool = True
) -> SimulationOutcome:
    """Build the estate and the timeline, write the gateway's home, start the gateway
    (unless one is running), play the run and score it.

    ``check_broker``: first make sure something listens at the broker's address (off for
    the embedded broker, which is known to: amqtt leaks the socket of a connection that
    closes before its first byte).

    Raises:
        SimulationError: the run could not be played.
    """
    started = time.monotonic()
    if check_broker:
        await asyncio.to_thread(_check_broker, options.broker)
    population = build_population(options.premises, seed=options.seed)
    timeline = build_timeline(
        population,
        seed=options.seed,
        scale=options.scale,
        params=TimelineParams(
            duration_ms=options.duration_ms,
            restoration_on_reboot=options.restoration_on_reboot,
        ),
    )
    counts = population.counts()
    progress(
        f"population: {len(population):,} premises ({counts['listed']:,} covered Landis+Gyr "
        f"SMETS2 on the GUID list, {counts['other-make']:,} other makes, "
        f"{counts['smets1']:,} SMETS1, {counts['lg-not-on-guid-list']:,} Landis+Gyr not on "
        f"the list; {counts['skewed-clock']:,} with a skewed clock, "
        f"{counts['registered-supplier']:,} with a registered supplier)"
    )
    causes = timeline.causes()
    progress(
        "timeline: "
        + ", ".join(f"{n} {cause}" for cause, n in sorted(causes.items()))
        + f" AD1s; {sum(timeline.expected_results.values())} commands accepted, "
        f"{sum(timeline.expected_refusals.values())} to be refused"
    )
    home_dir = _prepare_home(options.home)
    credentials = await asyncio.to_thread(Credentials.generate, timeline.responders())
    home = await asyncio.to_thread(
        write_gateway_home,
        population,
        home_dir,
        credentials=credentials,
        broker=options.broker,
        scale=options.scale,
        window_override_ms=options.window_override_ms,
        empty_guid_list=options.empty_guid_list,
        client_id=f"poa-gateway-sim-{secrets.token_hex(4)}",
    )
    progress(f"gateway home written to {home.root} in {time.monotonic() - started:.1f} s")
    gateway: GatewayProcess | None = None
    if options.gateway_command is not None:
        gateway = GatewayProcess(options.gateway_command, home.config, home.log)
        gateway.start()
        progress(f"gateway started (log: {home.log})")
    else:
        progress(f"waiting for a gateway: poa-gateway run --config {home.config}")
    runner = Runner(
        population,
        timeline,
        credentials,
        broker=options.broker,
        metrics_url=home.metrics_url,
        progress=progress,
        gateway_alive=(lambda: gateway.alive) if gateway is not None else None,
        drain_timeout_s=options.drain_timeout_s,
        ready_timeout_s=options.ready_timeout_s or (60.0 if gateway is not None else 600.0),
    )
    try:
        result = await runner.run()
    except SimulationError as exc:
        if gateway is not None and not gateway.alive:
            raise SimulationError(f"{exc}; the gateway's log ends:\n{gateway.tail()}") from exc
        raise
    finally:
        exit_code = await asyncio.to_thread(gateway.stop, 15.0) if gateway is not None else None
    notes = []
    if options.window_override_ms is not None:
        window = format_duration(options.window_override_ms)
        notes.append(
            f"gateway misconfigured on purpose: window {window} "
            f"(MP102B: {format_duration(timeline.params.window_ms)})"
        )
    if options.empty_guid_list:
        notes.append("gateway misconfigured on purpose: empty GUID list")
    if options.restoration_on_reboot:
        notes.append("meters send a restoration alert after every firmware reboot (against A5)")
    if result.refusals is None:
        notes.append(f"could not read the gateway's metrics at {home.metrics_url}")
    if exit_code not in (None, 0):
        notes.append(f"the gateway exited with status {exit_code}")
    title = (
        f"poa-gateway simulation: {len(population):,} premises, seed {options.seed}, "
        f"{format_duration(options.duration_ms)} simulated at scale {options.scale} "
        f"in {result.seconds:.0f} s"
    )
    scorecard = compute(
        timeline.truths,
        result.observations,
        result.published_ms,
        refusals=result.refusals,
        expected_refusals=timeline.expected_refusals,
        accepted=result.accepted,
        expected_accepted=timeline.expected_results,
        title=title,
        notes=notes,
        evidence=Evidence(
            restorations_in_window=result.restorations_in_window,
            expected_restorations_in_window=timeline.expected_restorations_in_window,
            near_misses=result.near_misses,
            expected_near_misses=timeline.expected_near_misses(),
            near_miss_ms=timeline.params.near_miss_ms,
        ),
    )
    return SimulationOutcome(scorecard=scorecard, home=home, result=result, gateway_exit=exit_code)
