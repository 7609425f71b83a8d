"""The compute plan: FLOP counted by PyTorch on the meta device, against an independent count; ASHA's expected share;
the images a (long-tailed) training set holds."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from fixray.crossing.contract import HeadConfig, LongTail, TrialConfig
from fixray.crossing.images import InputSpec
from fixray.data.registry import DATASETS, load_dataset
from fixray.sweep.cost import Throughput, asha_share, compute_plan, image_flop, trial_flop
from fixray.trial.long_tail import kept_per_class
from fixray.trial.models import build_classifier


def _multiply_adds(model: nn.Module, images: torch.Tensor) -> int:
    """Multiply-adds of a forward pass, counted from each convolution's and linear layer's shapes (hooks)."""
    total = 0

    def conv(module, inputs, output):
        nonlocal total
        kernel = module.kernel_size[0] * module.kernel_size[1] * module.in_channels // module.groups
        total += kernel * output.numel()

    def linear(module, inputs, output):
        nonlocal total
        total += module.in_features * output.numel()

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            module.register_forward_hook(conv)
        elif isinstance(module, nn.Linear):
            module.register_forward_hook(linear)
    with torch.no_grad():
        model(images)
    return total


@pytest.mark.parametrize(("model", "size"), [("resnet18", 32), ("resnet18", 96), ("mobilenetv2", 32)])
def test_the_flop_of_a_training_image_is_three_forward_passes_of_two_flop_per_multiply_add(model, size):
    built = build_classifier(model, InputSpec(3, size), 10, HeadConfig().settled(), seed=0).eval()
    independent = 3 * 2 * _multiply_adds(built, torch.zeros(1, 3, size, size))  # backward ~ twice the forward
    assert image_flop(model, 3, size, 10, "global", None) == pytest.approx(independent, rel=0.10)
    if (model, size) == ("resnet18", 32):
        assert independent / 6 == pytest.approx(0.556e9, rel=0.01)  # ResNet18 on CIFAR: the usual 0.56 GMAC


def test_asha_trains_the_grace_period_then_one_in_reduction_factor_at_each_rung():
    # rungs at 10 and 30 epochs of 80: every trial 10 epochs, a third 20 more, a ninth the last 50
    assert asha_share(80, 10, 3) == pytest.approx((10 + 20 / 3 + 50 / 9) / 80)
    assert asha_share(5, 10, 3) == 1.0  # a grace period past the last epoch stops nothing


def test_a_trial_trains_its_training_images_every_epoch_long_tailed_or_whole():
    assert DATASETS["digits"].train_images == len(load_dataset("digits").train)  # the declared size is the read one
    whole = TrialConfig(model="small_cnn", epochs=3, seed=0).settled()
    one = image_flop("small_cnn", 1, 8, 10, "global", None)
    assert trial_flop(whole, "digits") == one * 1437 * 3
    tailed = TrialConfig(model="small_cnn", epochs=3, seed=0, long_tail=LongTail(ratio=0.1)).settled()
    assert trial_flop(tailed, "digits") == one * sum(kept_per_class(143, 10, 0.1)) * 3


def test_a_plan_sums_every_planned_trial_and_says_its_throughput_is_assumed():
    from pathlib import Path

    import yaml
    from conftest import GOOD_SWEEP

    from fixray.sweep.spec.checks import parse_sweep

    spec = parse_sweep(yaml.safe_load(GOOD_SWEEP), Path("s.yaml"))  # two trials of 2 epochs
    found = compute_plan(spec)
    assert found.trials == 2 and found.flop == 2 * image_flop("small_cnn", 1, 8, 10, "global", None) * 1437 * 2
    assert "assumed" in found.text() and "FLOP of training" in found.text()
    measured = compute_plan(spec, throughput=Throughput(1e12, "a test GPU"))
    assert measured.gpu_hours == found.flop / 1e12 / 3600 and "1 TFLOP/s (measured here: a test GPU)" in measured.text()


def test_wall_time_divides_the_gpu_hours_among_the_gpus_trials_can_pack_onto():
    from fixray.sweep.cost import ComputePlan

    plan = ComputePlan(10, 3600e12 * 8, 3600e12 * 8, 1e12, "a test GPU", False)  # 8 GPU-hours
    assert plan.gpu_hours == 8 and plan.wall_hours(4, 1.0) == 2 and plan.wall_hours(4, 0.25) == 2
    assert plan.wall_hours(3, 2.0) == 8 / 2  # one trial of 2 GPUs at a time on 3 GPUs
    assert plan.wall_hours(0, 1.0) is None and plan.wall_hours(4, 0) is None


BUDGETED = """\
name: budgeted
dataset: digits
model: small_cnn
epochs: 2
seeds: [0, 1]
search:
  space:
    fixed: [true, false]
    long_tail_ratio: [1.0, 0.1]
