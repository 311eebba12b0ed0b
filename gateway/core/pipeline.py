"""The pure step between the engine and the shell: an engine result in, typed effects out.

Theory of operation
-------------------
The engine decides (gateway/core/engine.py). This module turns each decision into exactly
what must happen, as values: the rows to write (:data:`Write`: put or delete this
activation, raise this counter, record this decision, append this suppression record,
prune decisions, keep the command judged, keep a restoration alert) and the outputs to
publish (:class:`Publish`). The shell (gateway/service.py) carries them out in a fixed
order: outputs, then one commit, then the acknowledgement. It never reads the engine's
state back to work out what changed.

Nothing here does I/O or reads a clock: every function takes what it needs as arguments.
A new kind of input gets a function here and its effects; a new state backend only has
to apply the same :data:`Write` values (gateway/state/protocol.py).
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import msgspec

from gateway.state.audit import CommandRecord
from gateway.state.protocol import StateStore
from gateway.state.restorations import RestorationRecord
from gateway.wire import DccAlertEnvelope, SuppressionRecord, encode

from .engine import Engine
from .events import (
    Activation,
    ActivationCancelled,
    ActivationTracked,
    AlertDecision,
    CommandOutcome,
    CommandRefused,
    CommandResult,
    DedupeExpired,
    DeviceOutcomeSeen,
    Housekeeping,
    OutcomeApplied,
    OutcomeKind,
    RestorationObserved,
    WindowExpired,
)

__all__ = [
    "AppendSuppression",
    "DeleteActivation",
    "Judged",
    "Output",
    "PruneDecisions",
    "Publish",
    "PutActivation",
    "PutCommand",
    "PutDecision",
    "PutRestoration",
    "SetCounter",
    "Write",
    "apply",
    "command_record",
    "command_writes",
    "device_outcome",
    "housekeeping_writes",
    "judge_alert",
    "restoration_record",
    "suppression_record",
]


# -- effects -------------------------------------------------------------------------------


class PutActivation(msgspec.Struct, frozen=True):
    """Record this activation (replacing the row with its esme, originator and counter)."""

    activation: Activation


class DeleteActivation(msgspec.Struct, frozen=True):
    """Forget this activation's row."""

    activation: Activation


class SetCounter(msgspec.Struct, frozen=True):
    """Raise the last accepted originator counter for (originator, device)."""

    originator: bytes
    device: bytes
    counter: int


class PutDecision(msgspec.Struct, frozen=True):
    """Record an alert's decision, its effect done (published or logged)."""

    decision: AlertDecision


class AppendSuppression(msgspec.Struct, frozen=True):
    """Append a record to the suppression log (``encoded``: its CBOR, already made)."""

    record: SuppressionRecord
    encoded: bytes


class PruneDecisions(msgspec.Struct, frozen=True):
    """Forget the decisions made before ``before_ms``."""

    before_ms: int


class PutCommand(msgspec.Struct, frozen=True):
    """Keep a CS06 judged and what became of it, refused ones too (the commands table:
    gateway/state/audit.py)."""

    command: CommandRecord


class PutRestoration(msgspec.Struct, frozen=True):
    """Keep a restoration alert, the evidence for assumption A5 (the restorations table:
    gateway/state/restorations.py)."""

    restoration: RestorationRecord


Write = (
    PutActivation
    | DeleteActivation
    | SetCounter
    | PutDecision
    | AppendSuppression
    | PruneDecisions
    | PutCommand
    | PutRestoration
)
"""A row to write, made durable by the next commit."""


class Output(enum.StrEnum):
    """Where a publish goes (the ``[topics]`` key of its topic)."""

    DNO_ALERT = "dno_alert"
    SUPPRESSED = "suppressed"
    QUARANTINE = "quarantine"
    REPORTS = "reports"


class Publish(msgspec.Struct, frozen=True):
    """Publish ``payload`` on the topic of ``output``, awaited until the broker has it."""

    output: Output
    payload: bytes


def apply(store: StateStore, writes: list[Write]) -> None:
    """Queue ``writes`` on ``store`` (durable once the store's next flush returns)."""
    for w in writes:
        match w:
            case PutActivation(activation=a):
                store.put_activation(a)
            case DeleteActivation(activation=a):
                store.delete_activation(a)
            case SetCounter(originator=originator, device=device, counter=counter):
                store.set_counter(originator, device, counter)
            case PutDecision(decision=decision):
                store.put_decision(decision, effect_done=True)
            case AppendSuppression(record=record, encoded=encoded):
                store.append_suppression(record, encoded)
            case PruneDecisions(before_ms=before_ms):
                store.prune_decisions(before_ms)
            case PutCommand(command=command):
                store.put_command(command)
            case PutRestoration(restoration=restoration):
                store.put_restoration(restoration)


# -- alerts --------------------------------------------------------------------------------


class Judged(msgspec.Struct, frozen=True):
    """One DCC alert decided: what to publish and which rows to write.

    ``record`` is set for a suppression. A redelivered alert whose effect is already on
    record has no effects at all (``duplicate``): it is only acknowledged.
    """

    decision: AlertDecision
    duplicate: bool
    publish: Publish | None
    writes: tuple[Write, ...]
    record: SuppressionRecord | None = None


def judge_alert(
    engine: Engine,
    alert: DccAlertEnvelope,
    payload: bytes,
    received: int,
    effect_on_record: Callable[[str], bool],
) -> Judged:
    """The engine's decision on one alert, and its effects: a suppression publishes its
    record on ``gateway/suppressed`` and appends it to the log; a forward republishes
    the alert's exact bytes; both record the decision."""
    decision = engine.on_dcc_alert(alert, received)
    if decision.duplicate and effect_on_record(alert.alert_id):
        return Judged(decision, duplicate=True, publish=None, writes=())
    if not decision.suppressed:
        return Judged(
            decision,
            duplicate=False,
            publish=Publish(Output.DNO_ALERT, payload),
            writes=(PutDecision(decision),),
        )
    record = suppression_record(alert, decision, received)
    encoded = encode(record)
    return Judged(
        decision,
        duplicate=False,
        publish=Publish(Output.SUPPRESSED, encoded),
        writes=(AppendSuppression(record, encoded), PutDecision(decision)),
        record=record,
    )


def suppression_record(
    alert: DccAlertEnvelope, decision: AlertDecision, received: int
) -> SuppressionRecord:
    """The suppression log's record of a suppressed alert, naming the window and the
    command that opened it."""
    a = decision.activation
    assert a is not None  # a suppression always names its activation
    return SuppressionRecord(
        v=1,
        kind="suppression",
        alert_id=alert.alert_id,
        chf_id=decision.chf,
        esme_id=a.esme,
        raised_at=alert.raised_at,
        received_at=received,
        window_start=a.start_ms,
        window_end=a.end_ms,
        request_id=a.request_id,
        originator=a.originator,
        originator_counter=a.counter,
        activation=a.kind,
    )


# -- commands and device outcomes ----------------------------------------------------------


def command_writes(result: CommandResult) -> list[Write]:
    """The rows a CS06's result changes: the activation tracked (and the pending one it
    replaced) or cancelled, and the originator counter. A refusal changes no state (its
    trace is :func:`command_record`'s)."""
    if isinstance(result, ActivationTracked):
        a = result.activation
        writes: list[Write] = [PutActivation(a)]
        if result.replaced is not None:
            writes.append(DeleteActivation(result.replaced))
        writes.append(SetCounter(a.originator, a.esme, a.counter))
        return writes
    if isinstance(result, ActivationCancelled):
        cancelled: list[Write] = []
        if result.cancelled is not None:
            cancelled.append(DeleteActivation(result.cancelled))
        cancelled.append(SetCounter(result.originator, result.esme, result.counter))
        return cancelled
    return []


