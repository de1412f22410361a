"""CPU priority of the bulk work, so that what someone waits on gets the cores first.

Detection processes and the thread that embeds and stores a drain are the bulk work; the
app's keys and screen (and, for the detect processes, the embedding they feed) are what a
person waits on now. Bulk work runs ``nice``: on a loaded machine the waiting work gets the
CPU the moment it asks, the bulk work takes every cycle it leaves, so throughput stays where
it was; on an idle machine nothing changes.
"""

from __future__ import annotations

import contextlib
import os
import threading

#: How much nicer bulk work runs than whoever started it.
BULK_NICENESS = 10


def lower_process_priority(niceness: int = BULK_NICENESS) -> None:
    """This process (called in a worker process before it starts any thread)."""
    with contextlib.suppress(OSError, AttributeError):  # no nice here: the same priority
        os.nice(niceness)


def lower_thread_priority(niceness: int = BULK_NICENESS) -> None:
    """Only the calling thread, and the threads and processes it starts from now on (Linux
    gives every thread its own nice value, inherited at creation): the ONNX Runtime and torch
    thread pools a model creates on first use, the detect processes a pipeline spawns."""
    with contextlib.suppress(OSError, AttributeError):  # not Linux: the same priority
        thread = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, thread)
        os.setpriority(os.PRIO_PROCESS, thread, min(19, current + niceness))
