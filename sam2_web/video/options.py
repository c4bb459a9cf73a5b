"""Per-session engine settings, with the one copy of their defaults.

The app config (``configs/app.yaml``) gets its ``engine`` group from these defaults (see
``sam2_web.models.compose_app_config``), the video predictor takes them as constructor arguments,
and ``open_session(**opts)`` overrides them per session: all three read this dataclass.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

from sam2_web.video.memory import HISTORY_MODES

MEMORY_DTYPES = ("bfloat16", "float32")


@dataclass
class SessionOptions:
    """Per-session engine settings (the predictor's defaults, overridden by ``open_session``).

    Attributes:
        fill_hole_area: fill background holes (and remove foreground specks, see
            ``remove_sprinkles``) up to this many low-res pixels in every predicted mask; 0 = off.
            Runs on CPU too (the reference skips it without its CUDA extension).
        remove_sprinkles: with ``fill_hole_area``, also delete small foreground specks.
        non_overlap_masks: at every pixel keep only the highest-scoring object in the outputs.
        clear_non_cond_mem_around_input: when a prompted frame is merged into memory, drop the
            tracked memories within ``num_maskmem * stride`` frames of it (they may describe
            the object as it was before the correction).
        add_all_frames_to_correct_as_cond: a click on an already tracked frame makes it a
            conditioning frame (so the correction steers later frames). The reference default
            (False) treats it as a one-off edit that the next propagation overwrites; sessions
            opened with ``open_session`` default to True.
        memory_dtype: "bfloat16" (as the reference; half the memory) or "float32" storage of
            spatial memories.
        history: where memories evicted from the tracking window go: "disk" (exact, bounded
            RAM), "ram" (as the reference) or "drop" (bounded RAM and disk; corrections on
            long-tracked frames then see fewer memories than the reference would).
        feature_cache_mb: RAM budget for cached image features.
        feature_cache_dir: parent folder for spilled features (None: RAM only).
        result_dir: keep result masks as PNGs in a temp subfolder of this folder (None: run
            lengths in RAM).
        temp_dir: parent folder of the session's temp files (None: the system's).
        read_ahead: frames decoded ahead of the tracker.
        samurai: track with SAMURAI's motion-aware memory (a box filter per object steers the
            choice among the decoder's three masks and keeps occluded frames out of the memory;
            ``sam2_web.modeling.motion``): True / False, or None for the model's own setting
            (its config's ``samurai_mode``, off for SAM 2; ``memory=samurai`` turns it on).
    """

    fill_hole_area: int = 0
    remove_sprinkles: bool = True
    non_overlap_masks: bool = False
    clear_non_cond_mem_around_input: bool = False
    add_all_frames_to_correct_as_cond: bool = False
    memory_dtype: str = "bfloat16"
    history: str = "disk"
    feature_cache_mb: float = 1024
    feature_cache_dir: Optional[str] = None
    result_dir: Optional[str] = None
    temp_dir: Optional[str] = None
    read_ahead: int = 6
    samurai: Optional[bool] = None

    @classmethod
    def names(cls) -> frozenset[str]:
        """The option names (the dataclass's fields)."""
        return frozenset(f.name for f in dataclasses.fields(cls))

    def replace(self, **changes: Any) -> "SessionOptions":
        """A validated copy with ``changes`` applied; unknown names raise TypeError."""
        unknown = sorted(set(changes) - self.names())
        if unknown:
            raise TypeError(f"unknown session option(s) {unknown}; valid options: {sorted(self.names())}")
        new = dataclasses.replace(self, **changes)
        new.validate()
        return new

    def validate(self) -> None:
        """Raise ValueError for out-of-range settings."""
        if self.memory_dtype not in MEMORY_DTYPES:
            raise ValueError(f"memory_dtype must be 'bfloat16' or 'float32', got {self.memory_dtype!r}")
        if self.history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {self.history!r}")
        if self.samurai is not None and not isinstance(self.samurai, bool):
            raise ValueError(f"samurai must be true, false or null (the model's setting), got {self.samurai!r}")
        if self.fill_hole_area < 0 or self.feature_cache_mb < 0:
            raise ValueError("fill_hole_area and feature_cache_mb must be >= 0")
