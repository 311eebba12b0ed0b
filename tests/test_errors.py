"""One root error per package: every exception class the gateway defines derives from
GatewayError, and every one the codec defines from GbcsError."""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import pkgutil
from pathlib import Path
from types import ModuleType

import pytest

import gateway
import gbcs
from gateway.config import ConfigError, ConfigReason, load_config
from gateway.core.mpan import MpanCore, MpanError, MpanReason
from gateway.errors import GatewayError, StartupError, StartupReason
from gateway.guids import GuidList, GuidListError, GuidListReason
from gateway.guids_import import GuidRowReason, read_guid_list
from gateway.ha import LeaseLost, LossReason
from gateway.state.inventory import InvalidRowReason, Inventory, InventoryError, InventoryReason
from gateway.state.sqlite import Store, StoreError, StoreReason
from gateway.wire import WireError, WireReason, decode_gbcs
from gbcs import GbcsError, GbcsReason, TruncatedFrame


def modules(package: ModuleType) -> list[ModuleType]:
    found = [package]
    for info in pkgutil.walk_packages(package.__path__, package.__name__ + "."):
        found.append(importlib.import_module(info.name))
    return found


def exception_classes(package: ModuleType) -> list[type[BaseException]]:
    """Every exception class defined (not merely imported) in ``package``'s modules."""
    out: list[type[BaseException]] = []
    for module in modules(package):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == module.__name__:
                out.append(obj)
    return out


@pytest.mark.parametrize(
    ("package", "root"), [(gateway, GatewayError), (gbcs, GbcsError)], ids=["gateway", "gbcs"]
)
def test_every_exception_a_package_defines_derives_from_its_root(
    package: ModuleType, root: type[Exception]
) -> None:
    classes = exception_classes(package)
    assert root in classes
    strays = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes if not issubclass(c, root))
    assert strays == []


def test_the_gateway_walk_finds_the_errors_of_every_layer() -> None:
    # Guards the walk itself: a walk that found nothing would pass the test above.
    names = {c.__name__ for c in exception_classes(gateway)}
    assert {
        "ConfigError",
        "StoreError",
        "WireError",
        "GuidListError",
        "InventoryError",
        "ReportError",
        "StartupError",
        "Poisoned",
        "PublishRefused",
        "NotConnected",
        "ConnectionRefusedPermanently",
        "CliError",
        "SimulationError",
        "MpanError",
    } <= names


# -- reasons: one StrEnum per kind (issue 11, point 4) ----------------------------------
#
# A reason is a log field and a metric label: a public contract. Each kind of error
# takes its reason from one StrEnum, and the values below are pinned: renaming a member
# is free, changing a value is a breaking change for dashboards and alert rules.

REASON_VALUES: dict[type[enum.StrEnum], set[str]] = {
    GbcsReason: {
        "gbcs-error",
        "truncated",
        "bad-tag",
        "bad-length",
        "trailing-bytes",
        "bad-field",
        "bad-payload",
        "bad-time",
        "bad-signature-field",
        "bad-certificate",
        "bad-value",
    },
    WireReason: {
        "too-large",
        "bad-cbor",
        "tag-refused",
        "duplicate-key",
        "too-deep",
        "not-a-map",
        "unknown-field",
        "missing-field",
        "bad-field",
        "wrong-kind",
        "bad-version",
    },
    ConfigReason: {
        "unreadable",
        "bad-toml",
        "unknown-key",
        "wrong-type",
        "bad-duration",
        "out-of-range",
        "bad-topic",
        "bad-value",
    },
    StoreReason: {
        "cannot-open",
        "not-a-store",
        "unsupported-schema",
        "database-error",
        "corrupt-record",
        "invalid-value",
        "commit-failed",
        "closed",
        "fenced",
        "state-empty",
        "state-lost",
        "state-mismatch",
    },
    InventoryReason: {
        "cannot-open",
        "not-an-inventory",
        "unsupported-schema",
        "database-error",
        "invalid-record",
        "unreadable-file",
        "missing-column",
        "duplicate-column",
    },
    InvalidRowReason: {
        "bad-csv",
        "field-count",
        "missing-value",
        "bad-eui64",
        "unknown-device-type",
        "bad-smets",
        "unknown-status",
        "not-utf8",
        "bad-mpan",
    },
    GuidListReason: {
        "unreadable",
        "unsupported-format",
        "corrupt",
        "sheet-not-found",
        "no-header",
        "column-not-found",
        "no-guids",
        "invalid-rows",
        "not-a-guid-list",
        "unsupported-version",
        "truncated",
        "unsorted",
    },
    GuidRowReason: {"not-eui64", "number", "not-text", "empty-guid"},
    StartupReason: {
        "trust-missing",
        "trust-unreadable",
        "trust-empty",
        "client-id-conflict",
        "signing-key",
    },
    LossReason: {"taken", "deadline", "fenced", "stopping"},
    MpanReason: {"not-digits", "wrong-length", "bad-check-digit"},
}

