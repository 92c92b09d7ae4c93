"""queuectl: a durable background job queue for shell commands on one machine."""

from __future__ import annotations

__all__ = ["__version__"]

__version__ = "0.1.0"
