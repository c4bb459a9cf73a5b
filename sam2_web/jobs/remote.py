"""Run a mask job on a running sam2_web app or Hugging Face Space through ``gradio_client``.

The server does the heavy part with its ``/segment`` endpoint (clip + prompts → tracked masks as
COCO RLE JSON); the exports are then written here by the same code as an in-process run, so the
outputs are the same files. The clip is uploaded; it is also read locally for its timing and,
for formats drawn over the picture, its frames.

Differences from an in-process run, all refused with a clear message rather than silently
changed: the server picks the weights (no local checkpoint or hydra overrides), tracks both
directions over the whole clip, and takes clicks and boxes only (no start masks). A frame
range is honoured by emptying the frames outside it.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from sam2_web.errors import CancelledError, HubUnavailableError, PromptError, Sam2WebError
from sam2_web.export.rle import decode as decode_rle

from sam2_web.jobs.job import MaskJob
from sam2_web.jobs.prompts import flat_prompts
from sam2_web.jobs.outputs import Progress, Staging, export_all
from sam2_web.jobs.runner import Cancel, JobResult, cancel_check

# How often a waiting client looks at the cancel flag (not a timing assumption: the wait ends
# as soon as the server answers).
_POLL_S = 0.2


class RemoteMasks:
    """The per-frame masks of a COCO RLE document, decoded one frame at a time."""

    def __init__(self, document: dict, obj_ids: list[int], first: int, last: int):
        self.first, self.last = first, last
        self._by_frame: dict[int, dict[int, dict]] = {}
        frame_of_image = {img["id"]: img.get("frame_index", img["id"]) for img in document.get("images", [])}
        for ann in document.get("annotations", []):
            frame = int(frame_of_image.get(ann["image_id"], ann["image_id"]))
            obj = int(ann.get("track_id", ann["category_id"]))
            if obj in obj_ids:
                self._by_frame.setdefault(frame, {})[obj] = ann["segmentation"]

    def __call__(self, frame: int) -> Optional[dict[int, np.ndarray]]:
        if not self.first <= frame <= self.last or frame not in self._by_frame:
            return None
        return {o: decode_rle(rle) for o, rle in self._by_frame[frame].items()}


def _refuse_unsupported(job: MaskJob) -> None:
    if Path(job.clip).is_dir():
        raise PromptError("a remote server takes a video file, not a folder of frames; "
                          "encode the frames or run in-process")
    if job.auto is not None or job.text is not None:
        raise PromptError("finding objects (--auto, --text) runs in-process; drop --remote, or give clicks/boxes")
    if any(o.start_mask is not None for o in job.objects):
        raise PromptError("start masks need an in-process run; drop --remote or give clicks/boxes instead")
    if job.direction != "both":
        raise PromptError("a remote server always tracks both directions; drop --direction or drop --remote")
    if job.checkpoint is not None or job.overrides or job.device is not None:
        raise PromptError(
            "a remote server uses its own weights and settings: drop the checkpoint, device and hydra "
            "overrides (keep model=...), or run in-process"
        )


def _client(url: str, token: Optional[str], download_dir: Path) -> Any:
    import httpx
    from gradio_client import Client

    try:
        # analytics off: a plugin must not phone home on the user's behalf.
        return Client(url, token=token, verbose=False, download_files=str(download_dir), analytics_enabled=False)
    except (OSError, ValueError, httpx.HTTPError) as exc:  # Hub errors for a Space id are httpx errors too
        raise HubUnavailableError(
            f"cannot reach a sam2_web server at {url} ({exc}); check the URL and that the app is running"
        ) from exc


def _wait(job: Any, is_cancelled, progress: Optional[Progress]) -> Any:
    from gradio_client.exceptions import AppError

    waiter = threading.Event()
    job.add_done_callback(lambda _future: waiter.set())
    while not waiter.wait(_POLL_S):
        if is_cancelled():
            job.cancel()
            raise CancelledError("stopped while the server was tracking; nothing was written")
    try:
        return job.result()
    except AppError as exc:
        raise Sam2WebError(f"the server refused the job: {exc}") from None


def run_remote(job: MaskJob, url: str, *, progress: Optional[Progress] = None, cancel: Cancel = None,
               token: Optional[str] = None) -> JobResult:
    """Run ``job`` on the sam2_web app at ``url`` (or a Space id ``user/space``) and write its outputs here.

    Args:
        job: the mask job (clicks/boxes, direction ``both``, no local weights or overrides).
        url: ``http://host:port/`` of a running app, or a Hugging Face Space id.
        progress: ``progress(stage, done, total)``; the tracking stage reports 0 then done.
        cancel: an Event or callable; checked while waiting and between exported frames.
        token: Hugging Face token for a private Space.
    Returns:
        A :class:`~sam2_web.jobs.runner.JobResult`, the same outputs an in-process run writes.
    Raises:
        PromptError: the job uses something a remote run cannot do, or prompts that do not fit.
        VideoReadError: the clip cannot be read. HubUnavailableError: the server is unreachable.
        Sam2WebError: the server refused the job (its message says why). ExportError, CancelledError.
    """
    from gradio_client import handle_file

    from sam2_web.media.frames import open_frames

    _refuse_unsupported(job)
    is_cancelled = cancel_check(cancel)
    staging = Staging.open(job)
    downloads = Path(tempfile.mkdtemp(prefix=".download-", dir=staging.folder))
    try:
        with open_frames(job.clip) as frames:
            info = frames.info
            first, last, objects = job.checked_prompts(info)
            client = _client(url, token, downloads)
            if progress:
                progress("track", 0, info.num_frames)
            submitted = client.submit(
                handle_file(str(job.clip)), json.dumps(flat_prompts(objects)), job.model or "", "coco_rle",
                api_name="/segment",
            )
            result = _wait(submitted, is_cancelled, progress)
            if progress:
                progress("track", info.num_frames, info.num_frames)
            document = json.loads(Path(result).read_text(encoding="utf-8"))
            shutil.rmtree(downloads, ignore_errors=True)
            masks = RemoteMasks(document, job.obj_ids, first, last)
            export_all(job, staging, masks, info=info, frames=frames.get, progress=progress,
                       is_cancelled=is_cancelled)
        outputs = staging.publish()
    except BaseException:
        staging.discard()
        raise
    return JobResult(outputs, info.num_frames, (first, last), job.obj_ids)
