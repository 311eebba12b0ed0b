"""An MQTT broker inside the process, for the simulator demo (``./dev run``) only.

amqtt is a pure-Python broker that speaks MQTT 3.1.1, so clients of it run in 3.1.1 mode
(``broker.protocol = 4``; gateway/transport/session.py), where a refused publish looks
delivered and an unacknowledged message is not redelivered. Good enough to show
the gateway working on a machine without mosquitto; production uses mosquitto 2.0.13+
with MQTT 5 (docs/operations.md).
"""

from __future__ import annotations

import socket
from typing import Any


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class EmbeddedBroker:
    """amqtt on 127.0.0.1, anonymous, in the running event loop."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._broker: Any = None

    @property
    def url(self) -> str:
        """``mqtt://127.0.0.1:PORT``."""
        return f"mqtt://127.0.0.1:{self.port}"

    async def start(self) -> None:
        """Start listening. Raises RuntimeError when amqtt is not installed."""
        try:
            from amqtt.broker import Broker  # noqa: PLC0415 - optional demo dependency
        except ImportError as exc:
            raise RuntimeError(
                "the embedded broker needs amqtt: pip install 'poa-gateway[demo]' "
                "(./dev installs it), or give --broker mqtt://HOST:PORT"
            ) from exc
        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}"}},
            "plugins": {
                "amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}
            },
        }
        self._broker = Broker(config)
        await self._broker.start()

    async def stop(self) -> None:
        """Shut down."""
        if self._broker is not None:
            await self._broker.shutdown()
            self._broker = None
