"""Cold start of a standby promotion with 1.4 million tracked windows (issue 12, point 5).

A standby that takes the lease loads the whole state before it connects to the broker
(gateway/ha.py: the lease, then the state, then the session), so the time to load is
time in which no alert in GB is forwarded. Goal: at most 3 s at 1.4 million tracked
windows (every Landis+Gyr SMETS2 ESME in a firmware window at once).

The bench fills a state store with ``--windows`` activations and ``--decisions``
recent decisions, then times, step by step, what ``Gateway.load`` (gateway/service.py)
does with the state, in its order:

1. **open**: ``PostgresStore.open`` (connect, check the schema) or ``Store.open``;
2. **load_and_restore**: ``Engine(...)`` and ``Engine.restore_fields`` fed by the store's
   ``activation_fields()`` (streamed from PostgreSQL: the engine restores a batch while
   the server packs the next), which are one step since they overlap;
4. **load_decisions**: ``load_decisions(now - dedupe)``;
5. **remember**: ``Engine.remember_decision`` for each;
6. **housekeeping**: what ``Gateway._apply_housekeeping`` does with what restore returned:
   the writes queued (``pipeline.housekeeping_writes``) and one ``window.*`` log line per
   window opened, ended or expired, written as JSON to a file as the daemon's journal;
7. **reports**: ``unreported(1)`` and ``unreported_count()``.

Steps 1, 4 and 7 are the state store's; 2 is both; 5 and 6 are the engine's and the shell's.
Like ``Gateway.load``, the load and restore and the remembering run with the cyclic
garbage collector paused (``gateway.service.collector_paused``); ``--gc-off`` keeps it
off for the other steps too (a what-if).

The trust store, the GUID list and the inventory, which ``Gateway.load`` opens too, are
not included (bench/engine.py measures the GUID list's load).

The same state goes into a throwaway PostgreSQL cluster started by the bench
(bench/throughput.py's ``DurableCluster``: tests/pg_support.py's cluster with fsync and
synchronous_commit on) through binary COPY, then ``VACUUM (ANALYZE)`` as a running
database would have had; and into a SQLite state file through the store's own writes,
as the reference measured in the same run. The server's cache is warm, as a standby's
database is, serving the leader; the standby process loads into an empty engine.

The state: bench/engine.py's activations (distinct ESMEs and CHFs, 87 % on-demand
windows opened in the last 25 minutes and so ending within the next 30, 13 %
future-dated up to three days ahead), written in random order (not the key's), and
``--decisions`` alert decisions spread over the dedupe horizon, half suppressed
(naming an activation), half forwarded.

Run from the repository root: ``.venv/bin/python bench/promotion.py`` (``--state
postgresql`` or ``sqlite`` for one backend, ``--repeats N`` promotions per backend, the
median reported, ``--profile FILE`` to profile one PostgreSQL promotion with cProfile,
``--windows``, ``--decisions``, ``--json``). Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import json
import os
import platform
import pstats
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine import T0, _activations  # bench/ is sys.path[0] when run as a script
from throughput import DurableCluster

from gateway.core import pipeline
from gateway.core.engine import Engine, EngineConfig
from gateway.core.events import (
    Activation,
    AlertDecision,
    AlertReason,
    DedupeExpired,
    WindowEnded,
    WindowOpened,
)
from gateway.logs import JsonLog
from gateway.service import collector_paused
from gateway.state.postgresql import PostgresStore
from gateway.state.protocol import StateStore
from gateway.state.rows import activation_row, decision_row
from gateway.state.sqlite import Store
from tests.pg_support import find_pg_bin

GOAL_S = 3.0
STEPS = (
    "open",
    "load_and_restore",
    "load_decisions",
    "remember",
    "housekeeping",
    "reports",
)
STORE_STEPS = ("open", "load_decisions", "reports")  # the store's own
MIN = 60_000


def log(text: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {text}", flush=True)


# -- the state ------------------------------------------------------------------------------


def make_decisions(
    n: int, activations: list[Activation], config: EngineConfig, rng: random.Random
) -> list[AlertDecision]:
    """``n`` decisions spread over the dedupe horizon before T0, oldest first: even ones
    suppressed inside one of ``activations``' windows, odd ones forwarded."""
    out = []
    for i in range(n):
        decided_at = T0 - config.dedupe_ms + 1 + (i * (config.dedupe_ms - 1)) // max(n, 1)
        if i % 2 == 0:
            a = activations[rng.randrange(len(activations))]
            chf, suppressed, reason, named = a.chf, True, AlertReason.INSIDE_WINDOW, a
        else:
            chf = (0x00DC_0000_0000_0000 | i).to_bytes(8, "big")
            suppressed, reason, named = False, AlertReason.NO_WINDOW, None
        out.append(
            AlertDecision(
                f"PROMO-{i:08}",
                chf,
                suppressed,
                reason,
                decided_at - 40,
                decided_at,
                activation=named,
            )
        )
    return out


