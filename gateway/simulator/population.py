"""The simulated estate: premises, and the gateway's home written for them.

Theory of operation
-------------------
A premises is one electricity meter (ESME) and the Communications Hub (CHF) on whose
HAN it sits. :func:`build_population` draws them from a seeded generator, so the same
seed gives the same estate, EUI-64 for EUI-64:

- a share are Landis+Gyr SMETS2 ESMEs on the GUID list: the only ones MP102B covers
  (``listed``);
- a share are SMETS2 ESMEs of other makes, a share are SMETS1, and the rest are
  Landis+Gyr SMETS2 ESMEs that are *not* on the GUID list. Their firmware reboots may
  also cut the hub's power, but their AD1s must reach the DNOs;
- a share of premises have a meter clock a few minutes off (ahead or behind), which
  moves the ``raised_at`` of their AD1s and the true time at which a future-dated
  activation runs;
- premises are grouped in areas (a substation's feeders), so that a storm can take
  out a cluster of neighbouring hubs at once;
- for a share of premises the inventory names the Supplier as the meter's registered
  import supplier (``supplier_id``); for the rest it names none.

The remote parties (:data:`PARTIES`) are the Supplier that runs the rollout, a second
Supplier registered for none of the meters, a Network Operator, the ACB and an Other
User: all trusted, only the first may activate firmware on the meters it is registered
for (and on those with no supplier named). The attacker is trusted by no one.

:func:`write_gateway_home` is the one function here with I/O: it writes what a gateway
needs to serve this estate (the remote parties' certificates in the trust store, the
GUID list, the inventory and a configuration file whose durations are divided by the
time scale). :class:`Credentials` holds the signing identities the simulator needs,
keys generated on the spot.
"""

from __future__ import annotations

import enum
import hashlib
import json
import random
from collections.abc import Iterable
from pathlib import Path
from typing import Final

import msgspec

from gateway import pki
from gateway.config import format_duration
from gateway.core.devices import DeviceRecord, DeviceStatus, DeviceType
from gateway.core.mpan import check_digit
from gateway.guids import write_guid_list
from gateway.state.inventory import Inventory
from gateway.transport.embedded_broker import free_port
from gbcs import RemotePartyRole

from .windows import Signer

__all__ = [
    "ACB",
    "AREA_SIZE",
    "ATTACKER",
    "LANDIS_GYR",
    "NETWORK_OPERATOR",
    "OTHER_SUPPLIER",
    "OTHER_USER",
    "PARTIES",
    "SUPPLIER",
    "BrokerAddress",
    "Category",
    "Credentials",
    "GatewayHome",
    "Population",
    "Premises",
    "SuppressionTimes",
    "build_population",
    "originator",
    "write_gateway_home",
]

MINUTE_MS: Final = 60_000
SECOND_MS: Final = 1_000

LANDIS_GYR: Final = "Landis+Gyr"
"""The manufacturer MP102B covers (and the gateway's default list)."""

# Makes seen on GB smart meters; which ones is immaterial to the rules, only that they
# are not Landis+Gyr.
OTHER_MAKES: Final = ("Secure Meters", "EDMI", "Aclara", "Honeywell Elster", "Itron")
SMETS1_MAKES: Final = (LANDIS_GYR, "Secure Meters", "Aclara", "Elster")
# The two SMETS2 Communications Hub makers (north and central/south regions).
CHF_MAKES: Final = ("Toshiba", "WNC")

AREA_SIZE: Final = 50
"""Premises per area: the unit a storm takes out."""

SUPPLIER: Final = bytes.fromhex("90B3D51F30010000")
"""EUI-64 of the simulated Supplier, the trusted remote party that sends CS06."""
ATTACKER: Final = bytes.fromhex("90B3D51F30019999")
"""EUI-64 of the attacker: a remote party the trust store does not know."""
OTHER_SUPPLIER: Final = bytes.fromhex("90B3D51F30020000")
"""EUI-64 of a second Supplier: trusted, but registered for none of the meters."""
NETWORK_OPERATOR: Final = bytes.fromhex("90B3D51F30030000")
"""EUI-64 of a Network Operator: trusted, but its role may not activate firmware."""
ACB: Final = bytes.fromhex("90B3D51F30040000")
"""EUI-64 of the Access Control Broker (the DCC): trusted, not a Supplier."""
OTHER_USER: Final = bytes.fromhex("90B3D51F30080000")
"""EUI-64 of an Other User: trusted, not a Supplier."""

