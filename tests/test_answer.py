"""The answer: fixed minus learned, paired by seed, with a t interval, from a synthetic MLflow store whose
differences are known in advance; diverged, failed and unfinished runs counted and never averaged."""

import math

import pytest
from mlflow.entities import Metric
from PIL import Image
from scipy import stats

from fixray.cli import main
from fixray.crossing import metric_keys as keys
from fixray.crossing.contract import HeadConfig, TrialConfig, to_params
from fixray.records import answer
from fixray.records.answer import BEST_ACC, COMPACTNESS, LAST_ACC, paired_interval
from fixray.records.encoding import param_value
from fixray.records.render import Paragraph, Report, Table, as_html, as_markdown
from fixray.records.runs import STATUS_TAG, SweepRuns
from fixray.records.sweep_report import publish
from fixray.records.tables import summarise, sweep_rows, sweep_table
from fixray.sweep.plan import run_name
from fixray.sweep.spec.checks import parse_sweep

T_2 = 4.302652729911275  # Student's t, 97.5th percentile, 2 degrees of freedom

# (S, fixed) -> seed -> (status or None for unfinished, best acc, last acc, compactness)
LEARNED_16 = {0: 0.80, 1: 0.82, 2: 0.84}
STORE = {
    (16.0, False): {s: ("finished", a, a - 0.01, 0.50) for s, a in LEARNED_16.items()},
    # fixed = learned + 1, 2, 3 pp (best), + 2 pp every seed (last), compactness + 0.10, 0.20, 0.30
    (16.0, True): {
        s: ("finished", a + d, a - 0.01 + 0.02, 0.50 + 10 * d)
        for (s, a), d in zip(LEARNED_16.items(), (0.01, 0.02, 0.03))
    },
    (1.0, True): {0: ("finished", 0.60, 0.60, 0.2), 1: ("finished", 0.62, 0.62, 0.2), 2: ("diverged", 0.99, 0.99, 0.9)},
    (1.0, False): {0: ("finished", 0.50, 0.50, 0.1), 1: ("error", 0.99, 0.99, 0.9), 2: (None, 0.99, 0.99, 0.9)},
}


def _fill(tmp_path) -> tuple[str, SweepRuns]:
    uri = f"sqlite:///{tmp_path / 'store.db'}"
    runs = SweepRuns(uri, "fixray", "answer")
    spec = parse_sweep(
        {
            "dataset": "digits",
            "model": "small_cnn",
            "epochs": 3,
            "head": {"kind": "cosine"},
            "search": {"space": {"S": [1, 16]}},
        },
        tmp_path / "s",
    )
    for (S, fixed), seeds in STORE.items():
        for seed, (status, best, last, compactness) in seeds.items():
            cfg = TrialConfig(model="small_cnn", epochs=3, seed=seed, head=HeadConfig(kind="cosine", S=S, fixed=fixed))
            params = {k: param_value(v) for k, v in to_params(cfg.settled()).items()}
            run_id, _ = runs.child_for_trial(f"t-{S}-{fixed}-{seed}", run_name(cfg.settled(), spec), params)
            metrics = {keys.BEST_ACC: best, keys.VAL_ACC: last, keys.COMPACTNESS: compactness}
            runs.client.log_batch(run_id, metrics=[Metric(k, v, 0, 3) for k, v in metrics.items()])
            if status:
                runs.client.set_tag(run_id, STATUS_TAG, status)
    return uri, runs


def test_the_t_interval_is_the_paired_t_test_interval():
    fixed, learned = [0.81, 0.84, 0.87, 0.80], [0.80, 0.82, 0.84, 0.81]
    found = paired_interval([f - g for f, g in zip(fixed, learned)])
    expected = stats.ttest_rel(fixed, learned).confidence_interval(0.95)
    assert found.n == 4 and math.isclose(found.low, expected.low) and math.isclose(found.high, expected.high)
    assert (
        math.isnan(paired_interval([0.02]).low) and paired_interval([0.02]).text(100) == "+2.00 (one seed: no interval)"
    )


