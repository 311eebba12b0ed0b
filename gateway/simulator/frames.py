"""The GBCS frames of a timeline's events, signed, at real times.

The timeline is in simulated milliseconds from the start of a run; a frame carries
calendar times. :class:`FrameFactory` maps one to the other (``t0 + simulated / scale``)
and signs with the run's keys: each remote party's own for its commands (the Supplier,
the second Supplier, the Network Operator, ACB and Other User), the attacker's for
forgeries, each ESME's own for its responses and alerts. A replay is the exact bytes of
the command it copies, so the factory remembers every command it built.
"""

from __future__ import annotations

import datetime as dt

from cryptography.hazmat.primitives.asymmetric import ec

import gbcs
from gbcs import ActivationResponseCode, builders

from .population import SUPPLIER, Credentials, originator
from .timeline import ActivationAlertSent, CommandSent, ResponseSent, RestorationSent

__all__ = ["FrameFactory"]


class FrameFactory:
    """Builds the frames of one run; ``t0_ms`` (a whole second) is simulated time 0."""

    def __init__(self, credentials: Credentials, *, t0_ms: int, scale: int) -> None:
        if t0_ms % 1000:
            raise ValueError("t0_ms must be a whole second (ExecutionDateTime has seconds)")
        self.credentials = credentials
        self.t0_ms = t0_ms
        self.scale = scale
        self._commands: dict[int, bytes] = {}

    def real_ms(self, simulated_ms: int) -> int:
        """The real time (ms since the epoch) of a simulated instant."""
        return self.t0_ms + simulated_ms // self.scale

    def _datetime(self, simulated_ms: int) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.real_ms(simulated_ms) / 1000, dt.UTC)

    def command(self, event: CommandSent) -> bytes:
        """The CS06 command frame (for a replay, the very bytes of the original)."""
        if event.replay_of is not None:
            return self._commands[event.replay_of]
        if event.kind == "cancellation":
            when: dt.datetime | None = gbcs.CANCELLATION_TIME
        elif event.execution_ms is not None:
            if self.real_ms(event.execution_ms) % 1000:
                raise ValueError(f"command {event.command_id}: execution not on a whole second")
            when = self._datetime(event.execution_ms)
        else:
            when = None
        named, identity = self.credentials.signing(event.signer)
        frame = builders.cs06_command(
            originator=named,
            target=event.esme,
            counter=event.counter,
            signer=identity.key,
            execution_time=when,
            payload_counter=event.payload_counter,
        )
        self._commands[event.command_id] = frame
        return frame

    @staticmethod
    def request_id(event: CommandSent) -> str:
        """The DUIS RequestID ``originator:target:counter`` the DSP would give it."""
        named = gbcs.format_eui64(originator(event.signer))
        return f"{named}:{gbcs.format_eui64(event.esme)}:{event.counter}"

    def _device_key(self, esme: bytes) -> ec.EllipticCurvePrivateKey:
        identity = self.credentials.devices.get(esme)
        if identity is None:
            raise KeyError(f"no key for ESME {gbcs.format_eui64(esme)}: generate its identity")
        return identity.key

    def response(self, event: ResponseSent) -> bytes:
        """The ESME's CS06 response (outcome None: "command accepted")."""
        return builders.cs06_response(
            device=event.esme,
            originator=SUPPLIER,
            counter=event.counter,
            signer=self._device_key(event.esme),
            outcome=None if event.outcome is None else ActivationResponseCode(event.outcome),
        )

    def activation_alert(self, event: ActivationAlertSent) -> bytes:
        """The 0x00CA Future Dated Firmware Activation Alert (8F66 or 8F67)."""
        return builders.future_dated_alert(
            device=event.esme,
            originator=SUPPLIER,
            alert_counter=event.alert_counter,
            command_counter=event.counter,
            execution_time=self._datetime(event.execution_ms),
            outcome=ActivationResponseCode(event.outcome),
            signer=self._device_key(event.esme),
        )

    def restoration(self, event: RestorationSent) -> bytes:
        """The ECS80 power restoration alert (outage longer than 3 minutes)."""
        return builders.restoration_alert(
            device=event.esme,
            recipient=SUPPLIER,
            alert_counter=event.alert_counter,
            alert_time=self._datetime(event.alert_time_ms),
            outage_start=self._datetime(event.outage_start_ms),
            signer=self._device_key(event.esme),
        )
