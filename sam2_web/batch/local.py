"""The default worker pool: the jobs run in this process, one after another, with nothing to set up.

A loaded model is kept for the next job that needs the same one, and jobs are taken so that
jobs sharing a model run back to back (each model loads once).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from sam2_web.batch.report import WorkerStats
from sam2_web.batch.work import ModelLoads, execute, peak_gpu_mb, peak_rss_mb, worker_name

if TYPE_CHECKING:
    from sam2_web.batch.runner import BatchRun


class InProcessPool:
    """Runs every unit in this process.

    Args:
        keep_models: loaded models kept at once (a batch with several models reloads less).
    """

    name = "in-process"

    def __init__(self, keep_models: int = 1):
        self.models = ModelLoads(keep_models)
        self.worker = worker_name("in-process")
        self.units = 0

    def start(self) -> int:
        """Nothing to start; one worker (this process)."""
        return 1

    def run(self, batch: "BatchRun") -> None:
        """Run units until none is left or the batch is cancelled."""
        key = None
        while (unit := batch.take(key)) is not None:
            batch.started(unit, self.worker, os.getpid())
            result = execute(unit, self.models, worker=self.worker, report=batch.progress, cancel=batch.cancel)
            self.units += 1
            batch.finished(unit, result)
            key = unit.model_key or key

    def stop(self) -> list[WorkerStats]:
        """This process's statistics."""
        return [WorkerStats(self.worker, self.units, self.models.loads, round(self.models.load_seconds, 3),
                            round(peak_rss_mb(), 1), peak_gpu_mb())]
