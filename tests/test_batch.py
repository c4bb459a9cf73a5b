"""Batch masking in this process (``sam2-web batch MANIFEST``): the manifest, outputs equal to
each job run alone, failures that stay with their job, re-runs that skip complete jobs, Ctrl-C
that leaves nothing half-done, and when a job may be split by object.

Everything runs for real: a random-weight ``sam2.1_hiera_t`` checkpoint at image_size 256,
ffmpeg-encoded clips. The same fixtures serve tests/test_batch_ray.py.
"""

from __future__ import annotations

import json
import shutil
import sys
import threading
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from appserver import OVERRIDES, app_checkpoint
from clips import make_moving_disc_clip

from sam2_web.batch import (
    CommandLineSettings, InProcessPool, ManifestError, load_manifest, parse_manifest, run_batch,
)
from sam2_web.batch.state import MARKER_PREFIX, marker_path
from sam2_web.batch.units import split_units
from sam2_web.cli import main
from sam2_web.jobs import MaskJob, OutputSpec, parse_prompts, run_job

SIZE = (128, 96)
FORMATS = ["png", "coco_rle"]
# Two objects: a click on the disc on frame 0, a box elsewhere from frame 1.
PROMPTS = {"objects": [
    {"id": 1, "name": "disc", "frames": [{"frame": 0, "points": [[30, 28], [100, 80]], "labels": [1, 0]}]},
    {"id": 5, "frames": [{"frame": 1, "box": [70, 50, 120, 90]}]},
]}
ONE_OBJECT = {"objects": [{"id": 2, "frames": [{"frame": 0, "points": [[34, 30]]}]}]}


@pytest.fixture(scope="module")
def shots(tmp_path_factory, one_torch_thread) -> Path:
    """A folder with a checkpoint, clips, prompts files and a corrupt clip."""
    root = tmp_path_factory.mktemp("shots")
    app_checkpoint(root / "tiny256.pt")
    make_moving_disc_clip(root / "sh010.mp4", n_frames=4, size=SIZE, radius=14)
    make_moving_disc_clip(root / "sh020.mp4", n_frames=5, size=SIZE, radius=18)
    (root / "sh030.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42 this is not a video")
    (root / "two.json").write_text(json.dumps(PROMPTS))
    (root / "one.json").write_text(json.dumps(ONE_OBJECT))
    return root


def manifest_data(**defaults) -> dict:
    """Three good jobs, one corrupt clip, one job without its prompts file."""
    return {
        "version": 1,
        "defaults": {"out": "mattes", "formats": FORMATS, "checkpoint": "tiny256.pt", "device": "cpu", **defaults},
        "overrides": list(OVERRIDES),
        "jobs": [
            {"clip": "sh010.mp4", "prompts": "two.json"},
            {"clip": "sh020.mp4", "prompts": "one.json", "feather": 1.5},
            {"id": "sh010-alt", "clip": "sh010.mp4", "prompts": "one.json", "name": "sh010_alt", "end": 2},
            {"clip": "sh030.mp4", "prompts": "two.json"},
            {"clip": "sh020.mp4", "prompts": "missing.json", "name": "no_prompts"},
        ],
    }


def manifest_for(shots: Path, out: Path) -> dict:
    """manifest_data() with absolute paths into ``shots`` and outputs in ``out``."""
    data = manifest_data(out=str(out))
    data["defaults"]["checkpoint"] = str(shots / "tiny256.pt")
    for job in data["jobs"]:
        job["clip"], job["prompts"] = str(shots / job["clip"]), str(shots / job["prompts"])
    return data


def write_manifest(folder: Path, data: dict, name: str = "batch.json") -> Path:
    path = folder / name
    path.write_text(json.dumps(data) if name.endswith(".json") else _yaml(data))
    return path


def _yaml(data: dict) -> str:
    return yaml.safe_dump(data)


GOOD = ["sh010", "sh020", "sh010-alt"]


def job_alone(shots: Path, job_id: str, out: Path) -> dict[str, Path]:
    """The oracle: the manifest's job run by itself with ``run_job`` into ``out``."""
    manifest = parse_manifest(manifest_data(), base_dir=shots)
    (job,) = [bj.job for bj in manifest.jobs if bj.id == job_id]
    return run_job(replace(job, output=replace(job.output, out_dir=out))).outputs


