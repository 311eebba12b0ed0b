"""Prometheus metrics: what the gateway counts, and what to alert on.

:class:`Metrics` owns its own ``CollectorRegistry`` (never the global one), so tests and
several instances in one process do not collide. Label values that are known in
advance are created at zero, so that ``rate()`` and ``increase()`` see a series from the
first scrape rather than only after the first event.

The alerts on these metrics are ``systemd/poa-gateway.rules.yml`` and the dashboard is
``systemd/poa-gateway-dashboard.json`` (docs/operations.md, "Metrics and alerts");
``tests/test_observability.py`` checks that every metric they query is served here. Each
metric's help text says what to watch for.

Timestamps follow Prometheus's convention (``*_timestamp_seconds``, Unix seconds, 0 for
"never"), so that an age is ``time() - metric`` and "never" is told apart by ``== 0``.
"""

from __future__ import annotations

import platform
from typing import Final, get_args

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
    start_http_server,
)

from gbcs import GbcsReason, MessageCode

from . import __version__
from .core.events import (
    AlertOutcome,
    AlertReason,
    CommandOutcome,
    IgnoredReason,
    OutcomeKind,
    RefusalReason,
)
from .ha import LossReason
from .state.inventory import InventoryReason
from .wire import ActivationKind, WireReason

__all__ = ["ACK_LATENCY_BUCKETS", "NEAR_MISS_GAP_BUCKETS", "Metrics", "MetricsServer"]

# The reason label of a cancelled command (a refused one has its RefusalReason, a tracked
# one its activation's kind).
_CANCELLATION: Final = "cancellation"
_ACTIVATION_KINDS: Final[frozenset[str]] = frozenset(get_args(ActivationKind))
_ALERT_OUTCOMES: Final[frozenset[str]] = frozenset(AlertOutcome)
_ALERT_REASONS: Final[frozenset[str]] = frozenset((*AlertReason, *WireReason))
_REFUSALS: Final[frozenset[str]] = frozenset(RefusalReason)

ACK_LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)
"""Buckets of ``poa_ack_latency_seconds``: half a millisecond to five seconds."""

NEAR_MISS_GAP_BUCKETS: Final = (15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0, 1800.0, 3600.0)
"""Buckets of ``poa_near_miss_gap_seconds``: 15 s to an hour (reports.near_miss is 15
minutes by default; the longer buckets serve a longer setting)."""


