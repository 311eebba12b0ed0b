"""Prometheus metrics: names and labels in the exposition, and the HTTP endpoint."""

from __future__ import annotations

import platform
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway import __version__
from gateway.core.events import AlertOutcome, AlertReason, IgnoredReason, OutcomeKind, RefusalReason
from gateway.metrics import Metrics
from gateway.wire import WireReason


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def test_counters_appear_in_the_exposition_with_their_labels() -> None:
    metrics = Metrics()
    metrics.count_alert(AlertOutcome.SUPPRESSED, AlertReason.INSIDE_WINDOW)
    metrics.count_alert(AlertOutcome.SUPPRESSED, AlertReason.INSIDE_WINDOW)
    metrics.count_alert(AlertOutcome.REJECTED, WireReason.BAD_CBOR)
    metrics.count_command_tracked("on-demand", replaced=False)
    metrics.count_device_outcome(OutcomeKind.CLOSED_EARLY)
    metrics.count_restoration_alert(in_window=True)
    metrics.count_decode_error("csp/dcc/alert", WireReason.BAD_CBOR)
    metrics.mqtt_reconnects.inc()
    metrics.reports.inc()
    metrics.suppression_records.inc(3)
    got = samples(metrics)
    assert got[("poa_alerts_total", (("outcome", "suppressed"), ("reason", "inside-window")))] == 2
    assert got[("poa_alerts_total", (("outcome", "rejected"), ("reason", "bad-cbor")))] == 1
    assert got[("poa_commands_total", (("reason", "on-demand"), ("result", "tracked")))] == 1
    assert got[("poa_device_outcomes_total", (("kind", "closed-early"),))] == 1
    assert got[("poa_restoration_alerts_total", (("in_window", "true"),))] == 1
    assert got[("poa_restoration_alerts_total", (("in_window", "false"),))] == 0
    assert (
        got[("poa_decode_errors_total", (("reason", "bad-cbor"), ("topic", "csp/dcc/alert")))] == 1
    )
    assert got[("poa_mqtt_reconnects_total", ())] == 1
    assert got[("poa_reports_total", ())] == 1
    assert got[("poa_suppression_records_total", ())] == 3


def test_known_label_values_start_at_zero() -> None:
    got = samples(Metrics())
    assert got[("poa_alerts_total", (("outcome", "forwarded"), ("reason", "no-window")))] == 0
    assert got[("poa_commands_total", (("reason", "replay"), ("result", "refused")))] == 0
    for kind in OutcomeKind:
        assert got[("poa_device_outcomes_total", (("kind", kind.value),))] == 0


def test_gauges_and_the_latency_histogram_are_exposed() -> None:
    metrics = Metrics()
    metrics.set_windows(active=3, pending=4)
    metrics.inflight_publishes.set(7)
    metrics.inbound_in_progress.set(9)
    metrics.up.set(1)
    metrics.ack_latency.observe(0.0004)
    metrics.ack_latency.observe(0.2)
    got = samples(metrics)
    assert got[("poa_windows_active", ())] == 3
    assert got[("poa_windows_pending", ())] == 4
    assert got[("poa_tracked_activations", ())] == 7
    assert got[("poa_inflight_publishes", ())] == 7
    assert got[("poa_inbound_in_progress", ())] == 9
    assert got[("poa_up", ())] == 1
    assert got[("poa_ack_latency_seconds_bucket", (("le", "0.0005"),))] == 1
    assert got[("poa_ack_latency_seconds_bucket", (("le", "0.25"),))] == 2
    assert got[("poa_ack_latency_seconds_bucket", (("le", "5.0"),))] == 2
    assert got[("poa_ack_latency_seconds_count", ())] == 2


def test_build_info_is_one_with_the_version_and_python_as_labels() -> None:
    got = samples(Metrics())
    labels = (("python", platform.python_version()), ("version", __version__))
    assert got[("poa_build_info", labels)] == 1
    assert [key for key in got if key[0] == "poa_build_info"] == [("poa_build_info", labels)]


def test_import_and_report_timestamps_are_zero_until_set() -> None:
    metrics = Metrics()
    got = samples(metrics)
    assert got[("poa_guid_list_imported_timestamp_seconds", ())] == 0
    assert got[("poa_report_last_written_timestamp_seconds", ())] == 0
    metrics.guid_list_imported.set(1_900_000_000.123)
    metrics.report_last_written.set(1_900_003_600.5)
    got = samples(metrics)
    assert got[("poa_guid_list_imported_timestamp_seconds", ())] == 1_900_000_000.123
    assert got[("poa_report_last_written_timestamp_seconds", ())] == 1_900_003_600.5


def test_no_created_series_anywhere_in_the_exposition() -> None:
    metrics = Metrics()
    metrics.count_alert(AlertOutcome.REJECTED, WireReason.BAD_CBOR)
    metrics.count_decode_error("csp/dcc/alert", WireReason.BAD_CBOR)
    metrics.count_quarantined("csp/dcc/alert", "KeyError")
    metrics.mqtt_reconnects.inc()
    metrics.ack_latency.observe(0.01)
    text = metrics.render().decode()
    assert "poa_alerts_total" in text
    assert "_created" not in text
    names = {name for name, _ in samples(metrics)}
    assert not {name for name in names if name.endswith("_created")}


