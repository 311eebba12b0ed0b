"""The daemon's own view of itself, for ``poa-gateway status``: one small JSON file beside
the state file (``daemon-status.json``), written by the daemon on every change of broker
connection or store health and read by ``status``, which reads files, not the daemon.

The writer and the reader of the format live here together.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from .reports.files import format_time

__all__ = ["read_status", "status_path", "write_status"]


def status_path(state: Path) -> Path:
    """Where the daemon of the state file ``state`` writes its view."""
    return state.with_name("daemon-status.json")


def write_status(
    state: Path,
    *,
    version: str,
    running: bool,
    started_at: int,
    updated_at: int,
    host: str,
    port: int,
    connected: bool,
    store_ok: bool,
    role: str | None = None,
    epoch: int | None = None,
) -> None:
    """Replace the view atomically (a rename). Raises OSError (a full disk): the caller
    carries on, and ``status`` shows the last view written."""
    status = {
        "pid": os.getpid(),
        "version": version,
        "running": running,
        "started_at": started_at,
        "updated_at": updated_at,
        "broker": {"host": host, "port": port, "connected": connected},
        "store": {"ok": store_ok},
    }
    if role is not None:
        # With the state in PostgreSQL: leader or standby (docs/ha.md).
        status["ha"] = {"role": role, "epoch": epoch}
    path = status_path(state)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(status) + "\n")
    os.replace(tmp, path)


def read_status(state: Path) -> dict[str, Any]:
    """The running daemon's own view (``daemon-status.json`` beside the state file,
    written on every change of broker connection or store health): whether it runs,
    whether it is connected to the broker, whether its store commits."""
    path = status_path(state)
    try:
        raw = json.loads(path.read_text())
    except FileNotFoundError:
        return {"running": False, "detail": "never started with this state"}
    except (OSError, ValueError) as exc:
        return {"running": None, "detail": f"{path}: unreadable: {exc}"}
    if not isinstance(raw, dict):
        return {"running": None, "detail": f"{path}: not a status object"}
    pid = raw.get("pid")
    running = bool(raw.get("running")) and isinstance(pid, int) and _alive(pid)
    broker = raw.get("broker")
    broker = broker if isinstance(broker, dict) else {}
    store = raw.get("store")
    store = store if isinstance(store, dict) else {}
    out: dict[str, Any] = {
        "running": running,
        "pid": pid if running else None,
        "version": raw.get("version"),
        "broker_connected": bool(broker.get("connected")) if running else False,
        "broker": f"{broker.get('host')}:{broker.get('port')}",
        "store_ok": bool(store.get("ok")) if running else None,
    }
    for key in ("started_at", "updated_at"):
        value = raw.get(key)
        if isinstance(value, int) and 0 <= value < 253402300800000:  # before year 10000
            out[key] = format_time(value)
    return out


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, another user's (status run as an operator, not the daemon)
    except (OSError, OverflowError):
        return False  # OverflowError: a pid no process can have (a mangled file)
    return True
