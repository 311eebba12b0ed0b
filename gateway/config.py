"""The configuration file: TOML into frozen Structs, checked at start-up.

Theory of operation
-------------------
The file is parsed by the standard library's :mod:`tomllib` and converted by
``msgspec.convert`` into :class:`ConfigFile`, one frozen Struct per section with
``forbid_unknown_fields=True``, so a typo such as ``windw`` fails at start-up naming the
key. Durations are written ``"30m"`` and become :class:`Duration` (an ``int`` of
milliseconds) during the conversion. Each section checks its own values in
``__post_init__`` (ports, topics, positive windows...) and raises :class:`ConfigError`
with the dotted key. msgspec's errors are translated once, in :func:`load_config`, into
the same :class:`ConfigError`, so callers see one error type whose ``key`` names the
offending setting and whose ``reason`` is a stable code.

:func:`load_config` then builds the effective :class:`Config`: relative paths resolved
(``paths.state_dir`` against the config file's folder, the other paths inside
``state_dir``; TLS files against the config file's folder), and the MQTT password read
from the environment variable that ``broker.password_env`` names. The password is kept
in a :class:`Secret`, whose ``repr`` and ``str`` are ``***``: it is never in the file,
never printed, never logged.

``poa-gateway config check`` and ``config show`` live in :mod:`gateway.cli.config`.
"""

from __future__ import annotations

import datetime
import enum
import hmac
import json
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final, Literal, get_args

import msgspec

from .core.engine import EngineConfig
from .errors import GatewayError
from .reports.profile import BUILTIN_PROFILES, ProfileError, load_profile
from .wire import DEFAULT_MAX_PAYLOAD

__all__ = [
    "LOG_LEVELS",
    "TOPIC_NAMES",
    "BrokerConfig",
    "Config",
    "ConfigError",
    "ConfigFile",
    "ConfigReason",
    "Duration",
    "HaConfig",
    "LogConfig",
    "MetricsConfig",
    "Paths",
    "PathsConfig",
    "ReportsConfig",
    "RetentionConfig",
    "Secret",
    "SuppressionConfig",
    "TopicName",
    "TopicsConfig",
    "format_duration",
    "load_config",
    "parse_duration",
    "render_toml",
]


# -- errors ---------------------------------------------------------------------------


class ConfigReason(enum.StrEnum):
    """The stable reason codes of :class:`ConfigError` (a log field)."""

    UNREADABLE = "unreadable"
    BAD_TOML = "bad-toml"
    UNKNOWN_KEY = "unknown-key"
    WRONG_TYPE = "wrong-type"
    BAD_DURATION = "bad-duration"
    OUT_OF_RANGE = "out-of-range"
    BAD_TOPIC = "bad-topic"
    BAD_VALUE = "bad-value"


class ConfigError(GatewayError):
    """The configuration cannot be used.

    Attributes:
        reason: a :class:`ConfigReason`, stable, for logs and tests: ``unreadable``, ``bad-toml``,
            ``unknown-key``, ``wrong-type``, ``bad-duration``, ``out-of-range``,
            ``bad-topic``, ``bad-value``.
        key: the dotted key at fault (``suppression.window``,
            ``suppression.manufacturers[1]``), or None when the file as a whole is.
    """

    def __init__(self, message: str, *, reason: ConfigReason, key: str | None = None) -> None:
        super().__init__(message)
        self.reason: ConfigReason = reason
        self.key = key


def _fail(key: str, detail: str, reason: ConfigReason = ConfigReason.BAD_VALUE) -> ConfigError:
    return ConfigError(f"{key}: {detail}", reason=reason, key=key)


# -- durations ------------------------------------------------------------------------

_UNITS: Final = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000}
_DURATION_RE: Final = re.compile(r"([0-9]+)(ms|s|m|h|d)", re.ASCII)
_MAX_DURATION_MS: Final = 3650 * _UNITS["d"]  # keeps every sum of times inside int64
_DURATION_HINT: Final = "write an integer followed by ms, s, m, h or d, e.g. '30m'"


class Duration(int):
    """A duration from the configuration, in integer milliseconds (``"30m"`` -> 1800000)."""

    __slots__ = ()