def test_fixed_minus_learned_pairs_finished_seeds_and_counts_the_rest(tmp_path):
    _, runs = _fill(tmp_path)
    rows = summarise(runs.children())
    by_s = {c.key["S"]: c for c in answer.comparisons(rows)}
    assert set(by_s) == {1.0, 16.0}

    best = by_s[16.0].interval(BEST_ACC)
    assert best.n == 3 and math.isclose(best.mean, 0.02)
    assert math.isclose(best.high - best.mean, T_2 * 0.01 / math.sqrt(3))  # sd of (1, 2, 3) pp is 1 pp
    last = by_s[16.0].interval(LAST_ACC)
    assert math.isclose(last.mean, 0.02) and math.isclose(last.low, 0.02) and math.isclose(last.high, 0.02)
    assert math.isclose(by_s[16.0].interval(COMPACTNESS).mean, 0.2)

    # S = 1: fixed seed 2 diverged, learned seed 1 failed and seed 2 is unfinished: only seed 0 pairs.
    one = by_s[1.0].interval(BEST_ACC)
    assert one.n == 1 and math.isclose(one.mean, 0.10) and math.isnan(one.low)

    text = Report(answer.answer_blocks(rows)).render(as_markdown)
    equal = "+2.00 (equal over 3 seeds: no interval)"
    assert f"| cosine | 16.0 | 0.1 | 3 | — / — | +2.00 [-0.48, +4.48] | {equal} | +0.200 [" in text
    assert "| cosine | 1.0 | 0.1 | 1 | 1 diverged / 1 error, 1 unfinished | +10.00 (one seed: no interval) |" in text
    table = as_markdown(sweep_table(rows))  # the per-configuration table averages finished seeds only
    assert "| cosine | learned | 1.0 | 0.1 | 3 (1 error, 1 unfinished) | 50.00 ± 0.00 | 50.00 ± 0.00 |" in table
    assert "| cosine | fixed | 1.0 | 0.1 | 3 (1 diverged) | 61.00 ± 1.41 |" in table


def test_the_headline_compares_the_best_fixed_and_learned_and_lands_on_the_parent_run(tmp_path):
    uri, runs = _fill(tmp_path)
    [headline] = publish(runs)
    # An unfinished 0.99 and a failed 0.99 at S = 1 would make S = 1 the best learned head if they were averaged.
    assert headline.best.learned.key["S"] == 16.0 and headline.best.fixed.key["S"] == 16.0
    parent = runs.client.get_run(runs.parent_id)
    metrics = parent.data.metrics
    assert math.isclose(metrics["answer/best_fixed_acc"], 0.84) and math.isclose(
        metrics["answer/best_learned_acc"], 0.82
    )
    assert math.isclose(metrics["answer/fixed_minus_learned"], 0.02)
    assert math.isclose(metrics["answer/ci95_low"], 0.02 - T_2 * 0.01 / math.sqrt(3))
    assert metrics["answer/seeds_paired"] == 3
    assert "fixed minus learned +2.00 [-0.48, +4.48] pp" in parent.data.tags["fixray.answer"]
    assert "Fixed minus learned, paired by seed" in parent.data.tags["mlflow.note.content"]
    figures = {a.path for a in runs.client.list_artifacts(runs.parent_id, "figures")}
    assert figures == {"figures/acc_best_vs_S.png", "figures/compactness_vs_S.png"}
    local = runs.client.download_artifacts(runs.parent_id, "figures/acc_best_vs_S.png", str(tmp_path))
    assert Image.open(local).size[0] > 400

    publish(runs)  # again, as after a resume: the same answer, figures replaced, not added
    assert len(runs.client.list_artifacts(runs.parent_id, "figures")) == 2

    html = tmp_path / "report.html"
    assert main(["report", "answer", "--tracking-uri", uri, "--html", str(html)]) == 0
    page = html.read_text()
    assert page.index("Answer") < page.index("The answer: fixed vs learned") < page.index("head=cosine")
    assert page.count("<table>") == 2


