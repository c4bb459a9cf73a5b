"""Batch masking on Ray (``sam2-web batch --ray local``): the outputs of each job run alone, jobs
spread over workers that load their model once, a worker killed mid-job (by its pid) whose job
is retried and still exact with nothing partial left, a corrupt clip that fails alone, a re-run
that skips what was done, and a job split by object whose merged outputs equal the whole job's.

Runs on a real local Ray (the ``ray`` extra is part of the dev install) with the fixtures of
tests/test_batch.py: tiny clips and a random-weight checkpoint at image_size 256.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import ray

from clips import make_moving_disc_clip
from test_batch import (  # noqa: F401  (alone, shots: fixtures shared with the in-process tests)
    FORMATS, PROMPTS, alone, assert_no_leftovers, check_report, manifest_for, same_output, shots, write_manifest,
)

from sam2_web.batch import RayPool, parse_manifest, run_batch
from sam2_web.jobs import run_job

REPO = Path(__file__).resolve().parents[1]


def test_cli_ray_local_spreads_jobs_and_gives_each_jobs_own_outputs(shots, alone, tmp_path):
    """The command line end to end: `--ray local` starts its own Ray with two workers."""
    manifest = write_manifest(tmp_path, manifest_for(shots, Path("mattes")), "shots.yaml")
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    result = subprocess.run([sys.executable, "-m", "sam2_web.cli", "batch", str(manifest), "--ray", "local",
                             "--workers", "2", "--progress", "lines"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 6, result.stderr  # the corrupt clip and the missing prompts, nothing else
    report = json.loads((tmp_path / "shots.report.json").read_text())
    assert report["pool"] == "ray local"
    check_report(report, alone, tmp_path / "mattes")
    assert "FAILED sh030" in result.stderr and "done  sh020" in result.stderr
    workers = report["workers"]
    assert len(workers) == 2 and [w["model_loads"] for w in workers] == [1, 1]  # loaded once, not per job
    assert all(w["peak_rss_mb"] > 0 for w in workers)
    done_on = {j["worker"] for j in report["jobs"] if j["status"] == "done"}
    assert done_on == {w["name"] for w in workers}  # the jobs were spread over both workers


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with two CPUs for the tests that drive the engine from Python."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


def test_a_killed_worker_is_retried_and_its_job_is_still_exact(shots, local_ray, tmp_path):
    # Long enough that progress polls (every 0.25 s) see it mid-job on a loaded machine too.
    make_moving_disc_clip(tmp_path / "long.mp4", n_frames=48, size=(128, 96), radius=16)
    data = {
        "defaults": {"out": str(tmp_path / "mattes"), "formats": FORMATS, "checkpoint": str(shots / "tiny256.pt"),
                     "device": "cpu", "overrides": ["++model.image_size=256"]},
        "jobs": [{"clip": str(tmp_path / "long.mp4"), "prompts": str(shots / "one.json")},
                 {"clip": str(shots / "sh010.mp4"), "prompts": str(shots / "two.json")}],
    }
    killed: list[int] = []

    def kill_the_worker_mid_job(status):
        for unit in status.running.values():
            # Formats are written while the job tracks, so its stage may read "export <fmt>" mid-track.
            if unit.job_id == "long" and unit.stage not in ("start", "load") and unit.done >= 2 and not killed:
                os.kill(unit.pid, signal.SIGKILL)  # the worker process, by its pid (from os.getpid in the actor)
                killed.append(unit.pid)

    scratch = tmp_path / "scratch"
    report = run_batch(parse_manifest(data), pool=RayPool("local", workers=2, scratch=scratch),
                       observer=kill_the_worker_mid_job)
    assert killed, "the long job finished before the test could kill its worker"
    long, short = report.jobs
    assert (long.status, long.attempts) == ("done", 2) and f"pid {killed[0]}" not in long.worker
    assert (short.status, short.attempts) == ("done", 1)
    assert report.exit_code == 0
    out = tmp_path / "mattes"
    bj = parse_manifest(data).jobs[0]
    want = run_job(replace(bj.job, output=replace(bj.job.output, out_dir=tmp_path / "alone"))).outputs
    for fmt in FORMATS:
        same_output(Path(long.outputs[fmt]), want[fmt])
    assert_no_leftovers(out)  # the dead attempt's work folder went with the retry
    assert list(scratch.iterdir()) == []  # and its session files with the restarted worker

    # A re-run finds both jobs complete: nothing runs, nothing changes.
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    again = run_batch(parse_manifest(data), pool=RayPool("local", workers=2))
    assert [j.status for j in again.jobs] == ["skipped", "skipped"] and again.exit_code == 0
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before


def test_a_job_split_by_object_gives_the_whole_jobs_outputs(shots, local_ray, tmp_path):
    three = {"objects": [
        *PROMPTS["objects"][:1],
        {"id": 5, "name": "box", "frames": [{"frame": 0, "box": [70, 50, 120, 90]}]},
        {"id": 9, "frames": [{"frame": 2, "points": [[60, 40]]}]},  # first prompted later: stays with an anchor
    ]}
    (tmp_path / "three.json").write_text(json.dumps(three))
    data = {
        "defaults": {"out": str(tmp_path / "mattes"), "formats": [*FORMATS, "index_png"],
                     "checkpoint": str(shots / "tiny256.pt"), "device": "cpu"},
        "overrides": ["++model.image_size=256"],
        "jobs": [{"clip": str(shots / "sh010.mp4"), "prompts": str(tmp_path / "three.json"), "split_objects": True}],
    }
    report = run_batch(parse_manifest(data), pool=RayPool("local", workers=2))
    (job,) = report.jobs
    assert job.status == "done", job.error
    assert job.split["parts"] == 2 and sorted(map(sorted, job.split["objects"])) == [[1, 9], [5]]
    assert isinstance(job.worker, list) and len(job.worker) >= 2  # parts ran on both workers
    (bj,) = parse_manifest(data).jobs
    whole = run_job(replace(bj.job, output=replace(bj.job.output, out_dir=tmp_path / "whole"))).outputs
    for fmt in [*FORMATS, "index_png"]:
        same_output(Path(job.outputs[fmt]), whole[fmt])
    assert_no_leftovers(tmp_path / "mattes")
