"""``poa-gateway guids``: import the GUID list sheet, check a GUID, describe the list.

The only place the GUID list code reads a clock (the import time stored in the file).
"""

from __future__ import annotations

import argparse
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

from .eui import format_eui64, parse_eui64
from .guids import PROGRESS_EVERY, GuidList, GuidListError, ImportReport, import_guid_list

__all__ = ["DEFAULT_LIST", "add_parser"]

DEFAULT_LIST = Path("var/guid-list.bin")
"""Where ``guids import`` writes and ``check``/``info`` read, relative to the working folder."""

_LARGE_FILE = 5 * 1024 * 1024  # above this, say what is happening while the sheet is read

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _error(command: str, message: object) -> None:
    print(f"poa-gateway guids {command}: {message}", file=sys.stderr)


def _progress(done: int, total: int | None) -> None:
    if done < PROGRESS_EVERY:
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
    source = Path(args.file)
    output = Path(args.output)
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
            progress=None if quiet else _progress,
        )
    except GuidListError as exc:
        if exc.report is not None:
            # With no valid GUID at all (the wrong column?) the listing would be every row.
            _print_report(exc.report, listing=not quiet and exc.reason != "no-guids")
        _error("import", exc)
        return EXIT_FAILED
    except OSError as exc:
        _error("import", f"{output}: cannot write: {exc.strerror or exc}")
        return EXIT_FAILED
    _print_report(report, listing=not quiet)
    size = output.stat().st_size
    per_guid = size / report.unique_count
    print(f"output:      {output} ({size:,} bytes, {per_guid:.2f} bytes per GUID)")
    return EXIT_OK


def _cmd_check(args: argparse.Namespace) -> int:
    try:
        eui = parse_eui64(args.eui)
    except ValueError as exc:
        _error("check", exc)
        return EXIT_USAGE
    try:
        with GuidList.open(args.list) as guids:
            found = eui in guids
    except GuidListError as exc:
        _error("check", exc)
        return EXIT_USAGE
    print("yes" if found else "no")
    return EXIT_OK if found else EXIT_FAILED


def _cmd_info(args: argparse.Namespace) -> int:
    try:
        with GuidList.open(args.list) as guids:
            count, digest, imported = len(guids), guids.sha256, guids.imported_at_ms
            first = format_eui64(guids[0].to_bytes(8, "big")) if count else "-"
            last = format_eui64(guids[-1].to_bytes(8, "big")) if count else "-"
    except GuidListError as exc:
        _error("info", exc)
        return EXIT_FAILED
    when = datetime.fromtimestamp(imported / 1000, tz=UTC).isoformat(timespec="milliseconds")
    print(f"list:        {args.list}")
    print(f"count:       {count:,}")
    print(f"range:       {first} .. {last}")
    print(f"sha256:      {digest} (of the source sheet)")
    print(f"imported:    {when}")
    return EXIT_OK


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
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
            "write the sorted GUIDs to --output atomically. Invalid rows are skipped "
            "unless --strict. Exit 0 when the list was written, 1 otherwise."
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
        default=DEFAULT_LIST,
        metavar="PATH",
        help=f"compiled list to write (default: {DEFAULT_LIST})",
    )
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
    check.add_argument(
        "--list",
        type=Path,
        default=DEFAULT_LIST,
        metavar="PATH",
        help=f"compiled list (default: {DEFAULT_LIST})",
    )
    check.set_defaults(handler=_cmd_check)

    info = commands.add_parser(
        "info",
        help="describe the compiled list: count, source SHA-256, import time",
        description="Print the number of GUIDs, the source sheet's SHA-256 and the import time.",
    )
    info.add_argument(
        "--list",
        type=Path,
        default=DEFAULT_LIST,
        metavar="PATH",
        help=f"compiled list (default: {DEFAULT_LIST})",
    )
    info.set_defaults(handler=_cmd_info)
