"""The one root error of the gateway.

Every error the gateway raises on purpose derives from :class:`GatewayError`: the
configuration's, the stores', the wire's, the broker adapter's, the command line's. Each
leaf stays where its module is and carries its own structured attributes (most a stable
``reason`` code that becomes a log field); the codec has its own root,
:class:`gbcs.GbcsError`, since ``gbcs`` never imports ``gateway``.
``tests/test_errors.py`` checks that no exception class of either package escapes its root.
"""

from __future__ import annotations

import enum

__all__ = ["GatewayError", "StartupError", "StartupReason"]


class GatewayError(Exception):
    """The root of every error the gateway raises on purpose."""


class StartupReason(enum.StrEnum):
    """Why the gateway cannot start with its configuration (a log field)."""

    TRUST_MISSING = "trust-missing"  # paths.trust_dir is not a folder
    TRUST_UNREADABLE = "trust-unreadable"  # a certificate file cannot be read
    TRUST_EMPTY = "trust-empty"  # no usable certificate: no command could be verified
    # another instance of the deployment (same state database) uses another client id
    CLIENT_ID_CONFLICT = "client-id-conflict"
    SIGNING_KEY = "signing-key"  # reports.signing_key unreadable or not ECDSA P-256


class StartupError(GatewayError):
    """The gateway cannot start with this configuration (a missing or empty trust store,
    a client id that differs from the other instances'):
    retrying unchanged can never work, so ``run`` exits ``Exit.CONFIG`` (78).

    Attributes:
        reason: stable code, a :class:`StartupReason`.
    """

    def __init__(self, reason: StartupReason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
