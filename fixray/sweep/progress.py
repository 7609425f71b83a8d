"""A live view of a running sweep: trials done / running / queued, epochs of the total, time left, best so far.

On a terminal one status line refreshes in place (trial starts and ends print above it); when output goes
to a file or a pipe, the same status prints as a plain line every PLAIN_EVERY_S and at every trial's end.
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

from mlflow.tracking import MlflowClient
from ray import tune

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import sent_params, sent_run_name
from fixray.faults import Outcome, trial_refused
from fixray.records.restorable import Restorable
from fixray.records.runs import PROGRESS_TAG

logger = logging.getLogger(__name__)

REFRESH_S = 2.0  # seconds between redraws of the status line on a terminal
PLAIN_EVERY_S = 30.0  # seconds between status lines when the output is not a terminal
PUBLISH_EVERY_S = 15.0  # seconds between copies of the status line on the sweep's parent run (`fixray status` reads it)
BAR_WIDTH = 20  # characters of the epoch bar
WAIT_SHOWN_AFTER_S = 10.0  # seconds a wait for resources lasts, no trial starting, before the line names it (Tune
# reserves a starting trial's resources before it counts as running: a shorter wait is a trial starting)


@dataclass(frozen=True)
class Snapshot:
    """Where a sweep stands, counted from Tune's trials."""

    trials: int  # planned
    done: int
    running: int
    epochs_done: int
    epochs_total: int  # planned epochs, less those a trial that ended early will never run
    elapsed_s: float
    rate: float  # epochs per second, measured since this driver started (NaN before the first)
    best: dict[bool, float]  # fixed?, -> best accuracy so far (absent: none reported yet)
    waiting: str = ""  # why queued trials wait for resources ('' when none does)

    @property
    def queued(self) -> int:
        return self.trials - self.done - self.running

    @property
    def left_s(self) -> float:
        return (self.epochs_total - self.epochs_done) / self.rate if self.rate > 0 else math.nan


