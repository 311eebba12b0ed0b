"""Fault-injection campaign: what comes out of the gateway when one message makes it
raise, when its state store cannot commit, and when it is killed while it cannot.

Correctness figures under fault, not timings (issue 9; docs/decisions.md D24, D25).
Every part starts a tuned mosquitto (``bench/throughput.py``'s: ``max_inflight_messages
1000``, persistence) on a free loopback port, in a fresh temporary directory, and
streams AD1s at ``--rate`` per second (QoS 1, paced on a monotonic schedule, each batch
of a tick published concurrently through ``tests/e2e_support.Client``, which also
collects the outputs). Even-numbered alerts come from CHFs with an open window and must
be suppressed, odd ones from a CHF in no inventory and must be forwarded; every alert id
is unique, so an id seen twice on the outputs is a duplicate and one never seen is lost.

1. **poison**: the gateway in this process (``tests/test_faults.in_process``, real
   SQLite files) with ``Engine.on_dcc_alert`` patched to raise for the alert in the
   middle of the stream. It must be tried ``HANDLER_ATTEMPTS`` times, forwarded
   unjudged, quarantined once, and hold back nothing (issue 9 before the fix: 1,277 of
   30,000 AD1s came out).
2. **full-disk**: ``poa-gateway run`` as a child process whose state file is on a
   ``--tmpfs-mb`` tmpfs; ``--meters`` listed meters (``tests/test_faults.meters``) get
   CS06 windows: a third before the stream, a third trickled in while the disk is full
   (some reach the daemon before its store fails, the rest wait at the broker), a third
   after. Mid-stream the tmpfs is filled to the last byte (``tests/test_faults.fill``)
   for ``--full-seconds``, then freed. The daemon must hold intake and wait: nothing
   lost, nothing repeated (before the fix: 58,221 extra copies for 40,000 alerts), every
   window in the state after a clean restart. Peak inbound in progress is from the
   ``mqtt.stats`` line the daemon logs when it stops.
3. **kill-while-full**: as 2, but the daemon is SIGKILLed in the middle of the full
   period, the disk freed and the daemon started again. Nothing may be lost; duplicates
   (outputs published before a commit that never happened) are bounded by the messages
   in flight to the daemon at the kill, counted from the broker's debug log (PUBLISHes
   sent to the daemon's receiving client minus its PUBACKs), printed beside
   ``[broker] receive_maximum`` (the bound D25 states) and mosquitto's
   ``max_inflight_messages``.

The tmpfs parts need root (``mount``); without it they print a skip line. Every child
(mosquitto, the daemon) runs under ``setpriv --pdeathsig KILL`` and is stopped by PID at
the end; the tmpfs is unmounted at the end, and on SIGTERM.

Run from the checkout: ``.venv/bin/python bench/faults.py`` (``--parts poison,full-disk``
to choose; ``--alerts``, ``--rate``, ``--meters``, ``--full-seconds`` to scale). Prints a
table per part; exit status 1 when an alert or a window was lost (or a part could not
run to the end), else 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import io
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final
from unittest import mock

# The checkout, for gateway and tests (bench/ itself is on the path: throughput).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import BenchDaemon, DecisionLog, Run, TunedBroker, log, revision

from gateway import wire
from gateway.config import Config, load_config
from gateway.core.engine import Engine
from gateway.core.events import AlertDecision
from gateway.metrics import Metrics
from gateway.quarantine import HANDLER_ATTEMPTS
from gateway.service import GC_THRESHOLDS, Gateway
from gateway.state.sqlite import Store
from tests.e2e_support import CHF, OTHER_CHF, Client, Home, cs06, now_ms
from tests.test_faults import fill, in_process, meters, sqlite, until

PARTS: Final = ("poison", "full-disk", "kill-while-full")
FORWARDED: Final = "dno/dcc/alert"
SUPPRESSED: Final = "gateway/suppressed"
QUARANTINE: Final = "gateway/quarantine"
TICK_S: Final = 0.01  # the publisher's pacing tick: rate * TICK_S alerts per batch
GRACE_S: Final = 1.0  # after the last distinct output, for late duplicates
BROKER_INFLIGHT: Final = 1000  # TunedBroker's max_inflight_messages


class Interrupted(Exception):
    """SIGTERM: stop the children, unmount, then exit."""


def _interrupted(signum: int, _frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


# -- the stream and its outputs ------------------------------------------------------------


class Sink(Client):
    """The test suite's client, also noting when the last output arrived."""

    def __init__(self, port: int, name: str) -> None:
        super().__init__(port, name)
        self.last_output_at = 0.0

    async def _on_message(self, topic: str, payload: bytes) -> None:
        if topic in (FORWARDED, SUPPRESSED):
            self.last_output_at = time.monotonic()
        await super()._on_message(topic, payload)


