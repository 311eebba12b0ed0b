"""Durable state: what the gateway keeps on disk.

The ``StateStore`` protocol the shell writes through (protocol), its SQLite
implementation (sqlite), the Smart Metering Inventory (inventory) and the SQLite helpers
both stores share (sqlite_util).
"""
