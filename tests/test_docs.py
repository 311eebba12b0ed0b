"""The documentation tells the truth: the example configuration names every key of
``gateway/config.py`` with its real default, the README's decode example is what the
command prints, and systemd/README.md describes every file beside it."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import msgspec
import pytest

from gateway.cli.main import main
from gateway.config import ConfigFile, load_config

from .conftest import ROOT, vectors_root

EXAMPLE = ROOT / "systemd" / "poa-gateway.toml"
README = ROOT / "README.md"

# Keys whose value in the example is deliberately not the default, each with a comment
# above it that says "Not the default": a production install under systemd.
NOT_DEFAULT = {"broker.username", "paths.state_dir", "paths.trust_dir"}

_SECTION = re.compile(r"#?\s*\[(?P<name>[a-z_]+)\]\s*")
_KEY = re.compile(r"#?\s*(?P<name>[a-z_]+)\s*=")


def _config_keys() -> list[str]:
    """Every key of the file's schema, as ``section.key``."""
    keys = []
    for section in msgspec.structs.fields(ConfigFile):
        assert isinstance(section.type, type), section
        keys += [
            f"{section.encode_name}.{f.encode_name}" for f in msgspec.structs.fields(section.type)
        ]
    return keys


def _example_keys() -> dict[str, list[str]]:
    """Each key the example mentions (set, or shown in a comment), as ``section.key``,
    with the comment lines right above its first mention."""
    found: dict[str, list[str]] = {}
    section = ""
    comments: list[str] = []
    for line in EXAMPLE.read_text().splitlines():
        if (m := _SECTION.fullmatch(line)) is not None:
            section = m["name"]
        elif (m := _KEY.match(line)) is not None and section:
            found.setdefault(f"{section}.{m['name']}", comments)
        comments = [*comments, line] if line.startswith("#") else []
    return found


def test_example_configuration_mentions_every_key() -> None:
    missing = [key for key in _config_keys() if key not in _example_keys()]
    assert missing == [], f"systemd/poa-gateway.toml does not mention {', '.join(missing)}"


def test_example_configuration_holds_the_defaults_except_where_it_says() -> None:
    config = load_config(EXAMPLE, env={})
    defaults = ConfigFile()
    differs = []
    for key in _config_keys():
        section, name = key.split(".")
        default = getattr(getattr(defaults, section), name)
        if section == "paths":
            # Resolved by load_config: state_dir against the file's folder, the others
            # inside state_dir.
            base = EXAMPLE.parent if name == "state_dir" else config.paths.state_dir
            default = (base / default).resolve()
        if getattr(getattr(config, section), name) != default:
            differs.append(key)
    assert sorted(differs) == sorted(NOT_DEFAULT)
    comments = _example_keys()
    unsaid = [key for key in NOT_DEFAULT if "Not the default" not in "".join(comments[key])]
    assert unsaid == [], "say 'Not the default' in the comment above these keys"


def test_readme_decode_example_is_what_the_command_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    match = re.search(
        r"```console\n\$ \.venv/bin/poa-gateway decode (?P<args>.+?)\n(?P<out>\{\n.*?\n\})\n```",
        README.read_text(),
        re.DOTALL,
    )
    assert match is not None, "the README's decode example is gone"
    args, out = match["args"].replace("\\\n", " "), match["out"]
    # The README's paths are those of the default layout (../shared beside the checkout).
    here = str(vectors_root())
    args, out = args.replace("../shared/vectors", here), out.replace("../shared/vectors", here)
    monkeypatch.chdir(ROOT)
    assert main(["decode", *shlex.split(args)]) == 0
    assert capsys.readouterr().out == out + "\n"


def test_readme_decode_error_example_is_what_the_command_prints() -> None:
    match = re.search(
        r"exits (?P<status>[0-9]+):\n\n"
        r"```console\n\$ echo (?P<hex>[0-9A-F]+) \| \.venv/bin/poa-gateway decode -\n"
        r"(?P<err>poa-gateway decode: .*)\n```",
        README.read_text(),
    )
    assert match is not None, "the README's decode error example is gone"
    done = subprocess.run(
        [str(Path(sys.executable).parent / "poa-gateway"), "decode", "-"],
        input=match["hex"] + "\n",
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert (done.returncode, done.stderr) == (int(match["status"]), match["err"] + "\n")


def test_systemd_readme_describes_every_file_beside_it() -> None:
    text = (ROOT / "systemd" / "README.md").read_text()
    files = sorted(p.name for p in (ROOT / "systemd").iterdir() if p.name != "README.md")
    assert [name for name in files if f"`{name}`" not in text] == []
