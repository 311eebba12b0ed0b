"""What flows into and out of the suppression engine: inputs, values, results, reasons.

Theory of operation
-------------------
The engine (:mod:`gateway.core.engine`) is a function of its inputs and ``now``; this module
names everything that crosses that boundary, so that a caller can build the inputs and
read the results without importing the engine, and the engine's memory layout can
change without touching them.

- *Inputs* carry a decoded frame and the facts the daemon looked up for it (inventory
  record, GUID-list membership, last accepted counter): :class:`CommandSeen`,
  :class:`DeviceOutcomeSeen`. A DCC alert comes in as :class:`gateway.wire.DccAlertEnvelope`.
- *Values*: :class:`Activation` (one tracked window) and :class:`AlertDecision` (the
  decision on one DCC alert).
- *Results* are past-tense facts: :class:`ActivationTracked`,
  :class:`ActivationCancelled`, :class:`CommandRefused`, :class:`OutcomeApplied`,
  :class:`RestorationObserved`, :class:`InventoryNoted`; *housekeeping* from
  ``Engine.advance``: :class:`WindowOpened`, :class:`WindowEnded`,
  :class:`WindowExpired`, :class:`DedupeExpired`.
- *Reasons*, one vocabulary per kind, each a ``StrEnum`` whose values are log fields,
  metric labels and a public contract (docs/operations.md): :class:`RefusalReason`
  (and :data:`NOTEWORTHY_REFUSALS`), :class:`AlertReason`, :class:`AlertOutcome`,
  :class:`CommandOutcome`, :class:`IgnoredReason`, :class:`OutcomeKind`.

Everything here is a frozen ``msgspec.Struct`` or an enum: plain data, no behaviour
beyond derived properties. How a value is laid out in memory (the engine) or on disk
(the state store) is each of those modules' own business.
"""

from __future__ import annotations

import enum
from typing import Final, Literal, TypeAlias

import msgspec

import gbcs
from gbcs import Frame, RemotePartyRole, SignatureStatus

from .devices import DeviceRecord

# -- inputs -------------------------------------------------------------------------


class CommandSeen(msgspec.Struct, frozen=True):
    """A CS06 command seen on its way to the CSP, with the facts the rules need.

    Attributes:
        frame: the decoded frame.
        signature: the result of verifying it over the received bytes.
        signer_role: the verified signer's role (None if not verified, or a device).
        target: inventory record of the recipient, None when unknown.
        on_guid_list: whether the recipient is on the Landis+Gyr GUID list.
        last_counter: last originator counter accepted from this originator for this
            device (durable store), None if none.
        sent_at: when the DSP sent it (ms).
        request_id: DUIS RequestID from the envelope, if any.
    """

    frame: Frame
    signature: SignatureStatus
    signer_role: RemotePartyRole | None
    target: DeviceRecord | None
    on_guid_list: bool
    last_counter: int | None
    sent_at: int
    request_id: str | None = None


class DeviceOutcomeSeen(msgspec.Struct, frozen=True):
    """A CS06 response or 0x00CA alert from a device, with the device's inventory record."""

    frame: Frame
    signature: SignatureStatus
    device: DeviceRecord | None
    sent_at: int


# -- values and results ---------------------------------------------------------------


class Activation(msgspec.Struct, frozen=True):
    """One tracked firmware activation and its suppression window.

    The window covers ``[start_ms - lead, end_ms)``; ``lead`` is the engine's
    ``lead_ms``.
    """

    esme: bytes
    chf: bytes
    originator: bytes
    counter: int
    start_ms: int
    end_ms: int
    future_dated: bool
    seen_at: int
    closed_early: bool = False
    succeeded: bool = False

    @property
    def kind(self) -> Literal["on-demand", "future-dated"]:
        """``on-demand`` or ``future-dated``."""
        return "future-dated" if self.future_dated else "on-demand"

    @property
    def request_id(self) -> str:
        """The DUIS RequestID ``originator:target:counter`` of the command behind it."""
        return f"{gbcs.format_eui64(self.originator)}:{gbcs.format_eui64(self.esme)}:{self.counter}"


ActivationFields: TypeAlias = tuple[bytes, bytes, bytes, int, int, int, bool, int, bool, bool]
"""An :class:`Activation`'s fields as a plain tuple, in field order (esme, chf,
originator, counter, start_ms, end_ms, future_dated, seen_at, closed_early, succeeded):
how a state store hands over 1.4 million of them at a promotion without making an
object of each (``Engine.restore_fields``)."""


