"""What a sweep's folder records about the sweep, read before anything starts: the tracking store it writes to and
the layout of the Tune state it saved, so a resume goes to the same store and to a fixray that can read it."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from typing import Any

from fixray import __version__
from fixray.crossing.contract import to_params
from fixray.errors import BadInput, Unavailable
from fixray.storage import Storage
from fixray.sweep.plan import PlannedTrial
from fixray.sweep.spec.schema import SweepSpec

RECORD_FILE = "fixray-tracking.json"  # in the sweep's storage folder
GROWN_PREFIX = "grown-"  # a grown sweep's later Tune experiments: grown-2, grown-3, ... below the sweep's folder
PLAN_FILE = "fixray-plan.json"  # beside it: the trials the file last planned, and the Tune experiment running them
# The saved Tune state holds fixray's callbacks and trial configs, found again by module path on resume. 2: the
# trial/, sweep/, records/ layout, trials sent settled configs. 3: a drawing searcher (TPE) saves its sweep file's
# spec as plain data, where layout 2 saved the schema's classes by their module path (sweep/spec.py, now a folder).
# A record without a layout was written by fixray 0.1.
STATE_LAYOUT = 3
LAST_FLAT_LAYOUT_COMMIT = "7c9d2bb"  # the last commit of fixray 0.1, whose sweeps it alone resumes
LAST_SCHEMA_BY_PATH_COMMIT = "3b4302d"  # the last commit whose TPE sweeps saved the schema's classes by module path


def check_record(spec: SweepSpec, where: Storage) -> None:
    """A sweep resumes in the store it started in, with a fixray that reads its saved state: else BadInput.

    Also the first look at the storage: a bucket that is missing or out of reach stops the sweep here.
    """
    record = where.shown(spec.name, RECORD_FILE)
    try:
        where.check()
        if not where.exists(spec.name, RECORD_FILE):
            return
        text = where.read_text(spec.name, RECORD_FILE)
    except FileNotFoundError as error:  # a bucket that does not exist: the sweep file names the wrong one
        raise BadInput(f"storage_path {where.shown()}: not readable ({error})") from None
    except OSError as error:
        raise Unavailable(f"storage_path {where.shown()}: not readable ({error})") from None
    try:
        first = json.loads(text)
    except ValueError as error:
        raise BadInput(f"{record}: unreadable ({error}); it records where sweep {spec.name!r} is tracked") from None
    if first.get("layout") == 2 and not spec.search.search_method.plans_ahead:
        raise BadInput(
            f"{spec.search.method} sweep {spec.name!r} in {where.shown(spec.name)} was started by a fixray whose saved "
            f"searcher names the sweep schema's old modules, which this fixray {__version__} cannot load. Finish it "
            f"with that version (a checkout of commit {LAST_SCHEMA_BY_PATH_COMMIT}, `pip install -e .` there, the same "
            f"command), or pass --fresh to start it anew beside it with this version."
        )
    if first.get("layout") not in (2, STATE_LAYOUT):
        raise BadInput(
            f"sweep {spec.name!r} in {where.shown(spec.name)} was started by fixray 0.1, whose saved state this "
            f"fixray {__version__} cannot resume (its modules moved). Finish it with fixray 0.1 (a checkout of commit "
            f"{LAST_FLAT_LAYOUT_COMMIT}, `pip install -e .` there, the same command), or pass --fresh to start it "
            f"anew beside it with this version."
        )
    wanted = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment}
    if {k: first.get(k) for k in wanted} != wanted:
        raise BadInput(
            f"sweep {spec.name!r} was started with MLflow {first.get('uri')!r} (experiment "
            f"{first.get('experiment')!r}); this run asks for {wanted['uri']!r} (experiment "
            f"{wanted['experiment']!r}). Its runs live in the first store, so it resumes only there: pass "
            f"--tracking-uri {first.get('uri')} (and that experiment), or --fresh to start a new sweep in the new one."
        )


def write_record(spec: SweepSpec, where: Storage) -> None:
    """Records the store and the state layout when a sweep first starts (a resume keeps the first record)."""
    if not where.exists(spec.name, RECORD_FILE):
        record = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment, "layout": STATE_LAYOUT}
        where.write_text(json.dumps(record) + "\n", spec.name, RECORD_FILE)


@dataclass(frozen=True)
class SavedPlan:
    """What the sweep's folder records of the file it last ran: every trial it planned, and the Tune experiment (a
    folder below the sweep's) that runs them now with the trials its grid holds. A file that grew starts another Tune
    experiment beside the first, holding only what is left to run."""

    trials: dict[str, str]  # identity -> run name: every trial the file planned
    tune: str  # the Tune experiment's folder, below the sweep's ("": the sweep's folder itself, its first)
    tune_trials: frozenset[str]  # identities of the trials that experiment's grid holds
    scheduler: dict[str, Any] | None  # the file's early stopping (search.asha): a trial it stopped stays stopped
    shared: dict[str, Any]  # the settings every trial shares (flat), to name what changed
    drawn: dict[str, Any] | None = None  # a method that draws as it runs: what its file asked (what_is_drawn)
    tune_draws: int = 0  # a method that draws as it runs: the samples its Tune experiment draws (each once per seed)

    @classmethod
    def of(
        cls, spec: SweepSpec, trials: list[PlannedTrial], tune: str, tune_trials: list[PlannedTrial], draws: int = 0
    ) -> SavedPlan:
        if not trials:  # a method that draws as it runs: its saved Tune state alone holds its trials
            scheduler, shared = scheduler_of(spec), {"dataset": spec.dataset}
            return cls({}, tune, frozenset(), scheduler, shared, what_is_drawn(spec), draws or spec.search.num_samples)
        return cls(
            {t.identity: t.name for t in trials},
            tune,
            frozenset(t.identity for t in tune_trials),
            scheduler_of(spec),
            shared_settings(spec, trials),
        )

    def write(self, spec: SweepSpec, where: Storage) -> None:
        data = dataclasses.asdict(self) | {"tune_trials": sorted(self.tune_trials)}
        where.write_whole((json.dumps(data, indent=1) + "\n").encode(), spec.name, PLAN_FILE)


# Sweep file keys that change where or how trials run, never what they compute.
HOW_NOT_WHAT = ("name", "data_dir", "download", "verify", "budget", "resources", "tracking", "storage_path")


def what_is_drawn(spec: SweepSpec) -> dict[str, Any]:
    """Everything in a drawing sweep's file that changes its trials: its settings, seeds and search."""
    data = spec.as_data()
    data["search"].pop("max_concurrent_trials", None)
    return {key: value for key, value in data.items() if key not in HOW_NOT_WHAT}


