"""What the user can fix: bad input, named. `lary` prints these on one line (exit code 2); anything else is a bug and
keeps its traceback."""

from __future__ import annotations

import os
from pathlib import Path


def path_text(path: str | Path) -> str:
    """A path as text that UTF-8 can encode (Parquet, JSON, a terminal): a file name's bytes that are not UTF-8 (which
    Python keeps as lone surrogates) are written `\\xNN`, so `nonutf8_\\xff.mp4` names the file `b"nonutf8_\\xff.mp4"`.
    Other names are unchanged."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


class LaryError(ValueError):
    """Bad input: a missing or unreadable file, a wrong key, value or combination of options. The message names it."""


class MediaError(LaryError):
    """A media file (image, video, array) that is missing or cannot be read."""

    def __init__(self, path: str | Path, reason: str):
        self.path = path_text(path)
        super().__init__(f"{self.path}: {reason}")
        self.reason = reason


class NoSpaceError(OSError):
    """The disk filled up while writing `path` (errno 28, ENOSPC). `lary` prints it on one line, exit code 3."""

    def __init__(self, path: str | Path, advice: str = "free space and rerun"):
        super().__init__(28, f"no space left writing {path}; {advice}")
        self.path = str(path)
        self.advice = advice

    def __str__(self) -> str:
        return self.strerror

    def __reduce__(self):  # as it was built (it is sent between processes)
        return NoSpaceError, (self.path, self.advice)
