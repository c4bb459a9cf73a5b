"""``sam2-web``: track objects through a clip from the command line and write mattes editors ingest.

    sam2-web mask shot.mp4 --prompts prompts.json --out mattes --format png --format prores
    sam2-web mask shot.mp4 --prompts prompts.json --out mattes --format exr model=sam2.1_hiera_s device=cuda
    sam2-web mask shot.mp4 --auto 0 --min-area 500 --out mattes
    sam2-web mask shot.mp4 --text "person, dog" --text-frame 12 --out mattes
    sam2-web models
    sam2-web formats

The job itself is ``sam2_web.jobs`` (the contract the editor plugins share); this module only
parses arguments, shows progress and turns errors into exit codes.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

EXIT_OK = 0
EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_CLIP = 3
EXIT_MODEL = 4
EXIT_OUTPUT = 5
EXIT_CANCELLED = 130

EXIT_CODES_HELP = """\
exit codes:
  0    the outputs are written
  1    unexpected error (run with --debug for the traceback)
  2    usage error: bad arguments, prompts JSON or frame range
  3    the clip cannot be read (missing, corrupt, no video stream)
  4    model problem: unknown model, bad checkpoint, Hub or --remote server unreachable,
       --text without its extra installed
  5    output problem: folder not writable, export failed
  130  cancelled (Ctrl-C); nothing is written
"""

_MASK_EPILOG = """\
Trailing KEY=VALUE arguments are hydra overrides of configs/app.yaml, e.g.
  model=sam2.1_hiera_s  device=cuda  checkpoint=/path/model.pt  ++model.image_size=512  engine.read_ahead=8

The prompts JSON is documented in docs/prompts.schema.json (example: docs/prompts.example.json).
--auto FRAME tracks everything found on that frame (settings: find.auto.* overrides, e.g.
find.auto.points_per_side=16); --text "person, dog" tracks what an open-vocabulary detector finds
for each phrase (pip install 'sam2_web[text]'; find.text.box_threshold=0.3 ...). Both may be added
to --prompts; found objects are numbered after its objects, at most limits.max_objects in all.
With --remote the job runs on a running sam2_web app or Space (URL or user/space id) and the
outputs are written here.

