"""Sweep files: good ones become trials, bad ones exit 2 naming file, key path, value and expectation."""

import os
import subprocess
import sys

import pytest
import ray
import yaml

from fixray.cli import main
from fixray.config import load_sweep, trial_config
from fixray.sweep import expected_trials, grid_points

from conftest import GOOD_SWEEP, ROOT


def _with(**changes) -> str:
    """GOOD_SWEEP with top-level keys replaced (None deletes a key)."""
    doc = yaml.safe_load(GOOD_SWEEP)
    for key, value in changes.items():
        if value is None:
            doc.pop(key)
        else:
            doc[key] = value
    return yaml.safe_dump(doc)


def _space(**space) -> str:
    return _with(search={"method": "grid", "space": space})


# (case, file text, key path the message must name, text of the bad value the message must show)
BAD_FILES = [
    ("yaml syntax", "dataset: digits\nsearch: {space: [unclosed\n", "line 3", "valid YAML"),
    ("empty file", "", "(top level)", "None"),
    ("not a mapping", "- dataset: digits\n", "(top level)", "[{'dataset': 'digits'}]"),
    ("unknown top-level key", _with(epoch=3), "epoch", "unknown"),
    ("unknown nested key", _with(optimizer={"momentun": 0.9}), "optimizer.momentun", "0.9"),
    ("wrong type", _with(epochs="ten"), "epochs", "'ten'"),
    ("zero epochs", _with(epochs=0), "epochs", "0"),
    ("missing search", _with(search=None), "search", "required"),
    ("S <= 0 in the grid", _space(kind="cosine", S=[1, 0]), "search.space.S[1]", "0"),
    ("S <= 0 as head default", _with(head={"kind": "cosine", "S": -1}), "head.S", "-1"),
    ("lr <= 0 in the grid", _space(lr=[0.1, -0.01]), "search.space.lr[1]", "-0.01"),
    ("lr range reversed", _space(lr={"loguniform": [0.1, 0.001]}), "search.space.lr.loguniform", "[0.1, 0.001]"),
    ("lr range with lo <= 0", _space(lr={"loguniform": [0, 0.1]}), "search.space.lr.loguniform[0]", "0"),
    ("lr not a number", _space(lr=[".nan"]), "search.space.lr[0]", "'.nan'"),
    ("empty search space", _space(), "search.space", "{}"),
    ("empty grid", _space(lr=[]), "search.space.lr", "[]"),
    ("unknown dataset", _with(dataset="imagenet22k"), "dataset", "'imagenet22k'"),
    ("unknown model", _with(model="vgg11"), "model", "'vgg11'"),
    ("unknown search method", _with(search={"method": "bayes", "space": {"fixed": [True]}}), "search.method", "'bayes'"),
    ("fixed not a boolean", _space(fixed=["maybe"]), "search.space.fixed[0]", "'maybe'"),
    ("unknown head kind", _space(kind=["dot", "arcface"]), "search.space.kind[1]", "'arcface'"),
    ("unsearchable parameter", _space(dropout=[0.1]), "search.space.dropout", "[0.1]"),
    ("S without a cosine head", _space(kind="dot", S=[1, 10]), "search.space.S", "[1, 10]"),
    ("two distributions at once", _space(lr={"uniform": [0.1, 0.2], "choice": [0.1]}), "search.space.lr", "'uniform'"),
    ("range on a boolean", _space(fixed={"uniform": [0, 1]}), "search.space.fixed.uniform", "[0, 1]"),
    ("range in a grid search", _space(lr={"loguniform": [0.001, 0.1]}), "search.space.lr", "random or tpe"),
    ("no seeds", _with(seeds=[]), "seeds", "[]"),
    ("margin on a dot-product head", _with(head={"kind": "dot", "margin": "cosface", "m": 0.2}), "head", "'cosface'"),
    ("unknown class-vector draw", _with(head={"init": "orthogonal"}), "head.init", "'orthogonal'"),
    ("margin search without a cosine head", _space(kind="dot", m=[0.1]), "search.space.m", "[0.1]"),
    ("zero DDP workers", _with(resources={"workers": 0}), "resources.workers", "0"),
    ("ASHA grace period 0", _with(search={"space": {"fixed": [True]}, "asha": {"grace_period": 0}}), "search.asha.grace_period", "0"),
]


