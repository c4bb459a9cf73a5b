"""Where a job's outputs go: checked before any work, written into a hidden staging folder,
and moved next to each other into the output folder only when every format succeeded
(``sam2_web.export.output.StagedOutputs`` does the staging and publishing).

So a failed, cancelled or killed job never leaves an output that looks complete: either all
requested formats appear, or none (besides a hidden ``.sam2web-job-*`` folder after a kill).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sam2_web.errors import CancelledError, ExportError
from sam2_web.export.output import StagedOutputs

from sam2_web.jobs.job import MaskJob

STAGING_PREFIX = ".sam2web-job-"

# (stage, done, total): stage is "load", "track" or "export <format>".
Progress = Callable[[str, int, int], None]


def check_formats(formats: Iterable[str]) -> None:
    """Raise ExportError naming the valid formats if one of ``formats`` is unknown (or none given)."""
    from sam2_web.export.formats import FORMATS

    formats = list(formats)
    if not formats:
        raise ExportError(f"no output format given; choose one or more of: {', '.join(FORMATS)}")
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ExportError(f"unknown format(s) {', '.join(unknown)}; choose from: {', '.join(FORMATS)}")


MAX_STEM_CHARS = 200  # "<stem>_<format><ext>" must stay under 255 bytes, the usual file-name limit


def check_stem(stem: str) -> str:
    """Return ``stem`` if it is a plain file name every output can be named after.

    Raises:
        ExportError: a name with a folder in it (``a/b``, ``../../x``), ``.``/``..``, control
            characters, or longer than ``MAX_STEM_CHARS``: outputs go only into the output folder.
    """
    if not stem or stem in (".", "..") or any(c in stem for c in "/\\") or not stem.isprintable():
        raise ExportError(
            f"the output name {stem[:80]!r} is not a plain file name (no folders, '/', '\\' or control "
            "characters); name the folder with --out and the files with --name"
        )
    if len(stem) > MAX_STEM_CHARS:
        raise ExportError(f"the output name is {len(stem)} characters long; give a --name of at most {MAX_STEM_CHARS}")
    return stem


def _never_the_input(clip: Path, targets: list[Path]) -> None:
    """Refuse outputs that would replace the input clip (or the folder holding its frames)."""
    source = Path(clip).resolve()
    for target in targets:
        final = target.resolve()
        if final == source or final in source.parents:
            raise ExportError(
                f"{target.name} would overwrite the input clip {Path(clip).name}; choose another --out or --name"
            )


def target_path(out_dir: Path, stem: str, fmt: str) -> Path:
    """Final path of format ``fmt``: ``<out_dir>/<stem>_<fmt><ext>`` (a folder when ext is empty)."""
    from sam2_web.export.formats import FORMATS

    return Path(out_dir) / f"{stem}_{fmt}{FORMATS[fmt].extension}"


@dataclass
class Staging:
    """A job's outputs in progress, one per format. Create with :meth:`open` before the model runs.

    The staging itself is ``sam2_web.export.output.StagedOutputs`` (the one atomic-publish
    mechanism); this adds the job's naming (``<stem>_<format><ext>``) and formats as keys.

    Attributes:
        outputs: the staged outputs, by file name.
        names: ``{format: file name}``.
    """

    outputs: StagedOutputs
    names: dict[str, str]

    @classmethod
    def open(cls, job: MaskJob) -> "Staging":
        """Check the formats and the targets, create the output folder and the staging folder.

        Raises:
            ExportError: unknown format, a folder that cannot be created or written, or a
                target that an export may not replace (a user folder of the same name).
        """
        from sam2_web.export.formats import FORMATS

        check_formats(job.output.formats)
        out_dir = Path(job.output.out_dir).absolute()
        stem = check_stem(job.output.stem(job.clip))
        names = {fmt: target_path(out_dir, stem, fmt).name for fmt in job.output.formats}
        targets = {names[fmt]: not FORMATS[fmt].extension for fmt in names}
        _never_the_input(job.clip, [out_dir / name for name in targets])
        return cls(StagedOutputs.open(out_dir, targets, prefix=STAGING_PREFIX, hint="choose another --out / --name"),
                   names)

    @property
    def folder(self) -> Path:
        """The hidden staging folder (inside the output folder)."""
        return self.outputs.folder

    def path(self, fmt: str) -> Path:
        """Where format ``fmt`` is written before it is published."""
        return self.outputs.path(self.names[fmt])

    def publish(self) -> dict[str, Path]:
        """Move every output to its final name together; returns ``{format: final path}``.

        An older output of the same name is replaced (folders only if an export wrote them).
        """
        final = self.outputs.publish()
        return {fmt: final[name] for fmt, name in self.names.items()}

    def discard(self) -> None:
        """Remove the staging folder and any output folder this job created (if empty)."""
        self.outputs.discard()


def counted(frames: Iterator[Any], stage: str, total: int, progress: Optional[Progress],
            is_cancelled: Callable[[], bool]) -> Iterator[Any]:
    """Pass ``frames`` through, reporting progress and stopping with CancelledError on request."""
    for done, item in enumerate(frames, start=1):
        if is_cancelled():
            raise CancelledError(f"stopped while writing {stage.split()[-1]}; nothing was written")
        yield item
        if progress:
            progress(stage, done, total)


def export_all(job: MaskJob, staging: Staging, masks_of: Callable[[int], Optional[dict[int, np.ndarray]]], *,
               info: Any, frames: Optional[Callable[[int], np.ndarray]], progress: Optional[Progress],
               is_cancelled: Callable[[], bool], mask_resolution: int = 256) -> None:
    """Write every requested format of the job into ``staging``.

    Args:
        masks_of: frame index → ``{obj_id: (H, W) bool}`` or None for a frame without masks.
        info: the clip's ``VideoInfo``.
        frames: frame index → RGB frame, for formats drawn over the picture (and soft edges).
        mask_resolution: cells across the long side of the model's mask grid (its input size / 4),
            which sets the soft edges' automatic band width.
    Raises:
        ExportError from a writer; CancelledError when ``is_cancelled()`` turns true.
    """
    for fmt in job.output.formats:
        export_one(job, staging, fmt, masks_of, info=info, frames=frames, progress=progress,
                   is_cancelled=is_cancelled, mask_resolution=mask_resolution)


def export_one(job: MaskJob, staging: Staging, fmt: str, masks_of: Callable[[int], Optional[dict[int, np.ndarray]]],
               *, info: Any, frames: Optional[Callable[[int], np.ndarray]], progress: Optional[Progress],
               is_cancelled: Callable[[], bool], mask_resolution: int = 256) -> None:
    """Write format ``fmt`` of the job into ``staging`` (see :func:`export_all`; safe to run one
    format per thread)."""
    from sam2_web.export.formats import FORMATS, ExportOptions, export

    spec = job.output
    options = ExportOptions(names=job.names or None, grow_px=int(spec.grow_px), feather_px=float(spec.feather_px),
                            invert=bool(spec.invert), bit_depth=int(spec.bit_depth), name=spec.stem(job.clip),
                            soft_edges=bool(spec.soft_edges), edge_band_px=spec.edge_band_px,
                            mask_resolution=int(mask_resolution))
    options.validate()
    n = info.num_frames
    stream = counted((masks_of(i) for i in range(n)), f"export {fmt}", n, progress, is_cancelled)
    try:
        export(
            fmt, staging.path(fmt), stream,
            num_frames=n, fps=info.fps, width=info.width, height=info.height, obj_ids=job.obj_ids,
            start_timecode=info.start_timecode,
            frames=frames if FORMATS[fmt].needs_frames or options.soft_edges else None,
            options=options,
        )
    except ExportError:
        raise
    except OSError as exc:  # disk full, file too large, folder removed under us ...
        raise ExportError(
            f"writing {fmt} failed: {exc.strerror or exc}; free some disk space (or choose another --out) "
            "and run again: nothing was published"
        ) from exc
