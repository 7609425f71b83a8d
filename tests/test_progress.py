"""The live view counts what a researcher asks of a long sweep: trials done / running / queued, epochs of the
total (shrunk by trials that ended early), the time left at the measured rate, the best fixed and learned
accuracy so far; it redraws one line on a terminal and prints plain lines otherwise."""

import io
import math
from pathlib import Path

from fixray.crossing.contract import TRIAL_KEY
from fixray.sweep import progress as progress_module
from fixray.sweep.plan import plan
from fixray.sweep.progress import WAIT_SHOWN_AFTER_S, Progress, Snapshot, status_line
from fixray.sweep.spec.checks import parse_sweep

SPEC = parse_sweep(
    {"dataset": "digits", "model": "small_cnn", "epochs": 10, "search": {"space": {"fixed": [True, False]}}},
    Path("s.yaml"),
)
PLANNED = {(trial.config.head.fixed, trial.config.seed): trial for trial in plan(SPEC)}


class Trial:
    """The attributes of a Tune trial the view reads (status names as Tune's Trial spells them)."""

    PENDING, RUNNING, TERMINATED, ERROR = "PENDING", "RUNNING", "TERMINATED", "ERROR"

    def __init__(self, trial_id, status, fixed, epochs=0, best=None, seed=0):
        self.trial_id, self.status = trial_id, status
        self.config = {TRIAL_KEY: PLANNED[fixed, seed].sent()}  # what the driver sent the trial
        self.last_result = {"training_iteration": epochs} | ({"val/acc_best": best} if best is not None else {})


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_the_snapshot_counts_trials_epochs_and_the_best_of_each_head():
    progress = Progress(trials=5, epochs=SPEC.epochs)
    trials = [
        Trial("a", Trial.TERMINATED, True, epochs=10, best=0.91),
        Trial("b", Trial.TERMINATED, False, epochs=3, best=0.40),  # stopped early: 7 epochs it will never run
        Trial("c", Trial.RUNNING, False, epochs=4, best=0.88),
        Trial("d", Trial.PENDING, True),
    ]
    progress.started_at -= 100  # this driver has run 100 s
    progress.epochs_at_start = 7  # ... and found 7 epochs done (a resume): 10 epochs in 100 s since
    now = progress.snapshot(trials)
    assert (now.done, now.running, now.queued) == (2, 1, 2)  # the fifth trial is not created yet: queued
    assert now.epochs_done == 17 and now.epochs_total == 5 * 10 - 7
    assert math.isclose(now.rate, 10 / 100, rel_tol=0.01)
    assert math.isclose(now.left_s, (43 - 17) / 0.1, rel_tol=0.01)
    assert now.best == {True: 0.91, False: 0.88}


def test_the_status_line_reads_like_a_progress_bar():
    now = Snapshot(12, 3, 2, 45, 240, 725.0, 45 / 725.0, {True: 0.912})
    line = status_line(now)
    assert line.startswith("[0:12:05] [###.................] trials 3/12 done, 2 running, 7 queued")
    assert "epochs 45/240 (19%)" in line and "~0:52:22 left" in line
    assert line.endswith("best test acc: fixed 91.20% learned -")
    assert "~? left" in status_line(Snapshot(2, 0, 0, 0, 20, 1.0, math.nan, {}))


def test_a_terminal_gets_one_line_redrawn_and_a_pipe_gets_plain_lines():
    trials = [Trial("a", Trial.TERMINATED, True, epochs=10, best=0.9), Trial("b", Trial.RUNNING, False, epochs=2)]
    for stream, terminal in ((Terminal(), True), (io.StringIO(), False)):
        progress = Progress(trials=2, epochs=SPEC.epochs, stream=stream)
        progress.on_trial_complete(0, trials, trials[0])
        progress.on_step_end(1, trials)  # within the refresh interval: not redrawn
        progress.on_experiment_end(trials)
        text = stream.getvalue()
        assert "finished" in text and "dot-fixed-lr0.1-seed0" in text
        assert ("\r\x1b[2K" in text) == terminal
        assert text.endswith("\n")
        assert text.count("trials 1/2 done") == 2  # once after the trial's end, once at the experiment's end


def test_a_trial_that_tune_is_ending_counts_as_done_and_the_rate_counts_from_the_first_step():
    stream = io.StringIO()
    progress = Progress(trials=2, epochs=SPEC.epochs, stream=stream)
    trials = [Trial("a", Trial.RUNNING, True), Trial("b", Trial.PENDING, False)]
    progress.on_step_end(0, trials)  # the driver's first step: no epoch done yet
    trials[0].last_result = {"training_iteration": 10, "val/acc_best": 0.9}
    progress.started_at -= 20  # 10 epochs in 20 s
    progress.on_trial_complete(1, trials, trials[0])  # Tune has not marked it TERMINATED yet
    line = stream.getvalue().splitlines()[-1]
    assert "trials 1/2 done, 0 running, 1 queued | epochs 10/20 (50%)" in line
    assert "~0:00:20 left" in line  # 10 epochs left at 0.5 epochs/s


def test_why_queued_trials_wait_shows_once_the_wait_has_lasted_and_at_once_even_in_a_log(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream, asked = io.StringIO(), []

    def waiting(running: int, queued: int) -> str:
        asked.append((running, queued))
        return "queued trials wait for a node with 1 CPU(s) and 1 GPU(s): none is up now" if queued else ""

    progress = Progress(trials=2, epochs=SPEC.epochs, stream=stream, waiting=waiting)
    trials = [Trial("a", Trial.PENDING, True), Trial("b", Trial.PENDING, False)]
    progress.on_step_end(0, trials)  # asked, but a wait this short may be trials starting: not shown
    assert asked == [(0, 2)] and stream.getvalue() == ""
    clock[0] += 1
    progress.on_step_end(1, trials)  # asked again only after the refresh interval
    assert len(asked) == 1
    clock[0] += WAIT_SHOWN_AFTER_S
    progress.on_step_end(2, trials)  # it has lasted: a plain line comes every 30 s, but this one is printed at once
    assert stream.getvalue().endswith("| queued trials wait for a node with 1 CPU(s) and 1 GPU(s): none is up now\n")
    clock[0] += 5
    trials[0].status = trials[1].status = Trial.RUNNING
    progress.on_step_end(3, trials)  # the wait is over: said at once too
    assert asked[-1] == (2, 0) and stream.getvalue().count("\n") == 2
    assert "wait for" not in stream.getvalue().splitlines()[-1]


def test_a_wait_during_which_trials_start_is_not_shown(monkeypatch):
    clock = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: clock[0])
    stream = io.StringIO()
    progress = Progress(trials=3, epochs=SPEC.epochs, stream=stream, waiting=lambda running, queued: "slots held")
    trials = [Trial("a", Trial.PENDING, True), Trial("b", Trial.PENDING, False)]
    for step in range(3):  # every few seconds one more trial starts: they wait for their own start, nothing else
        trials[min(step, 1)].status = Trial.RUNNING
        clock[0] += WAIT_SHOWN_AFTER_S / 2
        progress.on_step_end(step, trials)
    assert "slots held" not in stream.getvalue()
