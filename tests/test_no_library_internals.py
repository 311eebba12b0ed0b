"""No library's private names are used anywhere in gateway/ or gbcs/ (issue 14, point 4).

A private name (one ``_underscore``, not a ``__dunder__``) of a library may change in any
release: the gmqtt adapter reached into ten of them, and an upgrade could have broken
delivery guarantees without a failing import. This walks the source:

- every ``obj._name`` attribute, and every ``getattr``/``setattr``/``hasattr``/``delattr``
  of a literal ``"_name"``, must name something our own code defines (a ``def``, a
  ``class``, an assignment, a slot, a field, an import alias);
- no import names a private module or member of another package
  (``from lib._impl import x``, ``from lib import _x``, ``import lib._impl``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = ("gateway", "gbcs")
_ATTRIBUTE_CALLS = frozenset({"getattr", "setattr", "hasattr", "delattr"})


def sources() -> list[Path]:
    return sorted(p for package in OURS for p in (ROOT / package).rglob("*.py"))


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def trees() -> Iterator[tuple[Path, ast.Module]]:
    for path in sources():
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def defined_names() -> set[str]:
    """Every private name our own code defines, wherever."""
    names: set[str] = set()
    for _, tree in trees():
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                names.add(node.name)
            elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
                names.add(node.id)
            elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
                names.add(node.attr)
            elif isinstance(node, ast.alias) and node.asname:
                names.add(node.asname)
            elif isinstance(node, ast.arg):
                names.add(node.arg)
            elif (
                isinstance(node, ast.Constant)
                and isinstance(node.value, str)
                and node.value.isidentifier()
            ):
                names.add(node.value)  # __slots__ entries, fields named by string
    return {name for name in names if is_private(name)}


def uses(path: Path, tree: ast.Module) -> Iterator[tuple[str, str]]:
    """(where, private name) for each private attribute this file reads or writes."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and is_private(node.attr):
            yield f"{path.relative_to(ROOT)}:{node.lineno}", node.attr
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in _ATTRIBUTE_CALLS
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and is_private(node.args[1].value)
        ):
            yield f"{path.relative_to(ROOT)}:{node.lineno}", node.args[1].value


def foreign_private_imports(path: Path, tree: ast.Module) -> Iterator[str]:
    where = path.relative_to(ROOT)
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if node.level or module.split(".")[0] in OURS:
                continue  # our own package
            if any(is_private(part) for part in module.split(".")):
                yield f"{where}:{node.lineno}: from {module} import ..."
            for alias in node.names:
                if is_private(alias.name):
                    yield f"{where}:{node.lineno}: from {module} import {alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                parts = alias.name.split(".")
                if parts[0] not in OURS and any(is_private(part) for part in parts):
                    yield f"{where}:{node.lineno}: import {alias.name}"


def test_no_private_attribute_of_a_library_is_touched() -> None:
    ours = defined_names()
    foreign = [f"{where}: {name}" for path, tree in trees() for where, name in uses(path, tree)]
    foreign = [line for line in foreign if line.rsplit(": ", 1)[1] not in ours]
    assert foreign == [], "private names of other packages used:\n" + "\n".join(foreign)


def test_no_private_module_or_member_of_a_library_is_imported() -> None:
    found = [line for path, tree in trees() for line in foreign_private_imports(path, tree)]
    assert found == [], "\n".join(found)


SNIPPETS = [
    ("handler._send_puback(mid)", "_send_puback"),
    ("getattr(client, '_package_handler', None)", "_package_handler"),
    ("x509.name._ASN1Type.BitString", "_ASN1Type"),
    ("for action in parser._actions: pass", "_actions"),
    ("setattr(handler, '_handle_connack_packet', f)", "_handle_connack_packet"),
]


@pytest.mark.parametrize(("code", "name"), SNIPPETS)
def test_the_walk_finds_a_reach_into_a_library(code: str, name: str) -> None:
    # Guards the walk itself: what the gmqtt adapter did is found.
    tree = ast.parse(code)
    assert [used for _, used in uses(ROOT / "x.py", tree)] == [name]
    assert name not in defined_names()


def test_the_walk_finds_a_private_import() -> None:
    tree = ast.parse("from gmqtt.mqtt.handler import _x\nimport lib._impl\n")
    assert len(list(foreign_private_imports(ROOT / "x.py", tree))) == 2
