"""Handing freed memory back to the operating system during long runs.

glibc keeps what a process frees for reuse and, with several threads and frame buffers of changing sizes, the kept
pieces fragment: over a long video the resident memory of `lary extract` grew with the run (a 3,000-frame video
once took twice the memory of a 1,000-frame one) although what it holds does not. The main process and each
decoding worker trim their heap every two seconds (not after every batch: the allocator's reuse of what was just
freed is what keeps frame buffers cheap); elsewhere (not glibc) this does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time


@functools.cache
def _malloc_trim():
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    return getattr(ctypes.CDLL(library), "malloc_trim", None)


def release_free_memory() -> None:
    """Return the heap's free pages to the operating system (glibc's `malloc_trim(0)`), where there is such a call."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


class PeriodicRelease:
    """Calling it releases free memory when `seconds` have passed since it last did."""

    def __init__(self, seconds: float = 2.0):
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.seconds:
            release_free_memory()
            self.last = time.monotonic()
