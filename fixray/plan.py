"""A validated SweepSpec -> its trials: grid points, random draws, seeds, de-duplication. No Ray here.

`fixray validate` counts trials with this module alone; sweep.py hands the same points to Ray Tune.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import numpy as np

from fixray.data import DATASETS
from fixray.spec import SweepSpec, planned_trials_bound
from fixray.trial import TrialConfig, to_params, with_values

SEED = "seed"
TRIAL_INDEX = "__trial_index__"  # Ray Tune's Repeater numbers the copies of one TPE suggestion under this key


def _draw(value: dict[str, Any], rng: np.random.Generator) -> Any:
    ((dist, args),) = value.items()
    if dist == "choice":
        return args[rng.integers(len(args))]
    if dist == "loguniform":
        return float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1]))))
    return float(rng.uniform(*args))


def trial_config(spec: SweepSpec, point: dict[str, Any]) -> TrialConfig:
    """One trial's contract: the sweep's settings, overridden by a point's searched values (seed included)."""
    base = TrialConfig(
        model=spec.model,
        pooling=spec.pooling,
        normalisation=spec.normalisation,
        epochs=spec.epochs,
        seed=int(point[SEED]),
        batch_size=spec.batch_size,
        lr=spec.lr,
        optimizer=spec.optimizer,
        schedule=spec.schedule,
        head=spec.head,
        augmentation=spec.augmentation or DATASETS[spec.dataset].augmentation,
    )
    return with_values(base, {k: v for k, v in point.items() if k != SEED}).settled()


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's searched values and seed, for grid and random search.

    Random search draws `num_samples` configurations from the ranges (seeded by search.random_seed),
    crossed with the grid lists; every configuration then runs once per seed, so seeds share it.
    Points are de-duplicated by the trial they make: options a head kind does not read (S of a
    dot-product head) are dropped, so such a head is not trained once per S value.
    """
    return list(_iter_points(spec))


def _iter_points(spec: SweepSpec) -> Iterator[dict[str, Any]]:
    grids, ranges = spec.search.grids_and_ranges()
    rng = np.random.default_rng(spec.search.random_seed)
    draws = [{k: _draw(v, rng) for k, v in ranges.items()} for _ in range(spec.search.num_samples if ranges else 1)]
    seen = set()
    for draw in draws:
        for values in itertools.product(*grids.values(), spec.seeds):
            point = {**dict(zip(grids, values)), **draw, SEED: values[-1]}
            cfg = trial_config(spec, point)
            if cfg not in seen:
                seen.add(cfg)
                params = to_params(cfg)
                yield {k: params[k] for k in point if k != SEED and params[k] is not None} | {SEED: cfg.seed}


def expected_trials(spec: SweepSpec) -> int:
    """Trials after de-duplication, counted one at a time (validation has bounded them by search.max_trials)."""
    if spec.search.method == "tpe":  # Optuna draws each configuration: nothing to de-duplicate in advance
        return planned_trials_bound(spec)
    return sum(1 for _ in _iter_points(spec))


def trial_point(tune_config: dict[str, Any], seeds: list[int], point_key: str) -> dict[str, Any]:
    """A Tune trial config back to its point: fixray's own grid point, or a TPE suggestion plus its seed."""
    point = {
        **tune_config.get(point_key, {}),
        **{k: v for k, v in tune_config.items() if k not in (point_key, TRIAL_INDEX)},
    }
    point.setdefault(SEED, seeds[tune_config.get(TRIAL_INDEX, 0)])  # TPE: one copy of a suggestion per seed
    return point


def run_name(cfg: TrialConfig, spec: SweepSpec) -> str:
    """e.g. 'cosine-fixed-S10-lr0.1-seed0', prefixed by the backbone when the sweep searches it."""
    model = f"{cfg.model}-" if "model" in spec.search.space.parameters() else ""
    return f"{model}{cfg.head.label()}-lr{cfg.lr:g}-seed{cfg.seed}"


class TrialDescriber:
    """Tune trial config -> trial contract and its MLflow run name and params; picklable for Tuner.restore."""

    POINT = "point"  # Tune config key holding one of fixray's points (grid and random search)

    def __init__(self, spec: SweepSpec) -> None:
        self.spec = spec

    def config(self, tune_config: dict[str, Any]) -> TrialConfig:
        return trial_config(self.spec, trial_point(tune_config, self.spec.seeds, self.POINT))

    def __call__(self, tune_config: dict[str, Any]) -> tuple[str, dict[str, Any], int]:
        """(MLflow run name, params, epochs planned); params add the run's context to the trial's settings."""
        cfg = self.config(tune_config)
        context = {"dataset": self.spec.dataset, "workers": self.spec.resources.workers}
        return run_name(cfg, self.spec), to_params(cfg) | context, cfg.epochs