def _run(runs: SweepRuns, spec, cfg: TrialConfig, status: str | None, history: dict[str, list[float]]) -> None:
    """A child run of `cfg` (settled here) whose metrics were logged epoch by epoch (history[key][epoch - 1])."""
    cfg = cfg.settled()
    params = {k: param_value(v) for k, v in to_params(cfg).items()}
    run_id, _ = runs.child_for_trial(f"t-{run_name(cfg, spec)}", run_name(cfg, spec), params)
    epochs = max(len(values) for values in history.values())
    best = history.get(keys.VAL_ACC)
    if best:  # what the loop logs beside val/acc: the running best and its epoch (the earlier of equals)
        history = history | {
            keys.BEST_ACC: [max(best[:e]) for e in range(1, epochs + 1)],
            keys.BEST_EPOCH: [float(best[:e].index(max(best[:e])) + 1) for e in range(1, epochs + 1)],
        }
    metrics = [Metric(k, v, 0, step) for k, values in history.items() for step, v in enumerate(values, start=1)]
    runs.client.log_batch(run_id, metrics=metrics)
    if status:
        runs.client.set_tag(run_id, STATUS_TAG, status)


def _spec(tmp_path):
    space = {"model": ["small_cnn", "resnet18"], "fixed": [True, False], "lr": [0.1, 0.01]}
    return parse_sweep({"dataset": "digits", "model": "small_cnn", "epochs": 3, "search": {"space": space}}, tmp_path)


def _dot(model: str, fixed: bool, lr: float, seed: int) -> TrialConfig:
    return TrialConfig(model=model, epochs=3, seed=seed, lr=lr, head=HeadConfig(kind="dot", fixed=fixed))


def test_the_headline_compares_within_a_backbone_one_headline_each(tmp_path):
    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "backbones"), _spec(tmp_path)
    # small_cnn: fixed 0.91 vs learned 0.90 (+1 pp); resnet18: fixed 0.80 vs learned 0.84 (-4 pp). Across backbones
    # the best fixed (0.91, small_cnn) minus the best learned (0.84, resnet18) would read +7 pp, and the other way -
    # the best fixed of one against the best learned of the other - is no comparison at all.
    accuracy = {
        ("small_cnn", True): 0.91,
        ("small_cnn", False): 0.90,
        ("resnet18", True): 0.80,
        ("resnet18", False): 0.84,
    }
    for (model, fixed), acc in accuracy.items():
        for seed in (0, 1):
            _run(runs, spec, _dot(model, fixed, 0.1, seed), "finished", {keys.VAL_ACC: [acc - 0.1, acc]})
    headlines = publish(runs)
    found = {dict(h.context)["model"]: round(h.interval.mean, 6) for h in headlines}
    assert found == {"small_cnn": 0.01, "resnet18": -0.04}
    metrics = runs.client.get_run(runs.parent_id).data.metrics
    assert math.isclose(metrics["answer/model-resnet18/fixed_minus_learned"], -0.04)
    assert math.isclose(metrics["answer/model-small_cnn/fixed_minus_learned"], 0.01)
    assert "answer/fixed_minus_learned" not in metrics
    tag = runs.client.get_run(runs.parent_id).data.tags["fixray.answer"]
    assert "model=resnet18: best fixed (dot lr=0.1) 80.00%" in tag and "model=small_cnn: best fixed" in tag


