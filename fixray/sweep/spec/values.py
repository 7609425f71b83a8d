"""The values one setting takes in a sweep: the one answer every reader asks (the plan, the compute plan, the checks,
the data, Ray Tune's space, the command line) instead of reading the search space itself."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

# How a random search draws one value of a distribution from its arguments: the choices, or [lo, hi].
DRAWERS: dict[str, Callable[[np.random.Generator, tuple[Any, ...]], Any]] = {
    "choice": lambda rng, args: args[rng.integers(len(args))],
    "loguniform": lambda rng, args: float(np.exp(rng.uniform(np.log(args[0]), np.log(args[1])))),
    "uniform": lambda rng, args: float(rng.uniform(*args)),
}


@dataclass(frozen=True)
class SettingValues:
    """Listed values (crossed as a grid), or a distribution drawn from: {choice: listed} or a range over bounds."""

    listed: tuple[Any, ...] = ()  # the file's value alone when not searched; a grid's or a choice's values
    searched: bool = False  # the file's search.space names it
    distribution: str | None = None  # choice, loguniform or uniform: drawn (random search, TPE); None: listed
    bounds: tuple[float, float] | None = None  # [lo, hi] of a range

    @classmethod
    def of(cls, entry: Any, draws: bool) -> SettingValues:
        """A search-space entry (a value, a list, or {distribution: args}) under a method that draws or not (grid
        search crosses a choice's values as a list)."""
        if not isinstance(entry, dict):
            return cls(tuple(entry) if isinstance(entry, list) else (entry,), searched=True)
        ((distribution, args),) = entry.items()
        if distribution == "choice":
            return cls(tuple(args), True, "choice" if draws else None)
        return cls((), True, distribution, (args[0], args[1]))

    @property
    def extremes(self) -> tuple[Any, ...]:
        """Values that bound what the setting can cost: a range's two ends, or of the listed values the smallest and
        largest number and every other value (a name, a flag, null)."""
        if self.bounds is not None:
            return self.bounds
        numbers = [v for v in self.listed if isinstance(v, (int, float)) and not isinstance(v, bool)]
        others = tuple(v for v in self.listed if v not in numbers or isinstance(v, bool))
        return others + tuple(dict.fromkeys((min(numbers), max(numbers)))) if numbers else others

    def draw(self, rng: np.random.Generator) -> Any:
        """One value drawn as a random search draws it."""
        return DRAWERS[self.distribution](rng, self.listed if self.distribution == "choice" else self.bounds)