def parse_duration(text: str) -> int:
    """Milliseconds in a duration written as an integer and a unit: ``500ms``, ``30s``,
    ``30m``, ``2h``, ``1d``.

    Raises:
        ValueError: anything else (a float, a negative number, a missing or unknown
            unit, spaces); the message quotes the text and says how to write it.
    """
    match = _DURATION_RE.fullmatch(text)
    if match is None:
        if re.fullmatch(r"\s*-.*", text):
            why = "negative durations are not allowed"
        elif re.fullmatch(r"[0-9]+", text):
            why = "missing unit; " + _DURATION_HINT
        elif re.fullmatch(r"[0-9]*[.,][0-9]*\s*[a-z]*", text):
            why = "use a whole number of a smaller unit, e.g. '90m' rather than '1.5h'"
        else:
            why = _DURATION_HINT
        raise ValueError(f"not a duration: {text!r} ({why})")
    value = int(match[1]) * _UNITS[match[2]]
    if value > _MAX_DURATION_MS:
        raise ValueError(f"not a duration: {text!r} (too long: at most 3650d)")
    return value


def format_duration(ms: int) -> str:
    """The shortest spelling of ``ms`` that :func:`parse_duration` reads back exactly."""
    for unit in ("d", "h", "m", "s"):
        if ms and ms % _UNITS[unit] == 0:
            return f"{ms // _UNITS[unit]}{unit}"
    return f"{ms}ms"


def _d(text: str) -> Duration:
    return Duration(parse_duration(text))


_TYPE_NAMES: Final = {
    bool: "a boolean",
    int: "an integer",
    float: "a float",
    str: "a string",
    list: "an array",
    dict: "a table",
    datetime.datetime: "a date-time",
    datetime.date: "a date",
    datetime.time: "a time",
}


def _decode_hook(kind: type, obj: Any) -> Any:
    # msgspec calls this for the one custom type of the schema. A ValueError becomes a
    # ValidationError carrying the path, translated by _from_validation_error.
    if kind is Duration:
        if isinstance(obj, str):
            return Duration(parse_duration(obj))
        if isinstance(obj, int) and not isinstance(obj, bool):
            raise ValueError(f"not a duration: {obj!r} (missing unit; {_DURATION_HINT})")
        if isinstance(obj, float):
            raise ValueError(
                f"not a duration: {obj!r} (write a string of a whole number and a unit, "
                "e.g. '90m' rather than 1.5)"
            )
        got = _TYPE_NAMES.get(type(obj), type(obj).__name__)
        raise ValueError(f"expected a duration string such as '30m', got {got}")
    raise NotImplementedError(kind)


# -- secrets --------------------------------------------------------------------------


class Secret:
    """A secret value (the MQTT password). ``repr`` and ``str`` are ``***``; only
    :meth:`reveal` returns the value, for the one place that needs it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret itself. Pass it straight to the client library; never log it."""
        return self._value

    def __repr__(self) -> str:
        return "***"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return hmac.compare_digest(self._value.encode(), other._value.encode())

    def __hash__(self) -> int:
        return hash((Secret, self._value))


# -- sections -------------------------------------------------------------------------

_ENV_NAME_RE: Final = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
_FILE_NAME_RE: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*", re.ASCII)
_MQTT_MAX_KEEPALIVE_S: Final = 65_535  # MQTT 3.1.1 section 3.1.2.10: a 16-bit count of seconds
_MQTT_MAX_INFLIGHT: Final = 65_535  # packet identifiers are 16 bits
# broker.max_payload: below 4 KiB a gbcs envelope carrying the largest RTDS frame (1,894
# bytes) would be refused; above 1 MiB (16 times the default, and hundreds of times any
# envelope) the bound would no longer bound the time one message can take.
_MIN_PAYLOAD_LIMIT: Final = 4 * 1024
_MAX_PAYLOAD_LIMIT: Final = 1024 * 1024


def _check_port(key: str, port: int) -> None:
    if not 1 <= port <= 65_535:
        raise _fail(key, f"port {port} is outside 1..65535", ConfigReason.OUT_OF_RANGE)


