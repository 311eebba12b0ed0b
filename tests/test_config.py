"""The configuration file: defaults, a full example, errors naming the key, secrets, paths."""

from __future__ import annotations

import argparse
import json
import re
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway import config as config_module
from gateway.cli import config as cli_config
from gateway.config import (
    BrokerConfig,
    Config,
    ConfigError,
    Secret,
    format_duration,
    load_config,
    parse_duration,
    render_toml,
)
from gateway.core.engine import EngineConfig
from gateway.exits import Exit

PASSWORD = "pa55-w0rd-never-printed"

FULL_EXAMPLE = """\
[broker]
host = "broker.example.net"
port = 8883
client_id = "poa-gateway-a"
username = "gateway"
password_env = "SITE_A_MQTT_PASSWORD"
tls = true
ca_file = "ca.pem"
cert_file = "/etc/poa/client.pem"
key_file = "/etc/poa/client.key"
keepalive = "1m"
reconnect_min = "500ms"
reconnect_max = "2m"
inflight = 250
max_payload = 131072

[topics]
prefix = "site-a/"
gbcs_command = "dsp/gbcs/command"
gbcs_inbound = "csp/gbcs/inbound"
dcc_alert = "csp/dcc/alert"
inventory = "dsp/inventory"
dno_alert = "dno/dcc/alert"
suppressed = "gateway/suppressed"
reports = "gateway/reports"

[suppression]
enabled = true
manufacturers = ["Landis+Gyr", "Example Meters"]
window = "45m"
lead = "90s"
skew = "10m"
dedupe = "1d"

[paths]
state_dir = "state"
trust_dir = "/etc/poa/trust"
guid_list = "lists/guid-list.bin"
inventory = "inventory.sqlite"
state = "state.sqlite"
outbox = "outbox"

[reports]
period = "15m"
max_records = 1000
xlsx = true
name_prefix = "SITE-A-POA"

[metrics]
enabled = false
host = "0.0.0.0"
port = 9100

[log]
level = "debug"
"""


def write(tmp_path: Path, text: str, name: str = "gateway.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, text: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), env={})
    return info.value


# -- defaults and a full example ---------------------------------------------------------


def test_no_file_gives_the_documented_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    config = load_config(None, env={})
    assert config.source is None
    assert config.broker == BrokerConfig()
    assert (config.broker.host, config.broker.port, config.broker.client_id) == (
        "127.0.0.1",
        1883,
        "poa-gateway",
    )
    assert config.broker.password_env == "POA_MQTT_PASSWORD"
    assert (config.broker.keepalive, config.broker.reconnect_min) == (30_000, 1_000)
    assert (config.broker.reconnect_max, config.broker.inflight) == (30_000, 1000)
    assert config.broker.receive_maximum == 4000
    assert config.broker.max_payload == 65_536
    assert config.topics.prefix == ""
    assert config.topic("dcc_alert") == "csp/dcc/alert"
    assert config.suppression.manufacturers == ("Landis+Gyr",)
    assert config.suppression.window == 30 * 60_000
    assert (config.suppression.lead, config.suppression.skew) == (120_000, 300_000)
    assert config.suppression.dedupe == 2 * 3_600_000
    assert config.paths.state_dir == tmp_path.resolve() / "var"
    assert config.paths.guid_list == tmp_path.resolve() / "var" / "guid-list.bin"
    assert config.reports.period == 3_600_000
    assert (config.reports.max_records, config.reports.xlsx) == (50_000, False)
    assert config.reports.name_prefix == "POA-SUPPRESSION"
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (
        True,
        "127.0.0.1",
        9464,
    )
    assert config.log.level == "info"
    assert config.broker_password() is None


def test_an_empty_file_is_all_defaults(tmp_path: Path) -> None:
    from_file = load_config(write(tmp_path, ""), env={})
    assert from_file.suppression.window == 1_800_000
    assert from_file.paths.state_dir == tmp_path.resolve() / "var"


def test_a_full_example_loads_every_key(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), env={"SITE_A_MQTT_PASSWORD": PASSWORD})
    assert config.source == (tmp_path / "gateway.toml").resolve()
    assert config.broker.host == "broker.example.net"
    assert (config.broker.port, config.broker.tls, config.broker.inflight) == (8883, True, 250)
    assert config.broker.max_payload == 131_072
    assert config.broker.ca_file == str(tmp_path.resolve() / "ca.pem")
    assert config.broker.cert_file == "/etc/poa/client.pem"
    assert config.broker.keepalive == 60_000
    assert (config.broker.reconnect_min, config.broker.reconnect_max) == (500, 120_000)
    assert config.topic("dno_alert") == "site-a/dno/dcc/alert"
    assert config.topic("gbcs_command") == "site-a/dsp/gbcs/command"
    assert config.suppression.manufacturers == ("Landis+Gyr", "Example Meters")
    assert config.suppression.window == 45 * 60_000
    assert config.suppression.lead == 90_000
    assert config.suppression.dedupe == 86_400_000
    assert (config.reports.period, config.reports.max_records) == (900_000, 1000)
    assert (config.reports.xlsx, config.reports.name_prefix) == (True, "SITE-A-POA")
    assert (config.metrics.enabled, config.metrics.host, config.metrics.port) == (
        False,
        "0.0.0.0",
        9100,
    )
    assert config.log.level == "debug"
    assert config.broker_password() == PASSWORD


