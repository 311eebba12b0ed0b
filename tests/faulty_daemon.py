"""``poa-gateway run`` with a fault injected through the state store interface, for the
end-to-end tests: ``python -m tests.faulty_daemon --config FILE --kill-before-ack ALERT``.

The daemon is the real one; only its store is wrapped: once the commit that records
ALERT's decision is durable, and before the alert is acknowledged, the process SIGKILLs
itself. The gateway's own code carries no test hook on its hot path.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import Any

from gateway import service
from gateway.config import load_config
from gateway.core.events import AlertDecision
from gateway.logs import JsonLog, buffered_stdout, route_stdlib_logging
from gateway.state.sqlite import Store


class KillAfterCommit:
    """A :class:`gateway.state.sqlite.Store` that kills the process right after the flush that
    makes ``alert_id``'s decision durable returns (before the acknowledgement)."""

    def __init__(self, inner: Store, alert_id: str, log: JsonLog) -> None:
        self._inner = inner
        self._alert_id = alert_id
        self._log = log
        self._armed = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def put_decision(self, decision: AlertDecision, *, effect_done: bool) -> None:
        self._inner.put_decision(decision, effect_done=effect_done)
        self._armed = self._armed or decision.alert_id == self._alert_id

    async def flush(self) -> None:
        await self._inner.flush()
        if self._armed:
            self._log.warning("fault.injected", alert_id=self._alert_id, reason="kill-before-ack")
            self._log.flush()
            os.kill(os.getpid(), signal.SIGKILL)


def main() -> int:
    """Run the daemon with the fault named on the command line."""
    parser = argparse.ArgumentParser(prog="faulty_daemon")
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--kill-before-ack", metavar="ALERT_ID", required=True)
    args = parser.parse_args()
    config = load_config(args.config, env=os.environ)
    log = JsonLog(buffered_stdout(), level=config.log.level)
    route_stdlib_logging(log, "warning")

    def open_store(path: Path) -> Any:
        return KillAfterCommit(Store.open(path), args.kill_before_ack, log)

    try:
        service.run(config, log, open_store=open_store)
    finally:
        log.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
