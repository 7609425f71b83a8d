"""fixray from Python: docs/python.md's example run verbatim (a real sweep, real MLflow), its DataFrames typed and
equal to what MLflow holds, and `fixray report --format json|csv` read back against MLflow."""

import csv
import io
import json
import math
import re
import subprocess
import sys

import pytest
from conftest import ROOT
from e2e import ENV, run, store

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def notebook(tmp_path_factory):
    """docs/python.md's Python block, run as written in an empty folder; (folder, its output)."""
    folder = tmp_path_factory.mktemp("notebook")
    block = re.search(r"```python\n(.*?)```", (ROOT / "docs" / "python.md").read_text(), re.S).group(1)
    (folder / "notebook.py").write_text(block)
    done = subprocess.run(
        [sys.executable, "notebook.py"], cwd=folder, env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return folder, done.stdout


def test_the_documented_notebook_answers_from_the_same_numbers_mlflow_holds(notebook):
    folder, printed = notebook
    client, parents, children = store(folder)
    assert len(children) == 8
    best = {(c.data.params["fixed"], c.data.params["S"], c.data.params["seed"]): c for c in children}
    acc = {key: run.data.metrics["val/acc_best"] for key, run in best.items()}
    # The paired difference at S=4, as the notebook printed it: the mean over seeds of fixed minus learned.
    at_4 = [acc[("True", "4.0", s)] - acc[("False", "4.0", s)] for s in ("0", "1")]
    assert re.search(rf"^4\.0\s+{sum(at_4) / 2:.6f}\s+2$", printed, re.M), printed
    assert client.get_run(parents[0].info.run_id).data.tags["fixray.answer"] in printed


def test_trials_and_configurations_are_typed_and_equal_to_mlflow(notebook):
    from fixray import api

    folder, _ = notebook
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    client, _, children = store(folder)
    trials = api.trials("notebook", uri)
    assert len(trials) == 8 and set(trials.outcome) == {"finished"}
    assert str(trials["fixed"].dtype) == "boolean" and str(trials["seed"].dtype) == "Int64"
    assert str(trials["S"].dtype) == "float64" and trials["weight_decay"].notna().all()
    by_id = {c.info.run_id: c for c in children}
    for _, row in trials.iterrows():
        run = by_id[row["run_id"]]
        assert row["run_name"] == run.info.run_name and row["val/acc_best"] == run.data.metrics["val/acc_best"]
        history = client.get_metric_history(row["run_id"], "val/compactness")
        best_epoch = int(run.data.metrics["val/acc_best_epoch"])
        assert row["val/compactness"] == next(m.value for m in history if m.step == best_epoch)
        assert row["val/compactness@last"] == max(history, key=lambda m: m.step).value
    table = api.configurations("notebook", uri)
    for _, row in table.iterrows():
        runs = trials[(trials.fixed == row["fixed"]) & (trials.S == row["S"])]
        assert math.isclose(row["val/acc_best_mean"], runs["val/acc_best"].mean()) and row["val/acc_best_n"] == 2
    history = api.histories("notebook", uri, metrics=["val/acc"])
    assert len(history) == 8 * 2 and set(history.epoch) == {1, 2}


def test_report_as_json_and_csv_holds_the_numbers_mlflow_holds(notebook):
    folder, _ = notebook
    client, parents, children = store(folder)
    as_json = run(["report", "notebook", "--format", "json"], folder)
    assert as_json.returncode == 0, as_json.stderr
    data = json.loads(as_json.stdout)  # valid JSON: NaN as null
    parent = client.get_run(parents[0].info.run_id).data.metrics
    [answer] = data["answer"]
    assert answer["best_fixed_acc"] == parent["answer/best_fixed_acc"]
    assert answer["fixed_minus_learned"] == parent["answer/fixed_minus_learned"]
    assert answer["seeds_paired"] == 2 and answer["best_fixed"]["fixed"] is True
    assert {t["run_id"]: t["val/acc_best"] for t in data["trials"]} == {
        c.info.run_id: c.data.metrics["val/acc_best"] for c in children
    }
    as_csv = run(["report", "notebook", "--format", "csv"], folder)
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert len(rows) == len(data["configurations"]) == 4
    for row, configuration in zip(rows, data["configurations"]):
        assert float(row["val/acc_best_mean"]) == configuration["val/acc_best_mean"]  # unrounded: the same double
        runs = [c for c in children if c.data.params["S"] == row["S"] and c.data.params["fixed"] == row["fixed"]]
        assert float(row["val/acc_best_mean"]) == pytest.approx(
            sum(c.data.metrics["val/acc_best"] for c in runs) / len(runs), abs=1e-15
        )
    refused = run(["report", "table1", "--format", "json"], folder)
    assert refused.returncode == 2 and "is for a sweep" in refused.stderr
