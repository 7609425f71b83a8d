"""The plain training loop on bundled digits: it learns, it stops on divergence, it resumes exactly."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from torch.overrides import TorchFunctionMode

from fixray.crossing.contract import Execution, HeadConfig, OptimizerConfig, TrialConfig, from_params
from fixray.data.registry import load_dataset
from fixray.trial.loop import FINITE_CHECK_STEPS, train
from fixray.trial.models import build_classifier


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _cfg(epochs: int = 3, lr: float = 0.1, **head) -> TrialConfig:
    """A digits trial; keyword arguments beyond epochs and lr are head options (default: fixed cosine, S = 10)."""
    return TrialConfig(
        model="small_cnn",
        epochs=epochs,
        seed=0,
        batch_size=64,
        lr=lr,
        optimizer=OptimizerConfig(weight_decay=5e-4),
        head=HeadConfig(**{"kind": "cosine", "fixed": True, "S": 10.0, **head}),
    )


class Recorder:
    def __init__(self):
        self.metrics, self.states = [], []

    def __call__(self, metrics, state):
        self.metrics.append(metrics)
        self.states.append(state)


def test_digits_split_is_fixed_and_uint8(digits):
    again = load_dataset("digits")
    assert digits.train.x.shape == (1437, 1, 8, 8) and digits.test.x.shape == (360, 1, 8, 8)
    assert digits.train.x.dtype == np.uint8 and digits.train.x.max() == 240  # 0..16 scaled by 15, exact
    assert np.array_equal(digits.test.y, again.test.y)
    assert digits.class_names == tuple("0123456789")
    (mean,), (std,) = digits.channel_stats
    assert mean == pytest.approx(digits.train.x.mean() / 255) and std == pytest.approx(digits.train.x.std() / 255)


@pytest.mark.parametrize("kind,fixed", [("dot", True), ("dot", False), ("cosine", True), ("cosine", False)])
def test_every_head_learns_digits_and_reports_each_epoch(digits, kind, fixed):
    record = Recorder()
    final = train(_cfg(kind=kind, fixed=fixed).settled(), digits, record)
    assert [m["epoch"] for m in record.metrics] == [1, 2, 3]
    assert final["val/acc"] > 0.9
    assert record.metrics[-1]["train/loss"] < record.metrics[0]["train/loss"]
    for key in (
        "val/compactness",
        "val/separability_mean",
        "val/separability_max",
        "val/confusion_spearman",
        "train/lr",
    ):
        assert key in final
    assert all(m["train/diverged"] == 0.0 for m in record.metrics)


def test_fixed_head_is_untouched_by_the_whole_loop(digits):
    record = Recorder()
    train(_cfg(kind="dot", fixed=True).settled(), digits, record)
    from fixray.trial.models import build_classifier

    fresh = build_classifier("small_cnn", digits.input_spec, 10, HeadConfig(kind="dot", fixed=True), seed=0)
    trained = record.states[-1]["model"]
    assert torch.equal(trained["head.weight"], fresh.head.weight)
    assert torch.equal(trained["head.bias"], fresh.head.bias)
    assert not torch.equal(trained["backbone.body.0.0.weight"], fresh.backbone.body[0][0].weight)


def test_a_nan_loss_is_reported_as_diverged_not_raised(digits):
    record = Recorder()
    final = train(_cfg(kind="dot", fixed=False, lr=1e6, epochs=5).settled(), digits, record)
    assert final["train/diverged"] == 1.0
    assert math.isnan(final["val/acc"]) and math.isnan(final["val/acc_best"])  # a search ranks it as failed
    assert len(record.metrics) < 5 and record.states[-1] is None


def test_resuming_from_a_reported_state_gives_bit_identical_weights(digits):
    straight = Recorder()
    train(_cfg(epochs=4, fixed=False).settled(), digits, straight)
    first_half = Recorder()
    every_epoch = Execution(checkpoint_every=1)
    train(
        _cfg(epochs=4, fixed=False).settled(),
        digits,
        lambda m, s: first_half(m, s) if m["epoch"] <= 2 else None,
        execution=every_epoch,
    )
    resumed = Recorder()
    train(_cfg(epochs=4, fixed=False).settled(), digits, resumed, start=first_half.states[1])
    assert [m["epoch"] for m in resumed.metrics] == [3, 4]
    for key, value in straight.states[-1]["model"].items():
        assert torch.equal(value, resumed.states[-1]["model"][key]), key
    assert resumed.metrics[-1]["val/acc"] == straight.metrics[-1]["val/acc"]
    # A checkpoint explains itself: it holds its trial's settled config, and another trial's is not resumed.
    assert from_params(first_half.states[1]["config"]) == _cfg(epochs=4, fixed=False).settled()
    with pytest.raises(ValueError, match="another trial .*lr differ"):
        train(_cfg(epochs=4, lr=0.05, fixed=False).settled(), digits, Recorder(), start=first_half.states[1])


def test_learned_cosine_head_is_more_compact_with_S_1_than_with_S_20(digits):
    """Paper Table 4's trend: a small scale pulls image vectors onto their class vectors."""
    compact = {}
    for scale in (1.0, 20.0):
        final = train(_cfg(kind="cosine", fixed=False, S=scale, epochs=6).settled(), digits, Recorder())
        compact[scale] = final["val/compactness"]
    assert compact[1.0] > compact[20.0] + 0.1