@pytest.mark.parametrize("case,text,key_path,shown", BAD_FILES, ids=[c[0] for c in BAD_FILES])
def test_bad_sweep_file_exits_2_naming_file_key_and_value(case, text, key_path, shown, write_sweep, capsys):
    path = write_sweep(text)
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err
    assert str(path) in message
    assert key_path in message
    assert shown in message
    assert "expected" in message


def test_every_problem_is_listed_in_one_message(write_sweep, capsys):
    path = write_sweep(_with(epochs=0, model="vgg11", search={"space": {"lr": [-1], "S": [0]}}, head={"kind": "cosine"}))
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err
    for key_path in ("epochs", "model", "search.space.lr[0]", "search.space.S[0]"):
        assert key_path in message
    assert "4 problem(s)" in message


def test_missing_file_exits_2(tmp_path, capsys):
    assert main(["validate", str(tmp_path / "nope.yaml")]) == 2
    assert "nope.yaml" in capsys.readouterr().err


def test_a_bad_sweep_starts_nothing_and_writes_nothing(write_sweep, tmp_path, monkeypatch):
    path = write_sweep(_with(epochs=-1))
    monkeypatch.chdir(tmp_path)
    assert main(["sweep", str(path)]) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sweep.yaml"]  # no mlflow.db, no fixray-runs
    assert not ray.is_initialized()


def test_console_script_exits_2_on_a_bad_file(write_sweep):
    path = write_sweep(_space(S=[0]))
    exe = os.path.join(os.path.dirname(sys.executable), "fixray")
    done = subprocess.run([exe, "validate", str(path)], capture_output=True, text=True)
    assert done.returncode == 2
    assert "search.space.S" in done.stderr and "Traceback" not in done.stderr


def test_shipped_sweep_files_validate():
    for path in sorted((ROOT / "sweeps").rglob("*.yaml")):
        assert main(["validate", str(path)]) == 0, path


def test_random_search_draws_reproducibly_and_shares_draws_across_seeds(write_sweep):
    text = _with(seeds=[0, 1, 2], search={"method": "random", "num_samples": 5, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}})
    spec = load_sweep(write_sweep(text))
    points = grid_points(spec)
    assert points == grid_points(load_sweep(write_sweep(text, "again.yaml")))
    assert len(points) == expected_trials(spec) == 15
    by_lr = {}
    for point in points:
        by_lr.setdefault(point["lr"], []).append(point["seed"])
    assert len(by_lr) == 5 and all(sorted(seeds) == [0, 1, 2] for seeds in by_lr.values())
    assert all(1e-3 <= lr <= 1e-1 for lr in by_lr)


def test_quickstart_grid_has_24_trials_and_no_S_for_dot_heads():
    spec = load_sweep(ROOT / "sweeps" / "quickstart.yaml")
    points = grid_points(spec)
    assert expected_trials(spec) == len(points) == 24  # dot: 2 fixed x 2 lr x 2 seeds; cosine: x 2 S as well
    configs = [trial_config(spec, p) for p in points]
    assert all(c.S is None for c in configs if c.kind == "dot")
    assert {c.S for c in configs if c.kind == "cosine"} == {1.0, 10.0}
    assert len({c.as_params().values().__repr__() for c in configs}) == 24
    assert all(c.bias == (c.kind == "dot") for c in configs)


def test_tpe_trial_configs_get_their_seed_from_the_repeat_index(write_sweep):
    from fixray.sweep import trial_params

    spec = load_sweep(write_sweep(_with(seeds=[5, 9], search={"method": "tpe", "num_samples": 3, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}})))
    assert expected_trials(spec) == 6
    assert trial_params({"lr": 0.01, "__trial_index__": 1}, spec.seeds) == {"lr": 0.01, "seed": 9}
    assert trial_params({"lr": 0.01}, [7]) == {"lr": 0.01, "seed": 7}  # one seed: no Repeater, no index
