"""Rules of the science a mistake could break with every other test green, each pinned on a case whose answer is known:
neural collapse as the loop wires it, the long tail a trial trains on, the best epoch's weights, the recipe's
Nesterov, the cells that read S = 1 runs alone, and the family's fixed-learned pairs."""

import dataclasses
import statistics
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from test_paper_report import _child, _store

from fixray.cli import main
from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import LongTail, ScheduleConfig, TrialConfig
from fixray.crossing.images import InputSpec, Splits
from fixray.data.registry import load_dataset
from fixray.records.answer import BEST_ACC, comparisons
from fixray.records.runs import SweepRuns
from fixray.records.tables import Row
from fixray.sweep.plan import plan
from fixray.sweep.spec.checks import parse_sweep
from fixray.sweep.spec.reading import load_sweep
from fixray.trial import metrics
from fixray.trial.loop import _make_optimizer, build_classifier, train
from fixray.trial.measure import neural_collapse

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _clusters(counts=(30, 6, 3), dim=5, seed=0):
    """Unbalanced classes around random centres, with logits of a random classifier."""
    generator = torch.Generator().manual_seed(seed)
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    centres = 3 * torch.randn(len(counts), dim, generator=generator, dtype=torch.float64)
    features = centres[labels] + torch.randn(len(labels), dim, generator=generator, dtype=torch.float64)
    vectors = torch.randn(len(counts), dim, generator=generator, dtype=torch.float64)
    return features, labels, vectors, features @ vectors.T


def test_every_collapse_measure_but_the_norms_ignores_where_the_image_vectors_sit():
    """NC1, CDNV, NC2 of the means, equinorm, equiangularity and NC3 read the means centred on the global mean, and
    NC4 the nearest mean by distance: moving every image vector by one offset changes none of them. A measure that
    read the raw means (or the nearest mean by dot product) would move."""
    features, labels, vectors, logits = _clusters()
    offset = torch.tensor([40.0, -25.0, 10.0, 5.0, 60.0], dtype=torch.float64)
    here, there = (neural_collapse(f, logits, labels, vectors) for f in (features, features + offset))
    moved = {keys.VAL_COLLAPSE["feature_norm_mean"], keys.VAL_COLLAPSE["feature_norm_std"]}
    assert {k: pytest.approx(v, rel=1e-7, abs=1e-9) for k, v in here.items() if k not in moved} == {
        k: v for k, v in there.items() if k not in moved
    }


def test_the_global_mean_of_unbalanced_classes_is_the_mean_of_their_means():
    features, labels, vectors, logits = _clusters()
    means = torch.stack([features[labels == c].mean(0) for c in range(3)])
    found = neural_collapse(features, logits, labels, vectors)
    norms = (means - means.mean(0)).norm(dim=1)
    assert found[keys.VAL_COLLAPSE["equinorm_means"]] == pytest.approx(
        (norms.std(unbiased=False) / norms.mean()).item()
    )
    by_images = (means - features.mean(0)).norm(dim=1)  # the mean of the images: another number here
    assert (by_images.std(unbiased=False) / by_images.mean()).item() != pytest.approx(norms.std() / norms.mean())


