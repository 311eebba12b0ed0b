"""Structured logs: one JSON object per line on stdout, for journald.

Every line starts ``{"ts": ..., "level": ..., "event": ...}`` followed by the
correlation fields (``reason``, ``alert_id``, ``device_id``, ``chf_id``,
``request_id``, ``topic``) when given, then any other fields in name order, so lines
diff and grep well. 8-byte values are EUI-64s and are written ``00-DB-12-34-56-78-90-A0``;
other bytes are written as hex. Secrets are never written: a field whose name contains
``password``, ``secret`` or ``token`` is written ``"***"``, and so is any
:class:`gateway.config.Secret`, wherever it appears.

Records of the standard :mod:`logging` module (libraries' own: amqtt, psycopg) are routed
into the same stream by :func:`route_stdlib_logging`, as events named ``lib.<logger name>``.

Writing a record never raises because of a field's value: fields often carry what came
off the wire. Integers beyond 64 bits are written as text (``str()`` of one past 4,300
digits raises), a field that cannot be turned into JSON at all is written
``"<unloggable TYPE>"``, and containers nested deeper than six levels are written as
their (clipped) text.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import enum
import functools
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Final, TextIO

import msgspec

from .config import LOG_LEVELS, Secret
from .eui import EUI64_LENGTH, format_eui64

__all__ = ["LEVELS", "JsonLog", "buffered_stdout", "route_stdlib_logging", "writes_to_journal"]

LEVELS: Final = dict(
    zip(LOG_LEVELS, (logging.DEBUG, logging.INFO, logging.WARNING, logging.ERROR), strict=True)
)
"""Level names (those of ``log.level``) and their :mod:`logging` numbers."""

_HEAD: Final = ("ts", "level", "event")
_LEADING: Final = ("reason", "alert_id", "device_id", "chf_id", "request_id", "topic")
_SECRET_WORDS: Final = ("password", "secret", "token")
_REDACTED: Final = "***"
_MAX_DEPTH: Final = 6  # nested containers below this are written with str()
_MAX_TEXT: Final = 1000  # characters of such a str(), and of a value's text fallback
_INT_LIMIT: Final = 1 << 64  # larger integers are written as text
_PLAIN: Final = frozenset({str, int, float, bool, type(None)})
_URGENT: Final = frozenset({"warning", "error"})  # flushed at once, even on the loop
# sd-daemon(3) priority prefixes: journald strips them and files the line at that level.
_PRIORITY: Final = {"debug": "<7>", "info": "<6>", "warning": "<4>", "error": "<3>"}


@functools.lru_cache(maxsize=1024)
def _is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _clean(value: object, depth: int = 0) -> object:
    """``value`` made JSON-friendly with bytes formatted and secrets scrubbed.

    May raise for a hostile object (a ``__str__`` that raises ...): :meth:`JsonLog._write`
    catches that per field.
    """
    if type(value) is int:
        return _int(value)
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Secret):
        return _REDACTED
    if isinstance(value, bytes | bytearray | memoryview):
        raw = bytes(value)
        return format_eui64(raw) if len(raw) == EUI64_LENGTH else raw.hex()
    if depth >= _MAX_DEPTH:
        return _text(value)
    if isinstance(value, msgspec.Struct):
        return _clean_mapping(msgspec.structs.asdict(value), depth)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
        return _clean_mapping(fields, depth)
    if isinstance(value, Mapping):
        return _clean_mapping(value, depth)
    if isinstance(value, list | tuple | set | frozenset):
        return [_clean(item, depth + 1) for item in value]
    if isinstance(value, enum.Enum):
        member = value.value
        return _clean(member) if type(member) in _PLAIN else _text(member)
    # int/float/str subclasses (e.g. config Durations) as their plain values.
    for plain in (bool, int, float, str):
        if isinstance(value, plain):
            return _clean(plain(value))
    return value  # left to the encoder, which falls back to str()


def _int(value: int) -> int | str:
    # Up to 64 bits (counters are u64) a JSON number; beyond, text: decimal while short,
    # else the leading hex digits and the size, computed without a decimal conversion.
    if -_INT_LIMIT < value < _INT_LIMIT:
        return value
    bits = value.bit_length()
    if bits <= 128:
        return str(value)
    top = abs(value) >> (4 * ((bits + 3) // 4 - 16))  # its first 16 hex digits
    return f"{'-' if value < 0 else ''}0x{top:X}... ({bits} bits)"


def _text(value: object) -> str:
    """``str(value)``, clipped; never raises."""
    if type(value) is int:
        return str(_int(value))
    try:
        text = str(value)
    except Exception:  # noqa: BLE001 - a log line must never fail because of a field
        return _unloggable(value)
    if type(text) is not str:  # a __str__ returning a str subclass
        return _unloggable(value)
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def _unloggable(value: object) -> str:
    try:
        name = type(value).__name__
    except Exception:  # noqa: BLE001 - a metaclass can make even this raise
        name = "object"
    return f"<unloggable {name}>"


def _clean_mapping(mapping: Mapping[Any, object], depth: int) -> dict[str, object]:
    out: dict[str, object] = {}
    for key, item in mapping.items():
        name = key if type(key) is str else _text(key)
        out[name] = _REDACTED if _is_secret_name(name) else _clean(item, depth + 1)
    return out


@functools.lru_cache(maxsize=512)
def _layout(names: tuple[str, ...]) -> tuple[tuple[str, str, bool], ...]:
    """Where each field goes, for one set of field names: (key in the line, field name,
    secret?). The correlation fields lead, the rest follow in name order, and a field
    named like a header key is written with a leading underscore. Cached: a daemon logs
    the same few shapes of record millions of times."""
    out: list[tuple[str, str, bool]] = []
    present = set(names)
    for key in _LEADING:
        if key in present:
            out.append((key, key, _is_secret_name(key)))
    for key in sorted(present):
        if key in _LEADING:
            continue
        out.append(("_" + key if key in _HEAD else key, key, _is_secret_name(key)))
    return tuple(out)


def _fallback(value: object) -> str:
    # The encoder's hook for a value _clean left alone (a Path, an exception ...).
    return _text(value)


class JsonLog:
    """A JSON-lines logger. Thread-safe: a lock is held around each write.

    Args:
        stream: where lines go; None means ``sys.stdout`` at construction time.
        level: the least severe level written: debug, info, warning or error.
        clock: epoch seconds (``time.time``), injected for tests.

    Lines that cannot be written (a closed stream, a broken pipe) are counted in
    :attr:`dropped` rather than raising into the caller.

    When the stream is the journal (systemd's ``JOURNAL_STREAM`` names it), or
    ``syslog_prefix`` says so, each line starts with its syslog priority (``<3>`` error,
    ``<4>`` warning, ``<6>`` info, ``<7>`` debug): journald strips it and files the line
    at that priority, so ``journalctl -p warning`` shows warnings and errors only.
    """

    def __init__(
        self,
        stream: TextIO | None = None,
        level: str = "info",
        clock: Callable[[], float] = time.time,
        *,
        syslog_prefix: bool | None = None,
    ) -> None:
        self._stream = sys.stdout if stream is None else stream
        self.syslog_prefix = (
            writes_to_journal(self._stream) if syslog_prefix is None else syslog_prefix
        )
        self._clock = clock
        self._threshold = LEVELS["info"]
        self.level = level
        self._lock = threading.Lock()
        self._encoder = msgspec.json.Encoder(enc_hook=_fallback)
        self._second: tuple[int, str] = (-1, "")
        self.dropped = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0
        self._flush_scheduled = False

    @property
    def level(self) -> str:
        """The least severe level written; settable."""
        return self._level

    @level.setter
    def level(self, level: str) -> None:
        if level not in LEVELS:
            raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
        self._level = level
        self._threshold = LEVELS[level]

    def flush_once_per_pass(self, loop: asyncio.AbstractEventLoop) -> None:
        """Lines written from ``loop``'s thread are flushed once per pass of the loop
        rather than one by one: at storm rates, a system call per line was a few per cent
        of the daemon's CPU. Lines still leave in order and before the loop next waits
        for I/O. Warnings and errors, other threads' lines, and lines written once the
        loop has stopped flush at once; a SIGKILL can lose the info and debug lines of
        the pass it interrupts (never a durable record: those are in the state store)."""
        self._loop = loop
        self._loop_thread = threading.get_ident()

    def flush(self) -> None:
        """Flush what was written (the daemon calls it when it stops)."""
        with self._lock:
            self._flush_scheduled = False
            with contextlib.suppress(OSError, ValueError):
                self._stream.flush()

    def enabled_for(self, level: str) -> bool:
        """Whether a record at ``level`` would be written (to skip costly fields)."""
        return LEVELS[level] >= self._threshold

    def debug(self, event: str, /, **fields: object) -> None:
        """Write a debug record."""
        if self._threshold <= 10:
            self._write("debug", event, fields, None)

    def info(self, event: str, /, **fields: object) -> None:
        """Write an info record."""
        if self._threshold <= 20:
            self._write("info", event, fields, None)

    def warning(self, event: str, /, **fields: object) -> None:
        """Write a warning record."""
        if self._threshold <= 30:
            self._write("warning", event, fields, None)

    def error(self, event: str, /, **fields: object) -> None:
        """Write an error record."""
        self._write("error", event, fields, None)

    def log(self, level: str, event: str, /, **fields: object) -> None:
        """Write a record at a level chosen at run time."""
        if LEVELS[level] >= self._threshold:
            self._write(level, event, fields, None)

    def _timestamp(self, seconds: float) -> str:
        whole, ms = divmod(round(seconds * 1000), 1000)
        cached_second, prefix = self._second
        if whole != cached_second:
            prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
            self._second = (whole, prefix)
        return f"{prefix}.{ms:03d}Z"

    def _write(
        self, level: str, event: str, fields: Mapping[str, object], at: float | None
    ) -> None:
        record: dict[str, object] = {
            "ts": self._timestamp(self._clock() if at is None else at),
            "level": level,
            "event": event,
        }
        for out_key, key, secret in _layout(tuple(fields)):
            if secret:
                record[out_key] = _REDACTED
                continue
            try:
                record[out_key] = _clean(fields[key])
            except Exception:  # noqa: BLE001 - a log line must never fail because of a field
                record[out_key] = _unloggable(fields[key])
        try:
            line = self._encoder.encode(record).decode("utf-8")
        except Exception:  # noqa: BLE001 - e.g. a lone surrogate, which UTF-8 cannot hold
            line = _escaped(record)
        self._emit(line + "\n", record, level)

    def _emit(self, line: str, record: Mapping[str, object], level: str) -> None:
        urgent = level in _URGENT
        prefix = _PRIORITY[level] if self.syslog_prefix else ""
        with self._lock:
            try:
                try:
                    self._stream.write(prefix + line)
                except UnicodeEncodeError:  # a stream that cannot take UTF-8: escape it
                    self._stream.write(prefix + _escaped(record) + "\n")
                loop = self._loop
                if (
                    not urgent
                    and loop is not None
                    and threading.get_ident() == self._loop_thread
                    and loop.is_running()
                ):
                    if not self._flush_scheduled:
                        self._flush_scheduled = True
                        loop.call_soon(self.flush)
                else:
                    self._stream.flush()  # one line at a time reaches journald
            except (OSError, ValueError):
                self.dropped += 1


def _escaped(record: Mapping[str, object]) -> str:
    # ASCII JSON (non-ASCII characters and lone surrogates escaped), from a record whose
    # values _clean has made plain; a field json cannot take is replaced, not raised.
    try:
        return json.dumps(record, default=_fallback)
    except Exception:  # noqa: BLE001 - a log line must never fail because of a field
        return json.dumps(
            {k: v if type(v) in _PLAIN else _unloggable(v) for k, v in record.items()},
            default=_fallback,
        )


def writes_to_journal(stream: TextIO) -> bool:
    """Whether ``stream`` is connected to the journal: systemd sets ``JOURNAL_STREAM`` to
    the ``device:inode`` of the stream it gave the service (systemd.exec(5)); a shell
    that inherited the variable but redirects elsewhere does not match."""
    dev, sep, ino = os.environ.get("JOURNAL_STREAM", "").partition(":")
    if not sep:
        return False
    try:
        st = os.fstat(stream.fileno())
        return (st.st_dev, st.st_ino) == (int(dev), int(ino))
    except (OSError, ValueError, AttributeError):  # no file behind it (StringIO), junk
        return False


def buffered_stdout() -> TextIO:
    """A buffered text stream on the process's standard output, for the daemon's log.

    ``sys.stdout`` is unbuffered under ``PYTHONUNBUFFERED`` (set in many containers and
    CI images), which turns every log line into a system call whatever
    :meth:`JsonLog.flush_once_per_pass` does. Falls back to ``sys.stdout`` when it has
    no file descriptor (a test's capture).
    """
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return sys.stdout
    return open(fd, "w", encoding="utf-8", buffering=1 << 16, closefd=False)


def _level_name(levelno: int) -> str:
    if levelno >= logging.ERROR:
        return "error"
    if levelno >= logging.WARNING:
        return "warning"
    if levelno >= logging.INFO:
        return "info"
    return "debug"


class _StdlibHandler(logging.Handler):
    def __init__(self, log: JsonLog, level: int, secrets: Iterable[Secret]) -> None:
        super().__init__(level)
        self._log = log
        self._secrets = tuple(s.reveal() for s in secrets if s.reveal())
        self._formatter = logging.Formatter()

    def _scrub(self, text: str) -> str:
        # Third-party messages are free text: blank out any known secret in them.
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def emit(self, record: logging.LogRecord) -> None:
        try:
            level = _level_name(record.levelno)
            if not self._log.enabled_for(level):
                return
            fields: dict[str, object] = {"message": self._scrub(record.getMessage())}
            if record.exc_info:
                fields["exc"] = self._scrub(self._formatter.formatException(record.exc_info))
            self._log._write(level, f"lib.{record.name}", fields, record.created)
        except Exception:  # noqa: BLE001 - the logging module's own convention
            self.handleError(record)


def route_stdlib_logging(
    log: JsonLog, level: str = "warning", *, secrets: Iterable[Secret] = ()
) -> logging.Handler:
    """Send :mod:`logging` records (the libraries') to ``log`` as ``lib.<logger name>`` events.

    Installs one handler on the root logger, replacing one installed earlier, and sets
    the root level to ``level``; records are also subject to ``log``'s own level.
    Occurrences of ``secrets`` in their messages are written ``***``. Returns the
    handler, so that it can be removed with ``logging.getLogger().removeHandler``.
    """
    if level not in LEVELS:
        raise ValueError(f"unknown log level {level!r}; expected one of {', '.join(LEVELS)}")
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _StdlibHandler)]:
        root.removeHandler(old)
    handler = _StdlibHandler(log, LEVELS[level], secrets)
    root.addHandler(handler)
    root.setLevel(LEVELS[level])
    return handler
