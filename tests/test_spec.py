"""Sweep files: good ones become trials, bad ones exit 2 naming file, key path, value and expectation."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
import yaml
from conftest import GOOD_SWEEP, ROOT

from fixray.cli import main
from fixray.crossing.contract import to_params
from fixray.sweep.plan import expected_trials, points, suggested_trial, trial_config
from fixray.sweep.spec.checks import SweepFileError, parse_sweep
from fixray.sweep.spec.reading import load_sweep


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
    (
        "unknown search method",
        _with(search={"method": "bayes", "space": {"fixed": [True]}}),
        "search.method",
        "'bayes'",
    ),
    ("fixed not a boolean", _space(fixed=["maybe"]), "search.space.fixed[0]", "'maybe'"),
    ("unknown head kind", _space(kind=["dot", "arcface"]), "search.space.kind[1]", "'arcface'"),
    ("unsearchable parameter", _space(dropout=[0.1]), "search.space.dropout", "[0.1]"),
    ("S without a cosine head", _space(kind="dot", S=[1, 10]), "search.space.S", "[1.0, 10.0]"),
    ("two distributions at once", _space(lr={"uniform": [0.1, 0.2], "choice": [0.1]}), "search.space.lr", "'uniform'"),
    ("range on a boolean", _space(fixed={"uniform": [0, 1]}), "search.space.fixed.uniform", "[0, 1]"),
    ("range in a grid search", _space(lr={"loguniform": [0.001, 0.1]}), "search.space.lr", "random or tpe"),
    ("no seeds", _with(seeds=[]), "seeds", "[]"),
    ("margin on a dot-product head", _with(head={"kind": "dot", "margin": "cosface", "m": 0.2}), "head", "'cosface'"),
    ("unknown class-vector draw", _with(head={"init": "orthogonal"}), "head.init", "'orthogonal'"),
    ("margin search without a cosine head", _space(kind="dot", m=[0.1]), "search.space.m", "[0.1]"),
    ("zero DDP workers", _with(resources={"workers": 0}), "resources.workers", "0"),
    ("dot regression with learned heads", _with(loss="dot_regression"), "search.space.fixed", "False"),
    (
        "dot regression with a draw other than an ETF",
        _with(
            loss="dot_regression",
            head={"kind": "dot", "fixed": True, "init": "hadamard"},
            search={"space": {"lr": [0.1]}},
        ),
        "head.init",
        "'hadamard'",
    ),
    ("draw seeds searched for a fixed construction", _space(init="orthoplex", draw_seed=[0, 1]), "draw_seed", "[0, 1]"),
    ("a projection narrower than the draw", _with(head={"init": "etf", "dim": 8}), "head.init", "projects the image"),
    ("a long-tail ratio above 1", _space(long_tail_ratio=[1.0, 1.5]), "search.space.long_tail_ratio[1]", "1.5"),
    ("a negative training-set NC interval", _with(nc_train_every=-1), "nc_train_every", "-1"),
    ("a budget of no GPU-hours", _with(budget=0), "budget", "0"),
    (
        "a budget on a TPE search",
        _with(budget=2.0, search={"method": "tpe", "num_samples": 4, "space": {"lr": {"loguniform": [0.01, 0.1]}}}),
        "budget",
        "num_samples",
    ),
    ("a budget that admits no trial", _with(budget=1e-12), "budget", "admits no trial"),
    (
        "ASHA grace period 0",
        _with(search={"space": {"fixed": [True]}, "asha": {"grace_period": 0}}),
        "search.asha.grace_period",
        "0",
    ),
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
    path = write_sweep(
        _with(epochs=0, model="vgg11", search={"space": {"lr": [-1], "S": [0]}}, head={"kind": "cosine"})
    )
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
    files = [p for p in sorted((ROOT / "sweeps").rglob("*.yaml")) if "base" not in p.parent.parts]
    assert len(files) >= 18
    for path in files:
        assert main(["validate", str(path)]) == 0, path


def test_validate_counts_trials_and_prices_them_without_importing_ray_or_once_counted_torch(tmp_path):
    """Checking a file is quick: planning is Ray-free, and once an architecture's FLOP were counted (the first call),
    pricing reads them from the cache without torch, MLflow or scikit-learn. Several files: one total, the rate once."""
    heavy = ("ray", "torch", "mlflow", "sklearn")
    env = os.environ | {"FIXRAY_FLOP_CACHE": str(tmp_path / "flop.json")}  # nothing counted yet
    code = (
        "import sys; from fixray.cli import main; "
        "code = main(['validate', 'sweeps/quickstart.yaml', 'sweeps/paper/dot-cifar10.yaml']); "
        "assert code == 0, code; "
        f"print('imported:', sorted({{m.split('.')[0] for m in sys.modules}} & {set(heavy)!r}))"
    )
    first, again = (
        subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, env=env) for _ in "12"
    )
    assert first.returncode == 0 == again.returncode, first.stderr + again.stderr
    assert "imported: ['torch']" in first.stdout  # counted once (digits' files: none to read)
    assert "imported: []" in again.stdout  # read back from the cache
    for done in (first, again):
        assert "24 trials" in done.stdout  # quickstart
        assert "54 trials" in done.stdout  # dot-cifar10: 3 backbones x fixed/learned x 3 lr x 3 seeds
        assert "total: 78 trials" in done.stdout and done.stdout.count("TFLOP/s") == 1
    assert first.stdout.split("imported:")[0] == again.stdout.split("imported:")[0]


def test_paper_sweeps_share_the_authors_protocol_from_one_base_file():
    protocol = {"epochs", "batch_size", "pooling", "normalisation", "optimizer", "schedule", "seeds", "resources"}
    for path in sorted((ROOT / "sweeps" / "paper").glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        assert raw["extends"] == "base/authors.yaml", path
        assert not (protocol | {"tracking"}) & set(raw), f"{path} repeats the protocol"
        spec = load_sweep(path)
        # The authors' code, point by point (shared/paper/authors-recipe.md).
        assert spec.epochs == 80 and spec.seeds == [0, 1, 2] and spec.batch_size == 32
        assert (spec.pooling, spec.normalisation) == ("authors", "authors")
        assert (spec.optimizer.momentum, spec.optimizer.nesterov, spec.optimizer.weight_decay) == (0.9, True, None)
        assert (spec.schedule.kind, spec.schedule.factor, spec.schedule.patience) == ("plateau", 0.2, 3)
        assert spec.schedule.threshold_mode == "abs"
        assert (spec.head.init, spec.head.bias) == ("uniform_int", True)  # b = 0.01 for cosine heads too
        assert spec.tracking.experiment == "fixray-paper"
        assert spec.head.kind == raw["head"]["kind"]  # the file's own head keys merge over the base's
        decay = {to_params(trial_config(spec, p))["weight_decay"] for p in points(spec)}
        assert decay == ({5e-4} if spec.head.kind == "dot" else {0.0}), path
        if spec.name.startswith("paper-cosine-best-s-"):
            assert {1, 20, 40} <= set(spec.search.space.parameters()["S"])  # never below Table 2's S = 1 cell
            assert spec.robustness is not None  # Table 6's cosine columns come from these models
            assert (spec.generalisation == "cifar10.1") == (spec.dataset == "cifar10")  # and Table 5's
        if spec.name.startswith("paper-cosine-s1-"):
            assert spec.robustness is None and spec.generalisation is None  # no table reads them there


def test_every_sweep_a_paper_table_reads_exists_as_a_sweep_file():
    from fixray.records.paper import TABLES, layout

    names = {load_sweep(p).name for p in (ROOT / "sweeps" / "paper").glob("*.yaml")}
    wanted = {cell.sweep for table in TABLES for cell in layout(table).cells.values()}
    wanted.discard(None)  # cells of the paper's own unpublished sets read no sweep
    assert len(wanted) == 16
    assert wanted <= names, f"no sweep file for {sorted(wanted - names)}"


@pytest.mark.parametrize(
    "extends,shown",
    [("nowhere.yaml", "nowhere.yaml"), (["base.yaml"], "['base.yaml']"), ("chained.yaml", "chained.yaml")],
)
def test_a_bad_extends_exits_2_naming_it(extends, shown, write_sweep, capsys):
    write_sweep("epochs: 3\nextends: base.yaml\n", "chained.yaml")
    path = write_sweep(yaml.safe_dump({"extends": extends, **yaml.safe_load(GOOD_SWEEP)}))
    assert main(["validate", str(path)]) == 2
    message = capsys.readouterr().err
    assert "extends" in message and shown in message and "expected" in message


def test_a_sweep_file_overrides_its_base_key_by_key(write_sweep):
    write_sweep("epochs: 9\noptimizer: {momentum: 0.5, weight_decay: 0.01}\nhead: {kind: cosine, S: 4}\n", "base.yaml")
    spec = load_sweep(write_sweep("extends: base.yaml\noptimizer: {weight_decay: 0.0}\n" + GOOD_SWEEP))
    assert spec.epochs == 2  # the file's own key wins
    assert (spec.optimizer.momentum, spec.optimizer.weight_decay) == (0.5, 0.0)  # mappings merge
    assert (spec.head.kind, spec.head.S) == ("cosine", 4.0)


# A value each setting's own rule refuses, and one it takes: the search space must agree with the setting.
SETTING_RULES = [
    ("lr", [], 0.0, 0.3),
    ("momentum", ["optimizer"], 1.0, 0.5),
    ("weight_decay", ["optimizer"], -0.1, 0.0),
    ("S", ["head"], 0.0, 2.0),
    ("m", ["head"], -0.2, 0.2),
    ("init", ["head"], "orthogonal", "hadamard"),
]


@pytest.mark.parametrize("name,section,refused,taken", SETTING_RULES, ids=[r[0] for r in SETTING_RULES])
def test_the_search_space_follows_each_settings_own_rule(name, section, refused, taken, write_sweep):
    def document(where: str, value) -> dict:
        doc = yaml.safe_load(GOOD_SWEEP) | {"head": {"kind": "cosine"}}
        if where == "setting":
            target = doc
            for key in section:
                target = target.setdefault(key, {})
            target[name] = value
        else:
            doc["search"]["space"][name] = [value]
        return doc

    for where in ("setting", "space"):
        with pytest.raises(SweepFileError):
            parse_sweep(document(where, refused), Path("sweep.yaml"))
        parse_sweep(document(where, taken), Path("sweep.yaml"))


def test_random_search_draws_reproducibly_and_shares_draws_across_seeds(write_sweep):
    text = _with(
        seeds=[0, 1, 2], search={"method": "random", "num_samples": 5, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}}
    )
    spec = load_sweep(write_sweep(text))
    drawn = points(spec)
    assert drawn == points(load_sweep(write_sweep(text, "again.yaml")))
    assert len(drawn) == expected_trials(spec) == 15
    by_lr = {}
    for point in drawn:
        by_lr.setdefault(point["lr"], []).append(point["seed"])
    assert len(by_lr) == 5 and all(sorted(seeds) == [0, 1, 2] for seeds in by_lr.values())
    assert all(1e-3 <= lr <= 1e-1 for lr in by_lr)


def test_quickstart_grid_has_24_trials_and_no_S_for_dot_heads():
    spec = load_sweep(ROOT / "sweeps" / "quickstart.yaml")
    grid = points(spec)
    assert expected_trials(spec) == len(grid) == 24  # dot: 2 fixed x 2 lr x 2 seeds; cosine: x 2 S as well
    params = [to_params(trial_config(spec, p)) for p in grid]
    assert all(p["S"] is None for p in params if p["kind"] == "dot")
    assert {p["S"] for p in params if p["kind"] == "cosine"} == {1.0, 10.0}
    assert len({repr(p) for p in params}) == 24
    assert all(p["bias"] == (p["kind"] == "dot") for p in params)


def test_tpe_trial_configs_get_their_seed_from_the_repeat_index(write_sweep):
    from fixray.crossing.contract import from_params
    from fixray.sweep.plan import suggested_trial

    spec = load_sweep(
        write_sweep(
            _with(
                seeds=[5, 9], search={"method": "tpe", "num_samples": 3, "space": {"lr": {"loguniform": [1e-3, 1e-1]}}}
            )
        )
    )
    assert expected_trials(spec) == 6
    second = suggested_trial(spec, {"lr": 0.01, "__trial_index__": 1})  # Repeater's second copy of a suggestion
    assert (second.config.lr, second.config.seed) == (0.01, 9) and second.name == "dot-learned-lr0.01-seed9"
    assert from_params(second.sent()["config"]) == second.config  # what its trial trains: settled, in the driver
    one_seed = spec.model_copy(update={"seeds": [7]})
    assert suggested_trial(one_seed, {"lr": 0.01}).config.seed == 7  # one seed: no Repeater, no index


def test_a_tpe_searcher_pickles_its_spec_as_plain_data_and_suggests_the_same_trials_back():
    """Tune pickles the searcher into the sweep's saved state: the spec goes as plain data, so a saved sweep names
    none of the schema's classes (made from the trial contract), and comes back equal, its space in the file's order."""
    import pickle

    from fixray.sweep.search import search_alg

    space = {"lr": {"loguniform": [1e-3, 1e-1]}, "kind": {"choice": ["dot", "cosine"]}}
    raw = yaml.safe_load(_with(seeds=[5, 9], search={"method": "tpe", "num_samples": 3}))
    raw["search"]["space"] = space  # in this order: not the sorted keys of a dumped document
    spec = parse_sweep(raw, Path("t.yaml"))
    saved = pickle.dumps(search_alg(spec))
    assert b"fixray.sweep.spec" not in saved
    back = pickle.loads(saved)
    assert back.spec == spec and list(back.spec.search.space.parameters()) == list(raw["search"]["space"])
    suggestion = {"lr": 0.01, "kind": "cosine", "__trial_index__": 1}
    assert suggested_trial(back.spec, suggestion) == suggested_trial(spec, suggestion)


def test_a_trial_s_identity_is_what_it_computes_not_where_or_how_it_runs():
    from fixray.sweep.plan import plan

    def identities(**changes) -> list[str]:
        return [trial.identity for trial in plan(parse_sweep(yaml.safe_load(_with(**changes)), Path("s.yaml")))]

    first = identities()
    assert len(set(first)) == len(first) == 2  # fixed and learned
    same = dict(
        resources={"cpus_per_trial": 2, "max_retries": 0, "checkpoint_every": 1, "bf16": False},
        tracking={"uri": "sqlite:///other.db", "experiment": "other"},
        storage_path="elsewhere",
        budget=5.0,
        name="renamed",
    )
    for key, value in same.items():
        assert identities(**{key: value}) == first, key
    for key, value in dict(epochs=3, lr=0.05, batch_size=32, seeds=[1], head={"kind": "cosine", "S": 4}).items():
        assert not set(identities(**{key: value})) & set(first), key
    assert identities(search={"space": {"fixed": [False, True]}}) == first[::-1]  # a grid's order is no identity