@pytest.fixture(scope="module")
def alone(shots, tmp_path_factory) -> dict[str, dict[str, Path]]:
    """Each good job's outputs when run alone."""
    out = tmp_path_factory.mktemp("alone")
    return {job_id: job_alone(shots, job_id, out) for job_id in GOOD}


def same_output(got: Path, want: Path) -> None:
    """Byte-identical files (a folder: every file in it), COCO JSON apart from its creation time."""
    got, want = Path(got), Path(want)
    assert got.name == want.name
    if want.is_dir():
        names = sorted(str(p.relative_to(want)) for p in want.rglob("*") if p.is_file())
        assert sorted(str(p.relative_to(got)) for p in got.rglob("*") if p.is_file()) == names
        for name in names:
            assert (got / name).read_bytes() == (want / name).read_bytes(), name
        return
    if want.suffix == ".json":
        a, b = json.loads(got.read_text()), json.loads(want.read_text())
        a["info"].pop("date_created"), b["info"].pop("date_created")
        assert a == b
        assert any(ann["segmentation"]["counts"] for ann in b["annotations"])  # not only empty masks
        return
    assert got.read_bytes() == want.read_bytes()


def assert_no_leftovers(out: Path) -> None:
    """Only outputs and completion markers: no work, staging or partial folders anywhere below."""
    hidden = [p for p in out.rglob(".*") if not p.name.startswith(MARKER_PREFIX) and p.name != ".sam2_web_export"]
    assert hidden == []


def check_report(report: dict, alone: dict, out: Path) -> None:
    """Statuses, numbers and outputs of the manifest_data() report."""
    jobs = {j["id"]: j for j in report["jobs"]}
    assert [j["id"] for j in report["jobs"]] == ["sh010", "sh020", "sh010-alt", "sh030", "no_prompts"]
    for job_id in GOOD:
        job = jobs[job_id]
        assert job["status"] == "done", job
        assert job["frames"] == (5 if job_id == "sh020" else 4)
        assert job["seconds"] > 0 and job["s_per_frame"] == pytest.approx(job["seconds"] / job["frames"], rel=1e-2)
        assert job["worker"] and job["error"] is None
        assert sorted(job["outputs"]) == sorted(FORMATS)
        for fmt, path in job["outputs"].items():
            assert Path(path).parent == out
            same_output(Path(path), alone[job_id][fmt])
    assert jobs["sh010-alt"]["tracked"] == [0, 2]
    assert jobs["sh030"]["status"] == "failed" and jobs["sh030"]["error"]["type"] == "VideoReadError"
    assert "sh030.mp4" in jobs["sh030"]["error"]["message"] and jobs["sh030"]["outputs"] == {}
    assert jobs["no_prompts"]["status"] == "failed" and jobs["no_prompts"]["error"]["type"] == "PromptError"
    assert "missing.json" in jobs["no_prompts"]["error"]["message"]
    assert report["summary"] == {**report["summary"], "jobs": 5, "done": 3, "failed": 2, "frames": 13}
    assert report["exit_code"] == 6
    # Nothing of the failed jobs in the output folder.
    assert not list(out.glob("sh030*")) and not list(out.glob("no_prompts*"))
    assert not list(out.glob(f"{MARKER_PREFIX}sh030*"))
    assert_no_leftovers(out)


# --------------------------------------------------------------------------- the manifest


