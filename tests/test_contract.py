"""The trial contract and the head registry: one name per setting, the head owns its rules, a new head is one
declaration and one class."""

import dataclasses
import inspect
from pathlib import Path
from typing import Annotated

import pytest
import torch
import torch.nn.functional as F
import yaml
from annotated_types import Ge
from conftest import GOOD_SWEEP

from fixray.crossing.contract import (
    FLAT_PATHS,
    SEARCHABLE,
    HeadConfig,
    TrialConfig,
    doc,
    from_params,
    to_params,
    with_values,
)
from fixray.crossing.head_kinds import COMMON_OPTIONS, HEAD_KINDS, HeadKind
from fixray.records.encoding import param_value, read_params
from fixray.records.render import as_markdown
from fixray.records.tables import summarise, sweep_table
from fixray.sweep.plan import points, run_name, trial_config
from fixray.sweep.spec.checks import SweepFileError, parse_sweep
from fixray.trial.heads import HEADS, ClassHead, register_head
from fixray.trial.models import InputSpec, build_classifier


def _spec(**changes):
    return parse_sweep(yaml.safe_load(GOOD_SWEEP) | changes, Path("sweep.yaml"))


def _trial(**head) -> TrialConfig:
    return TrialConfig(model="small_cnn", epochs=2, seed=3, head=HeadConfig(**head))


def _leaves(cls) -> int:
    fields = dataclasses.fields(cls)
    return sum(_leaves(f.default_factory) if dataclasses.is_dataclass(f.default_factory) else 1 for f in fields)


def test_every_setting_has_one_flat_name_and_every_searchable_one_is_a_setting():
    assert len(FLAT_PATHS) == _leaves(TrialConfig) == 31  # two settings sharing a flat name would lose one
    assert set(SEARCHABLE) <= set(FLAT_PATHS)
    assert FLAT_PATHS["S"] == ("head", "S") and FLAT_PATHS["schedule"] == ("schedule", "kind")


@pytest.mark.parametrize(
    "head",
    [
        {"kind": "cosine", "fixed": True, "S": 16.0, "learn_S": True, "margin": "arcface", "m": 0.3, "init": "normal"},
        {"kind": "dot", "fixed": False, "bias": False},
    ],
)
def test_params_written_to_mlflow_read_back_to_the_same_trial(head):
    cfg = with_values(_trial(**head), {"lr": 0.003, "momentum": 0.5, "plateau_patience": 7}).settled()
    logged = {k: param_value(v) for k, v in to_params(cfg).items()}  # what MLflow stores: strings
    back = read_params(logged)
    assert back == to_params(cfg)
    settings = {k: v for k, v in back.items() if v is not None}
    assert with_values(TrialConfig(model="x", epochs=1, seed=0), settings).settled() == cfg
    assert from_params(to_params(cfg)) == cfg  # what a trial rebuilds from the flat config the driver sent it


def test_options_a_head_kind_does_not_read_are_none_in_mlflow_and_absent_from_its_constructor():
    dot = _trial(kind="dot", S=30.0, margin="cosface").settled()
    assert {k: to_params(dot)[k] for k in ("S", "learn_S", "margin", "m", "bias")} == {
        "S": None,
        "learn_S": None,
        "margin": None,
        "m": None,
        "bias": True,  # the dot-product head's default, resolved
    }
    assert set(dot.head.options()) == {"fixed", "bias", "init", "draw_seed", "dim"}
    assert dot.settled() == _trial(kind="dot").settled()  # S and margin of a dot head make no new trial
    assert to_params(_trial(kind="cosine").settled())["bias"] is False
    with pytest.raises(ValueError, match="settled"):  # an unsettled config would log bias 'none'
        to_params(_trial(kind="cosine"))


def test_every_head_option_in_the_contract_reaches_the_built_head():
    options = {
        "fixed": False,
        "bias": True,
        "init": "hadamard",
        "S": 7.0,
        "learn_S": True,
        "margin": "cosface",
        "m": 0.25,
    }
    head = HeadConfig(kind="cosine", **options)
    model = build_classifier("small_cnn", InputSpec(1, 8), 10, head, seed=0).head
    assert type(model) is HEADS["cosine"]
    assert not model.fixed and isinstance(model.weight, torch.nn.Parameter)
    assert model.bias is not None and torch.allclose(model.bias, torch.full((10,), 0.01))
    assert isinstance(model.scale, torch.nn.Parameter) and model.scale.item() == 7.0
    assert (model.margin, model.m) == ("cosface", 0.25)
    from fixray.trial.heads import draw_class_vectors

    assert torch.equal(model.weight.detach(), draw_class_vectors(10, 64, 0, "hadamard"))


class _NormalisedDotHead(ClassHead):
    """A head a researcher might add: S * <f/|f|, w> + b, reading S but no margin."""

    def __init__(self, in_features, num_classes, *, S=1.0, **common):
        super().__init__(in_features, num_classes, **common)
        self.register_buffer("scale", torch.tensor(float(S)))

    def scores(self, features, labels):
        return self.scale * F.linear(F.normalize(features, dim=1), self.weight)


@pytest.fixture
def normdot():
    register_head(HeadKind("normdot", COMMON_OPTIONS + ("S",), shown=("S",), default_bias=False))(_NormalisedDotHead)
    yield "normdot"
    del HEADS["normdot"], HEAD_KINDS["normdot"]


