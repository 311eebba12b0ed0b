"""The timeline of a simulated run, and the ground truth of every AD1 in it.

Theory of operation
-------------------
:func:`build_timeline` is pure and seeded: the same population, seed, scale and
parameters give the same events at the same simulated times (milliseconds from the
start of the run). Nothing here knows a key, a clock or a socket; :mod:`.frames` turns
events into signed GBCS frames and :mod:`.runner` plays them in scaled real time.

It is built in layers, each planned around the ones before:

1. **Firmware rollouts.** A share of premises get a CS06 Activate Firmware command
   from the Supplier, in a few waves. About 13% are future-dated (the share the DCC
   measured on Landis+Gyr meters), with an ExecutionDateTime later in the run; of those
   some are cancelled (ExecutionDateTime 9999-12-31) and some rescheduled (a second
   future-dated CS06 replacing the first).
2. **The devices.** Every ESME that receives a CS06 behaves as a meter would, whether
   or not MP102B covers it: a future-dated command is acknowledged ("command accepted")
   at once and executed when the *meter's* clock reaches ExecutionDateTime (so a clock
   running ahead executes early, in true time). A share of activations fail with
   outcome 1 (no image held), reported by a CS06 response (on-demand) or an 8F67
   alert (future-dated), and cause no outage. Every other activation cuts the hub's
   power for 12-15 minutes: the CHF raises an AD1 about 3 minutes in (``raised_at``
   by the hub's clock), and when power returns the ESME sends its CS06 response or
   8F66 alert with outcome 0. It sends no ECS80 restoration alert: FIA assumption A5
   says Landis+Gyr meters send none during an activation (``restoration_on_reboot``
   makes every reboot send one, to see the gateway count them). A share of meters
   (``share_slow_flash``: ageing flash, which the modification report warns of) reboot
   only 5 to 9 minutes after their window ends: their AD1s are forwarded, and each is
   a near miss the gateway should count.
3. **The attacker.** Forged commands (the attacker's key claiming the Supplier's
   EUI-64, or the attacker as an unknown party) and replays (the exact bytes of an
   earlier accepted command, sent again after a later one). Then commands that verify
   but must still open nothing: signed by a Network Operator, the ACB or an Other User
   (not a Supplier's role), by a second Supplier to meters the inventory registers to
   the first, and by the Supplier with a payload originator counter that differs from
   the header's. Meters ignore them all.
4. **Genuine outages.** Scattered single hubs at random times, and a storm that takes
   out whole areas at once, at the moment when the most hubs there are inside a
   firmware window (some of them will be: MP102B accepts that risk).
5. **Redeliveries.** A share of AD1s are sent twice by the CSP, with the same alert
   id: each must come out once.

Ground truth. Every AD1 carries why it was raised (``firmware-listed``,
``firmware-late``, ``firmware-unlisted``, ``genuine``, ``genuine-in-window``), whether
the gateway should suppress it and whether it is a near miss, found by playing every
event in arrival order through :class:`~.windows.WindowBook`, an independent statement
of MP102B's rules; so is the number of restoration alerts that come while a window of
their hub is open.

Determinism in real time. The gateway works in real milliseconds, so the plan avoids
instants where a few milliseconds of scheduling jitter could flip a decision: every
time a window is judged against comes from the timeline itself (``sent_at`` of a
command, ``raised_at`` of an AD1, ExecutionDateTime on a whole real second), except
the arrival of a closing outcome, which the gateway stamps with its own clock. So a
genuine AD1 is never planned within :data:`ORDER_GUARD_REAL_MS` (real time) of a
change to its hub's windows (:data:`ORDER_GUARD_REAL_MS`), nor arriving close to the end
of one of them (:data:`EXPIRY_GUARD_REAL_MS`: the gateway forgets a window at the next
housekeeping tick after its end), nor with ``raised_at`` within a few real milliseconds
of a window's edge; a candidate that would be is moved or dropped. At high scales these
guards are long in simulated time, so genuine outages inside windows become rare.
"""

from __future__ import annotations

import random
from collections import Counter
from typing import Final, Literal, TypeAlias

import msgspec

from .population import AREA_SIZE, SUPPLIER, Population, Premises, originator
from .windows import Signer, Window, WindowBook, refusal_for

__all__ = [
    "EXPIRY_GUARD_REAL_MS",
    "ORDER_GUARD_REAL_MS",
    "ActivationAlertSent",
    "Ad1Sent",
    "Ad1Truth",
    "Cause",
    "CommandSent",
    "Event",
    "ResponseSent",
    "RestorationSent",
    "Timeline",
    "TimelineParams",
    "WindowSpan",
    "build_timeline",
]

SECOND_MS: Final = 1_000
MINUTE_MS: Final = 60_000
HOUR_MS: Final = 3_600_000

ORDER_GUARD_REAL_MS: Final = 1_500
"""Real milliseconds kept between a genuine AD1 and any change to its hub's windows,
so that the gateway sees them in the planned order even when it lags a little."""

EXPIRY_GUARD_REAL_MS: Final = 2_500
"""Real milliseconds kept between a genuine AD1's arrival and the end of a window of its
hub: the gateway forgets a window on the first housekeeping tick (1 s) after its end,
so an alert arriving just after the end may or may not still find it."""

