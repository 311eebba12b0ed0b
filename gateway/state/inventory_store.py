"""Where the inventory is: the one the configuration names, for the daemon and the CLI.

With ``[state] backend = "sqlite"`` (the default) the inventory is the SQLite file
``paths.inventory``, one per instance. With ``backend = "postgresql"`` it is the table
``inventory`` of the state database (gateway/state/pg_inventory.py), so that every
instance sharing that database sees the same devices and an update taken by one leader
is there for the next.
"""

from __future__ import annotations

from gateway.config import Config

from .inventory import Inventory, InventoryStore

__all__ = ["open_inventory"]


def open_inventory(config: Config, *, create: bool = True) -> InventoryStore:
    """Open the inventory ``config`` names (see the module docstring).

    ``create=False``: a missing inventory is an error instead of being created (for
    read-only tools).

    Raises:
        InventoryError: as :class:`~gateway.state.inventory.Inventory` or
            :meth:`~gateway.state.pg_inventory.PostgresInventory.open` (``cannot-open``,
            ``not-an-inventory``, ``unsupported-schema``).
    """
    if config.state.backend != "postgresql":
        return Inventory.open(config.paths.inventory, create=create)
    # Imported here: a SQLite install never loads the PostgreSQL driver.
    from .pg_inventory import PostgresInventory  # noqa: PLC0415

    password = None if config.state_password is None else config.state_password.reveal()
    return PostgresInventory.open(config.state.dsn, password=password, create=create)
