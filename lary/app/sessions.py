"""The visitors' last analyses, held for the "what if" panel within a memory budget.

Each visitor's page state is only a key; the analyses (frames as model pixels, thumbnails, vectors: about 11 MB for
64 frames) live here, at most `max_bytes` of them together and none unused for longer than `max_age` seconds. The
least recently used go first; a visitor whose analysis went is asked to extract again.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable

from lary.app.analysis import Analysis
from lary.errors import LaryError


class SessionStore:
    """Analyses by key, least recently used first, within `max_bytes` and `max_age` seconds of their last use."""

    def __init__(self, max_bytes: int, max_age: float, clock: Callable[[], float] = time.monotonic):
        self.max_bytes, self.max_age, self.clock = max_bytes, max_age, clock
        self._analyses: OrderedDict[str, tuple[Analysis, float]] = OrderedDict()  # key -> (analysis, last use)
        self._lock = threading.Lock()
        self.held_bytes = 0

    def __len__(self) -> int:
        return len(self._analyses)

    def put(self, analysis: Analysis, replaces: str | None = None) -> str:
        """Hold `analysis` (instead of the visitor's previous one, `replaces`); its new key."""
        key = uuid.uuid4().hex
        with self._lock:
            self._drop(replaces)
            self._analyses[key] = analysis, self.clock()
            self.held_bytes += analysis.nbytes
            self._evict(keep=key)
        return key

    def get(self, key: str | None) -> Analysis:
        """The analysis of `key`, now the most recently used; a `LaryError` if there is none (any more)."""
        if key is None:
            raise LaryError("extract the latent actions of a video first")
        with self._lock:
            self._evict()
            if key not in self._analyses:
                raise LaryError("this page no longer holds your latent actions (it keeps the most recent visitors' for "
                                "a while): extract them again")
            analysis, _ = self._analyses.pop(key)
            self._analyses[key] = analysis, self.clock()
        return analysis

    def _drop(self, key: str | None) -> None:
        if key in self._analyses:
            self.held_bytes -= self._analyses.pop(key)[0].nbytes

    def _evict(self, keep: str | None = None) -> None:
        """Drop the expired, then the least recently used while over budget (never `keep`, the one just added)."""
        now = self.clock()
        for key, (_, used) in list(self._analyses.items()):
            if now - used > self.max_age and key != keep:
                self._drop(key)
        while self.held_bytes > self.max_bytes and len(self._analyses) > 1:
            self._drop(next(iter(self._analyses)))