def _check_not_empty(key: str, value: str) -> None:
    if not value.strip():
        raise _fail(key, "must not be empty")
    if "\x00" in value:
        raise _fail(key, "must not contain a NUL character")


class BrokerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[broker]``: the MQTT broker and the session with it."""

    host: str = "127.0.0.1"
    port: int = 1883
    client_id: str = "poa-gateway"  # fixed: the session is persistent (clean session off)
    username: str = ""  # empty: no authentication
    # The NAME of the variable holding the password, never the password itself.
    password_env: str = "POA_MQTT_PASSWORD"  # noqa: S105
    tls: bool = False
    ca_file: str = ""  # empty: the system's CA bundle
    cert_file: str = ""
    key_file: str = ""
    keepalive: Duration = _d("30s")
    reconnect_min: Duration = _d("1s")  # jittered exponential backoff between these
    reconnect_max: Duration = _d("30s")
    inflight: int = 1000  # bounded window of unacknowledged publishes
    # Inbound messages being handled at once (read, not yet acknowledged). Sent to the
    # broker as our Receive Maximum and enforced by the gateway itself (it stops
    # reading), since mosquitto before 2.0.13 does not.
    receive_maximum: int = 4000
    # The largest inbound payload decoded, in bytes: a larger one is refused unread
    # (reason too-large), so that no message can hold the event loop for long.
    max_payload: int = DEFAULT_MAX_PAYLOAD
    # 5 = MQTT 5 (required for acknowledgement after the effect is durable);
    # 4 = MQTT 3.1.1, only for brokers that speak nothing newer (the embedded demo broker):
    # acknowledgement still waits for the effect, but a refused publish looks delivered.
    protocol: int = 5

    def __post_init__(self) -> None:
        _check_not_empty("broker.host", self.host)
        _check_port("broker.port", self.port)
        _check_not_empty("broker.client_id", self.client_id)
        if self.password_env and not _ENV_NAME_RE.fullmatch(self.password_env):
            # Deliberately not quoting the value: it may be a password put here by mistake.
            raise _fail(
                "broker.password_env",
                "must be the NAME of an environment variable (letters, digits, '_'), "
                "not the password itself",
            )
        if self.keepalive % 1000 or self.keepalive > _MQTT_MAX_KEEPALIVE_S * 1000:
            raise _fail(
                "broker.keepalive",
                f"{format_duration(self.keepalive)}: must be whole seconds, at most "
                f"{_MQTT_MAX_KEEPALIVE_S}s",
                ConfigReason.OUT_OF_RANGE,
            )
        if self.reconnect_min <= 0:
            raise _fail("broker.reconnect_min", "must be longer than 0", ConfigReason.OUT_OF_RANGE)
        if self.reconnect_max < self.reconnect_min:
            raise _fail(
                "broker.reconnect_max",
                f"{format_duration(self.reconnect_max)} is shorter than broker.reconnect_min "
                f"({format_duration(self.reconnect_min)})",
                ConfigReason.OUT_OF_RANGE,
            )
        if not 1 <= self.inflight <= _MQTT_MAX_INFLIGHT:
            raise _fail(
                "broker.inflight",
                f"{self.inflight} is outside 1..{_MQTT_MAX_INFLIGHT}",
                ConfigReason.OUT_OF_RANGE,
            )
        if not 1 <= self.receive_maximum <= _MQTT_MAX_INFLIGHT:
            raise _fail(
                "broker.receive_maximum",
                f"{self.receive_maximum} is outside 1..{_MQTT_MAX_INFLIGHT}",
                ConfigReason.OUT_OF_RANGE,
            )
        if not _MIN_PAYLOAD_LIMIT <= self.max_payload <= _MAX_PAYLOAD_LIMIT:
            raise _fail(
                "broker.max_payload",
                f"{self.max_payload} is outside {_MIN_PAYLOAD_LIMIT}..{_MAX_PAYLOAD_LIMIT}",
                ConfigReason.OUT_OF_RANGE,
            )
        if self.protocol not in (4, 5):
            raise _fail(
                "broker.protocol",
                f"{self.protocol}: must be 5 (MQTT 5) or 4 (3.1.1)",
                ConfigReason.BAD_VALUE,
            )


TopicName = Literal[
    "gbcs_command",
    "gbcs_inbound",
    "dcc_alert",
    "inventory",
    "dno_alert",
    "suppressed",
    "reports",
    "quarantine",
]
TOPIC_NAMES: Final[tuple[TopicName, ...]] = get_args(TopicName)
"""The topic keys of ``[topics]`` (everything but ``prefix``)."""


def _check_topic(key: str, topic: str, *, allow_empty: bool = False) -> None:
    if not topic and not allow_empty:
        raise _fail(key, "must not be empty", ConfigReason.BAD_TOPIC)
    for char, name in (("+", "'+'"), ("#", "'#'"), ("\x00", "a NUL character")):
        if char in topic:
            raise _fail(
                key,
                f"{topic!r} contains {name}: wildcards are for subscriptions, not topic names",
                ConfigReason.BAD_TOPIC,
            )


class TopicsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[topics]``: topic names (WIRE.md), each with ``prefix`` put in front."""

    prefix: str = ""  # e.g. "site-a/"
    gbcs_command: str = "dsp/gbcs/command"
    gbcs_inbound: str = "csp/gbcs/inbound"
    dcc_alert: str = "csp/dcc/alert"
    inventory: str = "dsp/inventory"
    dno_alert: str = "dno/dcc/alert"
    suppressed: str = "gateway/suppressed"
    reports: str = "gateway/reports"
    quarantine: str = "gateway/quarantine"

    def __post_init__(self) -> None:
        _check_topic("topics.prefix", self.prefix, allow_empty=True)
        seen: dict[str, str] = {}
        for name in TOPIC_NAMES:
            topic = getattr(self, name)
            _check_topic(f"topics.{name}", topic)
            # An output topic equal to an input topic would feed the gateway its own output.
            if topic in seen:
                raise _fail(
                    f"topics.{name}",
                    f"same topic as topics.{seen[topic]}: {topic!r}",
                    ConfigReason.BAD_TOPIC,
                )
            seen[topic] = name


class SuppressionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[suppression]``: the MP102B rules."""

    enabled: bool = True  # the MP102B feature switch
    manufacturers: tuple[str, ...] = ("Landis+Gyr",)
    window: Duration = _d("30m")
    lead: Duration = _d("2m")  # tolerance before the execution time
    skew: Duration = _d("5m")  # raised_at later than now + skew is not trusted
    dedupe: Duration = _d("2h")  # how long alert ids are remembered
    retain: Duration = _d("2h")  # how long an ended window still judges late alerts

    def __post_init__(self) -> None:
        if self.enabled and not self.manufacturers:
            raise _fail(
                "suppression.manufacturers",
                "must name at least one manufacturer while suppression.enabled is true",
            )
        for i, name in enumerate(self.manufacturers):
            _check_not_empty(f"suppression.manufacturers[{i}]", name)
        if self.window <= 0:
            raise _fail("suppression.window", "must be longer than 0", ConfigReason.OUT_OF_RANGE)


class PathsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[paths]`` as written; :class:`Paths` holds them resolved."""

    state_dir: str = "var"  # relative: to the config file's folder (or the cwd)
    trust_dir: str = "trust"  # the others, when relative, are inside state_dir
    guid_list: str = "guid-list.bin"
    inventory: str = "inventory.sqlite"
    state: str = "state.sqlite"
    outbox: str = "outbox"

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            _check_not_empty(f"paths.{name}", getattr(self, name))


STATE_BACKENDS: Final = ("sqlite", "postgresql")
"""The values of ``state.backend``."""


class StateConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[state]``: where the durable state lives (SQLite by default, or PostgreSQL)."""

    backend: str = "sqlite"  # sqlite (paths.state) | postgresql (dsn)
    dsn: str = ""  # libpq connection string or URI, without a password
    # The NAME of the variable holding the PostgreSQL password, never the password.
    password_env: str = "POA_PG_PASSWORD"  # noqa: S105

    def __post_init__(self) -> None:
        if self.backend not in STATE_BACKENDS:
            raise _fail(
                "state.backend",
                f"expected one of {', '.join(STATE_BACKENDS)}, got {self.backend!r}",
            )
        if self.password_env and not _ENV_NAME_RE.fullmatch(self.password_env):
            raise _fail("state.password_env", f"{self.password_env!r} is not a variable name")
        if self.backend == "postgresql" and not self.dsn.strip():
            raise _fail("state.dsn", "backend postgresql needs a DSN")
        if self.dsn:
            _check_dsn(self.dsn)


def _check_dsn(dsn: str) -> None:
    from psycopg import ProgrammingError  # noqa: PLC0415 - only for a PostgreSQL config
    from psycopg.conninfo import conninfo_to_dict  # noqa: PLC0415

    try:
        params = conninfo_to_dict(dsn)
    except ProgrammingError:
        # Never echo the DSN: it may hold the password that makes it wrong.
        raise _fail("state.dsn", "not a valid PostgreSQL connection string") from None
    if params.get("password"):
        raise _fail(
            "state.dsn",
            "must not contain a password: put it in the variable named by state.password_env",
        )


class HaConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[ha]``: the leader lease of instances sharing a PostgreSQL state store
    (docs/ha.md); unused with SQLite."""

    # How long a lease lasts unless renewed: a dead leader is replaced after at most this
    # (plus one ``renew``). Longer rides out longer database or host stalls; shorter
    # fails over sooner.
    lease: Duration = _d("5s")
    # How often the leader renews (and a standby tries to take the lease). At most a
    # third of ``lease``, so that two renewals in a row can fail without losing it.
    renew: Duration = _d("1s")
    # This instance's name in ``poa-gateway status``; empty: the host name.
    name: str = ""

    def __post_init__(self) -> None:
        if self.lease < 1000:
            raise _fail("ha.lease", "must be at least 1s", ConfigReason.OUT_OF_RANGE)
        if self.renew < 100:
            raise _fail("ha.renew", "must be at least 100ms", ConfigReason.OUT_OF_RANGE)
        if self.renew * 3 > self.lease:
            raise _fail(
                "ha.renew",
                f"must be at most a third of ha.lease ({format_duration(self.lease)})",
                ConfigReason.OUT_OF_RANGE,
            )
        if len(self.name) > 200 or not self.name.isprintable():
            raise _fail("ha.name", "use at most 200 printable characters")


class ReportsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[reports]``: rotation of the suppression reports for the DNOs."""

    period: Duration = _d("1h")  # rotate at each period boundary (aligned to the epoch, UTC)
    # An AD1 forwarded at most this long after a window of its hub ended is a near miss
    # (counted, logged at info, kept on its decision): evidence on the window's length.
    near_miss: Duration = _d("15m")
    max_records: int = 50_000  # ... or when this many records are pending
    xlsx: bool = False  # also write an .xlsx copy
    name_prefix: str = "POA-SUPPRESSION"
    # The DSP's private key (PEM, ECDSA P-256) that signs each report file; relative to
    # the config file's folder. Empty: reports are unsigned. Read once, at start-up.
    signing_key: str = ""
    # The layout of the report files (HEADER fields, columns, TRAILER fields): a built-in
    # profile, "dno" (for the Network Operators: MPAN and distributor, no Supplier
    # identity) or "dsp" (every column), or a profile .toml file relative to the config
    # file's folder (docs/reports.md, "Profiles").
    profile: str = "dno"
    # "distributor": also write one file per distributor beside each consolidated
    # report (every GB distribution area, empty ones too). "none": the consolidated
    # report only.
    split: Literal["none", "distributor"] = "none"

    def __post_init__(self) -> None:
        if not self.profile or not self.profile.isprintable():
            raise _fail("reports.profile", "name a built-in profile or a .toml file")
        if not self.signing_key.isprintable():
            raise _fail("reports.signing_key", "use a file path of printable characters")
        if self.period <= 0:
            raise _fail("reports.period", "must be longer than 0", ConfigReason.OUT_OF_RANGE)
        if self.max_records < 1:
            raise _fail("reports.max_records", "must be at least 1", ConfigReason.OUT_OF_RANGE)
        if not _FILE_NAME_RE.fullmatch(self.name_prefix):
            raise _fail(
                "reports.name_prefix",
                f"{self.name_prefix!r}: use letters, digits, '.', '_' and '-' only "
                "(it starts a file name)",
            )


# Below a day a retention is taken for a typo ("400m" meant "400d"), not a choice.
_MIN_RETENTION_MS: Final = _UNITS["d"]


class RetentionConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[retention]``: how long what the gateway keeps is kept, before housekeeping
    deletes it (docs/decisions.md D31; the reasoning behind each default is there and
    in docs/operations.md, "Retention")."""

    # Suppression log records, from their receipt; only once they are in a report (an
    # unreported record is never deleted). 13 months and a margin: a DNO reconciles a
    # regulatory year's reports, and an audit may come a month after it.
    suppressions: Duration = _d("400d")
    # Alert decisions, behind ``poa-gateway explain`` and duplicate detection; at least
    # suppression.dedupe. A month and a margin: "why was this alert not forwarded?"
    # comes with the monthly reconciliation.
    decisions: Duration = _d("35d")
    # Refusals: the commands table (every CS06 judged, refused ones with why, from when
    # last seen; D33) and the quarantine (messages that could not be handled), from
    # their quarantine or their replay, whichever is later.
    refusals: Duration = _d("35d")
    # Originator counters of devices gone from the inventory: how long a device must be
    # seen absent before its counters are dropped.
    counters: Duration = _d("30d")
    # Report files in paths.outbox and its sent/ folder (with their .sig/.xlsx
    # siblings), from when they were written.
    outbox: Duration = _d("35d")

    def __post_init__(self) -> None:
        for name in self.__struct_fields__:
            if getattr(self, name) < _MIN_RETENTION_MS:
                raise _fail(
                    f"retention.{name}",
                    f"must be at least {format_duration(_MIN_RETENTION_MS)}",
                    ConfigReason.OUT_OF_RANGE,
                )


