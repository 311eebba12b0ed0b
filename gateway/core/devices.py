"""Pure device types shared by the inventory (SQLite) and the engine (sans-I/O)."""

from __future__ import annotations

import enum
from typing import Annotated

import msgspec

EUI64 = Annotated[bytes, msgspec.Meta(min_length=8, max_length=8)]


class DeviceType(enum.StrEnum):
    """Smart Metering Inventory device types (DUIS / WIRE.md ``device_type``)."""

    ESME = "ESME"
    GSME = "GSME"
    CHF = "CHF"
    GPF = "GPF"
    PPMID = "PPMID"
    HCALCS = "HCALCS"
    TYPE2 = "TYPE2"


class DeviceStatus(enum.StrEnum):
    """Smart Metering Inventory device status."""

    COMMISSIONED = "commissioned"
    INSTALLED_NOT_COMMISSIONED = "installed-not-commissioned"
    DECOMMISSIONED = "decommissioned"
    WITHDRAWN = "withdrawn"


class DeviceRecord(msgspec.Struct, frozen=True):
    """One device of the Smart Metering Inventory.

    ``chf_id`` is the CHF on whose HAN the device sits (None for a CHF itself).
    ``supplier_id`` is the remote party id (EUI-64) of the meter's registered import
    supplier, when the inventory names one: only that party may activate its firmware.
    None means not known, and then any Supplier may.
    ``mpan`` is the 13-digit MPAN core of the meter point (gateway/core/mpan.py), when
    the inventory names one: an ESME's normally, any device's allowed. The inventory
    checks it (digits, length, check digit) before storing it.
    """

    device_id: EUI64
    device_type: DeviceType
    smets: int
    manufacturer: str
    status: DeviceStatus
    chf_id: EUI64 | None = None
    model: str | None = None
    supplier_id: EUI64 | None = None
    mpan: str | None = None


def normalize_manufacturer(name: str) -> str:
    """Case- and space-insensitive key: "Landis + Gyr" and "LANDIS+GYR" are one maker."""
    return "".join(name.split()).casefold()
