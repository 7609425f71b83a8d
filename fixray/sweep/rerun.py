"""What a run of `fixray sweep` finds before it starts anything (no Ray here): the store the sweep must go to, a file
that no longer plans the trials the sweep started with, and the trials that ended in an earlier run."""

from __future__ import annotations

from fixray.faults import KEPT_BY_A_RERUN
from fixray.records.runs import ended_trials
from fixray.storage import Storage
from fixray.sweep.plan import PlannedTrial
from fixray.sweep.spec.schema import SweepSpec
from fixray.sweep.state import check_record, refuse_a_changed_plan


def ended_earlier(spec: SweepSpec, trials: list[PlannedTrial]) -> int | None:
    """How many of the planned trials ended in an earlier run of the command and are kept; None for a sweep that has
    not started, or whose plan was not recorded (TPE, or a sweep started before plans were). BadInput for another
    store than the sweep's or a file that plans other trials (state.py), before anything starts."""
    where = Storage(spec.storage_path)
    check_record(spec, where)
    if refuse_a_changed_plan(spec, where, trials) is None:
        return None
    ended = ended_trials(spec.tracking.uri, spec.tracking.experiment, spec.name)
    return sum(1 for trial in trials if ended.get(trial.name) in KEPT_BY_A_RERUN)