def test_the_shown_configuration_loads_back_to_the_same_values(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), env={"SITE_A_MQTT_PASSWORD": PASSWORD})
    elsewhere = tmp_path / "elsewhere"  # the shown paths are absolute: any folder will do
    elsewhere.mkdir()
    shown = write(elsewhere, render_toml(config))
    again = load_config(shown, env={"SITE_A_MQTT_PASSWORD": PASSWORD})
    assert again.redacted_dict() == config.redacted_dict()
    assert tomllib.loads(render_toml(config))["suppression"]["window"] == "45m"


# -- durations ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("0ms", 0),
        ("500ms", 500),
        ("30s", 30_000),
        ("30m", 1_800_000),
        ("2h", 7_200_000),
        ("1d", 86_400_000),
        ("007m", 420_000),
    ],
)
def test_durations_are_an_integer_and_a_unit(text: str, ms: int) -> None:
    assert parse_duration(text) == ms


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("30 minutes", "followed by ms, s, m, h or d"),
        ("-5m", "negative"),
        ("1.5h", "whole number"),
        ("30", "missing unit"),
        ("", "followed by"),
        ("30M", "followed by"),
        (" 30m", "followed by"),
        ("3651d", "too long"),
    ],
)
def test_bad_durations_are_refused_with_a_reason(text: str, hint: str) -> None:
    with pytest.raises(ValueError, match="not a duration") as info:
        parse_duration(text)
    assert hint in str(info.value)
    assert repr(text) in str(info.value)


