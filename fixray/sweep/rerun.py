"""What a run of `fixray sweep` does with what earlier runs of the same sweep left, decided before it starts anything
(no Ray here): a trial is its identity (plan.py), so whatever the file's edits, a trial that ended earlier is kept, one
that stopped midway resumes from its last checkpoint, a new one runs, and one the file no longer plans is left out of
its tables. The sweep's store and a file for another dataset are checked here too (state.py)."""

from __future__ import annotations

import json
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fixray.errors import BadInput
from fixray.faults import KEPT_BY_A_RERUN, Outcome
from fixray.storage import Storage
from fixray.sweep.lock import DriverLock
from fixray.sweep.plan import PlannedTrial
from fixray.sweep.spec.schema import SweepSpec
from fixray.sweep.state import (
    GROWN_PREFIX,
    SavedPlan,
    changed_settings,
    check_record,
    more_draws,
    refuse_another_dataset,
    saved_plan,
    scheduler_of,
)

if TYPE_CHECKING:  # the store's records are read only when the sweep's folder holds an earlier run of it
    from fixray.records.runs import SweepRuns


@dataclass(frozen=True)
class Rerun:
    """The file's trials against the sweep's earlier ones, by identity."""

    spec: SweepSpec
    trials: list[PlannedTrial]  # every trial the file plans
    kept: frozenset[str]  # identities that ended earlier (finished, diverged, stopped early by the same scheduler)
    resumed: frozenset[str]  # identities an earlier run started and left unended: they continue (or retry)
    not_in_file: int  # earlier trial runs whose trial the file no longer plans
    tune: str  # the Tune experiment (a folder below the sweep's) that runs what is left
    restores: bool  # whether that experiment's saved state is restored (it holds exactly what is left to run)
    tune_trials: frozenset[str]  # the identities that experiment's grid holds (a restored one: ended ones too)
    changed: list[str]  # the settings every trial shares that the file changed since it last ran
    # A method that draws as it runs (TPE): the samples its Tune experiment draws, each run once per seed (None: every
    # trial planned), and the earlier samples it starts from: each one's drawn values and its seeds' mean best accuracy.
    draws: int | None = None
    evaluated: tuple[tuple[dict, float], ...] = ()

    @property
    def to_run(self) -> list[PlannedTrial]:
        return [trial for trial in self.trials if trial.identity not in self.kept]

    @property
    def runs_nothing(self) -> bool:
        """Every trial the file plans ended earlier: the answer is read from MLflow, without Ray."""
        return self.draws is None and not self.to_run

    @property
    def plan(self) -> SavedPlan:
        """What the sweep's folder records once this run starts."""
        held = [trial for trial in self.trials if trial.identity in self.tune_trials]
        return SavedPlan.of(self.spec, self.trials, self.tune, held, self.draws or 0)

    def text(self) -> str:
        """e.g. '24 ended earlier (kept), 12 new; 6 earlier runs not in this file'."""
        if self.draws is not None and not self.restores:
            method = self.spec.search.method
            return (
                f"{len(self.kept)} ended earlier (kept); {self.draws} more configuration(s) drawn by {method}, each "
                f"once per seed, starting from the {len(self.evaluated)} earlier ones' results"
            )
        new = len(self.to_run) - len(self.resumed)
        parts = [f"{len(self.kept)} ended earlier (kept)"] if self.kept else []
        parts += [f"{len(self.resumed)} continue from where they stopped"] if self.resumed else []
        parts += [f"{new} new"] if new else []
        said = ", ".join(parts) or "nothing to run"
        if self.not_in_file:
            said += f"; {self.not_in_file} earlier run(s) not in this file (kept in MLflow, left out of its tables)"
        if self.changed:
            said += f"; the file changed {', '.join(self.changed)} since it last ran (a different trial for each)"
        return said


