"""``poa-gateway run``, ``status`` and ``explain``: the daemon and questions about its state."""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from gateway.config import Config
from gateway.core.events import AlertOutcome, AlertReason
from gateway.daemon_status import read_status
from gateway.errors import StartupError
from gateway.eui import format_eui64, parse_eui64
from gateway.exits import Exit
from gateway.state.sqlite import MARKER_SUFFIX, Store, StoreError

from .support import (
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
    def read(_config: Config, store: CliStore) -> int:
        out = _explain(store, args.subject)
        if out is None:
            print(f"poa-gateway explain: nothing known about {args.subject!r}", file=sys.stderr)
            return Exit.FAILED
        print_result(args, out)
        return Exit.OK

    return with_state(args, "explain", read)


def _explain(store: CliStore, subject: str) -> dict[str, Any] | None:
    stored = store.decision(subject)
    if stored is not None:
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
        if decision.activation is not None:
            out["why"] = f"raised inside the window of activation {decision.activation.request_id}"
            out["activation"] = _activation(decision.activation)
        elif decision.reason is AlertReason.NO_WINDOW:
            out["why"] = "no tracked activation window of this CHF covered the instant judged"
        return out
    try:
        eui = parse_eui64(subject)
    except ValueError:
        return None
    tracked = [a for a in store.load_activations() if eui in (a.esme, a.chf)]
    if not tracked:
        return {"device": format_eui64(eui), "activations": [], "why": "no tracked activation"}
    return {"device": format_eui64(eui), "activations": [_activation(a) for a in tracked]}


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
        help="why an alert was forwarded or suppressed, or a device's activations",
        description=(
            "Given an alert id: the decision, the instant judged and the activation behind a "
            "suppression. Given an EUI-64 (ESME or CHF): its tracked activations."
        ),
    )
    explain.add_argument("subject", metavar="ALERT_ID|EUI64")
    add_config_option(explain)
    add_json_option(explain)
    explain.set_defaults(handler=_cmd_explain)