class MetricsServer:
    """The HTTP endpoint serving ``/metrics`` from its own thread; close it to stop."""

    def __init__(self, host: str, port: int, registry: CollectorRegistry) -> None:
        self._server, self._thread = start_http_server(port, host, registry=registry)
        self.host = host
        self.port: int = self._server.server_port
        """The bound port (the one chosen by the system when asked for port 0)."""

    def close(self) -> None:
        """Stop serving and release the port. Blocks for up to about half a second
        (the server's poll interval): from asyncio, call it via ``asyncio.to_thread``."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


class Metrics:
    """Every metric of the gateway, in a registry of its own.

    One API: a metric with labels is counted only through its ``count_*`` method, which
    takes the label values as the enums of their vocabulary (:class:`AlertOutcome`,
    :class:`AlertReason`, :class:`RefusalReason` ...), refuses a value outside it, and
    keeps each labelled child (``labels()`` costs a lock and a dict lookup per call; the
    alert path counts every alert). A metric without labels is a public attribute, for
    the daemon to ``inc()``, ``set()`` or ``observe()`` directly.
    """

    def __init__(self) -> None:
        # No ``*_created`` series: prometheus_client adds one per counter and histogram
        # child (its creation time), which Prometheus stores as a series of its own that
        # no rule or panel uses, doubling the series count. The switch is process-global
        # (prometheus_client has none per registry), so it is flipped where our registry
        # is made; the daemon serves no other registry for it to affect.
        disable_created_metrics()  # type: ignore[no-untyped-call]  # unannotated in 0.26
        self.registry = CollectorRegistry()
        reg = self.registry

        self.alerts = Counter(
            "poa_alerts_total",
            "DCC alerts handled, by outcome (forwarded, suppressed, duplicate, rejected) and "
            "reason. Alert on any 'rejected' (alerts we could not read are forwarded "
            "unjudged or lost), and compare suppressed with the expected activation volume.",
            ["outcome", "reason"],
            registry=reg,
        )
        self.commands = Counter(
            "poa_commands_total",
            "CS06 Activate Firmware commands seen, by result (tracked, replaced, "
            'cancelled, refused) and reason. A rise in refused{reason="untrusted-signer"} '
            'or "bad-signature" means the trust store is stale.',
            ["result", "reason"],
            registry=reg,
        )
        self.device_outcomes = Counter(
            "poa_device_outcomes_total",
            "CS06 responses and 0x00CA alerts applied to tracked activations, by kind. "
            "A high share of 'ignored' means responses arrive for commands we never saw.",
            ["kind"],
            registry=reg,
        )
        self.restoration_alerts = Counter(
            "poa_restoration_alerts_total",
            "ECS80 power restoration alerts (never suppressed), by whether they came while a "
            "window of their hub was open (true/false). FIA assumption A5: Landis+Gyr meters "
            'send none during an activation, so in_window="true" is evidence against A5, or '
            "a real outage inside a window whose AD1 was suppressed: look at each one.",
            ["in_window"],
            registry=reg,
        )
        self.near_misses = Counter(
            "poa_near_miss_total",
            "AD1s forwarded (no window) at most reports.near_miss after a window of the same "
            "hub ran its course: reboots that may have outlasted the window. A rising share "
            "of the suppressed count says the window is too short for the meters' flash.",
            registry=reg,
        )
        self.near_miss_gap = Histogram(
            "poa_near_miss_gap_seconds",
            "For each near miss (poa_near_miss_total), the time from the end of the window "
            "to the AD1's judged instant.",
            buckets=NEAR_MISS_GAP_BUCKETS,
            registry=reg,
        )
        self.decode_errors = Counter(
            "poa_decode_errors_total",
            "Messages dropped because they could not be decoded, by topic and reason. "
            "Alert on any sustained rate: a peer sends what we cannot read.",
            ["topic", "reason"],
            registry=reg,
        )
        self.mqtt_reconnects = Counter(
            "poa_mqtt_reconnects_total",
            "Reconnections to the MQTT broker. Alert on a sustained rate (flapping link).",
            registry=reg,
        )
        self.reports = Counter(
            "poa_reports_total",
            "Suppression report files written for the DNOs. Alert if it stops rising "
            "while poa_suppression_records_total rises.",
            registry=reg,
        )
        self.suppression_records = Counter(
            "poa_suppression_records_total",
            "Records written to the suppression log (one per suppressed alert).",
            registry=reg,
        )

        self.windows_active = Gauge(
            "poa_windows_active",
            "Suppression windows running now.",
            registry=reg,
        )
        self.windows_pending = Gauge(
            "poa_windows_pending",
            "Future-dated activations whose window has not started yet.",
            registry=reg,
        )
        self.tracked_activations = Gauge(
            "poa_tracked_activations",
            "Activations tracked (active plus pending). Memory grows with it: alert well "
            "above the largest planned firmware campaign.",
            registry=reg,
        )
        self.inflight_publishes = Gauge(
            "poa_inflight_publishes",
            "Publishes awaiting the broker's acknowledgement. Alert when it stays at "
            "broker.inflight: output is backing up.",
            registry=reg,
        )
        self.inbound_in_progress = Gauge(
            "poa_inbound_in_progress",
            "Messages received and not yet acknowledged. At broker.receive_maximum the "
            "gateway stops reading; staying there means its effects do not complete.",
            registry=reg,
        )
        self.up = Gauge(
            "poa_up",
            "1 while the gateway is connected to the broker and handling messages, else 0. "
            "Alert when 0 (or absent) for more than 2 minutes: AD1 alerts are not flowing.",
            registry=reg,
        )
        self.quarantined = Counter(
            "poa_quarantined_total",
            "Messages whose handling raised on every attempt, kept with their bytes "
            "(poa-gateway quarantine list) and acknowledged, by topic and reason (the "
            "exception's class). A DCC alert among them was still forwarded. Alert on any: "
            "each one is a bug or an input nobody planned for.",
            ["topic", "reason"],
            registry=reg,
        )
        self.frames_ignored = Counter(
            "poa_frames_ignored_total",
            "GBCS frames read and not acted on, by topic, message code (0xNNNN, or 'other' "
            "for codes GBCS does not define) and reason (not-cs06, not-a-command, "
            "command-on-inbound, not-handled). A CS06 counted here went to the wrong topic.",
            ["topic", "message_code", "reason"],
            registry=reg,
        )
        self.leader = Gauge(
            "poa_leader",
            "1 while this instance holds the leader lease (PostgreSQL state, docs/ha.md) or "
            "runs alone on SQLite, 0 while it waits as a standby. Across the instances of "
            "a deployment exactly one should say 1: alert when the sum is not 1.",
            registry=reg,
        )
        self.lease_epoch = Gauge(
            "poa_lease_epoch",
            "The epoch of the leader lease this instance last held (0: never). It grows by "
            "one at every change of leader: its rate counts failovers.",
            registry=reg,
        )
        self.stepped_down = Counter(
            "poa_stepped_down_total",
            "Times this instance lost the leader lease while leading, by reason (taken, "
            "deadline, fenced). Each is a failover: find out why.",
            ["reason"],
            registry=reg,
        )
        self.store_ok = Gauge(
            "poa_store_ok",
            "1 while the state store commits, 0 while its commits fail (a full disk, an I/O "
            "error). While 0, intake is held and nothing is acknowledged: alert at once.",
            registry=reg,
        )
        self.store_commit_failures = Counter(
            "poa_store_commit_failures_total",
            "Group commits of the state store that failed (each retried until one succeeds).",
            registry=reg,
        )
        self.housekeeping_failures = Counter(
            "poa_housekeeping_failures_total",
            "Passes of housekeeping (window expiry, report rotation, gauges) that failed; "
            "the next pass runs all the same. Alert on any.",
            registry=reg,
        )
        self.build_info = Gauge(
            "poa_build_info",
            "Always 1; its labels are the gateway's version and the Python it runs on. "
            "Join on it to see which version produced a series.",
            ["version", "python"],
            registry=reg,
        )
        self.guid_list_imported = Gauge(
            "poa_guid_list_imported_timestamp_seconds",
            "When the GUID list in use was imported (poa-gateway guids import), in Unix "
            "seconds; 0 while the gateway runs without one (nothing is suppressed). The list "
            "is read at start: a newer import counts after a restart.",
            registry=reg,
        )
        self.report_last_written = Gauge(
            "poa_report_last_written_timestamp_seconds",
            "When this process last wrote a suppression report file, in Unix seconds; 0 "
            "until its first. One is due every reports.period: alert when "
            "time() - this exceeds two periods.",
            registry=reg,
        )
        self.ack_latency = Histogram(
            "poa_ack_latency_seconds",
            "Time from receiving a message to acknowledging it. Alert when the 99th "
            "percentile exceeds 1 s: the gateway is falling behind.",
            buckets=ACK_LATENCY_BUCKETS,
            registry=reg,
        )

        self.store_ok.set(1)
        self.build_info.labels(__version__, platform.python_version()).set(1)
        # Labelled children, kept: (label values) -> child.
        self._alerts: dict[tuple[str, str], Counter] = {}
        self._commands: dict[tuple[str, str], Counter] = {}
        self._device_outcomes: dict[str, Counter] = {}
        self._restoration_alerts: dict[bool, Counter] = {}
        self._decode_errors: dict[tuple[str, str], Counter] = {}
        self._frames_ignored: dict[tuple[str, int, str], Counter] = {}
        self._quarantined: dict[tuple[str, str], Counter] = {}
        # Series known in advance start at zero.
        for reason in (AlertReason.NO_WINDOW, AlertReason.NOT_AD1, AlertReason.FEATURE_OFF):
            self._alert_child(AlertOutcome.FORWARDED, reason)
        self._alert_child(AlertOutcome.SUPPRESSED, AlertReason.INSIDE_WINDOW)
        for refusal in RefusalReason:
            self._command_child(CommandOutcome.REFUSED, refusal)
        for kind in OutcomeKind:
            self._device_outcomes[kind] = self.device_outcomes.labels(kind.value)
        for in_window in (True, False):
            self._restoration_alerts[in_window] = self.restoration_alerts.labels(
                "true" if in_window else "false"
            )

    # -- counting, with checked labels ----------------------------------------------

    def count_alert(self, outcome: AlertOutcome, reason: AlertReason | WireReason) -> None:
        """Count one DCC alert: its outcome, and the decision's reason (the wire's reason
        for a rejected alert). Raises ValueError for a value outside the vocabularies."""
        child = self._alerts.get((outcome, reason))
        if child is None:
            child = self._alert_child(outcome, reason)
        child.inc()

    def _alert_child(self, outcome: AlertOutcome, reason: AlertReason | WireReason) -> Counter:
        if outcome not in _ALERT_OUTCOMES:
            raise ValueError(f"unknown alert outcome {outcome!r}")
        if reason not in _ALERT_REASONS:
            raise ValueError(f"unknown alert reason {reason!r}")
        child = self._alerts[(outcome, reason)] = self.alerts.labels(str(outcome), str(reason))
        return child

    def count_command_refused(self, reason: RefusalReason) -> None:
        """Count one CS06 command refused, with the engine's reason."""
        self._count_command(CommandOutcome.REFUSED, reason)

    def count_command_tracked(self, kind: ActivationKind, *, replaced: bool) -> None:
        """Count one CS06 command that opened (or scheduled) a window, by the activation's
        kind; ``replaced`` when it replaced the ESME's pending activation."""
        if kind not in _ACTIVATION_KINDS:
            raise ValueError(f"unknown activation kind {kind!r}")
        self._count_command(CommandOutcome.REPLACED if replaced else CommandOutcome.TRACKED, kind)

    def count_command_cancelled(self) -> None:
        """Count one CS06 cancellation accepted."""
        self._count_command(CommandOutcome.CANCELLED, _CANCELLATION)

    def _count_command(self, result: CommandOutcome, reason: str) -> None:
        child = self._commands.get((result, reason))
        if child is None:
            child = self._command_child(result, reason)
        child.inc()

    def _command_child(self, result: CommandOutcome, reason: str) -> Counter:
        if result is CommandOutcome.REFUSED and reason not in _REFUSALS:
            raise ValueError(f"unknown refusal reason {reason!r}")
        child = self._commands[(result, reason)] = self.commands.labels(str(result), str(reason))
        return child

    def count_device_outcome(self, kind: OutcomeKind) -> None:
        """Count one device outcome applied by the engine."""
        self._device_outcomes[OutcomeKind(kind)].inc()

    def count_restoration_alert(self, *, in_window: bool) -> None:
        """Count one ECS80 power restoration alert."""
        self._restoration_alerts[bool(in_window)].inc()

    def count_near_miss(self, gap_ms: int) -> None:
        """Count one near miss: an AD1 forwarded ``gap_ms`` after a window of its hub
        ended. Raises ValueError for a negative gap."""
        if gap_ms < 0:
            raise ValueError(f"a near miss's gap cannot be negative: {gap_ms} ms")
        self.near_misses.inc()
        self.near_miss_gap.observe(gap_ms / 1000)

    def count_decode_error(
        self, topic: str, reason: WireReason | GbcsReason | InventoryReason
    ) -> None:
        """Count one message dropped as undecodable; ``reason`` is the stable code of the
        error that refused it (:class:`WireReason`, :class:`~gbcs.GbcsReason` or
        :class:`~gateway.state.inventory.InventoryReason`)."""
        child = self._decode_errors.get((topic, reason))
        if child is None:
            child = self._decode_errors[(topic, reason)] = self.decode_errors.labels(
                topic, str(reason)
            )
        child.inc()

    def count_frame_ignored(self, topic: str, message_code: int, reason: IgnoredReason) -> None:
        """Count one GBCS frame read and not acted on. The message code is labelled
        ``0xNNNN``, or ``other`` for a code GBCS does not define: a label per unknown
        code would let a sender grow the series without bound."""
        key = (topic, message_code, reason)
        child = self._frames_ignored.get(key)
        if child is None:
            reason = IgnoredReason(reason)
            try:
                label = f"0x{MessageCode(message_code).value:04X}"
            except ValueError:
                label = "other"
            child = self._frames_ignored[key] = self.frames_ignored.labels(
                topic, label, reason.value
            )
        child.inc()

    def count_quarantined(self, topic: str, reason: str) -> None:
        """Count one message quarantined; ``reason`` is the class name of the exception
        its handling raised (the quarantine entry's reason: not a fixed vocabulary)."""
        child = self._quarantined.get((topic, reason))
        if child is None:
            child = self._quarantined[(topic, reason)] = self.quarantined.labels(topic, reason)
        child.inc()

    def count_stepped_down(self, reason: LossReason) -> None:
        """Count one loss of the leader lease while leading."""
        if reason not in LossReason:
            raise ValueError(f"not a LossReason: {reason!r}")
        self.stepped_down.labels(reason.value).inc()

    def set_windows(self, *, active: int, pending: int, ended: int = 0) -> None:
        """Set the window gauges from the engine's counts (``ended``: ended windows kept
        for late alerts, counted among the tracked activations)."""
        self.windows_active.set(active)
        self.windows_pending.set(pending)
        self.tracked_activations.set(active + pending + ended)

    # -- exposition -------------------------------------------------------------------

    def render(self) -> bytes:
        """The metrics in the Prometheus text exposition format."""
        return generate_latest(self.registry)

    def serve(self, host: str, port: int) -> MetricsServer:
        """Serve ``/metrics`` over HTTP on ``host:port`` from a daemon thread.

        Raises:
            OSError: the address cannot be bound (in use, no such interface).
        """
        return MetricsServer(host, port, self.registry)
