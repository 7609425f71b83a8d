"""A validated SweepSpec -> its trials, each settled once: grid points, random draws, seeds, de-duplication,
run names. No Ray here.

`fixray validate` counts trials with this module alone; the run (run.py) hands the same trials to Ray Tune, each
as what its trial process reads (`PlannedTrial.sent`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from fixray.crossing.contract import TrialConfig, to_params, with_values
from fixray.crossing.head_kinds import HEAD_KINDS
from fixray.sweep.spec.schema import SEED, SweepSpec

TRIAL_INDEX = "__trial_index__"  # Ray Tune's Repeater numbers the copies of one TPE suggestion under this key


def trial_config(spec: SweepSpec, point: dict[str, Any]) -> TrialConfig:
    """One trial's contract, settled: the sweep's settings, overridden by a point's searched values (seed included)."""
    searched = {k: v for k, v in point.items() if k != SEED}
    return with_values(spec.base_trial(int(point[SEED])), searched).settled()


def identity(spec: SweepSpec, cfg: TrialConfig) -> str:
    """What a trial computes, as a short hash: its settled config (every setting of the contract) with the dataset and
    the extra test sets it is measured on; not where or how it runs (resources, storage, tracking, checkpoints,
    budget), nor its place in a grid."""
    computes = {
        "dataset": spec.dataset,
        "settings": to_params(cfg),
        "robustness": spec.robustness.model_dump(mode="json") if spec.robustness else None,
        "generalisation": spec.generalisation,
    }
    return hashlib.sha256(json.dumps(computes, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class PlannedTrial:
    """One trial as the driver sends it: its settled config, its MLflow run name and its identity."""

    config: TrialConfig
    name: str
    identity: str  # what it computes (see identity()): a tag of its MLflow run
    resume: str | None = None  # a checkpoint an earlier Tune experiment of the sweep left it (storage filesystem path)

    def sent(self) -> dict[str, Any]:
        """What its Tune config holds under contract.TRIAL_KEY: the config as flat params (the trial reads them
        back, trusting them settled), the run name (the MLflow bridge and the live view read it), the identity and
        where it resumes from when Tune holds no checkpoint of it."""
        sent = {"config": to_params(self.config), "run_name": self.name, "identity": self.identity}
        return sent | ({"resume": self.resume} if self.resume else {})


NAMED_APART = ("model", "kind", "fixed", "lr")  # in every run name already (with the options a head kind shows)
NAME_DIGITS = 3  # significant digits of a number in a run name, more only where a sweep's names would collide
DRAWN_NAME_DIGITS = 6  # in the name of a trial a searcher draws as the sweep runs (TPE): its neighbours are unknown


def run_name(cfg: TrialConfig, spec: SweepSpec, digits: int = DRAWN_NAME_DIGITS) -> str:
    """e.g. 'cosine-fixed-S10-lr0.1-seed0': prefixed by the backbone when the sweep searches it, and naming each
    other searched setting the trial's head reads (e.g. '-init=etf'), numbers to `digits` significant digits; MLflow's
    params keep the exact values."""
    searched = spec.searched()
    model = f"{cfg.model}-" if "model" in searched else ""
    params, shown = to_params(cfg), HEAD_KINDS[cfg.head.kind].shown
    others = "".join(
        f"-{name}={params[name]:.{digits}g}" if isinstance(params[name], float) else f"-{name}={params[name]}"
        for name in searched
        if name not in NAMED_APART and name not in shown and params[name] is not None
    )
    return f"{model}{cfg.head.label(digits)}{others}-lr{cfg.lr:.{digits}g}-seed{cfg.seed}"


def _named(spec: SweepSpec, configs: list[TrialConfig]) -> list[PlannedTrial]:
    """The planned trials, named with NAME_DIGITS significant digits, or as many more as keep no two names alike."""
    for digits in range(NAME_DIGITS, 18):
        names = [run_name(cfg, spec, digits) for cfg in configs]
        if len(set(names)) == len(names):
            break
    return [PlannedTrial(cfg, name, identity(spec, cfg)) for cfg, name in zip(configs, names)]


def _iter_trials(spec: SweepSpec) -> Iterator[tuple[dict[str, Any], TrialConfig]]:
    """Every distinct trial a search method plans, with its point (searched values and seed): each configuration
    runs once per seed, seeds innermost. Points are de-duplicated by the trial they make: options a head kind does not
    read (S of a dot-product head) are dropped, so such a head is not trained once per S value."""
    seen = set()
    for configuration in spec.configurations():
        for seed in spec.seeds:
            point = configuration | {SEED: seed}
            cfg = trial_config(spec, point)
            if cfg not in seen:
                seen.add(cfg)
                params = to_params(cfg)
                yield {k: params[k] for k in configuration if params[k] is not None} | {SEED: cfg.seed}, cfg


def plan(spec: SweepSpec) -> list[PlannedTrial]:
    """Every trial of a method that plans ahead, listed once (TPE: none in advance, Optuna draws them)."""
    return _named(spec, [cfg for _, cfg in _iter_trials(spec)])


def points(spec: SweepSpec) -> list[dict[str, Any]]:
    """Every trial's searched values and seed, for a method that plans ahead (see _iter_trials)."""
    return [point for point, _ in _iter_trials(spec)]


def expected_trials(spec: SweepSpec) -> int:
    """Trials after de-duplication, counted one at a time (validation has bounded them by search.max_trials); a
    method that draws as it runs: its bound."""
    method = spec.search.search_method
    return sum(1 for _ in _iter_trials(spec)) if method.plans_ahead else spec.trials_bound()


def suggested_trial(spec: SweepSpec, suggestion: dict[str, Any]) -> PlannedTrial:
    """A searcher's suggestion (TPE's searched values, and Repeater's copy index for the seed) as a planned trial."""
    point = {k: v for k, v in suggestion.items() if k != TRIAL_INDEX}
    point[SEED] = spec.seeds[suggestion.get(TRIAL_INDEX, 0)]  # one copy of a suggestion per seed
    cfg = trial_config(spec, point)
    return PlannedTrial(cfg, run_name(cfg, spec), identity(spec, cfg))
