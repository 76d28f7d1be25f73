"""One live `lary extract` run per output folder: `OUTDIR/.lock`, locked by the run's main process.

The lock is a POSIX record lock (`fcntl.lockf`): the kernel drops it when its process ends, however it ends (SIGKILL
included), so a lock left by a dead run is simply taken over; it belongs to the main process alone (the DataLoader
workers it forks do not inherit it), and network file systems that all machines of a job see support it. The file
holds the holder's host and pid, which a refused run names.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import socket
import time
from pathlib import Path

from lary.errors import LaryError

LOCK_FILE = ".lock"

logger = logging.getLogger(__name__)


class OutputLock:
    """`OUTDIR/.lock`, held from `acquire` until `release`, the end of a `with` block or of the process."""

    def __init__(self, outdir: Path):
        self.path = outdir / LOCK_FILE
        self.descriptor: int | None = None
        self.created = False  # whether this run made the file (`discard` removes only that)

    def _open(self) -> int:
        try:
            try:
                descriptor, self.created = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644), True
            except FileExistsError:
                descriptor, self.created = os.open(self.path, os.O_RDWR), False
        except OSError as error:
            if error.errno == errno.ENOSPC:
                raise
            raise LaryError(f"--out {self.path.parent}: cannot write there ({error.strerror})") from None
        return descriptor

    def acquire(self) -> None:
        """Lock the folder, or raise a `LaryError` naming the live run that holds it."""
        while True:
            descriptor = self._open()
            try:
                fcntl.lockf(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as error:
                if error.errno not in (errno.EACCES, errno.EAGAIN):  # a file system without locks: warn, and go on
                    logger.warning("cannot lock %s (%s): make sure no other run writes into %s", self.path, error,
                                   self.path.parent)
                else:
                    os.close(descriptor)
                    raise LaryError(
                        f"{self.path.parent} is being written by another run ({self._holder()}): wait for it to end "
                        "or stop it, or choose another --out"
                    ) from None
            if self._is_current(descriptor):
                break
            os.close(descriptor)  # a refused run removed the file it had locked (`discard`) after we opened it
        os.ftruncate(descriptor, 0)
        holder = {"host": socket.gethostname(), "pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
        os.write(descriptor, json.dumps(holder).encode())
        self.descriptor = descriptor

    def _holder(self) -> str:
        try:
            holder = json.loads(self.path.read_text())
            return f"host {holder['host']}, pid {holder['pid']}, started {holder['started']}"
        except (OSError, ValueError, KeyError, TypeError):  # written at this moment, or by something else
            return f"see {self.path}"

    def _is_current(self, descriptor: int) -> bool:
        """Whether the locked file is still the one at `self.path`."""
        try:
            here = os.stat(self.path)
        except FileNotFoundError:
            return False
        locked = os.fstat(descriptor)
        return (here.st_dev, here.st_ino) == (locked.st_dev, locked.st_ino)

    def release(self) -> None:
        if self.descriptor is not None:
            os.close(self.descriptor)  # closing the file drops the lock; the file stays for the folder's next run
            self.descriptor = None

    def discard(self) -> None:
        """Release, removing the file if this run created it (a run refused before it wrote anything leaves the folder
        as it found it); a lock file that was there before stays. Removed while still locked: a run that opened it
        meanwhile finds it gone once it holds the lock, and opens the path again."""
        if self.descriptor is not None and self.created:
            self.path.unlink(missing_ok=True)
        self.release()

    def __enter__(self) -> OutputLock:
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()
