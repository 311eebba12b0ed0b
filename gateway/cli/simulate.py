"""``poa-gateway simulate``: the simulated CSP/DSP, end to end, with a scorecard.

Builds an estate, writes a gateway home for it, starts the gateway, plays firmware
rollouts, device behaviour, attacks and outages on the broker in scaled time, and
prints the scorecard. Exit status 0 when it passes, 1 otherwise (and when the run could
not be played). Progress lines go to stderr, the scorecard to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
from pathlib import Path

import msgspec

from gateway.config import format_duration, parse_duration
from gateway.simulator.population import BrokerAddress
from gateway.simulator.process import default_gateway_command
from gateway.simulator.runner import SimulationError, SimulationOptions, SimulationOutcome, simulate
from gateway.transport.embedded_broker import EmbeddedBroker

from .support import SubCommands

__all__ = ["add_parser"]

EXIT_PASSED = 0
EXIT_FAILED = 1


def _duration(text: str) -> int:
    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _broker(text: str) -> BrokerAddress:
    try:
        return BrokerAddress.parse(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_parser(sub: SubCommands) -> None:
    """Add ``simulate`` to a subcommand set."""
    p = sub.add_parser(
        "simulate",
        help="play a simulated CSP/DSP against the gateway and print a scorecard",
        description=(
            "Build a population of premises (an ESME and its CHF each), write a gateway "
            "home for it (trust store, GUID list, inventory, configuration scaled to the "
            "time scale), start the gateway, and play firmware rollouts (on-demand and "
            "future-dated CS06, cancellations, reschedules, replays and forgeries), the "
            "meters' responses, firmware reboots and genuine outages (scattered, and a "
            "storm) on the broker. Prints how many firmware-caused AD1s were suppressed, "
            "genuine ones forwarded, lost, duplicated, latency and refused commands; exits "
            "1 when an AD1 was lost, a firmware-caused one got through, or one outside "
            "every window was suppressed."
        ),
    )
    p.add_argument(
        "--broker",
        type=_broker,
        default=None,
        metavar="URL",
        help=(
            "a real MQTT broker, mqtt://HOST:PORT; without it the simulator runs an embedded "
            "broker (amqtt, in-process, MQTT 3.1.1)"
        ),
    )
    p.add_argument("--premises", type=_positive, default=10_000, metavar="N", help="default 10000")
    p.add_argument(
        "--scale",
        type=_positive,
        default=60,
        metavar="S",
        help="simulated seconds per real second (default 60: a 30-minute window lasts 30 s)",
    )
    p.add_argument("--seed", type=int, default=1, help="seed of the population and timeline")
    p.add_argument(
        "--duration",
        type=_duration,
        default=2 * 3_600_000,
        metavar="DUR",
        help="simulated length of the run (default 2h; at least 70m)",
    )
    p.add_argument(
        "--home",
        type=Path,
        metavar="DIR",
        help="new or empty folder for the gateway's home (default: a new temporary folder)",
    )
    gw = p.add_mutually_exclusive_group()
    gw.add_argument(
        "--gateway-cmd",
        metavar="CMD",
        default=shlex.join(default_gateway_command()),
        help="command that runs poa-gateway ('run --config FILE' is added; default: %(default)s)",
    )
    gw.add_argument(
        "--no-gateway",
        action="store_true",
        help="do not start a gateway: wait for one started with the written configuration",
    )
    p.add_argument(
        "--window-override",
        type=_duration,
        metavar="DUR",
        help="give the gateway this (simulated) window instead of 30m, to see the scorecard fail",
    )
    p.add_argument(
        "--empty-guid-list",
        action="store_true",
        help="give the gateway an empty GUID list, to see the scorecard fail",
    )
    p.add_argument(
        "--restoration-on-reboot",
        action="store_true",
        help="meters send a restoration alert (8F35/8F36) after every firmware reboot, "
        "against FIA assumption A5 (default: none, as A5 says); the scorecard counts them",
    )
    p.add_argument("--json", action="store_true", help="print the scorecard as JSON")
    p.set_defaults(handler=_cmd_simulate)


def _progress(line: str) -> None:
    print(f"simulate: {line}", file=sys.stderr, flush=True)


async def _simulate(options: SimulationOptions, *, embedded: bool) -> SimulationOutcome:
    if not embedded:
        return await simulate(options, _progress)
    broker = EmbeddedBroker()
    await broker.start()
    _progress(f"embedded broker (amqtt, MQTT 3.1.1) on {broker.url}")
    try:
        address = BrokerAddress(host="127.0.0.1", port=broker.port, protocol=4)
        return await simulate(
            msgspec.structs.replace(options, broker=address), _progress, check_broker=False
        )
    finally:
        await broker.stop()


def _cmd_simulate(args: argparse.Namespace) -> int:
    options = SimulationOptions(
        broker=args.broker or BrokerAddress(host="127.0.0.1", port=1883),
        premises=args.premises,
        scale=args.scale,
        seed=args.seed,
        duration_ms=args.duration,
        home=args.home,
        gateway_command=None if args.no_gateway else tuple(shlex.split(args.gateway_cmd)),
        window_override_ms=args.window_override,
        empty_guid_list=args.empty_guid_list,
        restoration_on_reboot=args.restoration_on_reboot,
    )
    try:
        outcome = asyncio.run(_simulate(options, embedded=args.broker is None))
    except (SimulationError, ValueError, RuntimeError) as exc:
        print(f"poa-gateway simulate: {exc}", file=sys.stderr)
        return EXIT_FAILED
    home = outcome.home
    where = [
        f"gateway log:    {home.log}",
        f"report outbox:  {home.outbox}",
        f"metrics:        {home.metrics_url} (while the gateway ran)",
        f"configuration:  {home.config} (durations divided by {home.scale}: window "
        f"{format_duration(max(1, home.times.window_ms // home.scale))})",
    ]
    if args.json:
        data = json.loads(outcome.scorecard.to_json())
        data["home"] = {
            "root": str(home.root),
            "log": str(home.log),
            "outbox": str(home.outbox),
            "metrics_url": home.metrics_url,
            "config": str(home.config),
        }
        print(json.dumps(data, indent=2))
        for line in where:
            _progress(line)
    else:
        print(outcome.scorecard.render_table())
        print()
        print("\n".join(where))
    return EXIT_PASSED if outcome.scorecard.passed else EXIT_FAILED
