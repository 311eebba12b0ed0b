"""What every subcommand shares: where the configuration is, how a time is printed, and
how a result is printed for a person or, with ``--json``, for a program.

One configuration path. Every subcommand that needs state takes ``--config FILE``;
without it, ``$POA_GATEWAY_CONFIG``; without that, ``/etc/poa-gateway/poa-gateway.toml``
(where the Debian layout of docs/operations.md puts it). Options that name a file
directly (``guids --list``, ``inventory --db``) override what the configuration says.

One way to print a time: RFC 3339, UTC, with milliseconds (``2030-01-15T09:00:00.000Z``),
as the logs, the reports and ``--json`` output write them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Protocol

from gateway.config import Config, ConfigError, load_config
from gateway.reports.files import format_time

__all__ = [
    "CONFIG_ENV",
    "DEFAULT_CONFIG",
    "SubCommands",
    "add_config_option",
    "add_json_option",
    "config_path",
    "load_cli_config",
    "print_human",
    "print_result",
    "when",
]


class SubCommands(Protocol):
    """The set of subcommands ``ArgumentParser.add_subparsers()`` returns, as far as the
    commands use it. argparse names that class privately (``_SubParsersAction``); this
    names the public method we call, so that no module here names argparse's private
    class (tests/test_no_library_internals.py)."""

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        """Add a subcommand and return its parser."""
        ...

    @property
    def choices(self) -> Any:
        """Each subcommand's name, mapped to its parser (an argparse Action's choices)."""
        ...


DEFAULT_CONFIG: Final = Path("/etc/poa-gateway/poa-gateway.toml")
"""The configuration file when neither ``--config`` nor :data:`CONFIG_ENV` names one."""

CONFIG_ENV: Final = "POA_GATEWAY_CONFIG"
"""The environment variable naming the configuration file (below ``--config``)."""


def add_config_option(parser: argparse.ArgumentParser) -> None:
    """``--config FILE``, with the default spelled out in ``--help``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        help=f"the configuration file (default: ${CONFIG_ENV}, else {DEFAULT_CONFIG})",
    )


def add_json_option(parser: argparse.ArgumentParser) -> None:
    """``--json``: print JSON for a program instead of text for a person."""
    parser.add_argument("--json", action="store_true", help="print JSON instead of text")


def config_path(args: argparse.Namespace) -> Path:
    """The configuration file to use: ``--config``, else $POA_GATEWAY_CONFIG, else /etc."""
    given: Path | None = getattr(args, "config", None)
    if given is not None:
        return given
    env = os.environ.get(CONFIG_ENV)
    return Path(env) if env else DEFAULT_CONFIG


def load_cli_config(args: argparse.Namespace, command: str) -> Config | None:
    """The configuration, or None after one line on stderr naming the file and the key
    at fault (the caller exits with ``Exit.CONFIG``)."""
    path = config_path(args)
    try:
        return load_config(path, env=os.environ)
    except ConfigError as exc:
        hint = ""
        if exc.reason == "unreadable" and getattr(args, "config", None) is None:
            hint = f" (give --config FILE or set {CONFIG_ENV})"
        print(f"poa-gateway {command}: {path}: {exc}{hint}", file=sys.stderr)
        return None


def when(ms: int | None) -> str | None:
    """A time in milliseconds since the epoch, as every command prints it (RFC 3339 UTC
    with milliseconds); a value no calendar can show is printed as its number."""
    if ms is None:
        return None
    try:
        return format_time(ms)
    except (ValueError, OverflowError):
        return str(ms)


def print_result(args: argparse.Namespace, result: Any) -> None:
    """``result`` as indented JSON with ``--json``, else as text (:func:`print_human`)."""
    if getattr(args, "json", False):
        print(json.dumps(result, indent=2))
    else:
        print_human(result)


def print_human(value: Any, indent: int = 0) -> None:
    """A mapping as aligned ``key: value`` lines, nested mappings and lists indented."""
    pad = " " * indent
    if isinstance(value, Mapping):
        if not value:
            print(f"{pad}(none)")
            return
        width = max(len(str(k)) for k in value) + 1
        for key, item in value.items():
            if _scalar(item):
                print(f"{pad}{str(key) + ':':<{width}} {_text(item)}")
            else:
                print(f"{pad}{key}:")
                print_human(item, indent + 2)
        return
    if isinstance(value, Sequence) and not isinstance(value, str | bytes):
        if not value:
            print(f"{pad}(none)")
        for i, item in enumerate(value):
            if _scalar(item):
                print(f"{pad}- {_text(item)}")
            else:
                if i:
                    print()
                print_human(item, indent + 2)
        return
    print(f"{pad}{_text(value)}")


def _scalar(value: Any) -> bool:
    if isinstance(value, Mapping):
        return False
    return isinstance(value, str | bytes) or not isinstance(value, Sequence)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if value is True:
        return "yes"
    if value is False:
        return "no"
    if isinstance(value, int):
        return f"{value:,}" if abs(value) >= 10_000 else str(value)
    return str(value)
