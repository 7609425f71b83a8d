"""The chaos benchmark's comparison (benchmarks/chaos.py), on constructed histories: each way a chaos run can differ
from the clean one is counted, and only an equal record counts nothing."""

import math

import pytest
from conftest import benchmark

chaos = benchmark("chaos")  # its comparison of a sweep's record with a clean run's

EPOCHS = 3


def _run(status: str = "finished", steps=(1, 2, 3), acc: float = 0.5) -> dict:
    return {"status": status, "train/loss": [(s, 1.0 / s) for s in steps], "val/acc": [(s, acc) for s in steps]}


CLEAN = {"a": [_run()], "b": [_run(acc=math.nan)]}
WEIGHTS = {"a": "sha-a", "b": "sha-b"}


@pytest.mark.parametrize(
    "chaos_runs,weights,counted",
    [
        ({"a": [_run()], "b": [_run(acc=math.nan)]}, WEIGHTS, {}),  # equal, NaN equal to NaN
        ({"b": [_run(acc=math.nan)]}, WEIGHTS, {"lost": 1}),  # no run at all
        ({"a": [_run(steps=(1, 3))], "b": [_run(acc=math.nan)]}, WEIGHTS, {"lost": 1}),  # an epoch missing
        ({"a": [_run(), _run()], "b": [_run(acc=math.nan)]}, WEIGHTS, {"duplicated": 1}),  # two runs
        ({"a": [_run(steps=(1, 2, 2, 3))], "b": [_run(acc=math.nan)]}, WEIGHTS, {"duplicated": 1}),  # twice
        ({"a": [_run(status="error")], "b": [_run(acc=math.nan)]}, WEIGHTS, {"not_finished": 1}),  # its one run failed
        ({"a": [_run(acc=0.6)], "b": [_run(acc=math.nan)]}, WEIGHTS, {"differing": 1}),  # a metric differs
        ({"a": [_run()], "b": [_run(acc=0.5)]}, WEIGHTS, {"differing": 1}),  # a NaN that became a number
        ({"a": [_run()], "b": [_run(acc=math.nan)]}, WEIGHTS | {"a": "other"}, {"differing": 1}),  # final weights
    ],
)
def test_each_way_a_chaos_run_can_differ_is_counted(chaos_runs, weights, counted):
    found = chaos.compare(CLEAN, chaos_runs, WEIGHTS, weights, EPOCHS)
    assert found == {"lost": 0, "duplicated": 0, "not_finished": 0, "differing": 0} | counted