SUPPLIER_FIRST_COUNTER: Final = 0x0001_0000
IMPOSTOR_COUNTER: Final = 0xFFFF_0000  # an attacker would try to burn the counter space
PARTY_FIRST_COUNTER: Final = 0x0000_1000  # the other parties' own counters start here

_WRONG_ROLES: Final[tuple[Signer, ...]] = ("network-operator", "acb", "other-user")

Cause = Literal[
    "firmware-listed", "firmware-late", "firmware-unlisted", "genuine", "genuine-in-window"
]
"""Why an AD1 was raised. ``firmware-listed``: a reboot of an ESME that MP102B covers
(should be suppressed); ``firmware-late``: a reboot of one it covers that came after its
window ended (slow flash: forwarded, a near miss); ``firmware-unlisted``: a reboot of
one it does not cover (must be forwarded); ``genuine``: a real outage outside every
window (must be forwarded); ``genuine-in-window``: a real outage inside a window
(suppressed: the accepted risk)."""

CommandKind = Literal["on-demand", "future-dated", "cancellation"]
Purpose = Literal[
    "rollout",
    "reschedule",
    "cancel",
    "replay",
    "forgery",
    "wrong-role",
    "other-supplier",
    "counter-mismatch",
]


class TimelineParams(msgspec.Struct, frozen=True, kw_only=True):
    """The shape of a run. Shares are of premises unless said otherwise."""

    duration_ms: int = 2 * HOUR_MS
    share_targeted: float = 0.04
    """Premises whose ESME gets a CS06 in the rollout (a few hundred of 10,000)."""
    share_future_dated: float = 0.13
    """Of rollout commands (as the DCC measured on Landis+Gyr)."""
    share_cancelled: float = 0.15
    """Of future-dated commands."""
    share_rescheduled: float = 0.2
    """Of future-dated commands."""
    share_no_image: float = 0.06
    """Of activations: outcome 1, no image held; no reboot."""
    share_slow_flash: float = 0.05
    """Of activations that reboot: the flash takes so long that the reboot comes 5 to 9
    minutes after the window ends (its AD1 is a near miss)."""
    restoration_on_reboot: bool = False
    """Whether a meter sends an ECS80 restoration alert when power returns after a
    firmware reboot. False by default: FIA assumption A5 (Landis+Gyr meters send none
    during an activation). Genuine outages always end with one."""
    share_replayed: float = 0.02
    """Of Supplier commands."""
    share_forged: float = 0.02
    """Of Supplier commands."""
    share_wrong_role: float = 0.03
    """Of Supplier commands: CS06s signed by a Network Operator, the ACB or an Other User."""
    share_other_supplier: float = 0.02
    """Of Supplier commands: CS06s from a second Supplier to meters registered to the first."""
    share_counter_mismatch: float = 0.02
    """Of Supplier commands: the Supplier's CS06s whose payload counter is not the header's."""
    share_genuine: float = 0.005
    """Scattered genuine outages."""
    share_storm: float = 0.015
    """Premises the storm takes out (whole areas; at least one area)."""
    share_redelivered: float = 0.02
    """Of AD1s: sent twice by the CSP."""
    waves: int = 3
    window_ms: int = 30 * MINUTE_MS
    """MP102B's window: what the gateway *should* use (the truth ignores overrides)."""
    lead_ms: int = 2 * MINUTE_MS
    retain_ms: int = 120 * MINUTE_MS  # the gateway's suppression.retain, simulated time
    near_miss_ms: int = 15 * MINUTE_MS  # the gateway's reports.near_miss, simulated time
    manufacturers: tuple[str, ...] = ("Landis+Gyr",)

    def __post_init__(self) -> None:
        if self.duration_ms < 70 * MINUTE_MS:
            raise ValueError("a run must last at least 70 simulated minutes")
        for name in self.__struct_fields__:
            if name.startswith("share_") and not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1")
        if self.share_cancelled + self.share_rescheduled > 1.0:
            raise ValueError("share_cancelled + share_rescheduled must not exceed 1")
        if self.waves < 1:
            raise ValueError("waves must be at least 1")


# -- events ---------------------------------------------------------------------------------
# Every event has ``at_ms`` (when it is put on the broker, simulated ms from the start)
# and ``seq`` (its place in the timeline: ties on ``at_ms`` are played in ``seq`` order).


class _Event(msgspec.Struct, frozen=True, kw_only=True):
    at_ms: int
    seq: int


class _DeviceEvent(_Event, frozen=True, kw_only=True):
    """An event about one meter (ESME) and its hub (CHF)."""

    esme: bytes
    chf: bytes


class CommandSent(_DeviceEvent, frozen=True, kw_only=True, tag="cs06-command"):
    """A CS06 Activate Firmware command on ``dsp/gbcs/command``."""

    command_id: int
    counter: int
    kind: CommandKind
    execution_ms: int | None = None
    """ExecutionDateTime of a future-dated command (simulated ms, a whole real second)."""
    signer: Signer = "supplier"
    purpose: Purpose
    replay_of: int | None = None
    """For a replay: the command whose exact bytes are sent again."""
    payload_counter: int | None = None
    """The payload's originator counter when it is not the header's ``counter``."""
    expected: str = ""
    """What the gateway should do: ``tracked``, ``replaced``, ``cancelled``, or the
    refusal reason (``replay``, ``bad-signature``, ``not-on-guid-list`` ...)."""


