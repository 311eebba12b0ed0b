"""The wheel is the product: built from the source tree, installed into a fresh virtual
environment outside it, every command works there; the sdist carries what an operator
and a packager need.

Theory of operation
-------------------
``./dev`` installs the project in editable mode, so the tests everywhere else import
``gateway`` from the checkout and would never notice a package that the wheel leaves
out. These tests do what a new user does instead: build the wheel with
``python -m pip wheel . --no-deps`` and the sdist with ``python -m build --sdist``,
create a new venv in a temporary folder, install the wheel into it (its dependencies from
the package index; pip's cache is fine), and run ``poa-gateway`` and ``python -m gateway``
from a working folder that is not the checkout.

The builds run in a copy of the source tree without what ``.gitignore`` leaves out
(``.venv``, ``build/``, ``*.egg-info``, caches, ``var/``): setuptools builds in the source
folder and packs whatever an earlier build left in ``build/`` or listed in
``*.egg-info/SOURCES.txt``, which would hide a package missing from the configuration.
A fresh clone (CI) has none of those either. The copy also gets the kind of files a
developer leaves in ``fixtures/`` (a compiled GUID list, bytecode), which the sdist must
not carry.

All of it is built and installed once per session (about 30 s); the tests then check
one thing each.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import openpyxl
import pytest

from gateway import __version__

from .conftest import ROOT, vector_files, vectors_root

pytestmark = pytest.mark.install

# What .gitignore leaves out of a clone, by name anywhere in the tree ...
_NOT_COPIED_ANYWHERE = frozenset(
    {
        ".git",
        ".venv",
        "build",
        "dist",
        "__pycache__",
        ".mypy_cache",
        ".ruff_cache",
        ".pytest_cache",
        ".hypothesis",
    }
)
# ... and at these places only (/var/, /bench/out/).
_NOT_COPIED_AT = {ROOT: {"var"}, ROOT / "bench": {"out"}}

# Files a developer may leave in fixtures/ that the sdist must not carry: generated
# output (guids import), bytecode.
_PLANTED = ("fixtures/guid-list.bin", "fixtures/__pycache__/make_fixtures.cpython-311.pyc")

_CS06 = "CS06_11.3_FUTURE_DATED_SUCCESS_COMMAND_GBCS.HEX"
_GUIDS = ("00-DB-12-34-56-78-90-A0", "00DB1234567890A1", "00:db:12:34:56:78:90:a2")

# Prints every command path of the parser (the top level is []), as JSON.
_COMMAND_PATHS = """
import argparse, json
from gateway.cli.main import build_parser

def walk(parser, path):
    yield path
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from walk(sub, [*path, name])

