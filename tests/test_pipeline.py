"""The pure step between the engine and the shell: each engine result becomes exactly the
rows to write and the outputs to publish, with no I/O."""

from __future__ import annotations

from typing import Any

from gateway import wire
from gateway.core import pipeline
from gateway.core.engine import Engine, EngineConfig
from gateway.core.events import (
    Activation,
    ActivationCancelled,
    ActivationTracked,
    AlertDecision,
    AlertReason,
    DedupeExpired,
    Housekeeping,
    WindowEnded,
    WindowExpired,
)
from gateway.core.pipeline import (
    AppendSuppression,
    DeleteActivation,
    Output,
    PruneDecisions,
    PutActivation,
    PutDecision,
    SetCounter,
)
from gbcs import ActivationResponseCode

from .test_engine import CHF, MIN, OTHER_CHF, SUPPLIER, T0, ad1, command, response


def engine() -> Engine:
    return Engine(EngineConfig(), T0)


def never_on_record(_alert_id: str) -> bool:
    return False


def test_a_suppressed_alert_publishes_its_record_and_writes_record_and_decision() -> None:
    e = engine()
    e.on_command(command(10), T0)
    alert = ad1(T0 + MIN, alert_id="s-1")
    payload = wire.encode(alert)
    judged = pipeline.judge_alert(e, alert, payload, T0 + MIN, never_on_record)
    assert judged.record is not None
    assert judged.publish == pipeline.Publish(Output.SUPPRESSED, wire.encode(judged.record))
    assert judged.writes == (
        AppendSuppression(judged.record, wire.encode(judged.record)),
        PutDecision(judged.decision),
    )
    assert (judged.record.alert_id, judged.record.chf_id) == ("s-1", CHF)
    assert judged.record.originator_counter == 10


def test_a_forwarded_alert_republishes_its_exact_bytes_and_writes_its_decision() -> None:
    alert = ad1(T0, chf=OTHER_CHF, alert_id="f-1")
    payload = wire.encode(alert) + b""  # the bytes as received
    judged = pipeline.judge_alert(engine(), alert, payload, T0, never_on_record)
    assert judged.publish == pipeline.Publish(Output.DNO_ALERT, payload)
    assert judged.writes == (PutDecision(judged.decision),)
    assert judged.record is None


def test_a_redelivered_alert_whose_effect_is_on_record_has_no_effect() -> None:
    e = engine()
    alert = ad1(T0, alert_id="d-1")
    pipeline.judge_alert(e, alert, b"x", T0, never_on_record)
    judged = pipeline.judge_alert(e, alert, b"x", T0 + 5, lambda alert_id: alert_id == "d-1")
    assert judged.duplicate
    assert (judged.publish, judged.writes) == (None, ())
    again = pipeline.judge_alert(e, alert, b"x", T0 + 6, never_on_record)
    assert again.publish is not None  # not on record: the effect is made again


def test_a_tracked_command_writes_its_activation_and_counter() -> None:
    result = engine().on_command(command(10), T0)
    assert isinstance(result, ActivationTracked)
    a = result.activation
    assert pipeline.command_writes(result) == [PutActivation(a), SetCounter(SUPPLIER, a.esme, 10)]


def test_a_replacing_command_also_deletes_the_pending_one_it_replaced() -> None:
    e = engine()
    e.on_command(command(10, execution_ms=T0 + 60 * MIN), T0)
    result = e.on_command(command(11, execution_ms=T0 + 90 * MIN), T0)
    assert isinstance(result, ActivationTracked)
    assert result.replaced is not None
    assert pipeline.command_writes(result) == [
        PutActivation(result.activation),
        DeleteActivation(result.replaced),
        SetCounter(SUPPLIER, result.activation.esme, 11),
    ]


def test_a_cancellation_deletes_the_pending_activation_and_raises_the_counter() -> None:
    import gbcs

    e = engine()
    first = e.on_command(command(10, execution_ms=T0 + 60 * MIN), T0)
    assert isinstance(first, ActivationTracked)
    result = e.on_command(command(11, execution_time=gbcs.CANCELLATION_TIME), T0)
    assert isinstance(result, ActivationCancelled)
    assert pipeline.command_writes(result) == [
        DeleteActivation(first.activation),
        SetCounter(SUPPLIER, first.activation.esme, 11),
    ]


def test_a_refused_command_writes_nothing() -> None:
    result = engine().on_command(command(10, on_guid_list=False), T0)
    assert pipeline.command_writes(result) == []


def test_a_window_closed_early_by_the_meter_rewrites_its_row() -> None:
    e = engine()
    tracked = e.on_command(command(10), T0)
    assert isinstance(tracked, ActivationTracked)
    outcome, writes = pipeline.device_outcome(
        e, response(10, ActivationResponseCode.NO_IMAGE_HELD), T0 + MIN
    )
    assert outcome.activation is not None
    assert outcome.activation.closed_early  # kept for late alerts, ended at the outcome
    assert writes == [PutActivation(outcome.activation)]


def test_an_outcome_that_changes_nothing_writes_nothing() -> None:
    _, writes = pipeline.device_outcome(engine(), response(99, None), T0)
    assert writes == []


def test_housekeeping_deletes_expired_windows_and_prunes_decisions_once() -> None:
    a = Activation(
        esme=bytes(8),
        chf=CHF,
        originator=SUPPLIER,
        counter=1,
        start_ms=T0,
        end_ms=T0 + 30 * MIN,
        future_dated=False,
        seen_at=T0,
    )
    events: list[Housekeeping] = [WindowEnded(a), WindowExpired(a), DedupeExpired(3)]
    events.append(DedupeExpired(2))
    writes = pipeline.housekeeping_writes(events, T0 + 200 * MIN, 120 * MIN)
    assert writes == [DeleteActivation(a), PruneDecisions(T0 + 80 * MIN)]


class Recorder:
    """Records the store calls :func:`pipeline.apply` makes."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any, **kwargs: Any) -> None:
            self.calls.append((name, (args, kwargs)))

        return call


def test_apply_queues_each_write_on_the_store_in_order() -> None:
    a = Activation(
        esme=bytes(8),
        chf=CHF,
        originator=SUPPLIER,
        counter=1,
        start_ms=T0,
        end_ms=T0 + 1,
        future_dated=False,
        seen_at=T0,
    )
    decision = AlertDecision(
        alert_id="x",
        chf=CHF,
        suppressed=False,
        reason=AlertReason.NO_WINDOW,
        judged_at=T0,
        decided_at=T0,
    )
    store = Recorder()
    writes: list[pipeline.Write] = [PutActivation(a), DeleteActivation(a)]
    writes += [SetCounter(SUPPLIER, bytes(8), 3), PutDecision(decision), PruneDecisions(T0)]
    pipeline.apply(store, writes)
    assert [name for name, _ in store.calls] == [
        "put_activation",
        "delete_activation",
        "set_counter",
        "put_decision",
        "prune_decisions",
    ]
    assert store.calls[3][1] == ((decision,), {"effect_done": True})
