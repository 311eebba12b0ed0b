"""The scorecard: did every firmware-caused AD1 stay away from the DNOs while every
genuine outage got through?

Pure: :func:`compute` takes the ground truth, what came out of the gateway (with
receipt times), when each alert was published, and the gateway's command counts, and
returns a :class:`Scorecard`. The run fails (:attr:`Scorecard.passed` is False) when

- any AD1 was lost (no output at all before the drain timeout);
- any firmware-caused AD1 of a covered meter was forwarded (the DNOs got a false alarm
  MP102B is there to prevent);
- any AD1 outside every window was suppressed: a genuine outage, or the reboot of a
  meter MP102B does not cover (a customer off supply that no DNO hears about).

Genuine AD1s inside a window are suppressed by design (the risk MP102B accepts): they
are counted and listed, never a failure. Duplicates (one alert id output twice) and
outputs for alert ids the simulator never sent are counted and shown.

The evidence for the modification's assumptions (issue 13) is shown beside what the
timeline expects: restoration alerts inside a window (FIA assumption A5 says none) and
near misses (AD1s forwarded shortly after a window of their hub ended), as the gateway
counted them. A difference is a note, not a failure: they are evidence, not decisions.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Final, Literal

import msgspec

from gateway.config import format_duration
from gbcs import format_eui64

from .timeline import Ad1Truth, Cause

__all__ = ["CategoryScore", "Evidence", "Observation", "Scorecard", "compute", "percentile"]

Outcome = Literal["forwarded", "suppressed"]

# For each cause: the outcome that is right, and the row's wording.
_ROWS: Final[tuple[tuple[Cause, Outcome, str], ...]] = (
    ("firmware-listed", "suppressed", "firmware-caused AD1s (covered meters) suppressed"),
    ("firmware-late", "forwarded", "firmware AD1s after their window ended forwarded"),
    ("firmware-unlisted", "forwarded", "firmware-caused AD1s (not covered) forwarded"),
    ("genuine", "forwarded", "genuine AD1s outside any window forwarded"),
    ("genuine-in-window", "suppressed", "genuine AD1s inside a window suppressed (MP102B risk)"),
)


class Observation(msgspec.Struct, frozen=True):
    """One output of the gateway for an alert id, and when the simulator received it."""

    alert_id: str
    outcome: Outcome
    received_ms: int


class CategoryScore(msgspec.Struct, frozen=True, kw_only=True):
    """How the AD1s of one cause came out."""

    cause: Cause
    expected: Outcome
    total: int
    as_expected: int
    """Output as ``expected``."""
    otherwise: int
    """Output the other way."""
    lost: int
    wrong_ids: tuple[str, ...] = ()
    """Alert ids output the other way (the first 20)."""

    @property
    def share(self) -> float | None:
        """``as_expected / total``, None when there were none."""
        return self.as_expected / self.total if self.total else None


class Ad1Line(msgspec.Struct, frozen=True, kw_only=True):
    """One listed AD1 (the genuine outages inside a window)."""

    alert_id: str
    chf: str
    raised_ms: int
    window_start_ms: int | None
    window_end_ms: int | None
    outcome: Outcome | None
    storm: bool


class Evidence(msgspec.Struct, frozen=True, kw_only=True):
    """The evidence for the modification's assumptions: as the gateway counted it (None:
    its metrics were unreadable) and as the timeline expects it."""

    restorations_in_window: int | None = None
    expected_restorations_in_window: int = 0
    near_misses: int | None = None
    expected_near_misses: int = 0
    near_miss_ms: int = 15 * 60_000
    """The near-miss horizon (reports.near_miss), in simulated ms."""

    def lines(self) -> list[str]:
        """The scorecard's rows: label, observed / expected."""

        def row(label: str, seen: int | None, expected: int) -> str:
            shown = "?" if seen is None else str(seen)
            return f"  {label:<60}{shown:>6} / {expected}"

        horizon = format_duration(self.near_miss_ms)
        return [
            "evidence for the modification's assumptions (observed / expected):",
            row(
                "restoration alerts inside a window (A5)",
                self.restorations_in_window,
                self.expected_restorations_in_window,
            ),
            row(
                f"near misses (AD1 forwarded within {horizon} after a window ended)",
                self.near_misses,
                self.expected_near_misses,
            ),
        ]

    def differences(self) -> list[str]:
        """What the gateway counted otherwise than expected, one sentence each."""
        out = []
        seen, want = self.restorations_in_window, self.expected_restorations_in_window
        if seen is not None and seen != want:
            out.append(
                f"the gateway counted {seen} restoration alert(s) inside a window, {want} expected"
            )
        seen, want = self.near_misses, self.expected_near_misses
        if seen is not None and seen != want:
            out.append(f"the gateway counted {seen} near miss(es), {want} expected")
        return out