@pytest.mark.parametrize("ms", [0, 1, 999, 1000, 90_000, 3_600_000, 86_400_000, 1_800_001])
def test_formatted_durations_parse_back(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


@given(st.integers(min_value=0, max_value=3650 * 86_400_000))
def test_every_duration_in_range_formats_and_parses_back(ms: int) -> None:
    assert parse_duration(format_duration(ms)) == ms


@given(st.text(max_size=12))
def test_any_text_is_a_duration_or_a_value_error(text: str) -> None:
    message: str | None = None
    try:
        assert parse_duration(text) >= 0
    except ValueError as exc:
        message = str(exc)
    assert message is None or message.startswith(f"not a duration: {text!r} (")
    assert message is not None or re.fullmatch(r"[0-9]+(ms|s|m|h|d)", text, re.ASCII)


# -- every bad input names its key -------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "key", "reason", "message"),
    [
        ("colour = 1\n", "colour", "unknown-key", "unknown key 'colour'"),
        ("[suppresion]\n", "suppresion", "unknown-key", "unknown key 'suppresion'"),
        (
            "[suppression]\nwindw = '30m'\n",
            "suppression.windw",
            "unknown-key",
            "unknown key 'suppression.windw'",
        ),
        (
            "[broker]\npassword = 'x'\n",
            "broker.password",
            "unknown-key",
            "unknown key 'broker.password'",
        ),
        (
            "[suppression]\nwindow = '30 minutes'\n",
            "suppression.window",
            "bad-duration",
            "suppression.window: not a duration: '30 minutes'",
        ),
        (
            "[suppression]\nlead = 30\n",
            "suppression.lead",
            "bad-duration",
            "suppression.lead: not a duration: 30 (missing unit",
        ),
        (
            "[reports]\nperiod = 1.5\n",
            "reports.period",
            "bad-duration",
            "reports.period: not a duration: 1.5",
        ),
        (
            "[suppression]\nskew = '-1m'\n",
            "suppression.skew",
            "bad-duration",
            "suppression.skew: not a duration: '-1m' (negative",
        ),
        (
            "[broker]\nkeepalive = true\n",
            "broker.keepalive",
            "bad-duration",
            "broker.keepalive: expected a duration string such as '30m', got a boolean",
        ),
        (
            "[broker]\nport = '1883'\n",
            "broker.port",
            "wrong-type",
            "broker.port: expected an integer, got a string",
        ),
        (
            "[suppression]\nenabled = 'yes'\n",
            "suppression.enabled",
            "wrong-type",
            "suppression.enabled: expected a boolean, got a string",
        ),
        (
            "[suppression]\nmanufacturers = ['a', 2]\n",
            "suppression.manufacturers[1]",
            "wrong-type",
            "suppression.manufacturers[1]: expected a string, got an integer",
        ),
        ("suppression = 3\n", "suppression", "wrong-type", "suppression: expected a table"),
        (
            "[broker]\nport = 0\n",
            "broker.port",
            "out-of-range",
            "broker.port: port 0 is outside 1..65535",
        ),
        (
            "[metrics]\nport = 65536\n",
            "metrics.port",
            "out-of-range",
            "metrics.port: port 65536 is outside 1..65535",
        ),
        (
            "[topics]\ndno_alert = 'dno/#'\n",
            "topics.dno_alert",
            "bad-topic",
            "topics.dno_alert: 'dno/#' contains '#'",
        ),
        (
            "[topics]\ndcc_alert = 'csp/+/alert'\n",
            "topics.dcc_alert",
            "bad-topic",
            "topics.dcc_alert: 'csp/+/alert' contains '+'",
        ),
        ("[topics]\nprefix = '#/'\n", "topics.prefix", "bad-topic", "topics.prefix: '#/'"),
        ("[topics]\nreports = ''\n", "topics.reports", "bad-topic", "topics.reports: must not"),
        (
            "[topics]\ndno_alert = 'csp/dcc/alert'\n",
            "topics.dno_alert",
            "bad-topic",
            "topics.dno_alert: same topic as topics.dcc_alert",
        ),
        (
            "[suppression]\nmanufacturers = []\n",
            "suppression.manufacturers",
            "bad-value",
            "suppression.manufacturers: must name at least one",
        ),
        (
            "[suppression]\nwindow = '0m'\n",
            "suppression.window",
            "out-of-range",
            "suppression.window: must be longer than 0",
        ),
        (
            "[broker]\ninflight = 0\n",
            "broker.inflight",
            "out-of-range",
            "broker.inflight: 0 is outside",
        ),
        (
            "[broker]\nreceive_maximum = 70000\n",
            "broker.receive_maximum",
            "out-of-range",
            "broker.receive_maximum: 70000 is outside",
        ),
        (
            "[broker]\nmax_payload = 4095\n",
            "broker.max_payload",
            "out-of-range",
            "broker.max_payload: 4095 is outside 4096..1048576",
        ),
        (
            "[broker]\nmax_payload = 1048577\n",
            "broker.max_payload",
            "out-of-range",
            "broker.max_payload: 1048577 is outside 4096..1048576",
        ),
        (
            "[broker]\nmax_payload = '64KiB'\n",
            "broker.max_payload",
            "wrong-type",
            "broker.max_payload: expected an integer, got a string",
        ),
        (
            "[broker]\nreconnect_min = '1m'\nreconnect_max = '1s'\n",
            "broker.reconnect_max",
            "out-of-range",
            "broker.reconnect_max: 1s is shorter than broker.reconnect_min (1m)",
        ),
        (
            "[broker]\nkeepalive = '1500ms'\n",
            "broker.keepalive",
            "out-of-range",
            "broker.keepalive: 1500ms: must be whole seconds",
        ),
        ("[log]\nlevel = 'verbose'\n", "log.level", "bad-value", "log.level: expected one of"),
        ("[paths]\nstate_dir = ''\n", "paths.state_dir", "bad-value", "paths.state_dir: must"),
        (
            "[reports]\nname_prefix = '../x'\n",
            "reports.name_prefix",
            "bad-value",
            "reports.name_prefix: '../x'",
        ),
    ],
)
def test_bad_input_names_the_key(
    tmp_path: Path, text: str, key: str, reason: str, message: str
) -> None:
    error = load_error(tmp_path, text)
    assert error.key == key
    assert error.reason == reason
    assert str(error).startswith(message)
    assert "\n" not in str(error)


