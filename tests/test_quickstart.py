"""The README's local quick start, run as a newcomer would: its commands, as written, in a
fresh HOME (only `poa-gateway run` is given a time limit, where a person presses Ctrl-C)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .e2e_support import mosquitto_binary

ROOT = Path(__file__).resolve().parent.parent

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(180)]


def quick_start_commands() -> list[str]:
    """The ``$ `` lines of the first console block under "Running the gateway"."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## Running the gateway") :]
    block = section[section.index("```console") : section.index("```\n", 10)]
    commands: list[str] = []
    continued = ""
    for line in block.splitlines()[1:]:
        if line.startswith("$ ") or continued:
            text = continued + (line[2:] if line.startswith("$ ") else line.strip())
            if text.endswith("\\"):
                continued = text[:-1] + " "
                continue
            continued = ""
            commands.append(re.sub(r"\s+#.*$", "", text))  # the comment after the command
    return commands


def test_the_readme_quick_start_works_as_written(tmp_path: Path) -> None:
    if (
        shutil.which("ss")
        and ":1883 "
        in subprocess.run(["ss", "-ltn"], capture_output=True, text=True, check=False).stdout
    ):
        pytest.skip("port 1883 is taken on this machine; the quick start uses it")
    commands = quick_start_commands()
    assert commands[-1] == "poa-gateway run"
    assert any(c.startswith("poa-gateway guids import") for c in commands)
    commands[-1] = "timeout -s INT 10 poa-gateway run > run.log 2>&1 || true"
    script = "set -e\n" + "\n".join(commands) + "\n"
    home = tmp_path / "home"
    home.mkdir()
    broker = Path(mosquitto_binary())
    env = {"HOME": str(home), "PATH": f"{broker.parent}:/usr/bin:/bin"}
    try:
        done = subprocess.run(
            ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, check=False
        )
    finally:
        subprocess.run(["pkill", "-f", "mosquitto -p 1883 -d"], check=False)
    assert done.returncode == 0, done.stderr
    log = (home / "poa-local" / "run.log").read_text()
    assert '"event":"gateway.ready"' in log, log[-2000:]
    assert '"event":"gateway.stopped"' in log
    assert (home / "poa-local" / "var" / "guid-list.bin").is_file()
    assert '"level":"warning"' not in log, log
    assert '"level":"error"' not in log, log