class ResponseSent(_DeviceEvent, frozen=True, kw_only=True, tag="cs06-response"):
    """The ESME's CS06 response on ``csp/gbcs/inbound`` (``outcome`` None: accepted)."""

    command_id: int
    counter: int
    outcome: int | None


class ActivationAlertSent(_DeviceEvent, frozen=True, kw_only=True, tag="0x00CA"):
    """A Future Dated Firmware Activation Alert (8F66 success / 8F67 failure)."""

    command_id: int
    counter: int
    execution_ms: int
    outcome: int
    alert_counter: int = 0


class RestorationSent(_DeviceEvent, frozen=True, kw_only=True, tag="ecs80"):
    """An ECS80 power restoration alert from the ESME once power is back."""

    outage_start_ms: int
    """By the meter's clock."""
    alert_time_ms: int
    """By the meter's clock."""
    alert_counter: int = 0


class Ad1Sent(_Event, frozen=True, kw_only=True, tag="ad1"):
    """An AD1 Power Outage Alert on ``csp/dcc/alert``."""

    alert_id: str
    chf: bytes
    raised_ms: int
    """By the hub's clock: the instant the gateway judges."""
    redelivery: bool = False


Event: TypeAlias = CommandSent | ResponseSent | ActivationAlertSent | RestorationSent | Ad1Sent


class Ad1Truth(msgspec.Struct, frozen=True, kw_only=True):
    """Why an AD1 was raised, and what the gateway should do with it."""

    alert_id: str
    chf: bytes
    esme: bytes
    cause: Cause
    should_suppress: bool
    arrival_ms: int
    raised_ms: int
    category: str
    """The premises' :class:`~.population.Category`."""
    storm: bool = False
    command_id: int | None = None
    """For a firmware AD1, the command whose activation rebooted the meter."""
    window_start_ms: int | None = None
    window_end_ms: int | None = None
    """The window that covers it under the rules (start is the execution time)."""
    after_window_ms: int | None = None
    """For an AD1 to forward: a near miss, the time from the end of the latest window of
    its hub that ran its course (within ``near_miss_ms``) to ``raised_ms``."""
    slow_flash: bool = False
    """A firmware reboot that came late (``share_slow_flash``)."""


class WindowSpan(msgspec.Struct, frozen=True, kw_only=True):
    """A window the gateway should have opened, as it stood at the end of the run."""

    chf: bytes
    esme: bytes
    command_id: int
    counter: int
    start_ms: int
    end_ms: int
    future_dated: bool
    closed_early: bool
    removed: bool


class Timeline(msgspec.Struct, frozen=True, kw_only=True):
    """Every event of a run in playing order, and the ground truth."""

    seed: int
    scale: int
    params: TimelineParams
    events: tuple[Event, ...]
    truths: tuple[Ad1Truth, ...]
    windows: tuple[WindowSpan, ...]
    expected_results: dict[str, int]
    """Commands by expected gateway result: ``tracked``, ``replaced``, ``cancelled``."""
    expected_refusals: dict[str, int]
    """Commands by expected refusal reason."""
    expected_restorations_in_window: int = 0
    """ECS80 restoration alerts that arrive while a window of their hub is open."""
    storm_at_ms: int | None
    end_ms: int
    """When the last event is played."""

    def truth_by_id(self) -> dict[str, Ad1Truth]:
        """Ground truth keyed by alert id."""
        return {t.alert_id: t for t in self.truths}

    def responders(self) -> set[bytes]:
        """ESMEs that send signed frames (they need keys)."""
        return {
            e.esme
            for e in self.events
            if isinstance(e, ResponseSent | ActivationAlertSent | RestorationSent)
        }

    def causes(self) -> dict[str, int]:
        """AD1s per cause."""
        return dict(Counter(t.cause for t in self.truths))

    def expected_near_misses(self) -> int:
        """AD1s the gateway should count as near misses."""
        return sum(1 for t in self.truths if t.after_window_ms is not None)


# -- building -------------------------------------------------------------------------------


class _Ad1Plan(msgspec.Struct, kw_only=True):
    at_ms: int
    seq: int
    premises: Premises
    raised_ms: int
    firmware: bool
    storm: bool = False
    slow_flash: bool = False
    command_id: int | None = None
    redelivery_of: _Ad1Plan | None = None
    alert_id: str = ""


