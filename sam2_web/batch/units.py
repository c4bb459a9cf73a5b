"""A job becomes one unit of work, or — split by object over several workers — one part per
group of objects plus a merge that writes the job's outputs from the parts' masks.

When a split gives the same masks as the whole job (checked against the engine, see
:func:`split_units`): our tracker segments every object from that object's own memory, one
object at a time, so objects do not see each other, with two exceptions —

* ``engine.non_overlap_masks`` keeps, at every pixel, only the highest-scoring object: objects
  then depend on each other and a job is never split;
* a pass starts at the earliest prompted frame of *all* the job's objects, and an object first
  prompted later is tracked from there too (its frames before its own prompt come from that
  pass). So every part must contain an object prompted on that first frame; the job splits into
  at most as many parts as there are such objects.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from sam2_web.jobs import MaskJob

from sam2_web.batch.work import JOB, MERGE, PART, Unit


def couples_objects(job: MaskJob) -> Optional[str]:
    """Why the job's objects are not tracked independently under its config, or None.

    A config that cannot be composed counts as coupling (the job then runs whole and reports
    the config error itself).
    """
    from sam2_web import compose_app_config

    try:
        cfg = compose_app_config(job.app_overrides())
    except Exception as exc:  # hydra/omegaconf raise their own types; the job reports it when it runs
        return f"its config does not compose ({exc})"
    if cfg.get("engine", {}).get("non_overlap_masks", False):
        return "engine.non_overlap_masks keeps one object per pixel, so the objects are not tracked independently"
    if cfg.get("model", {}).get("non_overlap_masks_for_mem_enc", False):
        return "model.non_overlap_masks_for_mem_enc couples the objects' memories"
    return None


def split_units(job_id: str, job: MaskJob, fingerprint: str, workers: int) -> tuple[list[Unit], Optional[str]]:
    """Parts and a merge for ``job`` over up to ``workers`` workers, or why it stays whole.

    Returns:
        ``(units, note)``: the part units followed by the merge unit and None; or the whole
        job as one unit and the reason it was not split.
    """
    whole = [Unit(job_id, JOB, job, fingerprint)]
    if workers < 2:
        return whole, "not split: there is only one worker"
    if job.auto is not None or job.text is not None:
        return whole, "not split: its objects are found when it runs (auto/text)"
    if len(job.objects) < 2:
        return whole, "not split: the job has one object"
    reason = couples_objects(job)
    if reason:
        return whole, f"not split: {reason}"
    first_frame = {o.obj_id: o.prompted_frames()[0] for o in job.objects}
    start = min(first_frame.values())
    anchors = [o for o in job.obj_ids if first_frame[o] == start]
    others = [o for o in job.obj_ids if first_frame[o] != start]
    if len(anchors) < 2:
        return whole, (f"not split: only object {anchors[0]} is prompted on frame {start}, where tracking starts; "
                       "objects first prompted later are tracked from that frame too, so they stay with it")
    n = min(workers, len(anchors))
    groups: list[list[int]] = [[] for _ in range(n)]
    for k, obj_id in enumerate(anchors):
        groups[k % n].append(obj_id)
    for obj_id in others:
        min(groups, key=len).append(obj_id)
    parts = [Unit(job_id, PART, job, fingerprint, part=k, obj_ids=tuple(g), parts=n) for k, g in enumerate(groups)]
    return parts + [Unit(job_id, MERGE, job, fingerprint, parts=n)], None


class UnitQueue:
    """The units still to run. A merge is released when every part of its job finished; a
    failed part withdraws its job's other pending units."""

    def __init__(self, units: list[Unit]):
        self._pending: deque[Unit] = deque(u for u in units if u.kind != MERGE)
        self._merges = {u.job_id: u for u in units if u.kind == MERGE}
        self._parts_left = {u.job_id: u.parts for u in self._merges.values()}
        self._given_up: set[str] = set()

    def __bool__(self) -> bool:
        return bool(self._pending)

    def take(self, model_key: Optional[tuple] = None) -> Optional[Unit]:
        """The next unit, preferring one that needs the model ``model_key`` (already loaded)."""
        if not self._pending:
            return None
        if model_key is not None:
            for unit in self._pending:
                if unit.model_key in ((), model_key):
                    self._pending.remove(unit)
                    return unit
        return self._pending.popleft()

    def put_back(self, unit: Unit) -> None:
        """Run ``unit`` again, before anything else (a retry)."""
        self._pending.appendleft(unit)

    def part_done(self, unit: Unit) -> None:
        """A part finished; queue the merge once all parts have."""
        self._parts_left[unit.job_id] -= 1
        if self._parts_left[unit.job_id] == 0 and unit.job_id not in self._given_up:
            self._pending.appendleft(self._merges[unit.job_id])

    def give_up(self, job_id: str) -> None:
        """The job failed: drop its pending units (parts in flight finish but lead nowhere)."""
        self._given_up.add(job_id)
        self._pending = deque(u for u in self._pending if u.job_id != job_id)

    def drain(self) -> list[Unit]:
        """Remove and return every pending unit (the batch was cancelled)."""
        units = list(self._pending)
        self._pending.clear()
        return units