_ACTIVATION_TYPES = ["bytea"] * 4 + ["int8", "int8", "bool", "int8", "bool", "bool"]
_COPY_ACTIVATIONS = (
    "COPY activations (esme, originator, counter, chf, start_ms, end_ms, future_dated, "
    "seen_at, closed_early, succeeded) FROM STDIN (FORMAT BINARY)"
)
_COPY_DECISIONS = (
    "COPY decisions (alert_id, decided_at, effect_done, decision) FROM STDIN (FORMAT BINARY)"
)


def fill_postgresql(
    dsn: str, activations: list[Activation], decisions: list[AlertDecision]
) -> None:
    """The schema by ``PostgresStore.open``, the rows by binary COPY (the store's own row
    format: gateway/state/rows.py), then ``VACUUM (ANALYZE)``."""
    PostgresStore.open(dsn).close()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(_COPY_ACTIVATIONS) as copy:
            copy.set_types(_ACTIVATION_TYPES)
            for a in activations:
                copy.write_row(activation_row(a))
        with cur.copy(_COPY_DECISIONS) as copy:
            copy.set_types(["text", "int8", "bool", "bytea"])
            for d in decisions:
                copy.write_row(decision_row(d, effect_done=True))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("VACUUM (ANALYZE)")


def fill_sqlite(path: Path, activations: list[Activation], decisions: list[AlertDecision]) -> None:
    """Every row through the store's own queued writes, committed at once."""

    async def fill() -> None:
        store = Store.open(path)
        for a in activations:
            store.put_activation(a)
        for d in decisions:
            store.put_decision(d, effect_done=True)
        await store.aclose()

    asyncio.run(fill())


# -- a promotion ----------------------------------------------------------------------------


def promote(
    open_store: Callable[[], StateStore], config: EngineConfig, journal: Path
) -> dict[str, float]:
    """What Gateway.load does with the state (module docstring), each step timed (s)."""
    times: dict[str, float] = {}
    now = T0
    with journal.open("w") as stream:
        events_log = JsonLog(stream, syslog_prefix=False)
        t = time.perf_counter()
        store = open_store()
        try:
            times["open"] = _lap(t)
            t = time.perf_counter()
            # As Gateway.load on a promotion: the store streams plain fields into the
            # engine, which restores one batch while the server packs the next, and the
            # decisions are read meanwhile on another thread (SQLite: one after the other,
            # as a single gateway's start-up, whose store is bound to its thread).
            engine = Engine(config, now)
            paused = collector_paused()  # as Gateway.load, to the end of "remember"
            paused.__enter__()
            if isinstance(store, PostgresStore):
                with ThreadPoolExecutor(1) as pool:
                    reading = pool.submit(store.load_decisions, now - config.dedupe_ms)
                    due = engine.restore_fields(store.activation_fields(), now)
                    times["load_and_restore"] = _lap(t)
                    t = time.perf_counter()
                    remembered = reading.result()
            else:
                due = engine.restore_fields(store.activation_fields(), now)
                times["load_and_restore"] = _lap(t)
                t = time.perf_counter()
                remembered = store.load_decisions(now - config.dedupe_ms)
            times["load_decisions"] = _lap(t)
            t = time.perf_counter()
            for decision, _done in remembered:
                engine.remember_decision(decision)
            paused.__exit__(None, None, None)
            times["remember"] = _lap(t)
            t = time.perf_counter()
            # As Gateway._apply_housekeeping (gateway/service.py).
            pipeline.apply(store, pipeline.housekeeping_writes(due, now, config.dedupe_ms))
            names = {WindowOpened: "window.opened", WindowEnded: "window.ended"}
            for event in due:
                if isinstance(event, DedupeExpired):
                    continue
                a = event.activation
                events_log.info(
                    names.get(type(event), "window.expired"),
                    chf_id=a.chf,
                    device_id=a.esme,
                    request_id=a.request_id,
                )
            times["housekeeping"] = _lap(t)
            t = time.perf_counter()
            store.unreported(1)
            store.unreported_count()
            times["reports"] = _lap(t)
        finally:
            store.close()  # the queued housekeeping writes are not committed
    times["total"] = sum(times[s] for s in STEPS)
    times["tracked"] = float(engine.tracked_count)
    times["remembered"] = float(len(remembered))
    times["due"] = float(len(due))
    return times


def _lap(started: float) -> float:
    return time.perf_counter() - started


def run_backend(
    name: str,
    open_store: Callable[[], StateStore],
    config: EngineConfig,
    args: argparse.Namespace,
    root: Path,
) -> dict[str, Any]:
    """``--repeats`` promotions; each one's steps, and the median of each step."""
    runs = []
    for i in range(args.repeats):
        gc.collect()
        profile: Path | None = args.profile if name == "postgresql" and i == 0 else None
        if args.gc_off:
            gc.disable()
        profiler = cProfile.Profile()
        try:
            if profile is not None:
                profiler.enable()
            times = promote(open_store, config, root / f"journal-{name}.log")
        finally:
            gc.enable()
            if profile is not None:
                profiler.disable()
                profiler.dump_stats(profile)
        runs.append(times)
        steps = ", ".join(f"{s} {times[s]:.2f}" for s in STEPS)
        log(
            f"  {name} promotion {i + 1}: {steps}; total {times['total']:.2f} s "
            f"({int(times['tracked']):,} windows, {int(times['remembered']):,} decisions, "
            f"{int(times['due']):,} housekeeping events)"
        )
    median = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    return {"median": median, "runs": runs}