class _Builder:
    def __init__(
        self, population: Population, rng: random.Random, scale: int, params: TimelineParams
    ) -> None:
        self.population = population
        self.rng = rng
        self.scale = scale
        self.params = params
        self.by_esme = {p.esme: p for p in population.premises}
        self.events: list[Event] = []
        self.ad1s: list[_Ad1Plan] = []
        self.busy: dict[int, list[tuple[int, int]]] = {}
        self.seq = 0
        self.next_command_id = 1
        # ExecutionDateTime has whole seconds, and real time is start + simulated / scale
        # with the start on a whole second: so future-dated executions sit on this grid.
        self.exec_grid = scale * SECOND_MS
        self.order_guard = scale * ORDER_GUARD_REAL_MS
        self.expiry_guard = scale * EXPIRY_GUARD_REAL_MS
        # Window edges are exact in simulated ms, but real times are rounded to the ms.
        self.edge_guard = max(3 * scale, SECOND_MS)
        d = params.duration_ms
        self.send_lo, self.send_hi = 5 * MINUTE_MS, d - 60 * MINUTE_MS
        self.exec_hi = d - 45 * MINUTE_MS  # reboots and responses over well before the end
        self.storm_at: int | None = None
        self.firmware_book: WindowBook | None = None

    # -- small helpers ------------------------------------------------------------------

    def _seq(self) -> int:
        self.seq += 1
        return self.seq

    def _between(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, max(lo, hi))

    def _seconds(self, lo: int, hi: int) -> int:
        return self.rng.randint(lo, hi) * SECOND_MS

    def _on_grid(self, lo: int, hi: int, *, avoid: int | None = None) -> int | None:
        first, last = -(-lo // self.exec_grid), hi // self.exec_grid
        if first > last or (first == last and first * self.exec_grid == avoid):
            return None
        while True:
            when = self.rng.randint(first, last) * self.exec_grid
            if when != avoid:
                return when

    def _free(self, premises: Premises, lo: int, hi: int) -> bool:
        return all(hi <= a or lo >= b for a, b in self.busy.get(premises.index, ()))

    def _occupy(self, premises: Premises, lo: int, hi: int) -> None:
        self.busy.setdefault(premises.index, []).append((lo, hi))

    def _command(
        self,
        at: int,
        premises: Premises,
        kind: CommandKind,
        purpose: Purpose,
        *,
        execution_ms: int | None = None,
        signer: Signer = "supplier",
        counter: int = 0,
        replay_of: int | None = None,
    ) -> int:
        command_id = self.next_command_id
        self.next_command_id += 1
        self.events.append(
            CommandSent(
                at_ms=at,
                seq=self._seq(),
                command_id=command_id,
                esme=premises.esme,
                chf=premises.chf,
                counter=counter,
                kind=kind,
                execution_ms=execution_ms,
                signer=signer,
                purpose=purpose,
                replay_of=replay_of,
            )
        )
        return command_id

    def _response(self, at: int, premises: Premises, command_id: int, outcome: int | None) -> None:
        self.events.append(
            ResponseSent(
                at_ms=at,
                seq=self._seq(),
                esme=premises.esme,
                chf=premises.chf,
                command_id=command_id,
                counter=0,
                outcome=outcome,
            )
        )

    # -- 1 and 2: rollouts and the devices ---------------------------------------------

    def rollouts(self) -> None:
        p = self.params
        n = len(self.population)
        targets = self.rng.sample(range(n), round(n * p.share_targeted))
        span = self.send_hi - self.send_lo
        wave_len = min(20 * MINUTE_MS, span // p.waves)
        for index in targets:
            premises = self.population.premises[index]
            if self.rng.random() < p.share_future_dated and self._future_dated(premises):
                continue
            wave = self.rng.randrange(p.waves)
            start = self.send_lo + wave * span // p.waves
            send = start + self._seconds(0, wave_len // SECOND_MS)
            self._on_demand(premises, send)

    def _on_demand(self, premises: Premises, send: int) -> None:
        command_id = self._command(send, premises, "on-demand", "rollout")
        # The meter runs an on-demand activation as soon as the command reaches it.
        self._activate(premises, command_id, send + self._seconds(2, 8), execution_ms=None)

    def _future_dated(self, premises: Premises) -> bool:
        latest_send = self.exec_hi - 15 * MINUTE_MS - self.exec_grid
        if latest_send < self.send_lo:
            return False
        send = self._between(self.send_lo, latest_send) // SECOND_MS * SECOND_MS
        execution = self._on_grid(send + 15 * MINUTE_MS, min(send + 90 * MINUTE_MS, self.exec_hi))
        if execution is None:
            return False
        command_id = self._command(
            send, premises, "future-dated", "rollout", execution_ms=execution
        )
        self._response(send + self._seconds(3, 15), premises, command_id, None)
        roll = self.rng.random()
        # Follow-ups arrive well before the meter's clock reaches the execution time.
        follow_up = self._between(send + MINUTE_MS, execution - 10 * MINUTE_MS)
        if roll < self.params.share_cancelled:
            cancel_id = self._command(follow_up, premises, "cancellation", "cancel")
            self._response(follow_up + self._seconds(3, 15), premises, cancel_id, None)
            return True
        if roll < self.params.share_cancelled + self.params.share_rescheduled:
            moved = self._on_grid(follow_up + 15 * MINUTE_MS, self.exec_hi, avoid=execution)
            if moved is not None:
                command_id = self._command(
                    follow_up, premises, "future-dated", "reschedule", execution_ms=moved
                )
                self._response(follow_up + self._seconds(3, 15), premises, command_id, None)
                execution = moved
        # The meter executes when *its* clock reads ExecutionDateTime.
        self._activate(
            premises, command_id, execution - premises.clock_offset_ms, execution_ms=execution
        )
        return True

    def _activate(
        self, premises: Premises, command_id: int, executed: int, *, execution_ms: int | None
    ) -> None:
        offset = premises.clock_offset_ms

        def report(at: int, outcome: int) -> None:
            if execution_ms is None:
                self._response(at, premises, command_id, outcome)
            else:
                self.events.append(
                    ActivationAlertSent(
                        at_ms=at,
                        seq=self._seq(),
                        esme=premises.esme,
                        chf=premises.chf,
                        command_id=command_id,
                        counter=0,
                        execution_ms=execution_ms,
                        outcome=outcome,
                    )
                )

        if self.rng.random() < self.params.share_no_image:
            # Outcome 1: nothing to activate, no reboot, no outage.
            at = executed + self._seconds(5, 30)
            report(at, 1)
            self._occupy(premises, executed - 2 * MINUTE_MS, at + MINUTE_MS)
            return
        window = self.params.window_ms
        # A slow flash reboots so late that the AD1 comes 5 to 9 minutes after the window
        # ends (as long as the run has room for its outage).
        slow = (
            executed + window + 30 * MINUTE_MS <= self.params.duration_ms - 5 * MINUTE_MS
            and self.rng.random() < self.params.share_slow_flash
        )
        rebooted = (
            executed + window + self._seconds(5 * 60 - 165, 9 * 60 - 195) if slow else executed
        )
        power_back = rebooted + self._seconds(12 * 60, 15 * 60)
        ad1_at = rebooted + self._seconds(165, 195)  # "about 3 minutes in"
        self.ad1s.append(
            _Ad1Plan(
                at_ms=ad1_at,
                seq=self._seq(),
                premises=premises,
                raised_ms=ad1_at + offset,
                firmware=True,
                slow_flash=slow,
                command_id=command_id,
            )
        )
        if self.params.restoration_on_reboot:
            self._restoration(premises, rebooted, power_back + self._seconds(10, 40))
        answered = power_back + self._seconds(30, 90)
        report(answered, 0)
        self._occupy(premises, executed - 2 * MINUTE_MS, answered + MINUTE_MS)

    def _restoration(self, premises: Premises, outage_start: int, at: int) -> None:
        offset = premises.clock_offset_ms
        self.events.append(
            RestorationSent(
                at_ms=at,
                seq=self._seq(),
                esme=premises.esme,
                chf=premises.chf,
                outage_start_ms=outage_start + offset,
                alert_time_ms=at + offset,
            )
        )

    # -- 3: the attacker -------------------------------------------------------------------

    def attacks(self) -> None:
        p = self.params
        supplier = [
            e
            for e in self.events
            if isinstance(e, CommandSent) and e.signer == "supplier" and e.purpose != "replay"
        ]
        covered = [x for x in self.population.premises if x.covered]
        if not supplier or not covered:
            return
        for i in range(_at_least_one(len(supplier) * p.share_forged, p.share_forged)):
            premises = self.rng.choice(covered)
            at = self._between(self.send_lo, self.send_hi) // SECOND_MS * SECOND_MS
            signer: Signer = "impostor" if i % 2 == 0 else "untrusted"
            execution = (
                self._on_grid(at + 15 * MINUTE_MS, self.exec_hi)
                if self.rng.random() < 0.3
                else None
            )
            self._command(
                at,
                premises,
                "on-demand" if execution is None else "future-dated",
                "forgery",
                execution_ms=execution,
                signer=signer,
                counter=IMPOSTOR_COUNTER + i if signer == "impostor" else i + 1,
            )
        # Replays: captured commands to covered meters, best those followed by another.
        to_covered = [e for e in supplier if self.by_esme[e.esme].covered]
        later: dict[bytes, int] = {}
        for e in to_covered:
            later[e.esme] = max(later.get(e.esme, 0), e.at_ms)
        followed = [e for e in to_covered if later[e.esme] > e.at_ms]
        pool = followed or to_covered
        count = _at_least_one(len(supplier) * p.share_replayed, p.share_replayed)
        for original in self.rng.sample(pool, min(count, len(pool))):
            after = later[original.esme]
            at = after + self._seconds(60, 600)
            if at > self.send_hi:
                at = original.at_ms + self._seconds(30, 300)
            self._command(
                at,
                self.by_esme[original.esme],
                original.kind,
                "replay",
                execution_ms=original.execution_ms,
                replay_of=original.command_id,
            )
        self._trusted_but_refused(len(supplier), covered)

    def _trusted_but_refused(self, supplier_commands: int, covered: list[Premises]) -> None:
        # Commands to covered meters whose signatures verify, each refused for one reason
        # only: the role, the registered supplier, or the counters.
        p = self.params

        def send(premises: Premises, purpose: Purpose, signer: Signer, counter: int) -> None:
            at = self._between(self.send_lo, self.send_hi) // SECOND_MS * SECOND_MS
            self._command(at, premises, "on-demand", purpose, signer=signer, counter=counter)

        n = _at_least_one(supplier_commands * p.share_wrong_role, p.share_wrong_role)
        for i in range(n):
            signer = _WRONG_ROLES[i % len(_WRONG_ROLES)]
            send(self.rng.choice(covered), "wrong-role", signer, PARTY_FIRST_COUNTER + i)
        registered = [x for x in covered if x.supplier_id == SUPPLIER]
        if registered:
            share = p.share_other_supplier
            for i in range(_at_least_one(supplier_commands * share, share)):
                premises = self.rng.choice(registered)
                send(premises, "other-supplier", "other-supplier", PARTY_FIRST_COUNTER + i)
        share = p.share_counter_mismatch
        for _ in range(_at_least_one(supplier_commands * share, share)):
            # The Supplier's own: numbered in its sequence by counters().
            send(self.rng.choice(covered), "counter-mismatch", "supplier", 0)

    # -- counters ---------------------------------------------------------------------------

    def counters(self) -> None:
        """The Supplier's originator counter rises with every command it sends (with gaps:
        it sends other commands too); a replay carries its original's."""
        ordered = sorted(
            (
                e
                for e in self.events
                if isinstance(e, CommandSent)
                and e.signer == "supplier"
                and e.replay_of is None
                and e.purpose != "forgery"
            ),
            key=lambda e: (e.at_ms, e.seq),
        )
        counter = SUPPLIER_FIRST_COUNTER
        by_command: dict[int, int] = {}
        for command in ordered:
            counter += self.rng.randint(1, 3)
            by_command[command.command_id] = counter
        for event in self.events:
            if isinstance(event, CommandSent) and event.replay_of is not None:
                by_command[event.command_id] = by_command[event.replay_of]

        def numbered(e: Event) -> Event:
            if isinstance(e, CommandSent) and e.purpose == "counter-mismatch":
                # The payload names the counter before the header's: as if lifted from
                # an earlier command.
                header = by_command[e.command_id]
                return msgspec.structs.replace(e, counter=header, payload_counter=header - 1)
            if isinstance(e, CommandSent | ResponseSent | ActivationAlertSent):
                known = by_command.get(e.command_id)
                if known is not None:
                    return msgspec.structs.replace(e, counter=known)
            return e

        replaced = [numbered(e) for e in self.events]
        self.events = replaced

    # -- 4: genuine outages -----------------------------------------------------------------

    def plan_firmware_windows(self) -> None:
        book, _ = _play(self.population, self.params, self._ordered(), {})
        self.firmware_book = book

    def _clear_of_windows(self, premises: Premises, arrival: int, raised: int) -> bool:
        assert self.firmware_book is not None
        lead = self.params.lead_ms
        for w in self.firmware_book.windows_of(premises.chf):
            if any(abs(arrival - t) < self.order_guard for t in w.arrivals()):
                return False
            ends = [w.planned_end_ms] + ([] if w.closed_at is None else [w.closed_at])
            if any(abs(arrival - end) < self.expiry_guard for end in ends):
                return False
            if any(abs(raised - edge) < self.edge_guard for edge in w.edges(lead)):
                return False
            if w.closed_at is not None and abs(raised - w.closed_at) < self.order_guard:
                return False
        return True

    def _genuine(
        self, premises: Premises, start: int, *, storm: bool, minutes: tuple[int, int]
    ) -> bool:
        delay = self._seconds(165, 195)
        arrival = start + delay
        raised = arrival + premises.clock_offset_ms
        power_back = min(
            start + self._seconds(minutes[0] * 60, minutes[1] * 60),
            self.params.duration_ms - 5 * MINUTE_MS,
        )
        if power_back < arrival + MINUTE_MS:
            return False
        restored_at = power_back + self._seconds(10, 40)
        if not self._free(premises, start - MINUTE_MS, restored_at + MINUTE_MS):
            return False  # already off, or busy rebooting: no second AD1
        if not self._clear_of_windows(premises, arrival, raised):
            return False
        self.ad1s.append(
            _Ad1Plan(
                at_ms=arrival,
                seq=self._seq(),
                premises=premises,
                raised_ms=raised,
                firmware=False,
                storm=storm,
            )
        )
        self._restoration(premises, start, restored_at)
        self._occupy(premises, start - MINUTE_MS, restored_at + MINUTE_MS)
        return True

    def scattered(self) -> None:
        n = len(self.population)
        for _ in range(round(n * self.params.share_genuine)):
            for _attempt in range(30):
                premises = self.population.premises[self.rng.randrange(n)]
                start = self._between(5 * MINUTE_MS, self.params.duration_ms - 25 * MINUTE_MS)
                if self._genuine(premises, start, storm=False, minutes=(10, 60)):
                    break

    def storm(self) -> None:
        p = self.params
        n = len(self.population)
        if p.share_storm <= 0:
            return
        assert self.firmware_book is not None
        book = self.firmware_book
        by_chf = {x.chf: x for x in self.population.premises}
        areas = max(1, round(n * p.share_storm / AREA_SIZE))
        delay = 3 * MINUTE_MS

        def in_window_at(moment: int) -> Counter[int]:
            # Per area: hubs that a storm at `moment` would catch inside a window
            # while their power is on.
            per_area: Counter[int] = Counter()
            seen: set[bytes] = set()
            for w in book.history:
                premises = by_chf[w.chf]
                if w.chf in seen or not self._free(premises, moment - MINUTE_MS, moment + delay):
                    continue
                arrival = moment + delay
                if book.covering_as_of(w.chf, arrival + premises.clock_offset_ms, arrival):
                    seen.add(w.chf)
                    per_area[premises.area] += 1
            return per_area

        lo, hi = p.duration_ms // 4, p.duration_ms - 45 * MINUTE_MS
        best_at, best = self._between(lo, hi), Counter[int]()
        for moment in range(lo, hi, MINUTE_MS):
            found = in_window_at(moment)
            if found.total() > best.total():
                best_at, best = moment, found
        self.storm_at = best_at
        ranked = sorted(range(-(-n // AREA_SIZE)), key=lambda a: (-best.get(a, 0), a))
        chosen = set(ranked[:areas])
        for premises in self.population.premises:
            if premises.area in chosen:
                start = best_at + self._seconds(0, 20)  # the front passes in seconds
                self._genuine(premises, start, storm=True, minutes=(30, 90))

    # -- 5: redeliveries, and the final pass -------------------------------------------------

    def redeliveries(self) -> None:
        originals = list(self.ad1s)
        k = round(len(originals) * self.params.share_redelivered)
        for plan in self.rng.sample(originals, min(k, len(originals))):
            self.ad1s.append(
                _Ad1Plan(
                    at_ms=plan.at_ms + self._seconds(3, 20),
                    seq=self._seq(),
                    premises=plan.premises,
                    raised_ms=plan.raised_ms,
                    firmware=plan.firmware,
                    storm=plan.storm,
                    slow_flash=plan.slow_flash,
                    command_id=plan.command_id,
                    redelivery_of=plan,
                )
            )

    def _ordered(self) -> list[Event]:
        return sorted(self.events, key=lambda e: (e.at_ms, e.seq))

    def finish(self, seed: int) -> Timeline:
        # Alert ids in order of first arrival; a redelivery carries its original's id.
        plans = sorted(self.ad1s, key=lambda a: (a.at_ms, a.seq))
        number = 0
        for plan in plans:
            if plan.redelivery_of is None:
                number += 1
                plan.alert_id = f"SIM{seed}-AD1-{number:06d}"
        for plan in plans:
            if plan.redelivery_of is not None:
                plan.alert_id = plan.redelivery_of.alert_id
        events: list[Event] = list(self.events)
        events.extend(
            Ad1Sent(
                at_ms=a.at_ms,
                seq=a.seq,
                alert_id=a.alert_id,
                chf=a.premises.chf,
                raised_ms=a.raised_ms,
                redelivery=a.redelivery_of is not None,
            )
            for a in plans
        )
        events.sort(key=lambda e: (e.at_ms, e.seq))
        # Renumber, and give each device's alerts a rising originator counter.
        alert_counters: Counter[bytes] = Counter()
        final: list[Event] = []
        for i, event in enumerate(events, start=1):
            renumbered: Event = msgspec.structs.replace(event, seq=i)
            if isinstance(renumbered, ActivationAlertSent | RestorationSent):
                alert_counters[renumbered.esme] += 1
                renumbered = msgspec.structs.replace(
                    renumbered, alert_counter=alert_counters[renumbered.esme]
                )
            final.append(renumbered)
        plan_by_id = {a.alert_id: a for a in plans if a.redelivery_of is None}
        book, outcomes = _play(self.population, self.params, final, plan_by_id)
        final = [
            msgspec.structs.replace(e, expected=outcomes.commands[e.command_id])
            if isinstance(e, CommandSent)
            else e
            for e in final
        ]
        return Timeline(
            seed=seed,
            scale=self.scale,
            params=self.params,
            events=tuple(final),
            truths=tuple(outcomes.truths),
            windows=tuple(
                WindowSpan(
                    chf=w.chf,
                    esme=w.esme,
                    command_id=w.command_id,
                    counter=w.counter,
                    start_ms=w.start_ms,
                    end_ms=w.end_ms,
                    future_dated=w.future_dated,
                    closed_early=w.closed_at is not None,
                    removed=w.removed_at is not None,
                )
                for w in book.history
            ),
            expected_results=dict(Counter(r for r in outcomes.commands.values() if r in _ACCEPTED)),
            expected_refusals=dict(
                Counter(r for r in outcomes.commands.values() if r not in _ACCEPTED)
            ),
            expected_restorations_in_window=outcomes.restorations_in_window,
            storm_at_ms=self.storm_at,
            end_ms=final[-1].at_ms if final else 0,
        )


_ACCEPTED: Final = frozenset({"tracked", "replaced", "cancelled"})


def _at_least_one(expected: float, share: float) -> int:
    return max(1, round(expected)) if share > 0 else 0


class _Outcomes(msgspec.Struct):
    commands: dict[int, str]
    truths: list[Ad1Truth]
    restorations_in_window: int = 0


def _play(
    population: Population,
    params: TimelineParams,
    events: list[Event],
    plan_by_id: dict[str, _Ad1Plan],
) -> tuple[WindowBook, _Outcomes]:
    """Play ``events`` (in order) through the rules: each command's expected result, and
    the truth of each AD1 planned in ``plan_by_id``."""
    by_esme = {p.esme: p for p in population.premises}
    book = WindowBook(
        window_ms=params.window_ms, lead_ms=params.lead_ms, retain_ms=params.retain_ms
    )
    last_counter: dict[tuple[bytes, bytes], int] = {}  # per (originator, ESME)
    out = _Outcomes(commands={}, truths=[])
    for e in events:
        if isinstance(e, CommandSent):
            target = by_esme[e.esme]
            key = (originator(e.signer), e.esme)
            reason = refusal_for(
                signer=e.signer,
                smets=target.smets,
                manufacturer=target.manufacturer,
                on_guid_list=target.on_guid_list,
                counter=e.counter,
                last_counter=last_counter.get(key),
                manufacturers=params.manufacturers,
                payload_counter=e.payload_counter,
                originator=key[0],
                registered_supplier=target.supplier_id,
            )
            if reason is not None:
                out.commands[e.command_id] = reason
                continue
            pending = book.has_pending(e.chf, e.esme, e.at_ms)
            book.command(
                e.at_ms,
                chf=e.chf,
                esme=e.esme,
                counter=e.counter,
                command_id=e.command_id,
                execution_ms=e.execution_ms,
                cancel=e.kind == "cancellation",
            )
            last_counter[key] = e.counter
            if e.kind == "cancellation":
                out.commands[e.command_id] = "cancelled"
            else:
                out.commands[e.command_id] = "replaced" if pending else "tracked"
        elif isinstance(e, ResponseSent | ActivationAlertSent):
            if e.outcome is not None:
                book.outcome(e.at_ms, chf=e.chf, esme=e.esme, counter=e.counter, code=e.outcome)
        elif isinstance(e, RestorationSent):
            # The gateway compares the instant it receives one with the windows.
            if book.covering(e.chf, e.at_ms, e.at_ms) is not None:
                out.restorations_in_window += 1
        elif isinstance(e, Ad1Sent) and not e.redelivery:
            plan = plan_by_id[e.alert_id]
            window = book.covering(e.chf, e.raised_ms, e.at_ms)
            gap = None if window else book.after_window(e.chf, e.raised_ms, params.near_miss_ms)
            out.truths.append(_truth(plan, window, gap))
    return book, out


def _truth(plan: _Ad1Plan, window: Window | None, after_window_ms: int | None) -> Ad1Truth:
    premises = plan.premises
    cause: Cause
    if plan.firmware and plan.slow_flash and premises.covered:
        cause = "firmware-late"
        if window is not None or after_window_ms is None:
            raise AssertionError(f"slow-flash AD1 {plan.alert_id} is not a near miss")
    elif plan.firmware:
        cause = "firmware-listed" if premises.covered else "firmware-unlisted"
        # The plan puts every reboot of a covered meter inside its own window and no
        # window on an uncovered meter's hub; anything else is a bug in this module.
        if premises.covered and (window is None or window.command_id != plan.command_id):
            raise AssertionError(f"firmware AD1 {plan.alert_id} is outside its window")
        if not premises.covered and window is not None:
            raise AssertionError(f"AD1 {plan.alert_id} of an uncovered meter is in a window")
    else:
        cause = "genuine" if window is None else "genuine-in-window"
    return Ad1Truth(
        alert_id=plan.alert_id,
        chf=premises.chf,
        esme=premises.esme,
        cause=cause,
        should_suppress=window is not None,
        arrival_ms=plan.at_ms,
        raised_ms=plan.raised_ms,
        category=premises.category.value,
        storm=plan.storm,
        command_id=plan.command_id,
        window_start_ms=None if window is None else window.start_ms,
        window_end_ms=None if window is None else window.end_ms,
        after_window_ms=after_window_ms,
        slow_flash=plan.slow_flash,
    )


def build_timeline(
    population: Population,
    *,
    seed: int,
    scale: int,
    params: TimelineParams | None = None,
) -> Timeline:
    """Plan a run over ``population``: events in playing order and the ground truth.

    ``scale`` is how many simulated milliseconds pass per real one; it places
    ExecutionDateTimes on whole real seconds and sizes the guards that keep decisions
    deterministic in real time (see the module docstring).

    Raises:
        ValueError: ``scale < 1``, or clock offsets too large for the lead tolerance.
    """
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    params = params or TimelineParams()
    # An on-demand reboot's AD1 comes at least 167 s after the command; a hub clock
    # further behind than that plus the lead would date it before its window.
    if population.max_clock_offset_ms > params.lead_ms + 167 * SECOND_MS:
        raise ValueError(
            "clock offsets beyond the lead tolerance plus 167 s would date firmware AD1s "
            "before their windows"
        )
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography
    builder = _Builder(population, rng, scale, params)
    builder.rollouts()
    builder.attacks()
    builder.counters()
    builder.plan_firmware_windows()
    builder.scattered()
    builder.storm()
    builder.redeliveries()
    return builder.finish(seed)
