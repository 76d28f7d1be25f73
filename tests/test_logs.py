"""`lary.logs.progress_hidden`: bars on a terminal or in a notebook, none in a log file or pipe or with -q; -q keeps
the results (`RESULT`)."""

from __future__ import annotations

import io
import logging
import sys

from lary import logs


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_bars_need_a_terminal_or_a_notebook_and_no_q(monkeypatch):
    monkeypatch.delitem(sys.modules, "ipykernel", raising=False)
    monkeypatch.setattr(logging.getLogger("lary"), "level", logging.INFO)
    monkeypatch.setattr(sys, "stderr", Terminal())
    assert not logs.progress_hidden()
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file or a pipe
    assert logs.progress_hidden()
    monkeypatch.setitem(sys.modules, "ipykernel", object())  # a notebook: tqdm.auto draws widgets
    assert not logs.progress_hidden()
    monkeypatch.setattr(logging.getLogger("lary"), "level", logs.LEVELS[-1])  # -q
    assert logs.progress_hidden()
    assert logging.getLogger("lary").isEnabledFor(logs.RESULT)
    assert not logging.getLogger("lary").isEnabledFor(logging.INFO)
