"""Failover bench (issue 12, point 3): two gateways on one PostgreSQL and one mosquitto,
the leader killed three times and frozen once during a storm of AD1s.

What runs, each started here in a fresh temporary directory and stopped by PID at the end
(children under ``setpriv --pdeathsig KILL``):

* **mosquitto**: bench/throughput.py's ``TunedBroker`` (``max_inflight_messages 1000``,
  ``max_queued_messages 2000000``: nothing is dropped while no instance is connected),
  logging every packet to its stderr, unbuffered, kept in a file whose size is noted at
  each signal (tests/test_failover.py's ``log_every_packet``: the bound on duplicates).
* **PostgreSQL**: throughput's ``DurableCluster`` (``fsync``, ``synchronous_commit`` and
  ``full_page_writes`` on), one database holding the state and the inventory; its
  statement log labelled with each connection's application_name
  (tests/test_failover.py's ``label_statement_log``).
* **Two instances** ``a`` and ``b`` of one deployment (tests/test_failover.py's
  ``ha_homes``): ``poa-gateway run`` each, one broker client id, the ``[ha]`` lease and
  renewal at their defaults (5 s, 1 s) unless ``--lease``/``--renew`` say otherwise.
  ``--windows`` listed meters are imported into the PostgreSQL inventory and each gets a
  signed on-demand CS06 (one window per meter) before the storm.
* **The load and the sink** of bench/throughput_clients.py, each its own process: a
  publisher paced at ``--rate`` AD1s per second for ``--alerts`` alerts (even sequence
  numbers on the windowed CHFs, odd ones on 10,000 CHFs with no window), and a sink that
  records every output with its receive time.

The faults, at fixed shares of the stream (each waits until the previous one is over):

1. SIGKILL the leader early (10 % into the stream);
2. SIGKILL the leader mid-storm (35 %);
3. SIGSTOP the leader (55 %), wait for the standby's ``gateway.ready`` and its first
   outputs, then SIGCONT: it must step down and do nothing more;
4. a burst of ``--burst`` more AD1s as fast as the publisher can (80 %), and SIGKILL the
   leader as soon as the broker has acknowledged the last of them.

A killed process is started again once the other instance leads, and waits as a standby.

What is printed, per fault and for the run:

* **Time to the new leader's first output**: from the signal to the first output the sink
  received after the new leader took the lease (its ``ha.leader`` line). The faulted
  process cannot publish after the signal, and what it published before reaches the sink
  in milliseconds, seconds before any take; so that output is the new leader's. Also the
  signal to ``ha.leader`` (waiting out the lease) and to ``gateway.ready``, which can
  come after the first output: the broker session's messages flow as soon as the
  connection is up, ahead of the SUBACK of the re-subscription that ends the start-up.
  Goal: at most 10 s with the default settings.
* **Lost**: alert ids never output (forwarded or suppressed); **windows lost**: alerts
  from a windowed CHF that were forwarded, and windows missing from the state database at
  the end.
* **Duplicates**, each counted against the last fault before its repeat arrived, beside
  its bound (tests/test_failover.py's ``unacknowledged``). A repeat is of a message the
  broker had sent to the leader's receiving connection before the signal and had no
  PUBACK for then ('unacked': PUBLISHes sent minus PUBACKs received up to the signal),
  and that it handed to the next leader because that connection never acknowledged it
  ('never acked', the same count up to the connection's end; it also shows as the DUP
  re-sends on the next connection). The bound is the smaller of the two: for a SIGKILL
  'never acked' can be the smaller (PUBACKs the process wrote before dying still
  arrive), for a SIGSTOP 'unacked' (the broker goes on sending to the frozen process
  up to its receive maximum). An alert written after the fault it is counted against
  would be a repeat of something that was not even sent then: counted too (must be 0).
* **The resumed leader**, from its SIGCONT to the next fault: its ``ha.stepped_down``
  line and reason; its log lines, none saying it decided, connected or led since the
  resume (a decision whose commit was done when the process froze is logged on waking,
  after ``ha.stepped_down``: its ``judged_at`` is before the SIGSTOP, and it is shown
  apart); connections the broker accepted under the deployment's client ids (must be 0:
  without one nothing can be published or acknowledged); and its data-changing
  statements in PostgreSQL's log (its connections by application_name, and the one
  that names itself, the inventory's, by server process; the lease tables aside, must
  be 0). The storm carries no inventory update (see the strict xfail test in
  tests/test_failover.py for what a resumed leader does with one).

Run from the checkout: ``.venv/bin/python bench/failover.py`` (``--alerts``,
``--windows``, ``--rate``, ``--burst`` for a shorter run; ``--keep`` keeps the run
directory). Exit status 1 when an alert or a window was lost, duplicates exceeded their
bound, the resumed leader acted, or a fault could not run to its end; the time goal is
reported, not enforced.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import math
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

# The checkout, for gateway and tests (bench/ itself is on the path: throughput).
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from throughput import (
    OUT_TOPICS,
    Child,
    DurableCluster,
    Run,
    TunedBroker,
    dies_with_us,
    log,
    revision,
)
from throughput_clients import esme_id, read_records, windowed_chf

from gateway import wire
from gateway.state.postgresql import PostgresStore
from tests.e2e_support import Client, cs06
from tests.pg_support import find_pg_bin
from tests.test_failover import (
    ACTING_EVENTS,
    Deployment,
    Instance,
    Resumed,
    after_resume,
    alert_id_of,
    duplicates_by_fault,
    ha_homes,
    label_statement_log,
    log_every_packet,
    state_writes,
    ts_ms,
    unacknowledged,
    windows_in_state,
)

GOAL_S: Final = 10.0  # signal -> the new leader's first output, default [ha] settings
LIMIT_S: Final = 120.0  # the longest wait for any one step before giving up
SHARES: Final = (0.10, 0.35, 0.55, 0.80)  # of the stream: kill, kill, freeze, burst + kill
STORM: Final = "storm"
BURST: Final = "burst"
WINDOWS_CHUNK: Final = 500  # CS06 commands published at once


class Interrupted(Exception):
    """SIGTERM: stop the children, then exit."""


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Stream:
    """The load: the storm's and the burst's publishers, and when each wrote what."""

    started: float = 0.0  # monotonic, the storm's first write
    storm: Child | None = None
    burst: Child | None = None
    times: dict[str, array[int]] = field(default_factory=dict)  # prefix -> write ns per seq
    done: dict[str, list[str]] = field(default_factory=dict)  # prefix -> its DONE line

    def at(self) -> float:
        """Seconds into the storm now."""
        return time.monotonic() - self.started


@dataclass
class Plan:
    """What the bench ran, for the report."""

    args: argparse.Namespace
    deployment: Deployment
    stream: Stream
    sink_out: Path
    dsn: str
    meters: list[tuple[bytes, bytes]]
    moments: list[float] = field(default_factory=list)  # seconds into the storm, per fault


async def bench(run: Run, args: argparse.Namespace, instances: list[Instance]) -> Plan:
    """Start everything, run the storm and the faults, wait for the outputs."""
    root = run.root
    broker = TunedBroker(root / "broker")
    run.brokers.append(broker)
    packets = log_every_packet(broker)  # every PUBLISH and PUBACK: the duplicates' bound
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError("PostgreSQL is not installed (no initdb found): ./dev setup")
    run.pg = DurableCluster(bin_dir)
    run.pg.start()
    log(f"state: a throwaway cluster in {run.pg.root}, {run.pg.settings()}")
    dsn = run.pg.new_database()
    label_statement_log(run.pg, dsn)

    meters = [(esme_id(i), windowed_chf(i)) for i in range(args.windows)]
    ha = {k: v for k, v in (("lease", args.lease), ("renew", args.renew)) if v}
    home_a, home_b = ha_homes(root, broker.port, dsn, meters, ha)
    a = Instance(home_a, "a", wrap=dies_with_us)
    b = Instance(home_b, "b", wrap=dies_with_us)
    instances += [a, b]
    deployment = Deployment(
        a,
        b,
        broker_log=packets,
        pg_log=run.pg.root / "log",
        pg_admin=run.pg.dsn(),
    )
    await deployment.start(LIMIT_S)
    log(f"instances: a leads (pid {a.pid}), b waits as a standby (pid {b.pid})")
    await open_windows(deployment, broker.port, meters)

    total = args.alerts + args.burst
    sink, sink_out = run.sink(broker.port, "failover", total)
    stream = Stream()
    plan = Plan(args, deployment, stream, sink_out, dsn, meters)
    stream.storm, _ = run.publisher(broker.port, STORM, args.alerts, rate=args.rate, prefix=STORM)
    await asyncio.to_thread(stream.storm.wait_for, "READY", 30)
    stream.started = time.monotonic()
    duration = args.alerts / args.rate
    log(f"storm: {args.alerts:,} AD1s at {args.rate:,.0f}/s ({duration:.0f} s)")

    for index, share in enumerate(SHARES):
        await asyncio.sleep(max(0.0, share * duration - stream.at()))
        plan.moments.append(stream.at())
        if index in (0, 1):
            moment = "early" if index == 0 else "mid-storm"
            await kill(deployment, stream, sink, moment)
        elif index == 2:
            await freeze(deployment, stream, sink)
        else:
            log(f"  +{stream.at():5.1f} s burst: {args.burst:,} AD1s as fast as they go")
            stream.burst, _ = run.publisher(broker.port, BURST, args.burst, prefix=BURST)
            stream.done[BURST] = await asyncio.to_thread(stream.burst.wait_for, "DONE", LIMIT_S)
            plan.moments[-1] = stream.at()
            await kill(deployment, stream, sink, f"right after a burst of {args.burst:,}")

    stream.done[STORM] = await asyncio.to_thread(stream.storm.wait_for, "DONE", 3 * LIMIT_S)
    log(f"  +{stream.at():5.1f} s storm published")
    await drain(sink, total, args.idle)
    log(f"  +{stream.at():5.1f} s {sink.progress:,} outputs received; stopping")
    sink.stop()
    for prefix, child in ((STORM, stream.storm), (BURST, stream.burst)):
        if child is not None:
            child.stop()
            times: array[int] = array("q")
            times.frombytes((root / f"{prefix}.times").read_bytes())
            stream.times[prefix] = times
    # Stopped cleanly, so that the state is read complete.
    for instance in (a, b):
        instance.stop(60)
    broker.stop()
    return plan


async def open_windows(
    deployment: Deployment, port: int, meters: list[tuple[bytes, bytes]]
) -> None:
    """A signed on-demand CS06 per meter; until the leader has tracked them all."""
    leader = deployment.leader
    started = time.monotonic()
    client = Client(port, "cs06")
    await client.start()
    try:
        for at in range(0, len(meters), WINDOWS_CHUNK):
            chunk = meters[at : at + WINDOWS_CHUNK]
            frames = [cs06(leader.home, 1000, target=esme) for esme, _ in chunk]
            await asyncio.gather(*(client.command(frame) for frame in frames))
    finally:
        await client.close()
    deadline = time.monotonic() + LIMIT_S
    while (tracked := len(leader.log.since(0, "activation.tracked"))) < len(meters):
        if time.monotonic() > deadline:
            raise RuntimeError(f"only {tracked:,} of {len(meters):,} CS06 opened a window")
        await asyncio.sleep(0.2)
    log(f"windows: {len(meters):,} opened in {time.monotonic() - started:.1f} s")


async def kill(deployment: Deployment, stream: Stream, sink: Child, moment: str) -> None:
    """SIGKILL the leader; until the other instance leads and the killed one is back as
    a standby."""
    fault = deployment.strike(signal.SIGKILL, moment, 0, sink.progress)
    log(f"  +{stream.at():5.1f} s SIGKILL {fault.victim_label} ({moment})")
    await deployment.takeover(fault, LIMIT_S)
    log(
        f"  +{stream.at():5.1f} s {fault.survivor_label} leads (epoch "
        f"{fault.took_lease.get('epoch')}); starting {fault.victim.name} again"
    )
    await deployment.restart(fault, LIMIT_S)
    log(f"  +{stream.at():5.1f} s {fault.victim.label} waits as a standby")


async def freeze(deployment: Deployment, stream: Stream, sink: Child) -> None:
    """SIGSTOP the leader; once the standby leads and has output something, SIGCONT it;
    until it has stepped down and waits as a standby."""
    fault = deployment.strike(signal.SIGSTOP, "mid-storm", 0, sink.progress)
    log(f"  +{stream.at():5.1f} s SIGSTOP {fault.victim_label}")
    await deployment.takeover(fault, LIMIT_S)
    # Let the new leader be seen at work while the old one is still frozen (there is
    # nothing to output if the stream is over: then this gives up after a few seconds).
    ready_at = sink.progress
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if sink.progress > ready_at + 1:  # PROGRESS comes every 0.5 s
            break
        await asyncio.sleep(0.1)
    working = "and outputs" if sink.progress > ready_at else "(no output yet)"
    log(f"  +{stream.at():5.1f} s {fault.survivor_label} leads {working}; SIGCONT")
    await deployment.resume(fault, LIMIT_S)
    log(
        f"  +{stream.at():5.1f} s {fault.victim_label} stepped down "
        f"({fault.stepped_down.get('reason')}) and waits as a standby"
    )


async def drain(sink: Child, total: int, idle_s: float) -> None:
    """Until the sink has ``total`` outputs and no more for a while (late repeats), or
    none more for ``idle_s`` seconds."""
    last, since = sink.progress, time.monotonic()
    while True:
        await asyncio.sleep(0.25)
        now = sink.progress
        if now != last:
            last, since = now, time.monotonic()
            continue
        quiet = time.monotonic() - since
        if (now >= total and quiet > 3) or quiet > idle_s:
            if now < total:
                log(f"  no output for {idle_s:.0f} s: giving up at {now:,} of {total:,}")
            return


# -- the report ------------------------------------------------------------------------------


class Table:
    """Rows of (figure, value, note), printed aligned."""

    def __init__(self, title: str) -> None:
        self.title = title
        self.rows: list[tuple[str, str, str]] = []

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
        wf = max(len(r[0]) for r in self.rows)
        wv = max(len(r[1]) for r in self.rows)
        for figure, value, note in self.rows:
            print(f"{figure.ljust(wf)}  {value.rjust(wv)}  {note}".rstrip())
        sys.stdout.flush()


def grid(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n== {title} ==")
    for r in [header, *rows]:
        print(
            "  ".join(
                cell.rjust(w) if i else cell.ljust(w)
                for i, (cell, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    sys.stdout.flush()


def seq_of(alert_id: str) -> tuple[str, int]:
    prefix, _, seq = alert_id.rpartition("-")
    return prefix, int(seq)


def report(plan: Plan) -> bool:
    """Print the figures; True when nothing was lost, nothing repeated beyond its bound
    and the resumed leader did nothing (and every fault ran)."""
    args, deployment, stream = plan.args, plan.deployment, plan.stream
    faults = deployment.faults
    broker_log = deployment.broker_log.read_bytes()
    pg_log = deployment.pg_log.read_bytes()

    # The outputs, in arrival order. The sink stamps each socket read: the messages of
    # one read share a time, in order.
    arrivals: list[tuple[str, str]] = []
    received: list[int] = []
    undecodable = 0
    for topic, rx, payload in read_records(plan.sink_out, OUT_TOPICS):
        try:
            arrivals.append((topic, alert_id_of(topic, payload)))
        except wire.WireError:
            undecodable += 1
            continue
        received.append(rx)
    sent = {f"{STORM}-{s:09d}" for s in range(args.alerts)}
    sent |= {f"{BURST}-{s:09d}" for s in range(args.burst)}
    copies = Counter(alert_id for _, alert_id in arrivals)
    forwarded = {a for t, a in arrivals if t == "dno/dcc/alert"}
    suppressed = {a for t, a in arrivals if t == "gateway/suppressed"}
    lost = sent - copies.keys()
    windowed = {a for a in sent if seq_of(a)[1] % 2 == 0}  # even: from a windowed CHF
    windowed_forwarded = windowed & forwarded
    wrong = (windowed - suppressed) | ((sent - windowed) & suppressed)
    state_windows = windows_in_state(plan.dsn)
    windows_missing = {esme for esme, _ in plan.meters} - state_windows
    with PostgresStore.open(plan.dsn) as store:
        counts = store.counts()

    def first_at_or_after(ns: int) -> int:
        return bisect.bisect_left(received, ns)

    # Repeats, each against the last fault before it arrived; and any of an alert that
    # was written after that fault (then it was not unacknowledged at the fault).
    marks = [first_at_or_after(f.at_ns) for f in faults]
    repeats, before_any = duplicates_by_fault(arrivals, faults, lambda f: marks[faults.index(f)])
    late_repeats = 0
    seen: set[str] = set()
    for index, (_, alert_id) in enumerate(arrivals):
        if alert_id not in seen:
            seen.add(alert_id)
            continue
        which = bisect.bisect_right(marks, index) - 1
        prefix, seq = seq_of(alert_id)
        times = stream.times.get(prefix)
        if which >= 0 and times is not None and seq < len(times):
            late_repeats += int(times[seq] > faults[which].at_ns)

    rows: list[list[str]] = []
    first_outputs: list[float] = []
    over_bound = 0
    bound_total = 0
    for fault, moment, repeated in zip(faults, plan.moments, repeats, strict=True):
        unacked = unacknowledged(broker_log, fault.broker_at)
        bound_total += unacked.bound
        over_bound += max(0, repeated - unacked.bound)
        at_ms = fault.at_ns // 1_000_000
        took_ms = ts_ms(fault.took_lease)
        first = first_at_or_after(took_ms * 1_000_000)
        output = (received[first] - fault.at_ns) / 1e9 if first < len(received) else math.nan
        first_outputs.append(output)
        written = sum(1 for times in stream.times.values() for t in times if 0 < t < fault.at_ns)
        rows.append(
            [
                f"{fault.kind} {fault.moment}",
                f"+{moment:.1f}",
                f"{written:,}",
                f"{fault.victim_label} -> {fault.survivor_label}",
                str(fault.took_lease.get("epoch", "?")),
                f"{(took_ms - at_ms) / 1000:.2f}",
                f"{(ts_ms(fault.ready) - at_ms) / 1000:.2f}",
                f"{output:.2f}",
                "met" if output <= GOAL_S else "MISSED",
                f"{unacked.at_signal:,}",
                f"{unacked.on_connection:,}",
                f"{repeated:,}",
                f"{unacked.resent:,}",
            ]
        )
    print(
        "\nPer fault: when ('at s' into the storm, AD1s 'written' by the publishers by "
        "then); which process was the leader and which took over, at which epoch; seconds "
        "from the signal to the new leader's ha.leader (the lease taken), its "
        "gateway.ready, and the first output the sink received from it (goal <= "
        f"{GOAL_S:g} s); 'unacked' PUBLISHes mosquitto had sent on the leader's receiving "
        "connection minus the PUBACKs it had back on it, at the signal, and 'never acked' "
        "the same when that connection ended (a frozen process is sent more, up to the "
        "receive maximum; PUBACKs already on their way still arrive after a SIGKILL). A "
        "repeat is of a message sent before the fault, unacknowledged then, and never "
        "acknowledged: 'repeats' (outputs whose alert had come out before, counted "
        "against the last fault before they arrived) must not exceed the smaller of the "
        "two. 'DUP resent': what the broker sent again on the next connection."
    )
    header = [
        "fault",
        "at s",
        "written",
        "leader -> new",
        "epoch",
        "lease s",
        "ready s",
        "1st out s",
        "goal",
        "unacked",
        "never acked",
        "repeats",
        "DUP resent",
    ]
    grid("faults", header, rows)

    frozen = next((f for f in faults if f.kind == "SIGSTOP"), None)
    resumed: Resumed | None = None
    if frozen is not None and frozen.resumed_ns:
        resumed = after_resume(deployment, frozen, broker_log, pg_log)
        later = [f.at_ns for f in faults if f.at_ns > frozen.resumed_ns]
        outputs = (first_at_or_after(later[0]) if later else len(received)) - (
            first_at_or_after(frozen.resumed_ns)
        )
        events = ", ".join(f"{e} x{n:,}" for e, n in resumed.events.most_common())
        statements = ", ".join(f"{t} x{n}" for t, n in sorted(resumed.writes.items()))
        t = Table(f"the frozen leader {resumed.label}, from its SIGCONT to the next fault")
        t.add("said ha.stepped_down", "yes" if resumed.stepped_down else "NO", resumed.stepped_down)
        t.add("its log lines", sum(resumed.events.values()), events)
        t.add(
            "  of which acts since the resume",
            sum(resumed.acted.values()),
            f"must be 0: {', '.join(sorted(ACTING_EVENTS))}",
        )
        t.add(
            "  decisions judged before the freeze",
            resumed.late,
            "committed before the takeover, logged on waking after ha.stepped_down: "
            "not acts since the resume, but said after the step-down",
        )
        t.add(
            "broker connections, the deployment's ids",
            resumed.broker_connections,
            "anyone's; must be 0: without one it publishes and acknowledges nothing",
        )
        t.add("outputs received meanwhile", outputs, "so all through the new leader")
        t.add(
            "its writes to the state",
            state_writes(resumed.writes),
            f"must be 0; PostgreSQL's log, all its statements: {statements or 'none'}",
        )
        t.show()

    duplicates = sum(copies.values()) - len(copies)
    storm_rate = 0.0
    if STORM in stream.done:
        first_ns, last_ns = (int(x) for x in stream.done[STORM][:2])
        storm_rate = (args.alerts - 1) / ((last_ns - first_ns) / 1e9) if last_ns > first_ns else 0.0
    met = sum(1 for s in first_outputs if s <= GOAL_S)
    worst = max(first_outputs, default=math.nan)
    warn = Counter(
        str(e.get("event"))
        for instance in (deployment.a, deployment.b)
        for e in instance.log.since(0)
        if e.get("level") in ("warning", "error", "critical")
    )
    s = Table("summary")
    s.add(
        "AD1s sent",
        len(sent),
        f"{args.alerts:,} at {storm_rate:,.0f}/s, then {args.burst:,} at once",
    )
    s.add(
        "came out (distinct)",
        len(copies),
        f"{len(suppressed):,} suppressed, {len(forwarded):,} forwarded",
    )
    s.add("lost", len(lost), "must be 0")
    s.add("windows opened before the storm", args.windows, "a signed CS06 per listed meter")
    s.add("windowed alerts forwarded", len(windowed_forwarded), "a window lost; must be 0")
    s.add("wrong outcome", len(wrong), "windowed not suppressed, or unwindowed suppressed")
    s.add(
        "windows missing from the state",
        len(windows_missing),
        f"must be 0 ({len(state_windows):,} there at the end)",
    )
    s.add(
        "state rows: decisions, suppressions",
        f"{counts['decisions']:,}, {counts['suppressions']:,}",
    )
    s.add(
        "duplicate outputs", duplicates, f"bound: {bound_total:,} unacknowledged, over the faults"
    )
    s.add("  beyond their fault's bound", over_bound, "must be 0")
    s.add("  before any fault", before_any, "must be 0")
    s.add("  of alerts written after their fault", late_repeats, "must be 0")
    s.add("undecodable outputs", undecodable)
    s.add(
        f"first output <= {GOAL_S:g} s after the signal",
        f"{met} of {len(first_outputs)}",
        f"worst {worst:.2f} s; [ha] lease {args.lease or '5s'}, renew {args.renew or '1s'}"
        + ("" if args.lease or args.renew else " (the defaults)"),
    )
    s.add(
        "warning/error lines, both instances",
        sum(warn.values()),
        ", ".join(f"{e} x{n:,}" for e, n in warn.most_common()),
    )
    s.show()

    did_nothing = resumed is not None and resumed.did_nothing
    ok = (
        not lost
        and not windowed_forwarded
        and not wrong
        and not windows_missing
        and over_bound == before_any == late_repeats == 0
        and len(faults) == len(SHARES)
        and did_nothing
    )
    print(
        f"\n{'PASS' if ok else 'FAIL'}: {len(lost):,} lost, {len(windowed_forwarded):,} "
        f"windowed forwarded, {duplicates:,} duplicates (bound {bound_total:,}), the resumed "
        f"leader {'did nothing' if did_nothing else 'ACTED (or was not judged)'}; first "
        f"output <= {GOAL_S:g} s for {met} of {len(first_outputs)} faults (worst {worst:.2f} s)"
    )
    return ok


# -- main ---------------------------------------------------------------------------------------


async def interruptible(coro: Coroutine[Any, Any, Plan]) -> Plan:
    """``coro``, cancelled by SIGTERM (its clean-up runs), which then raises
    :class:`Interrupted`."""
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--alerts", type=int, default=100_000, help="AD1s in the paced storm")
    parser.add_argument("--windows", type=int, default=10_000, help="listed meters with a window")
    parser.add_argument("--rate", type=float, default=2000.0, help="the storm's AD1s per second")
    parser.add_argument("--burst", type=int, default=10_000, help="AD1s in the burst (fault 4)")
    parser.add_argument("--lease", default="", help="[ha] lease (default: the gateway's, 5s)")
    parser.add_argument("--renew", default="", help="[ha] renew (default: the gateway's, 1s)")
    parser.add_argument("--idle", type=float, default=60.0, help="give up after s without output")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    for name in ("alerts", "windows", "burst"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    if args.rate <= 0:
        parser.error(f"--rate must be positive, got {args.rate}")
    # For throughput's Run: the publishers' CHF layout and QoS 1 window.
    args.windowed, args.pub_window = args.windows, 1000
    root = Path(tempfile.mkdtemp(prefix="poa-failover-"))
    log(
        f"poa-gateway failover bench: {platform.python_implementation()} "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, gateway at {revision()}, "
        f"run dir {root}"
    )
    run = Run(root, args)
    instances: list[Instance] = []
    ok = False
    try:
        plan = asyncio.run(interruptible(bench(run, args, instances)))
        ok = report(plan)
    except (Interrupted, KeyboardInterrupt) as exc:
        log(f"interrupted ({exc!r}): children stopped")
    except Exception as exc:  # noqa: BLE001 - said, children stopped, exit 1
        log(f"could not run to the end: {type(exc).__name__}: {exc}")
    finally:
        for instance in instances:
            instance.stop(10)
        run.close()
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
