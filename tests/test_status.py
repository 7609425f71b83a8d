"""`fixray status`: every sweep in a store with its trials by state, read from MLflow alone."""

from fixray.cli import main
from fixray.records.runs import NOT_IN_FILE_TAG, PROGRESS_TAG, STATUS_TAG, SweepRuns


def test_status_counts_each_sweep_s_trials_by_state_and_says_whose_parent_run_is_open(tmp_path, capsys):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    busy = SweepRuns(uri, "fixray", "busy")  # its parent run is open, as a running driver (or a dead one) leaves it
    states = {"t1": "finished", "t2": "finished", "t3": "error", "t4": "not_run", "t5": None, "t6": None}
    for trial, state in states.items():
        run_id, _ = busy.child_for_trial(trial, f"run-{trial}", {"lr": 0.1})
        if state is not None:
            busy.client.set_tag(run_id, STATUS_TAG, state)
            busy.client.set_terminated(run_id, "FINISHED")
        elif trial == "t6":
            busy.client.set_terminated(run_id, "KILLED")  # its sweep was interrupted: unfinished, not running
    dropped, _ = busy.child_for_trial("t7", "run-t7", {"lr": 0.5})  # its file no longer plans it: not counted
    busy.client.set_tag(dropped, NOT_IN_FILE_TAG, "true")
    busy.client.set_tag(busy.parent_id, PROGRESS_TAG, "[0:00:07] [###] trials 4/6 done, 1 running, 1 queued")
    done = SweepRuns(uri, "fixray", "done")
    run_id, _ = done.child_for_trial("d1", "run-d1", {"lr": 0.1})
    done.client.set_tag(run_id, STATUS_TAG, "diverged")
    done.client.set_tag(done.parent_id, PROGRESS_TAG, "[0:00:09] [###] trials 1/1 done")
    done.end("FINISHED")

    assert main(["status", "--tracking-uri", uri, "--format", "markdown"]) == 0
    out = capsys.readouterr().out
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in out.splitlines()}
    # trials, finished, running, error, diverged, stopped early, not run, unfinished, not in file, parent run
    assert rows["busy"][:10] == ["6", "2", "1", "1", "0", "0", "1", "1", "1", "open (running, or its driver died)"]
    assert rows["done"][:10] == ["1", "0", "0", "0", "1", "0", "0", "0", "0", "FINISHED"]
    # A running sweep's live line, as its driver last copied it; a finished one's is not shown.
    assert "busy: [0:00:07] [###] trials 4/6 done, 1 running, 1 queued" in out and "done: [0:00:09]" not in out
    assert main(["status", "done", "--tracking-uri", uri, "--format", "markdown"]) == 0
    assert "| busy |" not in capsys.readouterr().out
    assert main(["status", "nowhere", "--tracking-uri", uri]) == 2
    assert "no sweep named 'nowhere'" in capsys.readouterr().err
