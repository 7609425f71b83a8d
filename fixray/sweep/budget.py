"""A budget's refusals as the driver sees them: a trial past the budget raises NotAdmitted before it trains, so Tune
records it as errored and the rerun of a larger budget retries it. Here it is neither retried within the run (a
refusal is no dead process) nor logged as a failure."""

from __future__ import annotations

import logging

from ray import tune

from fixray.faults import budget_refused, trial_refused
from fixray.records.restorable import Restorable

TUNE_LOGGER = "ray.tune.execution.tune_controller"  # logs every failed trial task with its traceback, at ERROR


class RefusalsNotRetried(Restorable, tune.Callback):
    """Tune callback: a trial that refused has nothing to retry, so its first retry is its last."""

    def on_trial_recover(self, iteration, trials, trial, **info) -> None:
        if trial_refused(trial):
            trial.max_failures = 0  # Tune already launched this retry; it will not launch another


def _not_a_refusal(record: logging.LogRecord) -> bool:
    return not budget_refused(record.exc_info[1] if record.exc_info else None)


def quiet_refusals() -> None:
    """Tune's traceback for each refusal says nothing the live view's 'not run' line does not (once per process)."""
    logger = logging.getLogger(TUNE_LOGGER)
    if _not_a_refusal not in logger.filters:
        logger.addFilter(_not_a_refusal)