PARTIES: Final[dict[Signer, tuple[bytes, RemotePartyRole]]] = {
    "supplier": (SUPPLIER, RemotePartyRole.SUPPLIER),
    "other-supplier": (OTHER_SUPPLIER, RemotePartyRole.SUPPLIER),
    "network-operator": (NETWORK_OPERATOR, RemotePartyRole.NETWORK_OPERATOR),
    "acb": (ACB, RemotePartyRole.ACCESS_CONTROL_BROKER),
    "other-user": (OTHER_USER, RemotePartyRole.OTHER_USER),
}
"""The trusted remote parties (in the trust store as ``<signer>.pem``): EUI-64 and role."""


def originator(signer: Signer) -> bytes:
    """The EUI-64 a CS06 by ``signer`` names as its originator (an impostor claims to be
    the Supplier)."""
    if signer == "impostor":
        return SUPPLIER
    if signer == "untrusted":
        return ATTACKER
    return PARTIES[signer][0]


_ESME_OUI: Final = 0x00DB12
_CHF_OUI: Final = 0x001C2A


class Category(enum.StrEnum):
    """What a premises' ESME is, as far as MP102B is concerned."""

    LISTED = "listed"  # Landis+Gyr SMETS2 on the GUID list: covered
    LG_NOT_LISTED = "lg-not-on-guid-list"  # Landis+Gyr SMETS2, not on the list
    OTHER_MAKE = "other-make"  # SMETS2 of another manufacturer
    SMETS1 = "smets1"


class Premises(msgspec.Struct, frozen=True, kw_only=True):
    """One premises: an ESME and the CHF on whose HAN it sits."""

    index: int
    esme: bytes
    chf: bytes
    manufacturer: str  # of the ESME
    smets: int  # 1 or 2
    on_guid_list: bool
    category: Category
    clock_offset_ms: int
    """Meter (and hub) clock minus true time, in simulated ms: positive runs ahead."""
    area: int
    chf_manufacturer: str
    supplier_id: bytes | None = None
    """The registered import supplier the inventory names for the ESME (None: none)."""

    @property
    def covered(self) -> bool:
        """True when MP102B covers this ESME (a CS06 to it should open a window)."""
        return self.category is Category.LISTED

    @property
    def mpan(self) -> str | None:
        """The meter point's MPAN core in the inventory: spread over the 14 GB areas by
        index; every 20th premises has none (a gap the reports count, not drop)."""
        if self.index % 20 == 19:
            return None
        first12 = f"{10 + self.index % 14:02d}{self.index:010d}"
        return f"{first12}{check_digit(first12)}"


class Population(msgspec.Struct, frozen=True, kw_only=True):
    """The simulated estate, in a fixed order (``premises[i].index == i``)."""

    seed: int
    premises: tuple[Premises, ...]
    max_clock_offset_ms: int
    """The largest ``abs(clock_offset_ms)`` the population may hold (its bound, not
    necessarily reached): the gateway's skew tolerance must cover it."""

    def __len__(self) -> int:
        return len(self.premises)

    def counts(self) -> dict[str, int]:
        """Premises per :class:`Category`, plus ``skewed-clock`` and
        ``registered-supplier``."""
        out = {c.value: 0 for c in Category}
        for p in self.premises:
            out[p.category.value] += 1
        out["skewed-clock"] = sum(1 for p in self.premises if p.clock_offset_ms)
        out["registered-supplier"] = sum(1 for p in self.premises if p.supplier_id is not None)
        return out

    def guid_list(self) -> list[int]:
        """The GUID list: EUI-64s (as integers) of every ESME on it."""
        return [int.from_bytes(p.esme, "big") for p in self.premises if p.on_guid_list]

    def inventory_records(self) -> list[DeviceRecord]:
        """The Smart Metering Inventory: each premises' CHF, then its ESME."""
        out: list[DeviceRecord] = []
        for p in self.premises:
            out.append(
                DeviceRecord(
                    device_id=p.chf,
                    device_type=DeviceType.CHF,
                    smets=p.smets,
                    manufacturer=p.chf_manufacturer,
                    status=DeviceStatus.COMMISSIONED,
                )
            )
            out.append(
                DeviceRecord(
                    device_id=p.esme,
                    device_type=DeviceType.ESME,
                    smets=p.smets,
                    manufacturer=p.manufacturer,
                    status=DeviceStatus.COMMISSIONED,
                    chf_id=p.chf,
                    model=f"SIM-{p.category.value}",
                    supplier_id=p.supplier_id,
                    mpan=p.mpan,
                )
            )
        return out