class HostReads(TorchFunctionMode):
    """Counts reads of tensor values back to the host (each one a GPU -> CPU sync on a GPU)."""

    READS = {"item", "tolist", "__bool__", "__float__", "__int__", "cpu", "numpy"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.count += getattr(func, "__name__", "") in self.READS
        return func(*args, **(kwargs or {}))


def test_the_step_loop_reads_nothing_back_to_the_host(digits):
    """Host reads must not grow with the number of steps: 8x the steps add at most one look per 50 steps."""
    counts, steps = {}, {}
    for batch in (128, 16):
        cfg = dataclasses.replace(_cfg(epochs=1), batch_size=batch)
        with HostReads() as reads:
            train(cfg.settled(), digits, Recorder())
        counts[batch], steps[batch] = reads.count, math.ceil(len(digits.train.y) / batch)
    assert counts[16] - counts[128] <= (steps[16] - steps[128]) // FINITE_CHECK_STEPS, counts


def test_a_checkpoint_every_third_epoch_and_the_last_resumes_exactly(digits):
    straight = Recorder()
    train(_cfg(epochs=7, fixed=False).settled(), digits, straight, execution=Execution(checkpoint_every=3))
    assert [m["epoch"] for m, s in zip(straight.metrics, straight.states) if s is not None] == [3, 6, 7]
    resumed = Recorder()
    train(
        _cfg(epochs=7, fixed=False).settled(),
        digits,
        resumed,
        start=straight.states[2],
        execution=Execution(checkpoint_every=3),
    )
    assert [m["epoch"] for m in resumed.metrics] == [4, 5, 6, 7]  # the epochs since the checkpoint, redone
    for key, value in straight.states[-1]["model"].items():
        assert torch.equal(value, resumed.states[-1]["model"][key]), key
    assert resumed.metrics == straight.metrics[3:]


def _conv_dtypes_and_layout(execution: Execution, digits) -> tuple[set, bool]:
    """The dtypes a conv computes in over a one-epoch trial, and whether its weights end channels-last only."""
    seen_dtypes = set()

    def hook(module, inputs, output):
        if isinstance(module, torch.nn.Conv2d) and module.in_channels == 32:  # small_cnn's second conv
            seen_dtypes.add(output.dtype)

    record = Recorder()
    hooked = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        train(_cfg(epochs=1).settled(), digits, record, execution=execution)
    finally:
        hooked.remove()
    weight = record.states[-1]["model"]["backbone.body.1.0.weight"]  # 64 x 32 x 3 x 3: the layout shows
    return seen_dtypes, weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()


def test_bf16_and_channels_last_reach_the_convolutions_on_the_cpu_too(digits):
    """The GPU's settings run the same code on the CPU: what they ask for is what the convolutions get."""
    assert _conv_dtypes_and_layout(Execution(channels_last=True, bf16=True), digits) == ({torch.bfloat16}, True)
    assert _conv_dtypes_and_layout(Execution(channels_last=False, bf16=False), digits) == ({torch.float32}, False)
    # Left to the device: channels-last everywhere, bf16 on a GPU only.
    assert Execution().on("cpu") == Execution(channels_last=True, bf16=False)
    assert Execution().on("cuda") == Execution(channels_last=True, bf16=True)


def test_a_bf16_trial_learns_and_resumes_exactly(digits):
    bf16 = Execution(checkpoint_every=1, bf16=True)
    straight = Recorder()
    train(_cfg(epochs=4, fixed=False).settled(), digits, straight, execution=bf16)
    assert straight.metrics[-1]["val/acc"] > 0.8  # ten classes: chance is 0.1
    resumed = Recorder()
    train(_cfg(epochs=4, fixed=False).settled(), digits, resumed, start=straight.states[1], execution=bf16)
    for key, value in straight.states[-1]["model"].items():
        assert torch.equal(value, resumed.states[-1]["model"][key]), key


def test_a_compiled_trial_compiles_its_step_and_learns(digits):
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    record = Recorder()
    train(_cfg(epochs=2).settled(), digits, record, execution=Execution(compile=True))
    assert counters["stats"]["unique_graphs"] >= 1, "nothing was compiled"
    assert record.metrics[-1]["val/acc"] > 0.8


@pytest.mark.parametrize(("init", "etf"), [("etf", True), ("normal", False)])
def test_every_reported_metric_is_declared_and_neural_collapse_sees_the_draw(digits, init, etf):
    from fixray.crossing import metric_keys

    record = Recorder()
    train(_cfg(epochs=1, init=init).settled(), digits, record)
    reported = set(record.metrics[0]) - {metric_keys.EPOCH}
    assert reported <= set(metric_keys.METRICS), reported - set(metric_keys.METRICS)  # one catalogue of keys
    last = record.metrics[-1]
    assert (last["val/nc2_weights"] < 1e-5) == etf  # a fixed ETF is one; 10 normal vectors in 64-d are not
    assert last["val/class_vector_norm_mean"] == pytest.approx(1.0) and last["val/nc1"] > 0
    assert 0 <= last["val/nc4"] <= 1


def test_dot_regression_pulls_image_vectors_onto_a_fixed_etf_closer_than_cross_entropy(digits):
    # Through a projection to the simplex's 9 dimensions: the backbone's own vectors come out of a ReLU, all >= 0,
    # and cannot point along an ETF's vectors, which have negative entries.
    runs = {}
    for loss in ("cross_entropy", "dot_regression"):
        record = Recorder()
        train(dataclasses.replace(_cfg(epochs=4, kind="dot", init="etf", dim=9), loss=loss).settled(), digits, record)
        runs[loss] = record.metrics
    first, last = runs["dot_regression"][0], runs["dot_regression"][-1]
    assert last["val/acc"] > 0.9 and last["val/nc1"] < first["val/nc1"] and last["train/loss"] < first["train/loss"]
    assert last["val/compactness"] > first["val/compactness"]
    assert last["val/compactness"] > runs["cross_entropy"][-1]["val/compactness"] + 0.05  # h along its class vector


def test_a_projection_gives_the_head_the_draws_own_dimension_and_is_learned_under_a_fixed_head(digits):
    record = Recorder()
    train(_cfg(epochs=2, init="etf", dim=9).settled(), digits, record)  # 10 classes: a simplex in 9 dimensions
    start, end = record.states[0], record.states[-1]
    weights = end["model"]
    assert weights["head.weight"].shape == (10, 9) and weights["head.projection.weight"].shape == (9, 64)
    built = build_classifier("small_cnn", digits.input_spec, 10, _cfg(init="etf", dim=9).settled().head, seed=0)
    assert torch.equal(weights["head.weight"], built.head.weight)  # the class vectors stay the draw
    assert not torch.equal(weights["head.projection.weight"], built.head.projection.weight)  # the projection trains
    assert record.metrics[-1]["val/nc2_weights"] < 1e-5 and record.metrics[-1]["class_vectors/etf_distance"] < 1e-5
    assert start is None or start["epoch"] == 1


def test_training_set_collapse_is_measured_every_n_epochs_and_at_the_last(digits):
    record = Recorder()
    train(dataclasses.replace(_cfg(epochs=3), nc_train_every=2).settled(), digits, record)
    measured = [m["epoch"] for m in record.metrics if "train/nc1" in m]
    assert measured == [2, 3] and all("val/nc1" in m for m in record.metrics)
    assert {k.removeprefix("train/") for k in record.metrics[1] if k.startswith("train/nc")} == {
        "nc1",
        "nc2_means",
        "nc3",
        "nc4",
    }
