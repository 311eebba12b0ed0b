"""The systemd notification protocol against real AF_UNIX datagram sockets."""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway import sdnotify
from gateway.sdnotify import Notifier, notify, watchdog_interval_s


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The test run itself may be under systemd (a CI runner unit): start from nothing.
    for name in ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"):
        monkeypatch.delenv(name, raising=False)


def _receiver(sock: socket.socket) -> socket.socket:
    # A short timeout turns "nothing was sent" into a test failure, not a hang.
    sock.settimeout(2.0)
    return sock


@pytest.fixture
def path_socket(tmp_path: Path) -> Iterator[tuple[str, socket.socket]]:
    """A bound path socket, as systemd's /run/systemd/notify is."""
    path = tmp_path / "notify"
    sock = _receiver(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    sock.bind(os.fsencode(path))
    with sock:
        yield str(path), sock


@pytest.fixture
def abstract_socket() -> Iterator[tuple[str, socket.socket]]:
    """A bound abstract socket; NOTIFY_SOCKET spells its leading NUL as '@'."""
    name = f"poa-gateway-test-{uuid.uuid4().hex}"
    sock = _receiver(socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM))
    sock.bind(b"\0" + name.encode())
    with sock:
        yield "@" + name, sock


def test_notify_sends_one_datagram_to_a_path_socket(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    assert notify("READY=1", "STATUS=listening on csp/dcc/alert") is True

    assert receiver.recv(4096) == b"READY=1\nSTATUS=listening on csp/dcc/alert"


def test_notify_sends_to_an_abstract_socket(
    abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    assert notify("WATCHDOG=1") is True

    assert receiver.recv(4096) == b"WATCHDOG=1"


def test_notify_encodes_status_as_utf8(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    assert notify("STATUS=Zählerstand ok, 1,402,117 windows") is True

    assert receiver.recv(4096) == b"STATUS=Z\xc3\xa4hlerstand ok, 1,402,117 windows"


def test_notify_without_notify_socket_returns_false() -> None:
    assert notify("READY=1") is False


def test_notify_with_empty_or_relative_notify_socket_returns_false(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "")
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", "relative/notify")
    assert notify("READY=1") is False


def test_notify_to_a_missing_socket_returns_false_without_raising(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "nobody-here"))
    assert notify("READY=1") is False
    monkeypatch.setenv("NOTIFY_SOCKET", f"@poa-gateway-test-absent-{uuid.uuid4().hex}")
    assert notify("READY=1") is False


def test_notify_with_no_states_sends_nothing(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = path_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    assert notify() is False

    receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        receiver.recv(4096)


@pytest.mark.parametrize("state", ["READY", "STATUS=two\nlines", "STATUS=x\nREADY=1"])
def test_malformed_state_is_a_bug_and_raises(state: str) -> None:
    with pytest.raises(ValueError, match="sd_notify state"):
        notify(state)


def test_notifier_holds_the_socket_and_sends_each_message(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, receiver = path_socket

    with Notifier(address) as notifier:
        assert notifier.enabled
        assert notifier.extend_timeout(90) is True
        assert notifier.ready("up: 1,402,117 windows loaded") is True
        assert notifier.watchdog() is True
        assert notifier.status("broker down:\nreconnecting in 4 s") is True
        assert notifier.stopping() is True
        assert notifier.notify("RELOADING=1", "STATUS=re-reading") is True

    assert [receiver.recv(4096) for _ in range(6)] == [
        b"EXTEND_TIMEOUT_USEC=90000000",
        b"READY=1\nSTATUS=up: 1,402,117 windows loaded",
        b"WATCHDOG=1",
        b"STATUS=broker down: reconnecting in 4 s",
        b"STOPPING=1",
        b"RELOADING=1\nSTATUS=re-reading",
    ]
    assert not notifier.enabled
    assert notifier.watchdog() is False


def test_notifier_reads_notify_socket_from_the_environment(
    abstract_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, receiver = abstract_socket
    monkeypatch.setenv("NOTIFY_SOCKET", address)

    with Notifier() as notifier:
        assert notifier.ready() is True
        assert notifier.stopping("draining in-flight publishes") is True

    assert receiver.recv(4096) == b"READY=1"
    assert receiver.recv(4096) == b"STOPPING=1\nSTATUS=draining in-flight publishes"


def test_notifier_outside_systemd_is_disabled_and_silent() -> None:
    notifier = Notifier()

    assert not notifier.enabled
    assert notifier.ready() is False
    assert notifier.watchdog() is False
    assert notifier.watchdog_interval_s() is None
    assert notifier.watchdog_ping_s() is None
    notifier.close()
    notifier.close()  # idempotent


def test_notifier_survives_the_socket_disappearing(
    path_socket: tuple[str, socket.socket],
) -> None:
    address, _ = path_socket
    notifier = Notifier(address)
    Path(address).unlink()

    assert notifier.watchdog() is False
    notifier.close()


def test_notifier_watchdog_ping_is_half_the_interval(
    path_socket: tuple[str, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    address, _ = path_socket
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))

    with Notifier(address) as notifier:
        assert notifier.watchdog_interval_s() == 30.0
        assert notifier.watchdog_ping_s() == 15.0


def test_watchdog_interval_from_watchdog_usec(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    assert watchdog_interval_s() == 30.0
    monkeypatch.setenv("WATCHDOG_USEC", "1500")
    assert watchdog_interval_s() == 0.0015


def test_watchdog_interval_for_this_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid()))
    assert watchdog_interval_s() == 30.0


def test_watchdog_for_another_pid_does_not_apply(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "30000000")
    monkeypatch.setenv("WATCHDOG_PID", str(os.getpid() + 1))
    assert watchdog_interval_s() is None


@pytest.mark.parametrize(
    ("usec", "pid"),
    [
        (None, None),
        ("", None),
        ("0", None),
        ("-5", None),
        ("thirty", None),
        ("30s", None),
        ("30000000", "not-a-pid"),
    ],
)
def test_watchdog_interval_is_none_when_unset_or_malformed(
    usec: str | None, pid: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if usec is not None:
        monkeypatch.setenv("WATCHDOG_USEC", usec)
    if pid is not None:
        monkeypatch.setenv("WATCHDOG_PID", pid)
    assert watchdog_interval_s() is None


def test_watchdog_ignores_an_empty_watchdog_pid(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WATCHDOG_USEC", "20000000")
    monkeypatch.setenv("WATCHDOG_PID", "")
    assert watchdog_interval_s() == 20.0


def test_module_exports_the_public_api() -> None:
    assert sorted(sdnotify.__all__) == ["Notifier", "notify", "watchdog_interval_s"]
