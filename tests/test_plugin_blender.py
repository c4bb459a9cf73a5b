"""Blender add-on, headless in real Blender in a subprocess: the ``bpy`` 4.5.4 LTS module (dev
venv) and the ``bpy`` 5.0.1 module (its own venv, ``.oracles/blender5``), each from the default
startup file, on SAM 2.1 tiny; and the same scenario in bpy 4.5.4 on EdgeTAM (matching the
engine to the pixel). Blender's own ``extension validate`` checks the extension zip's manifest.

The subprocess installs the add-on from a zip as a user would, loads a generated clip as a
movie strip (moved and trimmed, so alignment is not trivially frame 1), runs *Track Object*
from a prompts file and then from Movie Clip Editor markers, and renders the strip's frames
with view transform *Standard*. This process checks what came out against the engine's own
masks for the same prompts: the matte strip's place and timing, the matte files, and the
rendered pixels inside and outside the object (Brightness/Contrast masked by the matte: inside
changes, outside not; Mask modifier: alpha is the matte).

bpy runs in a subprocess because it is heavy and process-global (one scene, one add-on state).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.clips import make_moving_disc_clip
from tests.oracle_venv import require_installed
from tests.parity import build_reference, save_official_checkpoint

REPO = Path(__file__).resolve().parents[1]
# Each Blender as a Python module, in the environment scripts/dev.sh installs it into: bpy 4.5.4 LTS
# in the dev venv (a dev extra), bpy 5.0.1 in its own venv (it needs numpy<2).
BLENDERS = {"4.5": Path(sys.executable), "5.0": REPO / ".oracles" / "blender5" / "bin" / "python"}
ADDON = "sam2web_blender"
OVERRIDES = "++model.image_size=256"
# The scenarios: (Blender, model). SAM 2.1 tiny on both Blenders; EdgeTAM (a new model, see
# tests/appserver.py for its 256 px overrides) on bpy 4.5 only, to keep the run time down.
SCENARIOS = {"4.5": ("4.5", "sam2.1_hiera_t"), "5.0": ("5.0", "sam2.1_hiera_t"), "4.5-edgetam": ("4.5", "edgetam")}
SIZE = (192, 128)  # width, height of the generated clip
NUM_FRAMES = 5
FPS = 10
STRIP_START = 11  # scene frame of the movie's first frame
PROMPT_FRAME = 2
CLICK = (96.0, 64.0)  # pixels; a marker stores x / width and 1 - y / height exactly for these
BRIGHTNESS = 30.0


# --------------------------------------------------------------------------- inside Blender


def blender_session(config_file: str) -> None:
    """Drive Blender through the add-on as a user would; write what happened to a JSON report.

    Runs in a fresh Python with ``bpy`` (see :func:`run_blender`); never in the test process.
    """
    import bpy

    cfg = json.loads(Path(config_file).read_text())
    report: dict = {"version": list(bpy.app.version)}
    # Blender's own manifest check, as `blender --command extension validate <zip>` runs it.
    from bl_pkg import bl_extension_cli

    report["validate"] = bl_extension_cli.cli_extension_handler(["validate", cfg["extension_zip"]])
    # The default startup file: in Blender 5 its workspace has no sequencer scene yet.
    workspace = bpy.context.workspace
    report["sequencer_scene_at_start"] = (
        repr(workspace.sequencer_scene) if hasattr(workspace, "sequencer_scene") else "no such setting")
    # The legacy add-on install (a zip holding the package folder) registers and unregisters cleanly...
    assert bpy.ops.preferences.addon_install(filepath=cfg["legacy_zip"], overwrite=True) == {"FINISHED"}
    assert bpy.ops.preferences.addon_enable(module=ADDON) == {"FINISHED"}
    report["legacy_registered"] = hasattr(bpy.types.Scene, "sam2web") and hasattr(bpy.ops.sequencer, "sam2web_track")
    assert bpy.ops.preferences.addon_disable(module=ADDON) == {"FINISHED"}
    report["legacy_unregistered"] = not hasattr(bpy.types.Scene, "sam2web")
    # ...and the rest runs on the extension install (Blender 4.2+: Install from Disk with a manifest).
    assert bpy.ops.extensions.package_install_files(
        filepath=cfg["extension_zip"], repo="user_default", enable_on_install=True) == {"FINISHED"}
    module = f"bl_ext.user_default.{ADDON}"
    report["extension_enabled"] = module in bpy.context.preferences.addons
    addon_prefs = bpy.context.preferences.addons[module].preferences
    addon_prefs.engine_path = cfg["repo"]

    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = FPS, 1.0
    scene.render.resolution_x, scene.render.resolution_y = SIZE
    scene.render.resolution_percentage = 100
    scene.view_settings.view_transform = "Standard"
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGBA"
    editor = scene.sequence_editor_create()
    report["poll_without_strip"] = bpy.ops.sequencer.sam2web_track.poll()
    source = editor.strips.new_movie("shot", cfg["clip"], channel=2, frame_start=STRIP_START)
    source.frame_offset_start = 1  # trim the first frame: the matte has to follow the handles
    # Something on the channel above, but later in time: the matte still fits on channel 3.
    try:  # Blender 5 takes a length, earlier versions an end frame
        editor.strips.new_effect("later", "COLOR", channel=3, frame_start=STRIP_START + 20, length=5)
    except TypeError:
        editor.strips.new_effect("later", "COLOR", channel=3, frame_start=STRIP_START + 20,
                                 frame_end=STRIP_START + 25)
    editor.active_strip = source

    settings = scene.sam2web
    settings.prompt_source = "FILE"
    settings.model = cfg["model"]
    settings.checkpoint = cfg["checkpoint"]
    settings.overrides = " ".join(cfg["overrides"])  # as typed in the panel: space separated
    settings.device = "cpu"
    settings.output_dir = cfg["out"]
    settings.effect = "BRIGHT_CONTRAST"

    settings.prompts_file = cfg["bad_prompts"]
    try:  # headless, an operator's error report comes back as a RuntimeError
        report["bad_result"] = sorted(bpy.ops.sequencer.sam2web_track())
    except RuntimeError as exc:
        report["bad_result"] = ["CANCELLED"]
        report["bad_message"] = str(exc)
    report["strips_after_bad"] = sorted(s.name for s in editor.strips)

    settings.prompts_file = cfg["prompts"]
    report["file_result"] = sorted(bpy.ops.sequencer.sam2web_track())
    report["file"] = _describe(editor, source)
    for modifier in source.modifiers:
        modifier.bright = BRIGHTNESS
    report["file_renders"] = _render(scene, source, Path(cfg["out"]) / "render_file_")

    # The same click as a keyed marker in the Movie Clip Editor; this time cut the object out.
    clip = bpy.data.movieclips.load(cfg["clip"])
    clip_frame = PROMPT_FRAME + 1  # clip frames count from 1
    track = clip.tracking.tracks.new(name="object", frame=clip_frame)
    track.markers.find_frame(clip_frame).co = (CLICK[0] / SIZE[0], 1.0 - CLICK[1] / SIZE[1])
    settings.prompt_source = "MARKERS"
    settings.effect = "MASK"
    # As from the button; without a window the operator runs in place instead of in the background.
    report["markers_result"] = sorted(bpy.ops.sequencer.sam2web_track("INVOKE_DEFAULT"))
    report["markers"] = _describe(editor, source)
    report["markers_renders"] = _render(scene, source, Path(cfg["out"]) / "render_markers_")

    # Through the sam2-web command of "another" Python (this one), as when Blender lacks torch.
    addon_prefs.python = sys.executable
    settings.prompt_source = "FILE"
    settings.effect = "NONE"
    settings.output_dir = cfg["out"] + "_external"
    report["external_result"] = sorted(bpy.ops.sequencer.sam2web_track())
    report["external"] = _describe(editor, source)

    # Esc while tracking: the job stops and publishes nothing, on the button's background thread
    # (in this process) and through the CLI.
    import importlib
    import threading

    operators = importlib.import_module(f"{module}.operators")
    addon_jobs = importlib.import_module(f"{module}.jobs")
    report["cancel"] = {}
    addon_prefs.python = ""
    settings.output_dir = cfg["out"] + "_cancel_here"
    worker = operators._Worker(operators._prepare(bpy.context))
    worker.cancel.set()
    worker.thread.join()
    report["cancel"]["here"] = f"{type(worker.error).__name__}: {worker.error}"
    stop = threading.Event()
    stop.set()
    spec = addon_jobs.JobSpec(clip=Path(cfg["clip"]), prompts=Path(cfg["prompts"]),
                                out_dir=Path(cfg["out"] + "_cancel_external"), name="cancelled",
                                model=cfg["model"], checkpoint=cfg["checkpoint"], device="cpu",
                                overrides=tuple(cfg["overrides"]))
    try:
        addon_jobs.run(spec, python=sys.executable, cancel=stop)
        report["cancel"]["external"] = "not cancelled"
    except addon_jobs.Cancelled as exc:
        report["cancel"]["external"] = f"{type(exc).__name__}: {exc}"
    # A click on a frame outside the strip's handles widens the tracked range to reach it.
    early = {"version": 1, "objects": [{"id": 1, "frames": [{"frame": 0, "points": [[5, 5]], "labels": [1]}]}]}
    args = addon_jobs.cli_arguments(
        addon_jobs.JobSpec(clip=Path(cfg["clip"]), prompts=early, out_dir=Path("out"), name="x", first=1, last=3),
        Path("prompts.json"))
    report["widened_args"] = [args[args.index("--start") + 1], args[args.index("--end") + 1]]
    for where in ("here", "external"):
        out = Path(cfg["out"] + "_cancel_" + where)
        report["cancel"][where + "_files"] = sorted(
            str(p) for p in out.rglob("*") if not p.name.startswith(".")) if out.exists() else []
    Path(cfg["report"]).write_text(json.dumps(report, indent=1))


def _describe(editor, source) -> dict:
    mattes = [s for s in editor.strips if s.get("sam2web_source") == source.name]
    return {
        "source": [source.channel, source.frame_final_start, source.frame_final_end],
        "mattes": [
            {"name": m.name, "type": m.type, "channel": m.channel, "mute": m.mute,
             "range": [m.frame_final_start, m.frame_final_end], "frame_start": m.frame_start,
             "files": [str(Path(m.directory) / e.filename) for e in m.elements],
             "colorspace": m.colorspace_settings.name}
            for m in mattes
        ],
        "modifiers": [{"name": mod.name, "type": mod.type, "mask_type": mod.input_mask_type,
                       "mask": mod.input_mask_strip.name if mod.input_mask_strip else None}
                      for mod in source.modifiers],
    }


def _render(scene, source, prefix: Path) -> dict[int, str]:
    import bpy

    out = {}
    for frame in range(source.frame_final_start, source.frame_final_end):
        scene.frame_set(frame)
        scene.render.filepath = f"{prefix}{frame:04d}.png"
        bpy.ops.render.render(write_still=True)
        out[frame] = scene.render.filepath
    return out


# --------------------------------------------------------------------------- in the test process


def run_blender(python: Path, config: dict, tmp: Path) -> tuple[dict, str]:
    """Run :func:`blender_session` in a subprocess of ``python`` (a Python with bpy); return its
    report and its console output."""
    config_file = tmp / "blender.json"
    config_file.write_text(json.dumps(config))
    paths = [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]
    # Installs go to the test's folder, never to the user's Blender configuration. One torch
    # thread (Blender's Python and the external CLI it starts), as conftest's one_torch_thread:
    # with bpy loaded, 2 OpenMP threads on these tiny inputs ran the scenario ~1.6x slower on a
    # busy 2-core machine.
    env = dict(os.environ, OMP_NUM_THREADS="1", BLENDER_USER_SCRIPTS=str(tmp / "blender_scripts"),
               BLENDER_USER_RESOURCES=str(tmp / "blender_resources"), PYTHONPATH=os.pathsep.join(paths))
    code = "import sys; from tests.test_plugin_blender import blender_session; blender_session(sys.argv[1])"
    done = subprocess.run([str(python), "-c", code, str(config_file)], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=1800)
    console = done.stdout + done.stderr
    assert done.returncode == 0, console[-4000:]
    return json.loads(Path(config["report"]).read_text()), console


def addon_zips(tmp: Path) -> tuple[Path, Path]:
    """The add-on zipped both ways users get it: as an extension (files at the top, with
    ``blender_manifest.toml``) and as a legacy add-on (one top-level package folder)."""
    files = sorted(f for f in (REPO / "plugins" / "blender").iterdir() if f.suffix in (".py", ".toml"))
    extension, legacy = tmp / f"{ADDON}_extension.zip", tmp / f"{ADDON}.zip"
    with zipfile.ZipFile(extension, "w") as ext_zip, zipfile.ZipFile(legacy, "w") as legacy_zip:
        for file in files:
            ext_zip.write(file, file.name)
            legacy_zip.write(file, f"{ADDON}/{file.name}")
    return extension, legacy


def oracle_masks(clip: Path, checkpoint: Path, model: str, overrides: tuple[str, ...]) -> np.ndarray:
    """The engine's own masks for the click, through its public session API (union over objects)."""
    from sam2_web.jobs import MaskJob, ObjectPrompts, OutputSpec
    from sam2_web.jobs.job import FramePrompt
    from sam2_web.jobs.runner import load_job_predictor

    # The predictor the add-on's job gets (same app config, model, checkpoint and overrides).
    job = MaskJob(clip=clip, objects=(ObjectPrompts(1, frames=(FramePrompt(PROMPT_FRAME, (CLICK,), (1,)),)),),
                  output=OutputSpec(clip.parent), model=model, checkpoint=checkpoint, device="cpu",
                  overrides=tuple(overrides))
    predictor = load_job_predictor(job)
    masks = np.zeros((NUM_FRAMES, SIZE[1], SIZE[0]), bool)
    with predictor.open_session(str(clip)) as session:
        session.add_prompt(PROMPT_FRAME, 1, points=np.asarray([CLICK], np.float32), labels=np.asarray([1], np.int32))
        for result in session.propagate(direction="both"):
            masks[result.frame_idx] = result.masks.any(axis=0)
    return masks


