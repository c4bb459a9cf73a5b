"""Running a mask job for Blender, and finding the mattes it wrote.

Blender's bundled Python rarely has torch, so there are two ways to run the job:

* in this process, when ``sam2_web`` imports (installed into Blender's Python, or a folder
  named in the add-on preferences that holds it): ``sam2_web.jobs.run_job``;
* through the ``sam2-web mask`` command of another Python that has sam2_web (preferences),
  optionally with ``--remote`` to run on a sam2_web app or Space.

Both take the same prompts JSON and write the same PNG matte sequence, so the rest of the
add-on does not care which ran. Nothing here imports ``bpy``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Union

MATTE_FORMAT = "png"
# (stage, done, total): stage is "load", "track" or "export <format>", as sam2_web.jobs reports it.
Progress = Callable[[str, int, int], None]
_PROGRESS_LINE = re.compile(r"^(load|track|export \S+) (\d+)/(\d+)$")
_RUN_CLI = "import sys; from sam2_web.cli import main; sys.exit(main(sys.argv[1:]))"


class SetupError(Exception):
    """A problem the user fixes in the scene or the add-on's settings; the message says how."""


class Cancelled(SetupError):
    """The user stopped the job; nothing was added."""


@dataclass(frozen=True)
class JobSpec:
    """One tracking run, in plain values (no bpy, no engine types).

    Attributes:
        clip: the movie file.
        prompts: prompts JSON data (e.g. from markers) or the path of a prompts file.
        out_dir: folder receiving ``<name>_png/``.
        name: file stem of the outputs.
        model, checkpoint, device, overrides: which model runs where (see ``sam2_web.jobs.MaskJob``).
        first, last: inclusive movie frames to track (None: the clip's ends); widened to take
            in every prompted frame, so a click just outside the strip's handles still counts.
        direction: ``both``, ``forward`` or ``backward``.
        feather_px, grow_px, invert: matte edge options.
        soft_edges: solve soft alpha around the edges (``sam2-web mask --soft-edges``); the mattes
            are then 16-bit PNGs, which the matte strip reads as float coverage.
        edge_band_px: the soft-edge band's half-width in pixels; None = from the model.
    """

    clip: Path
    prompts: Union[dict, Path]
    out_dir: Path
    name: str
    model: Optional[str] = None  # None: the model configs/app.yaml selects
    checkpoint: Optional[str] = None
    device: str = "auto"
    overrides: tuple[str, ...] = ()
    first: Optional[int] = None
    last: Optional[int] = None
    direction: str = "both"
    feather_px: float = 0.0
    grow_px: int = 0
    invert: bool = False
    soft_edges: bool = False
    edge_band_px: Optional[float] = None

    @property
    def bit_depth(self) -> int:
        """16 for soft mattes (so their steps are finer than the 8-bit ones), else 8."""
        return 16 if self.soft_edges else 8


@dataclass
class Mattes:
    """The matte sequences a job wrote: one folder of PNGs per object, in frame order."""

    folder: Path
    sequences: dict[str, list[Path]] = field(default_factory=dict)  # object label -> frame files

    @classmethod
    def read(cls, folder: Path) -> "Mattes":
        """List ``folder/<label>/*.png`` (the PNG exporter's layout).

        Raises:
            SetupError: the folder holds no matte sequence.
        """
        sequences = {
            sub.name: sorted(sub.glob("*.png"))
            for sub in sorted(Path(folder).iterdir())
            if sub.is_dir() and not sub.name.startswith(".")
        }
        sequences = {label: files for label, files in sequences.items() if files}
        if not sequences:
            raise SetupError(f"no matte sequence was written to {folder}; run the job again")
        return cls(Path(folder), sequences)

    def union(self, target: Path) -> list[Path]:
        """Write the per-pixel maximum of every object's matte to ``target`` (one file per frame).

        Used for the cut-out: one Mask modifier per object would keep only where objects overlap.
        """
        import numpy as np
        from PIL import Image

        target.mkdir(parents=True, exist_ok=True)
        written = []
        for frame_files in zip(*self.sequences.values()):
            stack = [np.asarray(Image.open(path)) for path in frame_files]
            out = target / frame_files[0].name
            Image.fromarray(np.maximum.reduce(stack)).save(out)
            written.append(out)
        return written


