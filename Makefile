# Two entry points, each setting up .venv first when pyproject.toml is newer than the last install.
VENV ?= .venv
STAMP := $(VENV)/.installed

.PHONY: quickstart test benchmark

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check -e '.[test]'
	touch $@

quickstart: $(STAMP)
	$(VENV)/bin/fixray sweep sweeps/quickstart.yaml

test: $(STAMP)
	scripts/ensure-chromium
	$(VENV)/bin/python -m pytest -q

benchmark: $(STAMP)
	$(VENV)/bin/python benchmarks/trial_overhead.py
