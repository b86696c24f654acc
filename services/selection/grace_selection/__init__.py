"""GRACE selection service: the core algorithm, its adapters and the HTTP API."""

__version__ = "0.1.0"