def add_engine_path(prefs: Any) -> None:
    """Put the preferences' *sam2_web folder* on ``sys.path`` (first), if one is set."""
    folder = getattr(prefs, "engine_path", "") if prefs is not None else ""
    if folder:
        path = os.path.abspath(os.path.expanduser(folder))
        if path not in sys.path:
            sys.path.insert(0, path)


def engine_importable() -> bool:
    """Whether this Python can run jobs itself (``sam2_web`` and ``sam2_web.jobs`` import)."""
    try:
        import sam2_web.jobs  # noqa: F401
        import sam2_web.models  # noqa: F401
    except ImportError:
        return False
    return True


def run(spec: JobSpec, *, python: str = "", remote: str = "", progress: Optional[Progress] = None,
        cancel: Optional[threading.Event] = None) -> Mattes:
    """Run the job and return its mattes. Safe to call from a worker thread (no bpy here).

    Args:
        spec: the job.
        python: another Python with sam2_web to run ``sam2-web mask`` in; "" = this process.
        remote: a sam2_web app URL or Space id to run on (through ``python``'s CLI).
        progress: ``progress(stage, done, total)``.
        cancel: set it to stop the job between frames (nothing is published then).
    Raises:
        Cancelled: ``cancel`` was set.
        SetupError: no engine is reachable, or the external command failed (its message).
        sam2_web errors (PromptError, VideoReadError, ...) when running in this process.
    """
    cancel = cancel or threading.Event()
    if python or remote:
        folder = _run_external(spec, python or sys.executable, remote, progress, cancel)
    elif engine_importable():
        from sam2_web.errors import CancelledError

        try:
            folder = _run_here(spec, progress, cancel)
        except CancelledError:
            raise Cancelled("tracking cancelled; nothing was added") from None
    else:
        raise SetupError(
            "sam2_web is not importable in Blender's Python; set the add-on preference 'sam2_web folder' "
            "to a folder holding it (and torch), or 'External Python' to a Python where it is installed"
        )
    return Mattes.read(folder)


def _run_here(spec: JobSpec, progress: Optional[Progress], cancel: threading.Event) -> Path:
    from sam2_web.jobs import FrameRange, MaskJob, OutputSpec, load_prompts, parse_prompts, run_job

    prompts = load_prompts(spec.prompts) if isinstance(spec.prompts, Path) else parse_prompts(spec.prompts)
    first, last = widened(spec.first, spec.last, [f for o in prompts.objects for f in o.prompted_frames()])
    job = MaskJob(
        clip=spec.clip,
        objects=prompts.objects,
        normalized=prompts.normalized,
        output=OutputSpec(out_dir=spec.out_dir, formats=(MATTE_FORMAT,), feather_px=spec.feather_px,
                          grow_px=spec.grow_px, invert=spec.invert, name=spec.name, bit_depth=spec.bit_depth,
                          soft_edges=spec.soft_edges, edge_band_px=spec.edge_band_px),
        model=spec.model,
        checkpoint=Path(spec.checkpoint) if spec.checkpoint else None,
        device=spec.device,
        overrides=tuple(spec.overrides),
        frame_range=FrameRange(first or 0, last),
        direction=spec.direction,
    )
    return run_job(job, progress=progress, cancel=cancel).outputs[MATTE_FORMAT]


