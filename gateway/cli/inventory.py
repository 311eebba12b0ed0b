"""``poa-gateway inventory``: import a Smart Metering Inventory CSV, show one device.

The import stamps every row with the wall-clock time of the run (the one clock read in
the inventory code: :mod:`gateway.state.inventory` itself takes times as arguments).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.eui import format_eui64, parse_eui64
from gateway.exits import Exit
from gateway.state.inventory import ImportIssue, Inventory, InventoryError

from .support import add_config_option, add_json_option, load_cli_config, print_result

__all__ = ["add_parser"]


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
        help="print one device's inventory record",
        description=(
            "Print the inventory record of one device (--json: as JSON); exit 1 if it is "
            "not in the inventory, 2 if EUI is not an EUI-64."
        ),
    )
    show.add_argument("eui", metavar="EUI", help="device EUI-64, e.g. 00-DB-12-34-56-78-90-A0")
    _add_db(show)
    add_json_option(show)
    show.set_defaults(handler=_cmd_show)


def _add_db(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--db",
        type=Path,
        metavar="PATH",
        help="the inventory SQLite file (default: paths.inventory of the configuration)",
    )
    add_config_option(parser)


def _db(args: argparse.Namespace, command: str) -> Path | Exit:
    """``--db``, else ``paths.inventory`` of the configuration (the daemon's inventory)."""
    if args.db is not None:
        return Path(args.db)
    config = load_cli_config(args, f"inventory {command}")
    return Exit.CONFIG if config is None else config.paths.inventory


def _fail(command: str, message: str, status: Exit = Exit.USAGE) -> int:
    print(f"poa-gateway inventory {command}: {message}", file=sys.stderr)
    return status


def _cmd_import(args: argparse.Namespace) -> int:
    db = _db(args, "import")
    if isinstance(db, Exit):
        return db
    try:
        db.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        message = f"{db.parent}: cannot create folder: {exc.strerror or exc}"
        return _fail("import", message, Exit.FAILED)
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
    return Exit.OK


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
    db = _db(args, "show")
    if isinstance(db, Exit):
        return db
    try:
        with Inventory.open(db, create=False) as inventory:
            record = inventory.get(device_id)
    except InventoryError as exc:
        return _fail("show", str(exc), Exit.FAILED)
    if record is None:
        message = f"{format_eui64(device_id)} is not in the inventory {db}"
        return _fail("show", message, Exit.FAILED)
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
    print_result(args, out)
    return Exit.OK
