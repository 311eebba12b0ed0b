"""``poa-gateway guids``: import the GUID list sheet, check a GUID, describe the list.

The only place the GUID list code reads a clock (the import time stored in the file).
The importer, and with it python-calamine, is loaded by ``import`` only: ``check``,
``info`` and the daemon started through this command line run without it.
"""

from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.eui import format_eui64, parse_eui64
from gateway.exits import Exit
from gateway.guids import GuidList, GuidListError

from .support import (
    SubCommands,
    add_config_option,
    add_json_option,
    load_cli_config,
    print_result,
    when,
)

if TYPE_CHECKING:
    from gateway.guids_import import ImportReport

__all__ = ["add_parser"]

_LARGE_FILE = 5 * 1024 * 1024  # above this, say what is happening while the sheet is read


def _error(command: str, message: object) -> None:
    print(f"poa-gateway guids {command}: {message}", file=sys.stderr)


def _list_path(args: argparse.Namespace, given: Path | None, command: str) -> Path | Exit:
    """The compiled list: the option's path, else ``paths.guid_list`` of the configuration
    (the file the daemon maps), else the exit status after saying why there is none."""
    if given is not None:
        return given
    config = load_cli_config(args, f"guids {command}")
    return Exit.CONFIG if config is None else config.paths.guid_list


def _progress(done: int, total: int | None, *, every: int) -> None:
    if done < every:
        return  # a small file: no progress lines
    of = f" of {total:,}" if total else ""
    print(f"guids import: {done:,}{of} rows", file=sys.stderr, flush=True)


def _print_report(report: ImportReport, *, listing: bool) -> None:
    header = (
        f"header {report.header!r} in row {report.header_row}"
        if report.header_row is not None
        else "no header row"
    )
    print(f"source:      {report.source}")
    print(f"sheet:       {report.sheet!r}, column {report.column} ({header})")
    print(f"rows read:   {report.rows_read:,} ({report.blank_rows:,} blank)")
    print(f"valid:       {report.valid_count:,} rows, {report.unique_count:,} unique GUIDs")
    print(f"invalid:     {len(report.invalid):,} rows")
    if listing:
        for bad in report.invalid:
            print(
                f"  sheet {bad.sheet!r} row {bad.row} cell {bad.cell}: {bad.value!r}: {bad.detail}"
            )
    print(f"duplicates:  {len(report.duplicates):,} GUIDs on more than one row (compiled once)")
    if listing:
        for dup in report.duplicates:
            rows = ", ".join(str(row) for row in dup.rows)
            print(f"  {dup.value}: rows {rows}")
    print(f"sha256:      {report.sha256}")


def _cmd_import(args: argparse.Namespace) -> int:
    from gateway.guids_import import PROGRESS_EVERY, import_guid_list  # noqa: PLC0415 - see the top

    source = Path(args.file)
    output = _list_path(args, args.output, "import")
    if isinstance(output, Exit):
        return output
    quiet: bool = args.quiet
    try:
        if not quiet and source.stat().st_size > _LARGE_FILE:
            print(f"guids import: reading {source} ...", file=sys.stderr, flush=True)
    except OSError:
        pass  # import_guid_list reports it
    try:
        report = import_guid_list(
            source,
            output,
            imported_at_ms=time.time_ns() // 1_000_000,
            column=args.column,
            sheet=args.sheet,
            strict=args.strict,
            progress=None if quiet else functools.partial(_progress, every=PROGRESS_EVERY),
        )
    except GuidListError as exc:
        if exc.report is not None:
            # With no valid GUID at all (the wrong column?) the listing would be every row.
            _print_report(exc.report, listing=not quiet and exc.reason != "no-guids")
        _error("import", exc)
        return Exit.USAGE  # the sheet cannot be used (the sheet, row and cell are named)
    except OSError as exc:
        _error("import", f"{output}: cannot write: {exc.strerror or exc}")
        return Exit.FAILED
    _print_report(report, listing=not quiet)
    size = output.stat().st_size
    per_guid = size / report.unique_count
    print(f"output:      {output} ({size:,} bytes, {per_guid:.2f} bytes per GUID)")
    return Exit.OK


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        eui = parse_eui64(args.eui)
    except ValueError as exc:
        _error("check", exc)
        return Exit.USAGE
    path = _list_path(args, args.list, "check")
    if isinstance(path, Exit):
        return path
    try:
        with GuidList.open(path) as guids:
            found = eui in guids
    except GuidListError as exc:
        _error("check", exc)
        return Exit.USAGE
    if args.json:
        print_result(args, {"eui": format_eui64(eui), "listed": found, "list": str(path)})
    else:
        print("yes" if found else "no")
    return Exit.OK if found else Exit.FAILED


