"""Small file-system helpers shared by the writers of durable files (reports, GUID list)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


def fsync_dir(folder: Path) -> None:
    """fsync a folder, so a rename into it survives a power cut.

    Not possible on every platform; the renamed file itself is already synced, so a
    failure here is ignored.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)
