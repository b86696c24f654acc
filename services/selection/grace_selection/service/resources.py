"""How the round thread shares the machine with the serving threads (Linux, glibc).

Measured with benchmarks/load.py (docs/results/load.md): while a round rebuilds the graph, the
event loop holds the GIL in nearly every GIL-holding sample (py-spy --gil): the round's time is
in hnswlib with the GIL released, running one thread per core. Reads slow down because those
threads take the cores from the event loop, not because of the GIL. So the round thread runs
at a lower CPU priority (a nice value; threads it starts, such as hnswlib's, inherit it): the
event loop gets a core whenever it has a request, and the round uses what is left.

The service's RSS grew by the index and working copies of each rebuild and never came back:
glibc raises its mmap threshold after the first large free, so later arrays of a few MB come
from the heap, and freed heap pages stay with the process. A fixed threshold returns every
large array to the system when it is freed, and `malloc_trim` hands back what is left after
a round.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import os
import threading

log = logging.getLogger("grace_selection.service")

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter numbers (malloc.h)
MMAP_THRESHOLD_BYTES = 1024 * 1024


def lower_thread_priority(nice: int) -> None:
    """Raise this thread's nice value by `nice` (0: leave it); threads it starts inherit it."""
    if nice <= 0 or not hasattr(os, "setpriority"):
        return
    tid = threading.get_native_id()
    try:
        current = os.getpriority(os.PRIO_PROCESS, tid)
        os.setpriority(os.PRIO_PROCESS, tid, min(19, current + nice))
    except OSError as exc:  # a sandbox may forbid it; rounds then run at normal priority
        log.warning("could not lower the round thread's priority: %s", exc)


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def fix_mmap_threshold() -> bool:
    """Serve allocations >= 1 MiB from their own mappings from now on (glibc only); an
    explicit MALLOC_MMAP_THRESHOLD_ in the environment wins. True if it was set here."""
    if "MALLOC_MMAP_THRESHOLD_" in os.environ:
        return False
    libc = _libc()
    return bool(libc is not None and libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD_BYTES))


def release_free_memory() -> None:
    """Give the allocator's free pages back to the system (glibc only; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None:
        libc.malloc_trim(0)
