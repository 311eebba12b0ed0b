"""``poa-gateway run``, ``status`` and ``explain``: the daemon and questions about its state."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, TypeAlias

from gateway.config import Config
from gateway.core.devices import DeviceType
from gateway.core.events import (
    Activation,
    AlertDecision,
    AlertOutcome,
    AlertReason,
    CommandOutcome,
)
from gateway.daemon_status import read_status
from gateway.errors import StartupError
from gateway.eui import format_eui64, parse_eui64
from gateway.exits import Exit
from gateway.state.audit import CommandRecord
from gateway.state.inventory_store import open_inventory
from gateway.state.sqlite import MARKER_SUFFIX, Store, StoreError

from .support import (
    SubCommands,
    add_config_option,
    add_json_option,
    load_cli_config,
    print_result,
    when,
)

if TYPE_CHECKING:
    from gateway.state.postgresql import PostgresStore

CliStore: TypeAlias = "Store | PostgresStore"
"""The state store a command reads: the one ``[state]`` names (:func:`with_state`)."""

_MAX_DETAIL = 300  # characters of an error's text quoted on stderr


def _open_state(config: Config, command: str) -> CliStore | None:
    if config.state.backend == "postgresql":
        return _open_postgres(config, command)
    path = config.paths.state
    # A missing state file with its marker still beside it is a lost store: Store.open
    # says so (state-lost). Without the marker there is simply no state yet.
    if not path.exists() and not path.with_name(path.name + MARKER_SUFFIX).exists():
        print(f"poa-gateway {command}: no state database at {path}", file=sys.stderr)
        return None
    try:
        return Store.open(path)
    except Exception as exc:  # noqa: BLE001 - see _unreadable_state
        _unreadable_state(command, path, exc)
        return None


def _open_postgres(config: Config, command: str) -> CliStore | None:
    # Imported here: a SQLite deployment's commands never load the PostgreSQL driver.
    from gateway.state.postgresql import PostgresStore  # noqa: PLC0415

    password = None if config.state_password is None else config.state_password.reveal()
    try:
        return PostgresStore.open(config.state.dsn, password=password, create=False)
    except StoreError as exc:
        # cannot-open (unreachable, refused, no such database), unsupported-schema,
        # not-a-store: each names host:port/db and never the password.
        print(f"poa-gateway {command}: {_one_line(exc)}", file=sys.stderr)
        return None
    except Exception as exc:  # noqa: BLE001 - see _unreadable_state
        _unreadable_state(command, _where(config), exc)
        return None


def _where(config: Config) -> str:
    """The state store of ``config``, for messages: the SQLite file, or
    ``postgresql:host:port/db`` (never the password)."""
    if config.state.backend != "postgresql":
        return str(config.paths.state)
    from gateway.state.postgresql import describe_dsn  # noqa: PLC0415

    return f"postgresql:{describe_dsn(config.state.dsn)}"


def _one_line(exc: Exception) -> str:
    try:
        detail = " ".join(str(exc).split())  # SQLite quotes schema text over many lines
    except Exception:  # noqa: BLE001 - an error built from a mangled row may not print
        detail = ""
    if not isinstance(exc, StoreError | sqlite3.Error):
        detail = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    if len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 3] + "..."
    return detail


def _unreadable_state(command: str, path: Path | str, exc: Exception) -> int:
    """Report a state database that cannot be opened or read in one line; Exit.FAILED.

    The file is outside input: a damaged page can hold any bytes, and the rows read
    from it any values, so whatever opening, reading or rendering it raises (StoreError,
    sqlite3's errors, or a decoding error of a mangled row) means "unreadable state",
    never a traceback. (``path`` is the SQLite file, or :func:`_where` of a PostgreSQL
    store.)
    """
    detail = _one_line(exc)
    where = "" if detail.startswith(str(path).removeprefix("postgresql:")) else f"{path}: "
    print(
        f"poa-gateway {command}: {where}{detail} (unreadable state database: if it is "
        "damaged, restore it from a backup, docs/operations.md)",
        file=sys.stderr,
    )
    return Exit.FAILED


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_cli_config(args, "run")
    if config is None:
        return Exit.CONFIG
    from gateway import service  # noqa: PLC0415 - the daemon's imports are only needed here
    from gateway.logs import JsonLog, buffered_stdout, route_stdlib_logging  # noqa: PLC0415

    log = JsonLog(buffered_stdout(), level=config.log.level)
    route_stdlib_logging(log, "warning")
    try:
        service.run(config, log)
    except KeyboardInterrupt:  # pragma: no cover - SIGINT is handled; this is belt and braces
        return Exit.OK
    except StartupError:
        return Exit.CONFIG  # logged as gateway.failed; restarting cannot help
    except Exception:  # noqa: BLE001 - the process boundary: logged as gateway.failed
        # A failure (an unreadable state database, a broker that refuses the
        # credentials ...) is one JSON line and a non-zero exit, so systemd restarts
        # it and journald shows why.
        return Exit.FAILED
    finally:
        log.flush()  # the log's stream is buffered (see buffered_stdout)
    return Exit.OK


def with_state(
    args: argparse.Namespace, command: str, read: Callable[[Config, CliStore], int]
) -> int:
    """Load ``--config``, open the state store its ``[state]`` names (the SQLite file
    ``paths.state``, or the PostgreSQL database of ``state.dsn`` with the password from
    the variable ``state.password_env`` names), and return ``read(config, store)`` (which
    prints and returns the exit status); whatever fails is one line on stderr and
    Exit.FAILED, never a traceback (see :func:`_unreadable_state`)."""
    config = load_cli_config(args, command)
    if config is None:
        return Exit.CONFIG
    store = _open_state(config, command)
    if store is None:
        return Exit.FAILED
    try:
        return read(config, store)
    except Exception as exc:  # noqa: BLE001 - see _unreadable_state
        return _unreadable_state(command, _where(config), exc)
    finally:
        store.close()


def _cmd_status(args: argparse.Namespace) -> int:
    return with_state(args, "status", lambda config, store: _status(args, config, store))


def _status(args: argparse.Namespace, config: Config, store: CliStore) -> int:
    # One section per source: the configuration, the store's windows and counts, the
    # local daemon's own status file.
    now = int(time.time() * 1000)
    lead = config.engine_config().lead_ms
    activations = store.load_activations()
    active = [a for a in activations if a.start_ms - lead <= now < a.end_ms]
    pending = [a for a in activations if a.start_ms - lead > now]
    out: dict[str, Any] = {
        "state": _where(config),
        "now": when(now),
        "feature_enabled": config.suppression.enabled,
        "windows_active": len(active),
        "windows_pending": len(pending),
        "counts": store.counts(),
        "daemon": read_status(config.paths.state),
    }
    if config.state.backend == "postgresql":
        out["ha"] = _ha_status(config, now)
    if args.windows:
        out["active"] = [_activation(a) for a in active]
        out["pending"] = [_activation(a) for a in pending]
    print_result(args, out)
    return Exit.OK


def _ha_status(config: Config, now: int) -> dict[str, Any]:
    """The leader lease and every instance, as the database has them (docs/ha.md)."""
    from gateway.state.lease import LeaseTable  # noqa: PLC0415 - PostgreSQL only

    password = None if config.state_password is None else config.state_password.reveal()
    table = LeaseTable(
        config.state.dsn,
        password,
        run_id="status",
        name="status",
        client_id=config.broker.client_id,
        lease_ms=int(config.ha.lease),
        lock_timeout_ms=1000,
        create=False,
    )
    try:
        view = table.view()
    except StoreError as exc:
        return {"error": exc.detail}
    finally:
        table.close()
    if view is None:
        return {"leader": None, "instances": [], "detail": "no instance has run on this store"}
    lease = view.lease
    leader: dict[str, Any] | None = None
    if lease is not None:
        leader = {
            "instance": lease.holder_name,
            "run_id": lease.holder,
            "epoch": lease.epoch,
            "client_id": lease.client_id,
            "since": when(lease.acquired_at_ms),
            "lease_expires": when(lease.expires_at_ms),
            "expired": lease.expires_at_ms <= view.now_ms,
        }
    # An instance that has not reported itself for three renewals is presumed gone.
    gone_after = 3 * int(config.ha.renew)
    instances = [
        {
            "name": i.name,
            "host": i.host,
            "pid": i.pid,
            "version": i.version,
            "role": i.role,
            "epoch": i.epoch,
            "client_id": i.client_id,
            "seen": when(i.seen_at_ms),
            "alive": view.now_ms - i.seen_at_ms <= gone_after,
            "holds_lease": lease is not None and i.run_id == lease.holder,
        }
        for i in view.instances
    ]
    return {"leader": leader, "instances": instances, "clock_skew_ms": now - view.now_ms}


def _activation(a: Any) -> dict[str, Any]:
    return {
        "request_id": a.request_id,
        "esme": format_eui64(a.esme),
        "chf": format_eui64(a.chf),
        "activation": a.kind,
        "window_start": when(a.start_ms),
        "window_end": when(a.end_ms),
        "closed_early": a.closed_early,
        "succeeded": a.succeeded,
    }


def _cmd_explain(args: argparse.Namespace) -> int:
    def read(config: Config, store: CliStore) -> int:
        out = _explain(store, args.subject, config)
        if out is None:
            print(f"poa-gateway explain: nothing known about {args.subject!r}", file=sys.stderr)
            return Exit.FAILED
        print_result(args, out)
        return Exit.OK

    return with_state(args, "explain", read)


# The first data record of a report is its line 3: line 1 is the HEADER, line 2 the
# column names (gateway/reports/files.py's module docstring).
_FIRST_DATA_LINE = 3


def _explain(store: CliStore, subject: str, config: Config | None = None) -> dict[str, Any] | None:
    """The answer to ``poa-gateway explain SUBJECT`` (docs/operations.md "Asking why:
    explain"): for an alert id, its decision and why; for an EUI-64, the device's
    windows and commands. None when the store knows nothing of ``subject``.

    With ``config``: a forwarded alert also gets the hub's HAN from the inventory with
    each ESME's latest command, and the nearest window with its gap; a suppressed one
    the report file and line that hold it."""
    stored = store.decision(subject)
    if stored is not None:
        return _explain_alert(store, stored, config)
    try:
        eui = parse_eui64(subject)
    except ValueError:
        return None
    tracked = store.activations_of(eui)
    commands = store.commands_for(eui)
    out: dict[str, Any] = {
        "device": format_eui64(eui),
        "activations": [_activation(a) for a in tracked],
    }
    if not tracked:
        out["why"] = "no tracked activation"
    out["commands"] = [_command(c) for c in commands]
    out["windows"] = [_window(w) for w in _windows(tracked, commands)]
    return out


def _explain_alert(
    store: CliStore, stored: tuple[AlertDecision, bool], config: Config | None
) -> dict[str, Any]:
    decision, effect_done = stored
    out: dict[str, Any] = {
        "alert_id": decision.alert_id,
        "chf": format_eui64(decision.chf),
        "decision": AlertOutcome.SUPPRESSED if decision.suppressed else AlertOutcome.FORWARDED,
        "reason": decision.reason,
        "judged_at": when(decision.judged_at),
        "decided_at": when(decision.decided_at),
        "effect_done": effect_done,
    }
    a = decision.activation
    if a is not None:
        out["why"] = f"raised inside the window of activation {a.request_id}"
        out["activation"] = _activation(a)
        commands = [
            c
            for c in store.commands_for(a.esme)
            if (c.originator, c.counter) == (a.originator, a.counter)
            and c.outcome is not CommandOutcome.REFUSED
        ]
        out["command"] = _command(commands[0]) if commands else None
        out["report"] = _report_of(store, decision.alert_id, config)
        return out
    if decision.reason is AlertReason.NO_WINDOW:
        out["why"] = "no tracked activation window of this CHF covered the instant judged"
    lead = config.engine_config().lead_ms if config is not None else 0
    windows = _windows(store.activations_of(decision.chf), store.commands_for(decision.chf))
    out["nearest_window"] = _nearest(windows, decision.judged_at, lead)
    out["han"] = _han(store, decision.chf, config)
    return out


def _command(c: CommandRecord) -> dict[str, Any]:
    # Without an envelope's RequestID, the DUIS one the command's header makes
    # (originator:target:counter), as an activation's.
    derived = f"{format_eui64(c.originator)}:{format_eui64(c.esme)}:{c.counter}"
    return {
        "request_id": c.request_id or derived,
        "esme": format_eui64(c.esme),
        "chf": format_eui64(c.chf) if c.chf is not None else None,
        "originator": format_eui64(c.originator),
        "counter": c.counter,
        "outcome": c.outcome,
        "refused": c.outcome is CommandOutcome.REFUSED,
        "reason": c.reason,
        "detail": c.detail,
        "seen_at": when(c.seen_at),
        "last_seen_at": when(c.last_seen_at),
    }


class _Window(NamedTuple):
    request_id: str
    esme: bytes
    start_ms: int
    end_ms: int
    closed_early: bool


def _windows(tracked: list[Activation], commands: list[CommandRecord]) -> list[_Window]:
    """The windows of these activations and, for those no longer tracked (run their
    course, or replaced), of the commands that opened them, as they were opened."""
    out = {
        (a.esme, a.originator, a.counter): _Window(
            a.request_id, a.esme, a.start_ms, a.end_ms, a.closed_early
        )
        for a in tracked
    }
    for c in commands:
        key = (c.esme, c.originator, c.counter)
        if key in out or c.window_start is None or c.window_end is None:
            continue
        request_id = _command(c)["request_id"]
        out[key] = _Window(request_id, c.esme, c.window_start, c.window_end, closed_early=False)
    return sorted(out.values(), key=lambda w: (w.start_ms, w.request_id))


def _window(w: _Window) -> dict[str, Any]:
    return {
        "request_id": w.request_id,
        "esme": format_eui64(w.esme),
        "window_start": when(w.start_ms),
        "window_end": when(w.end_ms),
        "closed_early": w.closed_early,
    }


def _nearest(windows: list[_Window], instant: int, lead: int) -> dict[str, Any] | None:
    """The window nearest ``instant`` (one covers ``[start - lead, end)``), before or
    after it, with the gap in seconds (0 when one covers it: closed early, say)."""
    best: tuple[int, str, _Window] | None = None
    for w in windows:
        opens = w.start_ms - lead
        if instant < opens:
            gap, position = opens - instant, "after"
        elif instant >= w.end_ms:
            gap, position = instant - w.end_ms, "before"
        else:
            gap, position = 0, "covering"
        if best is None or gap < best[0]:
            best = (gap, position, w)
    if best is None:
        return None
    gap, position, w = best
    return {**_window(w), "position": position, "gap_seconds": gap / 1000}


def _han(store: CliStore, chf: bytes, config: Config | None) -> dict[str, Any]:
    """The ESMEs on ``chf``'s HAN as the inventory lists them now, each with the latest
    command recorded for it."""
    if config is None:
        return {"esmes": None, "detail": "no configuration: the inventory was not read"}
    try:
        inventory = open_inventory(config, create=False)
        try:
            devices = inventory.devices_on_chf(chf)
        finally:
            inventory.close()
    except Exception:  # noqa: BLE001 - the audit still answers without the inventory
        return {"esmes": None, "detail": "the inventory could not be read"}
    esmes = []
    for d in devices:
        if d.device_type is not DeviceType.ESME:
            continue
        latest = store.commands_for(d.device_id, limit=1)
        esmes.append(
            {
                "esme": format_eui64(d.device_id),
                "manufacturer": d.manufacturer,
                "latest_command": _command(latest[0]) if latest else None,
            }
        )
    return {"esmes": esmes}


def _report_of(store: CliStore, alert_id: str, config: Config | None) -> dict[str, Any] | None:
    """The report file and line that hold a suppression record, or why there is none."""
    entries = store.suppressions_for(alert_id)
    if not entries:
        return {"status": "pruned", "detail": "the record is no longer in the log (retention)"}
    entry = entries[0]
    if entry.report_id is None:
        return {"status": "not yet reported", "seq": entry.seq}
    if config is None:
        return {"status": "reported", "report_id": entry.report_id, "seq": entry.seq}
    # A record is in the report of the period of its decision time (received_at);
    # reports.period is assumed unchanged since it was written.
    period = int(config.reports.period)
    start = entry.record.received_at - entry.record.received_at % period
    position = store.report_position(entry.seq, entry.report_id, start, start + period)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(start // 1000))
    return {
        "status": "reported",
        "report_id": entry.report_id,
        "file": f"{config.reports.name_prefix}_{stamp}_{entry.report_id}.csv",
        "record": position,
        "line": position + _FIRST_DATA_LINE - 1,
        "seq": entry.seq,
        "period_start": when(start),
    }


def add_parser(sub: SubCommands) -> None:
    """Add ``run``, ``status`` and ``explain``."""
    run = sub.add_parser(
        "run",
        help="run the gateway daemon",
        description=(
            "Run the suppression gateway: load state, connect to the broker, subscribe, and "
            "decide on every alert until SIGTERM. Logs are JSON lines on stdout."
        ),
    )
    add_config_option(run)
    run.set_defaults(handler=_cmd_run)

    status = sub.add_parser(
        "status",
        help="active and pending windows and counts, from the state database",
        description="Read the state database (safe while the daemon runs) and print a summary.",
    )
    add_config_option(status)
    add_json_option(status)
    status.add_argument("--windows", action="store_true", help="also list every window")
    status.set_defaults(handler=_cmd_status)

    explain = sub.add_parser(
        "explain",
        help="why an alert was forwarded or suppressed, or a device's windows and commands",
        description=(
            "Given an alert id: the decision and the instant judged; for a suppression, the "
            "window, the command behind it and the report file and line that hold it; for a "
            "forward, the ESMEs on the hub's HAN with each one's latest command (refused or "
            "not, and why) and the nearest window with its gap. Given an EUI-64 (ESME or "
            "CHF): its tracked activations, the commands recorded for it and their windows."
        ),
    )
    explain.add_argument("subject", metavar="ALERT_ID|EUI64")
    add_config_option(explain)
    add_json_option(explain)
    explain.set_defaults(handler=_cmd_explain)