@pytest.fixture(scope="module", params=sorted(SCENARIOS))
def blender_run(request, tmp_path_factory):
    version, model = SCENARIOS[request.param]
    python = BLENDERS[version]
    if version != "4.5":  # 4.5 is the dev venv's own bpy
        require_installed("blender5")
    found = subprocess.run([str(python), "-c", "import importlib.util as u; print(bool(u.find_spec('bpy')))"],
                           capture_output=True, text=True)
    assert found.stdout.strip() == "True", f"no bpy in {python}: run `bash scripts/dev.sh install`"
    tmp = tmp_path_factory.mktemp(f"blender{request.param}")
    clip, _ = make_moving_disc_clip(tmp / "shot.mp4", n_frames=NUM_FRAMES, size=SIZE, radius=20, fps=FPS)
    if model == "edgetam":
        # Official-format random EdgeTAM weights whose presence head says "present" (non-empty masks).
        from appserver import EDGETAM, app_checkpoint

        overrides = EDGETAM.overrides
        checkpoint = app_checkpoint(tmp / "edgetam_random.pt", model=EDGETAM)
    else:
        overrides = (OVERRIDES,)
        checkpoint = save_official_checkpoint(build_reference(model, [OVERRIDES], video=True),
                                              tmp / f"{model}_random.pt")
    prompts = tmp / "prompts.json"
    prompts.write_text(json.dumps({"version": 1, "objects": [
        {"id": 1, "frames": [{"frame": PROMPT_FRAME, "points": [list(CLICK)], "labels": [1]}]}]}))
    bad = tmp / "bad_prompts.json"
    bad.write_text(json.dumps({"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[5, 5]]}]}],
                               "colour": "red"}))
    extension_zip, legacy_zip = addon_zips(tmp)
    config = {"extension_zip": str(extension_zip), "legacy_zip": str(legacy_zip), "repo": str(REPO), "clip": str(clip),
              "model": model, "checkpoint": str(checkpoint), "overrides": list(overrides),
              "prompts": str(prompts), "bad_prompts": str(bad), "out": str(tmp / "mattes"),
              "report": str(tmp / "report.json")}
    report, console = run_blender(python, config, tmp)
    assert report["version"][:2] == [int(v) for v in version.split(".")]
    from sam2_web.media.frames import open_frames

    with open_frames(clip) as frames:
        pictures = np.stack([frames.get(i) for i in range(NUM_FRAMES)])
    return {"report": report, "console": console, "oracle": oracle_masks(clip, checkpoint, model, overrides),
            "frames": pictures, "model": model,
            # SAM 2.1 tiny keeps its historical 0.1% slack; EdgeTAM must match the engine exactly.
            "max_diff": 0.001 if model == "sam2.1_hiera_t" else 0.0}


