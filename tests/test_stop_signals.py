"""A stop asked for by Ctrl-C or SIGTERM is never lost, also when its KeyboardInterrupt is raised where Python swallows
it (a finalizer, a C library's callback): the run ends as interrupted instead of going on to exit 0."""

from __future__ import annotations

import gc
import signal
import sys

import pytest

from lary import launcher


@pytest.fixture
def stop_handlers():
    previous = {number: signal.getsignal(number) for number in (signal.SIGINT, signal.SIGTERM)}
    launcher.stop_on_signals()
    yield
    for number, handler in previous.items():
        signal.signal(number, handler)
    launcher._stop_signal = None


class SignalledWhileFinalized:
    def __init__(self, number: int):
        self.number = number

    def __del__(self):
        signal.raise_signal(self.number)  # its handler's KeyboardInterrupt is "Exception ignored" here


@pytest.mark.parametrize("number", [signal.SIGINT, signal.SIGTERM])
def test_a_swallowed_stop_is_raised_again(stop_handlers, number, monkeypatch):
    launcher.raise_if_stopped()  # nothing asked yet
    swallowed = []
    monkeypatch.setattr(sys, "unraisablehook", lambda unraisable: swallowed.append(unraisable.exc_type))
    SignalledWhileFinalized(number)
    gc.collect()
    assert swallowed == [KeyboardInterrupt]  # Python went on: the stop would have been lost
    with pytest.raises(KeyboardInterrupt):
        launcher.raise_if_stopped()
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # a second SIGTERM would interrupt the cleanup
