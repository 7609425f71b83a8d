"""What went wrong, by kind: each kind has its own exit code, so a script (or a person) knows what to do next."""

from __future__ import annotations

EXIT_TRIALS_FAILED = 1  # the sweep ran but some trials raised errors
EXIT_BAD_INPUT = 2  # a sweep file, dataset, name, option or store the user must fix; nothing was started
EXIT_UNAVAILABLE = 69  # a service the sweep needs (the MLflow server, a bucket) does not answer: start it, rerun
EXIT_BUSY = 75  # another driver is running this sweep: wait for it, then rerun (sysexits' EX_TEMPFAIL)
EXIT_INTERRUPTED = 130  # stopped early (Ctrl-C, SIGTERM, a full disk); the same command resumes it


class FixrayError(Exception):
    """An error fixray explains in one message; `exit_code` says which kind it is."""

    exit_code = EXIT_BAD_INPUT
    prefix = "fixray: "  # before its message on stderr; "" where the message names its file on every line


class BadInput(FixrayError):
    """Input the user must fix (a file, a name, an option, a dataset); nothing was started or written."""


class DataError(BadInput):
    """A data problem the user must fix (files missing, classes that do not match); nothing was started."""


class SweepBusy(FixrayError):
    """Another driver is running this sweep; nothing was started."""

    exit_code = EXIT_BUSY


class Unavailable(FixrayError):
    """A service the sweep needs (the MLflow server, the storage bucket) does not answer; nothing was started."""

    exit_code = EXIT_UNAVAILABLE
