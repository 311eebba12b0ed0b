"""The decisions row (gateway/state/rows.py): the near-miss section added for issue 13
leaves rows written before it readable, byte for byte, and survives a store."""

from __future__ import annotations

import sqlite3
import struct
from pathlib import Path

import pytest

from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.state.rows import decode_decision, encode_decision
from gateway.state.sqlite import Store

T0 = 1_767_225_600_000  # 2026-01-01T00:00:00Z
MIN = 60_000
CHF = bytes.fromhex("00DB123456789001")
ESME = bytes.fromhex("00DB1234567890A0")
SUPPLIER = bytes.fromhex("90B3D51F30010000")

ACTIVATION = Activation(
    esme=ESME,
    chf=CHF,
    originator=SUPPLIER,
    counter=2**64 - 1,
    start_ms=T0,
    end_ms=T0 + 30 * MIN,
    future_dated=True,
    seen_at=T0 - 5,
    closed_early=False,
    succeeded=True,
)


def old_row(suppressed: bool, reason: bytes, activation: Activation | None) -> bytes:
    # The BLOB as a gateway before the near-miss section wrote it, spelled out from the
    # format (docs/decisions.md D21) rather than by the encoder under test.
    blob = struct.pack("<8s?qqB", CHF, suppressed, T0 + 100, T0 + 200, len(reason)) + reason
    if activation is not None:
        flags = 0x01 | 0x04  # future-dated, succeeded
        blob += struct.pack(
            "<8s8s8sQqqqB",
            ESME,
            CHF,
            SUPPLIER,
            2**64 - 1,
            T0,
            T0 + 30 * MIN,
            T0 - 5,
            flags,
        )
    return blob


def test_rows_written_before_near_misses_read_as_before() -> None:
    forwarded = decode_decision("a-1", old_row(False, b"no-window", None))
    assert forwarded == AlertDecision(
        "a-1", CHF, False, AlertReason.NO_WINDOW, T0 + 100, T0 + 200, activation=None
    )
    assert forwarded.after_window_ms is None
    kept = decode_decision("a-2", old_row(True, b"inside-window", ACTIVATION))
    assert kept.activation == ACTIVATION
    assert kept.after_window_ms is None


def test_a_decision_without_a_near_miss_is_written_as_before() -> None:
    # So a gateway older than the near-miss section still reads every row but near
    # misses.
    plain = AlertDecision("a-1", CHF, False, AlertReason.NO_WINDOW, T0 + 100, T0 + 200)
    assert encode_decision(plain) == old_row(False, b"no-window", None)
    inside = AlertDecision(
        "a-2", CHF, True, AlertReason.INSIDE_WINDOW, T0 + 100, T0 + 200, activation=ACTIVATION
    )
    assert encode_decision(inside) == old_row(True, b"inside-window", ACTIVATION)


@pytest.mark.parametrize("activation", [None, ACTIVATION])
def test_a_near_miss_comes_back_from_its_row(activation: Activation | None) -> None:
    decision = AlertDecision(
        "a-1",
        CHF,
        activation is not None,
        AlertReason.NO_WINDOW,
        T0 + 100,
        T0 + 200,
        activation=activation,
        after_window_ms=7 * MIN,
    )
    assert decode_decision("a-1", encode_decision(decision)) == decision


def test_a_row_with_bytes_fitting_no_section_is_refused() -> None:
    with pytest.raises(ValueError, match="after the reason"):
        decode_decision("a-1", old_row(False, b"no-window", None) + b"\x00" * 5)
    blob = encode_decision(
        AlertDecision("a-1", CHF, False, AlertReason.NO_WINDOW, T0, T0 + 1, after_window_ms=MIN)
    )
    with pytest.raises(ValueError, match="near-miss"):
        decode_decision("a-1", blob[:-9] + b"X" + blob[-8:])


@pytest.mark.asyncio
async def test_a_store_keeps_old_rows_and_near_misses_side_by_side(tmp_path: Path) -> None:
    db = tmp_path / "state.sqlite"
    near = AlertDecision(
        "near", CHF, False, AlertReason.NO_WINDOW, T0 + 100, T0 + 200, after_window_ms=3 * MIN
    )
    async with Store.open(db) as store:
        store.put_decision(near, effect_done=True)
        await store.flush()
    # A row as an older gateway wrote it, put straight into the file.
    with sqlite3.connect(db) as conn:
        columns = [row[1] for row in conn.execute("PRAGMA table_info(decisions)")]
        assert columns[:4] == ["alert_id", "decided_at", "effect_done", "decision"]
        conn.execute(
            "INSERT INTO decisions (alert_id, decided_at, effect_done, decision) "
            "VALUES (?, ?, ?, ?)",
            ("old", T0 + 200, 1, old_row(False, b"no-window", None)),
        )
    conn.close()
    with Store.open(db) as store:
        loaded = {d.alert_id: d for d, _ in store.load_decisions(T0)}
    assert loaded["near"] == near
    assert loaded["old"].after_window_ms is None
    assert loaded["old"].reason is AlertReason.NO_WINDOW
