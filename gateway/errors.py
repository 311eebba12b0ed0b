"""The one root error of the gateway.

Every error the gateway raises on purpose derives from :class:`GatewayError`: the
configuration's, the stores', the wire's, the broker adapter's, the command line's. Each
leaf stays where its module is and carries its own structured attributes (most a stable
``reason`` code that becomes a log field); the codec has its own root,
:class:`gbcs.GbcsError`, since ``gbcs`` never imports ``gateway``.
``tests/test_errors.py`` checks that no exception class of either package escapes its root.
"""

from __future__ import annotations

__all__ = ["GatewayError"]


class GatewayError(Exception):
    """The root of every error the gateway raises on purpose."""
