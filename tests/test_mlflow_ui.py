"""The MLflow UI in a real browser: a sweep's child runs nest under it and show S, lr and fixed.

Needs Debian's chromium and chromium-driver: .ci/run installs them (scripts/ensure-chromium) and the test
fails in CI without them; elsewhere it is skipped with a line saying how to run it. Screenshots land in
screenshots/.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import ROOT
from e2e import run, store

from fixray.records.ui import serve_ui

pytestmark = pytest.mark.slow
SHOTS = ROOT / "screenshots"
MLFLOW = Path(sys.executable).with_name("mlflow")  # the CLI installed beside this interpreter
HOW_TO_RUN = "needs Chromium: run scripts/ensure-chromium (apt-get install chromium chromium-driver), then make test"

UI_SWEEP = """\
name: ui
dataset: digits
model: small_cnn
epochs: 2
batch_size: 64
seeds: [0]
head: {kind: cosine}
search:
  space:
    fixed: [true, false]
    S: 10
    lr: [0.1, 0.05]
"""


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        if os.environ.get("CI"):
            pytest.fail(f"the MLflow UI test {HOW_TO_RUN}")
        pytest.skip(f"MLflow UI test {HOW_TO_RUN}")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--window-size=1600,1200",
    ):
        options.add_argument(flag)
    session = webdriver.Chrome(options=options, service=Service(driver))
    yield session
    session.quit()


@pytest.fixture(scope="module")
def filled_server(tmp_path_factory):
    """One sweep and one MLflow server for every UI test: they only read."""
    tmp_path = tmp_path_factory.mktemp("ui")
    (tmp_path / "ui.yaml").write_text(UI_SWEEP)
    done = run(["sweep", "ui.yaml"], tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    with serve_ui(f"sqlite:///{tmp_path / 'mlflow.db'}") as url:  # what `fixray ui` serves
        yield url, tmp_path, done.stdout


def _wait_for_text(browser, texts, seconds=60) -> str:
    from selenium.webdriver.common.by import By

    deadline = time.monotonic() + seconds
    while True:
        body = browser.find_element(By.TAG_NAME, "body").text
        if all(t in body for t in texts) or time.monotonic() > deadline:
            return body
        time.sleep(1)


def test_mlflow_ui_shows_the_sweep_with_its_child_runs_and_their_parameters(browser, filled_server):
    url, folder, printed = filled_server
    client, parents, children = store(folder)
    experiment = parents[0].info.experiment_id
    SHOTS.mkdir(exist_ok=True)

    browser.get(f"{url}/#/experiments/{experiment}/runs")
    body = _wait_for_text(browser, ["ui", "5 matching runs"])
    browser.save_screenshot(str(SHOTS / "mlflow_runs.png"))
    assert "5 matching runs" in body  # one parent row; its 4 children nest under it

    ids = [c.info.run_id for c in children]
    query = f"runs={urllib.parse.quote(json.dumps(ids))}&experiments={urllib.parse.quote(json.dumps([experiment]))}"
    compare = f"{url}/#/compare-runs?{query}"
    browser.get(compare)
    names = [c.info.run_name for c in children]
    body = _wait_for_text(browser, names + ["Parallel Coordinates Plot", "Parameters"])
    browser.save_screenshot(str(SHOTS / "mlflow_compare.png"))
    assert "Comparing 4 Runs" in body
    for name in names:
        assert name in body
    lines = body.splitlines()
    for param in ("S", "lr", "fixed"):
        row = next((line for line in lines if line.split(" ")[0] == param and len(line.split(" ")) == 5), None)
        assert row is not None, f"no row for parameter {param} in the compare page"
        assert sorted(row.split(" ")[1:]) == sorted(c.data.params[param] for c in children)


def _columns_on_screen(browser, children, url: str) -> str:
    """Opens a trials page in the browser and waits for its columns: the searched settings, the outcome and the
    accuracies, with every trial's values visible without a click."""
    browser.get(url)
    body = _wait_for_text(browser, ["4 matching runs", "val/acc_best", "fixray.status"])
    for header in ("fixed", "lr", "seed", "val/acc_best", "val/compactness", "fixray.status"):  # S: one value
        assert header in body.splitlines(), f"no column {header} on the trials page"
    for child in children:
        assert child.info.run_name in body
        assert str(child.data.metrics["val/acc_best"])[:6] in body  # its accuracy, shown (truncated) in its row
    return body


def test_the_addresses_a_sweep_prints_open_its_trials_with_their_settings_its_comparison_and_its_answer(
    browser, filled_server
):
    """The sweep's last lines name its trials' page (its shared view: the parent's children, one row each, their
    settings and accuracies as columns, in a browser that never opened MLflow), the comparison and the parent run."""
    url, folder, printed = filled_server
    _, parents, children = store(folder)
    lines = {
        line.split(":", 1)[0].strip(): line.split(":", 1)[1].strip() for line in printed.splitlines() if ":  " in line
    }
    trials, compare, answer = lines["the sweep's trials"], lines["compare them"], lines["its answer"]
    assert trials.startswith("http://127.0.0.1:5000/#/experiments/")  # `mlflow ui`'s address for a local store
    assert "viewStateShareKey=fixray-" in trials
    browser.delete_all_cookies()
    browser.execute_script("window.localStorage.clear()")  # no view this browser saved: the shared one shows
    _columns_on_screen(browser, children, trials.replace("http://127.0.0.1:5000", url))
    browser.save_screenshot(str(SHOTS / "mlflow_trials.png"))
    browser.get(compare.replace("http://127.0.0.1:5000", url))
    body = _wait_for_text(browser, ["Comparing 4 Runs", "Parallel Coordinates Plot"])
    assert "Comparing 4 Runs" in body and "Parallel Coordinates Plot" in body
    browser.get(answer.replace("http://127.0.0.1:5000", url))
    body = _wait_for_text(browser, ["Fixed minus learned"])
    assert parents[0].info.run_id in answer and "Fixed minus learned" in body  # the answer, on the parent's page


def test_fixray_ui_serves_the_store_from_any_folder_prints_the_sweep_s_pages_and_stops_on_ctrl_c(
    browser, filled_server, tmp_path
):
    _, folder, _ = filled_server
    _, _, children = store(folder)
    ui = subprocess.Popen(
        [str(MLFLOW.with_name("fixray")), "ui", "ui", "--tracking-uri", f"sqlite:///{folder / 'mlflow.db'}"],
        cwd=tmp_path,  # another folder: the store's path is absolute
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = ui.stdout.readline()
        assert first.startswith("Sweep 'ui' in MLflow at http://127.0.0.1:"), first
        base = first.split(" at ", 1)[1].rstrip(":\n")
        trials = ui.stdout.readline().split("its trials:", 1)[1].strip()
        assert trials.startswith(base)
        _columns_on_screen(browser, children, trials)
    finally:
        ui.send_signal(signal.SIGINT)
        assert ui.wait(timeout=60) == 0
    with pytest.raises(OSError):
        urllib.request.urlopen(f"{base}/health", timeout=5)  # the server went with it