def cli_arguments(spec: JobSpec, prompts_file: Path, remote: str = "") -> list[str]:
    """The ``sam2-web mask`` arguments for ``spec`` (prompts already written to ``prompts_file``)."""
    args = ["mask", str(spec.clip), "--prompts", str(prompts_file), "--out", str(spec.out_dir),
            "--format", MATTE_FORMAT, "--name", spec.name, "--direction", spec.direction,
            "--feather", repr(float(spec.feather_px)), "--grow", str(int(spec.grow_px)), "--progress", "lines"]
    if spec.invert:
        args.append("--invert")
    if spec.soft_edges:
        args += ["--soft-edges", "--bit-depth", str(spec.bit_depth)]
        if spec.edge_band_px is not None:
            args += ["--edge-band", repr(float(spec.edge_band_px))]
    # Only prompts we built (markers) can be read here without the engine; a file is checked by the CLI.
    frames = _prompted_frames(spec.prompts) if isinstance(spec.prompts, dict) else []
    first, last = widened(spec.first, spec.last, frames)
    if first is not None:
        args += ["--start", str(first)]
    if last is not None:
        args += ["--end", str(last)]
    if remote:
        args += ["--remote", remote]
    args += ([f"model={spec.model}"] if spec.model else []) + [f"device={spec.device}"]
    if spec.checkpoint:
        args.append(f"checkpoint={spec.checkpoint}")
    return args + list(spec.overrides)


def widened(first: Optional[int], last: Optional[int], frames: list[int]) -> tuple[Optional[int], Optional[int]]:
    """``(first, last)`` stretched to include ``frames`` (None bounds stay open)."""
    if frames:
        first = None if first is None else min(first, min(frames))
        last = None if last is None else max(last, max(frames))
    return first, last


def _prompted_frames(data: dict) -> list[int]:
    """Frames of a by-object prompts dict (the shape :func:`markers.marker_prompts` builds)."""
    return [int(entry["frame"]) for obj in data.get("objects", []) for entry in obj.get("frames", [])]


def _run_external(spec: JobSpec, python: str, remote: str, progress: Optional[Progress],
                  cancel: threading.Event) -> Path:
    with tempfile.TemporaryDirectory(prefix="sam2web-blender-") as tmp:
        if isinstance(spec.prompts, Path):
            prompts_file = spec.prompts
        else:
            prompts_file = Path(tmp) / "prompts.json"
            prompts_file.write_text(json.dumps(spec.prompts), encoding="utf-8")
        command = [python, "-c", _RUN_CLI, *cli_arguments(spec, prompts_file, remote)]
        # stdout goes to a file: only stderr is read live, so neither pipe can fill up and block.
        with open(Path(tmp) / "stdout.txt", "w+", encoding="utf-8") as out:
            try:
                process = subprocess.Popen(command, stdout=out, stderr=subprocess.PIPE, text=True)
            except OSError as exc:
                raise SetupError(f"cannot start the external Python {python!r} ({exc}); fix 'External Python'") from exc
            threading.Thread(target=_stop_on_cancel, args=(process, cancel), daemon=True).start()
            errors = _follow(process, progress)
            process.wait()
            out.seek(0)
            stdout = out.read()
        if process.returncode != 0 and cancel.is_set():
            raise Cancelled("tracking cancelled; nothing was added")
        if process.returncode != 0:
            message = errors[-1] if errors else f"exit code {process.returncode}"
            raise SetupError(f"sam2-web failed: {message.removeprefix('sam2-web: ')}")
    folder = Path(spec.out_dir) / f"{spec.name}_{MATTE_FORMAT}"
    if not folder.is_dir():
        raise SetupError(f"sam2-web reported success but {folder} is missing; its output was:\n{stdout}")
    return folder


def _stop_on_cancel(process: subprocess.Popen, cancel: threading.Event) -> None:
    """Terminate the command once ``cancel`` is set (it then discards its staged outputs)."""
    while process.poll() is None:
        if cancel.wait(0.2):
            process.terminate()
            return


def _follow(process: subprocess.Popen, progress: Optional[Progress]) -> list[str]:
    """Relay ``stage done/total`` lines to ``progress``; return the other stderr lines."""
    others = []
    assert process.stderr is not None
    for line in process.stderr:
        line = line.strip()
        found = _PROGRESS_LINE.match(line)
        if found and progress:
            progress(found.group(1), int(found.group(2)), int(found.group(3)))
        elif line and not found:
            others.append(line)
    return others