def movie_frame(scene_frame: int) -> int:
    return scene_frame - STRIP_START


def read(path) -> np.ndarray:
    return np.asarray(Image.open(path))


def test_manifest_passes_blenders_own_validation(blender_run):
    assert blender_run["report"]["validate"] == 0, blender_run["console"][-2000:]
    assert "Success parsing TOML" in blender_run["console"]


def test_runs_from_the_default_startup_file(blender_run):
    """Blender 5's default startup file has no sequencer scene: the add-on sets it before it adds
    strip modifiers (Blender 5.0 crashed in ``strip.modifiers.new`` otherwise)."""
    report = blender_run["report"]
    expected = "None" if report["version"][0] >= 5 else "no such setting"
    assert report["sequencer_scene_at_start"] == expected


def test_addon_installs_as_extension_and_as_legacy_addon(blender_run):
    report = blender_run["report"]
    assert report["legacy_registered"] and report["legacy_unregistered"]
    assert report["extension_enabled"]


def test_bad_prompts_file_is_reported_and_adds_nothing(blender_run):
    report = blender_run["report"]
    assert report["poll_without_strip"] is False
    assert report["bad_result"] == ["CANCELLED"]
    assert report["strips_after_bad"] == ["later", "shot"]
    assert "unknown key" in report["bad_message"] and "colour" in report["bad_message"]


