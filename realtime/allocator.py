"""The C allocator's memory return policy, set once per process at start.

glibc's malloc serves an allocation above its *mmap threshold* with its own mapping, returned to
the OS on free; smaller ones come from the heap or a per-thread arena, which keeps freed memory.
By default the threshold is dynamic: each free of a mapped block raises it to that block's size
(up to 32 MiB), so after a first large temporary is freed, later ones of that size stay in the
arenas. A platform whose compute threads make large temporaries now and then (Risk's Monte
Carlo, 12.8 MB arrays; VPIN and feature blocks) then steps its RSS up once per arena and thread,
for hours on a slow replay, and never gives it back (seen in the SPY soak). A fixed threshold
(``NAUTILUS_MALLOC_MMAP_THRESHOLD_BYTES``, default 1 MiB) keeps large temporaries mapped, so
freeing one returns it; ``0`` leaves glibc's dynamic policy. Equivalent to
``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=…``; a no-op off glibc.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from collections.abc import Mapping

from realtime.config import ConfigError

__all__ = ["MMAP_THRESHOLD_VARIABLE", "fix_mmap_threshold"]

MMAP_THRESHOLD_VARIABLE = "NAUTILUS_MALLOC_MMAP_THRESHOLD_BYTES"
DEFAULT_MMAP_THRESHOLD = 1 << 20
#: glibc's ``mallopt`` parameter number, and the largest threshold it accepts (64-bit).
_M_MMAP_THRESHOLD = -3
_MAX_MMAP_THRESHOLD = 32 << 20


def fix_mmap_threshold(environ: Mapping[str, str]) -> int | None:
    """Apply ``NAUTILUS_MALLOC_MMAP_THRESHOLD_BYTES``; the threshold set, or ``None`` when left
    to glibc (``0``, or not glibc). Raises ``ConfigError`` for a bad value."""
    text = environ.get(MMAP_THRESHOLD_VARIABLE, str(DEFAULT_MMAP_THRESHOLD)).strip()
    try:
        threshold = int(text)
    except ValueError:
        raise ConfigError(MMAP_THRESHOLD_VARIABLE, f"expected bytes, got {text!r}") from None
    if not 0 <= threshold <= _MAX_MMAP_THRESHOLD:
        raise ConfigError(
            MMAP_THRESHOLD_VARIABLE, f"expected 0 to {_MAX_MMAP_THRESHOLD}, got {threshold}"
        )
    if threshold == 0 or not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return None
    if not hasattr(libc, "gnu_get_libc_version"):  # glibc only: musl has no threshold to set
        return None
    mallopt = libc.mallopt
    return threshold if mallopt(_M_MMAP_THRESHOLD, threshold) == 1 else None
