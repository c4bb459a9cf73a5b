"""Where exports land: atomic outputs (written in a hidden folder next to the target, moved into
place on success, several at once if need be) and an ffmpeg process fed raw frames on stdin,
with its errors turned into ``ExportError``.
"""

from __future__ import annotations

import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

import numpy as np

from sam2_web.errors import ExportError
from sam2_web.export.common import ExportClip


# --------------------------------------------------------------------------- atomic output


# Written into every folder output, so a later export may replace that folder wholesale but
# never a folder the user made (pointing an export at ~/Desktop must not delete it).
MARKER = ".sam2_web_export"
STAGING_PREFIX = ".sam2web-partial-"
_REPLACE_HINT = "choose a new name or remove it"


def _check_replaceable(target: Path, folder: bool, hint: str = _REPLACE_HINT) -> None:
    if not folder and target.is_dir():
        raise ExportError(f"{target} is a folder, not a file; {hint}")
    if folder and target.is_dir() and any(target.iterdir()) and not (target / MARKER).is_file():
        raise ExportError(f"{target} already exists and was not written by sam2-web; {hint}")


def check_output(target: Path, *, folder: bool = False) -> None:
    """Cheap up-front check, creating nothing: may ``target`` be written (and replaced)?

    ``atomic_output`` repeats the check for real when it creates the temp; this one lets a
    caller fail before it starts producing masks.

    Raises:
        ExportError: the nearest existing ancestor is a file or not writable, or the target
            is a folder an export may not replace.
    """
    target = Path(target)
    _check_replaceable(target, folder)
    existing = next(p for p in [target.parent, *target.parent.parents] if p.exists() or p == p.parent)
    if not existing.is_dir():
        raise ExportError(f"{existing} is a file, not a folder; choose a folder you can write to")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ExportError(f"the output folder {existing} is not writable; choose a folder you can write to")


@dataclass
class StagedOutputs:
    """Outputs written into a hidden folder inside ``out_dir``, then moved into it together.

    The one atomic-publish mechanism: a single export (:func:`atomic_output`) and a job's several
    formats (``sam2_web.jobs.outputs``) both go through it. Either every output appears under its
    final name or none does; an older output of the same name is replaced only then (a folder
    only if an export wrote it, see ``MARKER``). A killed process leaves only the hidden folder.

    Attributes:
        out_dir: the final folder.
        folder: the hidden staging folder inside it.
        targets: ``{name: is a folder}`` of the outputs to publish.
        created: folders :meth:`open` created; :meth:`discard` removes them again when empty.
    """

    out_dir: Path
    folder: Path
    targets: dict[str, bool]
    created: list[Path] = field(default_factory=list)

    @classmethod
    def open(cls, out_dir: Path, targets: Mapping[str, bool], *, prefix: str = STAGING_PREFIX,
             hint: str = _REPLACE_HINT) -> "StagedOutputs":
        """Check every target, then create ``out_dir`` (and its parents) and the staging folder.

        Args:
            out_dir: the final folder.
            targets: ``{file or folder name: is a folder}``.
            prefix: name prefix of the hidden staging folder.
            hint: what the user should do when a target may not be replaced.
        Raises:
            ExportError: a target an export may not replace, or a folder that cannot be created
                or written to.
        """
        out_dir = Path(out_dir)
        for name, folder in targets.items():
            _check_replaceable(out_dir / name, folder, hint)
        created = [p for p in [out_dir, *out_dir.parents] if not p.exists()][::-1]
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=prefix, dir=out_dir))
        except OSError as exc:
            _remove_empty(created)
            raise ExportError(
                f"cannot write to the output folder {out_dir} ({exc.strerror or exc}); choose a folder you can write to"
            ) from exc
        return cls(out_dir, staging, dict(targets), created)

    def path(self, name: str) -> Path:
        """Where to write the output that is published as ``out_dir/name`` (not created here)."""
        return self.folder / name

    def publish(self) -> dict[str, Path]:
        """Move every staged output to its final name; returns ``{name: final path}``.

        Raises:
            ExportError: an output was not written (then nothing is published).
        """
        missing = [name for name in self.targets if not os.path.lexists(self.path(name))]
        if missing:
            raise ExportError(f"{', '.join(missing)} was not written; nothing was published")
        final: dict[str, Path] = {}
        for name, folder in self.targets.items():
            staged = self.path(name)
            if folder and not (staged / MARKER).is_file():
                (staged / MARKER).write_text(f"{name}\n")
            _replace(staged, self.out_dir / name)
            final[name] = self.out_dir / name
        shutil.rmtree(self.folder, ignore_errors=True)
        return final

    def discard(self) -> None:
        """Remove the staging folder, and the folders :meth:`open` created if they are empty."""
        shutil.rmtree(self.folder, ignore_errors=True)
        _remove_empty(self.created)


