"""What a batch leaves on disk besides the outputs: a completion marker per job, and one hidden
work folder per job while it runs.

* The work folder ``<out>/.sam2web-batch-<stem>`` has a fixed name, so a retry after a killed
  worker (or a re-run after a killed batch) finds and removes what the dead attempt left.
* The marker ``<out>/.sam2web-done-<stem>.json`` is removed before a job starts and written
  (atomically: a rename from the work folder) only after its outputs were published. It holds
  the job's fingerprint and a signature of each output, so a re-run skips a job only when the
  same job was finished and its outputs are still the ones it wrote.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Optional

from sam2_web.jobs import MaskJob

WORK_PREFIX = ".sam2web-batch-"
MARKER_PREFIX = ".sam2web-done-"
MARKER_VERSION = 1


def out_dir(job: MaskJob) -> Path:
    """The job's output folder, absolute."""
    return Path(job.output.out_dir).absolute()


def stem(job: MaskJob) -> str:
    """The file stem of the job's outputs."""
    return job.output.stem(job.clip)


def work_dir(job: MaskJob) -> Path:
    """The job's hidden work folder (fixed name: a retry removes what a dead attempt left)."""
    return out_dir(job) / f"{WORK_PREFIX}{stem(job)}"


def marker_path(job: MaskJob) -> Path:
    """The job's completion marker."""
    return out_dir(job) / f"{MARKER_PREFIX}{stem(job)}.json"


# --------------------------------------------------------------------------- fingerprints


def _file_identity(path: Optional[Path]) -> Any:
    """Path, size and modification time (content hashes would read every clip in full)."""
    if path is None:
        return None
    path = Path(path).absolute()
    try:
        if path.is_dir():
            entries = sorted((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in path.iterdir() if p.is_file())
            digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()
            return {"path": str(path), "folder": digest}
        st = path.stat()
    except OSError:
        return {"path": str(path), "missing": True}
    return {"path": str(path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def fingerprint(job: MaskJob) -> str:
    """A hash of everything that decides a job's outputs: the clip and start masks (path, size,
    time), prompts, model, checkpoint, device, overrides, range, direction and output options."""
    masks = [_file_identity(o.start_mask.path) for o in job.objects if o.start_mask is not None]
    data = {
        "clip": _file_identity(job.clip),
        "objects": [dataclasses.asdict(o) for o in job.objects],
        "start_masks": masks,
        "normalized": job.normalized,
        "output": {**dataclasses.asdict(job.output), "out_dir": str(out_dir(job))},
        "model": job.model,
        "checkpoint": _file_identity(job.checkpoint),
        "device": job.device,
        "overrides": list(job.overrides),
        "range": [job.frame_range.start, job.frame_range.end],
        "direction": job.direction,
    }
    if job.auto is not None or job.text is not None:  # only then: other jobs keep their fingerprints
        data["find"] = [None if f is None else dataclasses.asdict(f) for f in (job.auto, job.text)]
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


# --------------------------------------------------------------------------- markers


def output_signature(path: Path) -> Optional[dict]:
    """Size and time of a file, or file count and total size of a folder; None if missing."""
    try:
        if path.is_dir():
            count = size = 0
            for root, _dirs, files in os.walk(path):
                for name in files:
                    count += 1
                    size += os.stat(os.path.join(root, name)).st_size
            return {"files": count, "bytes": size}
        st = path.stat()
    except OSError:
        return None
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def prepare_marker(job: MaskJob, digest: str, outputs: dict[str, Path], num_frames: int,
                   tracked: tuple[int, int]) -> Path:
    """Write the marker of the just published ``outputs`` into the job's work folder; returns
    that file, which :func:`commit_marker` then renames into place."""
    record = {
        "version": MARKER_VERSION,
        "fingerprint": digest,
        "clip": str(Path(job.clip).absolute()),
        "num_frames": int(num_frames),
        "tracked": [int(tracked[0]), int(tracked[1])],
        "outputs": {fmt: {"path": str(path), "signature": output_signature(Path(path))}
                    for fmt, path in outputs.items()},
    }
    pending = work_dir(job) / "done.json"
    pending.write_text(json.dumps(record, indent=1), encoding="utf-8")
    return pending


def commit_marker(job: MaskJob, pending: Path) -> Path:
    """Move a prepared marker into place (one rename: a marker is either whole or absent)."""
    target = marker_path(job)
    os.replace(pending, target)
    return target


def clear_marker(job: MaskJob) -> None:
    """Remove the job's marker: from now on its outputs do not count as complete."""
    try:
        marker_path(job).unlink()
    except FileNotFoundError:
        pass


def completed(job: MaskJob, digest: str) -> Optional[dict]:
    """The marker's record if this exact job finished and its outputs are untouched, else None.

    Outputs that were deleted, replaced (e.g. by a later ``sam2-web mask``) or edited by hand
    no longer match their recorded signature, so the job is redone.
    """
    try:
        record = json.loads(marker_path(job).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(record, dict) or record.get("version") != MARKER_VERSION or record.get("fingerprint") != digest:
        return None
    outputs = record.get("outputs")
    if not isinstance(outputs, dict) or set(outputs) != set(job.output.formats):
        return None
    for entry in outputs.values():
        if not isinstance(entry, dict) or "path" not in entry:
            return None
        signature = output_signature(Path(entry["path"]))
        if signature is None or signature != entry.get("signature"):
            return None
    return record
