"""Handing freed memory back to the operating system during long runs.

glibc keeps what a process frees for reuse and, with several threads and frame buffers of changing sizes, the kept
pieces fragment: over a long video the resident memory of `lary extract` grew with the run (a 3,000-frame video
once took twice the memory of a 1,000-frame one) although what it holds does not. The main process and each
decoding worker trim their heap every two seconds (not after every batch: the allocator's reuse of what was just
freed is what keeps frame buffers cheap); elsewhere (not glibc) this does nothing.

That reuse is not glibc's default in the main process: a batch's activations grow the heap by tens of megabytes and,
freed together at its end, leave a free top above glibc's trim threshold, which hands it back at once; the next batch
then takes it again, a page fault per 4 KiB (5,000 a batch at `bench_pipeline.py`'s shape, 8% of the model's time
there). `keep_freed_memory` leaves what is freed in the heap until the periodic trim; `lary extract` calls it in the
main process only (its workers decode 2% slower with it).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import time

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters
MAX_MMAP_THRESHOLD = 32 * 2**20  # the largest glibc accepts (64-bit): bigger blocks are mapped and unmapped each time


@functools.cache
def _libc_function(name: str):
    library = ctypes.util.find_library("c")
    if library is None:
        return None
    return getattr(ctypes.CDLL(library), name, None)


def release_free_memory() -> None:
    """Return the heap's free pages to the operating system (glibc's `malloc_trim(0)`), where there is such a call."""
    trim = _libc_function("malloc_trim")
    if trim is not None:
        trim(0)


def keep_freed_memory() -> None:
    """From now on, this process's heap keeps what is freed for reuse until `release_free_memory` (glibc's
    `mallopt`: no trimming at the top, blocks up to 32 MiB from the heap). It replaces glibc's adaptive thresholds
    for the rest of the process; elsewhere (not glibc) this does nothing."""
    mallopt = _libc_function("mallopt")
    if mallopt is not None:
        mallopt(M_TRIM_THRESHOLD, 2**31 - 1)
        mallopt(M_MMAP_THRESHOLD, MAX_MMAP_THRESHOLD)


class PeriodicRelease:
    """Calling it releases free memory when `seconds` have passed since it last did."""

    def __init__(self, seconds: float = 2.0):
        self.seconds, self.last = seconds, time.monotonic()

    def __call__(self) -> None:
        if time.monotonic() - self.last >= self.seconds:
            release_free_memory()
            self.last = time.monotonic()
