"""The exit statuses of every ``poa-gateway`` subcommand, in one place.

Operators and systemd act on them: ``0`` done; ``1`` failed (the work could not be
done: a broker that refuses the credentials, a report that does not verify); ``2``
usage or bad input (a wrong option, an unreadable frame or spreadsheet: running it again
unchanged gives the same answer); ``78`` a configuration that can never work
(``EX_CONFIG`` of sysexits.h). The unit sets ``RestartPreventExitStatus=78`` so that
systemd stops restarting a daemon whose configuration is wrong.
"""

from __future__ import annotations

import enum

__all__ = ["Exit"]


class Exit(enum.IntEnum):
    """Exit statuses (see the module docstring)."""

    OK = 0
    FAILED = 1
    USAGE = 2  # usage or bad input; also argparse's own status for a bad option
    CONFIG = 78  # EX_CONFIG: the configuration cannot work; systemd does not restart