def test_matte_strip_sits_on_the_channel_above_frame_for_frame(blender_run):
    report = blender_run["report"]
    assert report["file_result"] == ["FINISHED"]
    described = report["file"]
    channel, start, end = described["source"]
    assert (channel, start, end) == (2, STRIP_START + 1, STRIP_START + NUM_FRAMES)
    (matte,) = described["mattes"]
    assert matte["type"] == "IMAGE" and matte["channel"] == channel + 1 and matte["mute"]
    assert matte["range"] == [start, end] and matte["frame_start"] == STRIP_START
    assert len(matte["files"]) == NUM_FRAMES and matte["colorspace"] == "Non-Color"
    (modifier,) = described["modifiers"]
    assert modifier == {"name": "SAM2 obj_1", "type": "BRIGHT_CONTRAST", "mask_type": "STRIP", "mask": matte["name"]}


def test_matte_files_are_the_engines_masks(blender_run):
    oracle = blender_run["oracle"]
    files = blender_run["report"]["file"]["mattes"][0]["files"]
    mattes = np.stack([read(f) for f in files])
    assert mattes.shape == oracle.shape and set(np.unique(mattes)) <= {0, 255}
    tracked = slice(1, NUM_FRAMES)  # the trimmed first frame is outside the strip: not tracked
    diff = int(((mattes[tracked] > 127) != oracle[tracked]).sum())
    print(f"{blender_run['model']} matte vs engine: {diff} differing pixels of {oracle[tracked].size}; "
          f"coverage per frame {[round(float(m.mean()), 3) for m in oracle]}")
    assert diff <= blender_run["max_diff"] * oracle[tracked].size
    assert not mattes[0].any()
    # The comparison is of real masks, not constant ones: the object and the background both show.
    assert oracle[tracked].any() and not oracle[tracked].all()