def _check_retention(file: ConfigFile) -> None:
    """What one section cannot check alone: a retention shorter than what another needs."""
    r = file.retention
    if r.decisions < file.suppression.dedupe:
        # A redelivery within the dedupe horizon must find the decision it repeats.
        raise _fail(
            "retention.decisions",
            f"must be at least suppression.dedupe ({format_duration(file.suppression.dedupe)})",
            ConfigReason.OUT_OF_RANGE,
        )
    if r.outbox < file.reports.period:
        raise _fail(
            "retention.outbox",
            f"must be at least reports.period ({format_duration(file.reports.period)})",
            ConfigReason.OUT_OF_RANGE,
        )


class MetricsConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[metrics]``: the Prometheus endpoint."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9464

    def __post_init__(self) -> None:
        _check_not_empty("metrics.host", self.host)
        _check_port("metrics.port", self.port)


LOG_LEVELS: Final = ("debug", "info", "warning", "error")
"""The values of ``log.level``, least severe first."""


class LogConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[log]``."""

    level: str = "info"  # debug | info | warning | error

    def __post_init__(self) -> None:
        if self.level not in LOG_LEVELS:
            raise _fail("log.level", f"expected one of {', '.join(LOG_LEVELS)}, got {self.level!r}")


class ConfigFile(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The file as written: every section optional, every key defaulted."""

    broker: BrokerConfig = msgspec.field(default_factory=BrokerConfig)
    topics: TopicsConfig = msgspec.field(default_factory=TopicsConfig)
    suppression: SuppressionConfig = msgspec.field(default_factory=SuppressionConfig)
    paths: PathsConfig = msgspec.field(default_factory=PathsConfig)
    state: StateConfig = msgspec.field(default_factory=StateConfig)
    ha: HaConfig = msgspec.field(default_factory=HaConfig)
    reports: ReportsConfig = msgspec.field(default_factory=ReportsConfig)
    retention: RetentionConfig = msgspec.field(default_factory=RetentionConfig)
    metrics: MetricsConfig = msgspec.field(default_factory=MetricsConfig)
    log: LogConfig = msgspec.field(default_factory=LogConfig)


# -- the effective configuration ------------------------------------------------------


class Paths(msgspec.Struct, frozen=True):
    """``[paths]`` resolved to absolute paths."""

    state_dir: Path
    trust_dir: Path
    guid_list: Path
    inventory: Path
    state: Path
    outbox: Path