"""


def test_a_budget_admits_whole_configurations_in_the_plan_order_and_stops_at_the_first_that_would_pass_it(tmp_path):
    from fixray.errors import BadInput
    from fixray.sweep.cost import ASSUMED_THROUGHPUT, admit
    from fixray.sweep.plan import plan
    from fixray.sweep.spec.reading import load_sweep

    def hours(images: int, seeds: int = 2) -> float:  # one configuration, every seed, from the counted FLOP
        return seeds * image_flop("small_cnn", 1, 8, 10, "global", None) * images * 2 / ASSUMED_THROUGHPUT / 3600

    file = tmp_path / "budgeted.yaml"
    file.write_text(BUDGETED)
    spec = load_sweep(file)
    trials = plan(spec)  # fixed whole, fixed long-tailed, learned whole, learned long-tailed; seeds innermost
    assert admit(spec, trials, ASSUMED_THROUGHPUT).admitted is None  # no budget: every trial
    whole, tailed = hours(1437), hours(sum(kept_per_class(143, 10, 0.1)))
    # Room for both fixed configurations and half a whole learned one: that one stops the launches, and the cheaper
    # long-tailed learned one after it is not run either; seeds are never split.
    budget = whole + tailed + whole / 2
    admitted = admit(spec.model_copy(update={"budget": budget}), trials, ASSUMED_THROUGHPUT)
    assert admitted.admitted == {t.name for t in trials if t.config.head.fixed}
    assert admitted.hours == pytest.approx(whole + tailed) and admitted.not_run == 4
    # A budget that fits one seed of the first configuration runs nothing: refused before anything starts.
    with pytest.raises(BadInput, match="admits no trial"):
        admit(spec.model_copy(update={"budget": hours(1437, seeds=1)}), trials, ASSUMED_THROUGHPUT)


def test_a_tpe_search_is_priced_at_the_costliest_trial_it_can_draw_a_model_chosen_among_included(tmp_path):
    """TPE plans nothing in advance: its bound is num_samples x seeds trials, each at the largest model it may choose
    ({choice: [...]}), not at the file's own `model:`."""
    from pathlib import Path

    import yaml

    from fixray.sweep.plan import trial_config
    from fixray.sweep.spec.checks import parse_sweep

    raw = yaml.safe_load(TPE_OVER_MODELS)
    spec = parse_sweep(raw, Path("tpe.yaml"))
    found = compute_plan(spec)
    largest = trial_flop(trial_config(spec, {"seed": 0, "model": "resnet18"}), "digits")
    assert largest > 10 * trial_flop(trial_config(spec, {"seed": 0}), "digits")  # small_cnn: the file's own model
    assert found.trials == 6 and found.flop == 6 * largest and "a bound: tpe" in found.text()
    listed = parse_sweep(raw | {"search": raw["search"] | {"space": {"model": ["small_cnn", "resnet18"]}}}, Path("t"))
    assert compute_plan(listed).flop == found.flop  # a list is TPE's choice too


TPE_OVER_MODELS = """\
name: tpe-models
dataset: digits
model: small_cnn
epochs: 2
seeds: [0, 1]
search:
  method: tpe
  num_samples: 3
  space:
    model: {choice: [small_cnn, resnet18]}
    lr: {loguniform: [0.001, 0.1]}
"""


def test_a_counted_flop_is_kept_under_the_code_that_built_it_and_read_back(monkeypatch, tmp_path):
    """The cache holds each architecture's count under a key of its code: a count left by other code (another key) is
    never read, and what the cache holds under this code's key is what pricing reads."""
    import json

    from fixray.sweep import cost

    monkeypatch.setenv("FIXRAY_FLOP_CACHE", str(tmp_path / "flop.json"))
    args = ("small_cnn", 1, 8, 10, "global", None)
    cost.image_flop.cache_clear()
    counted = cost.image_flop(*args)
    assert counted == cost._count_image_flop(*args)
    (key,) = json.loads((tmp_path / "flop.json").read_text())
    stale = json.dumps([*args, "another-code"])
    (tmp_path / "flop.json").write_text(json.dumps({stale: 1.0}))
    cost.image_flop.cache_clear()
    assert cost.image_flop(*args) == counted  # counted again, the stale entry ignored
    (tmp_path / "flop.json").write_text(json.dumps({key: 123.0}))
    cost.image_flop.cache_clear()
    assert cost.image_flop(*args) == 123.0
    (tmp_path / "flop.json").write_text("{not json")
    cost.image_flop.cache_clear()
    assert cost.image_flop(*args) == counted and json.loads((tmp_path / "flop.json").read_text()) == {key: counted}
    cost.image_flop.cache_clear()


def test_validate_says_what_its_sweeps_would_take_on_this_machines_cpus_at_their_measured_rate(monkeypatch, tmp_path):
    import json

    from conftest import GOOD_SWEEP

    from fixray.cli import main

    (tmp_path / "s.yaml").write_text(GOOD_SWEEP)
    rate = tmp_path / "cpu.json"
    rate.write_text(json.dumps({"flop_per_s": 1e9, "measured": "cpu, small_cnn fp32 batch 16, 2026-12-03"}))
    monkeypatch.setenv("FIXRAY_CPU_THROUGHPUT", str(rate))
    done = subprocess.run(
        [sys.executable, "-m", "fixray", "validate", str(tmp_path / "s.yaml")], capture_output=True, text=True
    )
    import yaml

    from fixray.sweep.spec.checks import parse_sweep

    flop = compute_plan(parse_sweep(yaml.safe_load(GOOD_SWEEP), tmp_path / "s.yaml")).flop
    assert done.returncode == 0, done.stderr
    assert (
        f"that is {flop / 1e9 / 3600:.3g} hours on this machine's CPUs at 0.001 TFLOP/s (measured here: cpu"
        in done.stdout
    )
    rate.write_text("{}")
    assert main(["validate", str(tmp_path / "s.yaml")]) == 2
