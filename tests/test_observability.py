"""The alert rules and the Grafana dashboard shipped in systemd/: well formed, and querying
only metrics that the daemon's ``/metrics`` serves (scraped from a real Metrics server).

promtool (Debian: ``apt-get install prometheus``) checks the rules and runs unit tests of
the alerts that involve time; those tests are skipped, saying so, where it is missing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from gateway.config import load_config
from gateway.guids import write_guid_list
from gateway.metrics import Metrics

from .conftest import ROOT
from .e2e_support import ESME, Broker, Home, now_ms
from .test_faults import in_process, sample, until

RULES = ROOT / "systemd" / "poa-gateway.rules.yml"
DASHBOARD = ROOT / "systemd" / "poa-gateway-dashboard.json"
SEVERITIES = frozenset({"critical", "warning", "info"})
DATASOURCE = "${DS_PROMETHEUS}"

# What a family of each type exposes beside (or instead of) its own name.
_SUFFIXES = {
    "counter": ("_total",),
    "histogram": ("_bucket", "_count", "_sum"),
    "summary": ("", "_count", "_sum"),
}


def _promtool() -> str | None:
    found = shutil.which("promtool")
    if found is None and os.access("/usr/bin/promtool", os.X_OK):
        found = "/usr/bin/promtool"
    return found


PROMTOOL = _promtool()
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool not found (Debian: apt-get install prometheus): the rules and the "
    "dashboard's queries are checked by the pure-Python tests only",
)


# -- PromQL: which metrics does an expression read? -------------------------------------

_TOKENS = re.compile(
    r"""
      (?P<skip>"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`   # strings
        |\{[^}]*\}                                          # label matchers
        |\[[^\]]*\]                                         # ranges, subqueries
        |\s+)
    | (?P<number>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?(?:ms|[smhdwy])*)  # 0.99, 5m
    | (?P<variable>\$\{?\w+\}?)                             # a Grafana variable
    | (?P<name>[A-Za-z_:][\w:]*)
    | (?P<other>.)
    """,
    re.VERBOSE | re.DOTALL,
)
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "inf", "nan", "atan2"})
# Followed by a parenthesised list of label names, not of expressions.
_LABEL_LISTS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})


def metric_names(expr: str) -> set[str]:
    """The metric names an instant PromQL expression (Grafana variables allowed) selects."""
    tokens = [
        (m.lastgroup, m.group())
        for m in _TOKENS.finditer(expr)
        if m.lastgroup not in ("skip", None)
    ]
    names: set[str] = set()
    i = 0
    while i < len(tokens):
        kind, text = tokens[i]
        following = tokens[i + 1][1] if i + 1 < len(tokens) else ""
        i += 1
        if kind != "name" or text.lower() in _KEYWORDS:
            continue
        if text in _LABEL_LISTS:
            if following == "(":
                i = tokens.index(("other", ")"), i) + 1
            continue
        if following != "(" and following not in ("by", "without"):
            names.add(text)  # else a function, or an aggregation (sum by (le) (...))
    return names


def test_metric_names_reads_names_past_functions_labels_and_ranges() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le) ("
        'rate(a_bucket{x="b(c)", y=~"$v"}[$__rate_interval])))'
        " > 1 and on(instance) group_left(job) b offset 5m or time() - c > 2 * 3600"
        " unless d == bool 0.5e3"
    )
    assert metric_names(expr) == {"a_bucket", "b", "c", "d"}
    assert metric_names("sum(rate(e_total[5m])) without (topic)") == {"e_total"}


# -- what the daemon serves ---------------------------------------------------------------


@pytest.fixture(scope="module")
def served() -> frozenset[str]:
    """Every series name the daemon's /metrics can carry, from one scrape of a real server
    (a labelled family with no series yet still announces itself by its TYPE line)."""
    with Metrics().serve("127.0.0.1", 0) as server:
        url = f"http://127.0.0.1:{server.port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.update(sample.name for sample in family.samples)
        names.update(family.name + suffix for suffix in _SUFFIXES.get(family.type, ("",)))
    return frozenset(names)


@pytest.mark.e2e
@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_the_daemon_sets_the_guid_list_and_report_timestamps(
    tmp_path: Path, broker: Broker
) -> None:
    home = Home(tmp_path / "gw", broker.port, reports={"period": "1s"})
    imported_ms = 1_900_000_000_123
    write_guid_list(
        tmp_path / "gw" / "guid-list.bin",
        [int.from_bytes(ESME, "big")],
        sha256=bytes(32),
        imported_at_ms=imported_ms,
    )
    started = now_ms() / 1000
    async with in_process(load_config(home.config, env={})) as (_gateway, lines, metrics):
        assert sample(metrics, "poa_guid_list_imported_timestamp_seconds") == imported_ms / 1000
        await until(lambda: lines.events("report.written"), "a report")
        written = sample(metrics, "poa_report_last_written_timestamp_seconds")
        assert started <= written <= now_ms() / 1000
    (tmp_path / "gw" / "guid-list.bin").unlink()
    async with in_process(load_config(home.config, env={})) as (_gateway, lines, metrics):
        assert lines.events("guids.unavailable")
        assert sample(metrics, "poa_guid_list_imported_timestamp_seconds") == 0


# -- the alert rules ---------------------------------------------------------------------


def rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load(RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def rule(name: str) -> dict[str, Any]:
    (found,) = (r for r in rules() if r.get("alert") == name)
    return found


def test_every_rule_is_an_alert_with_a_severity_summary_and_what_to_do() -> None:
    seen: set[str] = set()
    for r in rules():
        name = r.get("alert")
        assert isinstance(name, str), f"not an alerting rule: {r}"
        assert name not in seen, f"{name} twice"
        seen.add(name)
        assert r["labels"]["severity"] in SEVERITIES, name
        assert r["annotations"]["summary"].strip(), name
        assert "docs/operations.md" in r["annotations"]["description"], name


def test_every_metric_the_rules_query_is_served(served: frozenset[str]) -> None:
    for r in rules():
        names = metric_names(r["expr"])
        assert names, r["alert"]
        assert names <= served, f"{r['alert']}: {sorted(names - served)} not in /metrics"


def test_the_rules_watch_every_metric_that_warrants_an_alert() -> None:
    watched = set().union(*(metric_names(r["expr"]) for r in rules()))
    assert {
        "poa_up",
        "poa_leader",
        "poa_store_ok",
        "poa_alerts_total",
        "poa_decode_errors_total",
        "poa_commands_total",
        "poa_mqtt_reconnects_total",
        "poa_ack_latency_seconds_bucket",
        "poa_quarantined_total",
        "poa_housekeeping_failures_total",
        "poa_report_last_written_timestamp_seconds",
        "poa_guid_list_imported_timestamp_seconds",
    } <= watched
    assert {r["labels"]["severity"] for r in rules()} == SEVERITIES


@needs_promtool
def test_promtool_accepts_the_rules() -> None:
    assert PROMTOOL is not None
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(rules())} rules found" in done.stdout


# Scenarios for promtool's rule unit tests: samples one minute apart (one day apart for the
# GUID list's age). Its clock starts at 0, so timestamps here are small numbers of seconds.
_LABELS = {"job": "poa-gateway", "instance": "gw:9464"}
_SERIES = '{job="poa-gateway", instance="gw:9464"}'


def _fires(alert: str, series: dict[str, str], *, at: str, fired: bool) -> dict[str, Any]:
    r = rule(alert)
    expected = []
    if fired:
        labels = {**r["labels"]} | ({} if "absent(" in r["expr"] and not series else _LABELS)
        annotations = r["annotations"]
        assert "{{" not in json.dumps(annotations), f"{alert}: a template the test cannot expect"
        expected = [{"exp_labels": labels, "exp_annotations": annotations}]
    return {
        "interval": "1m",
        "input_series": [{"series": name + _SERIES, "values": v} for name, v in series.items()],
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def _scenarios() -> Iterator[dict[str, Any]]:
    report = "poa_report_last_written_timestamp_seconds"
    # The only instance (SQLite), or the leader, loses the broker: poa_leader stays 1.
    lost_broker = {"poa_up": "1 1 0x10", "poa_leader": "1x12"}
    yield _fires("PoaGatewayDown", lost_broker, at="3m", fired=False)
    yield _fires("PoaGatewayDown", lost_broker, at="5m", fired=True)
    yield _fires("PoaGatewayDown", {}, at="5m", fired=True)  # never scraped
    yield _fires("PoaStoreFailing", {"poa_store_ok": "1 1 0 0 0 1"}, at="2m", fired=False)
    yield _fires("PoaStoreFailing", {"poa_store_ok": "1 1 0 0 0 1"}, at="4m", fired=True)
    # A report each hour (written at 60 s, then 3600 s, ...): never overdue.
    hourly = "60x59 3600x59 7200x59 10800x59 14400x59"
    for at in ("1h59m", "3h30m", "4h59m"):
        yield _fires("PoaReportOverdue", {report: hourly}, at=at, fired=False)
    # Reports stop after the one at 3600 s: overdue past two hours later.
    yield _fires("PoaReportOverdue", {report: "60x59 3600x200"}, at="2h59m", fired=False)
    yield _fires("PoaReportOverdue", {report: "60x59 3600x200"}, at="3h1m", fired=True)
    # A restart at 2h30m (0 until the new process writes, at 3h): no alert while the new
    # process has yet to write (time() - 0 would be overdue) nor once it has ...
    restarted = "60x59 3600x59 7200x29 0x29 10800x59"
    for at in ("2h50m", "3h30m"):
        yield _fires("PoaReportOverdue", {report: restarted}, at=at, fired=False)
    # ... and the restart does not hide it if they do not.
    yield _fires("PoaReportOverdue", {report: "60x59 3600x29 0x200"}, at="3h1m", fired=True)
    guids = "poa_guid_list_imported_timestamp_seconds"
    yield _fires("PoaGuidListMissing", {guids: "0 0 60x10"}, at="8m", fired=False)
    yield _fires("PoaGuidListMissing", {guids: "0x10"}, at="4m", fired=False)
    yield _fires("PoaGuidListMissing", {guids: "0x10"}, at="6m", fired=True)
    yield from _ha_scenarios()


def _across(
    alert: str, instances: dict[str, dict[str, str]], *, at: str, fired: str | None
) -> dict[str, Any]:
    """A scenario over several instances of one deployment (docs/ha.md): ``instances``
    maps an instance to its series' values; ``fired`` is None (no alert), ``"sum"`` (one
    alert over the deployment, without instance labels) or the instance that fires."""
    r = rule(alert)
    expected = []
    if fired is not None:
        labels = {**r["labels"]}
        if fired != "sum":
            labels |= {"job": "poa-gateway", "instance": fired}
        expected = [{"exp_labels": labels, "exp_annotations": r["annotations"]}]
    series = [
        {"series": f'{name}{{job="poa-gateway", instance="{instance}"}}', "values": values}
        for instance, metrics in instances.items()
        for name, values in metrics.items()
    ]
    return {
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [{"eval_time": at, "alertname": alert, "exp_alerts": expected}],
    }


def _ha_scenarios() -> Iterator[dict[str, Any]]:
    # A connected leader and a healthy standby (poa_up 0 by design): nothing fires.
    healthy = {
        "a:9464": {"poa_up": "1x12", "poa_leader": "1x12"},
        "b:9464": {"poa_up": "0x12", "poa_leader": "0x12"},
    }
    for alert in ("PoaGatewayDown", "PoaNoLeader", "PoaTwoLeaders"):
        yield _across(alert, healthy, at="5m", fired=None)
    # The leader loses the broker and keeps the lease: it fires, the standby does not.
    cut = {
        "a:9464": {"poa_up": "1 1 0x10", "poa_leader": "1x12"},
        "b:9464": {"poa_up": "0x12", "poa_leader": "0x12"},
    }
    yield _across("PoaGatewayDown", cut, at="5m", fired="a:9464")
    # A failover: one scrape with no leader is not an alert ...
    failover = {
        "a:9464": {"poa_up": "1 1 0x10", "poa_leader": "1 1 0x10"},
        "b:9464": {"poa_up": "0 0 0 1x9", "poa_leader": "0 0 0 1x9"},
    }
    yield _across("PoaNoLeader", failover, at="5m", fired=None)
    yield _across("PoaGatewayDown", failover, at="5m", fired=None)
    # ... no leader for over a minute is (PostgreSQL unreachable: both standbys).
    none = {
        "a:9464": {"poa_up": "1 1 0x10", "poa_leader": "1 1 0x10"},
        "b:9464": {"poa_up": "0x12", "poa_leader": "0x12"},
    }
    yield _across("PoaNoLeader", none, at="2m", fired=None)
    yield _across("PoaNoLeader", none, at="4m", fired="sum")
    # Two leaders for one scrape (a step-down not yet seen) is not an alert; for
    # minutes it is.
    blip = {"a:9464": {"poa_leader": "1x12"}, "b:9464": {"poa_leader": "0 0 1 0x9"}}
    yield _across("PoaTwoLeaders", blip, at="5m", fired=None)
    two = {"a:9464": {"poa_leader": "1x12"}, "b:9464": {"poa_leader": "0 0 1x10"}}
    yield _across("PoaTwoLeaders", two, at="2m", fired=None)
    yield _across("PoaTwoLeaders", two, at="4m", fired="sum")


def _guid_list_age() -> dict[str, Any]:
    # Weeks of samples: rules evaluated daily, not each minute (a file of its own).
    old = rule("PoaGuidListOld")["expr"]
    return {
        "interval": "1d",
        "input_series": [
            {"series": "poa_guid_list_imported_timestamp_seconds" + _SERIES, "values": "60x40"}
        ],
        "promql_expr_test": [
            {"expr": old, "eval_time": "30d", "exp_samples": []},
            {
                "expr": old,
                "eval_time": "36d",
                "exp_samples": [{"labels": _SERIES, "value": 36 * 86400 - 60}],
            },
        ],
    }


@needs_promtool
def test_promtool_unit_tests_of_the_alerts_that_involve_time(tmp_path: Path) -> None:
    assert PROMTOOL is not None
    files = []
    for name, interval, tests in (
        ("minutes", "1m", list(_scenarios())),
        ("days", "1d", [_guid_list_age()]),
    ):
        spec = {"rule_files": [str(RULES)], "evaluation_interval": interval, "tests": tests}
        files.append(tmp_path / f"rules_test_{name}.yml")
        files[-1].write_text(yaml.safe_dump(spec, sort_keys=False))
    done = subprocess.run(
        [PROMTOOL, "test", "rules", *map(str, files)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


# -- the dashboard -------------------------------------------------------------------------


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def queries() -> list[str]:
    """Every PromQL expression of the dashboard: its panels' and its variables'."""
    d = dashboard()
    exprs = [t["expr"] for p in d["panels"] for t in p["targets"]]
    for variable in d["templating"]["list"]:
        if variable["type"] == "query":
            found = re.fullmatch(r"label_values\((.+), *\w+\)", variable["query"]["query"])
            assert found, variable["query"]
            exprs.append(found[1])
    return exprs


def test_the_dashboard_imports_anywhere_through_a_datasource_input() -> None:
    d = dashboard()
    assert d["schemaVersion"] >= 39
    (source,) = d["__inputs"]
    assert (source["name"], source["type"], source["pluginId"]) == (
        "DS_PROMETHEUS",
        "datasource",
        "prometheus",
    )
    users = [*d["panels"], *(t for p in d["panels"] for t in p["targets"])]
    users += d["templating"]["list"]
    for user in users:
        assert user["datasource"] == {"type": "prometheus", "uid": DATASOURCE}, user
    ids = [p["id"] for p in d["panels"]]
    titles = [p["title"] for p in d["panels"]]
    assert len(set(ids)) == len(ids)
    assert len(set(titles)) == len(titles)
    for p in d["panels"]:
        grid = p["gridPos"]
        assert grid["x"] + grid["w"] <= 24, p["title"]


def test_every_metric_the_dashboard_queries_is_served(served: frozenset[str]) -> None:
    for expr in queries():
        names = metric_names(expr)
        assert names, expr
        assert names <= served, f"{expr}: {sorted(names - served)} not in /metrics"


def test_the_dashboard_shows_what_an_operator_watches() -> None:
    shown = set().union(*map(metric_names, queries()))
    assert {
        "poa_alerts_total",  # AD1s by outcome
        "poa_windows_active",
        "poa_windows_pending",
        "poa_ack_latency_seconds_bucket",  # receipt-to-acknowledgement latency
        "poa_commands_total",  # refusals by reason
        "poa_quarantined_total",
        "poa_up",  # broker connection
        "poa_mqtt_reconnects_total",
        "poa_store_ok",
        "poa_report_last_written_timestamp_seconds",
        "poa_guid_list_imported_timestamp_seconds",
    } <= shown


@needs_promtool
def test_promtool_parses_every_dashboard_query(tmp_path: Path) -> None:
    # promtool has no "parse this expression": each query becomes a recording rule, with
    # Grafana's variables given values the way Grafana would.
    assert PROMTOOL is not None
    values = {"$__rate_interval": "1m", "$__range": "1d", "$instance": ".*"}
    records = []
    for n, query in enumerate(queries()):
        expr = query
        for variable, value in values.items():
            expr = expr.replace(variable, value)
        assert "$" not in expr, expr
        records.append({"record": f"dashboard:query_{n}", "expr": expr})
    path = tmp_path / "dashboard.rules.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": records}]}))
    done = subprocess.run(
        [PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
