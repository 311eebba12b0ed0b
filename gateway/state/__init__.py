"""Durable state: what the gateway keeps on disk (or in PostgreSQL).

The ``StateStore`` protocol the shell writes through (protocol), its SQLite and
PostgreSQL implementations (sqlite, postgresql) and what those share: the row format
(rows), the group commit loop (group_commit) and the error (errors); the Smart Metering
Inventory (inventory) and the SQLite helpers the SQLite stores share (sqlite_util).
"""
