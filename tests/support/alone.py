"""Tests marked ``alone`` run while no other test does, also in a parallel run: a budget in milliseconds
measures the code, not how many other tests share the 2 cores at that moment.

Two lock files in the folder the run's xdist workers share (the parent of their temporary folders) make a
writer-preferring readers-writer lock. Every test holds the room lock shared while it runs (setup, call,
teardown); an ``alone`` test holds it exclusively. A test first passes the door lock, which an ``alone``
test keeps closed from the moment it asks: no new test starts on another worker, the running ones finish,
then it runs by itself. tests/conftest.py hands the ``alone`` tests out last, when little is left to wait for.
Outside xdist nothing is locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def turn(alone: bool, shared_folder: Path | None) -> Iterator[None]:
    """Run the body as an ``alone`` test (by itself) or as any other (beside others, never beside one);
    ``shared_folder`` None (not an xdist worker): just run it."""
    if shared_folder is None:
        yield
        return
    door = os.open(shared_folder / "alone.door", os.O_RDWR | os.O_CREAT, 0o600)
    room = os.open(shared_folder / "alone.room", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(door, fcntl.LOCK_EX)  # waits while an alone test holds it
        if alone:
            fcntl.flock(room, fcntl.LOCK_EX)  # waits for the tests running now
        else:
            fcntl.flock(door, fcntl.LOCK_UN)
            fcntl.flock(room, fcntl.LOCK_SH)
        yield
    finally:
        os.close(room)  # closing releases what this process holds on it
        os.close(door)
