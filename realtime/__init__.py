"""All I/O of streaming: the hub, the bus, stores, the process runner and the CLI."""

from __future__ import annotations

#: The one version of the product: pyproject.toml reads it (``dynamic = ["version"]``).
__version__ = "0.1.0"
