"""`fixray status`: the sweeps a tracking store holds, each with what became of its trials and when it last ran, read
from MLflow alone, so any machine that reaches the store (on a cluster: the head's server) can ask."""

from __future__ import annotations

import time
from collections import Counter

from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

from fixray.faults import Outcome
from fixray.records.encoding import quoted
from fixray.records.render import Paragraph, Report, Table
from fixray.records.runs import PROGRESS_TAG, ROLE_TAG, SWEEP_TAG, in_file, outcome, search_all
from fixray.records.store import reading_client

RUNNING = "running"  # a trial run without a status that MLflow holds as RUNNING: its trial is training now
COLUMNS = (Outcome.FINISHED, RUNNING, Outcome.ERROR, Outcome.DIVERGED, Outcome.STOPPED_EARLY, Outcome.NOT_RUN)


def _state(child) -> str:
    """What a trial's run says of it: its outcome, or running while it has none and MLflow has it running."""
    found = outcome(child)
    return RUNNING if found == Outcome.UNFINISHED and child.info.status == "RUNNING" else found


def status_report(tracking_uri: str, experiment: str, sweep: str | None = None) -> Report:
    """One row per sweep (or the one named): the trials its file plans by state, its earlier runs the file no longer
    plans, whether its parent run is open (a driver runs it, or died: the same command resumes it), when it last ran;
    and each running sweep's live status line."""
    client = reading_client(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    if found is None:
        raise LookupError(f"no MLflow experiment {experiment!r} in {tracking_uri}")
    ids = [found.experiment_id]
    where = f"tags.`{ROLE_TAG}` = 'sweep'" + (f" and tags.`{SWEEP_TAG}` = {quoted(sweep)}" if sweep else "")
    parents = search_all(client, ids, where, order_by=["attributes.start_time DESC"])
    if sweep and not parents:
        raise LookupError(f"no sweep named {sweep!r} in MLflow experiment {experiment!r} ({tracking_uri})")
    rows, live = [], []
    for parent in parents:
        every = search_all(client, ids, f"tags.`{MLFLOW_PARENT_RUN_ID}` = {quoted(parent.info.run_id)}")
        children = [child for child in every if in_file(child)]
        states = Counter(_state(child) for child in children)
        last = max([parent.info.end_time or 0, parent.info.start_time or 0] + [c.info.end_time or 0 for c in children])
        open_now = "open (running, or its driver died)" if parent.info.status == "RUNNING" else parent.info.status
        if parent.info.status == "RUNNING" and PROGRESS_TAG in parent.data.tags:
            live.append(f"{parent.data.tags[SWEEP_TAG]}: {parent.data.tags[PROGRESS_TAG]}")
        rows.append(
            [
                parent.data.tags[SWEEP_TAG],
                str(len(children)),
                *(str(states[c]) for c in COLUMNS),
                str(states[Outcome.UNFINISHED]),
                str(len(every) - len(children)),
                open_now,
                time.strftime("%Y-%m-%d %H:%M", time.localtime(last / 1000)),
            ]
        )
    header = [
        "sweep",
        "trials",
        *(str(c).replace("_", " ") for c in COLUMNS),
        "unfinished",
        "not in file",
        "parent run",
        "last ran",
    ]
    table = Table(f"Sweeps in MLflow experiment {experiment}", header, rows, empty="(no sweep yet)")
    said = [Paragraph("Running now (each driver's status line, copied every few seconds)", "\n".join(live))]
    return Report([table, *(said if live else [])])