def test_a_setting_with_a_seed_short_is_not_ranked_however_well_its_survivors_did(tmp_path):
    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "ranked"), _spec(tmp_path)
    # learned lr 0.1: 2 of 3 seeds diverged, the survivor at 0.96; learned lr 0.01: 0.90 on every seed.
    for seed in range(3):
        _run(runs, spec, _dot("small_cnn", True, 0.1, seed), "finished", {keys.VAL_ACC: [0.92]})
        _run(runs, spec, _dot("small_cnn", False, 0.01, seed), "finished", {keys.VAL_ACC: [0.90]})
        status = "finished" if seed == 0 else "diverged"
        _run(runs, spec, _dot("small_cnn", False, 0.1, seed), status, {keys.VAL_ACC: [0.96]})
    [headline] = publish(runs)
    assert headline.best.learned.key["lr"] == 0.01 and math.isclose(headline.interval.mean, 0.02)
    table = Report(answer.answer_blocks(summarise(runs.children(), runs.client))).render(as_markdown)
    assert "best learned (dot lr=0.01) 90.00%" in table


def test_the_headline_ranks_by_best_epoch_accuracy_and_pairs_seeds_by_seed_not_position(tmp_path):
    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "pairs"), _spec(tmp_path)
    # Fixed lr 0.1 peaks at 0.95 and ends at 0.60; fixed lr 0.01 ends higher (0.80) but peaks lower (0.85).
    for seed in (0, 1, 2):
        _run(runs, spec, _dot("small_cnn", True, 0.1, seed), "finished", {keys.VAL_ACC: [0.95 + seed / 100, 0.60]})
        _run(runs, spec, _dot("small_cnn", True, 0.01, seed), "finished", {keys.VAL_ACC: [0.85, 0.80]})
    # Learned ran seeds 1, 2, 3: only seeds 1 and 2 pair; by position, seed 3 would pair with fixed seed 2.
    for seed, acc in ((1, 0.90), (2, 0.90), (3, 0.50)):
        _run(runs, spec, _dot("small_cnn", False, 0.1, seed), "finished", {keys.VAL_ACC: [acc, acc]})
    rows = summarise(runs.children(), runs.client)
    [headline] = answer.Headline.each(rows)
    assert headline.best.fixed.key["lr"] == 0.1
    interval = headline.interval
    assert interval.n == 2 and math.isclose(interval.mean, (0.96 - 0.90 + 0.97 - 0.90) / 2)


def test_tables_read_measurements_at_each_runs_best_epoch(tmp_path):
    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "best-epoch"), _spec(tmp_path)
    # Best epoch 2 (0.9; epoch 3 ties it and the earlier is kept): compactness 0.7 there, 0.2 at the last epoch.
    for fixed in (True, False):
        history = {keys.VAL_ACC: [0.5, 0.9, 0.9], keys.COMPACTNESS: [0.1, 0.7, 0.2]}
        _run(runs, spec, _dot("small_cnn", fixed, 0.1, 0), "finished", history)
    [row, _] = summarise(runs.children(), runs.client)
    assert row.values(answer.COMPACTNESS) == [0.7]
    assert row.values(answer.LAST_ACC) == [0.9] and row.values(answer.BEST_ACC) == [0.9]
    assert "| dot | fixed | none | 0.1 | 1 | 90.00 ± 0.00 | 90.00 ± 0.00 | 0.700 ± 0.000 |" in as_markdown(
        sweep_table([row])
    )
    lines = answer.series(summarise(runs.children(), runs.client), "lr", answer.COMPACTNESS)
    assert [v for line in lines for _, v in line.points] == [[0.7], [0.7]]


def test_figure_lines_hold_finished_seeds_per_lr_with_fixed_and_learned_apart(tmp_path):
    _, runs = _fill(tmp_path)
    rows = summarise(runs.children())
    assert answer.figure_axis(rows) == "S"
    lines = {line.label: line for line in answer.series(rows, "S", BEST_ACC)}
    assert set(lines) == {"fixed lr=0.1", "learned lr=0.1"}
    assert lines["fixed lr=0.1"].fixed and not lines["learned lr=0.1"].fixed
    assert [(x, sorted(v)) for x, v in lines["learned lr=0.1"].points] == [(1.0, [0.5]), (16.0, [0.80, 0.82, 0.84])]
    assert [x for x, _ in lines["fixed lr=0.1"].points] == [1.0, 16.0] and len(lines["fixed lr=0.1"].points[0][1]) == 2


@pytest.mark.parametrize(
    ("lrs", "figures"), [([0.1, 0.01], {"acc_best_vs_lr.png", "compactness_vs_lr.png"}), ([0.1], set())]
)
def test_a_sweep_without_an_S_search_is_plotted_against_lr_or_not_at_all(lrs, figures):
    class Run:  # the shape of an MLflow run that summarise reads
        def __init__(self, lr, fixed, seed):
            cfg = TrialConfig(model="small_cnn", epochs=1, seed=seed, lr=lr, head=HeadConfig(kind="dot", fixed=fixed))
            params = {k: param_value(v) for k, v in to_params(cfg.settled()).items()}
            metrics = {keys.BEST_ACC: 0.5, keys.COMPACTNESS: 0.3}
            self.data = type("Data", (), {"params": params, "metrics": metrics, "tags": {STATUS_TAG: "finished"}})()

    rows = summarise([Run(lr, fixed, seed) for lr in lrs for fixed in (True, False) for seed in (0, 1)])
    assert answer.figure_axis(rows) == ("lr" if figures else None)
    assert set(answer.answer_figures(rows)) == figures


def test_one_report_value_renders_as_markdown_html_and_the_terminal_with_the_same_cells():
    report = Report([Paragraph("Answer", "it <b>."), Table("T", ["a", "b"], [["1", "2"]]), Table("U", ["c"], [["3"]])])
    page = report.render(as_html)
    assert page.count("<table>") == 2 and "<b>Answer</b>: it &lt;b&gt;." in page  # escaped, never markup
    assert "| 1 | 2 |" in report.render(as_markdown) and "**Answer**: it <b>." in report.render(as_markdown)
    from fixray.records.render import as_terminal

    terminal = report.render(as_terminal).splitlines()
    assert terminal[0] == "Answer: it <b>." and ["1", "2"] == terminal[terminal.index("T") + 3].split()


def test_searchers_and_schedulers_rank_trials_by_the_number_tables_rank_configurations_by():
    from fixray.sweep import search

    assert (search.METRIC, search.MODE) == (answer.BEST_ACC.metric, "max")


def test_a_headline_claims_no_interval_when_the_seeds_agree_and_says_how_a_tie_was_broken():
    """Two seeds that differ by the same amount give a t interval of width 0, which a reader takes for certainty; and
    of two configurations at the same best accuracy the first in table order is named, saying so."""
    equal = paired_interval([0.0, 0.0])
    assert equal.text(100) == "+0.00 (equal over 2 seeds: no interval)"
    from collections import Counter
    from types import SimpleNamespace

    from fixray.records.tables import Row

    def row(S: float, fixed: bool) -> Row:  # two finished seeds, each at 99.72% (359 of 360 test images)
        runs = {
            seed: SimpleNamespace(data=SimpleNamespace(metrics={keys.BEST_ACC: 359 / 360}, params={}))
            for seed in (0, 1)
        }
        key = {"kind": "cosine", "fixed": fixed, "S": S, "lr": 0.1}
        return Row(key, finished=runs, outcomes=Counter(finished=2), runs=list(runs.values()))

    [headline] = answer.Headline.each([row(1.0, True), row(4.0, True), row(1.0, False)])
    text = headline.text()
    assert "fixed minus learned +0.00 (equal over 2 seeds: no interval) pp" in text
    assert "t interval" not in text
    assert "(1 other fixed configuration(s) tie with the best: the first in table order is named)" in text


@pytest.mark.parametrize(
    "value,shown",
    [(7.891112021272017, "7.89"), (0.03598457153092583, "0.036"), (1.0, "1.0"), (0.01, "0.01"), (1e6, "1000000.0")],
)
def test_a_drawn_value_is_shown_to_three_significant_digits_and_a_written_one_as_it_is(value, shown):
    from fixray.records.tables import shown_value

    assert shown_value("S", value) == shown


def test_a_column_shows_as_many_digits_as_tell_its_values_apart_and_run_names_too(tmp_path):
    from fixray.records.tables import digits_apart, shown_value
    from fixray.sweep.plan import plan

    assert digits_apart([0.0359845, 0.0712, None, "cosine"]) == 3
    assert digits_apart([0.03598457, 0.03601]) == 4  # 0.036 twice at 3 digits
    assert [shown_value("lr", v, digits_apart([0.03598457, 0.03601])) for v in (0.03598457, 0.03601)] == [
        "0.03598",
        "0.03601",
    ]
    import yaml
    from conftest import GOOD_SWEEP

    from fixray.sweep.spec.checks import parse_sweep

    doc = yaml.safe_load(GOOD_SWEEP)
    doc["search"] = {"method": "random", "num_samples": 3, "random_seed": 1, "space": {"lr": {"loguniform": [0.01, 1]}}}
    spec = parse_sweep(doc, tmp_path / "s.yaml")
    trials = plan(spec)
    assert [t.name for t in trials] == [f"dot-learned-lr{t.config.lr:.3g}-seed{t.config.seed}" for t in trials]
    doc["search"] = {"method": "grid", "space": {"lr": [0.1234, 0.1231]}}
    close = [t.name for t in plan(parse_sweep(doc, tmp_path / "s.yaml"))]
    assert close == ["dot-learned-lr0.1234-seed0", "dot-learned-lr0.1231-seed0"]  # 0.123 twice at 3 digits


def test_a_configuration_whose_planned_seeds_never_started_is_not_ranked_and_they_are_counted(tmp_path):
    """Seeds are counted against the plan (the parent's planned seeds), not against the runs that exist: a report read
    mid-sweep must not let a one-seed configuration win."""
    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "early"), _spec(tmp_path)
    runs.log_plan(1.0, 1.0, 9, [0, 1, 2])  # the file plans three seeds
    for seed in range(3):
        _run(runs, spec, _dot("small_cnn", True, 0.1, seed), "finished", {keys.VAL_ACC: [0.92]})
        _run(runs, spec, _dot("small_cnn", False, 0.01, seed), "finished", {keys.VAL_ACC: [0.90]})
    _run(runs, spec, _dot("small_cnn", False, 0.1, 0), "finished", {keys.VAL_ACC: [0.99]})  # its seeds 1, 2: not yet
    [headline] = publish(runs)
    assert headline.best.learned.key["lr"] == 0.01 and math.isclose(headline.interval.mean, 0.02)
    rows = sweep_rows(runs)
    early = next(row for row in rows if row.key["lr"] == 0.1 and row.key["fixed"] is False)
    assert not early.ranked and early.not_started == 2 and early.seeds == "1 (2 not started)"
    assert "| dot | learned | none | 0.1 | 1 (2 not started) |" in Report([sweep_table(rows)]).render(as_markdown)
    # Without the plan recorded (an older sweep), the runs that exist are all there is.
    assert summarise(runs.children(), runs.client)[0].planned == 0


def test_heads_behind_a_learned_projection_are_never_compared_as_fixed_vs_learned_without_saying_so(tmp_path):
    import dataclasses

    runs, spec = SweepRuns(f"sqlite:///{tmp_path / 's.db'}", "fixray", "projected"), _spec(tmp_path)
    for seed in range(2):
        for fixed, acc in ((True, 0.91), (False, 0.90)):
            cfg = _dot("small_cnn", fixed, 0.1, seed)
            _run(
                runs,
                spec,
                dataclasses.replace(cfg, head=dataclasses.replace(cfg.head, dim=16)),
                "finished",
                {keys.VAL_ACC: [acc + seed / 100]},
            )
    [headline] = publish(runs)
    assert headline.text().endswith("so this compares two learned classifiers)")
    assert "-proj16-" in runs.children()[0].info.run_name  # named apart
