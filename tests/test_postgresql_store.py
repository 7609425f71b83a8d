"""fixray's store handling on a real PostgreSQL server (tests/postgres.py): a reader never creates a store in an empty
database, a server that is down at the start is named at once (never MLflow's hour of retries), a password is never
printed. The creation race, the outage spool and a killed sweep's resume run against it in test_faults,
test_mlflow_outage and test_sweep_e2e."""

import sqlalchemy
from conftest import GOOD_SWEEP

from fixray.cli import main
from fixray.errors import EXIT_UNAVAILABLE
from fixray.records.store import SERVER_STORE_VARIABLE, store_on_the_head


def _tables(uri: str) -> list[str]:
    engine = sqlalchemy.create_engine(uri)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


def test_a_reader_of_an_empty_database_is_refused_and_creates_nothing(postgresql, capsys):
    uri = postgresql.create_database("empty")
    assert main(["status", "--tracking-uri", uri]) == 2
    assert "the database holds no MLflow tables" in capsys.readouterr().err
    assert _tables(uri) == []


def test_a_database_server_that_is_down_at_the_start_is_named_at_once(postgresql, tmp_path, monkeypatch, capsys):
    uri = postgresql.create_database("mlflow").replace("postgres@", "postgres:secret@")
    postgresql.stop()
    monkeypatch.chdir(tmp_path)
    (tmp_path / "s.yaml").write_text(GOOD_SWEEP)
    assert main(["sweep", "s.yaml", "--tracking-uri", uri]) == EXIT_UNAVAILABLE
    message = capsys.readouterr().err
    assert "does not answer" in message and "Connection refused" in message
    assert "secret" not in message and "postgres:***@" in message
    assert main(["status", "--tracking-uri", uri]) == EXIT_UNAVAILABLE
    assert not (tmp_path / "fixray-runs").exists()


def test_a_sweep_on_a_head_whose_mlflow_keeps_sqlite_on_its_disk_is_warned(monkeypatch):
    head = "http://127.0.0.1:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", head)
    monkeypatch.setenv(SERVER_STORE_VARIABLE, "sqlite")  # what scripts/cluster-node exports on such a head
    assert "if the head machine dies, every result" in store_on_the_head(head)
    assert store_on_the_head("sqlite:////data/mine.db") == ""  # a store the user named: not the head's server
    monkeypatch.setenv(SERVER_STORE_VARIABLE, "postgresql")
    assert store_on_the_head(head) == ""