class Config(msgspec.Struct, frozen=True, kw_only=True):
    """The effective configuration: the file's sections with paths resolved and the
    password read from the environment. Build it with :func:`load_config`."""

    broker: BrokerConfig
    topics: TopicsConfig
    suppression: SuppressionConfig
    paths: Paths
    state: StateConfig
    reports: ReportsConfig
    metrics: MetricsConfig
    ha: HaConfig = HaConfig()
    retention: RetentionConfig = RetentionConfig()
    log: LogConfig
    source: Path | None = None  # the file it came from; None for built-in defaults
    password: Secret | None = None  # from the variable named by broker.password_env
    state_password: Secret | None = None  # from the variable named by state.password_env

    def broker_password(self) -> str | None:
        """The MQTT password, or None if the variable is unset or empty."""
        return None if self.password is None else self.password.reveal()

    def topic(self, name: TopicName) -> str:
        """The full topic name: ``topics.prefix`` followed by ``topics.<name>``."""
        if name not in TOPIC_NAMES:
            raise ValueError(f"no topic called {name!r}; expected one of {TOPIC_NAMES}")
        topic: str = getattr(self.topics, name)
        return self.topics.prefix + topic

    def engine_config(self) -> EngineConfig:
        """What :class:`gateway.core.engine.Engine` needs, durations in milliseconds."""
        s = self.suppression
        return EngineConfig(
            enabled=s.enabled,
            manufacturers=s.manufacturers,
            window_ms=int(s.window),
            lead_ms=int(s.lead),
            skew_ms=int(s.skew),
            dedupe_ms=int(s.dedupe),
            retain_ms=int(s.retain),
            near_miss_ms=int(self.reports.near_miss),
        )

    def redacted_dict(self) -> dict[str, dict[str, Any]]:
        """The effective configuration as plain data, for printing and logging.

        Shaped like the file (durations written back as ``"30m"``, paths absolute) plus
        ``broker.password``: ``"***"`` when set, else None. The secret never appears.
        """
        out: dict[str, dict[str, Any]] = {}
        for section in ConfigFile.__struct_fields__:
            value = getattr(self, section)
            out[section] = {name: _plain(getattr(value, name)) for name in value.__struct_fields__}
        out["broker"]["password"] = None if self.password is None else "***"
        out["state"]["password"] = None if self.state_password is None else "***"
        return out


def _plain(value: object) -> Any:
    if isinstance(value, Duration):
        return format_duration(value)
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        return list(value)
    return value


# -- loading --------------------------------------------------------------------------

_AT_RE: Final = re.compile(r"(?P<message>.*?)(?: - at `\$(?P<path>[^`]*)`)?", re.DOTALL)
_UNKNOWN_RE: Final = re.compile(r"Object contains unknown field `(?P<name>.*)`", re.DOTALL)
_EXPECTED_RE: Final = re.compile(r"Expected `(?P<want>[^`]+)`, got `(?P<got>[^`]+)`")
_MSGSPEC_TYPES: Final = {
    "int": "an integer",
    "str": "a string",
    "bool": "a boolean",
    "float": "a float",
    "array": "an array",
    "object": "a table",
    "null": "null",
    "datetime": "a date-time",
    "date": "a date",
    "time": "a time",
}


def _from_validation_error(exc: msgspec.ValidationError) -> ConfigError:
    # msgspec says e.g. "Object contains unknown field `windw` - at `$.suppression`".
    parts = _AT_RE.fullmatch(str(exc))
    assert parts is not None  # the pattern matches any text
    message, path = parts["message"], (parts["path"] or "").removeprefix(".")
    unknown = _UNKNOWN_RE.fullmatch(message)
    if unknown is not None:
        key = f"{path}.{unknown['name']}" if path else unknown["name"]
        return ConfigError(f"unknown key {key!r}", reason=ConfigReason.UNKNOWN_KEY, key=key)
    key = path or "(top level)"
    expected = _EXPECTED_RE.fullmatch(message)
    if expected is not None:
        want = _MSGSPEC_TYPES.get(expected["want"], expected["want"])
        got = _MSGSPEC_TYPES.get(expected["got"], expected["got"])
        return _fail(key, f"expected {want}, got {got}", ConfigReason.WRONG_TYPE)
    if "duration" in message:
        return _fail(key, message, ConfigReason.BAD_DURATION)
    return _fail(key, message[:1].lower() + message[1:].replace("`", "'"))


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"cannot read: {exc.strerror or exc}", reason=ConfigReason.UNREADABLE
        ) from exc
    try:
        return tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text: {exc.reason}", reason=ConfigReason.BAD_TOML) from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML: {exc}", reason=ConfigReason.BAD_TOML) from exc


