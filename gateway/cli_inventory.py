"""``poa-gateway inventory``: import a Smart Metering Inventory CSV, show one device.

The import stamps every row with the wall-clock time of the run (the one clock read in
the inventory code: :mod:`gateway.inventory` itself takes times as arguments).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from .eui import format_eui64, parse_eui64
from .inventory import ImportIssue, Inventory, InventoryError

__all__ = ["DEFAULT_DB", "add_parser"]

DEFAULT_DB = Path("var/inventory.sqlite")
"""Where the inventory lives unless ``--db`` says otherwise (relative to the cwd)."""

_EXIT_OK = 0
_EXIT_BAD_INPUT = 1


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``inventory import`` and ``inventory show`` to a subcommand set."""
    inventory = sub.add_parser(
        "inventory",
        help="import and inspect the Smart Metering Inventory",
        description="Import and inspect the Smart Metering Inventory (a SQLite file).",
    )
    commands = inventory.add_subparsers(dest="inventory_command", metavar="COMMAND", required=True)

    imp = commands.add_parser(
        "import",
        help="upsert the devices of an inventory CSV",
        description=(
            "Upsert every valid row of an inventory CSV into the inventory, creating it if "
            "needed. The header names the columns (any case): device_id, device_type, "
            "smets, manufacturer, status, and optionally model, chf_id and supplier_id (the "
            "EUI-64 of the meter's registered import supplier: only that Supplier's CS06 "
            "then opens a window). EUI-64s may be written 00-DB-12-34-56-78-90-A0, "
            "00:db:... or 00DB1234567890A0; an empty field means absent. Invalid rows "
            "are listed (line, column, value, reason) and skipped; the exit status is 0 "
            "unless the file or the inventory cannot be used."
        ),
    )
    imp.add_argument("csv", type=Path, metavar="FILE.csv", help="the inventory CSV")
    _add_db(imp)
    imp.set_defaults(handler=_cmd_import)

    show = commands.add_parser(
        "show",
        help="print one device as JSON",
        description="Print the inventory record of one device as JSON; exit 1 if unknown.",
    )
    show.add_argument("eui", metavar="EUI", help="device EUI-64, e.g. 00-DB-12-34-56-78-90-A0")
    _add_db(show)
    show.set_defaults(handler=_cmd_show)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        default=DEFAULT_DB,
        metavar="PATH",
        help=f"the inventory SQLite file (default: {DEFAULT_DB})",
    )


def _fail(command: str, message: str) -> int:
    print(f"poa-gateway inventory {command}: {message}", file=sys.stderr)
    return _EXIT_BAD_INPUT


def _cmd_import(args: argparse.Namespace) -> int:
    db: Path = args.db
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return _fail("import", f"{db.parent}: cannot create folder: {exc.strerror or exc}")
    now_ms = time.time_ns() // 1_000_000
    started = time.monotonic()
    try:
        with Inventory.open(db) as inventory:
            report = inventory.import_csv(args.csv, now_ms)
            total = inventory.count()
    except InventoryError as exc:
        return _fail("import", str(exc))
    elapsed = time.monotonic() - started
    print(
        f"{report.path}: {report.rows_read} rows read, {report.rows_imported} imported, "
        f"{report.rows_invalid} invalid ({len(report.issues)} problems) in {elapsed:.1f} s; "
        f"{db} now holds {total} devices"
    )
    for issue in report.issues:
        print(_describe(report.path, issue))
    return _EXIT_OK


def _describe(path: str, issue: ImportIssue) -> str:
    where = f"{path}:{issue.line}"
    if issue.column is None:
        return f"{where}: {issue.reason}: {issue.detail}"
    return f"{where}: {issue.column} {issue.value!r}: {issue.reason}: {issue.detail}"


def _cmd_show(args: argparse.Namespace) -> int:
    try:
        device_id = parse_eui64(args.eui)
    except ValueError as exc:
        return _fail("show", str(exc))
    try:
        with Inventory.open(args.db, create=False) as inventory:
            record = inventory.get(device_id)
    except InventoryError as exc:
        return _fail("show", str(exc))
    if record is None:
        return _fail("show", f"{format_eui64(device_id)} is not in the inventory {args.db}")
    out = {
        "device_id": format_eui64(record.device_id),
        "device_type": record.device_type.value,
        "smets": record.smets,
        "manufacturer": record.manufacturer,
        "model": record.model,
        "chf_id": None if record.chf_id is None else format_eui64(record.chf_id),
        "status": record.status.value,
        "supplier_id": None if record.supplier_id is None else format_eui64(record.supplier_id),
    }
    print(json.dumps(out, indent=2))
    return _EXIT_OK