def show_profile(path: Path) -> None:
    stats = pstats.Stats(str(path))
    print(f"\n== profile of the first PostgreSQL promotion ({path}), by own time ==")
    stats.sort_stats("tottime").print_stats(20)


# -- main -----------------------------------------------------------------------------------


def summary(results: dict[str, dict[str, Any]]) -> None:
    print("\n== promotion cold start, median of each step (s) ==")
    header = f"{'step':<18}" + "".join(f"{name:>14}" for name in results)
    print(header)
    for step in (*STEPS, "total"):
        print(f"{step:<18}" + "".join(f"{r['median'][step]:>14.2f}" for r in results.values()))
    print()
    for name, r in results.items():
        total = r["median"]["total"]
        verdict = "met" if total <= GOAL_S else "MISSED"
        reads = sum(r["median"][s] for s in STORE_STEPS)
        totals = "/".join(f"{x['total']:.2f}" for x in r["runs"])
        print(
            f"{name}: promotion {total:.2f} s (median of {totals}), goal <= {GOAL_S:.0f} s: "
            f"{verdict}; of it load_and_restore {r['median']['load_and_restore']:.2f} s (the "
            f"store streaming into the engine; on PostgreSQL the decisions are read meanwhile "
            f"on another thread), the store's other steps ({', '.join(STORE_STEPS)}) "
            f"{reads:.2f} s"
        )
    if "postgresql" in results and "sqlite" in results:
        pg, lite = results["postgresql"]["median"], results["sqlite"]["median"]
        print(
            f"PostgreSQL / SQLite promotion time: {pg['total'] / lite['total']:.2f} "
            f"(load_and_restore {pg['load_and_restore'] / lite['load_and_restore']:.2f})"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--windows", type=int, default=1_400_000)
    parser.add_argument("--decisions", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3, help="promotions per backend")
    parser.add_argument(
        "--state", default="both", choices=("both", "postgresql", "sqlite"), help="backends"
    )
    parser.add_argument("--profile", type=Path, default=None, metavar="FILE")
    parser.add_argument(
        "--gc-off", action="store_true", help="promotions with the cyclic GC disabled (what-if)"
    )
    parser.add_argument("--json", action="store_true", help="also print a JSON object")
    args = parser.parse_args()
    if args.windows < 1 or args.decisions < 0 or args.repeats < 1:
        parser.error("--windows and --repeats must be positive, --decisions not negative")
    states = ["sqlite", "postgresql"] if args.state == "both" else [args.state]
    log(
        f"promotion bench: {platform.python_implementation()} {platform.python_version()}, "
        f"{os.cpu_count()} CPUs; {args.windows:,} windows, {args.decisions:,} decisions"
        + ("; cyclic GC disabled during the promotions" if args.gc_off else "")
    )
    config = EngineConfig()
    t = time.perf_counter()
    rng = random.Random(7)
    activations = _activations(args.windows, rng)
    # Written in no key order, as windows open in time order for ESMEs all over GB: a
    # table written in key order would read back in key order for free.
    rng.shuffle(activations)
    decisions = make_decisions(args.decisions, activations, config, rng)
    log(f"generated the state in {_lap(t):.1f} s")
    root = Path(tempfile.mkdtemp(prefix="poa-promotion-"))
    cluster: DurableCluster | None = None
    results: dict[str, dict[str, Any]] = {}
    try:
        for state in states:
            t = time.perf_counter()
            if state == "sqlite":
                path = root / "state.sqlite"
                fill_sqlite(path, activations, decisions)
                log(f"sqlite: filled {path} in {_lap(t):.1f} s")
                opener: Callable[[], StateStore] = partial(Store.open, path)
            else:
                bin_dir = find_pg_bin()
                if bin_dir is None:
                    parser.error("PostgreSQL is not installed (no initdb found)")
                cluster = DurableCluster(bin_dir)
                cluster.start()
                log(f"postgresql: a throwaway cluster in {cluster.root}, {cluster.settings()}")
                dsn = cluster.new_database()
                fill_postgresql(dsn, activations, decisions)
                log(f"postgresql: filled by binary COPY and vacuumed in {_lap(t):.1f} s")
                opener = partial(PostgresStore.open, dsn)
            results[state] = run_backend(state, opener, config, args, root)
    finally:
        if cluster is not None:
            cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
    summary(results)
    if args.profile is not None and "postgresql" in results:
        show_profile(args.profile)
    if args.json:
        print(json.dumps({"goal_s": GOAL_S} | results, indent=2))


if __name__ == "__main__":
    main()
