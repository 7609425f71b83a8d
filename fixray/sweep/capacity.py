"""Whether a trial's request can be met on the Ray it runs on, asked once Ray has started and before anything else:
a node alive now, or a node type an autoscaler may launch, that holds one worker's CPUs and GPUs. Else the sweep is
refused (exit 2) naming the request and what the cluster has, instead of queueing for ever. While the sweep runs,
trials that wait for resources (nodes an autoscaler has still to launch, slots other work holds) are named in its
live line."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray

from fixray.errors import BadInput


def _node_types() -> list[dict[str, float]] | None:
    """The resources of each node type an autoscaler may launch; [] without an autoscaler; None where that is not known
    here. Ray keeps them in its GCS when its autoscaler reports them (a private accessor reads them); else they are in
    the autoscaling config this cluster's monitor was started with (`ray up` writes it to the head as
    ~/ray_bootstrap_config.yaml), found among this machine's processes when the driver runs on the head. A monitor
    started without one (local Ray's) launches nothing."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # a Ray without that accessor
        config = None
    if config is not None and config.node_group_configs:
        return [dict(group.resources) for group in config.node_group_configs if group.max_count != 0]
    return _monitor_node_types(ray.get_runtime_context().gcs_address)


def monitor_process(gcs_address: str):
    """This cluster's monitor (its autoscaler), the one started for `gcs_address`, among this machine's processes (a
    psutil.Process); None where it runs elsewhere."""
    import psutil

    for process in psutil.process_iter(["cmdline"]):
        arguments = process.info["cmdline"] or []
        if any(a.endswith("monitor.py") for a in arguments) and f"--gcs-address={gcs_address}" in arguments:
            return process
    return None


def _monitor_node_types(gcs_address: str) -> list[dict[str, float]] | None:
    """The worker node types in the autoscaling config of this cluster's monitor (the one started for `gcs_address`);
    [] for a monitor started without one; None where no monitor of this cluster runs on this machine."""
    import yaml

    monitor = monitor_process(gcs_address)
    if monitor is None:
        return None
    given = [a.split("=", 1)[1] for a in monitor.info["cmdline"] if a.startswith("--autoscaling-config=")]
    if not given:
        return []
    try:
        config = yaml.safe_load(Path(given[0]).expanduser().read_text())  # data only
        types = config["available_node_types"]
    except (OSError, ValueError, KeyError, TypeError, yaml.YAMLError):
        return None
    return [dict(kind.get("resources") or {}) for kind in types.values() if kind.get("max_workers", 0) > 0]


def _shown(resources: dict[str, Any]) -> str:
    cpus, gpus = resources.get("CPU", 0), resources.get("GPU", 0)
    return f"{cpus:g} CPU(s) and {f'{gpus:g} GPU(s)' if gpus else 'no GPU'}"


def _need(cpus_per_trial: float, gpus_per_trial: float) -> dict[str, float]:
    return {"CPU": cpus_per_trial} | ({"GPU": gpus_per_trial} if gpus_per_trial else {})


def _slots(need: dict[str, float], has: dict[str, Any]) -> int:
    """How many workers of `need` fit in `has`."""
    return min((int(has.get(name, 0) // amount) for name, amount in need.items() if amount > 0), default=0)


@dataclass(frozen=True)
class ResourceWait:
    """Says why queued trials wait, asked by the live view: for nodes not up yet, or for slots other work holds."""

    need: dict[str, float]  # one worker of a trial
    workers: int  # DDP workers of a trial
    autoscaled: bool  # an autoscaler may launch nodes (or may: its node types are not known here)
    cap: int | None  # the sweep's max_concurrent_trials (None: as many as fit)

    def note(self, running: int, queued: int) -> str:
        """'' when nothing waits for resources (no trial queued, room for one now, or the sweep is at its cap)."""
        if not queued or (self.cap is not None and running >= self.cap):
            return ""
        if _slots(self.need, ray.available_resources()) >= self.workers:
            return ""  # room now: Tune starts one at its next step
        nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
        may_launch = "; the autoscaler may launch nodes for them" if self.autoscaled else ""
        if not any(_slots(self.need, has) for has in nodes):
            return f"queued trials wait for a node with {_shown(self.need)}: none is up now{may_launch}"
        if running * self.workers < sum(_slots(self.need, has) for has in nodes):
            return f"queued trials wait for slots other work on the cluster holds{may_launch}"
        return "queued trials wait for nodes the autoscaler may launch" if self.autoscaled else ""


def refuse_unmeetable(
    cpus_per_trial: float, gpus_per_trial: float, workers: int, file: str, cap: int | None = None
) -> ResourceWait:
    """BadInput when no node alive and no node type an autoscaler may launch holds one worker of a trial; else what the
    live view asks while trials wait."""
    need = _need(cpus_per_trial, gpus_per_trial)
    nodes = [node["Resources"] for node in ray.nodes() if node.get("Alive")]
    types = _node_types()
    wait = ResourceWait(need, workers, autoscaled=types != [], cap=cap)
    if types is None:  # a cluster whose monitor is not on this machine: an autoscaler there may launch one that fits
        if not any(_slots(need, has) for has in nodes):
            print("  no node holds one trial's request now; this cluster's autoscaler may launch one", flush=True)
        return wait
    if any(_slots(need, has) for has in nodes + types):
        return wait
    asked = f"{gpus_per_trial:g} GPU(s) and {cpus_per_trial:g} CPU(s)"
    has = "; ".join(_shown(n) for n in nodes) or "no node"
    offered = f"; its autoscaler launches node types of {'; '.join(_shown(t) for t in types)}" if types else ""
    here = "this machine (local Ray)" if len(nodes) == 1 and not types else "this cluster's nodes"
    raise BadInput(
        f"each trial asks for {asked}{' per DDP worker' if workers > 1 else ''} (resources: in {file}), and no node "
        f"can give that: {here} {'has' if len(nodes) == 1 else 'have'} {has}{offered}. Run it here with "
        f"`--gpus-per-trial 0 --cpus-per-trial 1` (the trials train on the CPU), or submit it to a cluster whose "
        f"nodes have GPUs (docs/cluster.md)."
    )
