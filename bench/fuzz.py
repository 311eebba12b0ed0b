"""Fuzz campaign: mutations of every RTDS vector and of valid envelopes, each input timed.

Run from the checkout::

    .venv/bin/python bench/fuzz.py [--inputs N] [--seed S] [--budget-ms 10]
                                   [--vectors DIR] [--workers 2] [--cli N] [--json]

Every input is generated from the seeds and strategies of ``tests/fuzz_support.py`` (the
same core ``tests/test_fuzz.py`` runs) and goes through every reader of its kind: the
envelope decoders, ``gbcs.decode_frame``, ``gbcs.verify_frame`` against the RTDS
keystore, the renderer of ``poa-gateway decode`` and the JSON log writer. An exception
other than ``GbcsError`` or ``WireError`` is a finding: counted, and the first few
written as hex to ``--repro-dir`` (default ``bench/out/fuzz``, ignored by git).

Timing: each input is timed on its own with ``time.perf_counter_ns``, garbage collector
on, as in the daemon. An input over the budget is run twice more and keeps its fastest
time, so that a pause of a loaded machine (this one is shared) is not charged to the
input; how many were re-timed is printed. The figures are per input, for everything
the input went through (up to three envelope decoders, or a frame's decode, signature
check, rendering and log line).

``--cli N`` also runs ``poa-gateway decode`` (in process, on files) over N generated
frames, and ``status`` and ``explain`` over N/10 damaged copies of a state database,
counting exit statuses and exceptions (a traceback).

Deterministic for a given ``--seed`` and ``--inputs`` (inputs are generated in chunks,
each from its own seeded generator), apart from the signatures, whose key is generated
at start. Exit status 1 when any input raised another exception or went over budget.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import multiprocessing
import os
import platform
import random
import sys
import tempfile
import time
from array import array
from collections import Counter
from importlib import metadata
from pathlib import Path
from typing import Final, TextIO

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests import fuzz_support  # noqa: E402 - after the checkout is on sys.path

CHUNK: Final = 5000  # inputs per job handed to a worker
MAX_REPROS: Final = 20  # untyped findings written out (per run)


class Finding(msgspec.Struct, frozen=True):
    """An input that raised an exception other than the packages' own."""

    kind: str
    strategy: str
    error: str
    data_hex: str


class Chunk(msgspec.Struct, frozen=True):
    """What a worker reports for one chunk of inputs."""

    outcomes: dict[str, int]
    strategies: dict[str, int]
    times_ns: bytes  # array('q') of per-input times
    retimed: int
    untyped: int
    findings: list[Finding]


class Job(msgspec.Struct, frozen=True):
    """One chunk of work: which inputs, from which seeds."""

    seed: int
    index: int
    count: int
    vectors: str
    budget_ns: int


_HARNESS: fuzz_support.Harness | None = None


def _harness(vectors: str) -> fuzz_support.Harness:
    global _HARNESS  # noqa: PLW0603 - one harness per worker process, built on first use
    if _HARNESS is None:
        _HARNESS = fuzz_support.Harness(Path(vectors))
    return _HARNESS


def run_chunk(job: Job) -> Chunk:
    """Generate, check and time ``job.count`` inputs (in a worker process)."""
    tally = fuzz_support.run(
        _harness(job.vectors),
        random.Random(f"{job.seed}:{job.index}"),
        job.count,
        clock=time.perf_counter_ns,
        budget_ns=job.budget_ns,
        max_findings=MAX_REPROS,
    )
    return Chunk(
        outcomes=dict(tally.outcomes),
        strategies=dict(tally.strategies),
        times_ns=tally.times_ns.tobytes(),
        retimed=tally.retimed,
        untyped=tally.untyped,
        findings=[
            Finding(f.kind, f.strategy, f.error, f.data.hex().upper()) for f in tally.findings
        ],
    )


class CliFigures(msgspec.Struct, frozen=True):
    """Exit statuses and exceptions of the command line over generated input."""

    decode_runs: int
    decode_exits: dict[str, int]
    state_runs: int
    state_exits: dict[str, int]
    exceptions: list[str]


