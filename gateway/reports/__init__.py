"""Power Outage Alert Suppression reports: the CSV (and optional .xlsx) files the Network
Operators receive, when they are due, and their verification (files)."""
