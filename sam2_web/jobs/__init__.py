"""The contract every editor host builds on: a typed mask job, the prompts JSON that describes
it, and two ways to run it (in this process, or on a running app/Space) with the same outputs.

    from sam2_web.jobs import MaskJob, OutputSpec, load_prompts, run_job

    prompts = load_prompts("prompts.json")
    job = MaskJob(clip=Path("shot.mp4"), objects=prompts.objects, normalized=prompts.normalized,
                  output=OutputSpec(Path("out"), formats=("png", "prores")))
    result = run_job(job, progress=lambda stage, done, total: ...)
"""

from sam2_web.jobs.job import DIRECTIONS, FrameRange, MaskJob, OutputSpec
from sam2_web.jobs.prompts import (
    FramePrompt, ObjectPrompts, PromptSet, StartMask, check_prompts, load_prompts, parse_prompts, prompts_from_json,
)
from sam2_web.jobs.runner import JobResult, load_job_predictor, run_job

__all__ = [
    "DIRECTIONS", "FramePrompt", "FrameRange", "JobResult", "MaskJob", "ObjectPrompts", "OutputSpec",
    "PromptSet", "StartMask", "check_prompts", "load_job_predictor", "load_prompts", "parse_prompts",
    "prompts_from_json", "run_job", "run_remote",
]


def run_remote(*args, **kwargs):
    """See :func:`sam2_web.jobs.remote.run_remote` (imported lazily: it needs ``gradio_client``)."""
    from sam2_web.jobs.remote import run_remote as _run_remote

    return _run_remote(*args, **kwargs)
