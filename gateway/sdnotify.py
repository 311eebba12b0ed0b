"""systemd's service notification protocol (``sd_notify``), without a dependency.

Theory of operation
-------------------
A ``Type=notify`` service tells systemd about itself by sending datagrams to the
AF_UNIX socket named in ``$NOTIFY_SOCKET``. Each datagram is one or more
``NAME=value`` assignments separated by newlines (sd_notify(3)):

- ``READY=1``: start-up finished; ``systemctl start`` returns, dependants start.
- ``STATUS=...``: one line shown by ``systemctl status``.
- ``WATCHDOG=1``: "still alive"; with ``WatchdogSec=`` set, systemd kills and
  (with ``Restart=on-failure``) restarts the service when these stop coming.
- ``EXTEND_TIMEOUT_USEC=N``: "starting/stopping takes N µs more" (systemd >= 236),
  so that a long state load is not mistaken for a hang by ``TimeoutStartSec=``.
- ``STOPPING=1``: an orderly shutdown has begun.

``$NOTIFY_SOCKET`` is either a file-system path (``/run/systemd/notify``) or an
abstract socket written with a leading ``@`` (the ``@`` stands for the leading NUL
byte of the Linux abstract namespace). When the variable is unset the process is
not running under systemd (or under a ``Type=`` that does not listen), and every
call here returns ``False`` and does nothing: the daemon runs the same code in a
terminal, in tests and under systemd.

Sending never raises for a socket that is missing, refuses, or is full: a lost
notification is reported by the return value, because a monitoring aid must never
be what stops the gateway. A state string that is malformed (no ``=``, or a
newline that would smuggle in a second assignment) is a bug in our code and does
raise ``ValueError``.

``$WATCHDOG_USEC`` carries the ``WatchdogSec=`` interval in microseconds, and
``$WATCHDOG_PID``, when set, names the one process it is meant for (so a child that
inherited the environment does not think it is being watched). The daemon should
ping at half the interval (sd_watchdog_enabled(3) recommends it): a ping then
arrives at least once per interval even when the event loop is late by up to half
an interval, while a loop that is truly stuck is still caught within one interval.

Pure standard library; Linux only in practice (AF_UNIX datagram sockets and the
abstract namespace), but importing it elsewhere is harmless.
"""

from __future__ import annotations

import os
import socket
from types import TracebackType

__all__ = ["Notifier", "notify", "watchdog_interval_s"]

_SEND_TIMEOUT_S = 1.0
"""Upper bound on a blocking send.

systemd's notification socket has a large receive buffer and is drained by PID 1,
so a send normally completes at once; the bound only matters if the receiver is
wedged, and then one second of stalled event loop is better than a stall forever.
"""


def _socket_address(raw: str | None) -> bytes | None:
    """The address to ``sendto`` for a ``$NOTIFY_SOCKET`` value, or None if unusable."""
    if not raw:
        return None
    if raw.startswith("@"):
        # Linux abstract namespace: the name starts with a NUL byte and has no file.
        return b"\0" + os.fsencode(raw[1:])
    if raw.startswith("/"):
        return os.fsencode(raw)
    # Relative paths are not part of the protocol, and other schemes (systemd 254's
    # "vsock:CID:PORT" for virtual machines) do not apply to a host service.
    return None


def _encode(states: tuple[str, ...]) -> bytes:
    for state in states:
        if "=" not in state:
            raise ValueError(f"sd_notify state must be NAME=value, got {state!r}")
        if "\n" in state:
            raise ValueError(f"sd_notify state must be one line, got {state!r}")
    return "\n".join(states).encode("utf-8")


def _send(sock: socket.socket, address: bytes, datagram: bytes) -> bool:
    try:
        sock.sendto(datagram, address)
    except OSError:
        # Missing socket (FileNotFoundError), nobody listening (ConnectionRefusedError),
        # a full receive queue (TimeoutError), a permission problem: all mean "not
        # delivered", none may take the daemon down.
        return False
    return True


def _open_socket() -> socket.socket:
    # Python creates sockets close-on-exec, so no child ever inherits this one.
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.settimeout(_SEND_TIMEOUT_S)
    return sock


