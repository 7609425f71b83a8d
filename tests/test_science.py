"""Rules of the science, each on a case whose answer is known by hand, so that getting one wrong turns a test red.

The measurements go through `measure()` (what the loop logs), not only the pure functions, so that passing
the wrong tensor to a right function is caught too.
"""

import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from conftest import GOOD_SWEEP
from scipy.stats import spearmanr

from fixray.crossing.contract import Execution, HeadConfig, OptimizerConfig, ScheduleConfig, TrialConfig, to_params
from fixray.crossing.images import InputSpec, Splits
from fixray.data.registry import load_dataset
from fixray.sweep.plan import points, trial_config
from fixray.sweep.spec.checks import SweepFileError, parse_sweep
from fixray.trial.backbones import feature_dim
from fixray.trial.loop import _make_optimizer, _make_scheduler, build_classifier, train
from fixray.trial.measure import class_vector_geometry, measure
from fixray.trial.metrics import etf_distance
from fixray.trial.models import build_backbone


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _spec(**changes):
    return parse_sweep(yaml.safe_load(GOOD_SWEEP) | changes, Path("sweep.yaml"))


# --- measurements on a model whose mistakes are chosen ------------------------------------------------

VECTORS = torch.eye(3)  # class vectors e0, e1, e2
FEATURES = torch.tensor([[2.0, 0.0, 0.0], [0.0, 1.0, 0.5], [0.0, 0.2, 1.0], [1.0, 0.1, 0.0]])
LABELS = torch.tensor([0, 1, 1, 2])  # images 2 and 3 are mistaken: predicted 2 and 0 (argmax of f . w)


def test_accuracy_and_compactness_follow_the_argmax_prediction_not_the_true_class():
    logits = FEATURES @ VECTORS.T
    measured = measure(FEATURES, logits, LABELS, VECTORS)
    assert measured["val/acc"] == pytest.approx(0.5)  # argmin would predict [1, 0, 0, 2]: 0.25
    # cos(f, w_predicted) by hand: 1, 1/sqrt(1.25), 1/sqrt(1.04), 1/sqrt(1.01)
    by_prediction = (1 + 1 / math.sqrt(1.25) + 1 / math.sqrt(1.04) + 1 / math.sqrt(1.01)) / 4
    by_true_class = (1 + 1 / math.sqrt(1.25) + 0.2 / math.sqrt(1.04) + 0.0) / 4
    assert measured["val/compactness"] == pytest.approx(by_prediction, abs=1e-6)
    assert abs(by_prediction - by_true_class) > 0.1


def test_confusion_spearman_counts_every_ordered_pair_of_an_asymmetric_confusion():
    vectors = torch.tensor([[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [0.0, 0.6, 0.8]])  # cos01 .8, cos02 0, cos12 .36
    # images of class i predicted as j: an asymmetric matrix (5 of 0 went to 1, none of 1 went to 0, ...)
    confusion = [[10, 5, 1], [0, 10, 3], [4, 2, 10]]
    labels, predictions = [], []
    for i, row in enumerate(confusion):
        for j, count in enumerate(row):
            labels += [i] * count
            predictions += [j] * count
    logits = torch.nn.functional.one_hot(torch.tensor(predictions), 3).float()
    features = torch.randn(len(labels), 3)
    measured = measure(features, logits, torch.tensor(labels), vectors)
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2), (2, 0), (2, 1)]  # every ordered pair i != j
    cos = {(0, 1): 0.8, (0, 2): 0.0, (1, 2): 0.36}
    expected = spearmanr([cos[tuple(sorted(p))] for p in pairs], [confusion[i][j] for i, j in pairs]).statistic
    upper_only = spearmanr([0.8, 0.0, 0.36], [5, 1, 3]).statistic
    assert measured["val/confusion_spearman"] == pytest.approx(expected, abs=1e-9)
    assert abs(expected - upper_only) > 0.1  # half of the pairs would give another number


