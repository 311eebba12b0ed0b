"""Timer wheel cost per operation at the scale of a DNO's activation windows.

Schedules ``n`` entries with deadlines spread uniformly from 30 minutes to 3 days ahead
(activation windows being tracked), cancels a random half (windows withdrawn), then
advances the wheel one tick at a time until every remaining entry has expired, timing
each phase with ``time.perf_counter_ns``. The expiry figure includes the ticks on which
nothing is due, as the service pays for those too.

Importing this module has no side effects; ``bench_wheel`` is reused by other benches.
"""

from __future__ import annotations

import argparse
import gc
import random
import time

from gateway.core.wheel import TimerHandle, TimerWheel

__all__ = ["bench_wheel", "main"]

_START_MS = 1_750_000_000_000  # 2025-06-15T15:06:40Z
_MINUTE_MS = 60_000
_DAY_MS = 24 * 60 * _MINUTE_MS


def bench_wheel(n: int = 1_400_000, *, step_ms: int = 1000, seed: int = 0) -> dict[str, float]:
    """Time insert, cancel and expiry on a wheel holding ``n`` entries.

    Args:
        n: entries to schedule; half of them (rounded down) are cancelled.
        step_ms: how far each ``advance`` moves time during the expiry phase.
        seed: seed for the deadlines and the choice of entries to cancel.

    Returns:
        ``insert_ns``, ``cancel_ns`` and ``expire_ns`` (nanoseconds per entry scheduled,
        cancelled and expired), ``advance_calls``, and ``n``.

    Raises:
        ValueError: ``n`` is below 2.
        RuntimeError: the wheel did not return each remaining entry exactly once.
    """
    if n < 2:
        raise ValueError(f"n must be >= 2, got {n}")
    rng = random.Random(seed)
    earliest = _START_MS + 30 * _MINUTE_MS
    latest = _START_MS + 3 * _DAY_MS
    deadlines = [rng.randrange(earliest, latest + 1) for _ in range(n)]
    wheel: TimerWheel[int] = TimerWheel(_START_MS)
    schedule = wheel.schedule
    cancel = wheel.cancel
    advance = wheel.advance

    gc.collect()
    began = time.perf_counter_ns()
    handles: list[TimerHandle[int]] = [
        schedule(deadline, item) for item, deadline in enumerate(deadlines)
    ]
    insert_ns = time.perf_counter_ns() - began

    victims = rng.sample(handles, n // 2)
    gc.collect()
    began = time.perf_counter_ns()
    for handle in victims:
        cancel(handle)
    cancel_ns = time.perf_counter_ns() - began

    remaining = len(wheel)
    expired = 0
    calls = 0
    now = _START_MS
    gc.collect()
    began = time.perf_counter_ns()
    while now < latest:
        now += step_ms
        expired += len(advance(now))
        calls += 1
    expire_ns = time.perf_counter_ns() - began

    if expired != remaining or len(wheel) != 0:
        raise RuntimeError(f"expected {remaining} expiries, got {expired}; {len(wheel)} left")
    return {
        "n": float(n),
        "insert_ns": insert_ns / n,
        "cancel_ns": cancel_ns / len(victims),
        "expire_ns": expire_ns / expired,
        "advance_calls": float(calls),
    }


def main(argv: list[str] | None = None) -> None:
    """Run :func:`bench_wheel` and print its figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--n", type=int, default=1_400_000, help="entries to schedule")
    parser.add_argument("--step-ms", type=int, default=1000, help="advance step, ms")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    result = bench_wheel(args.n, step_ms=args.step_ms, seed=args.seed)
    print(f"timer wheel, n={args.n:,}, advance every {args.step_ms} ms")
    print(f"  insert  {result['insert_ns']:8.0f} ns/entry")
    print(f"  cancel  {result['cancel_ns']:8.0f} ns/entry")
    print(
        f"  expire  {result['expire_ns']:8.0f} ns/entry "
        f"({result['advance_calls']:,.0f} advance calls, empty ticks included)"
    )


if __name__ == "__main__":
    main()
