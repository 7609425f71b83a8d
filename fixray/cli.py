"""`fixray sweep | validate | report | status | replay`: parse arguments, call the library, print, set the exit code."""

from __future__ import annotations

import argparse
import contextlib
import sys
import time
from pathlib import Path

from fixray.errors import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_TRIALS_FAILED, FixrayError
from fixray.sweep.defaults import EXPERIMENT

# Each command imports what it needs when it runs: `fixray validate` reads sweep files without torch, MLflow or Ray, and
# `fixray report NAME` reads MLflow without torch.


def _summary(spec, trials: int) -> str:
    """e.g. '24 trials of 10 epochs (grid search) on digits with small_cnn'."""
    models = spec.values("model").listed
    models = models[0] if len(models) == 1 else list(models)
    return f"{trials} trials of {spec.epochs} epochs ({spec.search.method} search) on {spec.dataset} with {models}"


def _style(asked: str | None):
    """How tables print: as asked, else aligned on a terminal and Markdown when piped (to a file, a script)."""
    from fixray.records.render import as_markdown, as_terminal

    asked = asked or ("terminal" if sys.stdout.isatty() else "markdown")
    return as_terminal if asked == "terminal" else as_markdown


def _cmd_validate(args: argparse.Namespace) -> int:
    from fixray.sweep.cost import admit, compute_plan, on_these_cpus
    from fixray.sweep.inputs import check_data
    from fixray.sweep.plan import plan
    from fixray.sweep.spec.reading import load_sweep

    status, costs = 0, []
    for file in args.files:
        try:
            spec = load_sweep(file)
            data = check_data(spec)
            trials = plan(spec)
            cost = compute_plan(spec, trials)
            admission = admit(spec, trials, cost.throughput)
        except FixrayError as error:
            print(f"{error.prefix and f'{file}: '}{error}", file=sys.stderr)
            status = error.exit_code
            continue
        print(f"{file}: ok ({_summary(spec, cost.trials)}); data: {data}")
        print(f"  cost: {cost.amount_text()}")
        if admission.budget is not None:
            print(f"  {admission.text()}")
        costs.append(cost)
    if costs:  # the rate once, and one total across the files
        flop = sum(cost.flop for cost in costs)
        if len(costs) > 1:
            hours = sum(cost.gpu_hours for cost in costs)
            print(f"total: {sum(c.trials for c in costs)} trials, {flop:.1e} FLOP of training, {hours:.3g} GPU-hours")
        print(f"GPU-hours at {costs[0].rate_text()}")
        try:
            here = on_these_cpus(flop)
        except FixrayError as error:  # a CPU measurement that is not one benchmarks/gpu.py wrote
            print(error, file=sys.stderr)
            return error.exit_code
        if here:
            print(f"that is {here}")
    return status