""" + EXIT_CODES_HELP


def exit_code(exc: BaseException) -> int:
    """The documented exit code for an exception raised by a job."""
    from sam2_web import errors

    if isinstance(exc, (KeyboardInterrupt, errors.CancelledError)):
        return EXIT_CANCELLED
    if isinstance(exc, errors.VideoReadError):
        return EXIT_CLIP
    if isinstance(exc, (errors.UnknownModelError, errors.CheckpointError, errors.HubUnavailableError,
                        errors.ConfigNotFoundError, errors.MissingExtraError)):
        return EXIT_MODEL
    if isinstance(exc, errors.ExportError):
        return EXIT_OUTPUT
    if isinstance(exc, (errors.PromptError, errors.FrameIndexError, errors.UnknownObjectError,
                        errors.LimitExceededError)):
        return EXIT_USAGE
    if _is_config_error(exc):
        return EXIT_USAGE
    return EXIT_ERROR


def _is_config_error(exc: BaseException) -> bool:
    """A malformed or unknown hydra override (hydra/omegaconf raise their own types)."""
    return type(exc).__module__.split(".")[0] in ("hydra", "omegaconf")


# --------------------------------------------------------------------------- arguments


def build_parser() -> argparse.ArgumentParser:
    """The ``sam2-web`` argument parser (subcommands ``mask``, ``models``, ``formats``)."""
    parser = argparse.ArgumentParser(
        prog="sam2-web", description="Segment Anything 2 for video editors: prompts in, mattes out.",
        epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    mask = sub.add_parser("mask", help="track the prompted objects and write mattes",
                          epilog=_MASK_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    mask.add_argument("clip", type=Path, help="video file or folder of frames")
    mask.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="hydra overrides (model=..., device=...)")
    mask.add_argument("--prompts", "-p", type=Path, help="prompts JSON (docs/prompts.schema.json); "
                      "needed unless --auto or --text finds the objects")
    mask.add_argument("--auto", type=int, metavar="FRAME", help="track every object found on FRAME (no clicks)")
    mask.add_argument("--min-area", type=int, default=None, metavar="PX",
                      help="with --auto: leave out objects smaller than PX pixels (default 0)")
    mask.add_argument("--text", metavar="QUERY", help='track what these phrases name, e.g. "person, dog"')
    mask.add_argument("--text-frame", type=int, default=None, metavar="N", help="with --text: the frame to search (default 0)")
    mask.add_argument("--out", "-o", type=Path, required=True, help="output folder")
    mask.add_argument("--format", "-f", dest="formats", action="append", default=None, metavar="FMT",
                      help="output format, repeat or comma-separate for several (see 'sam2-web formats'; default png)")
    mask.add_argument("--name", help="file stem of the outputs (default: the clip's name)")
    mask.add_argument("--feather", type=float, default=0.0, metavar="PX", help="soften matte edges by PX pixels")
    mask.add_argument("--grow", type=int, default=0, metavar="PX", help="grow (>0) or shrink (<0) masks by PX pixels")
    mask.add_argument("--invert", action="store_true", help="export the background instead of the objects")
    mask.add_argument("--soft-edges", action="store_true",
                      help="solve soft alpha (hair, motion blur) around each mask's edge from the frame's colours; "
                           "binary formats (index_png, coco_rle) stay binary")
    mask.add_argument("--edge-band", type=float, default=None, metavar="PX",
                      help="half-width of the soft-edge band (default: from the model's mask grid and the object)")
    mask.add_argument("--bit-depth", type=int, choices=(8, 16), default=8, help="matte precision (PNG, ProRes, FFV1)")
    mask.add_argument("--start", type=int, default=0, metavar="N", help="first frame to track (default 0)")
    mask.add_argument("--end", type=int, default=None, metavar="N", help="last frame to track (default: the last)")
    mask.add_argument("--direction", choices=("both", "forward", "backward"), default="both",
                      help="track from the earliest prompt forward, backward or both (default)")
    mask.add_argument("--remote", metavar="URL", help="run on a sam2_web app (http://host:port) or Space (user/space)")
    mask.add_argument("--progress", choices=("auto", "bar", "lines", "none"), default="auto",
                      help="progress display on stderr (auto: a bar on a terminal, lines otherwise)")

    sub.add_parser("models", help="list the models the registry knows")
    sub.add_parser("formats", help="list the export formats")
    from sam2_web.batch.command import add_parser as add_batch_parser

    add_batch_parser(sub)
    return parser


def parse_args(parser: argparse.ArgumentParser, argv: Optional[Sequence[str]]) -> argparse.Namespace:
    """Parse ``argv``; ``KEY=VALUE`` overrides may come before, between or after the options.

    Raises:
        SystemExit: (from argparse) on a usage error or ``--help``.
    """
    # argparse alone stops collecting a positional list at the first option.
    args, extra = parser.parse_known_args(argv)
    stray = [a for a in extra if a.startswith("-") or "=" not in a or args.command not in ("mask", "batch")]
    if stray:
        parser.error(f"unrecognized arguments: {' '.join(stray)}")
    if extra:
        args.overrides = [*args.overrides, *extra]
    return args


class _Usage(Exception):
    """A command-line mistake found after argparse (exit code 2)."""


# --------------------------------------------------------------------------- progress


class _ProgressView:
    """Shows ``(stage, done, total)`` reports as tqdm bars, plain lines, or nothing."""

    def __init__(self, mode: str):
        if mode == "auto":
            mode = "bar" if sys.stderr.isatty() else "lines"
        self.mode = mode
        self._stage: Optional[str] = None
        self._bar: Any = None
        self._lock = threading.Lock()

    def __call__(self, stage: str, done: int, total: int) -> None:
        with self._lock:
            if self.mode == "none":
                return
            if self.mode == "lines":
                print(f"{stage} {done}/{total}", file=sys.stderr, flush=True)
                return
            if stage != self._stage:
                self.close()
                from tqdm import tqdm

                unit, scale = ("B", True) if stage == "load" else ("step" if stage == "find" else "frame", False)
                self._bar = tqdm(total=total or None, desc=stage, unit=unit, unit_scale=scale, file=sys.stderr)
                self._stage = stage
            if total and self._bar.total != total:
                self._bar.total = total
            self._bar.update(done - self._bar.n)  # update() keeps tqdm's rate estimate right

    def close(self) -> None:
        """Finish the current bar (if any)."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
            self._stage = None


