"""Three "machines" on this one, for `ray up` with Ray's local provider: an SSH server at each of 127.0.0.1, .2 and
.3 (the whole 127/8 range is this machine's loopback), each in its own PID and mount namespaces, so each has its own
processes (`ray stop` on one leaves the others running), its own /tmp (Ray's session files) and its own home (what
`ray up` syncs and writes), and shares the network, as machines on one LAN do. Each home holds a Python
environment with fixray's dependencies, as a prepared lab machine has; fixray itself is installed there by the
cluster file's own setup command."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_OPTIONS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
NODE_PYTHON = "/root/venv/bin/python"  # inside a machine, whose home is /root
SSHD_CONFIG = """\
Port 22
ListenAddress {ip}
HostKey /root/.sshd/host_key
PidFile none
UsePAM no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
StrictModes no
AuthorizedKeysFile /root/.ssh/authorized_keys
"""
# The console scripts a machine's Python environment would have: Ray's and MLflow's, run by that environment.
SCRIPTS = {"ray": "from ray.scripts.scripts import main", "mlflow": "from mlflow.cli import cli as main"}


def available() -> str | None:
    """Why machines cannot be made here (None: they can): sshd, rsync, root, namespaces."""
    if not SSHD.exists() or shutil.which("rsync") is None:
        return "openssh-server and rsync are not installed (scripts/ensure-ssh installs them)"
    if os.geteuid() != 0:
        return "making machines needs root (namespaces, bind mounts, sshd)"
    return None


@dataclass
class Machine:
    ip: str
    folder: Path  # its home is folder/home, its /tmp folder/tmp
    server: subprocess.Popen | None = None

    @property
    def home(self) -> Path:
        return self.folder / "home"


class Machines:
    """SSH-reachable machines at 127.0.0.1..n, torn down (every process in them) on close."""

    def __init__(self, root: Path, count: int = 3) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        self.key = root / "client_key"
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(self.key)], check=True)
        self.machines = [Machine(f"127.0.0.{n}", root / f"machine{n}") for n in range(1, count + 1)]
        self._bring_up(self.machines)

    def _bring_up(self, machines: list[Machine]) -> None:
        base = Path(sys.base_prefix).resolve()
        for machine in machines:
            self._prepare(machine, base)
        for machine in machines:
            machine.server = self._serve(machine, base)
        deadline = time.monotonic() + 30
        while not all(self.ssh(m.ip, "true", check=False).returncode == 0 for m in machines):
            assert time.monotonic() < deadline, "the machines' SSH servers did not start"
            time.sleep(0.2)
        for machine in machines:
            self._python(machine)

    def replace(self, machine: Machine) -> None:
        """The machine dies whole (every process in it at once, as at a power cut) and a new one with an empty disk
        takes its address: a fresh home and /tmp, its Python environment prepared, nothing of the old one's."""
        self._kill(machine)
        shutil.rmtree(machine.folder)
        self._bring_up([machine])

    def _prepare(self, machine: Machine, base: Path) -> None:
        (machine.home / ".ssh").mkdir(parents=True)
        (machine.home / ".sshd").mkdir()
        (machine.folder / "tmp").mkdir()
        (machine.folder / "tmp").chmod(0o1777)
        shutil.copy(self.key.with_suffix(".pub"), machine.home / ".ssh" / "authorized_keys")
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(machine.home / ".sshd" / "host_key")], check=True
        )
        (machine.home / ".sshd" / "config").write_text(SSHD_CONFIG.format(ip=machine.ip))
        for _, inside in self._hidden(machine, base):  # made before the machine's own home and /tmp hide them
            inside.mkdir(parents=True)
        # Login shells (how `ray up` runs commands) find the machine's Python environment first.
        (machine.home / ".profile").write_text("export PATH=/root/venv/bin:$PATH\n[ -f ~/.bashrc ] && . ~/.bashrc\n")

    @staticmethod
    def _hidden(machine: Machine, base: Path) -> list[tuple[Path, Path]]:
        """This machine's Python and the packages its environment shares, where the machine's own home and /tmp would
        hide them (a checkout cloned under /tmp): each with the place in the machine's folders it is mounted at."""
        shared = Path(sysconfig.get_paths()["purelib"]).resolve()
        found = []
        for path in dict.fromkeys([base, shared]):
            if path.is_relative_to("/root"):
                found.append((path, machine.home / path.relative_to("/root")))
            elif path.is_relative_to("/tmp"):
                found.append((path, machine.folder / "tmp" / path.relative_to("/tmp")))
        return found

    def _serve(self, machine: Machine, base: Path) -> subprocess.Popen:
        Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation folder
        mounts = [f"mount --bind {outside} {inside}" for outside, inside in self._hidden(machine, base)]
        mounts += [f"mount --rbind {machine.home} /root", f"mount --rbind {machine.folder / 'tmp'} /tmp"]
        script = " && ".join(mounts + [f"exec {SSHD} -D -e -f /root/.sshd/config"])
        log = open(machine.folder / "sshd.log", "w")
        return subprocess.Popen(
            ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--mount", "--propagation", "private"]
            + ["bash", "-c", script],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def _python(self, machine: Machine) -> None:
        """A virtual environment that sees this one's packages (a .pth line: fixray's own editable install is not
        among them), with Ray's and MLflow's commands."""
        shared = sysconfig.get_paths()["purelib"]
        scripts = "".join(
            f"printf '#!{NODE_PYTHON}\\nimport sys\\n{line}\\nsys.exit(main())\\n' > /root/venv/bin/{name} && "
            f"chmod +x /root/venv/bin/{name} && "
            for name, line in SCRIPTS.items()
        )
        self.ssh(
            machine.ip,
            f"{Path(sys.base_prefix).resolve() / 'bin' / 'python3'} -m venv /root/venv && "
            f"echo {shared} > /root/venv/lib/python3.{sys.version_info.minor}/site-packages/shared.pth && "
            f"{scripts}true",
        )

    def ssh(self, ip: str, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """Runs a command on a machine through a login shell, as `ray up` does."""
        return subprocess.run(
            ["ssh", "-i", str(self.key), *SSH_OPTIONS, f"root@{ip}", f"bash --login -c {quote(command)}"],
            capture_output=True,
            text=True,
            check=check,
            timeout=timeout,
        )

    @staticmethod
    def _kill(machine: Machine) -> None:
        """Killing a PID namespace's first process ends every process in it."""
        if machine.server is not None and machine.server.poll() is None:
            machine.server.kill()
            machine.server.wait(timeout=30)

    def close(self) -> None:
        for machine in self.machines:
            self._kill(machine)


def quote(command: str) -> str:
    import shlex

    return shlex.quote(command)
