"""The sweep's answer: fixed minus learned class vectors, paired by seed, with a 95% interval over seeds.

A configuration (head, S, LR and every other searched setting) that ran both fixed and learned is compared
seed by seed: d_i = fixed_i - learned_i over the seeds where both runs finished. The interval is Student's
t interval of the mean difference, mean(d) ± t(0.975, n-1) · sd(d) / √n; one pair gives a difference and no
interval. Diverged, failed and unfinished runs pair with nothing: they are counted beside the difference.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from scipy import stats

from fixray.crossing import metric_keys as keys
from fixray.records.render import Block, Paragraph, Table
from fixray.records.runs import left_out
from fixray.records.tables import HEADERS, Column, Row, shown_value

CONFIDENCE = 0.95  # of every interval fixray reports
ANSWER_TAG = "fixray.answer"  # on the parent run: the headline in words
BEST_ACC = Column(keys.BEST_ACC, "best-epoch test acc (pp)", 100.0, 2)  # what configurations are ranked by
LAST_ACC = Column(keys.VAL_ACC, "last-epoch test acc (pp)", 100.0, 2, "last")
COMPACTNESS = Column(keys.COMPACTNESS, "compactness (best epoch)")
DIFFERENCES = (BEST_ACC, LAST_ACC, COMPACTNESS)


@dataclass(frozen=True)
class Interval:
    """A mean paired difference and its t interval; low and high are NaN under two pairs."""

    mean: float
    low: float
    high: float
    n: int  # seeds paired

    @property
    def has_width(self) -> bool:
        """Whether there is an interval to state: two pairs or more that do not all differ by the same amount."""
        return self.low < self.high

    def text(self, scale: float = 1.0, decimals: int = 2) -> str:
        if self.n == 0:
            return "no seed finished both"
        mean = f"{self.mean * scale:+.{decimals}f}"
        if self.n == 1:
            return f"{mean} (one seed: no interval)"
        if self.low == self.high:  # every pair differs by the same amount: a t interval of width 0 claims certainty
            return f"{mean} (equal over {self.n} seeds: no interval)"
        return f"{mean} [{self.low * scale:+.{decimals}f}, {self.high * scale:+.{decimals}f}]"


def paired_interval(differences: list[float]) -> Interval:
    """Student's t interval (CONFIDENCE) of the mean of per-seed differences."""
    n = len(differences)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = statistics.fmean(differences)
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = stats.t.ppf((1 + CONFIDENCE) / 2, n - 1) * statistics.stdev(differences) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


@dataclass(frozen=True)
class Comparison:
    """A fixed row and a learned row to compare seed by seed (same configuration, or the best of each)."""

    fixed: Row
    learned: Row

    def interval(self, column: Column) -> Interval:
        """fixed - learned seed by seed (the same seed on both sides, never the same position), finished on both."""
        seeds = sorted(self.fixed.finished.keys() & self.learned.finished.keys())
        pairs = [(self.fixed.value(s, column), self.learned.value(s, column)) for s in seeds]
        return paired_interval([f - g for f, g in pairs if f is not None and g is not None])

    @property
    def key(self) -> dict:
        """The configuration both rows share (everything but `fixed`)."""
        return {k: v for k, v in self.fixed.key.items() if k != "fixed"}


def comparisons(rows: list[Row]) -> list[Comparison]:
    """Every configuration that ran both fixed and learned, in the rows' order."""
    by_key: dict[tuple, dict[bool, Row]] = {}
    for row in rows:
        if isinstance(row.key.get("fixed"), bool):
            rest = tuple((k, v) for k, v in row.key.items() if k != "fixed")
            by_key.setdefault(rest, {})[row.key["fixed"]] = row
    return [Comparison(pair[True], pair[False]) for pair in by_key.values() if len(pair) == 2]


