"""``poa-gateway run`` as a child process of the simulator, its log in a file."""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["GatewayProcess", "default_gateway_command"]


def default_gateway_command() -> list[str]:
    """``poa-gateway`` of this interpreter: ``python -m gateway``."""
    return [sys.executable, "-m", "gateway"]


class GatewayProcess:
    """The gateway daemon, started with ``COMMAND run --config CONFIG``."""

    def __init__(self, command: Sequence[str] | str, config: Path, log: Path) -> None:
        self.command = shlex.split(command) if isinstance(command, str) else list(command)
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start it; stdout and stderr (JSON log lines) go to :attr:`log`."""
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(  # noqa: S603 - the operator's own command
                [*self.command, "run", "--config", str(self.config)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )

    @property
    def alive(self) -> bool:
        """True while the process runs."""
        return self.proc is not None and self.proc.poll() is None

    @property
    def returncode(self) -> int | None:
        """Its exit status once it has ended."""
        return None if self.proc is None else self.proc.poll()

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait (SIGKILL after ``timeout``); returns the exit status."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait(timeout=10)

    def tail(self, lines: int = 15) -> str:
        """The last lines of its log."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""
