"""One driver per sweep: an exclusive lock on the sweep's driver folder for as long as its driver runs it."""

from __future__ import annotations

import fcntl
import os
import socket
import time
from pathlib import Path

from fixray.errors import SweepBusy

LOCK_FILE = ".fixray-driver.lock"  # in the driver's folder: held (flock) by the driver running the sweep


class DriverLock:
    """Held while this driver runs the sweep; released when it exits or dies (the kernel drops the flock)."""

    def __init__(self, driver_dir: Path, sweep: str) -> None:
        self.path = driver_dir / LOCK_FILE
        self.name = sweep
        self._file = None

    def __enter__(self) -> DriverLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a+")
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise SweepBusy(
                f"sweep {self.name!r} is already running ({holder}; lock {self.path}). Wait for it to end or stop "
                f"it (Ctrl-C, or SIGTERM to that process), then run the same command to resume; or pass --fresh "
                f"to start a new sweep beside it."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        self._file = handle
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None:
            self._file.close()  # closing releases the flock
            self._file = None