def test_yaml_and_json_manifests_resolve_paths_against_the_manifest(tmp_path):
    data = {
        "defaults": {"out": "mattes", "formats": "png,exr", "model": "small", "overrides": ["engine.read_ahead=2"]},
        "overrides": ["++model.image_size=512"],
        "split_objects": True,
        "jobs": [
            {"clip": "shots/a.mov", "prompts": "p/a.json", "feather": 2, "bit_depth": 16, "direction": "forward",
             "overrides": ["engine.fill_hole_area=0"], "start": 3, "end": 9},
            {"id": "b-take2", "clip": "/abs/b.mov", "prompts": PROMPTS, "out": "other", "model": "large",
             "checkpoint": "ck/l.pt", "split_objects": False, "name": "b2", "grow": -2, "invert": True},
        ],
    }
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / "a.json").write_text(json.dumps(ONE_OBJECT))
    loaded = [load_manifest(write_manifest(tmp_path, data, name)) for name in ("m.json", "m.yaml")]
    assert loaded[0].jobs == loaded[1].jobs
    a, b = loaded[0].jobs
    assert (a.id, a.clip, a.out_dir, a.stem) == ("a", tmp_path / "shots" / "a.mov", tmp_path / "mattes", "a")
    assert a.job.output == OutputSpec(tmp_path / "mattes", ("png", "exr"), feather_px=2.0, bit_depth=16)
    assert a.job.overrides == ("++model.image_size=512", "engine.read_ahead=2", "engine.fill_hole_area=0")
    assert (a.job.model, a.job.direction, a.job.frame_range.start, a.job.frame_range.end) == ("small", "forward", 3, 9)
    assert a.split_objects and a.job.obj_ids == [2]
    assert (b.id, b.clip, b.stem, b.split_objects) == ("b-take2", Path("/abs/b.mov"), "b2", False)
    assert b.job.checkpoint == tmp_path / "ck" / "l.pt" and b.job.model == "large"
    assert b.job.output.grow_px == -2 and b.job.output.invert and b.job.obj_ids == [1, 5]
    # The command line applies to every job and wins over the manifest.
    settings = CommandLineSettings(model="tiny", device="cuda", overrides=("engine.read_ahead=8",), split_objects=False)
    a2, b2 = load_manifest(tmp_path / "m.yaml", settings).jobs
    assert (a2.job.model, b2.job.model, a2.job.device, b2.job.device) == ("tiny", "tiny", "cuda", "cuda")
    assert a2.job.overrides[-1] == "engine.read_ahead=8" and not a2.split_objects


def test_the_documented_schema_and_example_match_the_parser(tmp_path):
    from sam2_web.batch import manifest as manifest_module

    repo = Path(__file__).resolve().parents[1]
    schema = json.loads((repo / "docs" / "batch.schema.json").read_text())
    assert set(schema["properties"]) == manifest_module._TOP_KEYS
    job_keys = set(schema["$defs"]["jobFields"]["properties"]) | set(schema["$defs"]["job"]["allOf"][1]["properties"])
    assert job_keys == manifest_module._JOB_KEYS
    example = load_manifest(repo / "docs" / "batch.example.yaml")
    assert [bj.id for bj in example.jobs] == ["sh010", "sh020", "sh030-crowd"]
    assert example.jobs[2].split_objects and example.jobs[1].job is None  # its prompts file is not in docs/
    assert "sh020.json" in example.jobs[1].problem.message


@pytest.mark.parametrize("change, words", [
    (lambda d: d.update(shots=[]), ["the manifest", "'shots'"]),
    (lambda d: d.pop("jobs"), ["jobs", "non-empty"]),
    (lambda d: d["jobs"][1].update(colour="red"), ["jobs[1]", "'colour'"]),
    (lambda d: d["jobs"][0].pop("clip"), ["jobs[0]", "missing 'clip'"]),
    (lambda d: d["defaults"].pop("out"), ["jobs[0]", "missing 'out'"]),
    (lambda d: d["jobs"][2].update(formats=["png", "gif"]), ["jobs[2].formats", "unknown format(s) gif"]),
    (lambda d: d["defaults"].update(bit_depth=12), ["defaults.bit_depth", "8 or 16"]),
    (lambda d: d["jobs"][0].update(start=-1), ["jobs[0].start", ">= 0"]),
    (lambda d: d["jobs"][0].update(direction="sideways"), ["jobs[0].direction", "both"]),
    (lambda d: d["jobs"][1].update(model="sam9_giant"), ["jobs[1].model", "sam9_giant"]),
    (lambda d: d.update(overrides=["image_size"]), ["overrides[0]", "KEY=VALUE"]),
    (lambda d: d["jobs"][4].update(name="sh010"), ["jobs[4]", "jobs[0]", "sh010_*"]),
    (lambda d: d["jobs"][1].update(id="sh010-alt"), ["jobs[2]", "'sh010-alt'"]),
    (lambda d: d.update(version=3), ["version", "3"]),
    (lambda d: d["jobs"][0].update(name="../../elsewhere"), ["jobs[0].name", "not a plain file name"]),
])
def test_manifest_mistakes_name_the_entry(tmp_path, change, words):
    data = manifest_data()
    change(data)
    with pytest.raises(ManifestError) as caught:
        parse_manifest(data, base_dir=tmp_path)
    for word in words:
        assert word in str(caught.value)


