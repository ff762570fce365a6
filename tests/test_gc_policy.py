"""Full garbage collections wait for the reviewer to pause (see wsireview.tui.gc_policy)."""

from __future__ import annotations

import gc
import weakref

import pytest

from wsireview.tui.gc_policy import FULL_COLLECTION_EVERY, IdleCollector


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class Node:
    """Something in a reference cycle: only the cyclic collector frees it."""

    def __init__(self) -> None:
        self.me = self


@pytest.fixture
def collector():
    before = gc.get_threshold()
    clock = Clock()
    c = IdleCollector(idle_seconds=2.0, clock=clock)
    c.start()
    yield c, clock
    c.stop()
    assert gc.get_threshold() == before
    assert gc.get_freeze_count() == 0


def test_start_freezes_and_defers_full_collections(collector):
    c, _ = collector
    assert gc.get_threshold()[2] == FULL_COLLECTION_EVERY
    assert gc.get_freeze_count() > 1000  # the interpreter's and the test run's long-lived objects


def test_cycles_in_the_old_generation_wait_for_an_idle_moment(collector):
    c, clock = collector
    node = Node()
    alive = weakref.ref(node)
    gc.collect(1)  # the cycle survives into the oldest generation (it is still referenced)
    del node
    gc.collect(1)  # young collections do not reach it
    assert alive() is not None

    c.input_seen()
    clock.now += 1.0
    assert not c.tick()  # a key a second ago: not idle
    assert alive() is not None

    clock.now += 1.5
    assert c.tick()  # 2.5 s without input: the full collection runs
    assert alive() is None
    assert not c.tick()  # nothing new since: no second collection
    assert c.collections == 1
