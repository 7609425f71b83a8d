"""A sweep's report, as `fixray sweep` prints it, `fixray report SWEEP` reads it back and the parent run keeps it: the
answer, the fixed-head family where the sweep compares constructions, then every configuration."""

from __future__ import annotations

from fixray.crossing import metric_keys as keys
from fixray.records.answer import ANSWER_TAG, Headline, answer_blocks, answer_figures, headline_text
from fixray.records.family import family_figures, family_table, is_family
from fixray.records.importance import Importance, importance, importance_blocks, importance_figure
from fixray.records.render import Block, Paragraph, Report, Table, as_markdown
from fixray.records.runs import SweepRuns, outcome
from fixray.records.tables import Row, row_caption, sweep_rows, sweep_table
from fixray.records.ui import share_trials_view


def metrics_block() -> Table:
    """What each logged metric means, from the catalogue: for the parent run's description."""
    rows = [[f"`{m.key}`", m.meaning, m.unit, m.direction, m.when] for m in keys.METRICS.values()]
    return Table("What the child runs log", ["key", "meaning", "unit", "better", "when"], rows, "(step = epoch)")


def _blocks(rows: list[Row], found: Importance) -> list[Block]:
    family = [family_table(rows)] if is_family(rows) else []
    return answer_blocks(rows) + family + importance_blocks(rows, found) + [sweep_table(rows)]


def cost_block(parent) -> list[Block]:
    """What the sweep was planned to cost and what it spent, as its parent run records them."""
    spent = parent.data.metrics
    if "plan/flop" not in spent:
        return []
    text = f"planned {spent['plan/flop']:.3e} FLOP of training, {spent['plan/gpu_hours']:.3g} GPU-hours"
    if "spent/trial_hours" in spent:
        text += (
            f"; spent {spent['spent/trial_hours']:.3g} hours of training, {spent['spent/gpu_hours']:.3g} of them "
            "GPU-hours held"
        )
    if "budget/gpu_hours" in spent:
        text += (
            f"; budget {spent['budget/gpu_hours']:g} GPU-hours, of which the trials it admitted were planned at "
            f"{spent['budget/admitted_gpu_hours']:.3g} (the trials past it are counted as not run)"
        )
    return [Paragraph("Cost", text)]


def publish(runs: SweepRuns, spent: dict[str, float] | None = None) -> list[Headline]:
    """Writes the answer onto the sweep's parent run: headline metrics and tag, what the sweep spent, the tables as
    its note, figures."""
    rows = sweep_rows(runs)
    headlines = Headline.each(rows)
    metrics = {k: v for h in headlines for k, v in h.metrics(several=len(headlines) > 1).items()} | (spent or {})
    found = importance(rows)
    notes = [as_markdown(block) for block in _blocks(rows, found) + not_in_file_block(runs) + [metrics_block()]]
    figures = answer_figures(rows) | family_figures(rows) | importance_figure(found)
    runs.log_summary(metrics, {ANSWER_TAG: headline_text(headlines)}, notes, figures)
    if rows:  # the trials' page shows the settings that tell its configurations apart, and the seed
        searched = [name for name in rows[0].key if name == "fixed" or len({repr(row.key[name]) for row in rows}) > 1]
        share_trials_view(runs, [*searched, "seed"])
    return headlines


def runs_report(tracking_uri: str, experiment: str, sweep: str) -> Report:
    """A sweep's trial runs, one row each: the run name (what `fixray replay` takes), its id and what became of it."""
    runs = SweepRuns(tracking_uri, experiment, sweep, create=False)
    children = sorted(runs.children(), key=lambda child: child.info.run_name)
    rows = [[child.info.run_name, child.info.run_id, outcome(child)] for child in children]
    return Report([Table(f"Trial runs of sweep {sweep}", ["run name", "run id", "outcome"], rows)])


def sweep_report(tracking_uri: str, experiment: str, sweep: str) -> Report:
    """A sweep's report, the answer first and then every configuration, with the runs whose figures illustrate it."""
    runs = SweepRuns(tracking_uri, experiment, sweep, create=False)
    rows = sweep_rows(runs)
    parent = runs.client.get_run(runs.parent_id)
    figures = [("The answer: fixed vs learned class vectors", parent)]
    figures += [(row_caption(row), row.runs[0]) for row in rows]
    return Report(_blocks(rows, importance(rows)) + not_in_file_block(runs) + cost_block(parent), figures)


def not_in_file_block(runs: SweepRuns) -> list[Block]:
    """The earlier trial runs the sweep file no longer plans, counted beside the tables they are left out of."""
    dropped = runs.not_in_file()
    if not dropped:
        return []
    said = (
        f"{dropped} earlier trial run(s) of this sweep are not in its file as it last ran (a value, a seed or a "
        "setting changed): kept in MLflow, left out of these tables, the answer, its figures and importance. Put "
        "them back in the file and run it again to count them (they are not retrained)."
    )
    return [Paragraph("Not in the file", said)]