@dataclass(frozen=True)
class Headline:
    """Within one context (the backbone and every other setting neither the head's nor tuned), the best fixed and the
    best learned configuration by mean best-epoch accuracy, ranked among those whose every seed finished, and their
    paired difference."""

    best: Comparison
    context: tuple  # ((setting, value), ...): empty when the sweep searches no context setting
    fixed_ties: int = 0  # other fixed configurations at the best one's accuracy (the first in table order is named)
    learned_ties: int = 0

    @classmethod
    def each(cls, rows: list[Row]) -> list[Headline]:
        """One headline per context that has a ranked fixed and a ranked learned configuration."""
        contexts: dict[tuple, list[Row]] = {}
        for row in rows:
            if row.ranked and isinstance(row.key.get("fixed"), bool) and not math.isnan(row.mean(BEST_ACC)):
                contexts.setdefault(row.context, []).append(row)
        found = []
        for context, ranked in contexts.items():
            best, ties = {}, {}
            for fixed in (True, False):
                side = [row for row in ranked if row.key["fixed"] is fixed]
                if side:
                    best[fixed] = max(side, key=lambda row: row.mean(BEST_ACC))  # the first of equals
                    ties[fixed] = sum(row.mean(BEST_ACC) == best[fixed].mean(BEST_ACC) for row in side) - 1
            if len(best) == 2:
                found.append(cls(Comparison(best[True], best[False]), context, ties[True], ties[False]))
        return found

    @property
    def interval(self) -> Interval:
        return self.best.interval(BEST_ACC)

    def where(self) -> str:
        """The context in words, e.g. 'model=resnet18'; '' when there is one context."""
        return " ".join(f"{k}={shown_value(k, v)}" for k, v in self.context)

    def metrics(self, several: bool) -> dict[str, float]:
        """For the parent run, so the experiment's runs table shows the answer in one row; with several contexts,
        each under answer/<context>/ (e.g. answer/model-resnet18/)."""
        prefix = f"answer/{'_'.join(f'{k}-{shown_value(k, v)}' for k, v in self.context)}/" if several else "answer/"
        found = {
            "best_fixed_acc": self.best.fixed.mean(BEST_ACC),
            "best_learned_acc": self.best.learned.mean(BEST_ACC),
            "fixed_minus_learned": self.interval.mean,
            "ci95_low": self.interval.low,
            "ci95_high": self.interval.high,
            "seeds_paired": float(self.interval.n),
        }
        return {prefix + k: v for k, v in found.items() if math.isfinite(v)}

    def text(self) -> str:
        fixed, learned = self.best.fixed, self.best.learned
        where = f"{self.where()}: " if self.context else ""
        interval = self.interval
        over = f"{CONFIDENCE:.0%} t interval over {interval.n} seed(s) paired" if interval.has_width else ""
        ties = [
            f"{n} other {side} configuration(s) tie with the best"
            for side, n in (("fixed", self.fixed_ties), ("learned", self.learned_ties))
            if n
        ]
        tied = f" ({' and '.join(ties)}: the first in table order is named)" if ties else ""
        return (
            f"{where}best fixed ({label(fixed)}) {fixed.mean(BEST_ACC) * 100:.2f}% vs best learned ({label(learned)}) "
            f"{learned.mean(BEST_ACC) * 100:.2f}% best-epoch test accuracy: fixed minus learned "
            f"{interval.text(100)} pp" + (f", {over}" if over else "") + tied + projected_note([fixed, learned])
        )


PROJECTED = "dim"  # the head option that puts a learned linear projection before the class vectors


def projected_note(rows: list[Row]) -> str:
    """Said beside any comparison of heads behind a learned projection: there a fixed head is not fixed."""
    if not any(run.data.params.get(PROJECTED, "none") != "none" for row in rows for run in row.runs):
        return ""
    return (
        " (heads behind a learned projection, head.dim: a learned linear map and fixed class vectors compose to a "
        "learned linear classifier, so this compares two learned classifiers)"
    )


def label(row: Row) -> str:
    """A row's configuration in words, e.g. 'cosine S=16.0 lr=0.1' (options its head lacks, and the context the
    headline names, left out)."""
    return " ".join(
        shown_value("kind", v) if k == "kind" else f"{k}={shown_value(k, v)}"
        for k, v in row.key.items()
        if k != "fixed" and v is not None and (k, v) not in row.context
    )


UNRANKED_NOTE = "only configurations whose every seed finished are ranked"


