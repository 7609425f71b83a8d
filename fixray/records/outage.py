"""MLflow writes that outlive an unreachable tracking server: applied in order, kept on disk while pending,
retried with backoff, replayed when the server is back. Training never waits for MLflow.

Each write is a plain JSON record the caller knows how to apply, and applying one twice changes nothing
(metrics skip epochs the run already holds; tags and artifacts overwrite), so a driver that dies between
applying a write and forgetting it loses nothing and duplicates nothing when it replays the spool.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from fixray.faults import store_unreachable

SPOOL_FILE = "mlflow-pending.jsonl"  # in the sweep's folder, while writes wait for the tracking server
RETRIED = "retried"  # set on a write that failed once: it may have landed, so its applier checks the store first
FIRST_BACKOFF_S = 2.0  # seconds before the first retry; doubled after every failed one
MAX_BACKOFF_S = 60.0  # retries never wait longer than this
# MLflow's own HTTP retries (7, backoff factor 2: minutes per request) would stall the sweep's event loop
# while the server is away; a driver asks for few and short ones, and retries the write itself.
DRIVER_HTTP_SETTINGS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
}


def use_driver_http_settings() -> None:
    """Short MLflow HTTP retries in this process, unless the user set their own."""
    for name, value in DRIVER_HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)


class PendingWrites:
    """An ordered queue of writes to MLflow, spooled to a JSON-lines file while any is pending."""

    def __init__(self, spool: Path, apply: Callable[[dict[str, Any]], None]) -> None:
        self.spool, self.apply = spool, apply
        self.queue: deque[dict[str, Any]] = deque()
        if spool.exists():  # left by a driver that stopped while the server was away
            self.queue.extend(json.loads(line) for line in spool.read_text().splitlines() if line.strip())
        self.retry_at, self.backoff, self.warned = 0.0, FIRST_BACKOFF_S, False

    def __len__(self) -> int:
        return len(self.queue)

    def submit(self, write: dict[str, Any]) -> None:
        """Applies the write now, or (the store away, or earlier writes pending) queues it behind the others."""
        if not self.queue:
            try:
                self.apply(write)
                return
            except Exception as error:
                if not store_unreachable(error):
                    raise
                self._failed(error)
                write = write | {RETRIED: True}
        self.queue.append(write)
        self.spool.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spool, "a") as f:
            f.write(json.dumps(write) + "\n")
        self.flush()

    def flush(self, wait: bool = False) -> bool:
        """Applies pending writes in order while the store answers; True when none is left.

        wait=False tries only once the backoff has passed (called from the sweep's event loop)."""
        if not self.queue:
            return True
        if not wait and time.monotonic() < self.retry_at:
            return False
        while self.queue:
            try:
                self.apply(self.queue[0])
            except Exception as error:
                if not store_unreachable(error):
                    raise
                self.queue[0][RETRIED] = True
                self._failed(error)
                return False
            self.queue.popleft()
        self.spool.unlink(missing_ok=True)
        self.backoff, self.warned = FIRST_BACKOFF_S, False
        print("MLflow is reachable again: every pending write is in the store.", file=sys.stderr, flush=True)
        return True

    def _failed(self, error: Exception) -> None:
        self.retry_at = time.monotonic() + self.backoff
        self.backoff = min(self.backoff * 2, MAX_BACKOFF_S)
        if not self.warned:
            self.warned = True
            print(
                f"MLflow is unreachable ({type(error).__name__}); training goes on and its writes wait in "
                f"{self.spool}, retried every {MAX_BACKOFF_S:.0f} s at most.",
                file=sys.stderr,
                flush=True,
            )
