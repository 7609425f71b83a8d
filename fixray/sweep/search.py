"""How Ray Tune walks a sweep's plan: fixray's own trials as one grid, or Optuna's TPE, whose suggestions the
driver settles into trials before they start; ASHA early stopping; how many trials fit at once.
"""

from __future__ import annotations

import copy
from typing import Any

import ray
from ray import tune
from ray.tune.search import Repeater, Searcher

from fixray.sweep.plan import PlannedTrial, suggested_trial
from fixray.sweep.spec import SweepSpec
from fixray.trial import metric_keys as keys
from fixray.trial.contract import TRIAL_KEY

# What ASHA and TPE rank trials by: the best test accuracy so far, the number tables rank configurations by (a
# diverged trial reports NaN: failed).
METRIC, MODE = keys.BEST_ACC, "max"


def _domain(value: dict[str, Any]):
    """A range or choice as a Ray Tune domain, for searchers that draw configurations themselves (TPE)."""
    ((dist, args),) = value.items()
    domain = {"loguniform": tune.loguniform, "uniform": tune.uniform, "choice": tune.choice}[dist]
    return domain(args) if dist == "choice" else domain(*args)


def param_space(spec: SweepSpec, trials: list[PlannedTrial]) -> dict[str, Any]:
    """Tune's param space: fixray's planned trials as one grid_search, or Tune domains for TPE to draw from."""
    if spec.search.method == "tpe":
        space = spec.search.space.parameters()
        return {
            k: _domain(v) if isinstance(v, dict) else tune.choice(v) if isinstance(v, list) else v
            for k, v in space.items()
        }
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

    def get_state(self) -> dict:
        return copy.deepcopy({k: v for k, v in self.__dict__.items() if k != "searcher"})

    def set_state(self, state: dict) -> None:
        self.__dict__.update(state)

    def save(self, checkpoint_path: str) -> None:
        self.searcher.save(checkpoint_path)

    def restore(self, checkpoint_path: str) -> None:
        self.searcher.restore(checkpoint_path)


def search_alg(spec: SweepSpec) -> Searcher | None:
    """TPE: Optuna's suggestions, one trial per seed each (Repeater), settled here; grid and random: None (Tune's
    generator walks fixray's grid of planned trials)."""
    if spec.search.method != "tpe":
        return None
    from ray.tune.search.optuna import OptunaSearch

    searcher = OptunaSearch(metric=METRIC, mode=MODE, seed=spec.search.random_seed)
    if len(spec.seeds) > 1:
        searcher = Repeater(searcher, repeat=len(spec.seeds))
    return SettledSuggestions(searcher, spec)


def scheduler(spec: SweepSpec):
    """ASHA early stopping on test accuracy, in epochs, when the sweep file asks for it."""
    if spec.search.asha is None:
        return None
    return tune.schedulers.ASHAScheduler(
        time_attr="training_iteration",
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