def more_draws(spec: SweepSpec, where: Storage, saved: SavedPlan) -> int:
    """How many more samples a drawing sweep's (TPE's) file asks than the one it last ran: 0 for the same draw. Any
    other change to what it draws (num_samples lowered, a range, a setting, seeds) is refused before anything starts,
    naming the keys: its searcher learnt from the first file's draws, which would not be this one's."""
    if saved.drawn is None:
        return 0
    now = what_is_drawn(spec)
    changed = [key for key in sorted(now.keys() | saved.drawn.keys()) if now.get(key) != saved.drawn.get(key)]
    if changed == ["search"]:
        before, after = dict(saved.drawn["search"]), dict(now["search"])
        more = after.pop("num_samples") - before.pop("num_samples")
        if before == after and more > 0:
            return more
    if changed:
        raise BadInput(
            f"{spec.search.method} sweep {spec.name!r} in {where.shown(spec.name)} was started from a file whose "
            f"{', '.join(changed)} differ from this one's. Its searcher drew each trial from the results so far: a "
            f"{spec.search.method} sweep grows by a larger search.num_samples alone (the same ranges, settings, seeds "
            f"and random_seed). Pass --fresh to run this file as a new sweep beside it (a timestamped name), or give "
            f"it a new `name:`; the first sweep's runs stay in MLflow. To finish the first sweep, run its file as it "
            f"was."
        )
    return 0


def scheduler_of(spec: SweepSpec) -> dict[str, Any] | None:
    return spec.search.asha.model_dump(mode="json") if spec.search.asha is not None else None


def shared_settings(spec: SweepSpec, trials: list[PlannedTrial]) -> dict[str, Any]:
    """The settings every trial of the plan takes alike (flat), and the sweep's dataset."""
    params = [to_params(trial.config) for trial in trials]
    return {"dataset": spec.dataset} | {k: v for k, v in params[0].items() if all(p[k] == v for p in params)}


def saved_plan(spec: SweepSpec, where: Storage) -> SavedPlan | None:
    """What the sweep's folder records of the file it last ran; None for a sweep not started, or started before plans
    were recorded, or by a method that draws as it runs."""
    if not where.exists(spec.name, PLAN_FILE):
        return None
    try:
        data = json.loads(where.read_text(spec.name, PLAN_FILE))
        trials = dict(data["trials"])
        return SavedPlan(
            trials,
            data.get("tune", ""),
            frozenset(data.get("tune_trials", trials)),  # a record from before growth: its grid holds every trial
            data.get("scheduler", scheduler_of(spec)),
            data.get("shared", {}),
            data.get("drawn"),
            data.get("tune_draws", 0),
        )
    except (ValueError, KeyError, TypeError) as error:
        raise BadInput(
            f"{where.shown(spec.name, PLAN_FILE)}: unreadable ({error}); it records the sweep's trials"
        ) from None


def refuse_another_dataset(spec: SweepSpec, where: Storage, saved: SavedPlan) -> None:
    """A sweep name already used for another dataset is taken as a mistake, not a growth: BadInput, before anything
    starts, with the ways on."""
    before = saved.shared.get("dataset")
    if before is not None and before != spec.dataset:
        raise BadInput(
            f"sweep {spec.name!r} in {where.shown(spec.name)} ran on dataset {before!r}; this file asks for "
            f"{spec.dataset!r}. A sweep grows by editing its file (values, seeds, settings), not by another dataset: "
            f"give this file a new `name:`, or pass --fresh to run it as a new sweep under a timestamped name. The "
            f"first sweep's runs stay in MLflow."
        )


def changed_settings(spec: SweepSpec, trials: list[PlannedTrial], saved: SavedPlan) -> list[str]:
    """The shared settings the file changed since it last ran, e.g. ['epochs 2 -> 3']: each changes every trial."""
    now = shared_settings(spec, trials)
    return [
        f"{name} {saved.shared[name]} -> {now[name]}" for name in now if saved.shared.get(name, now[name]) != now[name]
    ]
