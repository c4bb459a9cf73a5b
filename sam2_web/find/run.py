"""Finding objects on a frame, for every face: the web app's "Find objects" and "Find: ...", the
CLI's ``--auto`` / ``--text``, prompts files and batch manifests (through the job runner).

    candidates = find_candidates(model, frame_rgb, progress=on_progress)     # generator records
    k = pick_candidate(candidates, x, y)                                      # the one clicked
    found = objects_from_records([candidates[k]], frame_idx, first_id=next_id)
    found.add_to(session)

    found = find_by_text(frame_rgb, "person, dog", frame_idx, first_id=next_id)
    found.add_to(session)

Settings come from ``configs/app.yaml`` (``find.auto``: the generator's options; ``find.text``:
the detector and its thresholds; ``limits.max_objects``) via :func:`find_settings`.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import numpy as np

from sam2_web.errors import PromptError
from sam2_web.find.objects import FoundObjects, objects_from_detections, objects_from_records, record_mask, write_prompts
from sam2_web.find.spec import TextFind, check_query, split_phrases
from sam2_web.video.cancel import Cancel

Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class FindSettings:
    """How objects are found (``find`` and ``limits.max_objects`` of ``configs/app.yaml``).

    Attributes:
        auto: ``SAM2AutomaticMaskGenerator`` options.
        detector: Hub id or local folder of the text detector.
        revision: Hub revision of the detector (None = main).
        box_threshold: the detector's box-score threshold (None = the detector's default).
        max_objects: objects per clip (0 = no limit).
        cache_dir: Hub cache (None = huggingface_hub's).
    """

    auto: dict = field(default_factory=dict)
    detector: str = "google/owlv2-base-patch16-ensemble"
    revision: Optional[str] = None
    box_threshold: Optional[float] = None
    max_objects: int = 32
    cache_dir: Optional[str] = None


def find_settings(overrides: Sequence[str] = (), cfg: Any = None) -> FindSettings:
    """The find settings ``configs/app.yaml`` composed with hydra ``overrides`` gives (or ``cfg``,
    an app config already composed).

    Raises:
        hydra's errors for a malformed override.
    """
    from omegaconf import OmegaConf

    if cfg is None:
        from sam2_web.models import compose_app_config

        cfg = compose_app_config(list(overrides))
    find = OmegaConf.to_container(cfg.find, resolve=True) if "find" in cfg else {}
    text = find.get("text") or {}
    defaults = FindSettings()
    limits = cfg.get("limits") or {}
    return FindSettings(
        auto=dict(find.get("auto") or {}),
        detector=str(text.get("detector") or defaults.detector),
        revision=text.get("revision"),
        box_threshold=text.get("box_threshold"),
        max_objects=int(limits.get("max_objects", defaults.max_objects) or 0),
        cache_dir=(cfg.get("hub") or {}).get("cache_dir"),
    )


# --------------------------------------------------------------------------- segment everything


def find_candidates(model: Any, image: np.ndarray, *, options: Optional[dict] = None,
                    progress: Optional[Progress] = None, cancel: Cancel = None) -> list[dict]:
    """Everything the automatic mask generator finds in one picture, largest first.

    Args:
        model: the network (a ``SAM2Base``; a loaded video predictor is one).
        image: (H, W, 3) uint8 RGB (e.g. ``session.frame(i)``).
        options: generator options (default: :func:`find_settings`'s ``auto``).
        progress: ``progress(done, total)`` per encoder pass and decoder batch.
        cancel: an Event or callable, checked between steps.
    Returns:
        The generator's records (``segmentation`` an (H, W) bool mask), sorted by area, largest first.
    Raises:
        PromptError: not an image; CancelledError.
    """
    from sam2_web.automatic_mask_generator import SAM2AutomaticMaskGenerator

    options = find_settings().auto if options is None else options
    gen = SAM2AutomaticMaskGenerator(model, **{**options, "output_mode": "binary_mask"})
    records = gen.generate(image, progress=progress, cancel=cancel)
    return sorted(records, key=lambda r: -r["area"])


def pick_candidate(records: Sequence[dict], x: float, y: float) -> Optional[int]:
    """Index of the smallest candidate mask under pixel ``(x, y)`` (the one a click means), or None."""
    col, row = int(x), int(y)
    best = None
    for k, record in enumerate(records):
        mask = record_mask(record)
        if 0 <= row < mask.shape[0] and 0 <= col < mask.shape[1] and mask[row, col]:
            if best is None or record["area"] < records[best]["area"]:
                best = k
    return best


def no_candidates_message(frame: int, min_area: int) -> str:
    """What to tell a user when a frame gave nothing to track."""
    smaller = f" or a smaller minimum area than {min_area} px" if min_area > 0 else ""
    return (f"no objects found on frame {frame}; try another frame{smaller}, or lower "
            "find.auto.pred_iou_thresh / find.auto.stability_score_thresh")


# --------------------------------------------------------------------------- text


def find_by_text(image: np.ndarray, query: str | TextFind, frame: int = 0, *, first_id: int = 1,
                 settings: Optional[FindSettings] = None, detector: Any = None,
                 progress: Optional[Callable[[int, int], None]] = None) -> FoundObjects:
    """Objects named by the phrases of ``query`` in one picture, one per box the detector finds.

    Args:
        image: (H, W, 3) uint8 RGB.
        query: ``"person, dog"`` or a :class:`TextFind` (its threshold wins over ``settings``).
        frame: the frame the picture is (for the objects' prompts).
        first_id: id of the first object.
        settings: detector and limits (default: :func:`find_settings`).
        detector: an already loaded :class:`~sam2_web.find.text.TextDetector` (default: load
            ``settings.detector``, kept in memory for the next call).
        progress: download progress ``(bytes, total)`` while the detector is fetched.
    Returns:
        :class:`FoundObjects` (box prompts, named after their phrase); empty if nothing was found.
    Raises:
        PromptError: an empty query. MissingExtraError: ``transformers`` is not installed.
        HubUnavailableError, CheckpointError: the detector cannot be downloaded.
    """
    from sam2_web.find.text import load_detector

    find = query if isinstance(query, TextFind) else TextFind(query=query, frame=frame)
    check_query(find.query)
    settings = find_settings() if settings is None else settings
    if detector is None:
        detector = load_detector(settings.detector, revision=settings.revision, cache_dir=settings.cache_dir,
                                 progress=progress)
    phrases = split_phrases(find.query)
    box_threshold = find.box_threshold if find.box_threshold is not None else settings.box_threshold
    detections = detector.detect(image, phrases, box_threshold=box_threshold)
    return objects_from_detections(detections, frame, phrases, first_id=first_id, max_objects=settings.max_objects)


# --------------------------------------------------------------------------- jobs and nodes


def find_objects(model: Any, frame_at: Callable[[int], np.ndarray], *, auto: Any = None, text: Any = None,
                 existing_ids: Sequence[int] = (), settings: Optional[FindSettings] = None,
                 progress: Optional[Progress] = None, cancel: Cancel = None) -> FoundObjects:
    """Run an ``auto`` and/or ``text`` search (``sam2_web.find.spec``); found objects are numbered
    after ``existing_ids`` and, with them, stay within ``settings.max_objects``.

    Args:
        model: the network (a loaded video predictor is one).
        frame_at: frame index → (H, W, 3) uint8 RGB.
        auto, text: an ``AutoFind`` / ``TextFind``, or None.
        existing_ids: ids of the objects prompted by hand.
        settings: default :func:`find_settings`.
        progress: ``progress(done, total)`` of the segment-everything search.
        cancel: an Event or callable.
    Returns:
        :class:`FoundObjects` of both searches (auto's first), with their notes.
    Raises:
        PromptError: a search found nothing, or no room is left under ``limits.max_objects``.
        MissingExtraError, HubUnavailableError, CheckpointError: the text detector cannot be used.
        CancelledError.
    """
    settings = find_settings() if settings is None else settings
    limit = settings.max_objects
    room = limit - len(existing_ids) if limit > 0 else 0
    if limit > 0 and room <= 0:
        raise PromptError(f"{len(existing_ids)} objects are already prompted, the most a clip may have "
                          "(limits.max_objects); find no more, or drop some")
    next_id = max(existing_ids, default=0) + 1
    objects, notes, total = [], [], 0
    if auto is not None:
        records = find_candidates(model, frame_at(auto.frame), options=settings.auto, progress=progress,
                                  cancel=cancel)
        found = objects_from_records(records, auto.frame, first_id=next_id, max_objects=room,
                                     min_area=auto.min_area)
        if not found.objects:
            raise PromptError(no_candidates_message(auto.frame, auto.min_area))
        objects += found.objects
        notes += found.notes
        total += found.found
        next_id += len(found)
        if limit > 0:
            room -= len(found)
            if room <= 0 and text is not None:
                raise PromptError("segmenting everything already found as many objects as a clip may have "
                                  "(limits.max_objects); raise the minimum area, or drop the text search")
    if text is not None:
        found = find_by_text(frame_at(text.frame), text, text.frame, first_id=next_id,
                             settings=replace(settings, max_objects=room))
        if not found.objects:
            raise PromptError(f'nothing found for "{text.query}" on frame {text.frame}; try other words, another '
                              "frame, or a lower find.text.box_threshold")
        objects += found.objects
        notes += found.notes
        total += found.found
    return FoundObjects(tuple(objects), total, tuple(notes))


def find_for_job(job: Any, frames: Any, model: Any, folder: Path, *, progress: Optional[Callable] = None,
                 cancel: Cancel = None) -> tuple[tuple, tuple[str, ...]]:
    """A job's ``auto`` / ``text`` searches (:func:`find_objects` with the settings of the job's
    app overrides), as job prompts: found masks become start masks written to ``folder``.

    Args:
        job: a ``MaskJob`` (its frames already checked against the clip).
        frames: the clip's ``FrameSource``.
        model: the loaded video predictor.
        folder: where found masks are written (a temporary folder).
        progress: the job's ``progress(stage, done, total)``; reports stage ``find``.
        cancel: an Event or callable.
    Returns:
        ``(objects, notes)``: ``ObjectPrompts`` of the found objects and what to tell the user.
    Raises:
        as :func:`find_objects`.
    """
    def report(done: int, total: int) -> None:
        if progress:
            progress("find", done, total)

    found = find_objects(model, frames.get, auto=job.auto, text=job.text, existing_ids=job.obj_ids,
                         settings=find_settings(job.app_overrides()), progress=report, cancel=cancel)
    return write_prompts(found, folder), found.notes


def temporary_folder() -> tempfile.TemporaryDirectory:
    """A folder for a job's found masks, removed when the job ends."""
    return tempfile.TemporaryDirectory(prefix="sam2web-found-")
