"""Leak checks for tests: Trio tasks, file descriptors, garbage (ResourceWarning)."""

from __future__ import annotations

import gc
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import trio
import trio.testing


def all_tasks() -> set[trio.lowlevel.Task]:
    """Every task of this run, found from the root task down."""
    found: set[trio.lowlevel.Task] = set()
    todo = [trio.lowlevel.current_root_task()]
    while todo:
        task = todo.pop()
        if task is None or task in found:
            continue
        found.add(task)
        for nursery in task.child_nurseries:
            todo.extend(nursery.child_tasks)
    return found


def open_fds() -> set[str]:
    """This process's open file descriptors (Linux)."""
    return set(os.listdir("/proc/self/fd"))


@asynccontextmanager
async def no_leaks() -> AsyncIterator[None]:
    """Assert that the block leaves no task running, no file descriptor open, and no
    object whose collection warns (ResourceWarning is an error under this suite's
    filterwarnings; gc.collect() makes it surface here, in this test)."""
    gc.collect()
    tasks, fds = all_tasks(), open_fds()
    yield
    await trio.testing.wait_all_tasks_blocked()
    gc.collect()
    leaked = all_tasks() - tasks
    assert not leaked, f"tasks left running: {[task.name for task in leaked]}"
    # (listdir's own descriptor is gone by the time the set is built)
    assert open_fds() - fds == set(), "file descriptors left open"