class Scorecard(msgspec.Struct, frozen=True, kw_only=True):
    """The result of a run, with what it takes to explain it."""

    title: str
    categories: tuple[CategoryScore, ...]
    ad1s: int
    lost: int
    lost_ids: tuple[str, ...]
    duplicates: int
    duplicate_ids: tuple[str, ...]
    unexpected_outputs: int
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    latency_max_ms: float | None
    refusals: dict[str, int] | None
    """Commands refused by reason, as the gateway counted them; None if unreadable."""
    expected_refusals: dict[str, int]
    accepted: dict[str, int] | None
    """Commands tracked, replaced and cancelled, as the gateway counted them."""
    expected_accepted: dict[str, int]
    genuine_in_window: tuple[Ad1Line, ...]
    failures: tuple[str, ...]
    notes: tuple[str, ...] = ()
    evidence: Evidence = Evidence()

    @property
    def passed(self) -> bool:
        """No AD1 lost, no covered firmware AD1 forwarded, no AD1 outside every window
        suppressed."""
        return not self.failures

    def category(self, cause: Cause) -> CategoryScore:
        """The row of one cause."""
        return next(c for c in self.categories if c.cause == cause)

    def to_json(self) -> str:
        """The scorecard as one JSON document (``passed`` included)."""
        data = msgspec.to_builtins(self)
        data["passed"] = self.passed
        for c in data["categories"]:
            c["share"] = self.category(c["cause"]).share
        return json.dumps(data, indent=2)

    def render_table(self) -> str:
        """The scorecard as a plain-text table for a terminal."""
        lines = [self.title, ""]
        width = max(len(row[2]) for row in _ROWS) + 2
        lines.append(f"{'':<{width}}{'result':>15} {'share':>7}  {'wrong':>5} {'lost':>4}")
        for c in self.categories:
            label = next(r[2] for r in _ROWS if r[0] == c.cause)
            share = "-" if c.share is None else f"{100 * c.share:.1f}%"
            lines.append(
                f"{label:<{width}}{f'{c.as_expected} / {c.total}':>15} {share:>7}  "
                f"{c.otherwise:>5} {c.lost:>4}"
            )
        lines.append("")
        lines.append(f"{'AD1s sent (unique alert ids)':<{width}}{self.ad1s:>15}")
        lines.append(f"{'lost (no output)':<{width}}{self.lost:>15}")
        lines.append(f"{'duplicates (output twice)':<{width}}{self.duplicates:>15}")
        if self.unexpected_outputs:
            lines.append(f"{'outputs for unknown alert ids':<{width}}{self.unexpected_outputs:>15}")
        lines.append(
            f"{'latency p50 / p99 / max (ms)':<{width}}"
            f"{_ms(self.latency_p50_ms)} / {_ms(self.latency_p99_ms)} / {_ms(self.latency_max_ms)}"
        )
        lines.append("")
        lines.append("commands by gateway result (observed / expected):")
        for key in ("tracked", "replaced", "cancelled"):
            seen = "?" if self.accepted is None else str(self.accepted.get(key, 0))
            lines.append(f"  {key:<28}{seen:>6} / {self.expected_accepted.get(key, 0)}")
        lines.append("commands refused by reason (observed / expected):")
        reasons = sorted(set(self.expected_refusals) | set(self.refusals or {}))
        for reason in reasons:
            seen = "?" if self.refusals is None else str(self.refusals.get(reason, 0))
            lines.append(f"  {reason:<28}{seen:>6} / {self.expected_refusals.get(reason, 0)}")
        if not reasons:
            lines.append("  (none)")
        if self.genuine_in_window:
            lines.append("")
            lines.append("genuine AD1s inside a firmware window (the risk MP102B accepts):")
            for a in self.genuine_in_window[:30]:
                outcome = a.outcome or "lost"
                storm = " storm" if a.storm else ""
                lines.append(f"  {a.alert_id}  CHF {a.chf}  {outcome}{storm}")
            if len(self.genuine_in_window) > 30:
                lines.append(f"  ... and {len(self.genuine_in_window) - 30} more (see --json)")
        lines.append("")
        lines.extend(self.evidence.lines())
        for note in self.notes:
            lines.append(f"note: {note}")
        lines.append("")
        if self.passed:
            lines.append("PASS")
        else:
            lines.append("FAIL")
            lines.extend(f"  - {f}" for f in self.failures)
        return "\n".join(lines)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0..100) by the nearest-rank method; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * q // 100))  # ceil(n * q / 100), at least 1
    return float(ordered[int(rank) - 1])


