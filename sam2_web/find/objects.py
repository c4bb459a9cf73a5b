"""Found things become video prompts: generator records (segment everything) and detector boxes
(text prompts) turn into objects on one frame, numbered and named, within the objects limit.

    records = SAM2AutomaticMaskGenerator(predictor).generate(session.frame(0))
    found = objects_from_records(records, frame=0, max_objects=32, min_area=500)
    found.add_to(session)            # a mask prompt per object on frame 0
    for masks in session.propagate(): ...

A record's mask is the object's prompt (what the generator found is what is tracked); a
detector's box is a box prompt, exactly as if the user had drawn it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Optional, Sequence

import numpy as np

from sam2_web.errors import PromptError


@dataclass(frozen=True)
class Detection:
    """One box an open-vocabulary detector found for a phrase.

    Attributes:
        phrase: the phrase of the query it answers.
        box: ``(x0, y0, x1, y1)`` in pixels of the picture.
        score: the detector's confidence (0..1).
    """

    phrase: str
    box: tuple[float, float, float, float]
    score: float


@dataclass(frozen=True)
class FoundObject:
    """An object found on a frame, ready to be tracked.

    Attributes:
        obj_id: its id in the session / job.
        name: display name ("object 3", or the phrase that found it).
        frame: the frame it was found on.
        box: ``(x0, y0, x1, y1)`` pixels around it (x1, y1 one past the last pixel).
        score: the generator's predicted IoU, or the detector's confidence.
        area: pixels in its mask (0 for a detector's box).
        mask: (H, W) bool mask prompt; None when the box is the prompt.
    """

    obj_id: int
    name: str
    frame: int
    box: tuple[float, float, float, float]
    score: float
    area: int = 0
    mask: Optional[np.ndarray] = field(default=None, compare=False, repr=False)

    def add_to(self, session: Any) -> Any:
        """Give ``session`` (a ``VideoSession``) this object's prompt; returns the frame's masks."""
        if self.mask is not None:
            return session.add_mask(self.frame, self.obj_id, self.mask)
        return session.add_prompt(self.frame, self.obj_id, box=np.asarray(self.box, dtype=np.float32))


@dataclass(frozen=True)
class FoundObjects:
    """What a search on one frame gave.

    Attributes:
        objects: the objects to track, in id order.
        found: how many candidates there were before the size and count limits.
        notes: what the user should be told (candidates left out, phrases that found nothing).
    """

    objects: tuple[FoundObject, ...]
    found: int
    notes: tuple[str, ...] = ()

    def add_to(self, session: Any) -> None:
        """Give ``session`` every object's prompt."""
        for obj in self.objects:
            obj.add_to(session)

    def __len__(self) -> int:
        return len(self.objects)


def record_mask(record: dict) -> np.ndarray:
    """The (H, W) bool mask of a generator record in any ``output_mode``.

    Raises:
        PromptError: a record without a readable ``segmentation``.
    """
    seg = record.get("segmentation")
    if isinstance(seg, np.ndarray) and seg.ndim == 2:
        return seg.astype(bool, copy=False)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), str):
        from sam2_web.export.rle import decode

        return decode(seg)
    if isinstance(seg, dict) and isinstance(seg.get("counts"), list) and "size" in seg:
        from sam2_web.runlength import from_run_lengths

        height, width = (int(v) for v in seg["size"])
        return from_run_lengths(seg["counts"], (height, width), order="F")  # COCO's column-major runs
    raise PromptError("a record without a mask: pass the records SAM2AutomaticMaskGenerator.generate() returned")


