# Entry points, each setting up .venv first when pyproject.toml is newer than the last install.
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: quickstart test test-fast test-cluster lint format reference readme-images benchmark

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

quickstart: $(STAMP)
	$(VENV)/bin/fixray sweep sweeps/quickstart.yaml

# -rs: a skipped test says why in one line (the MLflow UI test skips where Chromium is missing, except in CI).
test: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m "not cluster"

# The unit tier alone (no Ray or MLflow run end to end): about 4 minutes on 2 cores.
test-fast: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m "not slow and not cluster"

# The tests that bring up clusters: a three-node Ray cluster losing nodes, `ray up` over SSH (root, openssh-server).
test-cluster: $(STAMP)
	$(VENV)/bin/python -m pytest -q -rs -m cluster

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

# Rewrites the generated sections of docs/ (the sweep-file reference, the metrics) from the code.
reference: $(STAMP)
	$(VENV)/bin/python -m fixray.sweep.reference .

# Reruns a small sweep and rewrites what README shows of it: its printed report, its figure, the MLflow UI.
readme-images: $(STAMP)
	scripts/ensure-chromium
	$(VENV)/bin/python scripts/readme-images

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/trial_overhead.py
