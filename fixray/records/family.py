"""The fixed-head family: a sweep that draws its class vectors several ways (init: normal, uniform_int, hadamard,
etf, orthoplex, cube), each fixed and learned, shown construction by construction with its neural collapse.

Which fixed construction, and does any beat a learned head? Each row is a configuration (mean ± std over finished
seeds, each run at its best epoch); a fixed row's last cell is fixed minus learned for the learned head that started
from the same draw, paired by seed (answer.py). The figure shows test accuracy and NC1 epoch by epoch.
"""

from __future__ import annotations

import math
import statistics

from fixray.crossing import metric_keys as keys
from fixray.records.answer import BEST_ACC, comparisons, projected_note
from fixray.records.render import Table
from fixray.records.tables import (
    HEADERS,
    Column,
    Row,
    digits_apart,
    format_cell,
    is_context,
    shown_value,
    sort_key,
)

FAMILY_COLUMNS = (
    BEST_ACC,
    Column(keys.NC1, "NC1 (test)"),
    Column(keys.NC2_MEANS, "NC2 of means (test)"),
    Column(keys.NC4, "NC4 (test)"),
    Column(keys.VECTOR_ABS_COS_MAX, "largest |cos| of class vectors"),  # logged once, of the best epoch's vectors
)
CURVES = (  # (metric, axis title, log scale): the family figure's panels, one point per epoch
    (keys.VAL_ACC, "test accuracy", False),
    (keys.NC1, "NC1 (test, log scale)", True),
)


def is_family(rows: list[Row]) -> bool:
    """Whether a sweep compares class-vector constructions: it draws them more than one way."""
    return len({row.key.get("init") for row in rows}) > 1


def _order(rows: list[Row]) -> list[Row]:
    """Head kind, then the context, then the construction, fixed before learned: a construction's pair adjacent."""
    first = [k for k in rows[0].key if k not in ("init", "fixed")]
    order = (*first, "init", "fixed")
    return sorted(rows, key=lambda row: tuple(sort_key(k, row.key[k]) for k in order))


def family_table(rows: list[Row]) -> Table:
    """Every construction, fixed and learned, with its accuracy, neural collapse and class-vector geometry."""
    ordered = _order(rows)
    paired = {id(c.fixed): c for c in comparisons(rows)}
    settings = list(ordered[0].key) if ordered else []
    header = (
        [HEADERS.get(k, k) for k in settings]
        + ["seeds"]
        + [column.title for column in FAMILY_COLUMNS]
        + [f"fixed − learned, {BEST_ACC.title}"]
    )
    cells, digits = [], {k: digits_apart(row.key[k] for row in ordered) for k in settings}
    for row in ordered:
        difference = (
            paired[id(row)].interval(BEST_ACC).text(BEST_ACC.scale, BEST_ACC.decimals) if id(row) in paired else ""
        )
        cells.append(
            [shown_value(k, row.key[k], digits[k]) for k in settings]
            + [row.seeds]
            + [format_cell(row.values(c), c.scale, c.decimals) for c in FAMILY_COLUMNS]
            + [difference]
        )
    note = (
        "(mean ± std over finished seeds, each run at its best epoch; fixed − learned: against the learned head "
        "drawn the same way, paired by seed, [95% t interval]; neural collapse on the test split, measured against "
        "the test split's own class means)" + projected_note(rows)
    )
    return Table("The fixed-head family", header, cells, note, "(no finished trials)")


def _mean_curve(row: Row, metric: str) -> list[tuple[int, float]]:
    """(epoch, mean over finished seeds) for every epoch each of them logged."""
    histories = [row.read.history(run, metric) for run in row.finished.values()]
    epochs = sorted(set.intersection(*(set(h) for h in histories))) if histories else []
    means = [(e, statistics.fmean(h[e] for h in histories)) for e in epochs]
    return [(e, m) for e, m in means if math.isfinite(m)]


def family_figures(rows: list[Row]) -> dict[str, bytes]:
    """One figure per head kind and context: test accuracy and NC1 by epoch, a line per construction (fixed solid,
    learned dashed); none unless the sweep compares constructions."""
    from fixray.records.figures import epoch_curves_png

    if not is_family(rows):
        return {}
    groups: dict[tuple, list[Row]] = {}
    for row in rows:
        if row.finished:
            context = tuple((k, v) for k, v in row.key.items() if is_context(k))
            groups.setdefault((row.key.get("kind"), context), []).append(row)
    figures = {}
    for (kind, context), members in groups.items():
        where = " ".join(f"{k}={shown_value(k, v)}" for k, v in context)
        panels = [
            (
                title,
                log,
                [
                    (shown_value("init", row.key.get("init")), bool(row.key.get("fixed")), _mean_curve(row, metric))
                    for row in _order(members)
                ],
            )
            for metric, title, log in CURVES
        ]
        suffix = "".join(f"_{k}-{shown_value(k, v)}" for k, v in context)
        title = f"{kind} heads{f' ({where})' if where else ''}: each construction, fixed (solid) and learned (dashed)"
        figures[f"family_{kind}{suffix}.png"] = epoch_curves_png(panels, title)
    return figures
