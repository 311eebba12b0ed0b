"""Benchmark: decode and signature verification of three RTDS frames.

Run from the checkout::

    .venv/bin/python bench/codec.py [--iterations N] [--vectors DIR] [--json]

Each iteration is timed on its own with ``time.perf_counter_ns`` so the median and p99
describe single calls (the timer's own cost, printed in the header, is included in
every figure). Warm-up iterations run first and are not counted; the garbage collector
is paused while timing, as ``timeit`` does. With ``--json`` the JSON object goes to
stdout and the table to stderr, so ``> out.json`` keeps both readable.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from functools import partial
from importlib import metadata
from pathlib import Path

import msgspec
from cryptography.hazmat.backends.openssl import backend as openssl_backend

import gbcs

ROOT = Path(__file__).resolve().parent.parent

# (file name, label): a DD-wrapped CS06 command, its bare response, a 0x00CA alert.
FRAMES = (
    ("CS06_11.3_IMMEDIATE_SUCCESS_COMMAND_GBCS.HEX", "CS06 command"),
    ("CS06_11.3_IMMEDIATE_SUCCESS_RESPONSE_GBCS.HEX", "CS06 response"),
    ("CS06_11.3_8F66_FUTURE_DATED_SUCCESS_ALERT_GBCS.HEX", "0x00CA alert"),
)


class Result(msgspec.Struct, frozen=True):
    """Timings of one operation on one frame, in microseconds."""

    vector: str
    label: str
    frame_bytes: int
    operation: str
    iterations: int
    median_us: float
    p99_us: float
    mean_us: float
    min_us: float


class Report(msgspec.Struct, frozen=True):
    """Everything the benchmark prints."""

    python: str
    implementation: str
    platform: str
    cpu_count: int | None
    usable_cpus: int
    cryptography: str
    openssl: str
    iterations: int
    warmup: int
    timer_overhead_ns: float
    results: list[Result]


def default_vectors() -> Path:
    """$GBCS_VECTORS, else ../shared/vectors beside the checkout."""
    override = os.environ.get("GBCS_VECTORS")
    return Path(override) if override else ROOT.parent / "shared" / "vectors"


def find_vector(vectors: Path, name: str) -> bytes:
    matches = sorted(vectors.glob(f"rtds-*/*/{name}"))
    if len(matches) != 1:
        raise SystemExit(f"codec bench: {len(matches)} files named {name} under {vectors}")
    return bytes.fromhex(matches[0].read_text().strip())


def usable_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def timer_overhead_ns(samples: int = 10_000) -> float:
    """Median cost of two back-to-back ``perf_counter_ns`` calls."""
    clock = time.perf_counter_ns
    deltas = []
    for _ in range(samples):
        start = clock()
        deltas.append(clock() - start)
    return statistics.median(deltas)


def time_calls(call: Callable[[], object], iterations: int, warmup: int) -> list[int]:
    """Nanoseconds taken by each of ``iterations`` calls, after ``warmup`` untimed ones."""
    for _ in range(warmup):
        call()
    clock = time.perf_counter_ns
    samples = [0] * iterations
    gc.collect()
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for i in range(iterations):
            start = clock()
            call()
            samples[i] = clock() - start
    finally:
        if gc_was_enabled:
            gc.enable()
    return samples


def summarise(
    vector: str, label: str, frame_bytes: int, operation: str, samples: list[int]
) -> Result:
    us = [s / 1000 for s in samples]
    # quantiles(n=100) needs two samples; its 99th cut point is the p99.
    p99 = statistics.quantiles(us, n=100)[98] if len(us) > 1 else us[0]
    return Result(
        vector=vector,
        label=label,
        frame_bytes=frame_bytes,
        operation=operation,
        iterations=len(us),
        median_us=round(statistics.median(us), 3),
        p99_us=round(p99, 3),
        mean_us=round(statistics.fmean(us), 3),
        min_us=round(min(us), 3),
    )


def run(vectors: Path, iterations: int, warmup: int) -> Report:
    store = gbcs.TrustStore.from_directory(vectors / "keystore")
    results: list[Result] = []
    for name, label in FRAMES:
        data = find_vector(vectors, name)
        frame = gbcs.decode_frame(data)
        verdict = gbcs.verify_frame(frame, store)
        if not verdict.valid:
            raise SystemExit(f"codec bench: {name} does not verify ({verdict.status})")
        decode = time_calls(partial(gbcs.decode_frame, data), iterations, warmup)
        results.append(summarise(name, label, len(data), "decode", decode))
        verify = time_calls(partial(gbcs.verify_frame, frame, store), iterations, warmup)
        results.append(summarise(name, label, len(data), "verify", verify))
    return Report(
        python=platform.python_version(),
        implementation=platform.python_implementation(),
        platform=platform.platform(),
        cpu_count=os.cpu_count(),
        usable_cpus=usable_cpus(),
        cryptography=metadata.version("cryptography"),
        openssl=openssl_backend.openssl_version_text(),
        iterations=iterations,
        warmup=warmup,
        timer_overhead_ns=timer_overhead_ns(),
        results=results,
    )


def format_table(report: Report) -> str:
    lines = [
        f"Python {report.python} ({report.implementation}) on {report.platform}",
        f"CPUs: {report.cpu_count} ({report.usable_cpus} usable); "
        f"cryptography {report.cryptography}, {report.openssl}",
        f"{report.iterations} timed iterations per row after {report.warmup} warm-up; "
        f"perf_counter_ns overhead {report.timer_overhead_ns:.0f} ns (included)",
        "",
        f"{'frame':<15} {'bytes':>5} {'operation':<9} {'median µs':>10} {'p99 µs':>9} "
        f"{'mean µs':>9} {'min µs':>9}",
    ]
    for r in report.results:
        lines.append(
            f"{r.label:<15} {r.frame_bytes:>5} {r.operation:<9} {r.median_us:>10.2f} "
            f"{r.p99_us:>9.2f} {r.mean_us:>9.2f} {r.min_us:>9.2f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Median and p99 microseconds to decode and verify three RTDS frames."
    )
    parser.add_argument(
        "--iterations",
        type=int,
        default=10_000,
        help="timed calls per frame and operation (default 10000)",
    )
    parser.add_argument(
        "--vectors",
        type=Path,
        default=None,
        help="the shared vectors folder (default $GBCS_VECTORS, else ../shared/vectors)",
    )
    parser.add_argument(
        "--json", action="store_true", help="JSON object on stdout, the table on stderr"
    )
    args = parser.parse_args(argv)
    if args.iterations < 1:
        parser.error("--iterations must be at least 1")
    vectors: Path = args.vectors if args.vectors is not None else default_vectors()
    if not vectors.is_dir():
        parser.error(f"no vectors folder at {vectors}: pass --vectors or set GBCS_VECTORS")

    report = run(vectors, args.iterations, warmup=max(100, args.iterations // 10))
    table = format_table(report)
    if args.json:
        print(table, file=sys.stderr)
        print(msgspec.json.format(msgspec.json.encode(report)).decode())
    else:
        print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
