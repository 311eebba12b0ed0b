"""The suppression engine: sans-I/O decisions on MP102B's rules.

Theory of operation
-------------------
The engine holds every tracked activation and decides, for each DCC alert, whether it
reaches the Network Operators. It never reads a clock and never does I/O: every call
takes ``now`` (integer milliseconds, UTC) and returns typed results; the daemon applies
them (persists, publishes, logs, counts). Facts that live in stores the daemon owns
are passed in with each input: the inventory record of the target device, whether it
is on the GUID list, and the last originator counter accepted for it.

An activation is opened by a CS06 Activate Firmware command that passes every rule
(``on_command``), checked in this order, the first failure naming the refusal: the
feature switch is on; the signature verifies against a trusted remote party whose role
is Supplier; the payload's originator counter equals the grouping header's; the target
is a SMETS2 ESME of a listed manufacturer that is on the GUID list; where the inventory
names the ESME's registered import supplier, the originator is that supplier; the
counter is not a replay; and the ESME's CHF is known.
Its window belongs to the CHF on the ESME's HAN (looked up when the command is seen),
starts at the execution time (``sent_at`` for on-demand, ExecutionDateTime for
future-dated) and lasts ``window_ms``; ``lead_ms`` before the start also counts, for
meter clocks a little out of sync. Each ESME has at most one *pending* future-dated
activation: a later CS06 replaces it, a cancellation removes it; a window that is
already running is never cut short by a new command.

Device outcomes adjust windows: an immediate CS06 response or a 0x00CA 8F67 alert with
outcome 1 (no image held) or 2 (hash mismatch) closes the window early, because the
meter never rebooted; outcome 3 (activation failure) keeps it; 8F66 success is noted.

An AD1 (``on_dcc_alert``) is judged at its event time ``raised_at`` unless that lies
more than ``skew_ms`` after ``now``, and is suppressed iff a window of its CHF covers
that instant, comparing exact timestamps. A second copy of an alert id gets the same
decision, marked as a duplicate. Anything the engine cannot decide is forwarded.

The timer wheel drives housekeeping only (pending windows opening, windows expiring,
dedupe entries ageing out), never the decision. Checks are coalesced per wheel tick
(one wheel timer per tick, a list of CHFs to look at), and a check re-reads the
activation's exact times, so a replaced or closed activation needs no cancellation.

Memory: 1.4 million tracked windows must fit in a few hundred MB, so activations are
kept packed (43 bytes each, ``_REC``) in one ``bytes`` value per CHF, and materialised
as :class:`Activation` structs only when a result needs one.

The inputs, values, results and reasons are defined in :mod:`gateway.core.events`; this
module holds the rules, the memory layout and nothing a caller needs to name but
:class:`Engine` and :class:`EngineConfig`.
"""

from __future__ import annotations

import struct
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from typing import Any, Final

import msgspec

import gbcs
from gateway.wire import DccAlertEnvelope
from gbcs import (
    ActivateFirmwareCommand,
    ActivateFirmwareResponse,
    ActivationResponseCode,
    AlertCode,
    CraFlag,
    Frame,
    FutureDatedActivationAlert,
    MessageCode,
    PowerRestorationAlert,
    RemotePartyRole,
    SignatureStatus,
)

from .devices import DeviceRecord, DeviceType, normalize_manufacturer
from .events import (
    Activation,
    ActivationCancelled,
    ActivationFields,
    ActivationTracked,
    AlertDecision,
    AlertReason,
    CommandRefused,
    CommandResult,
    CommandSeen,
    DedupeExpired,
    DeviceOutcomeSeen,
    Housekeeping,
    InventoryNoted,
    OutcomeApplied,
    OutcomeKind,
    OutcomeReason,
    RefusalReason,
    RestorationObserved,
    WindowEnded,
    WindowExpired,
    WindowOpened,
)
from .wheel import TimerWheel

MINUTE_MS: Final = 60_000


class EngineConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What the engine needs from the configuration (durations in milliseconds)."""

    enabled: bool = True  # the MP102B feature switch
    manufacturers: tuple[str, ...] = ("Landis+Gyr",)
    window_ms: int = 30 * MINUTE_MS
    lead_ms: int = 2 * MINUTE_MS
    skew_ms: int = 5 * MINUTE_MS
    dedupe_ms: int = 120 * MINUTE_MS
    # Bound on remembered alert ids, so a backlog of a million alerts cannot grow memory
    # without limit; the oldest are forgotten first. QoS 1 redeliveries come within
    # seconds of a reconnect, far inside either bound: at most receive_maximum (4,000)
    # messages are unacknowledged at once. 50,000 (about 15 MB) rather than 200,000: the
    # memo was a third of the daemon's memory draining a backlog (docs/decisions.md D13).
    dedupe_max: int = 50_000
    # How long an ended window is still kept to judge late-arriving alerts: an AD1 raised
    # inside a window is firmware-caused however late it is delivered (a backlog, a
    # broker outage). It no longer counts as active after its end.
    retain_ms: int = 120 * MINUTE_MS
    # An AD1 forwarded (no window) at most this long after a window of its CHF ended is
    # a near miss: evidence that the window may be too short as the meters' flash ages
    # (issue 13). Ended windows are kept for max(retain_ms, near_miss_ms), while only
    # retain_ms of that still judges late alerts.
    near_miss_ms: int = 15 * MINUTE_MS
    tick_ms: int = 1_000

    def __post_init__(self) -> None:
        for name in (
            "window_ms",
            "lead_ms",
            "skew_ms",
            "dedupe_ms",
            "retain_ms",
            "near_miss_ms",
        ):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.window_ms == 0 or self.tick_ms <= 0 or self.dedupe_max <= 0:
            raise ValueError("window_ms, tick_ms and dedupe_max must be positive")


# -- packed activation records ---------------------------------------------------------

# esme, originator index, counter, start, end, seen_at, flags
_REC = struct.Struct("<8sHQqqqB")
_REC_SIZE = _REC.size
_F_FUTURE = 0x01
# A decision packed into bytes (pack_decision): the engine's in-memory memo. It
# remembers up to dedupe_max (50,000) of them, about 300 bytes each with the key and the
# dict slot (600 as objects; docs/decisions.md D21). The state store's decisions row has
# its own encoder (gateway/state/sqlite.py), the same bytes today; changing one is not a change
# of the other.
# Little-endian: chf, suppressed, judged_at, decided_at, the reason's length and ASCII
# text, then, when the decision names an activation: esme, chf, originator, counter
# (unsigned), start_ms, end_ms, seen_at and flags (1 future-dated, 2 closed early,
# 4 succeeded); then, for a near miss, the tag byte 0x4E ("N") and after_window_ms. The
# sections are told apart by the length left (57, 9 or 66 bytes).
_PACKED_HEAD = struct.Struct("<8s?qqB")
_PACKED_ACTIVATION = struct.Struct("<8s8s8sQqqqB")
_PACKED_GAP = struct.Struct("<Bq")
_GAP_TAG = 0x4E
_F_CLOSED = 0x02
_F_SUCCEEDED = 0x04
_F_OPENED = 0x08  # start reached (counted as active rather than pending)
_F_ENDED = 0x10  # end reached: kept for late alerts, no longer counted as active

_CLOSING_OUTCOMES = frozenset(
    {ActivationResponseCode.NO_IMAGE_HELD, ActivationResponseCode.HASH_MISMATCH}
)


class Engine:
    """Sans-I/O suppression engine. See the module docstring."""

    def __init__(self, config: EngineConfig, now_ms: int) -> None:
        self.config = config
        self._manufacturers = frozenset(normalize_manufacturer(m) for m in config.manufacturers)
        # CHF id -> concatenated packed records (usually exactly one).
        self._by_chf: dict[bytes, bytes] = {}
        self._parties: list[bytes] = []
        self._party_index: dict[bytes, int] = {}
        # alert id -> decision (packed, see pack_decision), for QoS 1 redelivery; aged
        # out by the wheel.
        self._decided: OrderedDict[str, bytes | AlertDecision] = OrderedDict()
        # wheel tick -> CHFs to re-examine; ticks at which old decisions are forgotten.
        self._checks: dict[int, list[bytes]] = {}
        self._forget: set[int] = set()
        self._wheel: TimerWheel[tuple[bool, int]] = TimerWheel(now_ms, tick_ms=config.tick_ms)
        self.active_windows = 0
        self.pending_windows = 0
        self.ended_windows = 0  # ended, kept for late alerts and near misses
        # How long an ended window is kept: judging late alerts (retain_ms) and naming
        # near misses (near_miss_ms) both need it.
        self._keep_ms = max(config.retain_ms, config.near_miss_ms)

    # -- queries --------------------------------------------------------------------

    def next_deadline(self) -> int | None:
        """When ``advance`` next has work to do (ms), or None."""
        return self._wheel.next_deadline()

    def activations(self) -> Iterator[Activation]:
        """Every tracked activation (for status, snapshots and tests)."""
        for chf, packed in self._by_chf.items():
            for i in range(0, len(packed), _REC_SIZE):
                yield self._materialise(chf, packed, i)

    def activations_for(self, chf: bytes) -> list[Activation]:
        """The activations tracked against one CHF."""
        packed = self._by_chf.get(chf, b"")
        return [self._materialise(chf, packed, i) for i in range(0, len(packed), _REC_SIZE)]

    def decision_for(self, alert_id: str) -> AlertDecision | None:
        """The remembered decision on an alert id, if still within the dedupe horizon."""
        memo = self._decided.get(alert_id)
        return None if memo is None else _unmemo(alert_id, memo)

    @property
    def tracked_count(self) -> int:
        """Number of tracked activations (pending, active, and ended but retained)."""
        return self.active_windows + self.pending_windows + self.ended_windows

    # -- DCC alerts (the hot path) --------------------------------------------------

    def on_dcc_alert(self, alert: DccAlertEnvelope, now: int) -> AlertDecision:
        """Decide whether a DCC alert is forwarded or suppressed."""
        memo = self._decided.get(alert.alert_id)
        if memo is not None:
            previous = _unmemo(alert.alert_id, memo)
            if previous.chf == alert.device_id:
                return msgspec.structs.replace(previous, duplicate=True)
        judged_at = alert.raised_at if alert.raised_at <= now + self.config.skew_ms else now
        if alert.code != "AD1":
            decision = AlertDecision(
                alert.alert_id, alert.device_id, False, AlertReason.NOT_AD1, judged_at, now
            )
        elif not self.config.enabled:
            decision = AlertDecision(
                alert.alert_id, alert.device_id, False, AlertReason.FEATURE_OFF, judged_at, now
            )
        else:
            decision = self._judge(alert, judged_at, now)
        self._remember(decision, now)
        return decision

    def _judge(self, alert: DccAlertEnvelope, judged_at: int, now: int) -> AlertDecision:
        packed = self._by_chf.get(alert.device_id)
        gap: int | None = None
        if packed is not None:
            config = self.config
            lead, retain, near_miss = config.lead_ms, config.retain_ms, config.near_miss_ms
            for i in range(0, len(packed), _REC_SIZE):
                _, _, _, start, end, _, flags = _REC.unpack_from(packed, i)
                # Exact times, not whether housekeeping has expired the window yet: an
                # ended window kept longer for near misses judges only within retain.
                if start - lead <= judged_at < end and now < end + retain:
                    return AlertDecision(
                        alert.alert_id,
                        alert.device_id,
                        True,
                        AlertReason.INSIDE_WINDOW,
                        judged_at,
                        now,
                        activation=self._materialise(alert.device_id, packed, i),
                    )
                # A near miss: the window ran its course and ended shortly before. One
                # closed early (outcome 1 or 2) says the meter never rebooted, so an AD1
                # after it says nothing about the window's length.
                if end <= judged_at <= end + near_miss and not flags & _F_CLOSED:
                    since = judged_at - end
                    if gap is None or since < gap:
                        gap = since
        return AlertDecision(
            alert.alert_id,
            alert.device_id,
            False,
            AlertReason.NO_WINDOW,
            judged_at,
            now,
            after_window_ms=gap,
        )

    def _remember(self, decision: AlertDecision, decided_at: int) -> None:
        # Decisions are kept in the order they were made (an id decided again moves to
        # the end), so ageing pops from the front: one wheel entry per tick, not per id.
        tick = self._tick_for(decided_at + self.config.dedupe_ms)
        if tick not in self._forget:
            self._forget.add(tick)
            self._wheel.schedule(tick * self.config.tick_ms, (False, tick))
        decided = self._decided
        if decision.alert_id in decided:
            decided.move_to_end(decision.alert_id)
        decided[decision.alert_id] = _memo(decision)
        if len(decided) > self.config.dedupe_max:
            # An OrderedDict: popping the oldest of a plain dict scans the holes its
            # earlier deletions left (measured at 9 us per alert at 200,000 entries).
            decided.popitem(last=False)

    def remember_decision(self, decision: AlertDecision) -> None:
        """Re-load a decision from the durable store at start-up, so that a QoS 1
        redelivery after a restart gets the same decision."""
        self._remember(decision, decision.decided_at)

    # -- CS06 commands ------------------------------------------------------------------

    def on_command(self, seen: CommandSeen, now: int) -> CommandResult:
        """Apply MP102B's rules to a CS06 command; track, replace, cancel or refuse."""
        header = seen.frame.header
        esme, originator, counter = header.recipient, header.originator, header.originator_counter

        def refuse(reason: RefusalReason, detail: str) -> CommandRefused:
            return CommandRefused(reason, detail, esme, originator, counter)

        payload = seen.frame.payload
        if header.message_code != MessageCode.CS06_ACTIVATE_FIRMWARE or not isinstance(
            payload, ActivateFirmwareCommand
        ):
            return refuse(RefusalReason.NOT_CS06, f"message code 0x{header.message_code:04X}")
        if header.cra_flag is not CraFlag.COMMAND:
            return refuse(RefusalReason.NOT_CS06, "not a command")
        if not self.config.enabled:
            return refuse(RefusalReason.FEATURE_OFF, "suppression feature switch is off")
        refusal = self._check_signature(seen)
        if refusal is not None:
            return refuse(*refusal)
        # After the signature: only a verified frame's fields are worth comparing, and a
        # forgery is reported as one. The CS06 payload (GBCS ASN.1 ActivateFirmware)
        # repeats the grouping header's originator counter; WIRE.md wants them equal.
        if payload.originator_counter != counter:
            return refuse(
                RefusalReason.COUNTER_MISMATCH,
                f"payload originator counter {payload.originator_counter} "
                f"!= header originator counter {counter}",
            )
        target = seen.target
        if target is None:
            return refuse(RefusalReason.UNKNOWN_DEVICE, "target not in the inventory")
        if target.device_type is not DeviceType.ESME:
            return refuse(RefusalReason.NOT_ESME, f"target is a {target.device_type}")
        if target.smets != 2:
            return refuse(RefusalReason.NOT_SMETS2, f"target is SMETS{target.smets}")
        if normalize_manufacturer(target.manufacturer) not in self._manufacturers:
            return refuse(
                RefusalReason.MANUFACTURER_NOT_LISTED, f"manufacturer {target.manufacturer!r}"
            )
        if not seen.on_guid_list:
            return refuse(RefusalReason.NOT_ON_GUID_LIST, "target not on the GUID list")
        # The header's originator is the party whose key verified the signature (the
        # trust store is keyed by it). Checked before the replay counters: those are
        # kept per party, and a stranger's counter says nothing about the supplier's.
        if target.supplier_id is not None and originator != target.supplier_id:
            return refuse(
                RefusalReason.NOT_REGISTERED_SUPPLIER,
                f"signed by supplier {gbcs.format_eui64(originator)}; the inventory's "
                f"registered supplier is {gbcs.format_eui64(target.supplier_id)}",
            )
        if seen.last_counter is not None and counter <= seen.last_counter:
            return refuse(
                RefusalReason.REPLAY, f"counter {counter} <= last accepted {seen.last_counter}"
            )
        last_tracked = self._last_counter_tracked(target, originator)
        if last_tracked is not None and counter <= last_tracked:
            return refuse(RefusalReason.REPLAY, f"counter {counter} <= tracked {last_tracked}")
        if target.chf_id is None:
            return refuse(RefusalReason.UNKNOWN_CHF, "the ESME's CHF is not in the inventory")

        pending = self._take_pending(target.chf_id, esme, now)
        if payload.is_cancellation:
            return ActivationCancelled(esme, originator, counter, pending)
        if payload.execution_time is None:
            start, future = (
                seen.sent_at if seen.sent_at <= now + self.config.skew_ms else now,
                False,
            )
        else:
            start, future = int(payload.execution_time.timestamp() * 1000), True
        activation = Activation(
            esme=esme,
            chf=target.chf_id,
            originator=originator,
            counter=counter,
            start_ms=start,
            end_ms=start + self.config.window_ms,
            future_dated=future,
            seen_at=now,
        )
        self._track(activation, now)
        return ActivationTracked(activation, pending)

    @staticmethod
    def _check_signature(seen: CommandSeen) -> tuple[RefusalReason, str] | None:
        status = seen.signature
        if status is SignatureStatus.UNSIGNED:
            return RefusalReason.UNSIGNED, "command carries no signature"
        if status is SignatureStatus.UNKNOWN_SIGNER:
            return RefusalReason.UNTRUSTED_SIGNER, "no trusted key for the originator"
        if status is SignatureStatus.INVALID:
            return RefusalReason.BAD_SIGNATURE, "signature does not verify"
        role = seen.signer_role
        if role is None:
            # CS06 is a remote party's command; a device key must not open windows.
            return RefusalReason.UNTRUSTED_SIGNER, "signer is not a remote party"
        if role is not RemotePartyRole.SUPPLIER:
            # DUIS SRV 11.3 Activate Firmware is a Supplier's service: a Network Operator,
            # ACB or Other User holds a trusted key but cannot activate firmware.
            return (
                RefusalReason.WRONG_ROLE,
                f"signer's role is {role.name} (0x{role.value:02X}), not SUPPLIER",
            )
        return None

    def _last_counter_tracked(self, target: DeviceRecord, originator: bytes) -> int | None:
        # Defence in depth: the durable store passes last_counter, but a command racing
        # its own persistence must still not be accepted twice.
        if target.chf_id is None:
            return None
        party = self._party_index.get(originator)
        best = None
        packed = self._by_chf.get(target.chf_id, b"")
        for i in range(0, len(packed), _REC_SIZE):
            esme, p, counter, *_ = _REC.unpack_from(packed, i)
            if esme == target.device_id and p == party and (best is None or counter > best):
                best = counter
        return best

    def _take_pending(self, chf: bytes, esme: bytes, now: int) -> Activation | None:
        """Remove and return the ESME's pending (not yet started) activation, if any."""
        packed = self._by_chf.get(chf)
        if packed is None:
            return None
        for i in range(0, len(packed), _REC_SIZE):
            rec_esme, _, _, start, _, _, flags = _REC.unpack_from(packed, i)
            if rec_esme == esme and not flags & _F_OPENED and start > now:
                removed = self._materialise(chf, packed, i)
                self._store(chf, packed[:i] + packed[i + _REC_SIZE :])
                self.pending_windows -= 1
                return removed
        return None

    def _track(self, a: Activation, now: int) -> None:
        flags = _F_FUTURE if a.future_dated else 0
        if a.start_ms <= now:
            flags |= _F_OPENED
            self.active_windows += 1
        else:
            self.pending_windows += 1
            self._schedule_check(a.chf, a.start_ms)
        self._schedule_check(a.chf, a.end_ms)
        record = _REC.pack(
            a.esme,
            self._party(a.originator),
            a.counter,
            a.start_ms,
            a.end_ms,
            a.seen_at,
            flags | (_F_CLOSED if a.closed_early else 0) | (_F_SUCCEEDED if a.succeeded else 0),
        )
        self._by_chf[a.chf] = self._by_chf.get(a.chf, b"") + record

    def restore(self, activations: Iterable[Activation], now: int) -> list[Housekeeping]:
        """:meth:`restore_fields` from :class:`Activation` values."""
        return self.restore_fields(map(msgspec.structs.astuple, activations), now)

    def restore_fields(self, rows: Iterable[ActivationFields], now: int) -> list[Housekeeping]:
        """Re-load activations from the durable store at start-up, then expire what is past.

        Each window is restored as it stands at ``now``: one whose start has passed is
        open, with no :class:`WindowOpened` for it (it opened while this engine did not
        run; a promotion restores up to 1.4 million windows, and an event per window
        cost more than the rest of the restore). Returns the housekeeping that was due:
        windows that ended or expired meanwhile.

        One pass with the per-window work inlined, the checks gathered per wheel tick
        and scheduled once per tick: this is the bulk of a standby's promotion time.
        """
        pack = _REC.pack
        by_chf = self._by_chf
        party_index = self._party_index
        checks = self._checks
        tick_ms = self.config.tick_ms
        new_ticks: list[int] = []
        active = pending = 0
        for esme, chf, originator, counter, start, end, future, seen_at, closed, done in rows:
            flags = _F_FUTURE if future else 0
            if closed:
                flags |= _F_CLOSED
            if done:
                flags |= _F_SUCCEEDED
            if start <= now:
                flags |= _F_OPENED
                active += 1
            else:
                pending += 1
                tick = -(-start // tick_ms)
                batch = checks.get(tick)
                if batch is None:
                    batch = checks[tick] = []
                    new_ticks.append(tick)
                batch.append(chf)
            tick = -(-end // tick_ms)
            batch = checks.get(tick)
            if batch is None:
                batch = checks[tick] = []
                new_ticks.append(tick)
            batch.append(chf)
            party = party_index.get(originator)
            if party is None:
                party = self._party(originator)
            record = pack(esme, party, counter, start, end, seen_at, flags)
            held = by_chf.get(chf)
            by_chf[chf] = record if held is None else held + record
        self.active_windows += active
        self.pending_windows += pending
        for tick in new_ticks:
            self._wheel.schedule(tick * tick_ms, (True, tick))
        return self.advance(now)

    # -- device outcomes --------------------------------------------------------------

    def on_device_outcome(self, seen: DeviceOutcomeSeen, now: int) -> OutcomeApplied:
        """Apply a CS06 response or a 0x00CA Future Dated Activation Alert."""
        frame, payload = seen.frame, seen.frame.payload
        if seen.signature in (SignatureStatus.INVALID, SignatureStatus.UNSIGNED):
            # An unknown signer is accepted: device certificates may not be loaded, and
            # acting on an outcome can only shorten a window (the safe direction).
            return OutcomeApplied(
                OutcomeKind.IGNORED,
                OutcomeReason.SIGNATURE_NOT_VALID,
                f"signature {seen.signature.value}",
            )
        if isinstance(payload, ActivateFirmwareResponse):
            counter, outcome = frame.header.originator_counter, payload.outcome
            if outcome is None:
                return OutcomeApplied(
                    OutcomeKind.ACCEPTED, OutcomeReason.COMMAND_ACCEPTED, "command accepted"
                )
        elif isinstance(payload, FutureDatedActivationAlert):
            counter, outcome = payload.originator_counter, payload.outcome
        else:
            return OutcomeApplied(
                OutcomeKind.IGNORED, OutcomeReason.NOT_AN_OUTCOME, "not a CS06 outcome"
            )
        device = seen.device
        if device is None or device.chf_id is None:
            return OutcomeApplied(
                OutcomeKind.IGNORED, OutcomeReason.DEVICE_UNKNOWN, "device or its CHF unknown"
            )
        chf, esme = device.chf_id, frame.header.originator
        index = self._find(chf, esme, frame.header.recipient, counter)
        code = outcome.response_code
        if index is None:
            return OutcomeApplied(
                OutcomeKind.IGNORED,
                OutcomeReason.NO_ACTIVATION,
                "no tracked activation for it",
                response_code=code,
            )
        packed = self._by_chf[chf]
        if code in _CLOSING_OUTCOMES:
            return self._close_early(chf, packed, index, now, code)
        if (
            isinstance(payload, FutureDatedActivationAlert)
            and payload.alert_code == AlertCode.FUTURE_DATED_ACTIVATION_SUCCESS
            and code == ActivationResponseCode.SUCCESS
        ):
            rec = list(_REC.unpack_from(packed, index))
            rec[6] |= _F_SUCCEEDED
            self._store(chf, packed[:index] + _REC.pack(*rec) + packed[index + _REC_SIZE :])
            return OutcomeApplied(
                OutcomeKind.SUCCEEDED,
                OutcomeReason.SUCCEEDED,
                "future-dated activation succeeded",
                self._materialise(chf, self._by_chf[chf], index),
                code,
            )
        return OutcomeApplied(
            OutcomeKind.KEPT,
            OutcomeReason.MAY_HAVE_REBOOTED,
            f"outcome {code}: the meter may have rebooted",
            self._materialise(chf, packed, index),
            code,
        )

    def _find(self, chf: bytes, esme: bytes, originator: bytes, counter: int) -> int | None:
        party = self._party_index.get(originator)
        packed = self._by_chf.get(chf, b"")
        for i in range(0, len(packed), _REC_SIZE):
            rec_esme, p, c, *_ = _REC.unpack_from(packed, i)
            if rec_esme == esme and p == party and c == counter:
                return i
        return None

    def _close_early(
        self, chf: bytes, packed: bytes, index: int, now: int, code: int
    ) -> OutcomeApplied:
        esme, party, counter, start, end, seen_at, flags = _REC.unpack_from(packed, index)
        rest = packed[:index] + packed[index + _REC_SIZE :]
        if now <= start:
            # Never started: drop it altogether.
            self._store(chf, rest)
            self._uncount(flags)
            closed = self._materialise(chf, packed, index)
            closed = msgspec.structs.replace(closed, end_ms=start, closed_early=True)
        else:
            new_end = min(end, now)
            rec = _REC.pack(esme, party, counter, start, new_end, seen_at, flags | _F_CLOSED)
            self._store(chf, rest[:index] + rec + rest[index:])
            self._schedule_check(chf, new_end)
            closed = self._materialise(chf, self._by_chf[chf], index)
        return OutcomeApplied(
            OutcomeKind.CLOSED_EARLY,
            OutcomeReason.NEVER_REBOOTED,
            f"outcome {code}: the meter never rebooted",
            closed,
            code,
        )

    # -- ECS80 restoration alerts and inventory --------------------------------------

    def on_restoration(
        self, frame: Frame, device: DeviceRecord | None, now: int
    ) -> RestorationObserved:
        """Count an ECS80 power restoration alert; report whether its CHF is in a window."""
        esme = frame.header.originator
        if not isinstance(frame.payload, PowerRestorationAlert):
            raise TypeError("on_restoration needs an ECS80 restoration alert frame")
        if device is None or device.chf_id is None:
            return RestorationObserved(esme, None, False)
        chf = device.chf_id
        packed = self._by_chf.get(chf, b"")
        lead = self.config.lead_ms
        for i in range(0, len(packed), _REC_SIZE):
            _, _, _, start, end, _, _ = _REC.unpack_from(packed, i)
            if start - lead <= now < end:
                return RestorationObserved(esme, chf, True, self._materialise(chf, packed, i))
        return RestorationObserved(esme, chf, False)

    def on_inventory(self, record: DeviceRecord, now: int) -> InventoryNoted:
        """Note an inventory change: report the device's activations on its current CHF.

        Windows stay with the CHF seen when their command arrived (MP102B: the CHF "on
        the same HAN" at the time of the command); a later move does not carry them.
        """
        del now  # part of the uniform input signature; nothing here depends on time
        if record.chf_id is None:
            return InventoryNoted(record.device_id)
        tracked = tuple(
            a for a in self.activations_for(record.chf_id) if a.esme == record.device_id
        )
        return InventoryNoted(record.device_id, tracked)

    # -- housekeeping -------------------------------------------------------------------

    def advance(self, now: int) -> list[Housekeeping]:
        """Run the housekeeping due by ``now``: windows opening and expiring, dedupe ageing."""
        out: list[Housekeeping] = []
        for _, (is_check, tick) in self._wheel.advance(now):
            if is_check:
                for chf in self._checks.pop(tick, ()):
                    self._housekeep(chf, now, out)
            else:
                self._forget.discard(tick)
                forgotten = 0
                horizon = now - self.config.dedupe_ms
                decided = self._decided
                # Oldest first; a decision made out of clock order waits behind a
                # younger one for a later tick, and the dedupe_max cap bounds them all.
                for memo in decided.values():
                    if _decided_at(memo) > horizon:
                        break
                    forgotten += 1
                for _ in range(forgotten):
                    decided.popitem(last=False)
                if forgotten:
                    out.append(DedupeExpired(forgotten))
        return out

    def _housekeep(self, chf: bytes, now: int, out: list[Housekeeping]) -> None:
        packed = self._by_chf.get(chf)
        if packed is None:
            return
        kept = bytearray()
        for i in range(0, len(packed), _REC_SIZE):
            esme, party, counter, start, end, seen_at, flags = _REC.unpack_from(packed, i)
            if end + self._keep_ms <= now:
                self._uncount(flags)
                out.append(WindowExpired(self._materialise(chf, packed, i)))
                continue
            changed = False
            if not flags & _F_OPENED and start <= now:
                flags |= _F_OPENED
                self.pending_windows -= 1
                self.active_windows += 1
                changed = True
                opened = True
            else:
                opened = False
            if flags & _F_OPENED and not flags & _F_ENDED and end <= now:
                flags |= _F_ENDED
                self.active_windows -= 1
                self.ended_windows += 1
                changed = True
                ended = True
                self._schedule_check(chf, end + self._keep_ms)
            else:
                ended = False
            rec = (
                _REC.pack(esme, party, counter, start, end, seen_at, flags)
                if changed
                else packed[i : i + _REC_SIZE]
            )
            if opened:
                out.append(WindowOpened(self._materialise(chf, rec, 0)))
            if ended:
                out.append(WindowEnded(self._materialise(chf, rec, 0)))
            kept += rec
        self._store(chf, bytes(kept))

    def _uncount(self, flags: int) -> None:
        if flags & _F_ENDED:
            self.ended_windows -= 1
        elif flags & _F_OPENED:
            self.active_windows -= 1
        else:
            self.pending_windows -= 1

    # -- internals ----------------------------------------------------------------------

    def _tick_for(self, at_ms: int) -> int:
        return -(-at_ms // self.config.tick_ms)  # ceiling: never fire before the instant

    def _schedule_check(self, chf: bytes, at_ms: int) -> None:
        tick = self._tick_for(at_ms)
        batch = self._checks.get(tick)
        if batch is None:
            batch = self._checks[tick] = []
            self._wheel.schedule(tick * self.config.tick_ms, (True, tick))
        batch.append(chf)

    def _store(self, chf: bytes, packed: bytes) -> None:
        if packed:
            self._by_chf[chf] = packed
        else:
            self._by_chf.pop(chf, None)

    def _party(self, originator: bytes) -> int:
        index = self._party_index.get(originator)
        if index is None:
            index = self._party_index[originator] = len(self._parties)
            self._parties.append(originator)
        return index

    def _materialise(self, chf: bytes, packed: bytes, i: int) -> Activation:
        esme, party, counter, start, end, seen_at, flags = _REC.unpack_from(packed, i)
        return _activation((esme, chf, self._parties[party], counter, start, end, seen_at, flags))


def pack_decision(d: AlertDecision) -> bytes:
    """``d`` as bytes (``duplicate`` is not kept). Raises ValueError for a value that
    does not fit: an EUI-64 not of 8 bytes, a reason that is not an :class:`AlertReason`
    (so whatever is packed unpacks), a time outside 64 bits, a counter outside
    0 .. 2**64 - 1."""
    reason = _REASON_BYTES.get(d.reason)
    if reason is None:
        raise ValueError(f"not an alert reason: {str(d.reason)[:40]!r}")
    a = d.activation
    euis = (d.chf,) if a is None else (d.chf, a.esme, a.chf, a.originator)
    if any(len(e) != 8 for e in euis):
        raise ValueError(f"EUI-64s must be 8 bytes: {euis!r}")
    try:
        out = (
            _PACKED_HEAD.pack(d.chf, d.suppressed, d.judged_at, d.decided_at, len(reason)) + reason
        )
        if a is not None:
            flags = (_F_FUTURE if a.future_dated else 0) | (_F_CLOSED if a.closed_early else 0)
            flags |= _F_SUCCEEDED if a.succeeded else 0
            out += _PACKED_ACTIVATION.pack(
                a.esme, a.chf, a.originator, a.counter, a.start_ms, a.end_ms, a.seen_at, flags
            )
        if d.after_window_ms is not None:
            out += _PACKED_GAP.pack(_GAP_TAG, d.after_window_ms)
        return out
    except struct.error as exc:
        raise ValueError(f"a value is out of range: {exc}") from exc


def unpack_decision(alert_id: str, packed: bytes) -> AlertDecision:
    """The decision :func:`pack_decision` packed. Raises ValueError when its reason is
    not an :class:`AlertReason` (a damaged row), like struct.error for a short one."""
    chf, suppressed, judged_at, decided_at, length = _PACKED_HEAD.unpack_from(packed)
    at = _PACKED_HEAD.size
    text = packed[at : at + length]
    reason = _PACKED_REASONS.get(text)
    if reason is None:
        raise ValueError(f"not an alert reason: {text[:40]!r}")
    at += length
    activation = None
    if len(packed) - at in (_PACKED_ACTIVATION.size, _PACKED_ACTIVATION.size + _PACKED_GAP.size):
        activation = _activation(_PACKED_ACTIVATION.unpack_from(packed, at))
        at += _PACKED_ACTIVATION.size
    gap = None
    if len(packed) - at == _PACKED_GAP.size:
        tag, gap = _PACKED_GAP.unpack_from(packed, at)
        if tag != _GAP_TAG:
            raise ValueError(f"not a near-miss section: tag 0x{tag:02X}")
    elif len(packed) > at:
        raise ValueError(f"{len(packed) - at} bytes after the reason: not a packed decision")
    return AlertDecision(
        alert_id,
        chf,
        suppressed,
        reason,
        judged_at,
        decided_at,
        activation=activation,
        after_window_ms=gap,
    )


# A reason is packed as its ASCII value (one length byte before it); both ways by lookup.
_REASON_BYTES: Final = {reason: reason.value.encode("ascii") for reason in AlertReason}
_PACKED_REASONS: Final = {packed: reason for reason, packed in _REASON_BYTES.items()}


def _activation(fields: tuple[Any, ...]) -> Activation:
    # (esme, chf, originator, counter, start_ms, end_ms, seen_at, flags), as unpacked.
    esme, chf, originator, counter, start, end, seen_at, flags = fields
    return Activation(
        esme=esme,
        chf=chf,
        originator=originator,
        counter=counter,
        start_ms=start,
        end_ms=end,
        future_dated=bool(flags & _F_FUTURE),
        seen_at=seen_at,
        closed_early=bool(flags & _F_CLOSED),
        succeeded=bool(flags & _F_SUCCEEDED),
    )


def _memo(d: AlertDecision) -> bytes | AlertDecision:
    try:
        return pack_decision(d)
    except ValueError:
        return d  # a value packing cannot hold: kept as it is


def _unmemo(alert_id: str, memo: bytes | AlertDecision) -> AlertDecision:
    return memo if isinstance(memo, AlertDecision) else unpack_decision(alert_id, memo)


def _decided_at(memo: bytes | AlertDecision) -> int:
    if isinstance(memo, AlertDecision):
        return memo.decided_at
    decided_at: int = _PACKED_HEAD.unpack_from(memo)[3]
    return decided_at
