"""Faults in one room: what became of a trial (Outcome), and every rule that tells one fault from another — the
cluster's or the trial's own code, a full disk, the budget's refusal, a tracking store that is away. Asked by a trial
process (whether to retry), the driver (how a sweep ends) and the records (what a table counts); it imports none of
their rooms, nor torch, mlflow or (but inside the one rule that needs it) Ray.
"""

from __future__ import annotations

import errno
import os
import pickle
from collections.abc import Iterator
from enum import Enum


class Outcome(str, Enum):
    """What became of a trial's run, in the order summaries name them; its MLflow status tag."""

    FINISHED = "finished"  # ran every epoch: the only outcome whose numbers a table averages as a seed
    DIVERGED = "diverged"  # its loss turned NaN or infinite and it stopped
    STOPPED_EARLY = "stopped_early"  # early stopping (ASHA) ended it before its last epoch
    ERROR = "error"  # its own code raised (a rerun of the command retries it)
    NOT_RUN = "not_run"  # past the sweep's budget: never trained (a rerun with a larger budget runs it)
    UNFINISHED = "unfinished"  # no status tag yet: running, or its sweep was interrupted

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


# How a trial may end and stay ended: a rerun of the command retries errors (and trials a budget left out), never these.
KEPT_BY_A_RERUN = (Outcome.FINISHED, Outcome.DIVERGED, Outcome.STOPPED_EARLY)


class NotAdmitted(RuntimeError):
    """Raised by a trial the sweep's budget leaves out, before it trains: Tune records it as errored, so the rerun of a
    larger budget retries it (and the driver reports it as not run, never as a failure)."""


class Superseded(RuntimeError):
    """Raised by a trial's attempt that finds a later attempt of its trial started (its node was cut off and Ray
    retried the trial elsewhere): it stops before writing anything more (crossing/attempts.py)."""


def causes(error: BaseException) -> Iterator[BaseException]:
    """An error and every error behind it: causes, contexts, Ray's wrapped causes and DDP worker failures."""
    seen, pending = set(), [error]
    while pending:
        found = pending.pop()
        if found is None or id(found) in seen:
            continue
        seen.add(id(found))
        yield found
        pending += [found.__cause__, found.__context__, getattr(found, "cause", None)]
        pending += list((getattr(found, "worker_failures", None) or {}).values())  # Ray Train's worker group


def infrastructure_failure(error: BaseException) -> bool:
    """Whether an error came from Ray's processes or nodes (retry it) rather than the trial's own code (do not); a
    superseded attempt is one of the cluster's: the attempt that took over is the trial's."""
    from ray import exceptions as ray_errors

    lost = (  # a process, node or object the trial's code did not break
        ray_errors.RayActorError,
        ray_errors.WorkerCrashedError,
        ray_errors.NodeDiedError,
        ray_errors.ObjectLostError,
        ray_errors.OwnerDiedError,
        ray_errors.RaySystemError,
        Superseded,
    )
    return any(isinstance(found, lost) for found in causes(error))


def out_of_space(error: BaseException) -> bool:
    """Whether an error is a full disk (ENOSPC), even one Ray passed on as text."""
    return any(
        (isinstance(found, OSError) and found.errno == errno.ENOSPC) or os.strerror(errno.ENOSPC) in str(found)
        for found in causes(error)
    )


def budget_refused(error: BaseException | None) -> bool:
    """Whether an error is the budget's refusal (NotAdmitted, however Ray wrapped it) rather than a failure."""
    return error is not None and any(isinstance(found, NotAdmitted) for found in causes(error))


def store_unreachable(error: BaseException) -> bool:
    """A tracking store that is away (connection refused, timeout, 5xx): wait it out; not a write it rejects (4xx: a
    bug to report). MLflow's errors are read by their status, without importing MLflow here."""
    status = getattr(error, "get_http_status_code", None)
    if status is None:
        return isinstance(error, (OSError, ConnectionError)) or "requests" in type(error).__module__
    return status() >= 500 or getattr(error, "error_code", None) in ("TEMPORARILY_UNAVAILABLE", "INTERNAL_ERROR")


def trial_outcome(*, failed: bool, refused: bool, diverged: bool, epoch: int, epochs: int) -> Outcome:
    """How a trial that Tune ended is recorded: refused by the budget, failed, diverged, stopped before its last
    epoch, or finished."""
    if failed:
        return Outcome.NOT_RUN if refused else Outcome.ERROR
    if diverged:
        return Outcome.DIVERGED
    return Outcome.STOPPED_EARLY if epoch < epochs else Outcome.FINISHED


def trial_refused(trial) -> bool:
    """Whether a Tune trial failed only because the sweep's budget left it out (it raised NotAdmitted before
    training), read from the error Tune saved for it. Tune writes it into the driver's copy of the trial's folder
    before it calls back and copies that to the storage later, so the driver's copy is read first."""
    try:
        saved = trial.pickled_error_file  # the driver's copy (None before the trial's first error)
        if saved is not None and os.path.exists(saved):
            with open(saved, "rb") as file:
                error = pickle.load(file)  # written by cloudpickle, whose files plain pickle reads
        else:
            error = trial.get_pickled_error()  # the storage's copy: a trial restored from an earlier run
    except Exception:  # an error file that cannot be read says nothing about the budget
        return False
    return budget_refused(error)