def objects_from_records(records: Sequence[dict], frame: int, *, first_id: int = 1, max_objects: int = 0,
                         min_area: int = 0) -> FoundObjects:
    """Generator records → objects with a mask prompt each on ``frame``.

    Args:
        records: what ``SAM2AutomaticMaskGenerator.generate`` returned for that frame.
        frame: the frame the records were generated on.
        first_id: id of the first object (the others follow); names are ``object <id>``.
        max_objects: keep at most this many, the largest first (0 = no limit).
        min_area: leave out masks of fewer pixels.
    Returns:
        :class:`FoundObjects`, largest first; ``notes`` says what the limits left out. Empty when
        nothing was found (the caller decides whether that is an error).
    """
    sized = [(int(r["area"]) if "area" in r else int(record_mask(r).sum()), k) for k, r in enumerate(records)]
    big = sorted((item for item in sized if item[0] >= max(min_area, 1)), key=lambda item: -item[0])
    notes = []
    if len(big) < len(records) and min_area > 0:
        notes.append(f"{len(records) - len(big)} of {len(records)} masks found on frame {frame} are smaller "
                     f"than {min_area} pixels and are left out")
    if 0 < max_objects < len(big):
        notes.append(f"{len(big)} objects found on frame {frame}; tracking the {max_objects} largest "
                     "(limits.max_objects; raise it, or the minimum area, to change that)")
        big = big[:max_objects]
    objects = []
    for n, (area, k) in enumerate(big):
        mask = record_mask(records[k])
        x, y, w, h = (float(v) for v in records[k]["bbox"])
        obj_id = first_id + n
        objects.append(FoundObject(obj_id, f"object {obj_id}", frame, (x, y, x + w + 1, y + h + 1),
                                   float(records[k].get("predicted_iou", 0.0)), area, mask))
    return FoundObjects(tuple(objects), len(records), tuple(notes))


def objects_from_detections(detections: Iterable[Detection], frame: int, phrases: Sequence[str], *,
                            first_id: int = 1, max_objects: int = 0) -> FoundObjects:
    """Detector boxes → objects with a box prompt each on ``frame``, named after their phrase
    (``person``, ``person 2`` ... when a phrase found several).

    Args:
        detections: boxes found on that frame.
        frame: the frame they were found on.
        phrases: the phrases that were asked for (a phrase without a box gets a note).
        first_id: id of the first object.
        max_objects: keep at most this many, the most confident first (0 = no limit).
    Returns:
        :class:`FoundObjects` in phrase order, most confident first within a phrase.
    """
    found = list(detections)
    kept = sorted(found, key=lambda d: -d.score)
    notes = [f'nothing found for "{p}" on frame {frame}' for p in phrases if all(d.phrase != p for d in found)]
    if 0 < max_objects < len(kept):
        notes.append(f"{len(kept)} objects found on frame {frame}; tracking the {max_objects} most confident "
                     "(limits.max_objects)")
        kept = kept[:max_objects]
    order = {p: k for k, p in enumerate(phrases)}
    kept.sort(key=lambda d: (order.get(d.phrase, len(order)), -d.score))
    objects, counts = [], {}
    for n, det in enumerate(kept):
        counts[det.phrase] = counts.get(det.phrase, 0) + 1
        name = det.phrase if counts[det.phrase] == 1 else f"{det.phrase} {counts[det.phrase]}"
        objects.append(FoundObject(first_id + n, name, frame, tuple(float(v) for v in det.box), float(det.score)))
    return FoundObjects(tuple(objects), len(found), tuple(notes))


def write_prompts(found: FoundObjects, folder: Path) -> tuple:
    """The objects as job prompts (``sam2_web.jobs.ObjectPrompts``): a mask object's mask is
    written to ``folder`` as a PNG start mask, a box object gets a box on its frame.
    """
    from PIL import Image

    from sam2_web.jobs.prompts import FramePrompt, ObjectPrompts, StartMask

    out = []
    for obj in found.objects:
        if obj.mask is None:
            out.append(ObjectPrompts(obj.obj_id, obj.name, frames=(FramePrompt(obj.frame, box=obj.box),)))
            continue
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"found_{obj.obj_id}.png"
        Image.fromarray(obj.mask.astype(np.uint8) * 255).save(path)
        out.append(ObjectPrompts(obj.obj_id, obj.name, start_mask=StartMask(obj.frame, path)))
    return tuple(out)
