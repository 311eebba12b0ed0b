"""The core imports no edge: the engine, its events and the codec know nothing of the
state store, the shell or the MQTT adapter, and the store owns its row format rather
than borrowing the engine's (issue 11, points 1 and 2). Imports are read from the
source with ast, so an import inside a function or under TYPE_CHECKING counts too."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

EDGES = ("gateway.state.sqlite", "gateway.service", "gateway.transport.mqtt")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imported(path: Path) -> set[str]:
    """Every module ``path`` imports, absolute; ``from a import b`` yields ``a`` and
    ``a.b`` (b may be a submodule)."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            out.add(module)
            out.update(f"{module}.{alias.name}" for alias in node.names)
    return out


def reaches(modules: set[str], forbidden: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == f or m.startswith(f + ".") for f in forbidden))


CORE = [
    ROOT / "gateway" / "core" / "engine.py",
    ROOT / "gateway" / "core" / "events.py",
    *sorted((ROOT / "gbcs").rglob("*.py")),
]


@pytest.mark.parametrize("path", CORE, ids=lambda p: str(p.relative_to(ROOT)))
def test_the_core_imports_nothing_of_the_store_the_shell_or_mqtt(path: Path) -> None:
    assert reaches(imported(path), EDGES) == []


def test_the_store_imports_nothing_of_the_engine() -> None:
    assert (
        reaches(imported(ROOT / "gateway" / "state" / "sqlite.py"), ("gateway.core.engine",)) == []
    )


def test_the_import_reader_sees_relative_and_absolute_imports() -> None:
    # Guards the reader itself: one that found nothing would pass every test above.
    assert {"gateway.core.events", "gateway.core.events.AlertDecision", "sqlite3"} <= imported(
        ROOT / "gateway" / "state" / "sqlite.py"
    )
    assert "gateway.core.events" in imported(ROOT / "gateway" / "core" / "engine.py")
    assert "gbcs.errors" in imported(ROOT / "gbcs" / "frame.py")
    assert reaches(imported(ROOT / "gateway" / "service.py"), EDGES) != []
    assert reaches(
        {"gateway.state.sqlite", "gateway.state.sqlitey"}, ("gateway.state.sqlite",)
    ) == ["gateway.state.sqlite"]