def headline_text(headlines: list[Headline]) -> str:
    """The answer in words: one sentence per context."""
    if not headlines:
        return f"no configuration has finished every seed both fixed and learned yet ({UNRANKED_NOTE})"
    return "; ".join(h.text() for h in headlines)


def answer_blocks(rows: list[Row]) -> list[Block]:
    """The headline and, per configuration run both ways, fixed minus learned with its interval."""
    headlines = Headline.each(rows)
    found = comparisons(rows)
    if not headlines and not found:
        return [Paragraph("Fixed minus learned", "no configuration has finished runs both fixed and learned yet.")]
    blocks: list[Block] = [Paragraph("Answer", f"{headline_text(headlines)}.")]
    if found:
        settings = list(found[0].key)
        header = (
            [HEADERS.get(k, k) for k in settings]
            + ["seeds paired", "left out (fixed / learned)"]
            + [column.title for column in DIFFERENCES]
        )
        cells = []
        for comparison in found:
            excluded = f"{left_out(comparison.fixed.outcomes) or '—'} / {left_out(comparison.learned.outcomes) or '—'}"
            cells.append(
                [shown_value(k, v) for k, v in comparison.key.items()]
                + [str(comparison.interval(BEST_ACC).n), excluded]
                + [comparison.interval(c).text(c.scale, c.decimals) for c in DIFFERENCES]
            )
        note = f"(mean difference [{CONFIDENCE:.0%} t interval over seeds])"
        blocks.append(Table("Fixed minus learned, paired by seed", header, cells, note))
    return blocks


@dataclass(frozen=True)
class Series:
    """One line of a sweep figure: x values and, per x, the finished seeds' values."""

    label: str
    fixed: bool
    points: list[tuple[float, list[float]]]
    setting: str = ""  # the line's settings besides fixed/learned (e.g. 'lr=0.1'): one colour each


def series(rows: list[Row], x: str, metric: Column) -> list[Series]:
    """Rows with a value of `x` as lines: one per fixed/learned and every other setting (the LR among them)."""
    lines: dict[tuple, Series] = {}
    several_kinds = len({r.key.get("kind") for r in rows}) > 1
    for row in rows:
        if row.key.get(x) is None or not isinstance(row.key.get("fixed"), bool) or not row.values(metric):
            continue
        rest = {k: v for k, v in row.key.items() if k not in (x, "fixed") and v is not None}
        setting = " ".join(f"{k}={shown_value(k, v)}" for k, v in rest.items() if k != "kind" or several_kinds)
        name = f"{'fixed' if row.key['fixed'] else 'learned'} {setting}".strip()
        key = (row.key["fixed"], tuple(rest.items()))
        line = lines.setdefault(key, Series(name, row.key["fixed"], [], setting))
        line.points.append((float(row.key[x]), row.values(metric)))
    for line in lines.values():
        line.points.sort()
    return list(lines.values())


def figure_axis(rows: list[Row]) -> str | None:
    """The searched setting a sweep's figures plot against: S when it varies, else the learning rate."""
    for x in ("S", "lr"):
        if len({r.key.get(x) for r in rows if r.key.get(x) is not None}) > 1:
            return x
    return None


FIGURE_METRICS = ((BEST_ACC, "best-epoch test accuracy"), (COMPACTNESS, "compactness (test, best epoch)"))
AXIS_NAMES = {"S": "cosine scale S", "lr": "learning rate"}


def answer_figures(rows: list[Row]) -> dict[str, bytes]:
    """Accuracy and compactness against S (or the LR), fixed and learned; none when neither varies."""
    from fixray.records.figures import sweep_curve_png

    x = figure_axis(rows)
    if x is None:
        return {}
    figures = {}
    for metric, name in FIGURE_METRICS:
        lines = series(rows, x, metric)
        if lines:
            title = f"{name} against {AXIS_NAMES[x]}: fixed (solid) vs learned (dashed) class vectors"
            figures[f"{metric.metric.split('/')[-1]}_vs_{x}.png"] = sweep_curve_png(lines, AXIS_NAMES[x], name, title)
    return figures
