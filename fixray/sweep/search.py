"""How Ray Tune walks a sweep's plan: fixray's own trials as one grid, or a searcher's (Optuna's TPE) suggestions,
which the driver settles into trials before they start; ASHA early stopping; how many trials fit at once.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import ray
from ray import tune
from ray.tune.search import Repeater, Searcher

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import TRIAL_KEY
from fixray.sweep.plan import PlannedTrial, suggested_trial
from fixray.sweep.spec.schema import SweepSpec
from fixray.sweep.spec.values import SettingValues

# What ASHA and TPE rank trials by: the best test accuracy so far, the number tables rank configurations by (a
# diverged trial reports NaN: failed).
METRIC, MODE = keys.BEST_ACC, "max"


def _domain(values: SettingValues) -> Any:
    """A searched setting as a Ray Tune domain, for searchers that draw configurations themselves (TPE): a range, a
    choice among the listed values, or the one value."""
    if values.bounds is not None:
        return {"loguniform": tune.loguniform, "uniform": tune.uniform}[values.distribution](*values.bounds)
    return tune.choice(list(values.listed)) if len(values.listed) > 1 else values.listed[0]


# A grown sweep's earlier samples its searcher starts from (drawn values, mean best accuracy over seeds): its searcher
# then holds the search space itself. None: a sweep's first Tune experiment, whose searcher Tune hands the space.
Evaluated = tuple[tuple[dict, float], ...] | None


def _domains(spec: SweepSpec) -> dict[str, Any]:
    return {name: _domain(values) for name, values in spec.searched().items()}


def param_space(spec: SweepSpec, trials: list[PlannedTrial], evaluated: Evaluated = None) -> dict[str, Any]:
    """Tune's param space: fixray's planned trials as one grid_search, or Tune domains for a searcher to draw from
    (none when the searcher was given them, to start from earlier samples: only the settings nothing draws)."""
    if not spec.search.search_method.plans_ahead:
        domains = _domains(spec)
        if evaluated is not None:
            return {name: value for name, value in domains.items() if not isinstance(value, tune.search.sample.Domain)}
        return domains
    return {TRIAL_KEY: tune.grid_search([trial.sent() for trial in trials])}


class SettledSuggestions(Searcher):
    """Wraps a searcher so that each suggestion reaches its trial as a settled config, made here in the driver:
    a trial process never plans (the same crossing as the grid's)."""

    def __init__(self, searcher: Searcher, spec: SweepSpec) -> None:
        self.searcher, self.spec = searcher, spec
        super().__init__(metric=searcher.metric, mode=searcher.mode)

    def suggest(self, trial_id: str) -> dict | None:
        suggestion = self.searcher.suggest(trial_id)
        if not isinstance(suggestion, dict):
            return suggestion  # None (wait) or Searcher.FINISHED
        return suggestion | {TRIAL_KEY: suggested_trial(self.spec, suggestion).sent()}

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        self.searcher.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False) -> None:
        self.searcher.on_trial_complete(trial_id, result=result, error=error)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return self.searcher.set_search_properties(metric, mode, config, **spec)

    def set_max_concurrency(self, max_concurrent: int) -> bool:
        return self.searcher.set_max_concurrency(max_concurrent)

    def __getstate__(self) -> dict:
        # Tune pickles this searcher into the sweep's saved state: the spec goes as plain data (see SweepSpec.as_data).
        return self.__dict__ | {"spec": self.spec.as_data()}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state | {"spec": SweepSpec.from_data(state["spec"])})

    def get_state(self) -> dict:
        # The spec is this run's own (the driver builds it anew from the file), never part of the saved state.
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k not in ("searcher", "spec")})

    def set_state(self, state: dict) -> None:
        self.__dict__.update({k: v for k, v in state.items() if k not in ("searcher", "spec")})

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


# Search method (search.method) -> the Tune searcher of a method that draws its trials as the sweep runs, given the
# earlier samples of a sweep that grew (none for a new sweep).
TUNE_SEARCHERS: dict[str, Callable[[SweepSpec, Evaluated], Searcher]] = {}


def tune_searcher(method: str) -> Callable:
    """Registers the Tune searcher of a search method that does not plan ahead (methods.py declares the method)."""

    def register(make: Callable[[SweepSpec, Evaluated], Searcher]) -> Callable[[SweepSpec, Evaluated], Searcher]:
        TUNE_SEARCHERS[method] = make
        return make

    return register


@tune_searcher("tpe")
def _optuna_tpe(spec: SweepSpec, evaluated: Evaluated) -> Searcher:
    """Optuna's TPE, seeded by search.random_seed; a grown sweep's is told the earlier samples' results first (Optuna
    takes them as finished trials: none is run again)."""
    from ray.tune.search.optuna import OptunaSearch

    if evaluated is None:
        return OptunaSearch(metric=METRIC, mode=MODE, seed=spec.search.random_seed)
    space = OptunaSearch.convert_search_space(_domains(spec))
    seed = spec.search.random_seed
    return OptunaSearch(
        space=space,
        metric=METRIC,
        mode=MODE,
        # Not the first searcher's seed: its first random draws would be the first sweep's again (the same trials).
        seed=None if seed is None else seed + 1 + len(evaluated),
        points_to_evaluate=[{name: point[name] for name in space} for point, _ in evaluated],
        evaluated_rewards=[reward for _, reward in evaluated],
    )


def search_alg(spec: SweepSpec, evaluated: Evaluated = None) -> Searcher | None:
    """A method that draws as it runs: its searcher's suggestions, one trial per seed each (Repeater), settled here;
    a method that plans ahead: None (Tune's generator walks fixray's grid of planned trials)."""
    if spec.search.search_method.plans_ahead:
        return None
    searcher = TUNE_SEARCHERS[spec.search.method](spec, evaluated)
    if len(spec.seeds) > 1:
        searcher = Repeater(searcher, repeat=len(spec.seeds))
    return SettledSuggestions(searcher, spec)


def num_samples(spec: SweepSpec, expected: int) -> int:
    """Tune's num_samples: a drawing searcher's every trial (Repeater's copies counted), or 1 for the planned grid."""
    return 1 if spec.search.search_method.plans_ahead else expected


def scheduler(spec: SweepSpec):
    """ASHA early stopping on test accuracy, in epochs, when the sweep file asks for it."""
    if spec.search.asha is None:
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr=keys.EPOCH,  # the trial's own epoch: a trial resumed in a grown sweep's new Tune experiment counts on
        max_t=spec.epochs,
        grace_period=spec.search.asha.grace_period,
        reduction_factor=spec.search.asha.reduction_factor,
    )


def max_concurrent(spec: SweepSpec) -> int | None:
    """Caps trials so every running trial's DDP workers fit at once (else Train runs can deadlock)."""
    asked = spec.search.max_concurrent_trials
    resources = spec.resources
    if resources.workers == 1:
        return asked
    cluster = ray.cluster_resources()
    fit = int(cluster.get("CPU", 0) // (resources.workers * resources.cpus_per_trial))
    if resources.gpus_per_trial > 0:
        fit = min(fit, int(cluster.get("GPU", 0) // (resources.workers * resources.gpus_per_trial)))
    if fit < 1:
        raise RuntimeError(
            f"one trial needs {resources.workers} workers x {resources.cpus_per_trial} CPU "
            f"but the Ray cluster has {cluster.get('CPU', 0):g} CPUs"
        )
    return min(fit, asked) if asked else fit
