"""Process-level tuning: the heap is frozen after start-up, the allocator keeps freed blocks and
the GIL is handed back sooner."""

from __future__ import annotations

import gc
import sys

import numpy as np
from fastapi.testclient import TestClient

from service.app import create_app
from service.runtime import GIL_SWITCH_INTERVAL_S, keep_freed_memory, settle_heap


def test_settle_heap_freezes_what_is_alive_and_collection_still_works():
    gc.unfreeze()
    try:
        settle_heap()
        assert gc.get_freeze_count() > 0
        cycle: list[object] = []
        cycle.append(cycle)
        del cycle
        assert gc.collect() >= 1  # objects made after the freeze are still collected
    finally:
        gc.unfreeze()


def test_keep_freed_memory_leaves_allocation_working():
    keep_freed_memory()
    blocks = [np.ones(1 << 20) for _ in range(4)]  # 8 MiB each: served from the heap now
    assert sum(float(b.sum()) for b in blocks) == 4 * (1 << 20)


def test_serving_sets_the_gil_switch_interval(settings):
    default = 0.005
    sys.setswitchinterval(default)
    try:
        with TestClient(create_app(settings)):  # runs the lifespan
            assert sys.getswitchinterval() == GIL_SWITCH_INTERVAL_S
    finally:
        sys.setswitchinterval(default)
