"""One root error per package: every exception class the gateway defines derives from
GatewayError, and every one the codec defines from GbcsError."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from types import ModuleType

import pytest

import gateway
import gbcs
from gateway.errors import GatewayError
from gbcs import GbcsError


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
    } <= names
