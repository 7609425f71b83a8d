"""`fixray report` of a store nothing has written to since prints the report it printed then, without importing
MLflow; any write to the store (a run's tag, a metric) makes it read the store anew."""

import subprocess
import sys

from test_answer import _dot, _run, _spec

from fixray.crossing import metric_keys as keys
from fixray.records.runs import SweepRuns

REPORT = (
    "import sys; from fixray.cli import main; code = main(['report', 'cached', '--tracking-uri', '{uri}', {form}]); "
    "print('mlflow imported:', 'mlflow' in sys.modules, file=sys.stderr); sys.exit(code)"
)


def _report(uri: str, form: str = "'--format', 'markdown'") -> subprocess.CompletedProcess:
    code = REPORT.format(uri=uri, form=form)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


def test_a_report_of_an_unchanged_store_is_printed_again_without_mlflow_and_read_anew_after_any_write(tmp_path):
    uri = f"sqlite:///{tmp_path / 'cache.db'}"
    runs, spec = SweepRuns(uri, "fixray", "cached"), _spec(tmp_path)
    _run(runs, spec, _dot("small_cnn", True, 0.1, 0), "finished", {keys.VAL_ACC: [0.91, 0.93]})
    _run(runs, spec, _dot("small_cnn", False, 0.1, 0), "finished", {keys.VAL_ACC: [0.90, 0.92]})
    first, again = _report(uri), _report(uri)
    assert first.returncode == 0 == again.returncode, first.stderr + again.stderr
    assert "mlflow imported: True" in first.stderr and "mlflow imported: False" in again.stderr
    assert again.stdout == first.stdout and "| dot | fixed |" in first.stdout
    as_json = _report(uri, "'--format', 'json'")  # another question: read anew
    assert "mlflow imported: True" in as_json.stderr and as_json.stdout.startswith("{")

    _run(runs, spec, _dot("small_cnn", True, 0.01, 0), "finished", {keys.VAL_ACC: [0.50, 0.60]})  # a write
    changed = _report(uri)
    assert "mlflow imported: True" in changed.stderr and changed.stdout != first.stdout
    assert "| dot | fixed | none | 0.01 |" in changed.stdout
