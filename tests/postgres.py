"""A real PostgreSQL server for the store tests: Debian's `postgresql` package (scripts/ensure-postgresql installs it),
a cluster of its own in a fresh folder, listening on 127.0.0.1 at a free port, stopped and removed at the end. Run as
the `postgres` user when the tests run as root (PostgreSQL refuses root)."""

import contextlib
import os
import pwd
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest
from conftest import free_port

HOW_TO_RUN = "needs PostgreSQL's server (initdb, pg_ctl): run scripts/ensure-postgresql"


def _binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on PATH, or Debian's versioned folder (not on PATH there)."""
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: int(p.parts[-3]))
    return versions[-1].parent if versions else None


class PostgresServer:
    """One PostgreSQL server; stop() and start() it to make the store go away and come back."""

    def __init__(self, folder: Path, binaries: Path) -> None:
        self.folder, self.binaries, self.port = folder, binaries, free_port()
        self.data = folder / "data"
        root = os.geteuid() == 0
        self.user = pwd.getpwnam("postgres") if root else None
        if self.user:
            os.chown(folder, self.user.pw_uid, self.user.pw_gid)
        self._as_server(["initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync"])

    def _as_server(self, command: list[str]) -> None:
        user = {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []} if self.user else {}
        subprocess.run(
            [str(self.binaries / command[0]), *command[1:]],
            check=True,
            capture_output=True,
            timeout=120,
            cwd=self.folder,
            env={"PATH": os.environ["PATH"], "LC_ALL": "C.UTF-8"},
            **user,
        )

    def uri(self, database: str) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-h 127.0.0.1 -p {self.port} -k {self.folder} -F"  # -F: no fsync, a test's data
        log = str(self.folder / "server.log")
        self._as_server(["pg_ctl", "-D", str(self.data), "-w", "-l", log, "-o", options, "start"])

    def stop(self) -> None:
        self._as_server(["pg_ctl", "-D", str(self.data), "-m", "immediate", "stop"])

    def create_database(self, name: str) -> str:
        self._as_server(["createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name])
        return self.uri(name)


@contextlib.contextmanager
def postgresql_server():
    """A started server; skipped where PostgreSQL is missing (failed in CI, which installs it)."""
    binaries = _binaries()
    if binaries is None:
        if os.environ.get("CI"):
            pytest.fail(f"the PostgreSQL store tests {HOW_TO_RUN}")
        pytest.skip(f"PostgreSQL store tests {HOW_TO_RUN}")
    folder = Path(tempfile.mkdtemp(prefix="fixray-postgresql-"))  # not under tmp_path: the server's user reads it
    server = PostgresServer(folder, binaries)
    server.start()
    try:
        yield server
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.stop()
        shutil.rmtree(folder, ignore_errors=True)
