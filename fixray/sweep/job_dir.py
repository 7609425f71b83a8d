"""A sweep submitted as a Ray job runs in the job's working directory, a temporary copy of the submitter's folder that
goes with the Ray session: a store given as a relative path there (sqlite:///mlflow.db, fixray-runs) would be written
where nobody finds it again. Refused before anything starts, with where to write instead."""

from __future__ import annotations

import json
import os
from pathlib import Path

from fixray.errors import BadInput
from fixray.records.location import local_store_path
from fixray.storage import is_uri
from fixray.sweep.spec.schema import SweepSpec

JOB_CONFIG_VARIABLE = "RAY_JOB_CONFIG_JSON_ENV_VAR"  # what Ray's job supervisor gives a job's driver: its runtime env


def job_working_dir() -> str | None:
    """The working directory a Ray job's runtime env copied for this driver; None outside a job, or a job run in
    place (no working_dir)."""
    try:
        config = json.loads(os.environ.get(JOB_CONFIG_VARIABLE, "{}"))
    except ValueError:
        return None
    working_dir = (config.get("runtime_env") or {}).get("working_dir") if isinstance(config, dict) else None
    return working_dir if isinstance(working_dir, str) else None


def refuse_a_temporary_store(spec: SweepSpec, file: str) -> None:
    """BadInput when a job's driver would write its MLflow store or its trials' storage to a relative path."""
    if job_working_dir() is None:
        return
    store = local_store_path(spec.tracking.uri)
    temporary = []
    if store is not None and not store.is_absolute():
        temporary.append(f"tracking.uri {spec.tracking.uri}")
    if not is_uri(spec.storage_path) and not Path(spec.storage_path).is_absolute():
        temporary.append(f"storage_path {spec.storage_path}")
    if temporary:
        raise BadInput(
            f"{' and '.join(temporary)} of {file} would be written into this Ray job's working directory "
            f"({Path.cwd()}), a temporary copy that goes with the Ray session. Leave `tracking.uri` and "
            f"`storage_path` out of the file: on a cluster's head, $MLFLOW_TRACKING_URI (its MLflow server) and "
            f"$FIXRAY_STORAGE are used; or name a server, a bucket or an absolute path."
        )
