"""`fixray status`: every sweep in a store with its trials by state, read from MLflow alone."""

from fixray.cli import main
from fixray.records.runs import STATUS_TAG, SweepRuns


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
    done = SweepRuns(uri, "fixray", "done")
    run_id, _ = done.child_for_trial("d1", "run-d1", {"lr": 0.1})
    done.client.set_tag(run_id, STATUS_TAG, "diverged")
    done.end("FINISHED")

    assert main(["status", "--tracking-uri", uri, "--format", "markdown"]) == 0
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")[1:] for line in capsys.readouterr().out.splitlines()}
    # trials, finished, running, error, diverged, stopped early, not run, unfinished, parent run
    assert rows["busy"][:9] == ["6", "2", "1", "1", "0", "0", "1", "1", "open (running, or its driver died)"]
    assert rows["done"][:9] == ["1", "0", "0", "0", "1", "0", "0", "0", "FINISHED"]
    assert main(["status", "done", "--tracking-uri", uri, "--format", "markdown"]) == 0
    assert "| busy |" not in capsys.readouterr().out
    assert main(["status", "nowhere", "--tracking-uri", uri]) == 2
    assert "no sweep named 'nowhere'" in capsys.readouterr().err