def _resolve(base: Path, text: str) -> Path:
    return (base / text).resolve()


def load_config(path: Path | None, *, env: Mapping[str, str]) -> Config:
    """Load, check and resolve the configuration.

    Args:
        path: the TOML file; None for the built-in defaults, with relative paths
            resolved against the current working folder.
        env: the environment (``os.environ`` in the daemon) from which the variable
            named by ``broker.password_env`` is read. An unset or empty variable means
            no password.

    Raises:
        ConfigError: the file cannot be read or parsed, or a key is unknown, of the wrong
            type or has a value that cannot be used; ``key`` names it.
    """
    if path is None:
        file = ConfigFile()
        base = Path.cwd()
        source = None
    else:
        raw = _read_toml(path)
        try:
            file = msgspec.convert(raw, ConfigFile, dec_hook=_decode_hook)
        except msgspec.ValidationError as exc:
            raise _from_validation_error(exc) from exc
        source = path.resolve()
        base = source.parent

    state_dir = _resolve(base, file.paths.state_dir)
    p = file.paths
    paths = Paths(
        state_dir=state_dir,
        trust_dir=_resolve(state_dir, p.trust_dir),
        guid_list=_resolve(state_dir, p.guid_list),
        inventory=_resolve(state_dir, p.inventory),
        state=_resolve(state_dir, p.state),
        outbox=_resolve(state_dir, p.outbox),
    )
    b = file.broker
    broker = msgspec.structs.replace(
        b,
        **{
            name: str(_resolve(base, getattr(b, name)))
            for name in ("ca_file", "cert_file", "key_file")
            if getattr(b, name)
        },
    )
    reports = file.reports
    if reports.signing_key:
        # Like the TLS files: relative to the config file's folder.
        signing_key = str(_resolve(base, reports.signing_key))
        reports = msgspec.structs.replace(reports, signing_key=signing_key)
    if reports.profile not in BUILTIN_PROFILES:
        reports = msgspec.structs.replace(reports, profile=str(_resolve(base, reports.profile)))
    try:
        load_profile(reports.profile)
    except ProfileError as exc:
        raise _fail("reports.profile", str(exc)) from None
    _check_retention(file)
    secret = env.get(b.password_env) if b.password_env else None
    pg_secret = env.get(file.state.password_env) if file.state.password_env else None
    return Config(
        broker=broker,
        topics=file.topics,
        suppression=file.suppression,
        paths=paths,
        state=file.state,
        ha=file.ha,
        retention=file.retention,
        reports=reports,
        metrics=file.metrics,
        log=file.log,
        source=source,
        password=Secret(secret) if secret else None,
        state_password=Secret(pg_secret) if pg_secret else None,
    )


# -- rendering ------------------------------------------------------------------------


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    # JSON string escapes are valid TOML basic-string escapes; DEL must be escaped too.
    return json.dumps(str(value), ensure_ascii=False).replace("\x7f", "\\u007f")


def render_toml(config: Config) -> str:
    """The effective configuration as a TOML file that :func:`load_config` reads back
    to the same values; the password's presence is a comment, its value never shown."""
    data = config.redacted_dict()
    password = data["broker"].pop("password")
    data["state"].pop("password")
    env_name = config.broker.password_env
    if password is not None:
        note = f"*** (from ${env_name})"
    elif env_name:
        note = f"not set (${env_name} is unset or empty)"
    else:
        note = "not used (broker.password_env is empty)"
    lines = [
        "# poa-gateway effective configuration (defaults filled in)",
        f"# source: {config.source if config.source else 'built-in defaults'}",
        f"# broker password: {note}",
    ]
    for section, values in data.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    return "\n".join(lines) + "\n"
