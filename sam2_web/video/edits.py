"""The user's prompts on a clip, in clip pixels and in the order they were given.

A session keeps every click, box and mask here (:class:`PromptLog`), besides the model-input
tensors the tracker holds: this is what a user interface draws, counts, undoes and replays on
another model. The tracker never reads it; :class:`~sam2_web.video.session.VideoSession` keeps the
two in step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Union

import numpy as np


@dataclass(frozen=True)
class Click:
    """One point: (x, y) in pixels of the clip's frames.

    ``label`` is the model's: 1 the object, 0 not the object (2 and 3, a box's corners given as
    points, and -1, padding, only come through the reference-compatible API).
    """

    frame_idx: int
    obj_id: int
    x: float
    y: float
    label: int = 1

    @property
    def positive(self) -> bool:
        """True for a click on the object (label 1)."""
        return self.label == 1


@dataclass(frozen=True)
class Box:
    """A box around the object, corners in clip pixels (x0 < x1, y0 < y1)."""

    frame_idx: int
    obj_id: int
    x0: float
    y0: float
    x1: float
    y1: float

    @property
    def corners(self) -> tuple[float, float, float, float]:
        """``(x0, y0, x1, y1)``."""
        return self.x0, self.y0, self.x1, self.y1


@dataclass(frozen=True, eq=False)
class MaskPrompt:
    """A whole (H, W) bool mask of the object on a frame (a start mask)."""

    frame_idx: int
    obj_id: int
    mask: np.ndarray = field(repr=False)


Prompt = Union[Click, Box, MaskPrompt]


def click_arguments(prompts: list[Prompt]) -> dict:
    """The tracker's ``add_points`` arguments for one object's clicks and box on one frame: every
    click in order, and the last box (one box per object and frame, as SAM 2 is trained)."""
    clicks = [p for p in prompts if isinstance(p, Click)]
    boxes = [p for p in prompts if isinstance(p, Box)]
    out: dict = {}
    if clicks:
        out["points"] = np.array([[p.x, p.y] for p in clicks], dtype=np.float32)
        out["labels"] = np.array([p.label for p in clicks], dtype=np.int32)
    if boxes:
        out["box"] = np.array(boxes[-1].corners, dtype=np.float32)
    return out


class PromptLog:
    """Every prompt of a session, oldest first. Undo takes back the last one."""

    def __init__(self) -> None:
        self._items: list[Prompt] = []

    def __len__(self) -> int:
        return len(self._items)

    def on(self, frame_idx: Optional[int] = None, obj_id: Optional[int] = None) -> list[Prompt]:
        """The prompts on ``frame_idx`` (None: every frame) of ``obj_id`` (None: every object)."""
        return [p for p in self._items
                if (frame_idx is None or p.frame_idx == frame_idx) and (obj_id is None or p.obj_id == obj_id)]

    def objects(self) -> list[int]:
        """Ids of the objects that have a prompt, in the order of their first prompt."""
        return list(dict.fromkeys(p.obj_id for p in self._items))

    def groups(self) -> list[tuple[int, int]]:
        """``(frame_idx, obj_id)`` of every object and frame with prompts, in the order first used."""
        return list(dict.fromkeys((p.frame_idx, p.obj_id) for p in self._items))

    def add(self, prompt: Prompt) -> None:
        """Append ``prompt``. A box replaces the object's earlier box on that frame, and a mask
        everything the object had there (both as the tracker treats them)."""
        if isinstance(prompt, (Box, MaskPrompt)):
            kind = Box if isinstance(prompt, Box) else None
            self._items = [p for p in self._items
                           if not (p.frame_idx == prompt.frame_idx and p.obj_id == prompt.obj_id
                                   and (kind is None or isinstance(p, kind)))]
        self._items.append(prompt)

    def replace(self, frame_idx: int, obj_id: int, prompts: list[Prompt]) -> None:
        """Make ``prompts`` the object's only prompts on the frame (appended at the end)."""
        self.drop(frame_idx, obj_id)
        self._items.extend(prompts)

    def pop(self) -> Optional[Prompt]:
        """Remove and return the newest prompt (None when there is none)."""
        return self._items.pop() if self._items else None

    def drop(self, frame_idx: Optional[int] = None, obj_id: Optional[int] = None) -> None:
        """Forget the prompts :meth:`on` would return for the same arguments."""
        doomed = {id(p) for p in self.on(frame_idx, obj_id)}
        self._items = [p for p in self._items if id(p) not in doomed]

    def clear(self) -> None:
        """Forget every prompt."""
        self._items.clear()

    def restore(self, items: list[Prompt]) -> None:
        """Put back what :meth:`on` returned earlier (undoes the changes made since)."""
        self._items = list(items)
