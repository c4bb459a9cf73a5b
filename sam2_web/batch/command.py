"""``sam2-web batch MANIFEST``: the command-line face of :mod:`sam2_web.batch` (``sam2_web.cli``
registers the subcommand with :func:`add_parser` and calls :func:`run_command`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Sequence

from sam2_web.batch.report import EXIT_JOBS_FAILED, EXIT_NO_ENGINE

EXIT_CODES_HELP = f"""\
exit codes:
  0    every job is done (or was already complete)
  1    unexpected error (run with --debug for the traceback)
  2    usage error: bad arguments, or the manifest is invalid (nothing ran)
  {EXIT_JOBS_FAILED}    at least one job failed; the others ran (see the report)
  {EXIT_NO_ENGINE}    --ray asked for but Ray is not installed (pip install 'sam2_web[ray]'), the cluster
       cannot be reached, or no worker could start
  130  cancelled (Ctrl-C); finished jobs stay, running ones leave nothing
"""

_EPILOG = """\
The manifest (JSON or YAML) lists jobs, each what `sam2-web mask` takes: clip, prompts, out,
formats, feather, grow, invert, bit_depth, soft_edges, edge_band, start, end, direction, model, checkpoint, device.
Schema: docs/batch.schema.json; guide: docs/batch.md. Relative paths are relative to the manifest.

Trailing KEY=VALUE arguments are hydra overrides applied to every job (after the manifest's);
model=, device= and checkpoint= replace every job's.

A re-run skips jobs whose outputs are complete (same job, outputs untouched) and redoes the rest.

""" + EXIT_CODES_HELP


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register the ``batch`` subcommand on ``sub`` (from ``add_subparsers``)."""
    parser = sub.add_parser("batch", help="run every job of a manifest (in this process, or on Ray)",
                            epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("manifest", type=Path, help="batch manifest, JSON or YAML (docs/batch.schema.json)")
    parser.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="hydra overrides for every job")
    parser.add_argument("--ray", metavar="ADDRESS", default=None,
                        help="run on Ray: 'local' starts one on this machine, else a cluster address "
                             "(ray://head:10001, head:6379, auto)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="Ray workers, each holding a loaded model (default: one per GPU; without GPUs one "
                             "single-threaded worker per CPU, as many as memory holds at 2 GiB each)")
    parser.add_argument("--cpus-per-worker", type=float, default=None, metavar="N",
                        help="CPUs each Ray worker asks for (default: the cluster's CPUs shared evenly)")
    parser.add_argument("--split-objects", action=argparse.BooleanOptionalAction, default=None,
                        help="split jobs with several objects over several Ray workers (default: the manifest's "
                             "split_objects)")
    parser.add_argument("--retries", type=int, default=2, metavar="N",
                        help="times a job runs again after its worker died (default 2)")
    parser.add_argument("--force", action="store_true", help="redo jobs whose outputs are already complete")
    parser.add_argument("--report", type=Path, default=None, metavar="PATH",
                        help="JSON report (default: <manifest>.report.json next to the manifest)")
    parser.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                        help="progress display on stderr (auto: a bar on a terminal, lines otherwise)")
    return parser


def settings_from(overrides: Sequence[str]) -> Any:
    """Command-line overrides as :class:`~sam2_web.batch.manifest.CommandLineSettings`.

    Raises:
        ManifestError: an argument that is not KEY=VALUE.
    """
    from sam2_web.batch.manifest import CommandLineSettings, ManifestError
    from sam2_web.jobs.job import split_overrides

    try:
        model, checkpoint, device, rest = split_overrides(overrides)
    except ValueError as exc:
        raise ManifestError(str(exc)) from None
    return CommandLineSettings(model=model, checkpoint=Path(checkpoint).absolute() if checkpoint else None,
                               device=device, overrides=rest)


def default_report_path(manifest: Path) -> Path:
    """``<manifest folder>/<manifest stem>.report.json``."""
    manifest = Path(manifest).absolute()
    return manifest.with_name(f"{manifest.stem}.report.json")


class _StopOnCtrlC:
    """In-process runs: the first Ctrl-C stops the running job after its current frame (it
    leaves nothing) and the batch; a second stops at once."""

    def __init__(self, cancel: threading.Event):
        self.cancel = cancel
        self._saved: Any = None

    def __enter__(self) -> "_StopOnCtrlC":
        if threading.current_thread() is threading.main_thread():
            self._saved = signal.signal(signal.SIGINT, self._on_sigint)
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._saved is not None:
            signal.signal(signal.SIGINT, self._saved)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        print("\nstopping the batch after the current frame (Ctrl-C again to stop at once)...",
              file=sys.stderr, flush=True)


def run_command(args: argparse.Namespace) -> int:
    """Run ``sam2-web batch`` with parsed ``args``; returns the exit code (see the epilog)."""
    from sam2_web.batch.manifest import ManifestError, load_manifest
    from sam2_web.batch.progress import BatchProgressView
    from sam2_web.batch.ray_pool import RayPool, RayUnavailableError
    from sam2_web.batch.runner import run_batch

    try:
        settings = settings_from(args.overrides)
        if args.split_objects is not None:
            settings = dataclasses.replace(settings, split_objects=args.split_objects)
        if args.workers is not None and args.workers < 1:
            raise ManifestError("--workers must be at least 1")
        if args.retries < 0:
            raise ManifestError("--retries must be >= 0")
        if args.ray is None and (args.workers is not None or args.cpus_per_worker is not None):
            raise ManifestError("--workers and --cpus-per-worker need --ray (local or a cluster address)")
        manifest = load_manifest(args.manifest, settings)
    except ManifestError as exc:
        print(f"sam2-web batch: error: {exc}", file=sys.stderr)
        return 2
    pool = None
    if args.ray is not None:
        pool = RayPool(args.ray, workers=args.workers, cpus_per_worker=args.cpus_per_worker)
    view = BatchProgressView(args.progress)
    cancel = threading.Event()
    try:
        # On Ray, Ctrl-C raises KeyboardInterrupt as usual and the pool stops its workers.
        with _StopOnCtrlC(cancel) if pool is None else contextlib.nullcontext():
            report = run_batch(manifest, pool=pool, force=args.force, view=view, retries=args.retries,
                               cancel=cancel)
    except RayUnavailableError as exc:
        print(f"sam2-web batch: error: {exc}", file=sys.stderr)
        return EXIT_NO_ENGINE
    path = report.write(args.report or default_report_path(manifest.path))
    _print_summary(report, path)
    return report.exit_code


def _print_summary(report: Any, path: Path) -> None:
    from sam2_web.batch.report import CANCELLED, DONE, FAILED, SKIPPED

    counts = ", ".join(f"{report.count(s)} {s}" for s in (DONE, SKIPPED, FAILED, CANCELLED) if report.count(s))
    print(f"{len(report.jobs)} jobs: {counts} in {report.seconds:.1f} s on {report.pool}; report: {path}")
    for job in report.jobs:
        if job.status == FAILED:
            print(f"  failed {job.id}: {job.error['message']}")