def compute(
    truths: Iterable[Ad1Truth],
    observations: Iterable[Observation],
    published_ms: Mapping[str, int],
    *,
    refusals: Mapping[str, int] | None,
    expected_refusals: Mapping[str, int],
    accepted: Mapping[str, int] | None = None,
    expected_accepted: Mapping[str, int] | None = None,
    title: str = "poa-gateway simulation scorecard",
    notes: Sequence[str] = (),
    evidence: Evidence | None = None,
) -> Scorecard:
    """Score a run.

    ``published_ms`` is when each alert id was first published (real ms); latency is
    the first output's receipt minus that. ``evidence``: the counts of
    :class:`Evidence`, shown and noted where they differ, never a failure.
    """
    evidence = evidence or Evidence()
    truths = list(truths)
    by_id: dict[str, list[Observation]] = {}
    known = {t.alert_id for t in truths}
    unexpected = 0
    for o in observations:
        if o.alert_id in known:
            by_id.setdefault(o.alert_id, []).append(o)
        else:
            unexpected += 1
    for outputs in by_id.values():
        outputs.sort(key=lambda o: o.received_ms)

    def first(alert_id: str) -> Outcome | None:
        outputs = by_id.get(alert_id)
        return outputs[0].outcome if outputs else None

    categories = []
    failures: list[str] = []
    for cause, expected, _label in _ROWS:
        mine = [t for t in truths if t.cause == cause]
        outcomes = [first(t.alert_id) for t in mine]
        wrong = [
            t.alert_id for t, o in zip(mine, outcomes, strict=True) if o not in (expected, None)
        ]
        score = CategoryScore(
            cause=cause,
            expected=expected,
            total=len(mine),
            as_expected=sum(o == expected for o in outcomes),
            otherwise=len(wrong),
            lost=sum(o is None for o in outcomes),
            wrong_ids=tuple(wrong[:20]),
        )
        categories.append(score)
        if cause == "firmware-listed" and score.otherwise:
            failures.append(f"{score.otherwise} firmware-caused AD1(s) of covered meters forwarded")
        if cause in ("genuine", "firmware-unlisted", "firmware-late") and score.otherwise:
            what = {
                "genuine": "genuine",
                "firmware-unlisted": "firmware-caused (meter not covered)",
                "firmware-late": "firmware-caused (after the window ended)",
            }[cause]
            failures.append(f"{score.otherwise} {what} AD1(s) outside every window suppressed")
    lost = sorted(t.alert_id for t in truths if t.alert_id not in by_id)
    if lost:
        failures.insert(0, f"{len(lost)} AD1(s) lost: no output")
    duplicates = sorted(a for a, outputs in by_id.items() if len(outputs) > 1)
    latencies = [
        float(outputs[0].received_ms - published_ms[a])
        for a, outputs in by_id.items()
        if a in published_ms
    ]
    in_window = tuple(
        Ad1Line(
            alert_id=t.alert_id,
            chf=format_eui64(t.chf),
            raised_ms=t.raised_ms,
            window_start_ms=t.window_start_ms,
            window_end_ms=t.window_end_ms,
            outcome=first(t.alert_id),
            storm=t.storm,
        )
        for t in truths
        if t.cause == "genuine-in-window"
    )
    return Scorecard(
        title=title,
        categories=tuple(categories),
        ad1s=len(truths),
        lost=len(lost),
        lost_ids=tuple(lost[:50]),
        duplicates=len(duplicates),
        duplicate_ids=tuple(duplicates[:50]),
        unexpected_outputs=unexpected,
        latency_p50_ms=percentile(latencies, 50),
        latency_p99_ms=percentile(latencies, 99),
        latency_max_ms=max(latencies) if latencies else None,
        refusals=None if refusals is None else dict(sorted(refusals.items())),
        expected_refusals=dict(sorted(expected_refusals.items())),
        accepted=None if accepted is None else dict(accepted),
        expected_accepted=dict(expected_accepted or {}),
        genuine_in_window=in_window,
        failures=tuple(failures),
        notes=(*notes, *evidence.differences()),
        evidence=evidence,
    )