def command_record(
    result: CommandResult, *, chf: bytes | None, request_id: str | None, seen_at: int
) -> PutCommand:
    """The commands table's row of a CS06's result, refused or not, so that ``explain``
    can say weeks later what became of it and why. ``chf`` is the recipient's hub as the
    inventory has it (None when unknown)."""
    window: tuple[int | None, int | None] = (None, None)
    if isinstance(result, CommandRefused):
        esme, originator, counter = result.esme, result.originator, result.counter
        outcome, reason, detail = CommandOutcome.REFUSED, str(result.reason), result.detail
    elif isinstance(result, ActivationTracked):
        a = result.activation
        esme, originator, counter, chf = a.esme, a.originator, a.counter, a.chf
        outcome = CommandOutcome.REPLACED if result.replaced else CommandOutcome.TRACKED
        reason, detail = a.kind, ""
        if result.replaced is not None:
            detail = f"replaced the pending activation {result.replaced.request_id}"
        window = (a.start_ms, a.end_ms)
    else:
        esme, originator, counter = result.esme, result.originator, result.counter
        outcome, reason = CommandOutcome.CANCELLED, "cancellation"
        detail = (
            f"cancelled the pending activation {result.cancelled.request_id}"
            if result.cancelled is not None
            else "nothing was pending"
        )
    return PutCommand(
        CommandRecord(
            esme=esme,
            originator=originator,
            counter=counter,
            outcome=outcome,
            reason=reason,
            chf=chf,
            request_id=request_id,
            detail=detail,
            seen_at=seen_at,
            last_seen_at=seen_at,
            window_start=window[0],
            window_end=window[1],
        )
    )


def restoration_record(
    observed: RestorationObserved, *, counter: int, alert_code: int, received_at: int
) -> PutRestoration:
    """The restorations table's row of a restoration alert (``counter``: its frame's
    originator counter, which with the ESME names it)."""
    a = observed.activation
    return PutRestoration(
        RestorationRecord(
            esme=observed.esme,
            counter=counter,
            alert_code=alert_code,
            chf=observed.chf,
            received_at=received_at,
            in_window=observed.in_window,
            request_id=a.request_id if a is not None else None,
        )
    )


def device_outcome(
    engine: Engine, seen: DeviceOutcomeSeen, now: int
) -> tuple[OutcomeApplied, list[Write]]:
    """A CS06 response or 0x00CA alert applied by the engine, and the row it changed: a
    window closed early is rewritten (or deleted, if the engine dropped it), a success
    recorded; other outcomes change nothing durable."""
    device = seen.device
    chf = device.chf_id if device is not None else None
    before = {a.counter: a for a in engine.activations_for(chf)} if chf is not None else {}
    outcome = engine.on_device_outcome(seen, now)
    a = outcome.activation
    if a is None or outcome.kind not in (OutcomeKind.CLOSED_EARLY, OutcomeKind.SUCCEEDED):
        return outcome, []
    if any(x.counter == a.counter for x in engine.activations_for(a.chf)):
        return outcome, [PutActivation(a)]
    if a.counter in before:
        return outcome, [DeleteActivation(before[a.counter])]
    return outcome, []


# -- housekeeping --------------------------------------------------------------------------


def housekeeping_writes(events: list[Housekeeping], now: int, dedupe_ms: int) -> list[Write]:
    """The rows housekeeping changes: expired windows deleted, decisions past the dedupe
    horizon pruned (once per pass)."""
    writes: list[Write] = []
    pruned = False
    for event in events:
        if isinstance(event, WindowExpired):
            writes.append(DeleteActivation(event.activation))
        elif isinstance(event, DedupeExpired) and not pruned:
            writes.append(PruneDecisions(now - dedupe_ms))
            pruned = True
    return writes