def look(spec: SweepSpec, trials: list[PlannedTrial]) -> Rerun | None:
    """The rerun of a sweep whose plan its folder records; None for a sweep not started yet (or started before plans
    were recorded, or a method that draws as it runs: Tune's saved state alone resumes it). BadInput for another store
    than the sweep's or another dataset, before anything starts."""
    where = Storage(spec.storage_path)
    check_record(spec, where)
    saved = saved_plan(spec, where)
    if saved is None:
        return None
    refuse_another_dataset(spec, where, saved)
    if not trials:
        return _drawing(spec, where, saved)
    from fixray.records.runs import earlier_trials

    earlier = earlier_trials(spec.tracking.uri, spec.tracking.experiment, spec.name)
    same_scheduler = saved.scheduler == scheduler_of(spec)
    kept = frozenset(
        t.identity
        for t in trials
        if earlier.get(t.identity) in KEPT_BY_A_RERUN
        and (same_scheduler or earlier[t.identity] != Outcome.STOPPED_EARLY)
    )
    planned = {t.identity for t in trials}
    left = planned - kept
    # Tune's saved state resumes its unended trials and keeps its ended ones: restored only when its unended ones are
    # exactly what is left to run, under the same early stopping; else a new Tune experiment runs what is left.
    restores = same_scheduler and saved.tune_trials - kept == left
    tune = saved.tune if restores or not left else _next(saved.tune)
    held = saved.tune_trials if restores or not left else frozenset(left)
    return Rerun(
        spec,
        trials,
        kept,
        frozenset(i for i in left if i in earlier),
        sum(1 for identity in earlier if identity not in planned),
        tune,
        restores,
        held,
        changed_settings(spec, trials, saved) if not kept else [],
    )


def _drawing(spec: SweepSpec, where: Storage, saved: SavedPlan) -> Rerun | None:
    """A method that draws as it runs (TPE): the same file resumes its Tune experiment's saved state (None for the
    sweep's first, which needs no naming); a larger num_samples keeps every earlier sample and draws the rest in a new
    Tune experiment whose searcher starts from their results. BadInput for any other change, or for a growth while
    earlier samples are left unended (the first file, run again, finishes them)."""
    more = more_draws(spec, where, saved)
    if not more:
        if not saved.tune:
            return None
        return Rerun(spec, [], frozenset(), frozenset(), 0, saved.tune, True, frozenset(), [], saved.tune_draws)
    from fixray.records.runs import earlier_best, earlier_trials
    from fixray.sweep.checkpoints import drawn_points, tune_experiments

    earlier = earlier_trials(spec.tracking.uri, spec.tracking.experiment, spec.name)
    unended = sorted({outcome for outcome in earlier.values() if outcome not in KEPT_BY_A_RERUN})
    if unended:
        raise BadInput(
            f"{spec.search.method} sweep {spec.name!r} has trials left {', '.join(unended)} by an earlier run: its "
            f"file as it was (search.num_samples: {saved.drawn['search']['num_samples']}) finishes or retries them "
            f"first; then this file draws {more} more configuration(s)."
        )
    points: dict[str, dict] = {}
    for experiment in tune_experiments(where, spec.name):
        points |= drawn_points(where, experiment)
    best, rewards = earlier_best(spec.tracking.uri, spec.tracking.experiment, spec.name), {}
    for identity, point in points.items():  # the seeds of one drawn configuration share its point
        if identity in best:
            rewards.setdefault(json.dumps(point, sort_keys=True), []).append(best[identity])
    evaluated = tuple((json.loads(point), statistics.fmean(found)) for point, found in rewards.items())
    kept = frozenset(earlier)
    return Rerun(spec, [], kept, frozenset(), 0, _next(saved.tune), False, frozenset(), [], more, evaluated)


def _next(tune: str) -> str:
    """The Tune experiment after `tune`: grown-2 after the sweep's first, then grown-3, ..."""
    return f"{GROWN_PREFIX}{int(tune.removeprefix(GROWN_PREFIX)) + 1 if tune else 2}"


def settle_without_running(rerun: Rerun) -> SweepRuns:
    """A rerun with nothing left to run, without Ray: the sweep's folder records the file's plan, MLflow the runs it
    no longer plans, and the answer is published again when that changed what the tables hold."""
    from fixray.records.runs import SweepRuns

    spec, where = rerun.spec, Storage(rerun.spec.storage_path)
    with DriverLock(where.driver_dir(spec.name), spec.name):
        rerun.plan.write(spec, where)
        runs = SweepRuns(spec.tracking.uri, spec.tracking.experiment, spec.name, create=False)
        if runs.mark_in_file({trial.identity for trial in rerun.trials}):
            # The tables' and the cost's imports, only when what the file plans changed.
            from fixray.records.sweep_report import publish
            from fixray.sweep.cost import compute_plan

            cost = compute_plan(spec, rerun.trials)
            runs.log_plan(cost.flop, cost.gpu_hours, cost.trials, spec.seeds)
            publish(runs)
        if runs.client.get_run(runs.parent_id).info.status != "FINISHED":
            runs.end("FINISHED")  # every trial it plans has ended
    return runs
