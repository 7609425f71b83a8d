"""Which searched setting mattered: Optuna's fANOVA importance of each setting for best-epoch accuracy, over the
configurations whose every seed finished (each one its seed mean), for fixed and for learned heads apart.

fANOVA fits a random forest to (settings -> accuracy) and splits the variance of its prediction among the settings:
with few configurations the forest fits noise, so below MIN_CONFIGURATIONS on a side it says how many it needs.
"""

from __future__ import annotations

import logging
import math

from fixray.records.answer import BEST_ACC
from fixray.records.render import Block, Paragraph, Table
from fixray.records.tables import Row

Importance = dict[bool, "dict[str, float] | int"]  # per side (fixed?): each setting's share, or configurations needed
MIN_CONFIGURATIONS = 10  # per side (fixed, learned): fewer, and the forest's split is noise
SEED = 0  # of the forest: the same store gives the same importances
SIDES = ((True, "fixed heads"), (False, "learned heads"))


def searched(rows: list[Row]) -> list[str]:
    """The settings that vary across the sweep's configurations, besides fixed/learned."""
    names = [k for k in rows[0].key if k != "fixed"] if rows else []
    return [k for k in names if len({row.key.get(k) for row in rows}) > 1]


def _distribution(values: list):
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if len(numbers) == len(values) and len(set(numbers)) > 1:
        low, high = min(numbers), max(numbers)
        return FloatDistribution(low, high, log=low > 0 and high / low >= 10)
    return CategoricalDistribution(sorted({str(v) for v in values}))


def importances(rows: list[Row], fixed: bool) -> dict[str, float] | int:
    """Each searched setting's share of best-epoch accuracy's variance among one side's ranked configurations; the
    number of configurations still needed when there are too few."""
    import optuna
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    side = [r for r in rows if r.key.get("fixed") is fixed and r.ranked and not math.isnan(r.mean(BEST_ACC))]
    names = searched(rows)
    if len(side) < MIN_CONFIGURATIONS or not names:
        return MIN_CONFIGURATIONS - len(side) if names else 0
    distributions = {name: _distribution([r.key.get(name) for r in side]) for name in names}
    optuna.logging.set_verbosity(logging.WARNING)
    study = optuna.create_study(direction="maximize")
    for row in side:
        params = {
            name: (str(row.key.get(name)) if hasattr(distributions[name], "choices") else float(row.key[name]))
            for name in names
        }
        trial = optuna.trial.create_trial(params=params, distributions=distributions, value=row.mean(BEST_ACC))
        study.add_trial(trial)
    found = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=SEED))
    return {name: found.get(name, 0.0) for name in names}


def importance(rows: list[Row]) -> Importance:
    """Both sides' importances, fitted once for the table and the figure; empty when nothing besides fixed varies."""
    return {fixed: importances(rows, fixed) for fixed, _ in SIDES} if searched(rows) else {}


def importance_blocks(rows: list[Row], found: Importance) -> list[Block]:
    """The importance table, or what it waits for; nothing when the sweep searches no setting besides fixed."""
    if not found:
        return []
    names = searched(rows)
    waiting = [f"{label}: {found[fixed]} more" for fixed, label in SIDES if isinstance(found[fixed], int)]
    if len(waiting) == len(SIDES):
        return [
            Paragraph(
                "Which setting mattered",
                f"fANOVA needs {MIN_CONFIGURATIONS} configurations with every seed finished on each side "
                f"({'; '.join(waiting)}).",
            )
        ]
    header = ["setting", *(label for _, label in SIDES)]
    cells = [
        [name, *(f"{found[fixed][name]:.2f}" if isinstance(found[fixed], dict) else "—" for fixed, _ in SIDES)]
        for name in names
    ]
    note = "(fANOVA share of best-epoch accuracy's variance, over configurations whose every seed finished)"
    return [Table("Which setting mattered", header, cells, note)]


def importance_figure(found: Importance) -> dict[str, bytes]:
    """A bar per setting and side, where there are enough configurations."""
    from fixray.records.figures import importance_png

    shown = {label: found[fixed] for fixed, label in SIDES if isinstance(found.get(fixed), dict)}
    return {"importance.png": importance_png(shown)} if shown else {}