def notify(*states: str) -> bool:
    """Send ``states`` (e.g. ``"READY=1"``, ``"STATUS=..."``) to systemd as one datagram.

    All states go in a single datagram, so systemd applies them together (``READY=1``
    with its ``STATUS=`` line, for instance). Returns True when the datagram was
    sent, False when not running under systemd (no usable ``$NOTIFY_SOCKET``), when
    no states were given, or when sending failed; it never raises for a missing or
    unreachable socket. Raises ``ValueError`` for a state without ``=`` or with a
    newline. Opens and closes a socket per call; a long-running daemon should hold
    a :class:`Notifier` instead.
    """
    datagram = _encode(states)
    address = _socket_address(os.environ.get("NOTIFY_SOCKET"))
    if address is None or not states:
        return False
    try:
        sock = _open_socket()
    except OSError:
        return False
    with sock:
        return _send(sock, address, datagram)


def watchdog_interval_s() -> float | None:
    """The ``WatchdogSec=`` interval in seconds, or None when no watchdog applies.

    Reads ``$WATCHDOG_USEC`` (a positive integer of microseconds). When
    ``$WATCHDOG_PID`` is set, the watchdog applies only if it names this process;
    systemd sets both for the main process, and checking the PID keeps a forked
    helper that inherited the environment from pinging on the main process's
    behalf. Returns None for an unset, empty, malformed or non-positive value. Ping
    (``WATCHDOG=1``) at half the returned interval; see the module docstring.
    """
    raw_usec = os.environ.get("WATCHDOG_USEC", "")
    raw_pid = os.environ.get("WATCHDOG_PID", "")
    if raw_pid:
        try:
            pid = int(raw_pid)
        except ValueError:
            return None
        if pid != os.getpid():
            return None
    try:
        usec = int(raw_usec)
    except ValueError:
        return None
    if usec <= 0:
        return None
    return usec / 1_000_000


class Notifier:
    """A notification socket held open for the life of the daemon.

    ``Notifier()`` reads ``$NOTIFY_SOCKET`` once; ``Notifier(address)`` uses the
    given address (``""`` disables it, which tests and ``--no-systemd`` style
    options can use). When disabled every method returns False and does nothing.
    The socket is opened once so that watchdog pings cost one ``sendto`` and cannot
    fail for lack of file descriptors at the worst moment. Usable as a context
    manager; :meth:`close` is idempotent.
    """

    def __init__(self, address: str | None = None) -> None:
        raw = os.environ.get("NOTIFY_SOCKET") if address is None else address
        self._address = _socket_address(raw)
        self._sock: socket.socket | None = None
        if self._address is not None:
            try:
                self._sock = _open_socket()
            except OSError:
                self._address = None
        self._watchdog_s = watchdog_interval_s() if self._address is not None else None

    @property
    def enabled(self) -> bool:
        """True when there is a systemd notification socket to talk to."""
        return self._sock is not None

    def watchdog_interval_s(self) -> float | None:
        """``WatchdogSec=`` in seconds for this process, or None; see the module function."""
        return self._watchdog_s

    def watchdog_ping_s(self) -> float | None:
        """How often to send ``WATCHDOG=1``: half the watchdog interval, or None.

        Half, so that one late or lost ping does not by itself get the service
        killed, while a stuck event loop is still caught within one interval.
        """
        return None if self._watchdog_s is None else self._watchdog_s / 2

    def notify(self, *states: str) -> bool:
        """Send ``states`` as one datagram; False if disabled or not delivered."""
        datagram = _encode(states)
        if self._sock is None or self._address is None or not states:
            return False
        return _send(self._sock, self._address, datagram)

    def ready(self, status: str | None = None) -> bool:
        """Start-up is complete (``READY=1``), optionally with a status line."""
        if status is None:
            return self.notify("READY=1")
        return self.notify("READY=1", _status(status))

    def status(self, text: str) -> bool:
        """Set the line ``systemctl status`` shows; newlines are folded to spaces."""
        return self.notify(_status(text))

    def watchdog(self) -> bool:
        """Tell the watchdog the daemon is alive (``WATCHDOG=1``)."""
        return self.notify("WATCHDOG=1")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start (or stop) timeout fires.

        Sent repeatedly while a long state load progresses: each message moves the
        deadline to ``seconds`` from now, so a load that is advancing is never cut
        off by ``TimeoutStartSec=`` while one that hangs still is.
        """
        usec = max(1, int(seconds * 1_000_000))
        return self.notify(f"EXTEND_TIMEOUT_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        """An orderly shutdown has begun (``STOPPING=1``)."""
        if status is None:
            return self.notify("STOPPING=1")
        return self.notify("STOPPING=1", _status(status))

    def close(self) -> None:
        """Close the socket; later calls return False."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _status(text: str) -> str:
    # STATUS is a single line: a multi-line error message would otherwise be cut at
    # the first newline and the rest read as further (bogus) assignments.
    return "STATUS=" + " ".join(text.splitlines())