def _cmd_sweep(args: argparse.Namespace) -> int:
    from fixray.sweep.spec.reading import load_sweep

    spec = load_sweep(args.file)  # SweepFileError -> exit 2 before anything starts
    updates = {}
    if args.tracking_uri:
        updates["tracking"] = spec.tracking.model_copy(update={"uri": args.tracking_uri})
    if args.data_dir:
        updates["data_dir"] = Path(args.data_dir)
    if args.fresh:
        updates["name"] = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    asked = (("cpus_per_trial", args.cpus), ("gpus_per_trial", args.gpus))
    overrides = {key: value for key, value in asked if value is not None}
    if overrides:  # checked by the file's own rules
        try:
            updates["resources"] = type(spec.resources).model_validate(spec.resources.model_dump() | overrides)
        except ValueError as error:
            print(f"{args.file}: resources from the command line: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    return run_sweep_spec(spec.model_copy(update=updates), args.address, args.file)


def run_sweep_spec(spec, address: str | None, file: str) -> int:
    """Runs (or grows, or resumes) a validated sweep, printing as `fixray sweep` does; its exit status. `file`: what
    the messages call the sweep file."""
    from fixray.sweep.job_dir import refuse_a_temporary_store
    from fixray.sweep.plan import plan
    from fixray.sweep.rerun import look

    refuse_a_temporary_store(spec, file)  # a Ray job's driver writing its runs into the job's temporary folder
    trials = plan(spec)  # once: the rerun's look, the run and the summary count them from here
    rerun = look(spec, trials)  # BadInput (exit 2): another store, or another dataset under the sweep's name
    if rerun is not None and rerun.runs_nothing:  # every trial ended in an earlier run: its answer, without Ray
        from fixray.records.sweep_report import sweep_report
        from fixray.sweep.rerun import settle_without_running

        print(f"Sweep {spec.name!r}: {len(trials)} trials: {rerun.text()}.\n")
        runs = settle_without_running(rerun)
        print(sweep_report(spec.tracking.uri, spec.tracking.experiment, spec.name).render(_style(None)))
        print()
        _print_addresses(spec, runs)
        return 0

    from fixray.sweep.run import StorageFull, SweepRun

    sweep = SweepRun(spec, trials, rerun, file)
    print(f"Sweep {spec.name!r}: {_summary(spec, sweep.expected)}", flush=True)
    if rerun is not None and (rerun.kept or rerun.not_in_file or rerun.changed):
        print(f"  {rerun.text()}", flush=True)
    print(f"  cost: {sweep.cost.text()}", flush=True)
    if sweep.admission.budget is not None:
        print(f"  {sweep.admission.text()}", flush=True)
    try:
        outcome = sweep.run(address)
    except StorageFull as full:
        print(f"\nfixray: {full}", file=sys.stderr)
        return EXIT_INTERRUPTED
    print()
    if outcome.pending:
        print(
            f"MLflow at {spec.tracking.uri} stayed unreachable: {outcome.pending} write(s) wait in {outcome.spool}. "
            f"Training is saved; when the server is back, run the same command: it writes them first, then resumes."
        )
        return EXIT_INTERRUPTED
    from fixray.records.sweep_report import sweep_report  # loaded while Ray started (run.TUNE_PHASE)

    print(sweep_report(spec.tracking.uri, spec.tracking.experiment, spec.name).render(_style(None)))
    print()
    errors = len(outcome.errors)
    if errors:
        print(f"{errors} trial(s) failed with errors; their logs are under {sweep.storage.shown(spec.name)}")
    if outcome.not_run:
        print(
            f"{outcome.not_run} trial(s) not run: past the budget of {spec.budget:g} GPU-hours. Raise `budget:` in "
            f"{file} and run the same command to run them (finished trials are kept)."
        )
    _print_addresses(spec, outcome.runs)
    if outcome.unfinished:
        print(f"Interrupted with {outcome.unfinished} trial(s) unfinished: run the same command again to resume.")
        return EXIT_INTERRUPTED
    return EXIT_TRIALS_FAILED if errors else 0


def _print_addresses(spec, runs) -> None:
    """Where the sweep is in MLflow: its trials' page, the comparison of its trials and its parent run."""
    from fixray.records.location import local_store_path
    from fixray.records.ui import ui_addresses, ui_base

    pages = ui_addresses(ui_base(spec.tracking.uri), runs)
    print(f"MLflow: experiment {spec.tracking.experiment!r}, parent run {spec.name!r} ({runs.parent_id}).")
    if local_store_path(spec.tracking.uri) is not None:  # served by `mlflow ui`
        print(f"Open it with:  fixray ui {spec.name} --tracking-uri {_absolute(spec.tracking.uri)}   (or, from here:")
        print(f"  mlflow ui --backend-store-uri {spec.tracking.uri}), then:")
    print(f"  the sweep's trials:  {pages.trials}")
    print(f"  compare them:        {pages.compare}")
    print(f"  its answer:          {pages.answer}")
    print("  (MLflow opens experiments in its GenAI view: choose 'Model training' once, top left.)")


def _absolute(tracking_uri: str) -> str:
    """A local store's URI with an absolute path: it opens from any folder."""
    from fixray.records.location import local_store_path

    path = local_store_path(tracking_uri)
    if path is None:
        return tracking_uri
    prefix = (
        "sqlite:///" if tracking_uri.startswith("sqlite:") else ("file://" if tracking_uri.startswith("file:") else "")
    )
    return f"{prefix}{path.resolve()}"


def _cmd_report(args: argparse.Namespace) -> int:
    from fixray.records.report_cache import ReportCache
    from fixray.sweep.defaults import default_tracking_uri

    uri, experiment, sweep = args.tracking_uri or default_tracking_uri(), args.experiment, args.sweep
    if Path(args.sweep).is_file():
        from fixray.sweep.spec.reading import load_sweep

        spec = load_sweep(args.sweep)
        uri, experiment, sweep = args.tracking_uri or spec.tracking.uri, spec.tracking.experiment, spec.name
    style = args.format or ("terminal" if sys.stdout.isatty() else "markdown")
    question = [sweep, str(experiment), style, str(args.runs), str(args.paper)]
    cache = None if args.html else ReportCache.of(uri, question)
    if cache is not None and (kept := cache.read()) is not None:  # nothing written to the store since
        print(kept, end="")
        return 0
    stamp = cache.stamp() if cache is not None else None  # before reading: a write meanwhile makes it stale
    status, text = _report_text(args, uri, experiment, sweep, style)
    print(text, end="", file=sys.stdout if status == 0 else sys.stderr)
    if cache is not None and status == 0:
        cache.write(text, stamp)
    return status


def _report_text(args: argparse.Namespace, uri: str, experiment: str | None, sweep: str, style: str) -> tuple[int, str]:
    """(exit status, what `fixray report` prints) for a sweep or a paper table."""
    from fixray.records import paper
    from fixray.records.html import html_page
    from fixray.records.sweep_report import runs_report, sweep_report

    as_data = style in DATA_FORMATS
    if sweep in paper.TABLES and as_data:
        return EXIT_BAD_INPUT, f"fixray report: --format {style} is for a sweep; a paper table prints as text\n"
    if sweep in paper.TABLES:
        report = paper.report(sweep, uri, experiment or paper.PAPER_EXPERIMENT, with_paper=args.paper)
    else:
        try:
            if as_data:
                return 0, _report_data(uri, experiment or EXPERIMENT, sweep, style)
            report = (runs_report if args.runs else sweep_report)(uri, experiment or EXPERIMENT, sweep)
        except LookupError as error:
            return EXIT_BAD_INPUT, f"fixray report: {error}\n"
    text = report.render(_style(style)) + "\n"
    if args.html:
        Path(args.html).write_text(html_page(report, uri))
        text += f"\nHTML report with figures: {args.html}\n"
    return 0, text


def _cmd_ui(args: argparse.Namespace) -> int:
    """MLflow's UI on a local store, from any folder, until Ctrl-C; for a server, its links (and the tunnel)."""
    from fixray.records.location import local_store_path
    from fixray.records.runs import SweepRuns
    from fixray.records.store import reading_client
    from fixray.records.ui import serve_ui, ui_addresses, ui_base
    from fixray.sweep.defaults import default_tracking_uri

    uri = _absolute(args.tracking_uri or default_tracking_uri())
    reading_client(uri)  # MissingStore (exit 2) where no store is
    local = local_store_path(uri) is not None
    with serve_ui(uri, args.port) if local else contextlib.nullcontext(ui_base(uri)) as base:
        if args.sweep:
            try:
                pages = ui_addresses(base, SweepRuns(uri, args.experiment, args.sweep, create=False))
            except LookupError as error:
                print(f"fixray ui: {error}", file=sys.stderr)
                return EXIT_BAD_INPUT
            print(f"Sweep {args.sweep!r} in MLflow at {base}:")
            print(f"  its trials:    {pages.trials}\n  compare them:  {pages.compare}\n  its answer:    {pages.answer}")
        else:
            print(f"MLflow at {base}")
        if not local:
            print(
                "That is the tracking server itself. On a cluster it listens on the head's 127.0.0.1:5000: tunnel to "
                "it first, e.g. `ssh -N -L 5000:127.0.0.1:5000 USER@HEAD` (docs/cluster.md), then open the links."
            )
            return 0
        print("(MLflow opens experiments in its GenAI view: choose 'Model training' once, top left.) Ctrl-C stops it.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print()
    return 0


DATA_FORMATS = ("json", "csv")


def _report_data(uri: str, experiment: str, sweep: str, form: str) -> str:
    """A sweep's report as JSON (NaN as null) or its configurations as CSV."""
    import json
    import math

    import pandas as pd

    from fixray.records.frames import report_data
    from fixray.records.runs import SweepRuns

    data = report_data(SweepRuns(uri, experiment, sweep, create=False))
    if form == "csv":
        return pd.DataFrame.from_records(data["configurations"]).to_csv(index=False)

    def plain(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: plain(v) for k, v in value.items()}
        if isinstance(value, list):
            return [plain(v) for v in value]
        return value

    return json.dumps(plain(data), indent=1) + "\n"


def _cmd_status(args: argparse.Namespace) -> int:
    from fixray.records.status import status_report
    from fixray.sweep.defaults import default_tracking_uri

    uri = args.tracking_uri or default_tracking_uri()
    try:
        report = status_report(uri, args.experiment, args.sweep)
    except LookupError as error:
        print(f"fixray status: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(report.render(_style(args.format)))
    return 0


def _cmd_replay(args: argparse.Namespace) -> int:
    from fixray.sweep.defaults import default_tracking_uri
    from fixray.sweep.replay import replay

    def progress(epoch: int, epochs: int, metrics: dict[str, float]) -> None:
        print(f"  epoch {epoch}/{epochs}: test acc {metrics.get('val/acc', float('nan')):.4f}", flush=True)

    uri = args.tracking_uri or default_tracking_uri()
    data = Path(args.data_dir) if args.data_dir else None
    found = replay(args.run_id, uri, args.epochs, data, args.sweep, progress)
    replayed = f"{found.epochs} epoch(s), {found.compared} logged values compared"
    print(f"Replayed run {found.run_name} ({found.run_id}): {replayed}.")
    if found.equal:
        print("Equal, bit for bit: every metric the run logged at every epoch replayed.")
    else:
        first = found.first_difference
        replayed = "not reported" if first.replayed is None else repr(first.replayed)
        print(f"Different: first at {first.metric}, epoch {first.epoch}: logged {first.logged!r}, replayed {replayed}.")
    for name, (then, now) in found.versions.items():
        print(f"  {name}: the run's {then}, here {now}")
    if not found.versions:
        print("  (the versions and device the sweep recorded are this machine's)")
    return 0 if found.equal else EXIT_TRIALS_FAILED


def _reads_a_store(command: argparse.ArgumentParser) -> None:
    """The options of a command that reads a tracking store: which store, and which experiment in it."""
    command.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    command.add_argument("--experiment", default=EXPERIMENT, help=f"MLflow experiment (default: {EXPERIMENT})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fixray", description="Fixed vs learned classification heads, swept on Ray Tune and tracked in MLflow."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    sweep = commands.add_parser("sweep", help="run (or resume) the sweep a YAML file describes")
    sweep.add_argument("file", help="sweep file, e.g. sweeps/quickstart.yaml")
    sweep.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join (e.g. 'auto' on a `ray up` head node); default: start a local Ray",
    )
    sweep.add_argument(
        "--tracking-uri", default=None, help="MLflow tracking URI; overrides the sweep file's tracking.uri"
    )
    sweep.add_argument(
        "--data-dir", default=None, help="folder holding the datasets; overrides the sweep file's data_dir"
    )
    sweep.add_argument(
        "--cpus-per-trial",
        dest="cpus",
        type=float,
        help="CPUs each trial (each DDP worker) asks for; overrides the file's resources.cpus_per_trial",
    )
    sweep.add_argument(
        "--gpus-per-trial",
        dest="gpus",
        type=float,
        help="GPUs each trial (each DDP worker) asks for, 0 to train on the CPU; overrides resources.gpus_per_trial",
    )
    sweep.add_argument(
        "--fresh",
        action="store_true",
        help="start a new sweep (timestamped name) instead of resuming one of the same name",
    )
    sweep.set_defaults(run=_cmd_sweep)

    validate = commands.add_parser("validate", help="check sweep files without running them")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(run=_cmd_validate)

    report = commands.add_parser("report", help="print a sweep's table, or one of the paper's tables, from MLflow")
    report.add_argument(
        "sweep", help="a sweep name, the sweep file that names it, or a paper table: table1 ... table9, spearman"
    )
    report.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: the sweep file's, else $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    report.add_argument(
        "--experiment", default=None, help="MLflow experiment (default: fixray; fixray-paper for paper tables)"
    )
    report.add_argument("--paper", action="store_true", help="paper tables: put the published number beside each cell")
    report.add_argument(
        "--runs", action="store_true", help="list the sweep's trial runs instead: name (what replay takes), id, outcome"
    )
    report.add_argument(
        "--format",
        choices=("terminal", "markdown", "json", "csv"),
        default=None,
        help="how tables print (default: terminal on a terminal, Markdown when piped); json: the answer, every "
        "configuration and every trial as values; csv: every configuration, one row each, numbers unrounded",
    )
    report.add_argument(
        "--html", default=None, metavar="FILE", help="also write the report with each table's figures embedded"
    )
    report.set_defaults(run=_cmd_report)

    ui = commands.add_parser("ui", help="MLflow's UI on a sweep's store, from any folder, with the sweep's links")
    ui.add_argument("sweep", nargs="?", default=None, help="a sweep's name: print its pages (default: none)")
    _reads_a_store(ui)
    ui.add_argument("--port", type=int, default=None, help="port to serve on (default: a free one)")
    ui.set_defaults(run=_cmd_ui)

    status = commands.add_parser("status", help="the sweeps in a tracking store: their trials by state, from MLflow")
    status.add_argument("sweep", nargs="?", default=None, help="one sweep's name (default: every sweep)")
    _reads_a_store(status)
    status.add_argument("--format", choices=("terminal", "markdown"), default=None, help="as for report")
    status.set_defaults(run=_cmd_status)

    again = commands.add_parser(
        "replay", help="train one trial again from its MLflow run, here, and compare every per-epoch metric"
    )
    again.add_argument(
        "run_id",
        metavar="RUN",
        help="the trial's MLflow run id, or its run name (`fixray report SWEEP --runs` lists them)",
    )
    again.add_argument("--sweep", default=None, help="the sweep whose trial RUN names (when several sweeps have one)")
    again.add_argument(
        "--tracking-uri",
        default=None,
        help="MLflow tracking URI (default: $MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)",
    )
    again.add_argument("--epochs", type=int, default=None, help="replay the first N epochs only (default: all)")
    again.add_argument(
        "--data-dir", default=None, help="folder holding the datasets (default: $FIXRAY_DATA or ~/.cache)"
    )
    again.set_defaults(run=_cmd_replay)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except FixrayError as error:
        print(f"{error.prefix}{error}", file=sys.stderr)
        return error.exit_code


def console() -> None:
    """The `fixray` command: main, then an exit that skips the interpreter's teardown of torch, Ray and MLflow (about
    2 s after the last line of every command), once output is flushed. Ray is shut down and every MLflow write made by
    then; tests call main() in-process instead."""
    import logging
    import os

    status = main()
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


if __name__ == "__main__":
    console()
