"""Many shots at once: a manifest of mask jobs run in this process (the default) or on Ray.

    from sam2_web.batch import RayPool, load_manifest, run_batch

    manifest = load_manifest("shots.yaml")           # docs/batch.schema.json
    report = run_batch(manifest)                      # in this process, one job after another
    report = run_batch(manifest, pool=RayPool("local", workers=2))   # or on Ray
    report.write("shots.report.json")

Each job is the job ``sam2-web mask`` runs (``sam2_web.jobs``); outputs are staged and
published together, a completion marker is written last, and a re-run skips complete jobs.
``sam2-web batch`` is the command line for it (``sam2_web.batch.command``).
"""

# Resolved on first use, so that `sam2-web` (which registers the batch subcommand) stays quick to start.
_LAZY = {
    "InProcessPool": "local", "RayPool": "ray_pool", "RayUnavailableError": "ray_pool",
    "BatchJob": "manifest", "CommandLineSettings": "manifest", "Manifest": "manifest", "ManifestError": "manifest",
    "load_manifest": "manifest", "parse_manifest": "manifest", "BatchProgressView": "progress",
    "BatchStatus": "progress", "EXIT_JOBS_FAILED": "report", "EXIT_NO_ENGINE": "report", "BatchReport": "report",
    "JobOutcome": "report", "WorkerStats": "report", "run_batch": "runner",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"sam2_web.batch.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'sam2_web.batch' has no attribute {name!r}")