def test_an_empty_manufacturer_list_is_allowed_while_suppression_is_off(tmp_path: Path) -> None:
    path = write(tmp_path, "[suppression]\nenabled = false\nmanufacturers = []\n")
    assert load_config(path, env={}).suppression.manufacturers == ()


def test_msgspec_errors_are_chained_not_leaked(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[suppression]\nwindw = '30m'\n")
    assert type(error.__cause__).__name__ == "ValidationError"
    assert "$." not in str(error)


def test_a_password_put_in_password_env_is_refused_without_echoing_it(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[broker]\npassword_env = 'hunter2!'\n")
    assert error.key == "broker.password_env"
    assert "hunter2" not in str(error)


def test_invalid_toml_is_a_config_error(tmp_path: Path) -> None:
    error = load_error(tmp_path, "[broker\nhost = 1\n")
    assert (error.reason, error.key) == ("bad-toml", None)
    assert "line 1" in str(error)


def test_a_duplicate_key_is_invalid_toml(tmp_path: Path) -> None:
    assert load_error(tmp_path, "[log]\nlevel = 'info'\nlevel = 'debug'\n").reason == "bad-toml"


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(tmp_path / "absent.toml", env={})
    assert info.value.reason == "unreadable"


def test_sections_check_themselves_when_built_in_code() -> None:
    with pytest.raises(ConfigError) as info:
        BrokerConfig(port=70_000)
    assert info.value.key == "broker.port"


# -- the password ------------------------------------------------------------------------


def test_the_password_comes_from_the_named_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\npassword_env = 'MY_PW'\n")
    assert load_config(path, env={"MY_PW": PASSWORD}).broker_password() == PASSWORD
    assert load_config(path, env={"POA_MQTT_PASSWORD": PASSWORD}).broker_password() is None
    assert load_config(path, env={"MY_PW": ""}).broker_password() is None


def test_an_empty_password_env_reads_no_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[broker]\npassword_env = ''\n")
    assert load_config(path, env={"": PASSWORD}).broker_password() is None


def test_the_password_never_appears_in_printed_forms(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), env={"SITE_A_MQTT_PASSWORD": PASSWORD})
    assert config.broker_password() == PASSWORD
    redacted = config.redacted_dict()
    for text in (
        repr(config),
        str(config),
        f"{config}",
        repr(config.password),
        f"{config.password}",
        json.dumps(redacted),
        render_toml(config),
    ):
        assert PASSWORD not in text
    assert redacted["broker"]["password"] == "***"
    assert "password=***" in repr(config)


def test_secrets_compare_by_value_and_hide_it() -> None:
    assert Secret("a") == Secret("a")
    assert Secret("a") != Secret("b")
    assert str(Secret("a")) == repr(Secret("a")) == "***"
    assert Secret("a").reveal() == "a"


# -- paths -------------------------------------------------------------------------------


def test_relative_state_dir_is_relative_to_the_config_files_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    etc = tmp_path / "etc"
    etc.mkdir()
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    config = load_config(write(etc, FULL_EXAMPLE), env={})
    state = etc.resolve() / "state"
    assert config.paths.state_dir == state
    assert config.paths.trust_dir == Path("/etc/poa/trust")
    assert config.paths.guid_list == state / "lists" / "guid-list.bin"
    assert config.paths.inventory == state / "inventory.sqlite"
    assert config.paths.state == state / "state.sqlite"
    assert config.paths.outbox == state / "outbox"
    assert all(getattr(config.paths, name).is_absolute() for name in config.paths.__struct_fields__)


def test_an_absolute_state_dir_is_kept(tmp_path: Path) -> None:
    target = tmp_path / "srv" / "poa"
    config = load_config(write(tmp_path, f"[paths]\nstate_dir = {str(target)!r}\n"), env={})
    assert config.paths.state_dir == target.resolve()
    assert config.paths.state == target.resolve() / "state.sqlite"


def test_a_relative_config_path_is_resolved_against_the_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "")
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("gateway.toml"), env={})
    assert config.source == tmp_path.resolve() / "gateway.toml"
    assert config.paths.state_dir == tmp_path.resolve() / "var"