class Tally:
    """The client's outputs, decoded as they arrive (never re-scanned)."""

    def __init__(self, client: Client, must_forward: frozenset[str] = frozenset()) -> None:
        self.client = client
        self.must_forward = must_forward  # judged otherwise than by its number
        self.copies: Counter[str] = Counter()
        self.forwarded: set[str] = set()
        self.suppressed: set[str] = set()
        self.wrong = 0  # suppressed odd, forwarded even (or a must_forward one suppressed)
        self._read = {FORWARDED: 0, SUPPRESSED: 0}

    def update(self) -> int:
        """Decode what arrived since the last call; returns the distinct ids out."""
        for topic, into in ((FORWARDED, self.forwarded), (SUPPRESSED, self.suppressed)):
            got = self.client.received[topic]
            for payload in got[self._read[topic] :]:
                if topic == FORWARDED:
                    alert_id = wire.decode_dcc_alert(payload).alert_id
                else:
                    alert_id = wire.decode_suppression_record(payload).alert_id
                self.copies[alert_id] += 1
                if alert_id not in into:
                    into.add(alert_id)
                    self.wrong += self._wrong(alert_id, suppressed=topic == SUPPRESSED)
            self._read[topic] = len(got)
        return len(self.copies)

    def _wrong(self, alert_id: str, *, suppressed: bool) -> int:
        windowed = int(alert_id.rsplit("-", 1)[1]) % 2 == 0 and alert_id not in self.must_forward
        return int(suppressed != windowed)

    @property
    def duplicates(self) -> int:
        return sum(self.copies.values()) - len(self.copies)

    def lost(self, sent: list[str]) -> int:
        return sum(1 for alert_id in sent if alert_id not in self.copies)


