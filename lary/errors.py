"""What the user can fix: bad input, named. `lary` prints these on one line (exit code 2); anything else is a bug and
keeps its traceback."""

from __future__ import annotations

from pathlib import Path


class LaryError(ValueError):
    """Bad input: a missing or unreadable file, a wrong key, value or combination of options. The message names it."""


class MediaError(LaryError):
    """A media file (image, video, array) that is missing or cannot be read."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason
