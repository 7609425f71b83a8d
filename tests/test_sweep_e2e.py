"""`fixray sweep` end to end: real local Ray, real MLflow (SQLite), bundled digits; no mocks."""

import json
import math
import re
import signal
import subprocess
import time

import pytest
from e2e import ENV, FIXRAY, run, steps, store

from fixray.records.runs import IDENTITY_TAG, STATUS_TAG, SWEEP_TAG, TRIAL_TAG
from fixray.sweep.plan import plan
from fixray.sweep.spec.reading import load_sweep

pytestmark = pytest.mark.slow

FOUR_TRIALS = """\
name: four
dataset: digits
model: small_cnn
epochs: 3
batch_size: 64
seeds: [0]
search:
  space:
    kind: [dot, cosine]
    fixed: [true, false]
"""


def test_sweep_records_one_parent_and_one_child_per_trial_then_resume_adds_nothing(tmp_path):
    (tmp_path / "four.yaml").write_text(FOUR_TRIALS)
    done = run(["sweep", "four.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "mlflow ui --backend-store-uri sqlite:///mlflow.db" in done.stdout
    client, parents, children = store(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4
    parent_id = parents[0].info.run_id
    seen = set()
    for child in children:
        tags, params, metrics = child.data.tags, child.data.params, child.data.metrics
        assert tags["mlflow.parentRunId"] == parent_id and tags[SWEEP_TAG] == "four"
        assert tags[STATUS_TAG] == "finished" and child.info.status == "FINISHED"
        assert {"kind", "fixed", "S", "lr", "seed", "epochs", "batch_size", "model", "dataset"} <= set(params)
        assert (params["S"] == "none") == (params["kind"] == "dot")
        seen.add((params["kind"], params["fixed"]))
        for key in (
            "train/loss",
            "val/acc",
            "val/compactness",
            "val/separability_mean",
            "val/confusion_spearman",
            "train/lr",
        ):
            assert steps(client, child, key) == [1, 2, 3], key
        assert metrics["val/acc"] > 0.8
        figures = {f.path for f in client.list_artifacts(child.info.run_id, "figures")}
        assert figures == {
            "figures/class_vector_cosines.png",
            "figures/mistakes_vs_cosine.png",
            "figures/image_vectors_2d.png",
        }
        assert not {"time_this_iter_s", "pid", "timestamp", "training_iteration", "done"} & set(metrics)
    assert seen == {("dot", "True"), ("dot", "False"), ("cosine", "True"), ("cosine", "False")}

    # What crossed to each trial: its settled config (head-kind defaults resolved) and its run name, sent once.
    sent = [json.loads(p.read_text())["trial"] for p in (tmp_path / "fixray-runs" / "four").glob("*/params.json")]
    assert sorted(t["run_name"] for t in sent) == sorted(c.info.run_name for c in children)
    for trial in sent:
        bias, decay = trial["config"]["bias"], trial["config"]["weight_decay"]
        assert (bias, decay) == ((True, 5e-4) if trial["config"]["kind"] == "dot" else (False, 0.0))

    # The printed table's numbers are the MLflow values (one seed: mean = the value, std 0).
    for child in children:
        head, vectors = child.data.params["kind"], "fixed" if child.data.params["fixed"] == "True" else "learned"
        row = next(line for line in done.stdout.splitlines() if line.startswith(f"| {head} | {vectors} |"))
        assert f"{child.data.metrics['val/acc'] * 100:.2f} ± 0.00" in row
        assert f"{child.data.metrics['val/compactness']:.3f} ± 0.000" in row

    # Run again: every trial ended, so its answer comes from MLflow without starting Ray or Tune, and nothing is
    # retrained, its runs untouched; a change of where or how trials run (resources) changes no trial.
    (tmp_path / "four.yaml").write_text(FOUR_TRIALS + "resources: {checkpoint_every: 1, max_retries: 1}\n")
    again = run(["sweep", "four.yaml"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Sweep 'four': 4 trials: 4 ended earlier (kept)." in again.stdout
    assert "Configuration for experiment" not in again.stdout and "Resuming" not in again.stdout
    assert "**Answer**: best fixed" in again.stdout and "the sweep's trials:" in again.stdout
    client, parents, after = store(tmp_path)
    assert len(parents) == 1
    assert {c.info.run_id: c.info.end_time for c in after} == {c.info.run_id: c.info.end_time for c in children}
    assert all(steps(client, c, "val/acc") == [1, 2, 3] for c in after)
    planned = plan(load_sweep(tmp_path / "four.yaml"))
    assert {c.data.tags[IDENTITY_TAG] for c in after} == {t.identity for t in planned}

    report = run(["report", "four"], tmp_path)
    assert report.returncode == 0 and report.stdout.strip() in done.stdout

    # The live view, as plain lines (the output is not a terminal), ends with every trial and epoch done.
    status = [line for line in done.stdout.splitlines() if "] trials " in line]
    assert status and "trials 4/4 done, 0 running, 0 queued | epochs 12/12 (100%)" in status[-1]
    best = {c.data.params["fixed"]: c.data.metrics["val/acc_best"] for c in children}
    fixed = max(v for k, v in best.items() if k == "True")
    assert f"best test acc: fixed {fixed * 100:.2f}%" in status[-1]
    # The answer: on the parent run for the runs table, and printed above the table.
    parent = client.get_run(parents[0].info.run_id)
    assert {"answer/best_fixed_acc", "answer/best_learned_acc", "answer/fixed_minus_learned"} <= set(
        parent.data.metrics
    )
    assert math.isclose(parent.data.metrics["answer/best_fixed_acc"], fixed)
    assert "**Answer**: best fixed" in done.stdout and "one seed: no interval" in done.stdout


BUDGETED = """\
name: budgeted
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0, 1]
budget: {budget}
search:
  space:
    fixed: [true, false]
"""


def test_a_budget_runs_whole_configurations_counts_the_rest_as_not_run_and_a_larger_one_runs_them(tmp_path):
    from fixray.sweep.cost import ASSUMED_THROUGHPUT, trial_flop
    from fixray.sweep.plan import plan
    from fixray.sweep.spec.reading import load_sweep

    file = tmp_path / "budgeted.yaml"
    file.write_text(BUDGETED.format(budget=1.0))
    trials = plan(load_sweep(file))  # fixed, then learned; two seeds each
    one = trial_flop(trials[0].config, "digits") / ASSUMED_THROUGHPUT / 3600  # GPU-hours of any of its trials
    # Room for three trials: the fixed configuration; the learned one would pass it, so neither of its seeds runs.
    file.write_text(BUDGETED.format(budget=f"{one * 3:.6e}"))
    done = run(["sweep", "budgeted.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 trial(s) not run: past the budget" in done.stdout and "FAILED" not in done.stdout
    assert "Traceback" not in done.stderr  # a refusal is no failure
    assert done.stdout.count("not run  ") == 2  # one refusal each in the live view
    client, parents, children = store(tmp_path)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    outcomes = {c.info.run_name: c.data.tags[STATUS_TAG] for c in children}
    assert outcomes == {t.name: "finished" for t in trials[:2]} | {t.name: "not_run" for t in trials[2:]}
    for child in children:
        if outcomes[child.info.run_name] == "not_run":  # counted, with its settings, and never trained
            assert child.info.status == "SCHEDULED" and child.data.params["fixed"] == "False"
            assert steps(client, child, "train/loss") == []
    assert re.search(r"\| dot \| learned \|[^\n]*\| 2 \(2 not run\) \| — \|", done.stdout), done.stdout
    assert "the trials past it are counted as not run" in done.stdout  # the report's Cost paragraph
    assert parents[0].data.metrics["budget/gpu_hours"] == pytest.approx(one * 3, rel=1e-5)
    assert parents[0].data.metrics["budget/admitted_gpu_hours"] == pytest.approx(one * 2, rel=1e-5)
    ended = {c.info.run_id: c.info.end_time for c in children if outcomes[c.info.run_name] == "finished"}

    # A larger budget runs them; what finished is kept, not trained again.
    file.write_text(BUDGETED.format(budget=f"{one * 4.5:.6e}"))
    again = run(["sweep", "budgeted.yaml"], tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "2 trial(s) left out by a budget are run if this one admits them" in again.stdout
    assert "every trial fits" in again.stdout and "trial(s) not run" not in again.stdout
    client, parents, after = store(tmp_path)
    assert sorted(c.info.run_id for c in after) == sorted(c.info.run_id for c in children)
    assert all(c.data.tags[STATUS_TAG] == "finished" and c.info.status == "FINISHED" for c in after)
    assert all(steps(client, c, "train/loss") == [1, 2] for c in after)
    assert all(c.info.end_time == ended[c.info.run_id] for c in after if c.info.run_id in ended)
    assert parents[0].data.metrics["budget/gpu_hours"] == pytest.approx(one * 4.5, rel=1e-5)


INTERRUPTIBLE = """\
name: interrupted
dataset: digits
model: small_cnn
epochs: 40
batch_size: 64
seeds: [0]
search:
  max_concurrent_trials: 1
  space:
    fixed: [true, false]
    lr: [0.1, 1.0e+6]   # 1e6 diverges: recorded as diverged, not as a crash
"""


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
def test_interrupted_sweep_resumes_without_redoing_trials_or_duplicating_runs(database, tmp_path, request):
    uri = None if database == "sqlite" else request.getfixturevalue("postgresql").create_database("mlflow")
    env = ENV | ({"MLFLOW_TRACKING_URI": uri} if uri else {})
    (tmp_path / "s.yaml").write_text(INTERRUPTIBLE)
    first = subprocess.Popen(
        FIXRAY + ["sweep", "s.yaml"], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    output = []
    deadline = time.monotonic() + 240
    for line in first.stdout:
        output.append(line)
        if re.match(r"\[\d+:\d\d:\d\d\] finished ", line):  # a trial's end, above the status line
            break
        assert time.monotonic() < deadline, "no trial finished"
    time.sleep(1.5)  # let the next trial get a few epochs in
    first.send_signal(signal.SIGTERM)  # what a scheduler or `ray job stop` sends; Ctrl-C takes the same path
    output += first.stdout.readlines()
    assert first.wait(timeout=120) == 130, "".join(output)
    assert "run the same command again to resume" in "".join(output)

    client, parents, children = store(tmp_path, uri)
    assert parents[0].info.status == "KILLED"
    ended_before = {c.info.run_id: c.info.end_time for c in children if STATUS_TAG in c.data.tags}
    assert 1 <= len(ended_before) < 4

    second = run(["sweep", "s.yaml"], tmp_path, env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    client, parents, children = store(tmp_path, uri)
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert len(children) == 4 and len({c.data.tags[TRIAL_TAG] for c in children}) == 4
    for child in children:
        if child.info.run_id in ended_before:  # finished before the interrupt: not run again
            assert child.info.end_time == ended_before[child.info.run_id]
        history = steps(client, child, "train/loss")
        assert len(history) == len(set(history)), "an epoch was logged twice"
        if child.data.params["lr"] == "1000000.0":
            assert child.data.tags[STATUS_TAG] == "diverged" and history == [1]
            assert math.isnan(child.data.metrics["val/acc"])
        else:
            assert child.data.tags[STATUS_TAG] == "finished" and history == list(range(1, 41))
    assert re.search(r"\| dot \| learned \| none \| 1000000.0 \| 1 \(1 diverged\) \| NaN", second.stdout)
    # The answer is published again after the resume, from every trial: lr 0.1 pairs its seed, 1e6 diverged.
    answer = parents[0].data.tags["fixray.answer"]
    assert "lr=0.1" in answer and "(one seed: no interval)" in answer and "t interval" not in answer
    assert "| dot | none | 1000000.0 | 0 | 1 diverged / 1 diverged |" in second.stdout


DDP_WITH_ASHA = """\
name: ddp
dataset: digits
model: small_cnn
epochs: 3
batch_size: 32
seeds: [0]
search:
  asha: {grace_period: 1, reduction_factor: 2}
  space:
    kind: cosine
    fixed: false
    S: 10
    lr: [0.1, 1.0e-6]   # the second barely learns: ASHA must stop it at its first rung
resources: {workers: 2, cpus_per_trial: 1}
"""


def test_two_worker_ddp_trials_keep_identical_weights_and_their_reports_reach_asha(tmp_path):
    (tmp_path / "ddp.yaml").write_text(DDP_WITH_ASHA)
    done = run(["sweep", "ddp.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client, _, children = store(tmp_path)
    by_lr = {c.data.params["lr"]: c for c in children}
    good, slow = by_lr["0.1"], by_lr["1e-06"]
    assert good.data.params["workers"] == "2"
    assert steps(client, good, "val/acc") == [1, 2, 3]
    assert good.data.metrics["ddp/max_weight_diff"] == 0.0  # both workers hold the same weights at the end
    assert good.data.metrics["val/acc"] > 0.8
    assert (
        len(client.list_artifacts(good.info.run_id, "figures")) == 3
    )  # drawn by rank 0, found via the trainer's checkpoint
    assert slow.data.tags[STATUS_TAG] == "stopped_early"
    assert steps(client, slow, "val/acc") == [1]


SEARCHED = """\
name: searched
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0, 1]
head: {{kind: cosine}}
search:
  method: {method}
  num_samples: 2
  space:
    fixed: {fixed}
    S: {{loguniform: [1, 30]}}
    lr: {{loguniform: [0.01, 0.2]}}
"""


@pytest.mark.parametrize("method,fixed", [("random", "[true, false]"), ("tpe", "{choice: [true, false]}")])
def test_random_and_tpe_searches_draw_within_their_ranges_and_run_every_seed(tmp_path, method, fixed):
    (tmp_path / "s.yaml").write_text(SEARCHED.format(method=method, fixed=fixed))
    done = run(["sweep", "s.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    client, _, children = store(tmp_path)
    expected = 8 if method == "random" else 4  # random: 2 draws x 2 grid values x 2 seeds; tpe: 2 suggestions x 2 seeds
    assert len(children) == expected
    configs = {}
    for child in children:
        params = child.data.params
        assert 1 <= float(params["S"]) <= 30 and 0.01 <= float(params["lr"]) <= 0.2
        configs.setdefault((params["fixed"], params["S"], params["lr"]), []).append(params["seed"])
        assert steps(client, child, "val/acc") == [1, 2]
    assert all(sorted(seeds) == ["0", "1"] for seeds in configs.values())  # every configuration ran once per seed
    assert len(configs) == expected // 2


def test_a_gpu_sweep_file_runs_on_a_machine_without_one_when_the_command_line_asks_for_the_cpu(tmp_path):
    (tmp_path / "gpu.yaml").write_text(
        FOUR_TRIALS.replace("epochs: 3", "epochs: 1").replace("    fixed: [true, false]\n", "")
        + "resources: {cpus_per_trial: 4, gpus_per_trial: 1}\n"
    )
    refused = run(["sweep", "gpu.yaml"], tmp_path)
    assert refused.returncode == 2 and "asks for 1 GPU(s) and 4 CPU(s)" in refused.stderr
    done = run(["sweep", "gpu.yaml", "--gpus-per-trial", "0", "--cpus-per-trial", "1"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    _, _, children = store(tmp_path)
    assert len(children) == 2 and all(c.data.tags[STATUS_TAG] == "finished" for c in children)