def test_cli_refuses_a_bad_manifest_before_running_anything(tmp_path, capsys):
    bad = tmp_path / "m.yaml"
    bad.write_text("jobs: [{clip: a.mov, prompts: a.json\n")
    assert main(["batch", str(bad)]) == 2
    assert "not valid YAML" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "none.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    good = write_manifest(tmp_path, manifest_data())
    assert main(["batch", str(good), "--workers", "2"]) == 2
    assert "need --ray" in capsys.readouterr().err
    assert main(["batch", str(good), "--bogus"]) == 2
    assert not (tmp_path / "mattes").exists() and not (tmp_path / "batch.report.json").exists()


def test_asking_for_ray_without_ray_installed_exits_7(tmp_path, shots, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` fails as if it were not installed
    manifest = write_manifest(tmp_path, manifest_for(shots, tmp_path / "mattes"))
    assert main(["batch", str(manifest), "--ray", "local"]) == 7
    err = capsys.readouterr().err
    assert "pip install 'sam2_web[ray]'" in err and "Traceback" not in err
    assert not (tmp_path / "mattes").exists()


def test_split_by_object_only_where_objects_are_tracked_independently(tmp_path):
    three = {"objects": [
        {"id": 1, "frames": [{"frame": 0, "points": [[10, 10]]}]},
        {"id": 2, "frames": [{"frame": 0, "box": [20, 20, 40, 40]}]},
        {"id": 3, "frames": [{"frame": 2, "points": [[50, 50]]}]},
    ]}
    job = MaskJob(clip=Path("a.mov"), objects=parse_prompts(three).objects, output=OutputSpec(tmp_path))
    units, note = split_units("a", job, "fp", workers=4)
    assert note is None
    assert [(u.kind, u.obj_ids) for u in units] == [("part", (1, 3)), ("part", (2,)), ("merge", ())]
    assert {u.parts for u in units} == {2}  # as many parts as objects prompted on the first frame
    # Non-overlapping masks couple the objects: never split.
    coupled = replace(job, overrides=("engine.non_overlap_masks=true",))
    units, note = split_units("a", coupled, "fp", workers=4)
    assert [u.kind for u in units] == ["job"] and "non_overlap_masks" in note
    # Only one object on the first prompted frame: the others are tracked from there with it.
    late = parse_prompts(PROMPTS).objects
    units, note = split_units("a", replace(job, objects=late), "fp", workers=4)
    assert [u.kind for u in units] == ["job"] and "only object 1 is prompted on frame 0" in note
    units, note = split_units("a", job, "fp", workers=1)
    assert [u.kind for u in units] == ["job"] and "one worker" in note


# --------------------------------------------------------------------------- running in this process


@pytest.fixture(scope="module")
def first_run(shots, alone, tmp_path_factory):
    """``sam2-web batch`` in this process on manifest_data(); returns (folder, manifest, exit code, report)."""
    from sam2_web.loading import clear_cache

    folder = tmp_path_factory.mktemp("inproc")
    manifest = write_manifest(folder, manifest_for(shots, Path("mattes")), "shots.yaml")
    clear_cache()  # the jobs alone loaded the same model into this process's one cache
    code = main(["batch", str(manifest), "--progress", "lines"])
    return folder, manifest, code, json.loads((folder / "shots.report.json").read_text())


def test_in_process_batch_equals_each_job_alone(first_run, alone):
    folder, _manifest, code, report = first_run
    assert code == 6  # two jobs failed, and only those
    assert report["pool"] == "in-process"
    check_report(report, alone, folder / "mattes")
    (worker,) = report["workers"]
    assert worker["model_loads"] == 1 and worker["units"] == 4  # one model for every job that ran


def test_a_rerun_skips_complete_jobs_and_redoes_the_rest(first_run, alone, capsys):
    folder, manifest, _code, _report = first_run
    out = folder / "mattes"
    before = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert main(["batch", str(manifest), "--progress", "none"]) == 6  # the broken jobs still fail
    report = json.loads((folder / "shots.report.json").read_text())
    assert [j["status"] for j in report["jobs"]] == ["skipped", "skipped", "skipped", "failed", "failed"]
    assert report["jobs"][0]["outputs"] == {fmt: str(out / f"sh010_{fmt}{'.json' if fmt == 'coco_rle' else ''}")
                                            for fmt in FORMATS}
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == before  # nothing rewritten
    # An output removed, a job changed: those two run again, the third is still skipped.
    shutil.rmtree(out / "sh010_png")
    data = yaml.safe_load(manifest.read_text())
    data["jobs"][1]["feather"] = 0.0
    manifest.write_text(_yaml(data))
    assert main(["batch", str(manifest), "--progress", "none"]) == 6
    report = json.loads((folder / "shots.report.json").read_text())
    assert [j["status"] for j in report["jobs"]][:3] == ["done", "done", "skipped"]
    same_output(out / "sh010_png", alone["sh010"]["png"])
    assert_no_leftovers(out)
    capsys.readouterr()


def test_cancelling_stops_the_running_job_and_leaves_nothing(shots, tmp_path):
    data = manifest_for(shots, tmp_path / "o")
    data["jobs"] = data["jobs"][:2]
    manifest = parse_manifest(data)
    cancel = threading.Event()

    def press_ctrl_c(status):
        if any(r.stage == "track" for r in status.running.values()):
            cancel.set()

    report = run_batch(manifest, pool=InProcessPool(), observer=press_ctrl_c, cancel=cancel)
    assert [j.status for j in report.jobs] == ["cancelled", "cancelled"]
    assert report.exit_code == 130
    assert not (tmp_path / "o").exists()  # the folder the batch created is gone again
    assert not marker_path(manifest.jobs[0].job).exists()


def test_a_job_that_would_overwrite_its_own_clip_fails_alone(shots, tmp_path):
    frames = tmp_path / "plate_png"  # a folder of frames named like the job's PNG output
    frames.mkdir()
    for i in range(2):
        shutil.copy(shots / "tiny256.pt", frames / f"{i:05d}.jpg")  # never read: the check comes first
    data = manifest_for(shots, tmp_path)
    data["jobs"] = [{"clip": str(frames), "prompts": str(shots / "one.json"), "name": "plate", "formats": ["png"]}]
    report = run_batch(parse_manifest(data))
    (job,) = report.jobs
    assert job.status == "failed" and job.error["type"] == "ExportError"
    assert "would overwrite the input clip" in job.error["message"]
    assert sorted(p.name for p in frames.iterdir()) == ["00000.jpg", "00001.jpg"]
    assert report.workers[0].model_loads == 0  # refused before the model was loaded
    assert_no_leftovers(tmp_path)


@pytest.mark.parametrize("resources, workers, want", [
    ({"CPU": 16.0, "GPU": 4.0, "memory": 64e9}, None, (4, {"num_gpus": 1, "num_cpus": 4}, 4)),
    ({"CPU": 16.0, "GPU": 1.0, "memory": 64e9}, 3, (3, {"num_gpus": 0.3333, "num_cpus": 5}, 5)),
    ({"CPU": 32.0, "GPU": 4.0, "memory": 64e9}, 6, (6, {"num_gpus": 0.5, "num_cpus": 5}, 5)),
    ({"CPU": 2.0, "memory": 13e9}, None, (2, {"num_cpus": 1}, 1)),
    ({"CPU": 64.0, "memory": 32 * 2 ** 30}, None, (16, {"num_cpus": 4}, 4)),  # memory caps the count
    ({"CPU": 2.0, "memory": 13e9}, 4, (4, {"num_cpus": 0.5}, 1)),
])
def test_workers_ask_for_a_gpu_where_there_are_gpus_and_cpus_otherwise(resources, workers, want):
    from sam2_web.batch import RayPool

    engine = RayPool("local", workers=workers)
    engine.resources = resources
    assert engine.placement() == want