def test_render_changes_only_the_object(blender_run):
    oracle, frames = blender_run["oracle"], blender_run["frames"]
    checked = 0
    for scene_frame, path in blender_run["report"]["file_renders"].items():
        i = movie_frame(int(scene_frame))
        rendered = read(path)[..., :3].astype(int)
        source = frames[i].astype(int)
        inside, outside = oracle[i], ~oracle[i]
        change = np.abs(rendered - source).max(axis=-1)
        worst_outside = int(change[outside].max()) if outside.any() else 0
        print(f"frame {i}: inside mean change {change[inside].mean() if inside.any() else 0:.1f}, "
              f"outside worst {worst_outside}")
        assert worst_outside <= 1
        if inside.any():
            assert (change[inside] > 0).mean() > 0.95
            assert (rendered[inside].sum(-1) >= source[inside].sum(-1)).mean() > 0.95  # brighter, not darker
        checked += bool(inside.any() and outside.any())
    assert checked >= 1, "no rendered frame had both object and background; the check would be vacuous"


def test_markers_give_the_same_matte_and_the_mask_modifier_cuts_it_out(blender_run):
    report = blender_run["report"]
    assert report["markers_result"] == ["FINISHED"]
    (matte,) = report["markers"]["mattes"]  # the earlier run's strip was replaced, not stacked
    assert report["markers"]["modifiers"] == [
        {"name": "SAM2 cut out", "type": "MASK", "mask_type": "STRIP", "mask": matte["name"]}]
    oracle, frames = blender_run["oracle"], blender_run["frames"]
    for scene_frame, path in report["markers_renders"].items():
        i = movie_frame(int(scene_frame))
        rendered = read(path)
        alpha_wrong = int(((rendered[..., 3] > 127) != oracle[i]).sum())
        print(f"frame {i}: alpha differs from the engine's mask at {alpha_wrong} pixels")
        assert alpha_wrong <= blender_run["max_diff"] * oracle[i].size
        inside = oracle[i] & (rendered[..., 3] == 255)
        assert np.abs(rendered[..., :3][inside].astype(int) - frames[i][inside].astype(int)).max(initial=0) <= 1