def test_separability_means_and_maxima_of_a_non_regular_set():
    vectors = torch.tensor([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])  # cosines 0, 1/sqrt 2, 1/sqrt 2
    # image vectors whose class means are those vectors; class 2's images are predicted as class 0
    features = torch.tensor([[1.0, 0.5], [1.0, -0.5], [0.0, 1.0], [1.5, 2.5], [2.5, 1.5]])
    labels = torch.tensor([0, 0, 1, 2, 2])
    logits = torch.tensor([[1.0, 0, 0], [1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]])
    measured = measure(features, logits, labels, vectors) | class_vector_geometry(vectors)
    mean, largest = (0 + 2 / math.sqrt(2)) / 3, 1 / math.sqrt(2)
    assert measured["class_vectors/cos_mean"] == pytest.approx(mean, abs=1e-6)
    assert measured["class_vectors/cos_max"] == pytest.approx(largest, abs=1e-6)
    # separability of image representations: class means of the *true* classes, here the same three vectors
    assert measured["val/separability_mean"] == pytest.approx(mean, abs=1e-6)
    assert measured["val/separability_max"] == pytest.approx(largest, abs=1e-6)


def test_separability_reads_the_class_means_of_the_images_not_the_class_vectors():
    vectors = torch.eye(3)  # every cosine between class vectors is 0
    # class means (1, 1, 0), (1, 0, 0), (0, 0, 1): cosines 1/sqrt 2, 0, 0; image 0 is mistaken for class 1
    features = torch.tensor([[1.0, 2.0, 0.0], [1.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    labels = torch.tensor([0, 0, 1, 2])
    logits = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    measured = measure(features, logits, labels, vectors) | class_vector_geometry(vectors)
    assert measured["class_vectors/cos_max"] == pytest.approx(0.0, abs=1e-9)
    assert measured["val/separability_max"] == pytest.approx(1 / math.sqrt(2), abs=1e-6)
    assert measured["val/separability_mean"] == pytest.approx(1 / math.sqrt(2) / 3, abs=1e-6)


# --- the recipe reaches the model ---------------------------------------------------------------------


def test_every_head_option_of_a_sweep_file_reaches_the_trained_model(digits):
    spec = _spec(
        epochs=1,
        head={"kind": "cosine", "fixed": True, "init": "uniform_int", "bias": True, "S": 5.0, "learn_S": True},
        search={"space": {"fixed": [True]}},
    )
    cfg = trial_config(spec, points(spec)[0])
    states = []
    train(cfg.settled(), digits, lambda metrics, state: states.append(state))
    weights = states[-1]["model"]
    from fixray.trial.heads import draw_class_vectors

    assert torch.equal(weights["head.weight"], draw_class_vectors(10, 64, 0, "uniform_int"))  # init, fixed
    assert torch.equal(weights["head.bias"], torch.full((10,), 0.01))  # bias, frozen with fixed vectors
    assert weights["head.scale"].item() != 5.0  # learn_S: S moved from its start
    plain = trial_config(
        _spec(epochs=1, head={"kind": "cosine", "S": 5.0}, search={"space": {"fixed": [True]}}), {"seed": 0}
    )
    states.clear()
    train(plain.settled(), digits, lambda metrics, state: states.append(state))
    assert "head.bias" not in states[-1]["model"] or states[-1]["model"]["head.bias"] is None
    assert states[-1]["model"]["head.scale"].item() == 5.0


def test_a_learned_S_is_never_decayed_and_is_logged_each_epoch(digits):
    head = HeadConfig(kind="cosine", S=3.0, learn_S=True)
    cfg = TrialConfig(model="small_cnn", epochs=2, seed=0, head=head, optimizer=OptimizerConfig(weight_decay=1e-3))
    model = build_classifier("small_cnn", digits.input_spec, 10, cfg.head, 0)
    optimizer = _make_optimizer(cfg, model)
    decay = {id(p): group["weight_decay"] for group in optimizer.param_groups for p in group["params"]}
    assert decay[id(model.head.scale)] == 0.0  # the file's decay still applies to everything else
    assert decay[id(model.head.weight)] == 1e-3
    reports = []
    train(cfg.settled(), digits, lambda metrics, state: reports.append(metrics))
    assert [round(r["head/S"], 6) != 3.0 for r in reports] == [True, True]


def test_weight_decay_follows_the_head_kind_unless_the_file_sets_it():
    spec = _spec(search={"space": {"kind": ["dot", "cosine"]}})
    decay = {p["kind"]: to_params(trial_config(spec, p))["weight_decay"] for p in points(spec)}
    assert decay == {"dot": 5e-4, "cosine": 0.0}  # the authors': 5e-4 for dot-product runs only
    spec = _spec(optimizer={"weight_decay": 1e-3}, search={"space": {"kind": ["dot", "cosine"]}})
    assert {to_params(trial_config(spec, p))["weight_decay"] for p in points(spec)} == {1e-3}


def test_margins_are_on_in_training(digits):
    losses = {}
    for margin in ("none", "cosface"):
        cfg = TrialConfig(
            model="small_cnn", epochs=1, seed=0, head=HeadConfig(kind="cosine", S=10.0, margin=margin, m=0.5)
        )
        losses[margin] = train(cfg.settled(), digits, lambda m, s: None)["train/loss"]
    assert losses["cosface"] > losses["none"] + 0.3  # the true class's logit is lowered by S * m = 5 in training


def test_the_plateau_schedule_drops_the_lr_when_accuracy_stalls_by_the_authors_absolute_threshold():
    def lrs(mode: str, accuracies: list[float]) -> list[float]:
        cfg = TrialConfig(model="x", epochs=1, seed=0, schedule=ScheduleConfig(threshold_mode=mode))
        optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
        scheduler = _make_scheduler(cfg, optimizer)
        seen = []
        for accuracy in accuracies:
            scheduler.step(accuracy)
            seen.append(optimizer.param_groups[0]["lr"])
        return seen

    stalled = [50.0, 60.0, 60.0, 60.0, 60.0, 60.0]  # patience 3: the 4th epoch without improvement drops it
    assert lrs("abs", stalled) == pytest.approx([0.1] * 5 + [0.02])
    creeping = [60.0, 60.001, 60.002, 60.003, 60.004, 60.005]  # +0.001 % an epoch: better than 1e-4 absolute
    assert lrs("abs", creeping) == pytest.approx([0.1] * 6)
    assert lrs("rel", creeping)[-1] == pytest.approx(0.02)  # relative 1e-4 of 60 % is 0.006: a stall


def test_the_loop_steps_the_plateau_schedule_on_accuracy_in_percent(digits):
    states, reports = [], []
    cfg = TrialConfig(model="small_cnn", epochs=2, seed=0, batch_size=64)
    train(cfg.settled(), digits, lambda metrics, state: (reports.append(metrics), states.append(state)))
    assert states[-1]["scheduler"]["best"] == pytest.approx(100 * max(r["val/acc"] for r in reports))


# --- the best epoch ---------------------------------------------------------------------------------------


STEADY = TrialConfig(model="small_cnn", epochs=4, seed=0, lr=0.05, batch_size=64, schedule=ScheduleConfig(kind="none"))


def test_the_best_epoch_is_the_first_with_the_highest_test_accuracy(digits):
    reports: list[dict] = []
    train(STEADY.settled(), digits, lambda metrics, state: reports.append(metrics))
    accuracies = [r["val/acc"] for r in reports]
    for epoch, report in enumerate(reports, start=1):
        assert report["val/acc_best"] == max(accuracies[:epoch])
        assert report["val/acc_best_epoch"] == accuracies.index(max(accuracies[:epoch])) + 1


def test_a_resumed_trial_keeps_its_states_best_epoch_ties_keep_the_earlier_and_extra_sets_use_its_weights(digits):
    with_extra = Splits(digits.train, digits.test, digits.class_names, extra={"gen": digits.test})
    cfg, metrics, states = STEADY.settled(), [], []
    train(cfg, with_extra, lambda m, s: (metrics.append(m), states.append(s)), execution=Execution(checkpoint_every=1))
    accuracies = [m["val/acc"] for m in metrics]
    # A state after epoch 2 whose best is epoch 1's weights at exactly the accuracy epochs 3-4 reach at most (a resumed
    # run is bit-identical to the straight one): the later epoch that equals it must not take its place (the authors'
    # strict >), and the generalisation set must be measured on epoch 1's weights.
    tie = max(accuracies[2:])
    assert accuracies[0] != tie  # else the weights measured would not tell epoch 1 from the tying epoch
    start = dict(states[1], best={"acc": tie, "epoch": 1, "model": states[0]["model"]})
    resumed: list[dict] = []
    train(cfg, with_extra, lambda m, s: resumed.append(m), start=start)
    assert [m["epoch"] for m in resumed] == [3, 4] and [m["val/acc"] for m in resumed] == accuracies[2:]
    assert all(m["val/acc_best"] == tie and m["val/acc_best_epoch"] == 1 for m in resumed)
    # The class vectors' geometry is logged once, after the last epoch, of the best epoch's (learned) vectors.
    assert [m["epoch"] for m in resumed if "class_vectors/cos_max" in m] == [4]
    best_vectors, last_vectors = states[0]["model"]["head.weight"], states[-1]["model"]["head.weight"]
    assert resumed[-1]["class_vectors/etf_distance"] == pytest.approx(etf_distance(best_vectors))
    assert etf_distance(best_vectors) != pytest.approx(etf_distance(last_vectors))
    assert resumed[-1]["gen/acc"] == pytest.approx(accuracies[0])  # epoch 1's weights, on the test images
    assert resumed[-1]["gen/acc_last"] == pytest.approx(accuracies[-1])


# --- backbones: stems that keep the resolution, and the authors' pooling --------------------------------

EXPECTED_DIMS = {  # (backbone, input side) -> (feature-map side, global dims, authors' pooling dims)
    ("resnet18", 32): (4, 512, 512),
    ("resnet18", 64): (8, 512, 2048),
    ("resnet18", 96): (12, 512, 4608),  # the authors' STL-10 EMBEDDING_SIZE
    ("preact_resnet18", 96): (12, 512, 4608),
    ("mobilenetv2", 32): (4, 1280, 1280),
    ("mobilenetv2", 64): (8, 1280, 5120),
}


@pytest.mark.parametrize("name,size", sorted(EXPECTED_DIMS))
def test_feature_maps_are_an_eighth_of_the_input_and_pooling_sets_the_image_vector_size(name, size):
    side, global_dims, authors_dims = EXPECTED_DIMS[name, size]
    spec = InputSpec(3, size)
    backbone = build_backbone(name, spec, "authors").eval()
    with torch.no_grad():
        feature_map = backbone.body(torch.zeros(1, 3, size, size))
        image_vector = backbone(torch.zeros(1, 3, size, size))
    assert feature_map.shape[-2:] == (side, side)  # a downsampling stem would make it smaller
    assert image_vector.shape == (1, authors_dims) == (1, backbone.feature_dim)
    assert feature_dim(name, spec, "global") == global_dims and feature_dim(name, spec, "authors") == authors_dims


@pytest.mark.parametrize(
    ("init", "refused"), [("hadamard", True), ("etf", True), ("orthoplex", False), ("cube", False)]
)
def test_a_draw_that_needs_more_dimensions_than_the_image_vectors_have_is_refused(init, refused):
    """small_cnn gives 64-d image vectors; CIFAR-100 has 100 classes: Hadamard rows need 100, an ETF 99, an
    orthoplex 50 and a cube 7."""
    doc = yaml.safe_load(GOOD_SWEEP) | {"dataset": "cifar100", "head": {"init": init}}
    if refused:
        with pytest.raises(SweepFileError, match=rf"head.init: got '{init}'.*100 classes.*64-d"):
            parse_sweep(doc, Path("sweep.yaml"))
    else:
        parse_sweep(doc, Path("sweep.yaml"))
    parse_sweep(doc | {"model": "resnet18"}, Path("sweep.yaml"))  # 512-d: room for every draw


def test_the_authors_pooling_is_refused_where_the_feature_map_is_smaller_than_its_window():
    doc = yaml.safe_load(GOOD_SWEEP) | {"model": "resnet18", "pooling": "authors"}  # digits: 8 px -> 1x1 map
    with pytest.raises(SweepFileError, match="pooling: got 'authors'"):
        parse_sweep(doc, Path("sweep.yaml"))


def test_the_authors_normalisation_maps_pixels_to_minus_one_one(digits):
    from fixray.trial.loop import _input_stats

    mean, std = _input_stats(
        TrialConfig(model="x", epochs=1, seed=0, normalisation="authors"), digits, torch.device("cpu")
    )
    assert mean.tolist() == [0.5] and std.tolist() == [0.5]
    images = torch.tensor(np.array([[[[0, 255]]]], dtype=np.uint8))
    from fixray.trial.augment import normalise

    assert normalise(images, mean, std).flatten().tolist() == [-1.0, 1.0]
