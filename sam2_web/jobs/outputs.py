"""Where a job's outputs go: checked before any work, written into a hidden staging folder,
and moved next to each other into the output folder only when every format succeeded.

So a failed, cancelled or killed job never leaves an output that looks complete: either all
requested formats appear, or none (besides a hidden ``.sam2web-job-*`` folder after a kill).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sam2_web.errors import CancelledError, ExportError

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


def target_path(out_dir: Path, stem: str, fmt: str) -> Path:
    """Final path of format ``fmt``: ``<out_dir>/<stem>_<fmt><ext>`` (a folder when ext is empty)."""
    from sam2_web.export.formats import FORMATS

    return Path(out_dir) / f"{stem}_{fmt}{FORMATS[fmt].extension}"


@dataclass
class Staging:
    """A job's outputs in progress. Create with :meth:`open` before the model runs.

    Attributes:
        out_dir: the final folder.
        folder: the hidden staging folder inside it.
        created: folders this job created (removed again if the job fails and they stay empty).
    """

    out_dir: Path
    folder: Path
    created: list[Path] = field(default_factory=list)
    written: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def open(cls, job: MaskJob) -> "Staging":
        """Check the formats and the targets, create the output folder and the staging folder.

        Raises:
            ExportError: unknown format, a folder that cannot be created or written, or a
                target that an export may not replace (a user folder of the same name).
        """
        from sam2_web.export.output import MARKER
        from sam2_web.export.formats import FORMATS

        check_formats(job.output.formats)
        out_dir = Path(job.output.out_dir).absolute()
        stem = job.output.stem(job.clip)
        for fmt in job.output.formats:
            target = target_path(out_dir, stem, fmt)
            if FORMATS[fmt].extension and target.is_dir():
                raise ExportError(f"{target} is a folder; remove it or choose another --out / --name")
            ours = (target / MARKER).is_file()
            if not FORMATS[fmt].extension and target.is_dir() and any(target.iterdir()) and not ours:
                raise ExportError(f"{target} exists and was not written by sam2-web; choose another --out / --name")
        created = [p for p in [out_dir, *out_dir.parents] if not p.exists()][::-1]
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            folder = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX, dir=out_dir))
        except OSError as exc:
            _remove_empty(created)
            raise ExportError(
                f"cannot write to the output folder {out_dir} ({exc.strerror or exc}); choose a folder you can write to"
            ) from exc
        return cls(out_dir, folder, created)

    def publish(self) -> dict[str, Path]:
        """Move every staged output to its final name; returns ``{format: final path}``.

        An older output of the same name is replaced (folders only if an export wrote them).
        """
        final: dict[str, Path] = {}
        for fmt, staged in self.written.items():
            target = self.out_dir / staged.name
            if target.is_dir() and not target.is_symlink():
                # Renaming over a non-empty folder is not possible: move the old one aside first.
                trash = Path(tempfile.mkdtemp(prefix=STAGING_PREFIX + "old-", dir=self.out_dir))
                os.replace(target, trash / target.name)
                os.replace(staged, target)
                shutil.rmtree(trash, ignore_errors=True)
            else:
                os.replace(staged, target)
            final[fmt] = target
        shutil.rmtree(self.folder, ignore_errors=True)
        return final

    def discard(self) -> None:
        """Remove the staging folder and any output folder this job created (if empty)."""
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_empty(self.created)


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):  # deepest first
        try:
            path.rmdir()
        except OSError:
            return


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
               is_cancelled: Callable[[], bool]) -> None:
    """Write every requested format of the job into ``staging``.

    Args:
        masks_of: frame index → ``{obj_id: (H, W) bool}`` or None for a frame without masks.
        info: the clip's ``VideoInfo``.
        frames: frame index → RGB frame, for formats drawn over the picture.
    Raises:
        ExportError from a writer; CancelledError when ``is_cancelled()`` turns true.
    """
    from sam2_web.export.formats import FORMATS, ExportOptions, export

    spec = job.output
    options = ExportOptions(names=job.names or None, grow_px=int(spec.grow_px), feather_px=float(spec.feather_px),
                            invert=bool(spec.invert), bit_depth=int(spec.bit_depth), name=spec.stem(job.clip))
    options.validate()
    n = info.num_frames
    for fmt in spec.formats:
        stream = counted((masks_of(i) for i in range(n)), f"export {fmt}", n, progress, is_cancelled)
        staging.written[fmt] = export(
            fmt, target_path(staging.folder, spec.stem(job.clip), fmt), stream,
            num_frames=n, fps=info.fps, width=info.width, height=info.height, obj_ids=job.obj_ids,
            start_timecode=info.start_timecode, frames=frames if FORMATS[fmt].needs_frames else None,
            options=options,
        )
