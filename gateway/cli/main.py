"""The ``poa-gateway`` command line.

Every subcommand has ``--help``. Bad input prints one line naming the reason on
stderr and exits non-zero; no traceback reaches an operator for bad input.
"""

from __future__ import annotations

import argparse
import binascii
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import gbcs
from gateway import __version__
from gateway.errors import GatewayError
from gateway.exits import Exit
from gateway.render import render_frame

from . import config, daemon, guids, inventory, quarantine, report, simulate, state
from .support import SubCommands


class CliError(GatewayError):
    """A user-facing error: printed as one line, exit status ``Exit.USAGE``."""


def _read_input(source: str, raw: bool) -> bytes:
    try:
        data = sys.stdin.buffer.read() if source == "-" else Path(source).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read: {exc.strerror or exc}") from exc
    if raw:
        return data
    text = b"".join(data.split())  # hex may be wrapped over lines or spaced
    if text[:2].lower() == b"0x":
        text = text[2:]
    try:
        return binascii.unhexlify(text)
    except (binascii.Error, ValueError) as exc:
        raise CliError(f"input is not hex ({exc}); use --raw for binary input") from exc


def _cmd_decode(args: argparse.Namespace) -> int:
    store = None
    if args.trust is not None:
        try:
            store = gbcs.TrustStore.from_directory(args.trust)
        except (gbcs.GbcsError, OSError) as exc:
            print(f"poa-gateway decode: trust store: {exc}", file=sys.stderr)
            return Exit.USAGE
    status = Exit.OK
    one_line = args.json or len(args.files) > 1
    for source in args.files:
        name = "<stdin>" if source == "-" else source
        try:
            frame = gbcs.decode_frame(_read_input(source, args.raw))
        except (CliError, gbcs.GbcsError) as exc:
            print(f"poa-gateway decode: {name}: {exc}", file=sys.stderr)
            status = Exit.USAGE
            continue
        verification = gbcs.verify_frame(frame, store) if store is not None else None
        out = {"file": name, **render_frame(frame, verification)}
        print(json.dumps(out) if one_line else json.dumps(out, indent=2))
    return status


def build_parser() -> argparse.ArgumentParser:
    """The argument parser (exposed for tests and documentation)."""
    return _build()[0]


def _build() -> tuple[argparse.ArgumentParser, SubCommands]:
    parser = argparse.ArgumentParser(
        prog="poa-gateway",
        description="AD1 Power Outage Alert suppression gateway (SEC MP102B).",
    )
    parser.add_argument("--version", action="version", version=f"poa-gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    decode = sub.add_parser(
        "decode",
        help="decode GBCS frames and print them as JSON",
        description=(
            "Decode GBCS frames (hex text, or bytes with --raw) and print each as JSON: "
            "header fields, message code and name, payload fields, and the signature "
            "(checked against --trust DIR, else reported as not checked). One file "
            "prints indented JSON for a person; several, or --json, print one JSON object "
            "per line. Exit 2 if a frame cannot be decoded."
        ),
    )
    decode.add_argument(
        "--json", action="store_true", help="one JSON object per line, also for one file"
    )
    decode.add_argument("files", nargs="+", metavar="FILE", help="a frame file, or - for stdin")
    decode.add_argument("--raw", action="store_true", help="input is binary, not hex")
    decode.add_argument(
        "--trust", type=Path, metavar="DIR", help="folder of PEM certificates to verify against"
    )
    decode.set_defaults(handler=_cmd_decode)
    daemon.add_parser(sub)
    config.add_parser(sub)
    guids.add_parser(sub)
    inventory.add_parser(sub)
    report.add_parser(sub)
    quarantine.add_parser(sub)
    state.add_parser(sub)
    simulate.add_parser(sub)
    return parser, sub


def subcommand_names() -> list[str]:
    """Names of every subcommand (tests check each one has ``--help``)."""
    _, sub = _build()
    return sorted(sub.choices)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``poa-gateway`` console script."""
    args = build_parser().parse_args(argv)
    handler = args.handler
    try:
        result: int = handler(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`poa-gateway report show X | head`): end quietly. Point
        # stdout at /dev/null so the interpreter's final flush does not raise again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return Exit.OK
    return result


if __name__ == "__main__":
    sys.exit(main())