# -- helpers -----------------------------------------------------------------------------


def test_engine_config_carries_the_suppression_settings_in_ms(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, FULL_EXAMPLE), env={})
    engine = config.engine_config()
    assert isinstance(engine, EngineConfig)
    assert engine.enabled is True
    assert engine.manufacturers == ("Landis+Gyr", "Example Meters")
    assert (engine.window_ms, engine.lead_ms) == (2_700_000, 90_000)
    assert (engine.skew_ms, engine.dedupe_ms) == (600_000, 86_400_000)
    assert type(engine.window_ms) is int


def test_default_engine_config_matches_the_engines_own_defaults() -> None:
    assert load_config(None, env={}).engine_config() == EngineConfig()


def test_topic_applies_the_prefix_to_every_topic(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[topics]\nprefix = 'p/'\n"), env={})
    for name in config_module.TOPIC_NAMES:
        assert config.topic(name) == "p/" + getattr(config.topics, name)


def test_redacted_dict_has_every_section_and_readable_durations() -> None:
    data = load_config(None, env={}).redacted_dict()
    assert list(data) == [
        "broker",
        "topics",
        "suppression",
        "paths",
        "state",
        "ha",
        "reports",
        "retention",
        "metrics",
        "log",
    ]
    assert data["suppression"]["window"] == "30m"
    assert data["ha"] == {"lease": "5s", "renew": "1s", "name": ""}
    assert data["state"] == {
        "backend": "sqlite",
        "dsn": "",
        "password_env": "POA_PG_PASSWORD",
        "password": None,
    }
    assert data["suppression"]["manufacturers"] == ["Landis+Gyr"]
    assert data["broker"]["password"] is None
    json.dumps(data)  # plain data only


# -- command line ------------------------------------------------------------------------


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="poa-gateway")
    sub = parser.add_subparsers(dest="command", required=True)
    cli_config.add_parser(sub)
    args = parser.parse_args(argv)
    result: int = args.handler(args)
    return result