def test_external_python_runs_the_same_job_through_the_cli(blender_run):
    report = blender_run["report"]
    assert report["external_result"] == ["FINISHED"]
    (matte,) = report["external"]["mattes"]
    assert report["external"]["modifiers"] == []  # effect "Matte only"
    assert "_external" in matte["files"][0]
    mattes = np.stack([read(f) for f in matte["files"]]) > 127
    oracle = blender_run["oracle"]
    diff = int((mattes[1:] != oracle[1:]).sum())
    print(f"external run vs engine: {diff} differing pixels")
    assert diff <= blender_run["max_diff"] * oracle[1:].size and not mattes[0].any()


def test_a_click_outside_the_handles_widens_the_tracked_range(blender_run):
    assert blender_run["report"]["widened_args"] == ["0", "3"]


def test_cancel_publishes_nothing(blender_run):
    cancel = blender_run["report"]["cancel"]
    for where in ("here", "external"):
        assert cancel[where].startswith("Cancelled: tracking cancelled"), (where, cancel[where])
        assert cancel[where + "_files"] == [], where


def test_save_render_for_the_docs(blender_run):
    """With SAM2WEB_UPDATE_DOCS=1, keep source | matte | Blender render of one frame as
    docs/blender_render.png (shown in plugins/README.md)."""
    renders = blender_run["report"]["file_renders"]
    scene_frame = sorted(renders, key=int)[-1]
    i = movie_frame(int(scene_frame))
    rendered = read(renders[scene_frame])
    assert rendered.shape == (SIZE[1], SIZE[0], 4)
    if os.environ.get("SAM2WEB_UPDATE_DOCS") == "1":
        matte = np.repeat(blender_run["oracle"][i][..., None] * np.uint8(255), 3, axis=-1)
        panel = np.concatenate([blender_run["frames"][i], matte, rendered[..., :3]], axis=1)
        Image.fromarray(panel).resize((panel.shape[1] * 2, panel.shape[0] * 2), Image.NEAREST).save(
            REPO / "docs" / "blender_render.png")
