"""Exports that run while the clip is still being tracked.

A job used to track every frame and only then write its formats, decoding the clip a second time
for the formats drawn over the picture; on a GPU the exports then took as long as the tracking.
Here each format is written on its own thread as soon as the frames it needs are *final* (no
later pass of the job will produce them again), reading the clip through its own decoder, while
the tracker goes on. Tracking and export stop together: a failed export stops the tracking, a
failed or cancelled tracking stops the exports.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, Optional

import numpy as np

from sam2_web.errors import CancelledError


class FinalFrames:
    """Which frames of a job's passes are final, for exporters to wait on.

    Args:
        passes: the job's passes in the order they run, each ``(first_frame, last_frame)`` of
            the frames it produces.
    """

    def __init__(self, passes: list[tuple[int, int]]):
        self._passes = passes
        self._final: set[int] = set()
        self._done = False
        self._error: Optional[BaseException] = None
        self._cond = threading.Condition()

    def produced(self, frame_idx: int, pass_index: int) -> None:
        """Pass ``pass_index`` has stored ``frame_idx``; final unless a later pass produces it again."""
        later = any(a <= frame_idx <= b for a, b in self._passes[pass_index + 1:])
        if not later:
            with self._cond:
                self._final.add(frame_idx)
                self._cond.notify_all()

    def finish(self) -> None:
        """Every pass is done: every frame is final."""
        with self._cond:
            self._done = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Tracking stopped with ``error``: waiting exporters stop too."""
        with self._cond:
            self._error = error
            self._cond.notify_all()

    def wait(self, frame_idx: int) -> None:
        """Block until ``frame_idx`` is final.

        Raises:
            CancelledError: tracking failed or was cancelled.
        """
        if not any(a <= frame_idx <= b for a, b in self._passes):
            return  # no pass produces it: it stays empty whatever happens
        with self._cond:
            while not (self._done or frame_idx in self._final or self._error is not None):
                self._cond.wait()
            if self._error is not None:
                raise CancelledError(f"tracking stopped ({self._error}); nothing was written") from None


class ConcurrentExports:
    """Write each format on its own thread, each reading masks only once they are final.

    Args:
        write_one: ``write_one(fmt, masks_of, frames)`` writes one format (see ``export_all``).
        formats: the formats to write.
        masks_of: frame index -> ``{obj_id: mask}`` or None (from the session's store).
        final: the :class:`FinalFrames` of the tracking.
        open_frames: opens a private frame reader (``get(i)``, ``close()``) for a format that
            draws over the picture, or None when no format needs one.
        needs_frames: which formats need the picture.
    """

    def __init__(self, write_one: Callable[..., None], formats: list[str],
                 masks_of: Callable[[int], Optional[dict[int, np.ndarray]]], final: FinalFrames,
                 open_frames: Optional[Callable[[], Any]], needs_frames: Callable[[str], bool]):
        self._errors: list[BaseException] = []
        self._lock = threading.Lock()

        def waited(i: int) -> Optional[dict[int, np.ndarray]]:
            final.wait(i)
            return masks_of(i)

        def run(fmt: str) -> None:
            reader = open_frames() if open_frames is not None and needs_frames(fmt) else None
            try:
                write_one(fmt, waited, reader.get if reader is not None else None)
            except BaseException as exc:  # noqa: BLE001 - handed to the job's thread
                with self._lock:
                    self._errors.append(exc)
            finally:
                if reader is not None:
                    reader.close()

        self._threads = [threading.Thread(target=run, args=(fmt,), name=f"sam2web-export-{fmt}", daemon=True)
                         for fmt in formats]

    def start(self) -> None:
        """Start every format's thread."""
        for thread in self._threads:
            thread.start()

    def failed(self) -> bool:
        """Whether a format has failed on its own (the job then stops tracking)."""
        return self.error() is not None

    def error(self) -> Optional[BaseException]:
        """The first failure of a format that is not a stop caused by the tracking, or None."""
        with self._lock:
            return next((e for e in self._errors if not isinstance(e, CancelledError)), None)

    def join(self) -> None:
        """Wait for every format; re-raise the first failure (one of its own before a stop)."""
        for thread in self._threads:
            thread.join()
        if self._errors:
            raise self.error() or self._errors[0]