def _cmd_info(args: argparse.Namespace) -> int:
    path = _list_path(args, args.list, "info")
    if isinstance(path, Exit):
        return path
    try:
        with GuidList.open(path) as guids:
            count, digest, imported = len(guids), guids.sha256, guids.imported_at_ms
            first = format_eui64(guids[0].to_bytes(8, "big")) if count else "-"
            last = format_eui64(guids[-1].to_bytes(8, "big")) if count else "-"
    except GuidListError as exc:
        _error("info", exc)
        return Exit.FAILED
    print_result(
        args,
        {
            "list": str(path),
            "count": count,
            "first": first,
            "last": last,
            "sha256": digest,  # of the source sheet
            "imported": when(imported),
        },
    )
    return Exit.OK


def add_parser(sub: SubCommands) -> None:
    """Add the ``guids`` command and its subcommands to ``sub``."""
    guids = sub.add_parser(
        "guids",
        help="import the Landis+Gyr GUID list and query the compiled list",
        description=(
            "The GUID list names the Landis+Gyr meters whose firmware-caused alerts may be "
            "suppressed. 'import' compiles the spreadsheet into the file the daemon maps; "
            "'check' and 'info' read that file."
        ),
    )
    commands = guids.add_subparsers(dest="guids_command", metavar="SUBCOMMAND", required=True)

    imp = commands.add_parser(
        "import",
        help="compile a GUID list sheet (.xlsx or .csv)",
        description=(
            "Read the GUID column of FILE (found by its header: GUID, ESME GUID, EUI-64, "
            "EUI, Device ID; or --column), report every invalid row and duplicate, and "
            "write the sorted GUIDs atomically to --output, or else to paths.guid_list of "
            "the configuration (the file the daemon maps). Invalid rows are skipped unless "
            "--strict. Exit 0 when the list was written, 2 for a sheet that cannot be used, "
            "1 when the list cannot be written."
        ),
    )
    imp.add_argument("file", metavar="FILE", help="the GUID list: .xlsx or .csv")
    imp.add_argument(
        "--column",
        metavar="C",
        help="the GUID column: header text, a column letter (C) or a 1-based number",
    )
    imp.add_argument(
        "--sheet",
        metavar="S",
        help="sheet name or 1-based number (default: the first sheet with a GUID header)",
    )
    imp.add_argument(
        "--output",
        type=Path,
        metavar="PATH",
        help="compiled list to write (default: paths.guid_list of the configuration)",
    )
    add_config_option(imp)
    imp.add_argument(
        "--strict", action="store_true", help="write nothing if any row is invalid (exit 1)"
    )
    imp.add_argument(
        "--quiet",
        action="store_true",
        help="no progress lines and no per-row listing; counts only",
    )
    imp.set_defaults(handler=_cmd_import)

    check = commands.add_parser(
        "check",
        help="is a GUID on the compiled list? (prints yes or no)",
        description=(
            "Print 'yes' (exit 0) if EUI is on the compiled list, 'no' (exit 1) if not; "
            "exit 2 if EUI is not an EUI-64 or the list cannot be read."
        ),
    )
    check.add_argument(
        "eui", metavar="EUI", help="00-DB-12-34-56-78-90-A0, 00DB1234567890A0 or 00:db:..."
    )
    _add_list_options(check)
    check.set_defaults(handler=_cmd_check)

    info = commands.add_parser(
        "info",
        help="describe the compiled list: count, source SHA-256, import time",
        description="Print the number of GUIDs, the source sheet's SHA-256 and the import time.",
    )
    _add_list_options(info)
    info.set_defaults(handler=_cmd_info)


def _add_list_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--list",
        type=Path,
        metavar="PATH",
        help="compiled list (default: paths.guid_list of the configuration)",
    )
    add_config_option(parser)
    add_json_option(parser)
