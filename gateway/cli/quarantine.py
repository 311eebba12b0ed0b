"""``poa-gateway quarantine list|show|replay``: messages the daemon could not handle.

A message whose handling raised on every attempt is kept in the state store with its
topic and exact bytes, announced on ``gateway/quarantine`` and acknowledged, so that it
cannot hold back the messages behind it (docs/decisions.md D24). These commands let an
operator look at it and, once the cause is fixed (a new version, a corrected
inventory), publish it again to its topic, where the daemon handles it like any other.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import sys
from typing import Any

from gateway.config import Config
from gateway.exits import Exit
from gateway.state.sqlite import QuarantineEntry, StoreError

from .daemon import CliStore, with_state
from .support import (
    SubCommands,
    add_config_option,
    add_json_option,
    print_result,
    when,
)

_PREVIEW_BYTES = 64


def add_parser(sub: SubCommands) -> None:
    """Add ``quarantine`` and its subcommands."""
    q = sub.add_parser(
        "quarantine",
        help="messages the daemon could not handle: list, show, replay",
        description=(
            "Messages whose handling raised on every attempt are kept with their topic and "
            "exact bytes in the state store (and announced on gateway/quarantine). A DCC "
            "alert among them was forwarded to the DNOs all the same."
        ),
    )
    qsub = q.add_subparsers(dest="quarantine_command", metavar="COMMAND", required=True)

    listing = qsub.add_parser("list", help="the quarantined messages, newest first")
    add_config_option(listing)
    add_json_option(listing)
    listing.add_argument("--limit", type=int, default=100, help="at most this many (100)")
    listing.set_defaults(handler=_cmd_list)

    show = qsub.add_parser("show", help="one quarantined message, with its bytes")
    show.add_argument("id", metavar="ID", help="the entry id (q-...)")
    add_config_option(show)
    add_json_option(show)
    show.add_argument(
        "--raw", action="store_true", help="write the message's bytes to stdout, nothing else"
    )
    show.set_defaults(handler=_cmd_show)

    replay = qsub.add_parser(
        "replay",
        help="publish a quarantined message again to its topic",
        description=(
            "Publish the message's exact bytes to its original topic (QoS 1, waiting for "
            "the broker's acknowledgement) with a client id of its own, and mark the entry "
            "replayed. The daemon handles it like any other message; should it fail again, "
            "it is quarantined afresh."
        ),
    )
    replay.add_argument("id", metavar="ID", help="the entry id (q-...)")
    add_config_option(replay)
    replay.set_defaults(handler=_cmd_replay)


def entry_json(entry: QuarantineEntry, *, payload: bool) -> dict[str, Any]:
    """An entry as JSON: times in RFC 3339, the bytes in base64 (and a hex preview)."""
    out: dict[str, Any] = {
        "id": entry.id,
        "topic": entry.topic,
        "reason": entry.reason,
        "error": entry.error,
        "attempts": entry.attempts,
        "received_at": when(entry.received_at),
        "quarantined_at": when(entry.quarantined_at),
        "forwarded": entry.forwarded,
        "replayed_at": None if entry.replayed_at is None else when(entry.replayed_at),
        "bytes": len(entry.payload),
        "preview_hex": entry.payload[:_PREVIEW_BYTES].hex(),
    }
    if payload:
        out["payload_base64"] = base64.b64encode(entry.payload).decode("ascii")
    return out


def _cmd_list(args: argparse.Namespace) -> int:
    def read(_config: Config, store: CliStore) -> int:
        entries = store.quarantined(max(1, args.limit))
        if args.json:
            print(json.dumps([entry_json(e, payload=False) for e in entries], indent=2))
            return Exit.OK
        if not entries:
            print("no quarantined messages")
        for e in entries:
            replayed = f"  replayed {when(e.replayed_at)}" if e.replayed_at is not None else ""
            forwarded = "  forwarded" if e.forwarded else ""
            print(
                f"{e.id}  {when(e.quarantined_at)}  {e.topic}  {e.reason}  "
                f"{len(e.payload)} bytes{forwarded}{replayed}"
            )
        return Exit.OK

    return with_state(args, "quarantine list", read)


def _lookup(store: CliStore, entry_id: str, command: str) -> QuarantineEntry | None:
    entry = store.quarantine_entry(entry_id)
    if entry is None:
        print(f"poa-gateway {command}: no quarantined message {entry_id!r}", file=sys.stderr)
    return entry


def _entry(args: argparse.Namespace, command: str) -> QuarantineEntry | int:
    """The entry ``args.id``, or the exit status after saying why there is none."""
    found: list[QuarantineEntry] = []

    def read(_config: Config, store: CliStore) -> int:
        entry = _lookup(store, args.id, command)
        if entry is None:
            return Exit.FAILED
        found.append(entry)
        return Exit.OK

    status = with_state(args, command, read)
    return found[0] if found else status


def _cmd_show(args: argparse.Namespace) -> int:
    entry = _entry(args, "quarantine show")
    if isinstance(entry, int):
        return entry
    if args.raw:
        sys.stdout.buffer.write(entry.payload)
        sys.stdout.buffer.flush()
        return Exit.OK
    print_result(args, entry_json(entry, payload=args.json))
    return Exit.OK


def _cmd_replay(args: argparse.Namespace) -> int:
    command = "quarantine replay"

    def replay(config: Config, store: CliStore) -> int:
        # One configuration and one store for the look-up, the publish and the mark.
        entry = _lookup(store, args.id, command)
        if entry is None:
            return Exit.FAILED
        from gateway import service  # noqa: PLC0415 - the MQTT client is only needed here
        from gateway.transport.mqtt import (  # noqa: PLC0415
            ConnectionRefusedPermanently,
            MqttAdapter,
        )

        # A client id of its own (the daemon's would take over its session) and a
        # session that ends with the connection.
        settings = service.mqtt_settings(
            config,
            client_id=f"{config.broker.client_id}-replay-{os.getpid()}",
            session_expiry_s=0,
            reconnect_max_s=2.0,
        )

        async def noop(_topic: str, _payload: bytes) -> None:
            return None

        async def publish() -> None:
            adapter = MqttAdapter(settings, noop)
            try:
                await asyncio.wait_for(adapter.connect(), timeout=30)
                await asyncio.wait_for(adapter.publish(entry.topic, entry.payload), timeout=30)
            finally:
                await adapter.close()

        try:
            asyncio.run(publish())
        except (TimeoutError, OSError, ConnectionRefusedPermanently) as exc:
            b = config.broker
            print(
                f"poa-gateway {command}: cannot publish to {b.host}:{b.port}: {exc!r}",
                file=sys.stderr,
            )
            return Exit.FAILED

        async def mark() -> None:
            store.mark_replayed(entry.id, service.wall_ms())
            await store.flush()

        try:
            asyncio.run(mark())
        except StoreError as exc:
            print(f"poa-gateway {command}: published, but not marked: {exc}", file=sys.stderr)
            return Exit.FAILED
        print(f"replayed {entry.id} to {entry.topic} ({len(entry.payload)} bytes)")
        return Exit.OK

    return with_state(args, command, replay)