class _Interrupts:
    """First Ctrl-C: stop cleanly after the current frame. Second Ctrl-C (or SIGTERM): stop now.

    Either way the job's staged outputs are removed, so nothing half-written is left behind.
    """

    def __init__(self) -> None:
        self.cancel = threading.Event()
        self._saved: dict[int, Any] = {}

    def __enter__(self) -> "_Interrupts":
        if threading.current_thread() is threading.main_thread():
            self._saved[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_sigint)
            self._saved[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_sigterm)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._saved.items():
            signal.signal(sig, handler)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        if self.cancel.is_set():
            raise KeyboardInterrupt
        self.cancel.set()
        print("\nstopping after the current frame (Ctrl-C again to stop at once)...", file=sys.stderr, flush=True)

    def _on_sigterm(self, signum: int, frame: Any) -> None:
        self.cancel.set()
        raise KeyboardInterrupt


# --------------------------------------------------------------------------- commands


def _job_from_args(args: argparse.Namespace) -> Any:
    from sam2_web.errors import ExportError
    from sam2_web.jobs import FrameRange, MaskJob, OutputSpec
    from sam2_web.jobs.job import split_overrides
    from sam2_web.jobs.outputs import check_formats, check_stem

    try:
        model, checkpoint, device, rest = split_overrides(args.overrides)
    except ValueError as exc:
        raise _Usage(str(exc)) from None
    formats = [f.strip() for item in (args.formats or ["png"]) for f in item.split(",") if f.strip()]
    if args.edge_band is not None and not args.soft_edges:
        raise _Usage("--edge-band sets the soft-edge band: add --soft-edges")
    if args.edge_band is not None and not args.edge_band >= 0:
        raise _Usage(f"--edge-band must be >= 0 pixels, got {args.edge_band}")
    try:
        check_formats(formats)
        if args.name is not None:
            check_stem(args.name)  # a --name with folders in it could write outside --out
    except ExportError as exc:
        raise _Usage(str(exc)) from None
    prompts = _prompts_from_args(args)
    return MaskJob(
        clip=args.clip,
        objects=prompts.objects,
        normalized=prompts.normalized,
        auto=prompts.auto,
        text=prompts.text,
        output=OutputSpec(out_dir=args.out, formats=tuple(formats), feather_px=args.feather, grow_px=args.grow,
                          invert=args.invert, bit_depth=args.bit_depth, name=args.name,
                          soft_edges=args.soft_edges, edge_band_px=args.edge_band),
        model=model,
        checkpoint=Path(checkpoint) if checkpoint else None,
        device=device,
        overrides=tuple(rest),
        frame_range=FrameRange(args.start, args.end),
        direction=args.direction,
    )


def _prompts_from_args(args: argparse.Namespace) -> Any:
    """The prompts file (if any) with ``--auto`` / ``--text`` added (they replace the file's own)."""
    from dataclasses import replace

    from sam2_web.find.spec import AutoFind, TextFind, check_query
    from sam2_web.jobs import PromptSet, load_prompts

    if args.min_area is not None and args.auto is None:
        raise _Usage("--min-area goes with --auto FRAME")
    if args.text_frame is not None and args.text is None:
        raise _Usage("--text-frame goes with --text \"person, dog\"")
    if args.prompts is None and args.auto is None and args.text is None:
        raise _Usage("give --prompts FILE, or find the objects with --auto FRAME or --text \"person, dog\"")
    for flag, value in (("--auto", args.auto), ("--min-area", args.min_area), ("--text-frame", args.text_frame)):
        if value is not None and value < 0:
            raise _Usage(f"{flag} must be >= 0, got {value}")
    prompts = load_prompts(args.prompts) if args.prompts is not None else PromptSet(())
    if args.auto is not None:
        prompts = replace(prompts, auto=AutoFind(frame=args.auto, min_area=args.min_area or 0))
    if args.text is not None:
        try:
            check_query(args.text, "--text")
        except ValueError as exc:
            raise _Usage(str(exc)) from None
        prompts = replace(prompts, text=TextFind(query=args.text, frame=args.text_frame or 0))
    return prompts


