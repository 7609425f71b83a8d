"""PendingWrites keeps MLflow writes in order while the store is away: on disk (a new driver replays them),
retried with backoff, raised at once when the store rejects a write instead of being away."""

import json

import pytest
from mlflow.exceptions import MlflowException
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

from fixray.records import outage as pending
from fixray.records.outage import RETRIED, PendingWrites


class Store:
    """Applies writes in a list, or raises what a store that is away raises."""

    def __init__(self) -> None:
        self.away, self.applied = False, []

    def apply(self, write: dict) -> None:
        if self.away:
            raise MlflowException("API request failed: Max retries exceeded (Connection refused)")
        self.applied.append(write["n"])


def test_writes_wait_in_order_on_disk_and_a_new_driver_replays_them(tmp_path, monkeypatch):
    monkeypatch.setattr(pending, "FIRST_BACKOFF_S", 0.0)
    store, spool = Store(), tmp_path / "spool.jsonl"
    writes = PendingWrites(spool, store.apply)
    writes.submit({"n": 1})
    store.away = True
    for n in (2, 3, 4):
        writes.submit({"n": n})
    assert store.applied == [1] and len(writes) == 3
    on_disk = [json.loads(line) for line in spool.read_text().splitlines()]
    assert [w["n"] for w in on_disk] == [2, 3, 4] and all(w[RETRIED] for w in on_disk[:1])

    store.away = False  # the server is back, but this driver died: the next one replays the spool
    again = PendingWrites(spool, store.apply)
    assert len(again) == 3 and again.flush(wait=True)
    assert store.applied == [1, 2, 3, 4] and not spool.exists()


def test_backoff_doubles_and_a_flush_waits_for_it(tmp_path):
    store = Store()
    store.away = True
    writes = PendingWrites(tmp_path / "spool.jsonl", store.apply)
    writes.submit({"n": 1})
    assert writes.backoff == 2 * pending.FIRST_BACKOFF_S
    store.away = False
    assert not writes.flush()  # the backoff has not passed: no request is sent
    assert writes.flush(wait=True) and store.applied == [1]


def test_a_write_the_store_rejects_is_raised_not_queued(tmp_path):
    def reject(write):
        raise MlflowException("bad metric", error_code=INVALID_PARAMETER_VALUE)

    with pytest.raises(MlflowException, match="bad metric"):
        PendingWrites(tmp_path / "spool.jsonl", reject).submit({"n": 1})
    assert not (tmp_path / "spool.jsonl").exists()
