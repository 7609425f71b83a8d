"""What a sweep's folder records about the sweep, read before anything starts: the tracking store it writes to and
the layout of the Tune state it saved, so a resume goes to the same store and to a fixray that can read it."""

from __future__ import annotations

import json

from fixray import __version__
from fixray.errors import BadInput, Unavailable
from fixray.storage import Storage
from fixray.sweep.plan import PlannedTrial
from fixray.sweep.spec.schema import SweepSpec

RECORD_FILE = "fixray-tracking.json"  # in the sweep's storage folder
PLAN_FILE = "fixray-plan.json"  # beside it: the identity and run name of every trial the sweep's Tune state holds
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


def write_record(spec: SweepSpec, where: Storage, trials: list[PlannedTrial]) -> None:
    """Records the store, the state layout and the planned trials when a sweep first starts (a resume keeps the
    first record)."""
    if not where.exists(spec.name, RECORD_FILE):
        if trials:
            planned = {trial.identity: trial.name for trial in trials}
            where.write_text(json.dumps({"trials": planned}, indent=1) + "\n", spec.name, PLAN_FILE)
        record = {"uri": spec.tracking.uri, "experiment": spec.tracking.experiment, "layout": STATE_LAYOUT}
        where.write_text(json.dumps(record) + "\n", spec.name, RECORD_FILE)


def saved_plan(spec: SweepSpec, where: Storage) -> dict[str, str] | None:
    """Identity -> run name of the trials the sweep started with; None for a sweep not started, or started before
    plans were recorded, or by a method that draws as it runs."""
    if not where.exists(spec.name, PLAN_FILE):
        return None
    try:
        return dict(json.loads(where.read_text(spec.name, PLAN_FILE))["trials"])
    except (ValueError, KeyError, TypeError) as error:
        raise BadInput(
            f"{where.shown(spec.name, PLAN_FILE)}: unreadable ({error}); it records the sweep's trials"
        ) from None


def refuse_a_changed_plan(spec: SweepSpec, where: Storage, trials: list[PlannedTrial]) -> dict[str, str] | None:
    """A sweep whose file now plans other trials than it started with (a value, a seed, a setting added or removed;
    epochs changed) cannot continue its saved Tune state, which holds the first trials alone: BadInput saying what
    changed and the ways on, before anything starts. Resources, storage, tracking, checkpoints and the budget change
    no trial. Returns the saved plan (saved_plan) the file matches."""
    saved = saved_plan(spec, where)
    if saved is None or not trials:
        return saved
    planned = {trial.identity: trial.name for trial in trials}
    added = [name for identity, name in planned.items() if identity not in saved]
    removed = [name for identity, name in saved.items() if identity not in planned]
    if not added and not removed:
        return saved

    changes = [f"adds {len(added)} trial(s) ({_some(added)})"] if added else []
    changes += [f"drops {len(removed)} of its trial(s) ({_some(removed)})"] if removed else []
    raise BadInput(
        f"sweep {spec.name!r} in {where.shown(spec.name)} was started from a different file: this one "
        f"{' and '.join(changes)}. fixray does not yet grow or shrink a started sweep in place, and its saved state "
        f"would run the first plan alone. Pass --fresh to run this file as a new sweep beside it (a timestamped name), "
        f"or give it a new `name:`; the first sweep's runs stay in MLflow. To finish the first sweep, run its file as "
        f"it was."
    )


def _some(names: list[str]) -> str:
    """The first three names, and how many more."""
    return ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
