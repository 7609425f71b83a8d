"""The fixed-head family sweep's small version on the bundled digits, end to end: real Ray, real MLflow (SQLite).

Every construction fixed and learned on a whole and a long-tailed training set; neural collapse logged as they
train; the family table, a headline per training set and the figures on the parent run."""

import shutil
import statistics
from importlib.metadata import version
from pathlib import Path

import pytest
from e2e import run, store

from fixray.crossing.head_kinds import DRAW_RULES
from fixray.records.runs import REPORT_FILE, STATUS_TAG
from fixray.sweep.cost import compute_plan
from fixray.sweep.spec.reading import load_sweep

pytestmark = pytest.mark.slow
SWEEPS = Path(__file__).resolve().parent.parent / "sweeps"


def test_the_family_sweeps_digits_version_measures_every_construction_and_reports_the_family(tmp_path):
    for name in ("fixed_family.yaml", "fixed_family_digits.yaml"):  # the small version extends the full one
        shutil.copy(SWEEPS / name, tmp_path / name)
    done = run(["sweep", "fixed_family_digits.yaml"], tmp_path, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    client, [parent], children = store(tmp_path)
    assert len(children) == 24 and {c.data.tags[STATUS_TAG] for c in children} == {"finished"}
    params = {(c.data.params["init"], c.data.params["fixed"], c.data.params["long_tail_ratio"]) for c in children}
    assert params == {(i, f, r) for i in DRAW_RULES for f in ("True", "False") for r in ("1.0", "0.1")}

    # Neural collapse on the test split every epoch, on the training set every 2nd epoch; the class vectors' geometry
    # once, after the last.
    def steps(run, key):
        return sorted(m.step for m in client.get_metric_history(run.info.run_id, key))

    one = children[0]
    assert steps(one, "val/nc1") == [1, 2, 3, 4, 5, 6] and steps(one, "train/nc1") == [2, 4, 6]
    assert steps(one, "class_vectors/abs_cos_max") == [6]
    # ... and it falls as they train: the median run ends with less within-class spread than it started with.
    falls = []
    for child in children:
        nc1 = {m.step: m.value for m in client.get_metric_history(child.info.run_id, "val/nc1")}
        falls.append(nc1[6] / nc1[1])
    assert statistics.median(falls) < 0.8, falls

    # The report: the family table (every construction, fixed then learned), a headline per training set.
    out = done.stdout
    family = out[out.index("The fixed-head family") : out.index("Every configuration")]
    rows = [line for line in family.splitlines() if line.startswith("| cosine |")]
    assert len(rows) == 24
    for init in DRAW_RULES:
        fixed, learned = [r for r in rows if f"| {init} | 0.1 |" in r]
        assert "| fixed |" in fixed and "(one seed: no interval) |" in fixed and "| learned |" in learned
    assert "long_tail_ratio=0.1: best fixed" in out and "long_tail_ratio=1.0: best fixed" in out
    metrics = parent.data.metrics
    assert {"answer/long_tail_ratio-0.1/fixed_minus_learned", "answer/long_tail_ratio-1.0/fixed_minus_learned"} <= set(
        metrics
    )
    # What it was planned to cost and what it spent: 24 trials trained for some seconds each, on no GPU.
    planned = compute_plan(load_sweep(tmp_path / "fixed_family_digits.yaml"))
    assert parent.data.metrics["plan/flop"] == pytest.approx(planned.flop, rel=1e-3) and planned.trials == 24
    assert 0 < metrics["spent/trial_hours"] < 1 and metrics["spent/gpu_hours"] == 0
    assert "**Cost**: planned" in out or "Cost: planned" in out
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    family = {f"figures/family_cosine_long_tail_ratio-{r}.png" for r in ("0.1", "1.0")}
    assert figures == family | {"figures/importance.png"}  # 12 configurations a side: fANOVA has enough
    assert "Which setting mattered" in out and "| init |" in out
    report = Path(client.download_artifacts(parent.info.run_id, REPORT_FILE, str(tmp_path))).read_text()
    assert "The fixed-head family" in report and "Every configuration" in report

    # Any trial of it trains again from its MLflow run alone, here, bit for bit (a long-tailed, projected one).
    assert parent.data.params["env/torch"] == version("torch") and parent.data.params["env/data_md5"] == "bundled"
    [child] = [
        c
        for c in children
        if c.data.params["init"] == "etf"
        and c.data.params["long_tail_ratio"] == "0.1"
        and c.data.params["fixed"] == "True"
    ]
    again = run(["replay", child.info.run_id, "--tracking-uri", f"sqlite:///{tmp_path / 'mlflow.db'}"], tmp_path)
    assert again.returncode == 0 and "Equal, bit for bit" in again.stdout, again.stdout + again.stderr[-2000:]