@contextmanager
def atomic_output(target: Path, *, folder: bool = False) -> Iterator[Path]:
    """Give a temporary path for ``target`` and move it into place only on success.

    The temp lives in a hidden ``.<name>.partial-XXXX`` folder next to the target (clearly
    unfinished) and is created empty (a file, or a folder when ``folder``), with the usual
    permissions of a new file. On any exception it
    is removed (with any folders created for it) and the exception propagates; an existing
    ``target`` is replaced only after the new output is complete. Folder outputs get a small
    ``MARKER`` file so that a later export may replace them.

    Raises:
        ExportError: up front, if the folder cannot be created or written to, or the target
            is a folder that an export may not replace.
    """
    target = Path(target)
    staged = StagedOutputs.open(target.parent, {target.name: folder}, prefix=f".{target.name}.partial-")
    try:
        tmp = staged.path(target.name)
        if folder:
            tmp.mkdir()
        else:
            tmp.touch()  # writers (and ffmpeg) open the file by name
        yield tmp
        staged.publish()
    except BaseException:
        staged.discard()
        raise


def _remove_empty(folders: list[Path]) -> None:
    for path in reversed(folders):  # deepest first
        try:
            path.rmdir()
        except OSError:
            return  # not empty (someone else wrote there) or already gone: leave it


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


def _replace(tmp: Path, target: Path) -> None:
    if not target.exists() and not target.is_symlink():
        os.replace(tmp, target)
        return
    # os.replace cannot put a folder over a non-empty folder: move the old output aside first,
    # so there is never a moment with a half-written output under the final name.
    aside = target.parent / f".{target.name}.old-{secrets.token_hex(4)}"
    os.replace(target, aside)
    try:
        os.replace(tmp, target)
    except OSError:
        os.replace(aside, target)
        raise
    _remove(aside)


# --------------------------------------------------------------------------- ffmpeg


def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary: the system one (full codec set) or imageio-ffmpeg's.

    Raises:
        ExportError: when neither is available.
    """
    exe = shutil.which("ffmpeg")
    if exe:
        return exe
    try:
        import imageio_ffmpeg
    except ImportError:
        imageio_ffmpeg = None
    if imageio_ffmpeg is not None:
        return imageio_ffmpeg.get_ffmpeg_exe()
    raise ExportError("ffmpeg was not found; install it (e.g. apt install ffmpeg) to export video formats")


def _tail(stream: IO[bytes], lines: int = 8) -> str:
    stream.seek(0)
    text = stream.read().decode("utf-8", errors="replace").strip().splitlines()
    return "\n".join(text[-lines:]) or "(no output)"


class FfmpegPipe:
    """An ffmpeg process reading raw frames of one pixel format from stdin.

    Use as a context manager: ``write()`` each frame, leaving the block closes stdin and
    checks the exit status; an exception inside the block kills ffmpeg instead.
    """

    def __init__(self, clip: ExportClip, in_pix_fmt: str, out_args: Sequence[str], out_path: Path, container: str):
        self._cmd = [
            ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y",
            "-f", "rawvideo", "-pix_fmt", in_pix_fmt, "-s", f"{clip.width}x{clip.height}",
            "-framerate", clip.rate, "-i", "pipe:0",
            *out_args,
            "-r", clip.rate, "-frames:v", str(clip.num_frames),
            "-f", container, str(out_path),
        ]
        self._stderr = tempfile.TemporaryFile()
        self._proc: subprocess.Popen | None = None

    def __enter__(self) -> "FfmpegPipe":
        try:
            self._proc = subprocess.Popen(self._cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._stderr)
        except OSError as exc:
            self._stderr.close()
            raise ExportError(f"could not start ffmpeg ({exc}); check that ffmpeg is installed") from exc
        return self

    def write(self, frame: np.ndarray) -> None:
        """Send one frame (already in the input pixel format's layout)."""
        assert self._proc is not None and self._proc.stdin is not None
        try:
            self._proc.stdin.write(np.ascontiguousarray(frame).tobytes())
        except (BrokenPipeError, ValueError) as exc:
            self._proc.wait()
            raise ExportError(f"ffmpeg stopped while encoding:\n{_tail(self._stderr)}") from exc

    def __exit__(self, exc_type, exc, tb) -> None:
        proc = self._proc
        assert proc is not None
        try:
            if exc_type is not None:
                proc.kill()
                proc.wait()
                return
            try:
                proc.stdin.close()  # type: ignore[union-attr]
            except BrokenPipeError:
                pass  # ffmpeg already exited; its status and stderr below tell why
            if proc.wait() != 0:
                raise ExportError(f"ffmpeg failed (exit {proc.returncode}):\n{_tail(self._stderr)}")
        finally:
            if proc.stdin and not proc.stdin.closed:
                try:
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            self._stderr.close()
