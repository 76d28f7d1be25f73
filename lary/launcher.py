"""A process started by a launcher (`accelerate launch`, `torchrun`) ends when its launcher does.

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