# The gateway's errors that take a reason, and the enum it comes from.
REASON_OF: dict[type[GatewayError], type[enum.StrEnum]] = {
    ConfigError: ConfigReason,
    StoreError: StoreReason,
    InventoryError: InventoryReason,
    GuidListError: GuidListReason,
    WireError: WireReason,
    StartupError: StartupReason,
    LeaseLost: LossReason,
    MpanError: MpanReason,
}

# Errors that take a reason not yet typed by an enum of their own (none left).
UNTYPED_YET: set[str] = set()


@pytest.mark.parametrize("kind", list(REASON_VALUES), ids=lambda kind: kind.__name__)
def test_reason_codes_keep_their_string_values(kind: type[enum.StrEnum]) -> None:
    assert {member.value for member in kind} == REASON_VALUES[kind]


def test_a_reason_member_is_its_string_in_logs_and_labels() -> None:
    assert TruncatedFrame.reason == "truncated"
    assert TruncatedFrame.reason is GbcsReason.TRUNCATED
    assert f"{StoreReason.COMMIT_FAILED}" == "commit-failed"
    assert str(InvalidRowReason.BAD_EUI64) == "bad-eui64"
    assert json.dumps({"reason": ConfigReason.BAD_TOML}) == '{"reason": "bad-toml"}'


def test_every_gbcs_error_class_has_a_gbcs_reason_of_its_own() -> None:
    classes = [c for c in exception_classes(gbcs) if issubclass(c, GbcsError)]
    assert len(classes) > 1
    reasons = [c.reason for c in classes]
    assert all(type(reason) is GbcsReason for reason in reasons)
    assert sorted(reasons) == sorted(GbcsReason)  # each member used, by one class


def test_every_gateway_error_that_takes_a_reason_types_it_with_its_enum() -> None:
    # Annotations are strings here (PEP 563); the name is enough to tell the enum.
    takes_reason = {
        c: c.__init__.__annotations__["reason"]
        for c in exception_classes(gateway)
        if "reason" in getattr(c.__init__, "__annotations__", {})
    }
    typed = {c: name for c, name in takes_reason.items() if c.__name__ not in UNTYPED_YET}
    assert typed == {error: kind.__name__ for error, kind in REASON_OF.items()}
    assert {c.__name__ for c in takes_reason.keys() - typed.keys()} == UNTYPED_YET


def test_errors_raised_for_real_carry_members_of_their_enum(tmp_path: Path) -> None:
    raised: list[tuple[object, type[enum.StrEnum]]] = []

    with pytest.raises(GbcsError) as gbcs_error:
        gbcs.decode_frame(b"\xdf")
    raised.append((gbcs_error.value.reason, GbcsReason))

    with pytest.raises(WireError) as wire_error:
        decode_gbcs(b"\xff")
    raised.append((wire_error.value.reason, WireReason))

    with pytest.raises(ConfigError) as config_error:
        load_config(tmp_path / "missing.toml", env={})
    raised.append((config_error.value.reason, ConfigReason))

    (tmp_path / "state.db").write_bytes(b"")
    with pytest.raises(StoreError) as store_error:
        Store.open(tmp_path / "state.db")
    raised.append((store_error.value.reason, StoreReason))

    with pytest.raises(InventoryError) as inventory_error:
        Inventory.open(tmp_path / "missing.db", create=False)
    raised.append((inventory_error.value.reason, InventoryReason))

    with pytest.raises(GuidListError) as guid_error:
        GuidList.open(tmp_path / "missing.guids")
    raised.append((guid_error.value.reason, GuidListReason))

    rows = tmp_path / "inventory.csv"
    rows.write_text(
        "device_id,device_type,smets,manufacturer,status\nnonsense,ESME,2,Acme,commissioned\n",
        encoding="utf-8",
    )
    with Inventory.open(tmp_path / "inventory.db") as inventory:
        issues = inventory.import_csv(rows, 0).issues
    raised.extend((issue.reason, InvalidRowReason) for issue in issues)

    with pytest.raises(MpanError) as mpan_error:
        MpanCore.parse("1312345678900")
    raised.append((mpan_error.value.reason, MpanReason))

    guids = tmp_path / "guids.csv"
    guids.write_text("GUID\n00-DB-12-34-56-78-90-A1\nnonsense\n", encoding="utf-8")
    _, report = read_guid_list(guids)
    raised.extend((row.reason, GuidRowReason) for row in report.invalid)

    assert len(raised) == 9  # one row issue, one invalid GUID row
    assert [(type(reason), kind) for reason, kind in raised] == [(kind, kind) for _, kind in raised]
