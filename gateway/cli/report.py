"""``poa-gateway report``: verify suppression report files and show their records."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from gateway.eui import format_eui64
from gateway.exits import Exit
from gateway.reports.files import ReportError, ReportRow, format_time, read_report, verify_report
from gateway.reports.profile import (
    BUILTIN_PROFILES,
    DEFAULT_PROFILE_NAME,
    ProfileError,
    ReportProfile,
    load_profile,
)
from gateway.reports.signing import (
    SignatureStatus,
    SigningKeyError,
    check_signature,
    load_public_key,
    signature_path,
)

from .support import SubCommands, add_json_option

__all__ = ["add_parser", "record_json"]


def add_parser(sub: SubCommands) -> None:
    """Add ``report verify`` and ``report show`` to a subcommand set."""
    report = sub.add_parser(
        "report",
        help="verify suppression report files and show their records",
        description=(
            "Check and read the Power Outage Alert Suppression report files (CSV) that "
            "the gateway writes for the Network Operators."
        ),
    )
    commands = report.add_subparsers(dest="report_command", metavar="COMMAND", required=True)

    verify = commands.add_parser(
        "verify",
        help="check report files for completeness and integrity",
        description=(
            "Check each report against its profile (--profile, the built-in 'dno' by "
            "default): the HEADER record, the column names, every data record (EUI-64s, "
            "ISO 8601 UTC times, MPAN cores and distributors), and the TRAILER's record "
            "count and SHA-256 of the data records. With --key PUB, also the DSP's detached "
            "signature FILE.sig beside each report (DER ECDSA P-256 over SHA-256 of the "
            "whole file): the TRAILER shows a file is complete, the signature that the DSP "
            "wrote it; a missing or wrong signature fails. Prints 'FILE: ok, N records, "
            "sha256 HEX' (and ', signature ok') or one line per problem naming its line "
            "number (--json: one object per file). Exit status 0 only if every file is ok, "
            "1 if one is not, 2 if one or the key cannot be read."
        ),
    )
    verify.add_argument("files", nargs="+", type=Path, metavar="FILE", help="a report .csv file")
    verify.add_argument(
        "--key",
        type=Path,
        metavar="PUB",
        help="the DSP's report-signing public key or certificate (PEM, ECDSA P-256): "
        "also check each FILE.sig",
    )
    _add_profile_option(verify)
    add_json_option(verify)
    verify.set_defaults(handler=_cmd_verify)

    show = commands.add_parser(
        "show",
        help="print a report's records",
        description=(
            "Verify a report, then print each suppressed AD1, one per line; with --json as "
            "one JSON object per line keyed by the file's column names: EUI-64s as "
            "00-DB-12-34-56-78-90-A0, times as RFC 3339 UTC with milliseconds, "
            "originator_counter as a number, an empty cell as null. A report that "
            "fails verification prints its problems on stderr and nothing on stdout "
            "(exit status 1)."
        ),
    )
    show.add_argument("file", type=Path, metavar="FILE", help="a report .csv file")
    _add_profile_option(show)
    add_json_option(show)
    show.set_defaults(handler=_cmd_show)


def _add_profile_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--profile",
        metavar="PROFILE",
        help=f"the report layout the files were written with: a built-in profile "
        f"({', '.join(BUILTIN_PROFILES)}) or a profile .toml file, as in [reports] profile "
        f"(default: the built-in profile the HEADER names, else {DEFAULT_PROFILE_NAME})",
    )


def _profile(args: argparse.Namespace, command: str) -> tuple[bool, ReportProfile | None]:
    """(usable, the --profile given): None for "the one the HEADER names"."""
    if args.profile is None:
        return True, None
    try:
        return True, load_profile(args.profile)
    except ProfileError as exc:
        print(f"poa-gateway report {command}: --profile {exc}", file=sys.stderr)
        return False, None


def record_json(record: ReportRow, columns: tuple[str, ...]) -> dict[str, Any]:
    """A record as ``report show`` prints it (JSON-ready, in the file's column order)."""
    out: dict[str, Any] = {}
    for column in columns:
        value = getattr(record, column)
        if isinstance(value, bytes):
            value = format_eui64(value)
        elif isinstance(value, int) and column != "originator_counter":
            value = format_time(value)
        out[column] = value
    return out


def _cannot_read(command: str, path: Path, exc: OSError) -> None:
    print(
        f"poa-gateway report {command}: {path}: cannot read: {exc.strerror or exc}", file=sys.stderr
    )


def _cmd_verify(args: argparse.Namespace) -> int:
    usable, profile = _profile(args, "verify")
    if not usable:
        return Exit.USAGE
    key = None
    if args.key is not None:
        try:
            key = load_public_key(args.key)
        except SigningKeyError as exc:
            # Bad input, not a failed report: nothing was checked.
            print(f"poa-gateway report verify: --key {exc}", file=sys.stderr)
            return Exit.USAGE
    status = Exit.OK
    for path in args.files:
        signature: SignatureStatus | None = None
        try:
            check = verify_report(path, profile)
            problems = list(check.problems)
            if key is not None:
                signature, problem = check_signature(path, key)
                if problem is not None:
                    problems.append(problem)
        except OSError as exc:
            _cannot_read("verify", path, exc)
            status = max(status, Exit.USAGE)
            continue
        ok = not problems
        if not ok:
            status = max(status, Exit.FAILED)
        if args.json:
            out = {"file": str(path), "ok": ok, "records": check.records}
            out |= {"sha256": check.sha256, "signature": signature, "problems": problems}
            if signature is not None:
                out["signature_file"] = str(signature_path(path))
            print(json.dumps(out))
        elif ok:
            signed = ", signature ok" if signature is SignatureStatus.OK else ""
            print(f"{path}: ok, {check.records} records, sha256 {check.sha256}{signed}")
        else:
            for problem in problems:
                print(f"{path}: {problem}")
    return status


def _cmd_show(args: argparse.Namespace) -> int:
    path: Path = args.file
    usable, profile = _profile(args, "show")
    if not usable:
        return Exit.USAGE
    try:
        contents = read_report(path, profile)
    except OSError as exc:
        _cannot_read("show", path, exc)
        return Exit.USAGE
    except ReportError as exc:
        for problem in exc.problems:
            print(f"poa-gateway report show: {path}: {problem}", file=sys.stderr)
        return Exit.FAILED
    for record in contents.records:
        r = record_json(record, contents.columns)
        if args.json:
            print(json.dumps(r))
        else:
            # The columns the profile has, in its order, empty ones left out.
            print("  ".join(f"{k} {v}" for k, v in r.items() if v is not None and v != ""))
    return Exit.OK
