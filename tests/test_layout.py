"""The house rules, read from the code's own imports (AST): each room's files run in one kind of process, and the
line between the sweep driver and a trial is crossed by the settled config alone.

- trial/ (runs in a trial process on a GPU node) imports none of the driver's rooms (sweep/, records/, data/, the
  CLI), nor mlflow, pydantic or yaml, not even through another fixray module;
- crossing/ (what crosses to a trial: the contract, head-kind declarations, metric keys, the image arrays; read on
  both sides) imports no torch and no other room, so the driver and `fixray report` read it without loading torch;
  records/ loads no torch at all;
- data/ (read in the driver) imports neither sweep/ nor records/; no module imports another that imports it back.
"""

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "fixray"
DRIVER_ROOMS = ("fixray.sweep", "fixray.records", "fixray.data", "fixray.cli")
NOT_IN_A_TRIAL = ("mlflow", "pydantic", "yaml")
ROOMS_OF_A_SIDE = ("fixray.trial", *DRIVER_ROOMS)


def _name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _imports(module: str) -> set[str]:
    """Every module a file imports, at its top or inside a function (`from a import b` counts a.b when a.b is
    a module of fixray, else a)."""
    found = set()
    for node in ast.walk(ast.parse(MODULES[module].read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES}
    return found


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


def _reached(module: str) -> set[str]:
    """Every module `module` imports, directly or through fixray's own modules (their packages' __init__ too)."""
    seen, todo = set(), [module]
    while todo:
        current = todo.pop()
        for imported in _imports(current):
            parents = [".".join(imported.split(".")[:i]) for i in range(1, imported.count(".") + 1)]
            for found in [imported, *parents]:
                if found not in seen:
                    seen.add(found)
                    if found in MODULES:
                        todo.append(found)
    return seen


TRIAL_SIDE = [m for m in MODULES if _within(m, "fixray.trial")]


def test_the_rooms_are_the_five_and_each_says_where_it_runs():
    rooms = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    assert rooms == {"trial", "crossing", "data", "sweep", "records"}
    for room in rooms:
        said = ast.get_docstring(ast.parse((PACKAGE / room / "__init__.py").read_text()))
        assert said.startswith(("Runs in the sweep driver", "Runs inside a trial process", "Runs on both sides")), room
    assert {p.name for p in PACKAGE.glob("*.py")} == {
        "__init__.py",
        "__main__.py",
        "cli.py",
        "api.py",  # the command line's Python counterpart: the two front doors
        "storage.py",
        "errors.py",
        "faults.py",
    }


@pytest.mark.parametrize("module", TRIAL_SIDE)
def test_the_trial_side_reaches_no_driver_room_nor_mlflow_pydantic_or_yaml(module):
    reached = _reached(module)
    wrong = {m for m in reached for room in DRIVER_ROOMS + NOT_IN_A_TRIAL if _within(m, room)}
    assert not wrong, f"{module} reaches {sorted(wrong)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _within(m, "fixray.crossing")])
def test_what_crosses_to_a_trial_imports_no_torch_and_no_room_of_either_side(module):
    wrong = {m for m in _reached(module) for room in ("torch", *ROOMS_OF_A_SIDE, *NOT_IN_A_TRIAL) if _within(m, room)}
    assert not wrong, f"{module} reaches {sorted(wrong)}"


@pytest.mark.parametrize("module", [m for m in MODULES if _within(m, "fixray.records")])
def test_the_records_load_no_torch(module):
    assert not {m for m in _reached(module) if _within(m, "torch")}, module


@pytest.mark.parametrize("module", [m for m in MODULES if _within(m, "fixray.data")])
def test_the_data_room_imports_no_driver_room_above_it(module):
    assert not {m for m in _reached(module) if _within(m, "fixray.sweep") or _within(m, "fixray.records")}


def test_no_module_imports_one_that_imports_it_back():
    cycles = [m for m in MODULES if m in _reached(m) and not m.endswith("__main__")]
    assert not cycles, cycles


def test_fixray_report_runs_without_loading_torch():
    """The rule above, as it holds in a real process: the report's modules and the CLI import no torch."""
    modules = "fixray.cli, fixray.records.answer, fixray.records.paper, fixray.records.html, fixray.sweep.defaults"
    assert _loaded(modules, ("torch",)) == []


def _loaded(modules: str, heavy: tuple[str, ...], then: str = "") -> list[str]:
    """Which of `heavy` a fresh process holds after importing `modules` (and running `then`)."""
    code = f"import sys, {modules}\n{then}\nprint(sorted(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return ast.literal_eval(done.stdout.strip())


def test_a_sweep_checks_its_inputs_before_loading_the_tune_phase():
    """What `fixray sweep` runs before Ray starts (the file, the plan, the cost, the rerun's look, the data's readers)
    loads none of torch, Ray Tune, MLflow, scipy's statistics or matplotlib: those load in a thread while Ray starts
    (run.TUNE_PHASE). Each costs a second of every sweep's start on 2 cores if it creeps back in front of Ray."""
    modules = "fixray.cli, fixray.sweep.run, fixray.sweep.rerun, fixray.sweep.spec.reading, fixray.sweep.job_dir"
    assert _loaded(modules, ("torch", "ray.tune", "mlflow", "scipy.stats", "matplotlib")) == []


def test_the_driver_never_loads_torch():
    """The driver hands Tune the trial function and never trains: its Tune phase loads no torch (2 s of every sweep's
    start on 2 cores, and its memory)."""
    assert _loaded("fixray.sweep.run", ("torch",), "fixray.sweep.run.load_tune_phase('sqlite:///unused.db')") == []


def test_a_trial_process_starts_without_scipy_statistics_or_matplotlib():
    """Every trial's process imports the trial code before its first epoch: scipy.stats (Spearman) and pyplot (the
    figures, drawn at the end) would add a second and a half to each one's start on 2 cores."""
    assert _loaded("fixray.trial.trainable", ("scipy.stats", "matplotlib")) == []


def test_ray_init_and_the_tune_phase_share_no_module_they_would_import_at_once():
    """The Tune phase imports in a thread while ray.init runs: a module both import, not loaded before either starts
    (run.SHARED_WITH_RAY_INIT), could be handed half-made to one of them. A new Ray or MLflow may add one."""
    ready = "import sys, fixray.cli, fixray.sweep.inputs, fixray.sweep.run as run, ray; run.load_before_ray_starts()"
    by_ray_init = 'ray.init(include_dashboard=False, logging_level="ERROR", num_cpus=1); ray.shutdown()'
    by_tune_phase = 'run.load_tune_phase("sqlite:///unused.db")'

    def imported_by(step: str) -> set[str]:
        code = f"{ready}\nbefore = set(sys.modules)\n{step}\nprint(sorted(set(sys.modules) - before))"
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        return set(ast.literal_eval(done.stdout.strip().splitlines()[-1]))

    assert imported_by(by_ray_init) & imported_by(by_tune_phase) == set()


def test_the_tune_phase_names_modules_that_exist():
    from fixray.sweep.run import TUNE_PHASE

    assert all(importlib.util.find_spec(module) is not None for module in TUNE_PHASE)


def test_a_rule_broken_is_seen(monkeypatch, tmp_path):
    """The reader finds an import inside a function too: a trial module that imported the sweep schema there
    would turn the rule red."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from fixray.sweep.spec.schema import SweepSpec\n")
    monkeypatch.setitem(MODULES, "fixray.trial.bad", bad)
    assert "fixray.sweep.spec.schema" in _reached("fixray.trial.bad")
