"""Process-level tuning for serving, applied once at start-up; each measured under load."""

from __future__ import annotations

import ctypes
import gc
import logging
import sys

log = logging.getLogger(__name__)

# glibc mallopt parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3


def settle_heap() -> None:
    """Move everything alive now (modules, models) out of the garbage collector's sight.

    Full collections otherwise walk these ~200k long-lived objects: under load they ran several
    times a second at up to 145 ms each, stalling every request in flight (p99) and costing a
    tenth of the event loop's time. Requests' short-lived objects are still collected.
    """
    gc.collect()
    gc.freeze()


def keep_freed_memory() -> None:
    """Let glibc reuse freed blocks of up to 32 MiB instead of unmapping them.

    A micro-batch of MC passes allocates activations and masks of a few MiB. By default glibc
    serves such blocks with fresh mmaps and returns them on free, so every batch paid page faults
    for memory it had just released: a 64-request batch at T = 100 ran 2-3x slower. Fixed
    thresholds keep that memory in the heap (at most 256 MiB of it held back). No-op off glibc.
    """
    if not sys.platform.startswith("linux"):
        return
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (musl has no mallopt)
        return
    if not (mallopt(_M_MMAP_THRESHOLD, 32 << 20) and mallopt(_M_TRIM_THRESHOLD, 256 << 20)):
        log.warning("mallopt refused the allocator thresholds; MC batches will run slower")
