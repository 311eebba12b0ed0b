"""``poa-gateway inventory``: import a Smart Metering Inventory CSV, show one device.

Which inventory: ``--db FILE`` names a SQLite file; without it, the one the
configuration names (:func:`gateway.state.inventory_store.open_inventory`): the SQLite
file ``paths.inventory``, or with ``[state] backend = "postgresql"`` the state database,
which every gateway instance reads.

The import stamps every row with the wall-clock time of the run (the one clock read in
the inventory code: :mod:`gateway.state.inventory` itself takes times as arguments).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from gateway.core.mpan import distributor_of
from gateway.eui import format_eui64, parse_eui64
from gateway.exits import Exit
from gateway.state.inventory import ImportIssue, Inventory, InventoryError, InventoryStore
from gateway.state.inventory_store import open_inventory

from .support import SubCommands, add_config_option, add_json_option, load_cli_config, print_result

__all__ = ["add_parser"]


def add_parser(sub: SubCommands) -> None:
    """Add ``inventory import`` and ``inventory show`` to a subcommand set."""
    inventory = sub.add_parser(
        "inventory",
        help="import and inspect the Smart Metering Inventory",
        description=(
            "Import and inspect the Smart Metering Inventory: a SQLite file, or the "
            'PostgreSQL state database with [state] backend = "postgresql".'
        ),
    )
    commands = inventory.add_subparsers(dest="inventory_command", metavar="COMMAND", required=True)

    imp = commands.add_parser(
        "import",
        help="upsert the devices of an inventory CSV",
        description=(
            "Upsert every valid row of an inventory CSV into the inventory, creating it if "
            "needed. The header names the columns (any case): device_id, device_type, "
            "smets, manufacturer, status, and optionally model, chf_id, supplier_id (the "
            "EUI-64 of the meter's registered import supplier: only that Supplier's CS06 "
            "then opens a window) and mpan (the 13-digit MPAN core, spaces allowed, its "
            "check digit checked). EUI-64s may be written 00-DB-12-34-56-78-90-A0, "
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
        help=(
            "an inventory SQLite file (default: the configuration's inventory: the file "
            "paths.inventory, or the PostgreSQL state database)"
        ),
    )
    add_config_option(parser)


def _open(args: argparse.Namespace, command: str, *, create: bool) -> InventoryStore | Exit:
    """``--db`` (a SQLite file), else the inventory of the configuration (the daemon's).

    With ``create``, the folder of a SQLite file is made if missing. A failure to load
    the configuration or to make the folder is printed here, and its status returned.

    Raises:
        InventoryError: the inventory cannot be opened.
    """
    if args.db is not None:
        db = Path(args.db)
        if create and not _make_folder(command, db):
            return Exit.FAILED
        return Inventory.open(db, create=create)
    config = load_cli_config(args, f"inventory {command}")
    if config is None:
        return Exit.CONFIG
    file = config.paths.inventory if config.state.backend == "sqlite" else None
    if create and file is not None and not _make_folder(command, file):
        return Exit.FAILED
    return open_inventory(config, create=create)


def _make_folder(command: str, file: Path) -> bool:
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(command, f"{file.parent}: cannot create folder: {exc.strerror or exc}")
        return False
    return True


def _fail(command: str, message: str, status: Exit = Exit.USAGE) -> int:
    print(f"poa-gateway inventory {command}: {message}", file=sys.stderr)
    return status


def _cmd_import(args: argparse.Namespace) -> int:
    now_ms = time.time_ns() // 1_000_000
    started = time.monotonic()
    try:
        opened = _open(args, "import", create=True)
        if isinstance(opened, Exit):
            return opened
        with opened as inventory:
            report = inventory.import_csv(args.csv, now_ms)
            total = inventory.count()
            where = inventory.path
    except InventoryError as exc:
        return _fail("import", str(exc))
    elapsed = time.monotonic() - started
    print(
        f"{report.path}: {report.rows_read} rows read, {report.rows_imported} imported, "
        f"{report.rows_invalid} invalid ({len(report.issues)} problems) in {elapsed:.1f} s; "
        f"{where} now holds {total} devices"
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
    try:
        opened = _open(args, "show", create=False)
        if isinstance(opened, Exit):
            return opened
        with opened as inventory:
            record = inventory.get(device_id)
            where = inventory.path
    except InventoryError as exc:
        return _fail("show", str(exc), Exit.FAILED)
    if record is None:
        message = f"{format_eui64(device_id)} is not in the inventory {where}"
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
        "mpan": record.mpan,
        # The distribution area and its operator, named by the MPAN's first two digits.
        "distributor": None if record.mpan is None else distributor_of(record.mpan[:2]).name,
    }
    print_result(args, out)
    return Exit.OK
