"""State store group commit: flushed writes per second from many concurrent tasks.

Each of ``--tasks`` tasks (default 1,000) plays the daemon's part for a suppressed AD1,
``--rounds`` times over: queue the suppression record and the alert decision, then await
``Store.flush()``, the point at which the daemon would acknowledge the message. Reports
the flushed writes (and alerts) per second, the number of commits and their mean size,
and the flush latency seen by one task. Then the baseline group commit improves on: one
task alone, so that every alert pays for its own commit and fsync.

The file is created in a fresh temporary directory under ``--dir`` (default: the system
temporary directory; it must be on the disk the daemon would use, not a tmpfs, for the
figures to mean anything) and deleted afterwards.

Run: ``.venv/bin/python bench/store_bench.py``. Prints figures; asserts nothing.
Importing this module has no side effects.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.state.sqlite import Store, Synchronous
from gateway.wire import SuppressionRecord

__all__ = ["bench_store", "main"]

_T0 = 1_800_000_000_000
_MIN = 60_000
_CHF = bytes.fromhex("00DB1234567890A0")
_ESME = bytes.fromhex("00DB1234567890A1")
_SUPPLIER = bytes.fromhex("90B3D51F30010000")


def _alert(
    n: int, activation: Activation, request_id: str
) -> tuple[SuppressionRecord, AlertDecision]:
    alert_id = f"bench-{n:09}"
    received_at = _T0 + 5 * _MIN + n
    record = SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert_id,
        chf_id=_CHF,
        esme_id=activation.esme,
        raised_at=received_at - 250,
        received_at=received_at,
        window_start=activation.start_ms,
        window_end=activation.end_ms,
        request_id=request_id,
        originator=activation.originator,
        originator_counter=activation.counter,
        activation=activation.kind,
    )
    decision = AlertDecision(
        alert_id=alert_id,
        chf=_CHF,
        suppressed=True,
        reason=AlertReason.INSIDE_WINDOW,
        judged_at=received_at - 250,
        decided_at=received_at,
        activation=activation,
    )
    return record, decision


async def _run(store: Store, tasks: int, rounds: int) -> tuple[float, list[int]]:
    activation = Activation(
        esme=_ESME,
        chf=_CHF,
        originator=_SUPPLIER,
        counter=1_234,
        start_ms=_T0,
        end_ms=_T0 + 30 * _MIN,
        future_dated=False,
        seen_at=_T0,
    )
    request_id = activation.request_id  # formatted once: the bench is about the store
    latencies: list[int] = []

    async def handle(task: int) -> None:
        for r in range(rounds):
            record, decision = _alert(r * tasks + task, activation, request_id)
            began = time.perf_counter_ns()
            store.append_suppression(record)
            store.put_decision(decision, effect_done=True)
            await store.flush()
            latencies.append(time.perf_counter_ns() - began)

    began = time.perf_counter()
    await asyncio.gather(*(handle(t) for t in range(tasks)))
    return time.perf_counter() - began, latencies


def bench_store(
    directory: str | os.PathLike[str],
    *,
    tasks: int = 1_000,
    rounds: int = 20,
    synchronous: Synchronous = "FULL",
) -> dict[str, float]:
    """Run ``tasks`` concurrent tasks, each flushing ``rounds`` suppressed alerts.

    Each alert is two writes (its suppression record and its decision). The store file
    is created in a new temporary directory under ``directory`` and removed afterwards.

    Returns:
        ``alerts``, ``writes``, ``seconds``, ``writes_per_s``, ``alerts_per_s``,
        ``commits``, ``alerts_per_commit``, ``flush_p50_ms`` and ``flush_p99_ms``.
    """
    if tasks < 1 or rounds < 1:
        raise ValueError("tasks and rounds must be at least 1")
    with tempfile.TemporaryDirectory(dir=directory, prefix="store-bench-") as tmp:

        async def go() -> tuple[float, list[int], int]:
            async with Store.open(Path(tmp) / "state.sqlite", synchronous=synchronous) as store:
                seconds, latencies = await _run(store, tasks, rounds)
                return seconds, latencies, store.commits

        seconds, latencies, commits = asyncio.run(go())
    alerts = tasks * rounds
    quantiles = statistics.quantiles(latencies, n=100) if len(latencies) > 1 else latencies * 99
    return {
        "alerts": float(alerts),
        "writes": float(2 * alerts),
        "seconds": seconds,
        "writes_per_s": 2 * alerts / seconds,
        "alerts_per_s": alerts / seconds,
        "commits": float(commits),
        "alerts_per_commit": alerts / commits,
        "flush_p50_ms": quantiles[49] / 1e6,
        "flush_p99_ms": quantiles[98] / 1e6,
    }


def main(argv: list[str] | None = None) -> None:
    """Run :func:`bench_store` for each ``synchronous`` level and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--tasks", type=int, default=1_000, help="concurrent tasks")
    parser.add_argument("--rounds", type=int, default=20, help="alerts flushed per task")
    parser.add_argument(
        "--serial", type=int, default=300, help="alerts flushed one by one (the baseline)"
    )
    parser.add_argument(
        "--synchronous",
        choices=("FULL", "NORMAL"),
        nargs="+",
        default=["FULL", "NORMAL"],
        help="SQLite synchronous levels to measure",
    )
    parser.add_argument("--dir", default=tempfile.gettempdir(), help="where to put the file")
    args = parser.parse_args(argv)
    print(
        f"state store group commit: Python {platform.python_version()}, "
        f"{platform.machine()}, {os.cpu_count()} CPU(s), files under {args.dir}"
    )
    level: Synchronous
    for level in args.synchronous:
        for label, tasks, rounds in (
            (f"{args.tasks:,} tasks x {args.rounds}", args.tasks, args.rounds),
            ("1 task (one commit per alert)", 1, args.serial),
        ):
            r = bench_store(args.dir, tasks=tasks, rounds=rounds, synchronous=level)
            print(
                f"  {level:6} {label:32} {r['writes_per_s']:9,.0f} flushed writes/s "
                f"({r['alerts_per_s']:8,.0f} alerts/s); {r['commits']:6,.0f} commits, "
                f"{r['alerts_per_commit']:6.1f} alerts/commit; flush p50 "
                f"{r['flush_p50_ms']:7.2f} ms, p99 {r['flush_p99_ms']:7.2f} ms"
            )


if __name__ == "__main__":
    main()
