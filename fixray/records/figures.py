"""A sweep's answer as a picture (the parent run's figures): matplotlib alone, no torch."""

from __future__ import annotations

import io

import matplotlib

matplotlib.use("Agg")  # files only: drivers run without a display
import matplotlib.pyplot as plt  # noqa: E402


def _png(figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(figure)
    return buffer.getvalue()


def sweep_curve_png(lines: list, x_label: str, y_label: str, title: str) -> bytes:
    """A sweep's answer as a picture: one line per fixed/learned head and setting (mean over seeds), its band the
    seeds' min to max; fixed heads solid, learned dashed, x on a log axis (S and LR are searched on one)."""
    figure, axes = plt.subplots(figsize=(7, 4.5))
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colours = {setting: palette[i % len(palette)] for i, setting in enumerate(dict.fromkeys(s.setting for s in lines))}
    for line in lines:
        xs = [x for x, _ in line.points]
        means = [sum(v) / len(v) for _, v in line.points]
        colour = colours[line.setting]  # fixed and learned at one setting share a colour, solid vs dashed
        axes.plot(xs, means, marker="o", linestyle="-" if line.fixed else "--", color=colour, label=line.label)
        axes.fill_between(
            xs, [min(v) for _, v in line.points], [max(v) for _, v in line.points], color=colour, alpha=0.15
        )
    axes.set_xscale("log")
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    axes.set_title(f"{title}\nline: mean over seeds; band: min to max over seeds")
    axes.grid(True, which="both", alpha=0.3)
    axes.legend(fontsize=7, loc="best")
    return _png(figure)


def epoch_curves_png(
    panels: list[tuple[str, bool, list[tuple[str, bool, list[tuple[int, float]]]]]], title: str
) -> bytes:
    """Panels side by side, each (axis title, log scale, lines): a line per (name, fixed, [(epoch, value)]), one colour
    per name, fixed heads solid and learned dashed (the mean over seeds at each epoch)."""
    figure, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    figure.subplots_adjust(wspace=0.3)
    palette = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    names = list(dict.fromkeys(name for _, _, lines in panels for name, _, _ in lines))
    for axis, (y_label, log, lines) in zip(axes[0], panels):
        for name, fixed, points in lines:
            if not points:
                continue
            label = f"{name} {'fixed' if fixed else 'learned'}"
            colour = palette[names.index(name) % len(palette)]
            axis.plot(*zip(*points), linestyle="-" if fixed else "--", color=colour, label=label)
        if log:
            axis.set_yscale("log")
        axis.set_xlabel("epoch")
        axis.set_ylabel(y_label)
        axis.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="best")
    figure.suptitle(f"{title}\nline: mean over finished seeds")
    return _png(figure)


def importance_png(found: dict[str, dict[str, float]]) -> bytes:
    """Grouped bars: each searched setting's fANOVA share, one colour per side (fixed heads, learned heads)."""
    figure, axes = plt.subplots(figsize=(7, 4))
    names = list(next(iter(found.values())))
    width = 0.8 / len(found)
    for i, (label, values) in enumerate(found.items()):
        axes.bar([n + i * width for n in range(len(names))], [values[name] for name in names], width, label=label)
    axes.set_xticks([n + width * (len(found) - 1) / 2 for n in range(len(names))], names)
    axes.set_ylabel("share of best-epoch accuracy's variance (fANOVA)")
    axes.set_title("Which searched setting mattered")
    axes.legend()
    return _png(figure)