print(json.dumps(list(walk(build_parser(), []))))
"""


@dataclass(frozen=True)
class Install:
    """What the session fixture built and where the fresh venv is."""

    src: Path  # the copy of the source tree the distributions were built from
    wheel: Path
    sdist: Path
    venv: Path
    work: Path  # the working folder of every command: outside the checkout

    def exe(self, name: str) -> str:
        return str(self.venv / "bin" / name)


def _ignore(folder: str, names: list[str]) -> set[str]:
    skip = {n for n in names if n in _NOT_COPIED_ANYWHERE or n.endswith(".egg-info")}
    return skip | (_NOT_COPIED_AT.get(Path(folder), set()) & set(names))


def _clean_env() -> dict[str, str]:
    # Nothing that would let the fresh venv see the checkout or the dev venv.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    env.pop("VIRTUAL_ENV", None)
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _run(args: list[str], cwd: Path, *, ok: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        args, cwd=cwd, env=_clean_env(), capture_output=True, text=True, timeout=300, check=False
    )
    if ok and done.returncode != 0:
        pytest.fail(
            f"{' '.join(args)} (in {cwd}) exited {done.returncode}\n"
            f"--- stdout\n{done.stdout}--- stderr\n{done.stderr}",
            pytrace=False,
        )
    return done


@pytest.fixture(scope="session")
def install(tmp_path_factory: pytest.TempPathFactory) -> Install:
    """Wheel and sdist built from a copy of the tree, the wheel installed in a new venv."""
    base = tmp_path_factory.mktemp("install")
    assert not base.resolve().is_relative_to(ROOT), "the temporary folder is in the checkout"
    src = base / "src"
    shutil.copytree(ROOT, src, ignore=_ignore, symlinks=True)
    for name in _PLANTED:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        (src / name).write_bytes(b"generated, not part of the source\n")
    dist = base / "dist"
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "-w", str(dist)], cwd=src)
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", str(dist), "."], cwd=src)
    (wheel,) = dist.glob("*.whl")
    (sdist,) = dist.glob("*.tar.gz")

    venv = base / "venv"
    work = base / "work"
    work.mkdir()
    # A venv of the base interpreter, without pip: the dev venv's pip installs into it.
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=work)
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python")]
    _run([*pip, "install", "-q", str(wheel)], cwd=work)
    return Install(src=src, wheel=wheel, sdist=sdist, venv=venv, work=work)


def test_wheel_holds_every_module_of_both_packages(install: Install) -> None:
    with zipfile.ZipFile(install.wheel) as whl:
        names = set(whl.namelist())
    expected = {
        path.relative_to(install.src).as_posix()
        for package in ("gbcs", "gateway")
        for path in (install.src / package).rglob("*")
        if (path.suffix == ".py" or path.name == "py.typed") and "__pycache__" not in path.parts
    }
    assert sorted(expected - names) == []
    top = {name.split("/", 1)[0] for name in names}
    assert top == {"gbcs", "gateway", f"poa_gateway-{__version__}.dist-info"}


def test_installed_packages_come_from_the_venv_not_the_checkout(install: Install) -> None:
    code = "import gateway, gbcs; print(gateway.__file__, gbcs.__file__)"
    done = _run([install.exe("python"), "-c", code], cwd=install.work)
    for where in done.stdout.split():
        assert Path(where).is_relative_to(install.venv), where


def test_version_of_the_console_script(install: Install) -> None:
    done = _run([install.exe("poa-gateway"), "--version"], cwd=install.work)
    assert done.stdout.strip() == f"poa-gateway {__version__}"


def test_python_m_gateway_is_the_command(install: Install) -> None:
    done = _run([install.exe("python"), "-m", "gateway", "--version"], cwd=install.work)
    assert done.stdout.strip() == f"poa-gateway {__version__}"


def test_config_check_accepts_the_example_configuration(install: Install) -> None:
    toml = install.work / "poa-gateway.toml"
    shutil.copyfile(ROOT / "systemd" / "poa-gateway.toml", toml)
    done = _run([install.exe("poa-gateway"), "config", "check", toml.name], cwd=install.work)
    assert done.stdout.splitlines()[0] == "ok"


def test_decode_verifies_a_signed_cs06(install: Install) -> None:
    (frame,) = [p for p in vector_files() if p.name == _CS06]
    keystore = vectors_root() / "keystore"
    done = _run(
        [install.exe("poa-gateway"), "decode", "--trust", str(keystore), str(frame)],
        cwd=install.work,
    )
    out = json.loads(done.stdout)
    assert out["header"]["message_code_name"] == "CS06_ACTIVATE_FIRMWARE"
    assert out["payload"]["type"] == "ActivateFirmwareCommand"
    assert out["signature"]["status"] == "valid"


@pytest.mark.parametrize("suffix", [".csv", ".xlsx"])
def test_guids_import_compiles_a_list(install: Install, suffix: str) -> None:
    sheet = install.work / f"guids{suffix}"
    rows = [("GUID",), *((g,) for g in _GUIDS)]
    if suffix == ".csv":
        sheet.write_text("".join(f"{row[0]}\n" for row in rows))
    else:
        book = openpyxl.Workbook()
        assert book.active is not None
        for row in rows:
            book.active.append(row)
        book.save(sheet)
    listing = install.work / f"guid-list{suffix}.bin"
    exe = install.exe("poa-gateway")
    _run([exe, "guids", "import", sheet.name, "--output", listing.name, "--quiet"], install.work)
    done = _run([exe, "guids", "check", "00DB1234567890A2", "--list", listing.name], install.work)
    assert done.stdout.strip() == "yes"
    done = _run(
        [exe, "guids", "check", "00DB1234567890A3", "--list", listing.name], install.work, ok=False
    )
    assert (done.returncode, done.stdout.strip()) == (1, "no")


def test_every_subcommand_prints_its_help(install: Install) -> None:
    installed = _run([install.exe("python"), "-c", _COMMAND_PATHS], cwd=install.work)
    paths: list[list[str]] = json.loads(installed.stdout)
    # The same walk over the source it was built from (python -c imports from the cwd).
    in_source = _run([sys.executable, "-c", _COMMAND_PATHS], cwd=install.src)
    assert paths == json.loads(in_source.stdout)
    assert ["simulate"] in paths
    for path in paths:
        done = _run([install.exe("poa-gateway"), *path, "--help"], cwd=install.work)
        assert done.stdout.startswith(" ".join(["usage: poa-gateway", *path])), path
        assert done.stderr == "", path


def test_sdist_carries_docs_systemd_and_fixtures_and_nothing_generated(
    install: Install,
) -> None:
    prefix = f"poa_gateway-{__version__}/"
    with tarfile.open(install.sdist) as tar:
        members = {m.name.removeprefix(prefix): m for m in tar.getmembers() if m.isfile()}
    wanted = {
        path.relative_to(install.src).as_posix()
        for folder in ("docs", "systemd", "fixtures")
        for path in (install.src / folder).rglob("*")
        if path.is_file()
    } - set(_PLANTED)
    assert sorted(wanted - members.keys()) == []
    assert {"pyproject.toml", "README.md", "PKG-INFO", "tests/conftest.py"} <= members.keys()
    assert [name for name in _PLANTED if name in members] == []
    assert [name for name in members if "__pycache__" in name or name.endswith(".pyc")] == []
    fixtures = {name: m.size for name, m in members.items() if name.startswith("fixtures/")}
    assert {name: size for name, size in fixtures.items() if size > 64 * 1024} == {}


def test_wheel_built_from_the_sdist_is_the_same(install: Install, tmp_path: Path) -> None:
    # What a packager does: unpack the release tarball and build from it.
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-w", str(tmp_path)]
    _run([*pip_wheel, str(install.sdist)], cwd=tmp_path)
    (rebuilt,) = tmp_path.glob("*.whl")
    with zipfile.ZipFile(rebuilt) as a, zipfile.ZipFile(install.wheel) as b:
        assert sorted(a.namelist()) == sorted(b.namelist())