def _cmd_mask(args: argparse.Namespace) -> int:
    from sam2_web.jobs import run_job, run_remote

    job = _job_from_args(args)
    view = _ProgressView(args.progress)
    try:
        with _Interrupts() as interrupts:
            if args.remote:
                token = os.environ.get("HF_TOKEN") if "://" not in args.remote else None
                result = run_remote(job, args.remote, progress=view, cancel=interrupts.cancel, token=token)
            else:
                result = run_job(job, progress=view, cancel=interrupts.cancel)
    finally:
        view.close()
    for note in result.notes:
        print(f"sam2-web: note: {note}", file=sys.stderr)
    first, last = result.tracked
    print(f"tracked frames {first}..{last} of {result.num_frames}; wrote:")
    for fmt, path in result.outputs.items():
        print(f"  {fmt:12s} {path}")
    return EXIT_OK


def _cmd_models(args: argparse.Namespace) -> int:
    from sam2_web import speeds
    from sam2_web.device import pick_device
    from sam2_web.models import AUTO, AUTO_BENCHMARK, auto_model, requested_model
    from sam2_web.registry import list_models

    device = pick_device("auto")
    here = speeds.device_label(device)
    sources: dict[str, int] = {}
    rows = []
    for m in list_models():
        score = m.quality.score(AUTO_BENCHMARK) if m.quality is not None else None
        quality = "-" if score is None else f"{score:.1f} [{sources.setdefault(m.quality.source, len(sources) + 1)}]"
        speed = speeds.speed_of(m.name, here, device.type)
        timed = speeds.per_frame_text(speed, 3)
        where = "-" if speed is None else ("this machine" if speed.here else speed.device)
        rows.append((m.name, m.label, f"{m.params_m:g} M", quality, timed.replace(" s/frame", ""), where,
                     m.repo_id, m.license or "-"))
    _print_table(("name", "label", "params", f"{AUTO_BENCHMARK} J&F", "s/frame (3 obj)", "measured on",
                  "hub repo", "licence"), rows)
    default = " (the default)" if requested_model() == AUTO else ""
    print(f"\nThis machine: {here}. model=auto{default} picks {auto_model(device)} here.")
    measured = speeds.samurai_ratio(device.type)
    cost = ("not measured" if measured is None
            else f"{measured[1]:.2f}x SAM 2's memory with 3 objects ({measured[0]}, bench.samurai)")
    print("memory=samurai (robust to occlusion, SAMURAI arXiv 2411.11922; any SAM 2 / 2.1, EdgeTAM or EfficientTAM "
          f"model, same weights): the filter is cheap, the 3 candidate masks per object are decoded anyway; "
          f"s/frame {cost}.")
    for source, n in sources.items():
        print(f"[{n}] {source}")
    return EXIT_OK


def _cmd_formats(args: argparse.Namespace) -> int:
    from sam2_web.export.formats import FORMATS

    rows = [(f.name, f.extension or "folder", "yes" if f.lossless else "no", "per object" if f.per_object else "merged",
             f.alpha, f.description) for f in FORMATS.values()]
    _print_table(("format", "output", "lossless", "objects", "alpha", "description"), rows)
    return EXIT_OK


def _print_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(str(r[k])) for r in [header, *rows]) for k in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths)).rstrip())


def _cmd_batch(args: argparse.Namespace) -> int:
    from sam2_web.batch.command import run_command

    return run_command(args)


_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "mask": _cmd_mask, "models": _cmd_models, "formats": _cmd_formats, "batch": _cmd_batch,
}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point of the ``sam2-web`` console script; returns the exit code (see ``--help``)."""
    parser = build_parser()
    try:
        args = parse_args(parser, argv)
    except SystemExit as exc:  # argparse exits 2 on usage errors and 0 on --help
        return int(exc.code or 0)
    debug = args.debug
    try:
        return _COMMANDS[args.command](args)
    except _Usage as exc:
        parser.print_usage(sys.stderr)
        print(f"sam2-web: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("sam2-web: cancelled; nothing was written", file=sys.stderr)
        return EXIT_CANCELLED
    except Exception as exc:  # every error becomes a message and a documented exit code
        code = exit_code(exc)
        if debug or code == EXIT_ERROR:
            import traceback

            traceback.print_exc()
        if code == EXIT_CANCELLED:  # the engine's own wording is about resuming in Python
            print("sam2-web: cancelled; nothing was written", file=sys.stderr)
        else:
            print(f"sam2-web: error: {exc}", file=sys.stderr)
        return code


if __name__ == "__main__":
    sys.exit(main())