class RefusalReason(enum.StrEnum):
    """Why a CS06 command opened no window (a log field and a metric label)."""

    FEATURE_OFF = "feature-off"
    UNSIGNED = "unsigned"
    UNTRUSTED_SIGNER = "untrusted-signer"
    BAD_SIGNATURE = "bad-signature"
    REPLAY = "replay"
    UNKNOWN_DEVICE = "unknown-device"
    NOT_ESME = "not-esme"
    NOT_SMETS2 = "not-smets2"
    MANUFACTURER_NOT_LISTED = "manufacturer-not-listed"
    NOT_ON_GUID_LIST = "not-on-guid-list"
    UNKNOWN_CHF = "unknown-chf"
    NOT_CS06 = "not-cs06"
    WRONG_ROLE = "wrong-role"
    NOT_REGISTERED_SUPPLIER = "not-registered-supplier"
    COUNTER_MISMATCH = "counter-mismatch"


NOTEWORTHY_REFUSALS: Final = frozenset(
    {
        RefusalReason.UNSIGNED,
        RefusalReason.UNTRUSTED_SIGNER,
        RefusalReason.BAD_SIGNATURE,
        RefusalReason.REPLAY,
        RefusalReason.WRONG_ROLE,
        RefusalReason.NOT_REGISTERED_SUPPLIER,
        RefusalReason.COUNTER_MISMATCH,
        RefusalReason.UNKNOWN_DEVICE,
        RefusalReason.UNKNOWN_CHF,
    }
)
"""Refusals that may be an attack or a misconfiguration (a forged or replayed command,
the wrong party's key, an inventory behind the estate): logged as warnings. The others
(``feature-off``, ``not-smets2``, ``manufacturer-not-listed``, ``not-on-guid-list``,
``not-esme``, ``not-cs06``) are the gateway doing its job on meters it does not cover:
logged as info, or a campaign would bury the warnings."""


class ActivationTracked(msgspec.Struct, frozen=True):
    """A command opened (or scheduled) a window; ``replaced`` is the pending one it replaced."""

    activation: Activation
    replaced: Activation | None = None


class ActivationCancelled(msgspec.Struct, frozen=True):
    """A cancellation was accepted; ``cancelled`` is the pending activation it removed
    (None when nothing was pending). Its counter is accepted all the same."""

    esme: bytes
    originator: bytes
    counter: int
    cancelled: Activation | None = None


class CommandOutcome(enum.StrEnum):
    """What became of a CS06 command (the ``result`` label of ``poa_commands_total``; its
    ``reason`` is the :class:`RefusalReason` of a refusal, the activation's kind for a
    tracked or replaced one, ``cancellation`` for a cancellation)."""

    TRACKED = "tracked"
    REPLACED = "replaced"  # tracked, replacing the ESME's pending activation
    CANCELLED = "cancelled"
    REFUSED = "refused"


class IgnoredReason(enum.StrEnum):
    """Why a GBCS frame that was read is not acted on (the ``reason`` of ``gbcs.ignored``
    log records and of ``poa_frames_ignored_total``)."""

    NOT_CS06 = "not-cs06"  # another command on the command topic: the gateway watches CS06
    NOT_A_COMMAND = "not-a-command"  # a CS06 response or alert on the command topic
    COMMAND_ON_INBOUND = "command-on-inbound"  # a command on the northbound topic
    NOT_HANDLED = "not-handled"  # a northbound frame the gateway has no use for


class CommandRefused(msgspec.Struct, frozen=True):
    """A command opened no window, and why."""

    reason: RefusalReason
    detail: str
    esme: bytes
    originator: bytes
    counter: int


CommandResult = ActivationTracked | ActivationCancelled | CommandRefused


class OutcomeKind(enum.StrEnum):
    """What a device outcome did to the activation it refers to."""

    CLOSED_EARLY = "closed-early"  # outcome 1 or 2: the meter never rebooted
    KEPT = "kept"  # outcome 3, or an immediate success: the window runs its course
    SUCCEEDED = "succeeded"  # 8F66 future-dated success recorded
    ACCEPTED = "accepted"  # "command accepted" response: nothing to change
    IGNORED = "ignored"  # could not be matched or trusted; see ``reason``