def test_label_values_outside_the_fixed_sets_are_refused() -> None:
    metrics = Metrics()
    with pytest.raises(ValueError, match="outcome"):
        metrics.count_alert("dropped", "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reason"):
        metrics.count_alert(AlertOutcome.FORWARDED, "x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="refusal"):
        metrics.count_command_refused("ignored")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        metrics.count_command_tracked("x", replaced=False)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="IgnoredReason"):
        metrics.count_frame_ignored("t", 0x0015, "x")  # type: ignore[arg-type]


def test_commands_are_counted_by_result_and_reason() -> None:
    metrics = Metrics()
    metrics.count_command_refused(RefusalReason.REPLAY)
    metrics.count_command_tracked("future-dated", replaced=True)
    metrics.count_command_cancelled()
    got = samples(metrics)
    assert got[("poa_commands_total", (("reason", "replay"), ("result", "refused")))] == 1
    assert got[("poa_commands_total", (("reason", "future-dated"), ("result", "replaced")))] == 1
    assert got[("poa_commands_total", (("reason", "cancellation"), ("result", "cancelled")))] == 1


def test_ignored_frames_are_labelled_by_message_code_and_unknown_codes_share_one() -> None:
    metrics = Metrics()
    topic = "dsp/gbcs/command"
    metrics.count_frame_ignored(topic, 0x0015, IgnoredReason.NOT_CS06)  # CS11
    metrics.count_frame_ignored(topic, 0xFFF0, IgnoredReason.NOT_CS06)
    metrics.count_frame_ignored(topic, 0xFFF1, IgnoredReason.NOT_CS06)
    got = samples(metrics)
    labels = (("message_code", "0x0015"), ("reason", "not-cs06"), ("topic", topic))
    assert got[("poa_frames_ignored_total", labels)] == 1
    labels = (("message_code", "other"), ("reason", "not-cs06"), ("topic", topic))
    assert got[("poa_frames_ignored_total", labels)] == 2


def test_the_label_vocabularies_keep_their_public_values() -> None:
    # Logs and metrics are a public contract (docs/operations.md lists these values).
    assert [r.value for r in AlertReason] == [
        "inside-window",
        "no-window",
        "not-ad1",
        "feature-off",
        "quarantined",
        "redelivered",
    ]
    assert [o.value for o in AlertOutcome] == ["forwarded", "suppressed", "duplicate", "rejected"]
    assert [r.value for r in IgnoredReason] == [
        "not-cs06",
        "not-a-command",
        "command-on-inbound",
        "not-handled",
    ]


def test_labelled_metrics_are_counted_only_through_the_metrics_api() -> None:
    # One API: a module other than metrics.py that calls labels() bypasses the checked
    # vocabularies and the kept children.
    package = Path(__file__).resolve().parent.parent / "gateway"
    offenders = [
        str(path.relative_to(package))
        for path in sorted(package.rglob("*.py"))
        if path.name != "metrics.py" and re.search(r"\.labels\(", path.read_text())
    ]
    assert offenders == []


def test_two_instances_do_not_share_a_registry() -> None:
    first, second = Metrics(), Metrics()
    first.mqtt_reconnects.inc()
    assert samples(second)[("poa_mqtt_reconnects_total", ())] == 0


def test_serve_answers_http_get_with_the_metrics_then_closes() -> None:
    metrics = Metrics()
    metrics.count_alert(AlertOutcome.FORWARDED, AlertReason.NO_WINDOW)
    with metrics.serve("127.0.0.1", 0) as server:
        assert server.port > 0
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            assert response.status == 200
            body = response.read().decode()
    assert 'poa_alerts_total{outcome="forwarded",reason="no-window"} 1.0' in body
    assert "poa_ack_latency_seconds_bucket" in body
    with pytest.raises(urllib.error.URLError, match="refused"), urllib.request.urlopen(url):
        pass


def test_a_near_miss_is_counted_with_its_gap() -> None:
    metrics = Metrics()
    assert samples(metrics)[("poa_near_miss_total", ())] == 0
    metrics.count_near_miss(90_000)  # 1.5 min after the window ended
    metrics.count_near_miss(600_000)
    got = samples(metrics)
    assert got[("poa_near_miss_total", ())] == 2
    assert got[("poa_near_miss_gap_seconds_count", ())] == 2
    assert got[("poa_near_miss_gap_seconds_sum", ())] == 690
    assert got[("poa_near_miss_gap_seconds_bucket", (("le", "60.0"),))] == 0
    assert got[("poa_near_miss_gap_seconds_bucket", (("le", "120.0"),))] == 1
    assert got[("poa_near_miss_gap_seconds_bucket", (("le", "600.0"),))] == 2
    with pytest.raises(ValueError, match="negative"):
        metrics.count_near_miss(-1)
