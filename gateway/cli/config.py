"""``poa-gateway config check`` and ``config show``: the configuration as the daemon sees it."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from gateway.config import Config, ConfigError, load_config, render_toml
from gateway.exits import Exit

from .support import SubCommands, add_config_option, load_cli_config

__all__ = ["add_parser"]


def add_parser(sub: SubCommands) -> None:
    """Add ``config check`` and ``config show`` to a subcommand set."""
    config = sub.add_parser(
        "config",
        help="check and show the configuration file",
        description="Check the TOML configuration file and show the effective configuration.",
    )
    commands = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)

    check = commands.add_parser(
        "check",
        help="validate a configuration file",
        description=(
            "Validate a configuration file (FILE, else --config, $POA_GATEWAY_CONFIG or "
            "/etc/poa-gateway/poa-gateway.toml): print 'ok' and the effective configuration "
            "(defaults filled in, paths resolved, the password shown as ***) and exit 0, "
            "or print one line naming the offending key and exit 78 (EX_CONFIG). The "
            "password is read from the environment variable named by broker.password_env."
        ),
    )
    check.add_argument("file", type=Path, nargs="?", metavar="FILE", help="the TOML file")
    _add_common(check)
    check.set_defaults(handler=_cmd_check)

    show = commands.add_parser(
        "show",
        help="print the effective configuration",
        description=(
            "Print the effective configuration as TOML (FILE, else --config, "
            "$POA_GATEWAY_CONFIG or /etc/poa-gateway/poa-gateway.toml) with every default "
            "filled in and paths resolved; with --defaults, the built-in defaults (paths "
            "then relative to the current folder). Secrets are shown as ***."
        ),
    )
    show.add_argument("file", type=Path, nargs="?", metavar="FILE", help="the TOML file")
    show.add_argument("--defaults", action="store_true", help="the built-in defaults")
    _add_common(show)
    show.set_defaults(handler=_cmd_show)


def _add_common(parser: argparse.ArgumentParser) -> None:
    add_config_option(parser)
    parser.add_argument("--json", action="store_true", help="print JSON instead of TOML")


def _render(config: Config, as_json: bool) -> str:
    if as_json:
        return json.dumps(config.redacted_dict(), indent=2) + "\n"
    return render_toml(config)


def _load(args: argparse.Namespace, command: str) -> Config | None:
    if args.file is not None:
        args.config = args.file  # a positional FILE is the same as --config FILE
    if getattr(args, "defaults", False):
        try:
            return load_config(None, env=os.environ)
        except ConfigError as exc:  # only the environment can be wrong here
            print(f"poa-gateway config {command}: {exc}", file=sys.stderr)
            return None
    return load_cli_config(args, f"config {command}")


def _cmd_check(args: argparse.Namespace) -> int:
    config = _load(args, "check")
    if config is None:
        return Exit.CONFIG
    sys.stdout.write("ok\n" + _render(config, args.json))
    return Exit.OK


def _cmd_show(args: argparse.Namespace) -> int:
    config = _load(args, "show")
    if config is None:
        return Exit.CONFIG
    sys.stdout.write(_render(config, args.json))
    return Exit.OK