class OutcomeReason(enum.StrEnum):
    """Why a CS06 response or 0x00CA alert had the effect it had (a log field)."""

    SIGNATURE_NOT_VALID = "signature-not-valid"  # its signature did not verify
    COMMAND_ACCEPTED = "command-accepted"  # a response saying the command was taken
    NOT_AN_OUTCOME = "not-an-outcome"  # neither a CS06 response nor a 0x00CA alert
    DEVICE_UNKNOWN = "device-unknown"  # the device, or its CHF, is not in the inventory
    NO_ACTIVATION = "no-activation"  # no tracked activation matches it
    SUCCEEDED = "succeeded"  # 8F66: the future-dated activation succeeded
    MAY_HAVE_REBOOTED = "may-have-rebooted"  # the window runs its course
    NEVER_REBOOTED = "never-rebooted"  # outcome 1 or 2: the window closes early


class OutcomeApplied(msgspec.Struct, frozen=True):
    """Result of a CS06 response or 0x00CA alert: ``reason`` says why, ``detail`` says it
    for a person (with the outcome code or signature status found)."""

    kind: OutcomeKind
    reason: OutcomeReason
    detail: str
    activation: Activation | None = None
    response_code: int | None = None


class RestorationObserved(msgspec.Struct, frozen=True):
    """An ECS80 power restoration alert; counted and reported, never suppressed."""

    esme: bytes
    chf: bytes | None
    in_window: bool
    activation: Activation | None = None


class AlertOutcome(enum.StrEnum):
    """What became of a DCC alert (the ``outcome`` label of ``poa_alerts_total``)."""

    FORWARDED = "forwarded"
    SUPPRESSED = "suppressed"
    DUPLICATE = "duplicate"  # a redelivered copy: its effect came once, with the first
    REJECTED = "rejected"  # unreadable: forwarded unread; the reason is a WireReason


class AlertReason(enum.StrEnum):
    """Why a DCC alert was suppressed or forwarded: the ``reason`` of an
    :class:`AlertDecision` (also packed into the state store's rows), of the ``alert.*``
    log records, of ``poa_alerts_total`` and of ``poa-gateway explain``. The values are a
    public contract (docs/operations.md). A rejected alert's reason is the
    :class:`gateway.wire.WireReason` of the payload it could not read."""

    INSIDE_WINDOW = "inside-window"  # suppressed: a window of its CHF covers the instant
    NO_WINDOW = "no-window"
    NOT_AD1 = "not-ad1"
    FEATURE_OFF = "feature-off"
    # Decided by the service, never by the engine:
    QUARANTINED = "quarantined"  # its handling raised on every attempt: forwarded unjudged
    REDELIVERED = "redelivered"  # a redelivered copy whose effect is on record


class AlertDecision(msgspec.Struct, frozen=True):
    """The decision on one DCC alert.

    ``reason``: ``inside-window`` (suppressed), ``no-window``, ``not-ad1``,
    ``feature-off``. ``judged_at`` is the instant compared with the windows:
    ``raised_at``, or ``now`` when ``raised_at`` was later than now plus the skew.

    ``after_window_ms``: for a ``no-window`` decision, a *near miss*: the time from the
    end of the latest window of the same CHF that ran its course (not closed early) to
    ``judged_at``, when at most the engine's ``near_miss_ms``; None otherwise. Evidence
    that the window may be too short (issue 13; the modification report warns that the
    meters' flash slows as it ages).
    """

    alert_id: str
    chf: bytes
    suppressed: bool
    reason: AlertReason
    judged_at: int
    decided_at: int
    duplicate: bool = False
    activation: Activation | None = None
    after_window_ms: int | None = None


class WindowOpened(msgspec.Struct, frozen=True):
    """Housekeeping: a future-dated window's start time has come."""

    activation: Activation


class WindowEnded(msgspec.Struct, frozen=True):
    """Housekeeping: a window's end has passed; it is kept ``retain_ms`` for late alerts."""

    activation: Activation


class WindowExpired(msgspec.Struct, frozen=True):
    """Housekeeping: an ended window's retention has passed; it is no longer tracked."""

    activation: Activation


class DedupeExpired(msgspec.Struct, frozen=True):
    """Housekeeping: this many remembered alert ids aged out."""

    count: int


Housekeeping = WindowOpened | WindowEnded | WindowExpired | DedupeExpired


class InventoryNoted(msgspec.Struct, frozen=True):
    """An inventory change seen by the engine; ``tracked`` lists the device's
    activations, which stay with the CHF seen when their command arrived."""

    device_id: bytes
    tracked: tuple[Activation, ...] = ()
