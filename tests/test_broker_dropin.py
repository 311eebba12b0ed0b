"""systemd/mosquitto-poa-gateway.conf is a drop-in for Debian's mosquitto: it loads beside
Debian's own mosquitto.conf (through its include_dir) and the broker then refuses
anonymous clients, admits the gateway's user and enforces the example ACL."""

from __future__ import annotations

import getpass
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e_support import free_port

from .conftest import ROOT

DROP_IN = ROOT / "systemd" / "mosquitto-poa-gateway.conf"
ACL = ROOT / "systemd" / "mosquitto-acl.example"

# /etc/mosquitto/mosquitto.conf as Debian's mosquitto package installs it (bookworm,
# 2.0.11-1.2+deb12u1; unchanged in the backports), with its paths moved into {root}.
DEBIAN_MAIN = """\
# Place your local configuration in /etc/mosquitto/conf.d/
#
# A full description of the configuration file is at
# /usr/share/doc/mosquitto/examples/mosquitto.conf.example

pid_file {root}/run/mosquitto.pid

persistence true
persistence_location {root}/lib/

log_dest file {root}/log/mosquitto.log

include_dir {root}/conf.d
"""

# The installed paths of the drop-in and what they become in the test.
_LISTENER = "listener 1883 127.0.0.1"
_PASSWD = "/etc/mosquitto/passwd"
_ACL_PATH = "/etc/mosquitto/acl"

_TOOLS = ("mosquitto_passwd", "mosquitto_pub", "mosquitto_sub")


def _directives(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines() if line.strip() and line[0] != "#"]


def test_drop_in_sets_nothing_that_debians_main_file_sets() -> None:
    # pid_file, persistence_location and log_dest set twice stop mosquitto from starting;
    # persistence (a boolean) may be repeated.
    main = set(_directives(DEBIAN_MAIN)) - {"persistence"}
    assert main & set(_directives(DROP_IN.read_text())) == set()


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if Path(p).exists()), None
    )


@dataclass(frozen=True)
class RunningBroker:
    port: int
    passwords: dict[str, str]

    def client(self, tool: str, user: str | None, *args: str) -> subprocess.CompletedProcess[str]:
        auth = [] if user is None else ["-u", user, "-P", self.passwords[user]]
        exe = _tool(tool)
        assert exe is not None
        return subprocess.run(
            [exe, "-h", "127.0.0.1", "-p", str(self.port), "-V", "mqttv5", *auth, *args],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )


@pytest.fixture
def debian_broker(tmp_path: Path) -> Iterator[RunningBroker]:
    """mosquitto started on Debian's main file with the drop-in in its conf.d."""
    missing = [name for name in ("mosquitto", *_TOOLS) if _tool(name) is None]
    if missing:
        pytest.skip(f"{', '.join(missing)} not installed (./dev test installs mosquitto)")
    for folder in ("run", "lib", "log", "conf.d"):
        (tmp_path / folder).mkdir()
    port = free_port()
    # Started as root, mosquitto would switch to the user "mosquitto", which cannot write
    # here: keep the invoking user, as Debian's unit does with its own.
    main = tmp_path / "mosquitto.conf"
    main.write_text(f"user {getpass.getuser()}\n" + DEBIAN_MAIN.format(root=tmp_path))
    text = DROP_IN.read_text()
    for installed, here in (
        (_LISTENER, f"listener {port} 127.0.0.1"),
        (_PASSWD, str(tmp_path / "passwd")),
        (_ACL_PATH, str(tmp_path / "acl")),
    ):
        lines = [line for line in text.splitlines() if line[:1] != "#" and installed in line]
        assert len(lines) == 1, f"one setting with {installed!r} expected, found {lines}"
        text = text.replace(installed, here)
    (tmp_path / "conf.d" / "poa-gateway.conf").write_text(text)
    shutil.copyfile(ACL, tmp_path / "acl")
    passwords = {"poa-gateway": "gw-secret", "csp": "csp-secret"}
    passwd_tool = _tool("mosquitto_passwd")
    assert passwd_tool is not None
    (tmp_path / "passwd").write_text("")
    for user, password in passwords.items():
        subprocess.run([passwd_tool, "-b", str(tmp_path / "passwd"), user, password], check=True)

    mosquitto = _tool("mosquitto")
    assert mosquitto is not None
    log = tmp_path / "log" / "mosquitto.log"
    out = tmp_path / "mosquitto.out"  # what it prints before its log is open
    with out.open("wb") as sink:
        proc = subprocess.Popen([mosquitto, "-c", str(main)], stdout=sink, stderr=sink)
    try:
        deadline = time.monotonic() + 10
        while f"listen socket on port {port}" not in (log.read_text() if log.exists() else ""):
            if proc.poll() is not None or time.monotonic() > deadline:
                printed = out.read_text() + (log.read_text() if log.exists() else "")
                pytest.fail(f"mosquitto did not start:\n{printed}", pytrace=False)
            time.sleep(0.05)
        yield RunningBroker(port, passwords)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert "Error" not in log.read_text()


def test_anonymous_client_is_refused(debian_broker: RunningBroker) -> None:
    done = debian_broker.client("mosquitto_pub", None, "-t", "csp/dcc/alert", "-m", "x")
    assert done.returncode != 0
    assert "not authorised" in done.stderr.lower() or "not authorized" in done.stderr.lower()


def test_gateway_user_reads_what_the_acl_grants_and_nothing_else(
    debian_broker: RunningBroker,
) -> None:
    # Retained messages reach a later subscriber at once, if the ACL lets it read them.
    pub = "mosquitto_pub"
    for user, topic in (("csp", "csp/dcc/alert"), ("poa-gateway", "gateway/suppressed")):
        done = debian_broker.client(pub, user, "-t", topic, "-m", user, "-r", "-q", "1")
        assert done.returncode == 0, done.stderr
    done = debian_broker.client(
        "mosquitto_sub",
        "poa-gateway",
        *("-t", "csp/dcc/alert", "-t", "gateway/suppressed", "-v", "-W", "2"),
    )
    # gateway/suppressed is written, never read, by the gateway: its retained message
    # is not delivered to it.
    assert done.stdout.splitlines() == ["csp/dcc/alert csp"], done.stderr
