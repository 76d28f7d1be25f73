"""What the user can fix: bad input, named. `lary` and the example scripts print these on one line (exit code 2;
a full disk 3, `one_line_errors`); anything else is a bug and keeps its traceback."""

from __future__ import annotations

import errno
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

EXIT_BAD_INPUT = 2
EXIT_NO_SPACE = 3


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


@contextmanager
def one_line_errors(prog: str) -> Iterator[None]:
    """End the program on one line, `prog: error: ...` on stderr, for what the user can fix: bad input (a `LaryError`,
    exit code 2) or a full disk (exit code 3). Anything else keeps its traceback; so does bad input with
    `LARY_TRACEBACK=1`. For `lary` and for scripts: `with one_line_errors("my_script.py"): main()`."""
    try:
        yield
    except LaryError as error:
        if os.environ.get("LARY_TRACEBACK") == "1":
            raise
        print(f"{prog}: error: {error}", file=sys.stderr)
        sys.exit(EXIT_BAD_INPUT)
    except OSError as error:
        if error.errno != errno.ENOSPC:
            raise
        where = f" writing {error.filename}" if error.filename else ""
        message = str(error) if isinstance(error, NoSpaceError) else f"no space left{where}; free space and rerun"
        print(f"{prog}: error: {message}", file=sys.stderr)
        sys.exit(EXIT_NO_SPACE)