def _clock(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def status_line(now: Snapshot) -> str:
    """e.g. '[0:12:05] [#####...............] trials 3/12 done, 2 running, 7 queued | epochs 45/240 | ...'."""
    share = now.epochs_done / now.epochs_total if now.epochs_total else 0.0
    bar = "#" * int(share * BAR_WIDTH) + "." * (BAR_WIDTH - int(share * BAR_WIDTH))
    best = " ".join(
        f"{'fixed' if fixed else 'learned'} {now.best[fixed] * 100:.2f}%" if fixed in now.best else f"{name} -"
        for fixed, name in ((True, "fixed"), (False, "learned"))
    )
    return (
        f"[{_clock(now.elapsed_s)}] [{bar}] trials {now.done}/{now.trials} done, {now.running} running, "
        f"{now.queued} queued | epochs {now.epochs_done}/{now.epochs_total} ({share:.0%}) | "
        f"~{_clock(now.left_s)} left | best test acc: {best}" + (f" | {now.waiting}" if now.waiting else "")
    )


class Progress(Restorable, tune.Callback):
    """Tune callback that keeps the live view; one line per trial start and end besides."""

    def __init__(
        self,
        trials: int,
        epochs: int,
        stream=None,
        parent: tuple[str, str] | None = None,
        waiting: Callable[[int, int], str] | None = None,
    ) -> None:
        self.trials, self.epochs, self.stream = trials, epochs, stream  # planned trials, epochs each
        self.parent = parent  # (tracking URI, parent run id): where the status line is copied for `fixray status`
        self.waiting = waiting  # (running, queued) -> why queued trials wait for resources ('' when none does)
        self._reset()

    def _reset(self) -> None:
        self.started_at = self.drawn_at = time.monotonic()
        self.published_at = self.asked_at = -math.inf
        self.wait_note = ""  # shown: why queued trials wait ('' when none does, or not for long yet)
        self.waiting_since: tuple[str, float, int] | None = None  # (note, since when, running then)
        self.epochs_at_start: int | None = None  # epochs already done when this driver started (a resume)
        self.status_shown = False

    @property
    def _out(self):
        return self.stream or sys.stdout

    def setup(self, **info) -> None:
        self._reset()

    @staticmethod
    def _epochs(trials: list) -> dict[str, int]:
        return {t.trial_id: (t.last_result or {}).get("training_iteration", 0) for t in trials}

    def _baseline(self, trials: list) -> None:
        """Epochs already done when this driver first sees the trials (a resume): the rate counts only new ones."""
        if self.epochs_at_start is None:
            self.epochs_at_start = sum(self._epochs(trials).values())

    def snapshot(self, trials: list, ending=None, starting=None) -> Snapshot:
        """`ending`: a trial Tune is ending right now, not yet marked so (counted as done); `starting`: one it is
        starting, not yet marked running."""
        self._baseline(trials)
        epochs = self.epochs
        ended = [t for t in trials if t.status in (t.TERMINATED, t.ERROR) or t is ending]
        done_epochs = self._epochs(trials)
        epochs_done = sum(done_epochs.values())
        # An ended trial will run no more epochs: the total shrinks by what it left out (early stop, divergence).
        epochs_total = self.trials * epochs - sum(epochs - done_epochs[t.trial_id] for t in ended)
        elapsed = time.monotonic() - self.started_at
        new_epochs = epochs_done - self.epochs_at_start
        best: dict[bool, float] = {}
        for trial in trials:
            value = (trial.last_result or {}).get(keys.BEST_ACC)  # "best so far": the best epoch's test accuracy
            if value is not None and math.isfinite(value):
                fixed = sent_params(trial.config)["fixed"]
                best[fixed] = max(best.get(fixed, -math.inf), value)
        return Snapshot(
            trials=self.trials,
            done=len(ended),
            running=sum((t.status == t.RUNNING or t is starting) and t is not ending for t in trials),
            epochs_done=epochs_done,
            epochs_total=max(epochs_total, epochs_done),
            elapsed_s=elapsed,
            rate=new_epochs / elapsed if new_epochs > 0 and elapsed > 0 else math.nan,
            best=best,
            waiting=self.wait_note,
        )

    def _ask_wait(self, trials: list) -> bool:
        """Asks why queued trials wait, every REFRESH_S; a wait is shown once it has lasted WAIT_SHOWN_AFTER_S with no
        trial starting. True when what is shown changed (printed at once, even in a log)."""
        if self.waiting is None or time.monotonic() - self.asked_at < REFRESH_S:
            return False
        self.asked_at = now = time.monotonic()
        where = self.snapshot(trials)
        note, since = self.waiting(where.running, where.queued), self.waiting_since
        if not note:
            self.waiting_since = None
        elif since is None or since[0] != note or where.running > since[2]:  # a new wait, or a trial started
            self.waiting_since = (note, now, where.running)
        lasted = self.waiting_since is not None and now - self.waiting_since[1] >= WAIT_SHOWN_AFTER_S
        shown = note if lasted else ""
        changed, self.wait_note = shown != self.wait_note, shown
        return changed

    def _terminal(self) -> bool:
        return getattr(self._out, "isatty", lambda: False)()

    def _status(self, trials: list, force: bool = False, ending=None) -> None:
        self._baseline(trials)
        now = time.monotonic()
        every = REFRESH_S if self._terminal() else PLAIN_EVERY_S
        if not force and now - self.drawn_at < every:
            return
        self.drawn_at = now
        line = status_line(self.snapshot(trials, ending))
        if self._terminal():
            self._out.write(f"\r\x1b[2K{line}")
            self.status_shown = True
        else:
            self._out.write(line + "\n")
        self._out.flush()

    def _event(self, verb: str, trials: list, trial, extra: str = "") -> None:
        name = sent_run_name(trial.config)
        clear = "\r\x1b[2K" if self.status_shown else ""
        self._out.write(f"{clear}[{_clock(time.monotonic() - self.started_at)}] {verb:<8} {name}{extra}\n")
        self.status_shown = False
        ending = trial if verb != "started" else None
        self._status(trials, force=self._terminal() or ending is not None, ending=ending)  # plain: per trial end
        self._publish(trials, force=True, ending=ending, starting=trial if ending is None else None)

    def _publish(self, trials: list, force: bool = False, ending=None, starting=None) -> None:
        """Copies the status line onto the parent run every PUBLISH_EVERY_S; a store away skips a copy, not a trial."""
        if self.parent is None or (not force and time.monotonic() - self.published_at < PUBLISH_EVERY_S):
            return
        self.published_at = time.monotonic()
        uri, parent_id = self.parent
        try:
            MlflowClient(uri).set_tag(parent_id, PROGRESS_TAG, status_line(self.snapshot(trials, ending, starting)))
        except Exception as error:  # noqa: BLE001 - the live view is best effort; MLflow's own writes are spooled
            logger.debug("progress not copied to MLflow: %s", error)

    def on_step_end(self, iteration, trials, **info) -> None:
        changed = self._ask_wait(trials)
        self._status(trials, force=changed)
        self._publish(trials, force=changed)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._event("started", trials, trial)

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        last = trial.last_result or {}
        acc = f"{keys.VAL_ACC} {last.get(keys.VAL_ACC, math.nan):.4f}"
        state = Outcome.DIVERGED.value if last.get(keys.DIVERGED) == 1 else acc
        self._event("finished", trials, trial, f" ({state} at epoch {last.get(keys.EPOCH, 0)})")

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        if trial_refused(trial):
            self._event("not run", trials, trial, " (past the budget)")
        else:
            self._event("FAILED", trials, trial, f" (logs in {trial.path})")

    def on_experiment_end(self, trials, **info) -> None:
        self._status(trials, force=True)
        self._publish(trials, force=True)
        if self.status_shown:
            self._out.write("\n")
            self._out.flush()
