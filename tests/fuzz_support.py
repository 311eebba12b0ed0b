"""The core of the fuzz campaign: valid inputs, ways to break them, and one check per input.

Used by ``bench/fuzz.py`` (a million inputs, each timed, in worker processes) and by
``tests/test_fuzz.py`` (a few thousand, untimed), so that the test runs exactly the
campaign the benchmark reports on.

Theory of operation
-------------------
The seeds are every RTDS frame in ``../shared/vectors``, frames built here and signed
with a key generated at start (so that mutations of *valid* signed frames reach the
signature check and the renderer), and valid envelopes of each inbound kind (``gbcs``,
``dcc-alert``, ``inventory``) built with :func:`gateway.wire.encode`.

:meth:`Harness.generate` picks a seed and a strategy. The byte-level strategies (bit
flips, byte insert/delete, truncation, splices, interesting bytes) work on any input;
the structured ones know the format: frames get DER INTEGERs of up to 2,000 bytes,
boosted BER lengths, extreme DLMS date-times and GeneralizedTimes, and oversized
payloads, re-encoded (and re-signed) so that the damage sits behind a well-formed
header; envelopes get tagged values (bignums, decimal fractions, bigfloats, nested or
unknown tags), big integers, deep nesting, indefinite lengths, duplicate and non-text
keys, and payloads beyond ``max_payload``.

:meth:`Harness.check` runs one input through everything that reads outside input: an
envelope through all three inbound decoders and, for a ``gbcs`` envelope that decodes,
its frame; a frame through :func:`gbcs.decode_frame`, :func:`gbcs.verify_frame`,
:func:`gateway.render.render_frame` with ``json.dumps`` (what ``poa-gateway decode``
prints) and the JSON log writer. It returns a label (``ok``, ``gbcs:<reason>``,
``wire:<reason>``) and lets any other exception escape: that is a finding.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import os
import random
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final, Literal, NamedTuple, TextIO

import cbor2
import msgspec
from cryptography.hazmat.primitives.asymmetric import ec

import gbcs
from gateway.core.devices import DeviceStatus, DeviceType
from gateway.core.events import Activation, AlertDecision, AlertReason
from gateway.logs import JsonLog
from gateway.render import render_frame
from gateway.state.sqlite import Store
from gateway.wire import (
    DEFAULT_MAX_PAYLOAD,
    DccAlertEnvelope,
    GbcsEnvelope,
    InventoryEnvelope,
    WireError,
    decode_dcc_alert,
    decode_gbcs,
    decode_inventory,
    encode,
)
from gbcs import builders

Kind = Literal["frame", "gbcs", "dcc-alert", "inventory"]
KINDS: Final[tuple[Kind, ...]] = ("frame", "gbcs", "dcc-alert", "inventory")

# The originator of the frames built and signed here (a Supplier's remote party id).
FUZZ_ORIGINATOR: Final = bytes.fromhex("90B3D51F3001FFFF")
ESME: Final = bytes.fromhex("00DB1234567890B1")
CHF: Final = bytes.fromhex("00DB1234567890A0")
T0: Final = 1_700_000_000_000
MAX_BIG_INT_BYTES: Final = 2000  # the length of the INTEGERs injected (crash class 1)


def vector_files(root: Path) -> list[Path]:
    """Every RTDS frame file under ``root`` (``../shared/vectors``), sorted."""
    return sorted(root.glob("rtds-*/*/*.HEX"))


class Seed(NamedTuple):
    """A valid input: its kind, where it came from, its bytes and (envelopes) its map."""

    kind: Kind
    name: str
    data: bytes
    fields: dict[str, Any] | None = None


def _envelope_seed(
    kind: Kind, name: str, envelope: GbcsEnvelope | DccAlertEnvelope | InventoryEnvelope
) -> Seed:
    fields: dict[str, Any] = msgspec.to_builtins(envelope, builtin_types=(bytes,))
    return Seed(kind, name, encode(envelope), fields)


def _built_frames(key: ec.EllipticCurvePrivateKey) -> list[Seed]:
    when = dt.datetime(2030, 1, 15, 9, 0, tzinfo=dt.UTC)
    frames = {
        "cs06-command": builders.cs06_command(
            originator=FUZZ_ORIGINATOR, target=ESME, counter=1001, signer=key
        ),
        "cs06-future-command": builders.cs06_command(
            originator=FUZZ_ORIGINATOR, target=ESME, counter=1002, signer=key, execution_time=when
        ),
        "cs06-response": builders.cs06_response(
            device=FUZZ_ORIGINATOR,
            originator=ESME,
            counter=1001,
            signer=key,
            outcome=gbcs.ActivationResponseCode.SUCCESS,
        ),
        "cs06-alert": builders.future_dated_alert(
            device=FUZZ_ORIGINATOR,
            originator=ESME,
            alert_counter=7,
            command_counter=1002,
            execution_time=when,
            outcome=gbcs.ActivationResponseCode.HASH_MISMATCH,
            signer=key,
        ),
        "ecs80-alert": builders.restoration_alert(
            device=FUZZ_ORIGINATOR,
            recipient=CHF,
            alert_counter=8,
            alert_time=when,
            outage_start=when - dt.timedelta(minutes=5),
            signer=key,
        ),
    }
    return [Seed("frame", f"built:{name}", data) for name, data in frames.items()]


def _envelopes(frames: Sequence[Seed]) -> list[Seed]:
    seeds = [
        _envelope_seed(
            "gbcs",
            f"gbcs:{frame.name}",
            GbcsEnvelope(
                v=1,
                kind="gbcs",
                frame=frame.data,
                sent_at=T0 + i,
                request_id=None if i % 2 else f"90-B3-D5-1F-30-01-00-00:00-DB-12:{i}",
            ),
        )
        for i, frame in enumerate(frames)
    ]
    seeds += [
        _envelope_seed(
            "dcc-alert",
            f"dcc-alert:{code}",
            DccAlertEnvelope(
                v=1,
                kind="dcc-alert",
                code=code,
                alert_id=f"ad1-{i:04d}",
                device_id=CHF,
                raised_at=T0 + i,
                sent_at=T0 + i + 250,
            ),
        )
        for i, code in enumerate(("AD1", "AD1", "8F35", "X" * 40))
    ]
    seeds += [
        _envelope_seed(
            "inventory",
            f"inventory:{device_type.value}",
            InventoryEnvelope(
                v=1,
                kind="inventory",
                device_id=ESME if device_type is DeviceType.ESME else CHF,
                device_type=device_type,
                smets=2,
                manufacturer="Landis+Gyr",
                model="E470" if device_type is DeviceType.ESME else None,
                chf_id=CHF if device_type is DeviceType.ESME else None,
                status=status,
            ),
        )
        for device_type, status in (
            (DeviceType.ESME, DeviceStatus.COMMISSIONED),
            (DeviceType.CHF, DeviceStatus.INSTALLED_NOT_COMMISSIONED),
        )
    ]
    return seeds


# -- CBOR built by hand (cbor2 cannot write indefinite lengths or invalid items) --------


def _head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes((major << 5 | value,))
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes((major << 5 | info,)) + value.to_bytes(size, "big")
    raise ValueError(value)


def _cbor_map(items: Sequence[tuple[bytes, bytes]]) -> bytes:
    return _head(5, len(items)) + b"".join(key + value for key, value in items)


def _text(value: str) -> bytes:
    raw = value.encode("utf-8", "surrogatepass")
    return _head(3, len(raw)) + raw


_TAGS: Final = (0, 1, 2, 3, 4, 5, 21, 24, 25, 28, 29, 30, 32, 35, 36, 37, 52, 54, 100)
_TAGS_HIGH: Final = (256, 258, 260, 261, 1004, 43000, 55799, 80000, (1 << 64) - 1)


def _hostile_cbor(rnd: random.Random, depth: int = 0) -> bytes:
    """One CBOR value meant to hurt a decoder: tags, big numbers, nesting, odd items."""
    choice = rnd.randrange(16)
    if choice == 0:  # a bignum: tag 2/3 around a long byte string (up to 60 KB)
        size = rnd.choice((9, 64, 1000, 20_000, 60_000))
        return _head(6, rnd.choice((2, 3))) + _head(2, size) + rnd.randbytes(size)
    if choice == 1:  # decimal fraction / bigfloat with a big mantissa or exponent (tag 4/5)
        mantissa = _head(6, 2) + _head(2, 40_000) + b"\x7f" * 40_000
        exponent = _head(0, rnd.choice((0, 1 << 62, (1 << 64) - 1)))
        pair = [exponent, mantissa] if rnd.random() < 0.5 else [mantissa, exponent]
        return _head(6, rnd.choice((4, 5))) + _head(4, 2) + b"".join(pair)
    if choice == 2:  # any tag around any value, nested tags
        tag = rnd.choice(_TAGS + _TAGS_HIGH) if rnd.random() < 0.8 else rnd.getrandbits(64)
        inner = _hostile_cbor(rnd, depth + 1) if depth < 3 else _head(0, 1)
        return _head(6, tag) + inner
    if choice == 3:  # a tag head with nothing (or garbage) behind it
        return _head(6, rnd.choice(_TAGS)) + rnd.randbytes(rnd.randrange(3))
    if choice == 4:  # the limits of a plain integer
        return rnd.choice((b"\x1b" + b"\xff" * 8, b"\x3b" + b"\xff" * 8, b"\x1b" + bytes(8)))
    if choice == 5:  # nested arrays or maps, some deeper than the decoder's bound
        levels = rnd.choice((2, 7, 8, 9, 30, 300))
        opener = b"\x81" if rnd.random() < 0.5 else b"\xa1\x61k"
        return opener * levels + b"\x00"
    if choice == 6:  # indefinite lengths (refused by the contract)
        return rnd.choice((b"\x5f\x41\x00\xff", b"\x7f\x61a\xff", b"\x9f\x01\xff", b"\xbf\xff"))
    if choice == 7:  # a long text or byte string
        size = rnd.choice((200, 5000, 60_000))
        return _head(3, size) + b"a" * size if rnd.random() < 0.5 else _head(2, size) + bytes(size)
    if choice == 8:  # floats: half, single, double, NaN, infinities
        return rnd.choice(
            (b"\xf9\x7e\x00", b"\xf9\x7c\x00", b"\xfa\x7f\x80\x00\x00", b"\xfb" + bytes(8))
        )
    if choice == 9:  # simple values, undefined, a stray break
        return rnd.choice((b"\xf7", b"\xf6", b"\xf8\xff", b"\xe0", b"\xff", b"\xf8\x18"))
    if choice == 10:  # a map with non-text keys
        key = rnd.choice((b"\x01", b"\x41\x00", b"\x80", b"\xa0", b"\xf6", b"\xc2\x41\x01"))
        return b"\xa1" + key + b"\x00"
    if choice == 11:  # text that is not UTF-8
        return b"\x62\xc3\x28"
    if choice == 12:  # a length announcing far more than follows
        return rnd.choice((b"\x5b" + b"\xff" * 8, b"\x7a\xff\xff\xff\xff", b"\x9b" + b"\x7f" * 8))
    if choice == 13:  # shared references and string references (tags 28, 29, 25, 256)
        return rnd.choice(
            (b"\xd8\x1c\x81\xd8\x1d\x00", b"\xd8\x1d\x05", b"\xd9\x01\x00\xd8\x19\x00")
        )
    if choice == 14:  # an array holding hostile values
        n = rnd.randrange(1, 4)
        inner = b"".join(_hostile_cbor(rnd, depth + 1) if depth < 3 else b"\x00" for _ in range(n))
        return _head(4, n) + inner
    return cbor2.dumps(rnd.choice((2**64, -(2**64) - 1, 2**200, 10**50, -1, 1.5, "", b"", [], {})))


# -- frames re-encoded with damage behind a valid header ---------------------------------


def _der(tag: int, body: bytes) -> bytes:
    size = len(body)
    if size < 0x80:
        return bytes((tag, size)) + body
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes((tag, 0x80 | len(raw))) + raw + body


def _big_integer(rnd: random.Random) -> bytes:
    size = rnd.choice((2, 3, 8, 9, 10, 17, 200, 1785, 1786, MAX_BIG_INT_BYTES))
    first = rnd.choice((0x00, 0x01, 0x7F, 0x80, 0xFF))
    return _der(0x02, bytes((first,)) + rnd.randbytes(size - 1))


def _small_integer(value: int) -> bytes:
    return _der(0x02, value.to_bytes(value.bit_length() // 8 + 1, "big"))


_GT = _der(0x18, b"20300115090000Z")
_HASH = _der(0x04, bytes(32))
_VERSION = _der(0x04, bytes.fromhex("0123ABCF"))


def _outcome(rnd: random.Random, big: int) -> bytes:
    code = _big_integer(rnd) if big == 0 else _small_integer(rnd.choice((0, 1, 2, 3, 127, 255)))
    return _der(0x30, code + _VERSION)


def _damaged_payload(rnd: random.Random, code: int, cra: gbcs.CraFlag) -> bytes:
    """A DER payload of ``code`` with one INTEGER (or time) of a hostile size or value."""
    big = rnd.randrange(3)  # which INTEGER gets the damage
    counter = _big_integer(rnd) if big == 1 else _small_integer(1001)
    if rnd.random() < 0.2:  # an odd GeneralizedTime instead
        when = rnd.choice(
            (b"99991231235959Z", b"00000101000000Z", b"20301301000000Z", b"2030", b"9" * 2000)
        )
        gt = _der(0x18, when)
    else:
        gt = _GT
    if code == gbcs.MessageCode.CS06_FUTURE_DATED_ALERT:
        alert_code = _big_integer(rnd) if big == 2 else _small_integer(0x8F67)
        return _der(0x30, alert_code + gt + counter + _outcome(rnd, big))
    if cra == gbcs.CraFlag.COMMAND:
        return _der(0x30, _HASH + counter + (gt if rnd.random() < 0.7 else b""))
    return _outcome(rnd, big)


_DLMS_YEARS: Final = (0, 1, 1970, 9999, 10000, 0xFFFE, 0xFFFF)
_DLMS_DEVIATIONS: Final = (-0x8000, -0x7FFF, -720, 0, 720, 0x7FFF)


def _extreme_dlms(rnd: random.Random) -> gbcs.DlmsDateTime:
    def byte(*likely: int) -> int:
        return rnd.choice(likely) if rnd.random() < 0.8 else rnd.randrange(256)

    return gbcs.DlmsDateTime(
        year=rnd.choice(_DLMS_YEARS),
        month=byte(1, 12, 0, 13, 0xFF),
        day=byte(1, 31, 0, 32, 0xFF),
        day_of_week=byte(1, 7, 0xFF),
        hour=byte(0, 23, 24, 0xFF),
        minute=byte(0, 59, 60, 0xFF),
        second=byte(0, 59, 60, 0xFF),
        hundredths=byte(0, 99, 0xFF),
        deviation=rnd.choice(_DLMS_DEVIATIONS),
        clock_status=byte(0, 0xFF),
    )


# -- the harness ------------------------------------------------------------------------

Strategy = Callable[[random.Random, Seed], bytes]


class Harness:
    """The seeds, a trust store, a signing key and a log: everything one worker needs.

    Args:
        vectors: the folder of RTDS vectors and their keystore (``../shared/vectors``).
    """

    def __init__(self, vectors: Path) -> None:
        files = vector_files(vectors)
        if not files:
            raise FileNotFoundError(f"no RTDS vectors under {vectors}")
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.store = gbcs.TrustStore.from_directory(vectors / "keystore")
        self.store.add(
            gbcs.TrustedSigner(
                eui64=FUZZ_ORIGINATOR,
                role=gbcs.RemotePartyRole.SUPPLIER,
                public_key=self.key.public_key(),
                source="fuzz",
            )
        )
        frames = [
            Seed("frame", f.name, bytes.fromhex(f.read_text().strip())) for f in files
        ] + _built_frames(self.key)
        self.seeds: dict[Kind, list[Seed]] = {kind: [] for kind in KINDS}
        for seed in [*frames, *_envelopes(frames)]:
            self.seeds[seed.kind].append(seed)
        self._decoded = {seed.data: gbcs.decode_frame(seed.data) for seed in self.seeds["frame"]}
        self._null: TextIO = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
        self.log = JsonLog(self._null, level="debug")
        self._byte_level: dict[str, Strategy] = {
            "bit-flip": self._bit_flip,
            "byte-set": self._byte_set,
            "insert": self._insert,
            "delete": self._delete,
            "truncate": self._truncate,
            "splice": self._splice,
            "repeat": self._repeat,
            "interesting": self._interesting,
        }
        self.strategies: dict[Kind, dict[str, Strategy]] = {
            kind: dict(self._byte_level) for kind in KINDS
        }
        self.strategies["frame"].update(
            {
                "big-int": self._frame_big_int,
                "length-boost": self._length_boost,
                "dlms-time": self._frame_dlms_time,
                "oversize": self._frame_oversize,
            }
        )
        for kind in ("gbcs", "dcc-alert", "inventory"):
            self.strategies[kind].update(
                {
                    "cbor-value": self._cbor_value,
                    "cbor-key": self._cbor_key,
                    "self-describe": self._self_describe,
                    "oversize": self._envelope_oversize,
                }
            )
        self.strategies["gbcs"]["frame-inside"] = self._gbcs_frame_inside

    def close(self) -> None:
        """Close the log's stream."""
        self._null.close()

    # -- generation --------------------------------------------------------------------

    def generate(self, rnd: random.Random) -> tuple[Kind, str, bytes]:
        """A mutated input: (kind, strategy name, bytes).

        One input in seven gets a byte-level mutation on top of its strategy's.
        """
        kind: Kind = rnd.choice(KINDS)
        seed = rnd.choice(self.seeds[kind])
        name, strategy = rnd.choice(list(self.strategies[kind].items()))
        data = strategy(rnd, seed)
        if rnd.random() < 1 / 7:
            more = rnd.choice(list(self._byte_level.values()))
            data = more(rnd, seed._replace(data=data))
        return kind, name, data

    @staticmethod
    def _bit_flip(rnd: random.Random, seed: Seed) -> bytes:
        data = bytearray(seed.data)
        for _ in range(rnd.randrange(1, 9)):
            if data:
                data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
        return bytes(data)

    @staticmethod
    def _byte_set(rnd: random.Random, seed: Seed) -> bytes:
        data = bytearray(seed.data)
        for _ in range(rnd.randrange(1, 5)):
            if data:
                data[rnd.randrange(len(data))] = rnd.randrange(256)
        return bytes(data)

    @staticmethod
    def _insert(rnd: random.Random, seed: Seed) -> bytes:
        at = rnd.randrange(len(seed.data) + 1)
        return seed.data[:at] + rnd.randbytes(rnd.randrange(1, 17)) + seed.data[at:]

    @staticmethod
    def _delete(rnd: random.Random, seed: Seed) -> bytes:
        at = rnd.randrange(len(seed.data) + 1)
        return seed.data[:at] + seed.data[at + rnd.randrange(1, 17) :]

    @staticmethod
    def _truncate(rnd: random.Random, seed: Seed) -> bytes:
        return seed.data[: rnd.randrange(len(seed.data) + 1)]

    def _splice(self, rnd: random.Random, seed: Seed) -> bytes:
        other = rnd.choice(self.seeds[rnd.choice(KINDS)]).data
        return seed.data[: rnd.randrange(len(seed.data) + 1)] + other[rnd.randrange(len(other)) :]

    @staticmethod
    def _repeat(rnd: random.Random, seed: Seed) -> bytes:
        at = rnd.randrange(len(seed.data) + 1)
        chunk = seed.data[at : at + rnd.randrange(1, 33)]
        return seed.data[:at] + chunk * rnd.randrange(2, 50) + seed.data[at:]

    @staticmethod
    def _interesting(rnd: random.Random, seed: Seed) -> bytes:
        # Bytes that mean "long length", "tag", "break" ... in BER, DER, DLMS and CBOR.
        values = (
            0x00,
            0x7F,
            0x80,
            0x81,
            0x82,
            0x84,
            0x85,
            0xFF,
            0x1B,
            0x5B,
            0x9B,
            0xBB,
            0xDB,
            0x5F,
            0x9F,
            0xBF,
            0xC2,
            0xC4,
            0xF9,
            0xFB,
            0x02,
            0x30,
            0x0C,
            0xDF,
        )
        data = bytearray(seed.data)
        for _ in range(rnd.randrange(1, 4)):
            if data:
                data[rnd.randrange(len(data))] = rnd.choice(values)
        return bytes(data)

    def _reencode(
        self, rnd: random.Random, seed: Seed, **changes: Any
    ) -> tuple[gbcs.Frame, Callable[[bytes], bytes]] | None:
        frame = self._decoded.get(seed.data)
        if frame is None:
            return None
        header = msgspec.structs.replace(frame.header, **changes)
        # Sign as the fuzz originator most of the time, so that the frame verifies and
        # everything downstream of a valid signature sees the damage.
        signed = rnd.random() < 0.7
        if signed:
            header = msgspec.structs.replace(header, originator=FUZZ_ORIGINATOR)

        def build(payload: bytes) -> bytes:
            return gbcs.encode_frame(
                header,
                payload,
                signer=self.key if signed else None,
                signature_field=frame.signature_field or signed,
                mac_header=frame.mac_header,
            )

        return frame, build

    def _frame_big_int(self, rnd: random.Random, seed: Seed) -> bytes:
        code = rnd.choice(
            (gbcs.MessageCode.CS06_ACTIVATE_FIRMWARE, gbcs.MessageCode.CS06_FUTURE_DATED_ALERT)
        )
        made = self._reencode(rnd, seed, message_code=int(code))
        if made is None:
            return seed.data
        frame, build = made
        return build(_damaged_payload(rnd, code, frame.header.cra_flag))

    def _frame_dlms_time(self, rnd: random.Random, seed: Seed) -> bytes:
        made = self._reencode(rnd, seed, date_time=_extreme_dlms(rnd))
        if made is None:
            return seed.data
        frame, build = made
        payload = frame.payload
        if isinstance(payload, gbcs.PowerRestorationAlert):
            payload = msgspec.structs.replace(
                payload,
                alert_time=_extreme_dlms(rnd),
                body_times=tuple(_extreme_dlms(rnd) for _ in range(rnd.randrange(4))),
            )
        return build(gbcs.encode_payload(payload))

    def _frame_oversize(self, rnd: random.Random, seed: Seed) -> bytes:
        made = self._reencode(rnd, seed)
        if made is None:
            return seed.data
        frame, build = made
        size = rnd.choice((DEFAULT_MAX_PAYLOAD, 2 * DEFAULT_MAX_PAYLOAD))
        return build(frame.raw_payload + rnd.randbytes(16) * (size // 16))

    @staticmethod
    def _length_boost(rnd: random.Random, seed: Seed) -> bytes:
        at = rnd.randrange(len(seed.data) + 1)
        boost = rnd.choice(
            (
                b"\x80",
                b"\x81\xff",
                b"\x82\xff\xff",
                b"\x83\xff\xff\xff",
                b"\x84\xff\xff\xff\xff",
                b"\x84\x7f\xff\xff\xff",
                b"\x85\x01\x00\x00\x00\x00",
                b"\x88" + b"\xff" * 8,
            )
        )
        end = at + rnd.randrange(0, 4)  # replace what was there, or insert
        return seed.data[:at] + boost + seed.data[end:]

    def _cbor_value(self, rnd: random.Random, seed: Seed) -> bytes:
        assert seed.fields is not None
        items = [(cbor2.dumps(key), cbor2.dumps(value)) for key, value in seed.fields.items()]
        hostile = _hostile_cbor(rnd)
        if rnd.random() < 0.8 and items:
            at = rnd.randrange(len(items))
            items[at] = (items[at][0], hostile)
        else:
            items.append((_text(rnd.choice(("extra", "v", "kind"))), hostile))
        return _cbor_map(items)

    def _cbor_key(self, rnd: random.Random, seed: Seed) -> bytes:
        assert seed.fields is not None
        items = [(cbor2.dumps(key), cbor2.dumps(value)) for key, value in seed.fields.items()]
        key = rnd.choice(
            (b"\x01", b"\x41v", b"\xc2\x41\x01", b"\x80", b"\x62\xc3\x28", b"\x78\x40" + b"k" * 64)
        )
        if rnd.random() < 0.5 and items:
            items.append(items[rnd.randrange(len(items))])  # a duplicate key
        else:
            items.insert(rnd.randrange(len(items) + 1), (key, b"\x00"))
        return _cbor_map(items)

    @staticmethod
    def _self_describe(rnd: random.Random, seed: Seed) -> bytes:
        prefix = rnd.choice(
            (
                b"\xd9\xd9\xf7",
                b"\xd9\xd9\xf7" * 2,
                b"\xda\x00\x00\xd9\xf7",
                b"\xdb" + bytes(6) + b"\xd9\xf7",
            )
        )
        return prefix + seed.data

    @staticmethod
    def _envelope_oversize(rnd: random.Random, seed: Seed) -> bytes:
        size = DEFAULT_MAX_PAYLOAD + rnd.choice((1, 1000, DEFAULT_MAX_PAYLOAD))
        if rnd.random() < 0.5:
            return seed.data + bytes(size - len(seed.data))
        assert seed.fields is not None
        items = [(cbor2.dumps(key), cbor2.dumps(value)) for key, value in seed.fields.items()]
        return _cbor_map([*items, (_text("pad"), _head(2, size) + bytes(size))])

    def _gbcs_frame_inside(self, rnd: random.Random, seed: Seed) -> bytes:
        # A well-formed envelope whose frame is a mutated one.
        assert seed.fields is not None
        frame_seed = rnd.choice(self.seeds["frame"])
        strategy = rnd.choice(list(self.strategies["frame"].values()))
        fields = dict(seed.fields, frame=strategy(rnd, frame_seed))
        return cbor2.dumps(fields)

    # -- the check ---------------------------------------------------------------------

    def check(self, kind: Kind, data: bytes) -> str:
        """Run ``data`` through every reader of its kind; the outcome's label.

        ``ok`` when it was read, ``gbcs:<reason>`` or ``wire:<reason>`` when refused with
        the package's own error. Anything else raised escapes: that is a finding.
        """
        if kind == "frame":
            return self._check_frame(data)
        label = ""
        for decode, own in (
            (decode_gbcs, "gbcs"),
            (decode_dcc_alert, "dcc-alert"),
            (decode_inventory, "inventory"),
        ):
            try:
                envelope = decode(data)
            except WireError as exc:
                self.log.info("fuzz.rejected", reason=exc.reason, field=exc.field, detail=str(exc))
                outcome = f"wire:{exc.reason}"
            else:
                self.log.info("fuzz.read", envelope=envelope)
                outcome = "ok"
                if isinstance(envelope, GbcsEnvelope):
                    outcome = f"ok+{self._check_frame(envelope.frame)}"
            if own == kind:
                label = outcome
        return label

    def _check_frame(self, data: bytes) -> str:
        try:
            frame = gbcs.decode_frame(data)
        except gbcs.GbcsError as exc:
            self.log.info("fuzz.rejected", reason=exc.reason, offset=exc.offset, detail=str(exc))
            return f"gbcs:{exc.reason}"
        verification = gbcs.verify_frame(frame, self.store)
        json.dumps(render_frame(frame, verification), indent=2)  # as poa-gateway decode
        self.log.info("fuzz.frame", frame=frame, status=verification.status)
        return "ok"


class Finding(NamedTuple):
    """An input that raised an exception other than the packages' own."""

    kind: Kind
    strategy: str
    error: str
    data: bytes


class Tally(NamedTuple):
    """What a run of the campaign found: outcomes by label, inputs by strategy, the
    per-input times (when timed) and the first findings."""

    outcomes: Counter[str]
    strategies: Counter[str]
    times_ns: array[int]
    retimed: int
    untyped: int
    findings: list[Finding]


UNTYPED: Final = "UNTYPED"


def run(
    harness: Harness,
    rnd: random.Random,
    count: int,
    *,
    clock: Callable[[], int] | None = None,
    budget_ns: int = 0,
    max_findings: int = 20,
) -> Tally:
    """Generate and check ``count`` inputs.

    With a ``clock`` (``time.perf_counter_ns``) each check is timed; one over
    ``budget_ns`` is run twice more and keeps its fastest time, so that a pause of the
    machine is not charged to the input. Without one nothing is timed (tests).
    """
    tally = Tally(Counter(), Counter(), array("q"), 0, 0, [])
    retimed = untyped = 0
    for _ in range(count):
        kind, strategy, data = harness.generate(rnd)
        tally.strategies[f"{kind}/{strategy}"] += 1
        start = clock() if clock is not None else 0
        try:
            label = harness.check(kind, data)
        except Exception as exc:  # noqa: BLE001 - the finding the campaign looks for
            label = UNTYPED
            untyped += 1
            if len(tally.findings) < max_findings:
                tally.findings.append(Finding(kind, strategy, describe(exc), data))
        tally.outcomes[label] += 1
        if clock is None:
            continue
        elapsed = clock() - start
        if elapsed > budget_ns and label != UNTYPED:
            retimed += 1
            for _ in range(2):
                start = clock()
                harness.check(kind, data)
                elapsed = min(elapsed, clock() - start)
        tally.times_ns.append(elapsed)
    return tally._replace(retimed=retimed, untyped=untyped)


def describe(exc: BaseException) -> str:
    """``Type: message``, bounded; never raises (a message may hold a huge integer)."""
    try:
        text = str(exc)
    except Exception:  # noqa: BLE001 - the description of a finding must not fail
        text = "<message cannot be printed>"
    text = text if len(text) <= 300 else text[:297] + "..."
    return f"{type(exc).__name__}: {text}"


# -- state databases for status and explain --------------------------------------------

EXPLAIN_SUBJECTS: Final = (
    "ad1-0000",
    "ad1-0007",
    "00-DB-12-34-56-78-90-B1",
    "00DB1234567890A0",
    "",
    "\x00",
    "\udc80",
    "ad1-" + "9" * 5000,
    "00-DB-12-34-56-78-90-B1-FF",
    "x" * 100_000,
)
"""Subjects for ``poa-gateway explain``: alert ids, EUI-64s, and text that is neither."""

_PAGE: Final = 4096  # SQLite's default page size


def state_file(home: Path) -> Path:
    """The state database of a home made by :func:`make_state_home`."""
    return home / "var" / "state.sqlite"


def make_state_home(home: Path) -> Path:
    """A configuration file and a state database holding activations and decisions
    (several pages of each); returns the configuration file."""
    (home / "var").mkdir(parents=True)
    config = home / "gateway.toml"
    config.write_text('[paths]\nstate_dir = "var"\n')
    asyncio.run(_fill(state_file(home)))
    return config


async def _fill(path: Path) -> None:
    store = Store.open(path)
    try:
        for i in range(300):
            activation = Activation(
                esme=ESME[:7] + bytes((i % 256,)),
                chf=CHF,
                originator=FUZZ_ORIGINATOR,
                counter=i + 1,
                start_ms=T0 + i * 60_000,
                end_ms=T0 + i * 60_000 + 1_800_000,
                future_dated=i % 2 == 0,
                seen_at=T0,
            )
            store.put_activation(activation)
            store.put_decision(
                AlertDecision(
                    alert_id=f"ad1-{i:04d}",
                    chf=CHF,
                    suppressed=True,
                    reason=AlertReason.INSIDE_WINDOW,
                    judged_at=T0 + i,
                    decided_at=T0 + i + 1,
                    activation=activation,
                ),
                effect_done=True,
            )
        await store.flush()
    finally:
        store.close()


def damage(pristine: bytes, rnd: random.Random) -> bytes:
    """A damaged copy of a database file: a page of garbage or zeros, flipped bits, a
    truncation, a mangled header, or nothing left of it."""
    data = bytearray(pristine)
    how = rnd.randrange(6)
    if how == 0 and len(data) >= _PAGE:
        page = rnd.randrange(len(data) // _PAGE)
        fill = rnd.randbytes(_PAGE) if rnd.random() < 0.7 else bytes(_PAGE)
        data[page * _PAGE : (page + 1) * _PAGE] = fill
    elif how == 1:
        for _ in range(rnd.randrange(1, 64)):
            data[rnd.randrange(len(data))] ^= 1 << rnd.randrange(8)
    elif how == 2:
        del data[rnd.randrange(len(data)) :]
    elif how == 3:
        data[: rnd.randrange(1, 101)] = rnd.randbytes(100)
    elif how == 4:
        data = bytearray(rnd.randbytes(rnd.choice((0, 1, 100, len(pristine)))))
    else:  # a valid header and garbage behind it
        data[100:] = rnd.randbytes(len(data) - 100)
    return bytes(data)


def write_state(home: Path, data: bytes) -> None:
    """Replace the state database with ``data``, and drop SQLite's side files (a WAL
    left by an earlier run would be read together with the new bytes)."""
    path = state_file(home)
    for side in ("-wal", "-shm", "-journal"):
        path.with_name(path.name + side).unlink(missing_ok=True)
    path.write_bytes(data)
