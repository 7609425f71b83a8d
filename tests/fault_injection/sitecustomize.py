"""Fault injection for tests/test_faults.py, on PYTHONPATH of the sweep under test (driver and Ray workers).

When $FIXRAY_FAULT_FILE exists, fixray.trial.loop.train raises at its start, as a bug in the trial's own code
would; each real call is appended to $FIXRAY_FAULT_LOG, so a test can count how often the code ran.
"""

import importlib.abc
import importlib.util
import os
import sys
from pathlib import Path

TARGET = "fixray.trial.loop"


class _WrapTrain(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    def find_spec(self, name, path, target=None):
        if name != TARGET or not os.environ.get("FIXRAY_FAULT_FILE"):
            return None
        sys.meta_path.remove(self)
        try:
            found = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        self._inner = found.loader
        found.loader = self
        return found

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        real = module.train

        def train(*args, **kwargs):
            with open(os.environ["FIXRAY_FAULT_LOG"], "a") as log:
                log.write(f"{os.getpid()}\n")
            if Path(os.environ["FIXRAY_FAULT_FILE"]).exists():
                raise RuntimeError("injected: a bug in the trial's own code")
            return real(*args, **kwargs)

        module.train = train


sys.meta_path.insert(0, _WrapTrain())