def run_cli(harness: fuzz_support.Harness, count: int, seed: int) -> CliFigures:
    """``poa-gateway decode`` over ``count`` generated frames, ``status`` and ``explain``
    over ``count // 10`` damaged state databases; in process, output discarded."""
    from gateway.cli.main import main  # only this part needs the CLI

    rnd = random.Random(f"{seed}:cli")
    decode_exits: Counter[str] = Counter()
    state_exits: Counter[str] = Counter()
    exceptions: list[str] = []

    def call(argv: list[str], exits: Counter[str]) -> None:
        sink = io.StringIO()
        try:
            with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
                exits[str(main(argv))] += 1
        except SystemExit as exc:
            exits[f"exit {exc.code}"] += 1
        except Exception as exc:  # noqa: BLE001 - what the CLI must never do
            exits["exception"] += 1
            if len(exceptions) < MAX_REPROS:
                exceptions.append(f"{' '.join(argv[:2])}: {fuzz_support.describe(exc)}")

    with tempfile.TemporaryDirectory(prefix="poa-fuzz-cli-") as tmp:
        folder = Path(tmp)
        frame_file = folder / "frame.hex"
        while sum(decode_exits.values()) < count:
            kind, _strategy, data = harness.generate(rnd)
            if kind == "frame":
                frame_file.write_text(data.hex())
                call(["decode", str(frame_file)], decode_exits)
        home = folder / "state"
        config = fuzz_support.make_state_home(home)
        pristine = fuzz_support.state_file(home).read_bytes()
        for _ in range(count // 10):  # each run opens a database: slower than a decode
            fuzz_support.write_state(home, fuzz_support.damage(pristine, rnd))
            for argv in (
                ["status", "--windows"],
                ["explain", rnd.choice(fuzz_support.EXPLAIN_SUBJECTS)],
            ):
                call([*argv, "--config", str(config)], state_exits)
    return CliFigures(
        decode_runs=sum(decode_exits.values()),
        decode_exits=dict(decode_exits),
        state_runs=sum(state_exits.values()),
        state_exits=dict(state_exits),
        exceptions=exceptions,
    )


class Report(msgspec.Struct, frozen=True):
    """Everything the campaign prints."""

    python: str
    cbor2: str
    msgspec: str
    cpu: str
    workers: int
    seed: int
    inputs: int
    seconds: float
    inputs_per_s: float
    budget_ms: float
    max_ms: float
    p99_9_ms: float
    p50_us: float
    over_budget: int
    retimed: int
    untyped: int
    outcomes: dict[str, int]
    strategies: dict[str, int]
    findings: list[Finding]
    repro_dir: str | None
    cli: CliFigures | None


def _percentile(sorted_ns: array[int], fraction: float) -> int:
    if not sorted_ns:
        return 0
    return sorted_ns[min(len(sorted_ns) - 1, int(fraction * len(sorted_ns)))]


def _write_repros(findings: list[Finding], folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i, finding in enumerate(findings):
        (folder / f"untyped-{i:02d}-{finding.kind}.hex").write_text(finding.data_hex + "\n")
        (folder / f"untyped-{i:02d}-{finding.kind}.txt").write_text(
            f"{finding.kind} {finding.strategy}\n{finding.error}\n"
        )


def _table(report: Report, out: TextIO | None = None) -> None:
    stream = out or sys.stdout

    def say(text: str = "") -> None:
        print(text, file=stream)

    say(f"python {report.python}, cbor2 {report.cbor2}, msgspec {report.msgspec}")
    say(f"cpu: {report.cpu}; {report.workers} worker(s); seed {report.seed}")
    say()
    say(f"inputs            {report.inputs:,} in {report.seconds:.1f} s")
    say(f"inputs/s          {report.inputs_per_s:,.0f}")
    say(f"untyped           {report.untyped}")
    say(f"max per input     {report.max_ms:.3f} ms")
    say(f"p99.9 per input   {report.p99_9_ms:.3f} ms")
    say(f"p50 per input     {report.p50_us:.1f} us")
    say(f"over {report.budget_ms:g} ms     {report.over_budget} (re-timed: {report.retimed})")
    say()
    say("outcomes (typed errors by reason):")
    for label, n in sorted(report.outcomes.items(), key=lambda kv: (-kv[1], kv[0])):
        say(f"  {n:>10,}  {label}")
    say()
    say("inputs by kind/strategy:")
    for label, n in sorted(report.strategies.items()):
        say(f"  {n:>10,}  {label}")
    if report.findings:
        say()
        say(f"untyped exceptions (first {len(report.findings)}; hex in {report.repro_dir}):")
        for finding in report.findings:
            say(f"  {finding.kind} {finding.strategy}: {finding.error}")
    if report.cli is not None:
        cli = report.cli
        say()
        say(f"poa-gateway decode, {cli.decode_runs:,} frames: exit statuses {cli.decode_exits}")
        say(f"status/explain, {cli.state_runs:,} runs: exit statuses {cli.state_exits}")
        for line in cli.exceptions:
            say(f"  exception: {line}")


def main(argv: list[str] | None = None) -> int:
    """Run the campaign; 1 when anything untyped or over budget was found."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--inputs", type=int, default=1_000_000, help="inputs (1,000,000)")
    parser.add_argument("--seed", type=int, default=1, help="generator seed (1)")
    parser.add_argument("--budget-ms", type=float, default=10.0, help="per input (10 ms)")
    parser.add_argument(
        "--vectors",
        type=Path,
        default=Path(os.environ.get("GBCS_VECTORS") or ROOT.parent / "shared" / "vectors"),
        help="RTDS vectors and keystore (../shared/vectors, or $GBCS_VECTORS)",
    )
    parser.add_argument("--workers", type=int, default=2, help="processes, at most 2 (2)")
    parser.add_argument("--cli", type=int, default=0, metavar="N", help="also run the CLI")
    parser.add_argument(
        "--repro-dir", type=Path, default=ROOT / "bench" / "out" / "fuzz", help="findings"
    )
    parser.add_argument("--json", action="store_true", help="JSON on stdout, table on stderr")
    args = parser.parse_args(argv)
    workers = max(1, min(args.workers, 2))  # the machine has 2 cores, shared
    budget_ns = int(args.budget_ms * 1_000_000)
    jobs = [
        Job(args.seed, index, min(CHUNK, args.inputs - start), str(args.vectors), budget_ns)
        for index, start in enumerate(range(0, args.inputs, CHUNK))
    ]
    fuzz_support.Harness(args.vectors).close()  # fail early on a missing vectors folder

    outcomes: Counter[str] = Counter()
    strategies: Counter[str] = Counter()
    times = array("q")
    findings: list[Finding] = []
    retimed = untyped = 0
    started = time.perf_counter()
    context = multiprocessing.get_context("spawn")  # a fresh interpreter, nothing inherited
    with context.Pool(workers) as pool:
        for chunk in pool.imap_unordered(run_chunk, jobs):
            outcomes.update(chunk.outcomes)
            strategies.update(chunk.strategies)
            times.frombytes(chunk.times_ns)
            retimed += chunk.retimed
            untyped += chunk.untyped
            findings.extend(chunk.findings[: MAX_REPROS - len(findings)])
    seconds = time.perf_counter() - started
    ordered = array("q", sorted(times))
    cli = None
    if args.cli:
        harness = fuzz_support.Harness(args.vectors)
        try:
            cli = run_cli(harness, args.cli, args.seed)
        finally:
            harness.close()
    repro_dir = None
    if findings:
        _write_repros(findings, args.repro_dir)
        repro_dir = str(args.repro_dir)
    over = sum(1 for t in times if t > budget_ns)
    report = Report(
        python=platform.python_version(),
        cbor2=metadata.version("cbor2"),
        msgspec=metadata.version("msgspec"),
        cpu=platform.processor() or platform.machine(),
        workers=workers,
        seed=args.seed,
        inputs=len(times),
        seconds=round(seconds, 2),
        inputs_per_s=round(len(times) / seconds, 1) if seconds else 0.0,
        budget_ms=args.budget_ms,
        max_ms=round((ordered[-1] if ordered else 0) / 1e6, 3),
        p99_9_ms=round(_percentile(ordered, 0.999) / 1e6, 3),
        p50_us=round(_percentile(ordered, 0.5) / 1e3, 1),
        over_budget=over,
        retimed=retimed,
        untyped=untyped,
        outcomes=dict(outcomes),
        strategies=dict(strategies),
        findings=findings,
        repro_dir=repro_dir,
        cli=cli,
    )
    if args.json:
        _table(report, sys.stderr)
        print(msgspec.json.format(msgspec.json.encode(report).decode()))
    else:
        _table(report)
    cli_bad = cli is not None and bool(cli.exceptions)
    return 1 if untyped or over or cli_bad else 0


if __name__ == "__main__":
    sys.exit(main())