def test_config_check_prints_ok_and_the_configuration_without_the_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITE_A_MQTT_PASSWORD", PASSWORD)
    path = write(tmp_path, FULL_EXAMPLE)
    assert run_cli(["config", "check", str(path)]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "ok"
    assert PASSWORD not in out + err
    assert "***" in out
    shown = tomllib.loads(out.split("\n", 1)[1])
    assert shown["broker"]["host"] == "broker.example.net"
    assert shown["suppression"]["window"] == "45m"


def test_config_check_json_shows_the_password_as_stars(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("SITE_A_MQTT_PASSWORD", PASSWORD)
    assert run_cli(["config", "check", "--json", str(write(tmp_path, FULL_EXAMPLE))]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    assert json.loads(out.split("\n", 1)[1])["broker"]["password"] == "***"


def test_config_check_names_the_bad_key_on_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[suppression]\nwindw = '30m'\n")
    assert run_cli(["config", "check", str(path)]) == Exit.CONFIG
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"poa-gateway config check: {path}: unknown key 'suppression.windw'\n"


def test_config_show_defaults_prints_the_built_in_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("POA_MQTT_PASSWORD", PASSWORD)
    assert run_cli(["config", "show", "--defaults"]) == 0
    out = capsys.readouterr().out
    assert PASSWORD not in out
    shown = tomllib.loads(out)
    assert shown["broker"]["port"] == 1883
    assert shown["paths"]["state_dir"] == str(tmp_path.resolve() / "var")
    assert "# broker password: *** (from $POA_MQTT_PASSWORD)" in out


def test_config_show_fills_in_defaults_for_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[suppression]\nwindow = '45m'\n")
    assert run_cli(["config", "show", str(path)]) == 0
    shown = tomllib.loads(capsys.readouterr().out)
    assert shown["suppression"]["window"] == "45m"
    assert shown["suppression"]["lead"] == "2m"
    assert shown["reports"]["name_prefix"] == "POA-SUPPRESSION"


@pytest.mark.parametrize("argv", [["config"], ["config", "check"], ["config", "show"]])
def test_every_config_subcommand_has_help(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run_cli([*argv, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_config_is_a_frozen_struct() -> None:
    config = load_config(None, env={})
    assert isinstance(config, Config)
    with pytest.raises(AttributeError):
        config.log = config.log  # type: ignore[misc]


def test_the_configuration_file_is_found_from_config_then_the_environment_then_etc(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    given = write(tmp_path, "[suppression]\nwindow = '45m'\n")
    from_env = tmp_path / "env.toml"
    from_env.write_text("[suppression]\nwindow = '40m'\n")
    monkeypatch.setenv("POA_GATEWAY_CONFIG", str(from_env))
    assert run_cli(["config", "show", "--json", "--config", str(given)]) == 0
    assert json.loads(capsys.readouterr().out)["suppression"]["window"] == "45m"
    assert run_cli(["config", "show", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["suppression"]["window"] == "40m"
    monkeypatch.delenv("POA_GATEWAY_CONFIG")
    if Path("/etc/poa-gateway/poa-gateway.toml").exists():
        pytest.skip("this machine has an /etc/poa-gateway/poa-gateway.toml")
    assert run_cli(["config", "check"]) == Exit.CONFIG
    err = capsys.readouterr().err
    assert "/etc/poa-gateway/poa-gateway.toml" in err
    assert "POA_GATEWAY_CONFIG" in err


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("lease = '500ms'", "ha.lease"),
        ("renew = '50ms'", "ha.renew"),
        ("lease = '3s'\nrenew = '2s'", "ha.renew"),
        ('name = "a\\nb"', "ha.name"),
    ],
)
def test_ha_settings_that_could_lose_the_lease_are_refused_by_name(
    tmp_path: Path, text: str, key: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, f"[ha]\n{text}\n"), env={})
    assert caught.value.key == key
