"""A process started by a launcher (`accelerate launch`, `torchrun`) ends when its launcher does; a stop asked for by a
signal is never lost.

Such launchers start each process in a session of its own, so killing the launcher's process group does not reach
them: without this, the processes of a killed launch compute on (into its output folder, beside the run started next)
until they finish, adopted by init. Imports nothing heavy: the CLI starts the watch before anything else loads.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

CHECK_SECONDS = 0.5  # how often the launcher is looked for
GRACE_SECONDS = 10  # after SIGTERM, how long the process may take to end on its own before it is ended
_watched: set[int] = set()  # the launchers watched in this process


def end_with_launcher() -> None:
    """Under a launcher (`LOCAL_RANK` set), a daemon thread that sends this process SIGTERM once its parent, the
    launcher, is gone (the process is adopted: its parent pid changes), and ends it `GRACE_SECONDS` later if it is
    still there (waiting in a collective for a process that is gone). The CLI starts it first thing, so a launcher
    killed later than a moment after starting its processes is noticed (its pid may be 1: a container's launcher)."""
    launcher = os.getppid()
    if "LOCAL_RANK" not in os.environ or launcher in _watched:
        return
    _watched.add(launcher)

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(CHECK_SECONDS)
        print(f"lary: the launcher (pid {launcher}) is gone: process {os.getpid()} ends", file=sys.stderr)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(GRACE_SECONDS)
        os._exit(128 + signal.SIGTERM)

    threading.Thread(target=watch, name="lary-launcher-watch", daemon=True).start()


_stop_signal: int | None = None  # the signal that asked this process to stop, once one has


def stop_on_signals() -> None:
    """Ctrl-C and SIGTERM (a launcher, a scheduler, `kill`) end a command as a KeyboardInterrupt, and are remembered:
    Python may run a signal's handler inside a finalizer or a C library's callback, which prints its KeyboardInterrupt
    as "Exception ignored" and goes on; `raise_if_stopped` raises it again where the work can stop."""
    signal.signal(signal.SIGINT, _stop)
    signal.signal(signal.SIGTERM, _stop)


def _stop(signum: int, frame) -> None:
    global _stop_signal
    _stop_signal = signum
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM while it ends would interrupt its cleanup
    raise KeyboardInterrupt


def raise_if_stopped() -> None:
    """The KeyboardInterrupt of a stop that a signal asked for, if one did (its first raise may have been lost)."""
    if _stop_signal is not None:
        raise KeyboardInterrupt
