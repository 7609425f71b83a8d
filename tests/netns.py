"""Nodes with networks of their own on this one machine: a bridge made here with this machine's address on it, and
one network namespace per node joined to it by a veth link, so a node's link can be cut and restored as a switch port
goes dark. Everything stays on this machine (a private 10/8 subnet no packet leaves), and every namespace, link and
process in them is removed on close, even after a failed test. Processes in a namespace share this machine's disks:
a sweep's storage folder is what NFS would be on a real cluster."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

IP = "/usr/sbin/ip"
RAY = str(Path(sys.executable).with_name("ray"))
GCS_PORT = 6380  # the head's GCS, inside its own namespace
# Where `ray start --head` leaves its address for a plain `ray.init()` on this machine to join (Ray's default temp
# folder on Linux; namespaces share it).
RAY_ADDRESS_FILE = Path("/tmp/ray/ray_current_cluster")
NODE_RESOURCE = "fxnode"  # each node's own custom resource (fxnode0 on the head): `ray status` names it so
# Ray declares a node dead after 5 missed health checks 1 s apart (its default: 30 s); a raylet cut off from the GCS
# gives up after 300 s (its default: 60 s), so a node cut off for less keeps its processes running, however long
# its trials' retries wait for a slot elsewhere.
NODE_TIMEOUT = {
    "RAY_health_check_period_ms": "1000",
    "RAY_health_check_timeout_ms": "1000",
    "RAY_health_check_failure_threshold": "5",
    "RAY_gcs_rpc_server_reconnect_timeout_s": "300",
}


def available() -> str | None:
    """Why nodes cannot be made here (None: they can): root and iproute2."""
    if os.geteuid() != 0:
        return "network namespaces, links and bridges need root"
    if not Path(IP).exists():
        return "iproute2 is not installed (scripts/ensure-iproute2 installs it)"
    return None


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run([IP, *args], check=check, capture_output=True, text=True)


class Network:
    """A bridge at 10.213.X.1 (X and the names from this process's id: two runs at once share them only by chance, and
    then the second fails at once, touching nothing of the first's) and `count` namespaces at .2, .3, ...: `run`
    starts a command inside one, `cut` and `restore` take its link down and up."""

    def __init__(self, count: int) -> None:
        tag = os.getpid() % 10000
        self.prefix = f"fx{tag}"  # every name made here starts with it (interface names: at most 15 characters)
        subnet = f"10.213.{tag % 250}"
        self.host = f"{subnet}.1"
        self.bridge = f"{self.prefix}br"
        self.names = [f"{self.prefix}n{i}" for i in range(count)]
        self.addresses = [f"{subnet}.{i + 2}" for i in range(count)]
        self.processes: list[subprocess.Popen] = []
        self.made: list[str] = []  # the namespaces made so far: close removes these alone
        _ip("link", "add", self.bridge, "type", "bridge")  # fails on a name taken, before anything is made
        try:
            _ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            _ip("link", "set", self.bridge, "up")
            for name, address in zip(self.names, self.addresses, strict=True):
                _ip("netns", "add", name)
                self.made.append(name)
                _ip("link", "add", self._port(name), "type", "veth", "peer", "name", "eth0", "netns", name)
                _ip("link", "set", self._port(name), "master", self.bridge, "up")
                _ip("-n", name, "addr", "add", f"{address}/24", "dev", "eth0")
                _ip("-n", name, "link", "set", "eth0", "up")
                _ip("-n", name, "link", "set", "lo", "up")
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _port(name: str) -> str:
        """The bridge's end of a namespace's veth link."""
        return f"{name}p"

    def run(self, node: int, command: list[str], log: Path, env: dict[str, str], cwd: Path | None = None):
        """A command inside a node's namespace, its output to `log`: a Popen."""
        with open(log, "a") as out:
            process = subprocess.Popen(
                [IP, "netns", "exec", self.names[node], *command],
                cwd=cwd,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.processes.append(process)
        return process

    def cut(self, node: int) -> None:
        _ip("link", "set", self._port(self.names[node]), "down")

    def restore(self, node: int) -> None:
        _ip("link", "set", self._port(self.names[node]), "up")

    def pids(self, node: int) -> list[int]:
        """Every process inside a node's namespace."""
        found = _ip("netns", "pids", self.names[node], check=False).stdout.split()
        return [int(pid) for pid in found]

    def kill(self, node: int) -> None:
        """Every process inside a node's namespace dies at once, as at a power cut."""
        for _ in range(100):
            for process in self.processes:
                process.poll()  # a started command that died is reaped, not left a zombie in the namespace
            pids = self.pids(node)
            if not pids:
                return
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            time.sleep(0.1)
        raise RuntimeError(f"processes in {self.names[node]} outlived SIGKILL: {self.pids(node)}")

    def close(self) -> None:
        """Kills every process in the namespaces, then removes them (and their links) and the bridge."""
        for node in range(len(self.made)):
            self.kill(node)
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        for name in self.made:
            _ip("link", "del", self._port(name), check=False)  # a veth link's two ends go together
            _ip("netns", "del", name, check=False)
        _ip("link", "del", self.bridge, check=False)


class RayNodes:
    """A Ray cluster on a Network, started as `ray up` would: the head in namespace 0 with no CPUs (it runs the
    driver), a worker of `cpus` CPUs in each other namespace; any node can die and be started again at its address."""

    def __init__(self, network: Network, folder: Path, cpus: int = 2) -> None:
        self.network, self.folder, self.cpus = network, folder, cpus
        self.address = f"{network.addresses[0]}:{GCS_PORT}"
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled", **NODE_TIMEOUT}

    def start_all(self) -> None:
        for node in range(len(self.network.names)):
            self.start(node)

    def start(self, node: int) -> None:
        """Starts a node's Ray and waits until the cluster counts it (each node starts once the one before joined:
        two starting at once on two cores can time out). A custom resource names each node in `ray status`."""
        if node == 0:
            start = [RAY, "start", "--head", f"--port={GCS_PORT}", "--num-cpus=0", "--include-dashboard=false"]
        else:
            start = [RAY, "start", f"--address={self.address}", f"--num-cpus={self.cpus}"]
        start += [f"--node-ip-address={self.network.addresses[node]}", f'--resources={{"{NODE_RESOURCE}{node}": 1}}']
        self.network.run(node, start + ["--block", "--disable-usage-stats"], self.folder / f"node{node}.log", self.env)
        self._wait(lambda: node in self.alive(), f"node {node} did not join: see {self.folder / f'node{node}.log'}")

    def kill(self, node: int) -> None:
        """A node's machine dies whole (every process in it at once); returns once the cluster no longer counts it (the
        head's loss ends the cluster's count itself)."""
        self.network.kill(node)
        if node != 0:
            self._wait(lambda: node not in self.alive(), f"node {node} is still counted alive")

    @staticmethod
    def _wait(done, failure: str, within_s: float = 180) -> None:
        deadline = time.monotonic() + within_s
        while not done():
            if time.monotonic() > deadline:
                raise RuntimeError(failure)
            time.sleep(0.5)

    def alive(self) -> set[int]:
        """The nodes the cluster counts alive, by `ray status` on the head (none while its GCS does not answer)."""
        log = self.folder / "status.log"
        log.unlink(missing_ok=True)
        status = self.network.run(0, [RAY, "status", f"--address={self.address}"], log, self.env)
        try:
            status.wait(timeout=60)
        except subprocess.TimeoutExpired:
            status.kill()
            return set()
        text = log.read_text()
        totals = text[text.find("Total Usage:") : text.find("From request_resources")]
        return {int(n) for n in re.findall(rf"/1\.0 {NODE_RESOURCE}(\d+)", totals)}

    def driver(self, command: list[str], log: Path, cwd: Path) -> subprocess.Popen:
        """A command on the head (a sweep's driver), in a session of its own."""
        return self.network.run(0, command, log, self.env, cwd=cwd)

    def close(self) -> None:
        """Kills every node, and removes the address its head left for a plain `ray.init()` on this machine to join
        (`ray stop` would, a killed head does not): a later local sweep would try the dead cluster's."""
        self.network.close()
        if RAY_ADDRESS_FILE.exists() and RAY_ADDRESS_FILE.read_text().strip() == self.address:
            RAY_ADDRESS_FILE.unlink()


def leftovers() -> list[str]:
    """Namespaces and links made by Network that still exist (none after every close)."""
    namespaces = _ip("netns", "list", check=False).stdout.split("\n")
    links = _ip("-o", "link", "show", check=False).stdout.split("\n")
    mine = [line.split()[0] for line in namespaces if line.startswith("fx")]
    mine += [line.split(":")[1].strip().split("@")[0] for line in links if line.count(":") > 1 and ": fx" in line]
    return mine
