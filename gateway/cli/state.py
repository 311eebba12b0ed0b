"""``poa-gateway state copy``: move a deployment's state between SQLite and PostgreSQL.

The work is gateway/state/copy.py's; this module reads the options, takes the password
from the environment (never from the command line), prints what was copied and
verified, and turns errors into one line and an exit status (gateway/exits.py): 0
copied and verified, 1 failed (a store that cannot be reached or written, counts that
differ: nothing committed), 2 bad input (a store named wrongly, no source store, the
same store twice, a target that is not empty without ``--force``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from typing import Any

import msgspec

from gateway.exits import Exit

from .support import SubCommands, add_json_option

__all__ = ["add_parser"]

_PASSWORD_ENV = "POA_PG_PASSWORD"  # noqa: S105 - a variable's name, as state.password_env
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def add_parser(sub: SubCommands) -> None:
    """Add ``state`` and its subcommand ``copy``."""
    state = sub.add_parser(
        "state",
        help="the state store: copy it between SQLite and PostgreSQL",
        description="Work on a state store as a whole (the daemon must be stopped).",
    )
    commands = state.add_subparsers(dest="state_command", metavar="COMMAND", required=True)

    copy = commands.add_parser(
        "copy",
        help="copy a state store into another (SQLite <-> PostgreSQL)",
        description=(
            "Copy the activations, counters, decisions, suppression log (with its sequence "
            "numbers and report cursor) and quarantine of one state store into another, in "
            "one transaction, then check that each table holds as many rows as the "
            "source's. Stop the daemon first. The target is given the schema if it has "
            "none; one that already holds rows is refused unless --force. The PostgreSQL "
            "password comes only from the environment (--password-env); a DSN holding one "
            "is refused. Exit 0 copied and verified, 1 failed (nothing committed), 2 bad "
            "input. docs/operations.md: 'Moving a deployment between SQLite and PostgreSQL'."
        ),
    )
    copy.add_argument(
        "--from",
        dest="source",
        required=True,
        metavar="STORE",
        help="the store to copy: sqlite:PATH or postgresql:DSN",
    )
    copy.add_argument(
        "--to",
        dest="target",
        required=True,
        metavar="STORE",
        help="the store to write: sqlite:PATH or postgresql:DSN",
    )
    copy.add_argument(
        "--force",
        action="store_true",
        help="replace the rows of a target that is not empty (they are deleted first)",
    )
    copy.add_argument(
        "--password-env",
        default=_PASSWORD_ENV,
        metavar="NAME",
        help=(
            "the environment variable holding the PostgreSQL password, for either store "
            f"(default {_PASSWORD_ENV}); unset: none (trust, peer or ~/.pgpass)"
        ),
    )
    add_json_option(copy)
    copy.set_defaults(handler=_cmd_copy)


def _cmd_copy(args: argparse.Namespace) -> int:
    # Imported here: the other commands never load the copy (nor psycopg through it).
    from gateway.state.copy import (  # noqa: PLC0415
        CopyError,
        copy_state,
        parse_spec,
    )
    from gateway.state.errors import StoreError  # noqa: PLC0415

    command = "state copy"
    if not _ENV_NAME.fullmatch(args.password_env):
        return _fail(command, f"--password-env: {args.password_env!r} is not a variable name")
    password = os.environ.get(args.password_env) or None
    started = time.monotonic()
    try:
        source = parse_spec(args.source, option="--from")
        target = parse_spec(args.target, option="--to")
        report = copy_state(source, target, password=password, force=args.force)
    except CopyError as exc:
        status = Exit.USAGE if exc.bad_input else Exit.FAILED
        return _fail(command, _hide(str(exc), password), status)
    except StoreError as exc:
        return _fail(command, _hide(str(exc), password), Exit.FAILED)
    out: dict[str, Any] = msgspec.to_builtins(report)
    out["seconds"] = round(time.monotonic() - started, 3)
    out["verified"] = True
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        _print_report(out, replaced=args.force)
    return Exit.OK


def _print_report(out: dict[str, Any], *, replaced: bool) -> None:
    print(f"copied {out['source']} to {out['target']} in {out['seconds']:.1f} s")
    header = ["table", "source", "target"] + (["replaced"] if replaced else [])
    rows = [header]
    for t in out["tables"]:
        row = [t["table"], f"{t['source']:,}", f"{t['target']:,}"]
        rows.append(row + ([f"{t['replaced']:,}"] if replaced else []))
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [
            c.rjust(w) for c, w in zip(r[1:], widths[1:], strict=True)
        ]
        print("  ".join(cells))
    for name, value in out["next_numbers"].items():
        print(f"{name} continues at {value:,}")
    print("verified: every table of the target holds as many rows as the source's")


def _hide(text: str, password: str | None) -> str:
    # The errors are built never to hold the password (they name host:port/db); this
    # is the last guard before a terminal or a log.
    return text.replace(password, "***") if password else text


def _fail(command: str, detail: str, status: int = Exit.USAGE) -> int:
    print(f"poa-gateway {command}: {' '.join(detail.split())}", file=sys.stderr)
    return status