def stream_of(tag: str, count: int, windowed: list[bytes]) -> list[tuple[str, bytes]]:
    """``count`` (alert id, CHF): even ones on the ``windowed`` CHFs in turn, odd ones
    on a CHF in no inventory."""
    return [
        (f"{tag}-{i}", windowed[(i // 2) % len(windowed)] if i % 2 == 0 else OTHER_CHF)
        for i in range(count)
    ]


@dataclass
class Published:
    """When the stream started and when its last alert was acknowledged by the broker."""

    started: float
    done: float = 0.0
    count: int = 0

    @property
    def rate(self) -> float:
        span = self.done - self.started
        return self.count / span if span > 0 else 0.0


async def publish_paced(
    client: Client, alerts: list[tuple[str, bytes]], rate: float, published: Published
) -> None:
    """Publish ``alerts`` at ``rate`` per second: every tick, the ones due by then, as
    concurrent publishes (each returns at its PUBACK), so a slow acknowledgement does not
    hold back the schedule."""
    batches: list[asyncio.Future[list[bytes]]] = []
    sent = 0
    while sent < len(alerts):
        due = min(len(alerts), int((time.monotonic() - published.started) * rate) + 1)
        if due > sent:
            raised_at = now_ms()
            batch = [client.alert(alert_id, chf, raised_at) for alert_id, chf in alerts[sent:due]]
            batches.append(asyncio.gather(*batch))
            sent = due
        await asyncio.sleep(TICK_S)
    await asyncio.gather(*batches)
    published.done = time.monotonic()
    published.count = sent


async def drain(tally: Tally, expect: int, idle_s: float) -> None:
    """Until ``expect`` distinct ids came out, or none more for ``idle_s`` seconds; then
    a grace for late duplicates."""
    seen, since = tally.update(), time.monotonic()
    while seen < expect:
        await asyncio.sleep(0.05)
        now = tally.update()
        if now != seen:
            seen, since = now, time.monotonic()
        elif time.monotonic() - since > idle_s:
            log(f"  no output for {idle_s:.0f} s: giving up with {seen:,} of {expect:,} out")
            break
    await asyncio.sleep(GRACE_S)
    tally.update()


async def wait_logged(decisions: DecisionLog, event: str, count: int, limit_s: float) -> bool:
    """Until the daemon has logged ``event`` ``count`` times (True) or ``limit_s`` passed."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        decisions.poll()
        if decisions.events[event] >= count:
            return True
        await asyncio.sleep(0.05)
    return False


# -- reporting -------------------------------------------------------------------------------


@dataclass
class Figures:
    """One part's table, and whether it lost anything."""

    title: str
    rows: list[tuple[str, str, str]] = field(default_factory=list)
    lost: int = 0
    skipped: str = ""  # why the part could not run here

    def add(self, figure: str, value: object, note: str = "") -> None:
        if isinstance(value, float):
            text = f"{value:,.2f}"
        elif isinstance(value, int):
            text = f"{value:,}"
        else:
            text = str(value)
        self.rows.append((figure, text, note))

    def show(self) -> None:
        print(f"\n== {self.title} ==")
        if self.skipped:
            print(f"skipped: {self.skipped}", flush=True)
            return
        wf = max(len(r[0]) for r in self.rows)
        wv = max(len(r[1]) for r in self.rows)
        for figure, value, note in self.rows:
            print(f"{figure.ljust(wf)}  {value.rjust(wv)}  {note}".rstrip())
        sys.stdout.flush()


def log_summary(events: list[dict[str, Any]]) -> tuple[int, str]:
    """How many warning and error lines the gateway logged, and which, with counts."""
    seen = Counter(
        str(e.get("event")) for e in events if e.get("level") in ("warning", "error", "critical")
    )
    return seen.total(), ", ".join(f"{name} x{n}" for name, n in seen.most_common())


# -- part 1: a poison alert ------------------------------------------------------------------


@contextlib.asynccontextmanager
async def gateway_in_process(config: Config) -> AsyncIterator[tuple[Gateway, Any, Metrics]]:
    """``tests/test_faults.in_process``, without the whole gateway log that it prints
    when it ends (tens of thousands of lines here; the bench reads the log itself)."""
    inner = in_process(config)
    started = await inner.__aenter__()
    try:
        yield started
    finally:
        with contextlib.redirect_stdout(io.StringIO()):
            await inner.__aexit__(*sys.exc_info())


async def part_poison(run: Run, args: argparse.Namespace) -> Figures:
    count = args.alerts or 30_000
    poison = f"p-{count // 2}"
    out = Figures(
        f"poison: {count:,} AD1s at {args.rate:,.0f}/s, {poison} raises in Engine.on_dcc_alert "
        "(gateway in process)"
    )
    log(f"poison: {count:,} AD1s, {poison} raises in Engine.on_dcc_alert")
    broker = run.broker("poison-broker")
    home = Home(run.root / "poison-gw", broker.port)
    config = load_config(home.config, env={})
    real = Engine.on_dcc_alert
    tries = Counter[str]()  # attempts on the poison alert

    def flaky(self: Engine, alert: wire.DccAlertEnvelope, now: int) -> AlertDecision:
        if alert.alert_id == poison:
            tries[poison] += 1
            raise ZeroDivisionError("injected: a bug that only this alert reaches")
        return real(self, alert, now)

    alerts = stream_of("p", count, [CHF])
    sent = [alert_id for alert_id, _ in alerts]
    client = Sink(broker.port, "poison")
    await client.start()
    tally = Tally(client, must_forward=frozenset({poison}))
    published = Published(0.0)
    gc.set_threshold(*GC_THRESHOLDS)  # as the daemon runs (gateway.service.run)
    try:
        with mock.patch.object(Engine, "on_dcc_alert", flaky):
            async with gateway_in_process(config) as (gateway, lines, _metrics):
                await client.command(cs06(home, 1000))
                await until(lambda: lines.events("activation.tracked"), "the window")
                published.started = time.monotonic()
                await publish_paced(client, alerts, args.rate, published)
                log(f"  published {published.count:,} at {published.rate:,.0f}/s")
                await drain(tally, count, args.idle)
                quarantined = len(sqlite(gateway).quarantined())
                events = lines.events()
    finally:
        await client.close()
    lost = tally.lost(sent)
    out.lost = lost
    out.add("sent", count, f"paced at {published.rate:,.0f}/s")
    out.add("came out (distinct)", len(tally.copies), "issue 9 before the fix: 1,277 of 30,000")
    out.add("lost", lost, "must be 0")
    out.add("duplicates", tally.duplicates)
    out.add("suppressed", len(tally.suppressed))
    forwarded_note = "the poison one included" if poison in tally.forwarded else "POISON NOT OUT"
    out.add("forwarded", len(tally.forwarded), forwarded_note)
    out.add("wrong outcome", tally.wrong, "suppressed odd or forwarded even, poison aside")
    out.add("quarantined entries in the store", quarantined, "goal 1")
    out.add("notices on gateway/quarantine", len(client.received[QUARANTINE]))
    out.add("tries of the poison alert", tries[poison], f"HANDLER_ATTEMPTS = {HANDLER_ATTEMPTS}")
    last_output = max(client.last_output_at - published.done, 0.0)
    out.add("seconds from last publish to last output", round(last_output, 3))
    out.add("gateway warning/error lines", *log_summary(events))
    return out


# -- parts 2 and 3: a full disk --------------------------------------------------------------


class Mounts:
    """The tmpfs file systems mounted here, unmounted by :meth:`close`."""

    def __init__(self) -> None:
        self.points: list[Path] = []

    def tmpfs(self, point: Path, size_mb: int) -> str | None:
        """Mount a tmpfs at ``point``; None, or why it cannot be mounted."""
        point.mkdir(parents=True, exist_ok=True)
        done = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(point)],
            capture_output=True,
            text=True,
            check=False,
        )
        if done.returncode != 0:
            return done.stderr.strip() or f"mount exited {done.returncode}"
        self.points.append(point)
        return None

    def close(self) -> None:
        while self.points:
            point = self.points.pop()
            done = subprocess.run(["umount", str(point)], capture_output=True, check=False)
            if done.returncode != 0:  # still busy (a child not yet reaped): detach it
                subprocess.run(["umount", "-l", str(point)], capture_output=True, check=False)


def in_flight_at(broker_log: Path, client_id: str, upto: int) -> int:
    """PUBLISHes the broker sent to ``client_id`` minus the PUBACKs it had from it, in
    the first ``upto`` bytes of its debug log: what that client held unacknowledged."""
    with broker_log.open("rb") as f:
        data = f.read(upto)
    sent = data.count(f"Sending PUBLISH to {client_id} (".encode())
    acked = data.count(f"Received PUBACK from {client_id} (".encode())
    return sent - acked


async def publish_commands(client: Client, frames: list[bytes]) -> None:
    await asyncio.gather(*(client.command(frame) for frame in frames))


async def publish_spread(client: Client, frames: list[bytes], over_s: float) -> None:
    """One command every ``over_s / len(frames)`` seconds, the first after one interval."""
    started = time.monotonic()
    step = over_s / max(len(frames), 1)
    for i, frame in enumerate(frames):
        await asyncio.sleep(max(0.0, started + (i + 1) * step - time.monotonic()))
        await client.command(frame)


@dataclass
class Timeline:
    """When the faults of a disk part happened (monotonic seconds), and what was seen."""

    started: float = 0.0
    filled: float = 0.0
    freed: float = 0.0
    in_flight: int | None = None  # to the daemon at the kill (kill-while-full)

    def mark(self, what: str, at: float | None = None) -> float:
        at = time.monotonic() if at is None else at
        log(f"  +{at - self.started:5.1f} s {what}")
        return at


async def part_full_disk(
    run: Run, args: argparse.Namespace, mounts: Mounts, *, kill: bool
) -> Figures:
    name = "kill-while-full" if kill else "full-disk"
    count = args.alerts or 40_000
    duration = count / args.rate
    fill_at = max(0.0, (duration - args.full_seconds) / 2)
    action = "SIGKILL while full, restart" if kill else "intake held, then freed"
    out = Figures(
        f"{name}: {count:,} AD1s at {args.rate:,.0f}/s, {args.meters:,} meters, disk full "
        f"{args.full_seconds:g} s from +{fill_at:.1f} s ({action})"
    )
    small = run.root / f"{name}-small"
    why = mounts.tmpfs(small, args.tmpfs_mb)
    if why is not None:
        out.skipped = f"cannot mount a tmpfs (needs root): {why}"
        return out
    log(f"{name}: {count:,} AD1s, state on a {args.tmpfs_mb} MiB tmpfs at {small}")

    broker = TunedBroker(run.root / f"{name}-broker")
    if kill:  # every PUBLISH and PUBACK, to count what the daemon held at the kill
        levels = ("error", "warning", "notice", "information", "debug")
        broker.add_config(*(f"log_type {level}" for level in levels))
    run.brokers.append(broker)
    broker.start()
    broker_log = broker.root / "mosquitto.log"
    state = small / "state.sqlite"
    home = Home(run.root / f"{name}-gw", broker.port, paths={"state": str(state)})
    config = load_config(home.config, env={})
    pairs = meters(home, args.meters)
    frames = [cs06(home, 10, target=esme) for esme, _ in pairs]
    third = max(1, len(frames) // 3)
    before, during, after = frames[:third], frames[third : 2 * third], frames[2 * third :]
    alerts = stream_of(name, count, [chf for _, chf in pairs[:third]])
    sent = [alert_id for alert_id, _ in alerts]

    daemon = BenchDaemon(home)
    run.daemons.append(daemon)
    await asyncio.to_thread(daemon.start)
    decisions = DecisionLog(home.log_path)
    client = Sink(broker.port, name)
    await client.start()
    tally = Tally(client)
    published = Published(0.0)
    when = Timeline()

    async def fault() -> None:
        await asyncio.sleep(fill_at)
        filler = await asyncio.to_thread(fill, small)
        when.filled = when.mark(f"disk filled ({filler.stat().st_size / 2**20:.1f} MiB filler)")
        # The windows "during": trickled in while the disk is full, as commands come,
        # so that some arrive before the store has failed and some while intake is held.
        trickle = asyncio.ensure_future(publish_spread(client, during, args.full_seconds * 0.8))
        if await wait_logged(decisions, "store.failed", 1, args.full_seconds + 30):
            when.mark("store.failed logged")
        if kill:
            await asyncio.sleep(max(0.0, when.filled + args.full_seconds / 2 - time.monotonic()))
            daemon.kill()
            at = time.monotonic()
            when.in_flight = in_flight_at(
                broker_log, config.broker.client_id, broker_log.stat().st_size
            )
            when.mark(f"daemon SIGKILLed ({when.in_flight:,} in flight to it at the broker)", at)
        await asyncio.sleep(max(0.0, when.filled + args.full_seconds - time.monotonic()))
        filler.unlink()
        when.freed = when.mark("disk freed")
        if kill:
            await asyncio.to_thread(daemon.start)
            when.mark("daemon started again (gateway.ready)")
        elif await wait_logged(decisions, "store.recovered", 1, 60):
            when.mark("store.recovered logged")
        await trickle
        await publish_commands(client, after)

    try:
        await publish_commands(client, before)
        if not await wait_logged(decisions, "activation.tracked", len(before), 60):
            raise RuntimeError(f"the {len(before)} windows before the stream were not tracked")
        published.started = when.started = time.monotonic()
        await asyncio.gather(publish_paced(client, alerts, args.rate, published), fault())
        when.mark(f"stream published ({published.count:,} at {published.rate:,.0f}/s)")
        await drain(tally, count, args.idle)
        when.mark(f"{len(tally.copies):,} distinct alerts out")
    finally:
        await client.close()

    # A clean restart: the windows the daemon rebuilds from its state file.
    stopped = await asyncio.to_thread(daemon.stop)
    await asyncio.to_thread(daemon.start)
    loaded = daemon.wait_for("state.loaded")
    stopped_again = await asyncio.to_thread(daemon.stop)
    with Store.open(state) as store:
        present = {a.esme for a in store.load_activations()}
        suppression_log = store.counts()["suppressions"]
    expected = {esme for esme, _ in pairs}
    windows_lost = len(expected - present)
    events = daemon.events()
    stats = [e for e in events if e.get("event") == "mqtt.stats"][:-1]  # not the check run's
    recovered = [e for e in events if e.get("event") == "store.recovered"]
    failures = [e for e in events if e.get("event") == "store.failed"]

    lost = tally.lost(sent)
    out.lost = lost + windows_lost
    out.add("alerts sent", count, f"paced at {published.rate:,.0f}/s")
    out.add("came out (distinct)", len(tally.copies))
    out.add("lost", lost, "must be 0")
    if kill:
        bound = when.in_flight if when.in_flight is not None else -1
        verdict = "within" if tally.duplicates <= bound else "OVER"
        out.add("duplicate outputs", tally.duplicates, f"{verdict} the bound below")
        out.add("  in flight to the daemon at the kill", bound, "broker: sent - acknowledged")
        out.add("  [broker] receive_maximum", config.broker.receive_maximum)
        out.add("  mosquitto max_inflight_messages", BROKER_INFLIGHT)
    else:
        out.add("duplicate outputs", tally.duplicates, "issue 9 before the fix: 58,221 for 40,000")
    out.add("suppressed / forwarded", f"{len(tally.suppressed):,} / {len(tally.forwarded):,}")
    out.add("wrong outcome", tally.wrong, "suppressed odd or forwarded even")
    out.add("suppression records in the state", suppression_log)
    split = f"{len(before)} before, {len(during)} during, {len(after)} after the full disk"
    out.add("windows expected", len(expected), split)
    tracked = f"state.loaded activations={loaded.get('activations')}"
    out.add("windows present after a clean restart", len(present), tracked)
    out.add("windows lost", windows_lost, "must be 0")
    failed_recovered = f"{decisions.events['store.failed']} / {decisions.events['store.recovered']}"
    out.add("store.failed / store.recovered lines", failed_recovered)
    if failures:  # "<path>: commit of N write(s) failed: database or disk is full"
        detail = str(failures[0].get("detail")).rsplit(": ", 2)
        writes = detail[-2].removeprefix("commit of ").split(" ")[0]
        out.add("writes in the first failed commit", writes, detail[-1])
    out.add("disk full (bench), s", round(when.freed - when.filled, 2))
    if recovered:
        out.add("store failing (failed_for_s), s", recovered[0].get("failed_for_s"))
    if stats:
        peaks = ", ".join(f"{e.get('inbound_peak'):,} of {e.get('inbound_limit'):,}" for e in stats)
        which = "the run started after the kill" if kill else "logged at the stop after the stream"
        out.add("peak inbound in progress (mqtt.stats)", peaks, which)
    out.add("alert.duplicate (redelivered, not repeated)", decisions.events["alert.duplicate"])
    last_output = max(client.last_output_at - published.done, 0.0)
    out.add("seconds from last publish to last output", round(last_output, 2))
    out.add("daemon exit codes (stop, check run)", f"{stopped} / {stopped_again}")
    out.add("daemon warning/error lines", *log_summary(events))
    return out


# -- main --------------------------------------------------------------------------------------


async def run_part(part: str, run: Run, args: argparse.Namespace, mounts: Mounts) -> Figures:
    if part == "poison":
        return await part_poison(run, args)
    return await part_full_disk(run, args, mounts, kill=part == "kill-while-full")


async def interruptible(coro: Coroutine[Any, Any, Figures]) -> Figures:
    """``coro``, cancelled by SIGTERM (its clean-up runs), which then raises
    :class:`Interrupted`. A signal handler that raises does not stop an event loop."""
    task = asyncio.ensure_future(coro)
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)
    try:
        return await task
    except asyncio.CancelledError:
        if task.cancelled():
            raise Interrupted("SIGTERM") from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def event_loop_run(coro: Coroutine[Any, Any, Figures]) -> Figures:
    """Run one part under uvloop, as the daemon runs, when it is installed."""
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        return asyncio.run(interruptible(coro))
    try:
        result: Figures = uvloop.run(interruptible(coro))
    finally:
        signal.signal(signal.SIGTERM, _interrupted)  # the loop left SIG_DFL behind
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parts", default=",".join(PARTS), help=f"of {', '.join(PARTS)}")
    parser.add_argument(
        "--alerts", type=int, default=0, help="AD1s per part (default 30,000 poison, 40,000 disk)"
    )
    parser.add_argument("--rate", type=float, default=2000.0, help="AD1s per second")
    parser.add_argument("--meters", type=int, default=1000, help="listed meters given windows")
    parser.add_argument(
        "--full-seconds", type=float, default=10.0, help="how long the disk is full"
    )
    parser.add_argument("--tmpfs-mb", type=int, default=32, help="the state file's tmpfs size")
    parser.add_argument("--idle", type=float, default=30.0, help="give up after s without output")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    parts = [p.strip() for p in args.parts.split(",") if p.strip()]
    unknown = [p for p in parts if p not in PARTS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; choose from {', '.join(PARTS)}")
    root = Path(tempfile.mkdtemp(prefix="poa-faults-"))
    signal.signal(signal.SIGTERM, _interrupted)
    log(
        f"poa-gateway fault campaign: {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, gateway at {revision()}, "
        f"run dir {root}"
    )
    run = Run(root, args)
    mounts = Mounts()
    results: list[Figures] = []
    failed = False
    try:
        for part in parts:
            try:
                figures = event_loop_run(run_part(part, run, args, mounts))
            except (Interrupted, KeyboardInterrupt):
                raise
            except Exception as exc:  # noqa: BLE001 - report it, go on with the next part
                log(f"{part}: could not run to the end: {type(exc).__name__}: {exc}")
                failed = True
                continue
            finally:
                run.close()
                run.brokers.clear()
                run.daemons.clear()
                mounts.close()
            figures.show()
            results.append(figures)
    except (Interrupted, KeyboardInterrupt) as exc:
        log(f"interrupted ({exc!r}): children stopped, tmpfs unmounted")
        failed = True
    finally:
        run.close()
        mounts.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    lost = sum(f.lost for f in results)
    verdict = "FAIL" if lost or failed else "PASS"
    print(f"\n{verdict}: {lost:,} lost (alerts and windows) over {len(results)} part(s)")
    return 1 if lost or failed else 0


if __name__ == "__main__":
    sys.exit(main())
