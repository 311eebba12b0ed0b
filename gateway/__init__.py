"""poa-gateway: the AD1 Power Outage Alert suppression gateway (SEC MP102B)."""

__version__ = "0.1.0"
