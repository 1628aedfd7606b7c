import gc
import weakref

import pytest

from icr.webhooks.heap import freeze_startup_heap


class Node:
    pass


@pytest.fixture
def unfrozen_gc():
    """A process with nothing frozen and no automatic collection, restored afterwards."""
    gc.unfreeze()
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def tracked(obj) -> bool:
    """True while ``obj`` is in a generation the collector walks (frozen objects are not)."""
    return any(o is obj for o in gc.get_objects())


def test_live_objects_are_frozen_and_garbage_is_collected_first(unfrozen_gc):
    live = Node()
    cycle = Node()
    cycle.self = cycle  # only the cycle collector can free it
    gone = weakref.ref(cycle)
    del cycle
    assert tracked(live) and gone() is not None

    frozen = freeze_startup_heap()

    assert frozen == gc.get_freeze_count() > 0
    assert not tracked(live)  # full collections no longer walk it
    assert gone() is None  # collected, not frozen for the life of the process