def test_nc4_takes_the_nearest_class_mean_by_distance_when_the_means_differ_in_norm():
    """Means (3, 0) and (1, 0). The image (1.5, 0) of class 0 is nearer (1, 0); by dot product (3, 0) would win, and
    so would it for (1, 0) itself. The logits predict the nearest mean of every image: NC4 = 0 (by dot product: 3/4)."""
    features = torch.tensor([[4.5, 0.0], [1.5, 0.0], [1.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 0, 1, 1])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert metrics.ClassGeometry.of(features, labels).nc4(logits) == 0.0


def _trained(cfg: TrialConfig, splits) -> list[dict]:
    found: list[dict] = []
    train(cfg.settled(), splits, lambda m, s: found.append(m))
    return found


def test_a_long_tailed_trial_trains_on_the_cut_its_long_tail_seed_makes_not_its_trial_seed(digits):
    """The same trial seed with two long-tail seeds trains on two sets (so two results); a trial that ignored the
    cut, or cut by its trial seed, would give the same twice."""
    base = TrialConfig(model="small_cnn", epochs=1, seed=0, lr=0.05, batch_size=64, nc_train_every=1)
    whole = _trained(base, digits)[-1]
    cut = [_trained(dataclasses.replace(base, long_tail=LongTail(ratio=0.1, seed=s)), digits)[-1] for s in (3, 4)]
    again = _trained(dataclasses.replace(base, long_tail=LongTail(ratio=0.1, seed=3)), digits)[-1]
    assert cut[0]["train/nc1"] != whole["train/nc1"] and cut[0]["train/nc1"] != cut[1]["train/nc1"]
    assert again == cut[0]  # the long-tail seed alone decides the cut: the same seeds, the same trial
    assert cut[0]["val/acc"] != whole["val/acc"]


def test_a_straight_run_measures_its_best_epoch_on_a_copy_of_that_epochs_weights(digits):
    """lr 0.5 on digits peaks at epoch 1 of 3; the generalisation set is measured on epoch 1's weights. Keeping a
    reference to the live weights instead of a copy would measure the last epoch's."""
    cfg = TrialConfig(model="small_cnn", epochs=3, seed=0, lr=0.5, batch_size=64, schedule=ScheduleConfig(kind="none"))
    with_extra = Splits(digits.train, digits.test, digits.class_names, extra={"gen": digits.test})
    found = _trained(cfg, with_extra)
    accuracies = [m["val/acc"] for m in found]
    assert found[-1]["val/acc_best_epoch"] == 1 and accuracies[0] != accuracies[-1]
    assert found[-1]["gen/acc"] == pytest.approx(accuracies[0]) and found[-1]["gen/acc_last"] == accuracies[-1]


def test_the_authors_recipe_trains_with_nesterov_momentum():
    spec = load_sweep(ROOT / "sweeps" / "paper" / "dot-cifar10.yaml")
    cfg = plan(spec)[0].config
    [group, *_] = _make_optimizer(cfg, build_classifier("small_cnn", InputSpec(3, 32), 10, cfg.head, 0)).param_groups
    assert (group["momentum"], group["nesterov"]) == (0.9, True)


def test_table_2_and_the_cosine_spearman_row_read_s_1_runs_alone_and_the_s1_files_plan_nothing_else(tmp_path, capsys):
    for path in sorted((ROOT / "sweeps" / "paper").glob("cosine-s1-*.yaml")):
        assert {trial.config.head.S for trial in plan(load_sweep(path))} == {1.0}, path
    runs = SweepRuns(_store(tmp_path), "fixray-paper", "paper-cosine-s1-cifar10")
    resnet = {"model": "resnet18", "fixed": "True"}
    for seed in (0, 1):  # S = 1 at 93%; a stray S = 20 run at 99% in the same sweep must not reach the cell
        _child(runs, f"s1-{seed}", resnet | {"S": "1.0", "seed": str(seed)}, 0.93, compactness=0.95)
        _child(runs, f"s20-{seed}", resnet | {"S": "20.0", "seed": str(seed)}, 0.99, compactness=0.5)
    assert main(["report", "table2", "--tracking-uri", _store(tmp_path)]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| cifar10 |")).split(" | ")
    assert row[3] == "93.0 ± 0.0"
    assert main(["report", "table4", "--tracking-uri", _store(tmp_path)]) == 0
    fixed_row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("| S1_fixed |"))
    assert fixed_row.split(" | ")[1] == "0.95 ± 0.00"


def _row(init: str, fixed: bool, by_seed: dict[int, float]) -> Row:
    finished = {
        seed: SimpleNamespace(data=SimpleNamespace(metrics={keys.BEST_ACC: acc}, params={}))
        for seed, acc in by_seed.items()
    }
    return Row(
        {"init": init, "fixed": fixed, "lr": 0.1},
        finished=finished,
        outcomes=Counter(finished=len(finished)),
        runs=list(finished.values()),
    )


def test_each_fixed_draw_is_compared_with_the_learned_head_of_the_same_draw_seed_by_seed():
    """Two draws, fixed and learned; the learned ETF row lists its seeds in reverse. ETF: fixed - learned is 0.05 on
    seed 0 and 0.10 on seed 1 (mean 0.075); pairing by position, or with the other draw's learned head, gives else."""
    rows = [
        _row("etf", True, {0: 0.90, 1: 0.80}),
        _row("hadamard", True, {0: 0.60, 1: 0.60}),
        _row("hadamard", False, {0: 0.50, 1: 0.50}),
        _row("etf", False, {1: 0.70, 0: 0.85}),
    ]
    found = {c.fixed.key["init"]: c.interval(BEST_ACC) for c in comparisons(rows)}
    assert found["etf"].mean == pytest.approx(statistics.fmean([0.05, 0.10]))
    assert found["hadamard"].mean == pytest.approx(0.10) and found["etf"].n == 2


def _family_runs(tmp_path):
    """A family sweep in a real store: ETF fixed and learned, and Hadamard fixed, at lr 0.1, seeds 0 and 1; the fixed
    ETF's seed 1 diverged. Each finished run peaks at epoch 2 of 3, where its NC1 is lowest by construction."""
    from test_answer import _run

    spec = parse_sweep(
        {
            "dataset": "digits",
            "model": "small_cnn",
            "epochs": 3,
            "head": {"kind": "dot"},
            "search": {"space": {"init": ["etf", "hadamard"], "fixed": [True, False]}},
            "seeds": [0, 1],
        },
        tmp_path,
    )
    runs = SweepRuns(f"sqlite:///{tmp_path / 'f.db'}", "fixray", "family")
    for trial in plan(spec):
        if trial.config.head.init == "hadamard" and not trial.config.head.fixed:
            continue
        diverged = trial.config.head.init == "etf" and trial.config.head.fixed and trial.config.seed == 1
        history = {keys.VAL_ACC: [0.5, 0.9, 0.8], keys.NC1: [0.6, 0.2, 0.4]}
        if diverged:
            history = {keys.VAL_ACC: [0.1, 0.05, float("nan")], keys.NC1: [9.0, 9.0, 9.0]}
        _run(runs, spec, trial.config, "diverged" if diverged else "finished", history)
    return runs


def test_the_family_table_reads_collapse_at_each_runs_best_epoch_and_its_curves_leave_out_runs_that_did_not_finish(
    tmp_path,
):
    from fixray.records.family import _mean_curve, family_table
    from fixray.records.tables import summarise

    runs = _family_runs(tmp_path)
    rows = summarise(runs.children(), runs.client)
    table = family_table(rows)
    nc1 = table.header.index("NC1 (test)")
    assert {row[nc1] for row in table.rows} == {"0.200 ± 0.000"}  # epoch 2's, not the last epoch's 0.40
    etf_fixed = next(row for row in rows if row.key["init"] == "etf" and row.key["fixed"])
    assert _mean_curve(etf_fixed, keys.NC1) == [(1, 0.6), (2, 0.2), (3, 0.4)]  # seed 1 diverged: not averaged in
    assert _mean_curve(etf_fixed, keys.VAL_ACC) == [(1, 0.5), (2, 0.9), (3, 0.8)]


def test_a_long_tail_ratio_is_a_context_each_headline_holds_equal_on_both_sides():
    from fixray.records.answer import Headline
    from fixray.records.tables import is_context

    assert is_context("long_tail_ratio") and is_context("model") and not is_context("init")
    rows = [
        _row("etf", fixed, {0: acc, 1: acc}) for fixed, acc in ((True, 0.9), (False, 0.8), (True, 0.6), (False, 0.7))
    ]
    for row, ratio in zip(rows, (1.0, 1.0, 0.1, 0.1)):
        row.key["long_tail_ratio"] = ratio
    found = {dict(h.context)["long_tail_ratio"]: h.interval.mean for h in Headline.each(rows)}
    assert found == {1.0: pytest.approx(0.1), 0.1: pytest.approx(-0.1)}