def _share(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value}")
    return value


def build_population(
    n: int,
    *,
    seed: int,
    share_listed: float = 0.6,
    share_other_makes: float = 0.25,
    share_smets1: float = 0.1,
    share_skewed_clock: float = 0.1,
    max_clock_offset_ms: int = 4 * MINUTE_MS,
    share_registered: float = 0.5,
) -> Population:
    """``n`` premises drawn from ``seed``; the same arguments give the same population.

    Shares are of ``n`` (rounded); what ``share_listed``, ``share_other_makes`` and
    ``share_smets1`` leave over are Landis+Gyr SMETS2 ESMEs not on the GUID list. A
    skewed clock is off by 30 seconds to ``max_clock_offset_ms``, ahead or behind. For
    ``share_registered`` of the premises the inventory names :data:`SUPPLIER` as the
    meter's registered import supplier.

    Raises:
        ValueError: a share outside 0..1, shares adding up to more than 1, or ``n < 1``.
    """
    if n < 1:
        raise ValueError(f"a population needs at least one premises, got {n}")
    shares = (
        _share("share_listed", share_listed),
        _share("share_other_makes", share_other_makes),
        _share("share_smets1", share_smets1),
    )
    if sum(shares) > 1.0 + 1e-9:
        raise ValueError(f"shares of listed, other makes and SMETS1 add up to {sum(shares)} > 1")
    _share("share_skewed_clock", share_skewed_clock)
    _share("share_registered", share_registered)
    if max_clock_offset_ms < 30 * SECOND_MS:
        raise ValueError("max_clock_offset_ms must be at least 30 seconds")
    rng = random.Random(seed)  # noqa: S311 - a simulation, not cryptography

    n_listed, n_other, n_smets1 = (round(n * s) for s in shares)
    n_smets1 = min(n_smets1, n - n_listed - n_other)
    categories = (
        [Category.LISTED] * n_listed
        + [Category.OTHER_MAKE] * n_other
        + [Category.SMETS1] * n_smets1
        + [Category.LG_NOT_LISTED] * (n - n_listed - n_other - n_smets1)
    )
    rng.shuffle(categories)
    skewed = set(rng.sample(range(n), round(n * share_skewed_clock)))

    used: set[bytes] = set()

    def eui(oui: int) -> bytes:
        while True:
            value = (oui << 40) | rng.getrandbits(40)
            candidate = value.to_bytes(8, "big")
            if candidate not in used:
                used.add(candidate)
                return candidate

    premises = []
    for i, category in enumerate(categories):
        if category is Category.OTHER_MAKE:
            maker, smets = rng.choice(OTHER_MAKES), 2
        elif category is Category.SMETS1:
            maker, smets = rng.choice(SMETS1_MAKES), 1
        else:
            maker, smets = LANDIS_GYR, 2
        offset = 0
        if i in skewed:
            # Whole seconds: meter clocks tick in seconds.
            offset = rng.randint(30, max_clock_offset_ms // SECOND_MS) * SECOND_MS
            offset *= rng.choice((-1, 1))
        area = i // AREA_SIZE
        premises.append(
            Premises(
                index=i,
                esme=eui(_ESME_OUI),
                chf=eui(_CHF_OUI),
                manufacturer=maker,
                smets=smets,
                on_guid_list=category is Category.LISTED,
                category=category,
                clock_offset_ms=offset,
                area=area,
                chf_manufacturer=CHF_MAKES[area % len(CHF_MAKES)],
            )
        )
    # Drawn last, so that the rest of the estate is what the same seed always gave.
    registered = set(rng.sample(range(n), round(n * share_registered)))
    premises = [
        msgspec.structs.replace(p, supplier_id=SUPPLIER) if p.index in registered else p
        for p in premises
    ]
    return Population(seed=seed, premises=tuple(premises), max_clock_offset_ms=max_clock_offset_ms)


# -- the gateway's home ---------------------------------------------------------------------


class BrokerAddress(msgspec.Struct, frozen=True):
    """Where the broker listens, and the MQTT version to speak to it (5, or 4 = 3.1.1)."""

    host: str = "127.0.0.1"
    port: int = 1883
    protocol: int = 5

    @classmethod
    def parse(cls, url: str, *, protocol: int = 5) -> BrokerAddress:
        """``mqtt://HOST:PORT`` (or ``HOST:PORT``; the port defaults to 1883).

        Raises:
            ValueError: anything else, with the text quoted.
        """
        rest = url.removeprefix("mqtt://")
        if "/" in rest or not rest:
            raise ValueError(f"not a broker address: {url!r} (expected mqtt://HOST:PORT)")
        host, _, port_text = rest.rpartition(":") if ":" in rest else (rest, "", "1883")
        try:
            port = int(port_text)
        except ValueError:
            raise ValueError(f"not a broker address: {url!r} (bad port {port_text!r})") from None
        if not host or not 1 <= port <= 65_535:
            raise ValueError(f"not a broker address: {url!r} (expected mqtt://HOST:PORT)")
        return cls(host.strip("[]"), port, protocol)

    @property
    def url(self) -> str:
        """``mqtt://HOST:PORT``."""
        return f"mqtt://{self.host}:{self.port}"


class SuppressionTimes(msgspec.Struct, frozen=True, kw_only=True):
    """MP102B's durations in *simulated* milliseconds (the gateway's are these / scale)."""

    window_ms: int = 30 * MINUTE_MS
    lead_ms: int = 2 * MINUTE_MS
    skew_ms: int = 5 * MINUTE_MS
    dedupe_ms: int = 120 * MINUTE_MS
    retain_ms: int = 120 * MINUTE_MS
    report_period_ms: int = 60 * MINUTE_MS
    near_miss_ms: int = 15 * MINUTE_MS


class Credentials:
    """The signing identities of a run: the trusted remote parties (:data:`PARTIES`), the
    attacker (never trusted), and the ESMEs that send responses and alerts."""

    def __init__(
        self,
        parties: dict[Signer, pki.Identity],
        attacker: pki.Identity,
        devices: dict[bytes, pki.Identity],
    ) -> None:
        self.parties = parties
        self.attacker = attacker
        self.devices = devices

    @property
    def supplier(self) -> pki.Identity:
        """The Supplier that runs the rollout."""
        return self.parties["supplier"]

    @classmethod
    def generate(cls, devices: Iterable[bytes] = ()) -> Credentials:
        """Fresh P-256 keys and certificates (never stored anywhere but the trust store)."""
        return cls(
            {signer: pki.remote_party(eui, role) for signer, (eui, role) in PARTIES.items()},
            pki.remote_party(ATTACKER),
            {eui: pki.device(eui) for eui in sorted(set(devices))},
        )

    def signing(self, signer: Signer) -> tuple[bytes, pki.Identity]:
        """The originator a CS06 by ``signer`` names, and the identity whose key signs it:
        an impostor names the Supplier and signs with the attacker's key."""
        identity = self.parties.get(signer, self.attacker)
        return originator(signer), identity

    def trust_files(self, *, devices: bool = True) -> dict[str, bytes]:
        """The trust store's certificates by file name: every trusted party (never the
        attacker) and, with ``devices``, every ESME."""
        files = {f"{signer}.pem": i.certificate_pem for signer, i in self.parties.items()}
        if not devices:
            return files
        files.update(
            (f"esme-{eui.hex()}.pem", i.certificate_pem) for eui, i in self.devices.items()
        )
        return files


class GatewayHome(msgspec.Struct, frozen=True, kw_only=True):
    """A gateway's state folder, written by :func:`write_gateway_home`."""

    root: Path
    config: Path
    log: Path
    outbox: Path
    metrics_url: str
    client_id: str
    times: SuppressionTimes
    """The durations the gateway was configured with, in simulated ms (before scaling)."""
    scale: int


def _scaled(ms: int, scale: int) -> str:
    # At least 1 ms: a zero duration would switch a rule off rather than shrink it.
    return format_duration(max(1, round(ms / scale)))


def write_gateway_home(
    population: Population,
    root: Path,
    *,
    credentials: Credentials,
    broker: BrokerAddress,
    scale: int,
    times: SuppressionTimes | None = None,
    window_override_ms: int | None = None,
    empty_guid_list: bool = False,
    metrics_port: int | None = None,
    client_id: str = "poa-gateway-sim",
    device_certificates: bool = True,
    imported_at_ms: int = 0,
) -> GatewayHome:
    """Write the trust store, GUID list, inventory and ``gateway.toml`` under ``root``.

    Every duration of ``[suppression]`` and ``[reports]`` is ``times`` divided by
    ``scale``, so a 30-minute window lasts 30 seconds at scale 60. The skew tolerance is
    raised when needed to cover the population's largest clock offset (else a meter
    running ahead would have its AD1 judged at arrival rather than at ``raised_at``).
    ``window_override_ms`` (simulated) and ``empty_guid_list`` misconfigure the gateway
    on purpose, to show that the scorecard catches it. Metrics are served on
    ``metrics_port`` (a free port when None), for the scorecard's refusal counts.
    """
    if scale < 1:
        raise ValueError(f"scale must be at least 1, got {scale}")
    times = times or SuppressionTimes()
    times = msgspec.structs.replace(
        times,
        skew_ms=max(times.skew_ms, population.max_clock_offset_ms + MINUTE_MS),
        window_ms=window_override_ms if window_override_ms is not None else times.window_ms,
    )
    root = root.resolve()
    trust = root / "trust"
    trust.mkdir(parents=True, exist_ok=True)
    for name, pem in credentials.trust_files(devices=device_certificates).items():
        (trust / name).write_bytes(pem)
    guids = [] if empty_guid_list else population.guid_list()
    write_guid_list(
        root / "guid-list.bin",
        guids,
        # There is no source sheet: the digest of the list itself stands in for it (the
        # reports' HEADER names it).
        sha256=hashlib.sha256(b"".join(g.to_bytes(8, "big") for g in sorted(guids))).digest(),
        imported_at_ms=imported_at_ms,
    )
    with Inventory.open(root / "inventory.sqlite") as inventory:
        inventory.upsert_many(population.inventory_records(), imported_at_ms)
    port = metrics_port if metrics_port is not None else free_port()
    sections: dict[str, dict[str, object]] = {
        "broker": {
            "host": broker.host,
            "port": broker.port,
            "protocol": broker.protocol,
            "client_id": client_id,
            "reconnect_min": "100ms",
            "reconnect_max": "1s",
        },
        "suppression": {
            "window": _scaled(times.window_ms, scale),
            "lead": _scaled(times.lead_ms, scale),
            "skew": _scaled(times.skew_ms, scale),
            "dedupe": _scaled(times.dedupe_ms, scale),
            "retain": _scaled(times.retain_ms, scale),
        },
        "paths": {"state_dir": str(root)},
        "reports": {
            "period": _scaled(times.report_period_ms, scale),
            "near_miss": _scaled(times.near_miss_ms, scale),
        },
        "metrics": {"enabled": True, "host": "127.0.0.1", "port": port},
    }
    lines = [
        "# Written by poa-gateway simulate: durations are MP102B's divided by the time "
        f"scale ({scale}).",
    ]
    for section, values in sections.items():
        lines.append(f"\n[{section}]")
        lines.extend(f"{key} = {_toml_value(value)}" for key, value in values.items())
    config = root / "gateway.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return GatewayHome(
        root=root,
        config=config,
        log=root / "gateway.log",
        outbox=root / "outbox",
        metrics_url=f"http://127.0.0.1:{port}/metrics",
        client_id=client_id,
        times=times,
        scale=scale,
    )


def _toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    # JSON string escapes are valid TOML basic-string escapes.
    return json.dumps(str(value))
