"""What a rerun of an edited sweep file does with the sweep's earlier trials, decided before anything starts: read
against a real MLflow store (SQLite) holding a constructed history."""

from pathlib import Path

import pytest
import yaml
from conftest import GOOD_SWEEP

from fixray.errors import BadInput
from fixray.faults import Outcome
from fixray.records.runs import STATUS_TAG, SweepRuns
from fixray.storage import Storage
from fixray.sweep.plan import plan
from fixray.sweep.rerun import look
from fixray.sweep.spec.checks import parse_sweep
from fixray.sweep.state import SavedPlan, write_record


@pytest.fixture
def sweep_file(tmp_path):
    """A sweep file's spec and plan (top-level keys and search keys replaced), its store and storage in tmp_path."""

    def make(seeds=(0, 1), search=None, **changes):
        doc = yaml.safe_load(GOOD_SWEEP) | {"seeds": list(seeds)} | changes
        doc["search"] |= search or {}
        doc["storage_path"] = str(tmp_path / "runs")
        doc["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
        spec = parse_sweep(doc, Path("s.yaml"))
        return spec, plan(spec)

    return make


def _ran(spec, trials, outcomes: dict[str, Outcome | None]):
    """The sweep's first run as its folder and MLflow record it: each named trial's child run with that outcome (None:
    started, unended); the others never started."""
    where = Storage(spec.storage_path)
    write_record(spec, where)
    SavedPlan.of(spec, trials, "", trials).write(spec, where)
    runs = SweepRuns(spec.tracking.uri, spec.tracking.experiment, spec.name)
    for i, trial in enumerate(t for t in trials if t.name in outcomes):
        run_id, _ = runs.child_for_trial(f"t{i}", trial.name, {}, trial.identity)
        if outcomes[trial.name] is not None:
            runs.client.set_tag(run_id, STATUS_TAG, outcomes[trial.name].value)
    return runs


ASHA = {"asha": {"grace_period": 1, "reduction_factor": 2}}


def test_a_trial_is_kept_resumed_or_new_by_its_identity_and_the_saved_state_restored_only_for_the_same_plan(
    sweep_file,
):
    spec, trials = sweep_file(search=ASHA)
    names = [t.name for t in trials]
    assert names == [
        "dot-fixed-lr0.1-seed0",
        "dot-fixed-lr0.1-seed1",
        "dot-learned-lr0.1-seed0",
        "dot-learned-lr0.1-seed1",
    ]
    _ran(spec, trials, {names[0]: Outcome.FINISHED, names[1]: Outcome.STOPPED_EARLY, names[2]: None})
    by_name = {t.identity: t.name for t in trials}

    # The same file (resources edited): Tune's saved state holds exactly what is left, so it is restored.
    same = look(*sweep_file(search=ASHA, resources={"cpus_per_trial": 2}))
    assert same.restores and same.tune == "" and not same.not_in_file and not same.changed
    assert {by_name[i] for i in same.kept} == {names[0], names[1]}  # stopped early by the same scheduler: stays
    assert {by_name[i] for i in same.resumed} == {names[2]}  # started, unended: continues
    assert [t.name for t in same.to_run] == names[2:]
    assert same.text() == "2 ended earlier (kept), 1 continue from where they stopped, 1 new"

    # Early stopping changed: the trial it stopped is no longer ended, so a new Tune experiment continues it.
    unstopped = look(*sweep_file())
    assert not unstopped.restores and unstopped.tune == "grown-2"
    assert {by_name[i] for i in unstopped.resumed} == {names[1], names[2]}

    # A seed added: its trials are new, the first seed's are kept or continue; a new Tune experiment runs them.
    grown = look(*sweep_file(seeds=(0, 1, 2), search=ASHA))
    assert grown.tune == "grown-2" and not grown.restores
    assert [t.name for t in grown.to_run] == ["dot-fixed-lr0.1-seed2", *names[2:], "dot-learned-lr0.1-seed2"]
    assert grown.text() == "2 ended earlier (kept), 1 continue from where they stopped, 3 new"

    # A value removed: its runs stay in MLflow and are counted beside the file's trials.
    fewer = look(*sweep_file(search=ASHA | {"space": {"fixed": [True]}}))
    assert {by_name[i] for i in fewer.kept} == {names[0], names[1]} and not fewer.to_run and fewer.not_in_file == 1
    assert "1 earlier run(s) not in this file" in fewer.text()

    # A setting every trial shares changed: every trial differs, and the change is said.
    longer = look(*sweep_file(search=ASHA, epochs=3))
    assert not longer.kept and longer.not_in_file == 3 and longer.changed == ["epochs 2 -> 3"]

    # A new searched setting whose only value is the one the trials had: the same trials, kept.
    assert look(*sweep_file(search=ASHA | {"space": {"fixed": [True, False], "momentum": [0.9]}})).kept == same.kept

    # The same name for another dataset is a mistake, not a growth: refused before anything starts.
    other, other_trials = sweep_file(search=ASHA, dataset="cifar10")
    with pytest.raises(BadInput, match="ran on dataset 'digits'; this file asks for 'cifar10'.*--fresh"):
        look(other, other_trials)


def test_a_new_tune_experiment_is_restored_by_the_next_run_of_the_same_file_and_grows_past_it(sweep_file):
    spec, trials = sweep_file()
    _ran(spec, trials, {trials[0].name: Outcome.FINISHED})
    grown_spec, grown_trials = sweep_file(seeds=(0, 1, 2))
    grown = look(grown_spec, grown_trials)
    grown.plan.write(grown_spec, Storage(grown_spec.storage_path))  # as the run that starts it records it
    again = look(*sweep_file(seeds=(0, 1, 2)))
    assert again.restores and again.tune == "grown-2"
    assert look(*sweep_file(seeds=(0, 1, 2, 3))).tune == "grown-3"


def test_random_search_with_more_samples_and_the_same_seed_keeps_its_first_draws(sweep_file):
    search = {"method": "random", "num_samples": 3, "random_seed": 7, "space": {"lr": {"loguniform": [0.01, 0.1]}}}
    _, first = sweep_file(search=search)
    _, more = sweep_file(search=search | {"num_samples": 6})
    assert [t.identity for t in more[: len(first)]] == [t.identity for t in first] and len(more) == 2 * len(first)


def test_a_tpe_sweep_grows_by_a_larger_num_samples_alone_and_refuses_any_other_change_to_what_it_draws(sweep_file):
    search = {"method": "tpe", "num_samples": 3, "space": {"lr": {"loguniform": [0.01, 0.1]}}}
    spec, trials = sweep_file(search=search)
    assert trials == []
    _ran(spec, trials, {})
    assert look(*sweep_file(search=search, resources={"cpus_per_trial": 2})) is None  # resumes its saved state
    grown_spec, _ = sweep_file(search=search | {"num_samples": 5})
    grown = look(grown_spec, [])
    assert (grown.draws, grown.tune, grown.restores, grown.runs_nothing) == (2, "grown-2", False, False)
    grown.plan.write(grown_spec, Storage(grown_spec.storage_path))  # as the run that starts it records it
    again = look(grown_spec, [])  # the grown file again: its own Tune experiment, restored, as it was given
    assert (again.draws, again.tune, again.restores) == (2, "grown-2", True)
    with pytest.raises(BadInput, match="whose search differ from this one's.*larger search.num_samples alone"):
        look(*sweep_file(search=search | {"num_samples": 4}))  # fewer than the file it last ran
    with pytest.raises(BadInput, match="whose search differ"):
        look(*sweep_file(search=search | {"num_samples": 9, "space": {"lr": {"loguniform": [0.01, 0.2]}}}))
    with pytest.raises(BadInput, match="whose epochs, seeds differ"):
        look(*sweep_file(seeds=(0, 1, 2), search=search | {"num_samples": 5}, epochs=3))
