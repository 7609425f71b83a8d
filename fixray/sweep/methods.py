"""Search methods: how a sweep chooses its configurations. One object per `search.method`, which the schema, the
plan, the compute plan and the run ask instead of branching on its name. No Ray here: a method that draws its trials
as the sweep runs has its Tune searcher in search.py under the same name.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from fixray.sweep.spec.values import SettingValues

Configuration = dict[str, Any]  # searched setting (flat name) -> its value in one configuration


@dataclass(frozen=True)
class SearchMethod:
    """What a method takes and whether it knows its trials before the sweep starts."""

    name: str  # the sweep file's search.method
    description: str
    draws: bool  # draws {choice: [...]} and ranges ({loguniform|uniform: [lo, hi]}); false: lists crossed as a grid
    plans_ahead: bool  # every trial is listed before the sweep starts (a budget can admit them, Tune walks them)

    def configurations(
        self, searched: dict[str, SettingValues], num_samples: int, random_seed: int
    ) -> Iterator[Configuration]:
        """The searched values of each configuration in the plan's order (the plan crosses in the seeds): the drawn
        settings (num_samples draws, seeded by random_seed) crossed with the listed ones."""
        listed = {name: v.listed for name, v in searched.items() if v.distribution is None}
        drawn = {name: v for name, v in searched.items() if v.distribution is not None}
        rng = np.random.default_rng(random_seed)
        draws = [{name: v.draw(rng) for name, v in drawn.items()} for _ in range(num_samples if drawn else 1)]
        for draw in draws:
            for values in itertools.product(*listed.values()):
                yield {**dict(zip(listed, values)), **draw}

    def bound(self, searched: dict[str, SettingValues], num_samples: int, seeds: int) -> int:
        """Trials a sweep plans before de-duplication, counted without listing them: grid x draws x seeds."""
        draws = num_samples if any(v.distribution is not None for v in searched.values()) else 1
        return math.prod(len(v.listed) for v in searched.values() if v.distribution is None) * draws * seeds


@dataclass(frozen=True)
class DrawnAsItRuns(SearchMethod):
    """A searcher that suggests each configuration from the results so far: num_samples configurations, each once per
    seed, none known in advance."""

    def configurations(
        self, searched: dict[str, SettingValues], num_samples: int, random_seed: int
    ) -> Iterator[Configuration]:
        return iter(())

    def bound(self, searched: dict[str, SettingValues], num_samples: int, seeds: int) -> int:
        return num_samples * seeds


SEARCH_METHODS: dict[str, SearchMethod] = {}


def search_method(method: SearchMethod) -> SearchMethod:
    """Adds a search method under its name (the values `search.method` admits follow)."""
    SEARCH_METHODS[method.name] = method
    return method


GRID = search_method(SearchMethod("grid", "every combination of the listed values", draws=False, plans_ahead=True))
RANDOM = search_method(
    SearchMethod("random", "num_samples draws from the ranges, crossed with the lists", draws=True, plans_ahead=True)
)
TPE = search_method(DrawnAsItRuns("tpe", "Optuna's TPE through Ray Tune", draws=True, plans_ahead=False))
