"""`fixray sweep | validate | report`: parse arguments, call the library, print, set the exit code."""

from __future__ import annotations

import argparse
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fixray.data import DataError
from fixray.pending import use_driver_http_settings
from fixray.spec import SweepFileError, default_tracking_uri, load_sweep
from fixray.tracking import MissingStore

EXIT_BAD_INPUT = 2  # a sweep file, dataset or option the user must fix; nothing was started
EXIT_TRIALS_FAILED = 1  # the sweep ran but some trials raised errors
EXIT_INTERRUPTED = 130  # stopped early; the same command resumes it


def _summary(spec) -> str:
    from fixray.plan import expected_trials

    models = spec.search.space.parameters().get("model", spec.model)
    trials = f"{expected_trials(spec)} trials of {spec.epochs} epochs ({spec.search.method} search)"
    return f"{trials} on {spec.dataset} with {models}"


def _cmd_validate(args: argparse.Namespace) -> int:
    from fixray.sweep_data import check_data

    status = 0
    for file in args.files:
        try:
            spec = load_sweep(file)
            data = check_data(spec)
        except SweepFileError as error:
            print(error, file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        except DataError as error:
            print(f"{file}: {error}", file=sys.stderr)
            status = EXIT_BAD_INPUT
            continue
        print(f"{file}: ok ({_summary(spec)}); data: {data}")
    return status


def _cmd_sweep(args: argparse.Namespace) -> int:
    spec = load_sweep(args.file)  # SweepFileError -> exit 2 before anything starts
    updates = {}
    if args.tracking_uri:
        updates["tracking"] = spec.tracking.model_copy(update={"uri": args.tracking_uri})
    if args.data_dir:
        updates["data_dir"] = Path(args.data_dir)
    if args.fresh:
        updates["name"] = f"{spec.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    spec = spec.model_copy(update=updates)

    os.environ.setdefault("RAY_DEDUP_LOGS", "1")
    # Every checkpoint is kept until pruned (checkpoints.py): Tune's record of each holds its score alone.
    os.environ.setdefault("TUNE_ONLY_STORE_CHECKPOINT_SCORE_ATTRIBUTE", "1")
    # MLflow is the sweep's record: no TensorBoard or CSV copy of every result (run_sweep keeps result.json).
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    use_driver_http_settings()  # before MLflow's client reads them
    import ray

    from fixray.answer import sweep_report
    from fixray.driver import (
        DriverLock,
        check_reachable,
        check_tracking,
        record_tracking,
        stop_on_sigterm,
        storage,
    )
    from fixray.sweep import StorageFull, run_sweep
    from fixray.sweep_data import prepare_data
    from fixray.tracking import SweepRuns

    print(f"Sweep {spec.name!r}: {_summary(spec)}", flush=True)
    check_tracking(spec)  # DataError -> exit 2: a resume goes to the store the sweep started in
    check_reachable(spec.tracking.uri)  # DataError -> exit 2: a server that is away at the start
    splits = prepare_data(spec)  # DataError -> exit 2 before Ray or MLflow start
    with DriverLock(spec), ThreadPoolExecutor(1) as opener:  # SweepBusy -> exit 2: one driver per sweep
        # The MLflow store opens while Ray starts (a new SQLite store migrates its schema for about a second).
        runs = opener.submit(SweepRuns, spec.tracking.uri, spec.tracking.experiment, spec.name)
        ray.init(address=args.address, logging_level="ERROR", log_to_driver=True)
        stop_on_sigterm()  # after ray.init, which installs its own handler
        try:
            record_tracking(spec)
            outcome = run_sweep(spec, splits, runs.result())
        except StorageFull as full:
            print(f"\nfixray: {full}", file=sys.stderr)
            return EXIT_INTERRUPTED
        finally:
            ray.shutdown()
    print()
    if outcome.pending:
        print(
            f"MLflow at {spec.tracking.uri} stayed unreachable: {outcome.pending} write(s) wait in {outcome.spool}. "
            f"Training is saved; when the server is back, run the same command: it writes them first, then resumes."
        )
        return EXIT_INTERRUPTED
    print(sweep_report(spec.tracking.uri, spec.tracking.experiment, spec.name)[0])
    print()
    errors = len(outcome.results.errors)
    if errors:
        print(f"{errors} trial(s) failed with errors; their logs are under {storage(spec).shown(spec.name)}")
    print(f"MLflow: experiment {spec.tracking.experiment!r}, parent run {spec.name!r} ({outcome.runs.parent_id}).")
    print(f"Open it with:  mlflow ui --backend-store-uri {spec.tracking.uri}")
    if outcome.unfinished:
        print(f"Interrupted with {outcome.unfinished} trial(s) unfinished: run the same command again to resume.")
        return EXIT_INTERRUPTED
    return EXIT_TRIALS_FAILED if errors else 0


def _cmd_report(args: argparse.Namespace) -> int:
    from mlflow.tracking import MlflowClient

    from fixray import paper
    from fixray.answer import sweep_report
    from fixray.html_report import html_page, run_figures

    uri = args.tracking_uri or default_tracking_uri()
    if args.sweep in paper.TABLES:
        grid, results = paper.collect(args.sweep, uri, args.experiment or paper.PAPER_EXPERIMENT)
        markdown = paper.render(grid, results, with_paper=args.paper)
        figure_runs = [
            (f"{row} · {column}", results[row, column].runs[0])
            for row in grid.rows
            for column in grid.columns
            if results[row, column].runs
        ]
    else:
        experiment, sweep = args.experiment or "fixray", args.sweep
        if Path(args.sweep).is_file():
            spec = load_sweep(args.sweep)
            uri, experiment, sweep = args.tracking_uri or spec.tracking.uri, spec.tracking.experiment, spec.name
        try:
            markdown, figure_runs = sweep_report(uri, experiment, sweep)
        except LookupError as error:
            print(f"fixray report: {error}", file=sys.stderr)
            return EXIT_BAD_INPUT
    print(markdown)
    if args.html:
        client = MlflowClient(uri)
        sections = [(f"{caption} (run {run.info.run_name})", run_figures(client, run)) for caption, run in figure_runs]
        Path(args.html).write_text(html_page(markdown, sections))
        print(f"\nHTML report with figures: {args.html}")
    return 0


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
        "--html", default=None, metavar="FILE", help="also write the table with each cell's figures embedded"
    )
    report.set_defaults(run=_cmd_report)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except SweepFileError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD_INPUT
    except (DataError, MissingStore) as error:
        print(f"fixray: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
