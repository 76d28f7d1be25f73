"""Logging: library modules log to `logging.getLogger(__name__)`; the CLI sets the level once (`-v`/`-q`).

Under several processes (accelerate) only the main process logs below warnings, so a run prints its story once.
A command's results (extract's `extracted ... pairs/s`) are logged at `RESULT`, which -q still shows: -q hides bars
and chatter, not what the run did. Progress bars stay tqdm (on the main process), hidden with -q and when stderr is
not a terminal (`progress_hidden`; transformers' bars too, such as its "Loading weights").
"""

from __future__ import annotations

import logging
import os
import sys

RESULT = logging.INFO + 5  # between INFO and WARNING: what a run did, shown with -q
logging.addLevelName(RESULT, "RESULT")
LEVELS = {-1: RESULT, 0: logging.INFO, 1: logging.DEBUG}


def is_main_process() -> bool:
    """Rank 0 of an `accelerate launch` / torchrun job, or a plain process."""
    return int(os.environ.get("RANK", "0")) == 0


def setup(verbosity: int = 0) -> None:
    """Messages of `lary.*` on stderr: INFO by default, DEBUG with -v, results and warnings only with -q, warnings only
    off the main process."""
    level = LEVELS[max(-1, min(1, verbosity))] if is_main_process() else logging.WARNING
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG else "%(name)s: %(message)s"))
    logger = logging.getLogger("lary")
    logger.handlers[:] = [handler]  # the CLI's own output; records still propagate (to pytest's caplog, say)
    logger.setLevel(level)
    _library_progress_bars(shown=not progress_hidden())


_hid_library_bars = False  # whether `setup` turned the Hugging Face libraries' bars off (and so may turn them on)


def _library_progress_bars(shown: bool) -> None:
    """huggingface_hub's switch, which transformers reads when it is imported, and transformers' own once it is."""
    global _hid_library_bars
    from huggingface_hub import utils as hub

    transformers = sys.modules.get("transformers.utils.logging")
    if not shown and not hub.are_progress_bars_disabled():
        hub.disable_progress_bars()
        if transformers is not None:
            transformers.disable_progress_bar()
        _hid_library_bars = True
    elif shown and _hid_library_bars:
        hub.enable_progress_bars()
        if transformers is not None:
            transformers.enable_progress_bar()
        _hid_library_bars = False


def progress_hidden() -> bool:
    """True when no bars are wanted: -q or a process other than the main one, or stderr is not a terminal (a log
    file or a pipe, where each update of a bar would be a `\\r` line: tqdm's `disable=None`)."""
    return logging.getLogger("lary").level > logging.INFO or not _bars_drawn()


def _bars_drawn() -> bool:
    """stderr is a terminal, or a notebook's (whose stream is not, but where tqdm.auto draws its bars as widgets)."""
    stderr = sys.stderr
    return stderr is not None and (stderr.isatty() or "ipykernel" in sys.modules)