def test_a_new_head_is_one_declaration_and_one_class_and_validation_planning_naming_and_reports_ask_it(normdot):
    space = {"kind": ["dot", normdot], "fixed": [True], "S": [2, 8]}
    spec = _spec(search={"space": space})
    grid = points(spec)
    assert len(grid) == 3  # dot once (it reads no S), normdot once per S
    names = sorted(run_name(trial_config(spec, p), spec) for p in grid)
    assert names == ["dot-fixed-lr0.1-seed0", "normdot-fixed-S2-lr0.1-seed0", "normdot-fixed-S8-lr0.1-seed0"]

    model = build_classifier("small_cnn", InputSpec(1, 8), 10, trial_config(spec, grid[-1]).head, seed=0)
    assert isinstance(model.head, _NormalisedDotHead) and model.head.scale.item() == 8.0
    assert model(torch.randn(4, 1, 8, 8)).abs().max() <= 8.0 + 1e-5

    with pytest.raises(SweepFileError, match="head.margin"):  # normdot reads no margin, nor does dot
        _spec(head={"kind": normdot, "margin": "cosface"}, search={"space": {"fixed": [True]}})
    with pytest.raises(SweepFileError, match="registered head kind"):
        _spec(search={"space": {"kind": ["dot", "normdot2"]}})

    class Run:  # the shape of an MLflow run that summarise reads
        def __init__(self, params, acc):
            self.data = type("Data", (), {"params": params, "metrics": {"val/acc": acc}, "tags": {}})()

    runs = [Run({k: param_value(v) for k, v in to_params(trial_config(spec, p)).items()}, 0.5) for p in grid]
    table = as_markdown(sweep_table(summarise(runs)))
    assert "| normdot | fixed | 8.0 | 0.1 |" in table and "| dot | fixed | none | 0.1 |" in table


def test_grid_points_of_a_dot_head_drop_cosine_only_options_and_merge():
    spec = _spec(search={"space": {"kind": ["dot", "cosine"], "S": [1, 10], "margin": ["none", "cosface"]}})
    configs = [trial_config(spec, p) for p in points(spec)]
    assert sum(c.head.kind == "dot" for c in configs) == 1
    assert sum(c.head.kind == "cosine" for c in configs) == 4
    assert all("S" not in p for p in points(spec) if p["kind"] == "dot")


@pytest.mark.parametrize("kind", list(HEADS))
def test_each_head_class_takes_exactly_the_options_its_declaration_says_it_reads(kind):
    """The declaration (no torch) and the class (torch) are two places: they cannot drift apart unseen."""
    taken = set()
    for cls in (HEADS[kind], ClassHead):
        taken |= set(inspect.signature(cls.__init__).parameters)
    taken -= {"self", "in_features", "num_classes", "seed", "common"}
    assert taken == set(HEAD_KINDS[kind].options)


@dataclasses.dataclass(frozen=True)
class WithWarmup(TrialConfig):
    """The trial contract with one more setting, declared the one way a setting is declared."""

    warmup: Annotated[int, Ge(0)] = doc("epochs of linear learning-rate warm-up", 0, searchable=True)


def test_a_setting_declared_once_reaches_the_schema_the_plan_the_params_and_the_docs():
    """Adding a trial setting is one field of the contract: its rule is checked at its key and in the search space,
    the plan sets it, MLflow's params carry it and come back, and the sweep-file reference documents it."""
    from fixray.sweep.plan import plan
    from fixray.sweep.reference import render
    from fixray.sweep.spec.schema import sweep_schema

    schema = sweep_schema(WithWarmup)
    raw = yaml.safe_load(GOOD_SWEEP)
    with pytest.raises(SweepFileError) as refused:
        parse_sweep(raw | {"warmup": -1, "search": {"space": {"warmup": [2, -3]}}}, Path("s.yaml"), schema)
    assert {problem.path for problem in refused.value.problems} == {"warmup", "search.space.warmup[1]"}
    with pytest.raises(SweepFileError, match="warmup"):  # the sweep files of today's contract know no such key
        _spec(warmup=2)

    spec = parse_sweep(raw | {"warmup": 2}, Path("s.yaml"), schema)
    assert {trial.config.warmup for trial in plan(spec)} == {2} and spec.values("warmup").listed == (2,)
    searched = parse_sweep(raw | {"search": {"space": {"warmup": [0, 3]}}}, Path("s.yaml"), schema)
    trials = plan(searched)
    assert [trial.config.warmup for trial in trials] == [0, 3]
    assert [trial.name for trial in trials] == ["dot-learned-warmup=0-lr0.1-seed0", "dot-learned-warmup=3-lr0.1-seed0"]
    params = to_params(trials[1].config)
    assert params["warmup"] == 3
    assert read_params({k: param_value(v) for k, v in params.items()})["warmup"] == "3"  # not a setting of today's
    assert from_params(params, WithWarmup) == trials[1].config

    page = render(schema)
    assert "| `warmup` | integer >= 0 | 0 | epochs of linear learning-rate warm-up |" in page
    assert "`warmup` (integer >= 0)" in page and "warmup" not in render()
