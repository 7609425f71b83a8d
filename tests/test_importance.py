"""Which setting mattered: fANOVA over configurations' seed means, fixed and learned apart; too few says so."""

from pathlib import Path

import pytest

from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import HeadConfig, TrialConfig, to_params
from fixray.records.encoding import param_value
from fixray.records.importance import MIN_CONFIGURATIONS, importance, importance_blocks, importances
from fixray.records.render import as_markdown
from fixray.records.runs import STATUS_TAG
from fixray.records.tables import summarise

LRS, SCALES = (0.3, 0.1, 0.03, 0.01), (4.0, 16.0, 64.0)


class Run:
    """The shape of an MLflow run that summarise reads."""

    def __init__(self, lr: float, S: float, fixed: bool, seed: int, acc: float):
        cfg = TrialConfig(
            model="small_cnn", epochs=1, seed=seed, lr=lr, head=HeadConfig(kind="cosine", S=S, fixed=fixed)
        )
        params = {k: param_value(v) for k, v in to_params(cfg.settled()).items()}
        tags = {STATUS_TAG: "finished"}
        self.data = type("Data", (), {"params": params, "metrics": {keys.BEST_ACC: acc}, "tags": tags})()


def _rows(lrs=LRS):
    # accuracy set by the learning rate alone (fixed: the higher the better; learned: the lower); S a tiny wobble
    runs = [
        Run(lr, S, fixed, seed, (lr if fixed else 1 - lr) + 0.001 * scales_index + 0.0001 * seed)
        for lr in lrs
        for scales_index, S in enumerate(SCALES)
        for fixed in (True, False)
        for seed in (0, 1)
    ]
    return summarise(runs)


def test_the_setting_that_decides_accuracy_takes_nearly_all_of_its_variance_on_each_side():
    rows = _rows()
    for fixed in (True, False):
        found = importances(rows, fixed)
        assert set(found) == {"S", "lr"} and found["lr"] > 0.9 and found["lr"] + found["S"] == pytest.approx(1.0)
    text = "\n".join(as_markdown(block) for block in importance_blocks(rows, importance(rows)))
    assert "Which setting mattered" in text and "| lr |" in text


def test_too_few_configurations_say_how_many_more_it_needs():
    rows = _rows(lrs=LRS[:3])  # 9 configurations a side
    assert importances(rows, True) == MIN_CONFIGURATIONS - 9
    text = "\n".join(as_markdown(block) for block in importance_blocks(rows, importance(rows)))
    assert f"needs {MIN_CONFIGURATIONS} configurations" in text and "fixed heads: 1 more" in text


RANDOM_SEARCH = """\
name: importance
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
search:
  method: random
  num_samples: 10
  space:
    fixed: [true, false]
    lr: {loguniform: [0.0001, 0.5]}          # from barely moving in 2 epochs to learning the digits
    draw_seed: {choice: [0, 1, 2, 3, 4]}     # which random class vectors: no lasting effect on accuracy
"""


@pytest.mark.slow
def test_a_random_search_sweep_reports_the_learning_rate_as_the_setting_that_mattered(tmp_path):
    from e2e import run, store

    (tmp_path / "importance.yaml").write_text(RANDOM_SEARCH)
    done = run(["sweep", "importance.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client, parents, children = store(tmp_path)
    assert len(children) == 20 and len({c.data.params["lr"] for c in children}) == 10  # drawn, shared by both sides
    report = Path(client.download_artifacts(parents[0].info.run_id, "report.md", str(tmp_path))).read_text()
    table = report.split("Which setting mattered")[1].split("\n\n")[1]
    shares = {row[0]: row[1:] for row in (line.strip("| ").split(" | ") for line in table.splitlines()[2:])}
    assert set(shares) == {"lr", "draw_seed"}
    for side in (0, 1):  # fixed heads, learned heads
        assert float(shares["lr"][side]) > 0.5 > float(shares["draw_seed"][side]), table
    assert "figures/importance.png" in {f.path for f in client.list_artifacts(parents[0].info.run_id, "figures")}
