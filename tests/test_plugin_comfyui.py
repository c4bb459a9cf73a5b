"""ComfyUI custom nodes: loaded the way ComfyUI loads a custom-node folder, run on a generated clip.

ComfyUI itself is not installed (it is large); what it does with a node package is small and
reproduced here: import ``__init__.py`` by file path under the folder's name, read
``NODE_CLASS_MAPPINGS``, check each class's declared inputs/outputs, instantiate it and call
``getattr(node, node.FUNCTION)(**inputs)``. The segmenter's masks are checked against the
engine's own session API run on the same frames and prompts.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from sam2_web.errors import ExportError, PromptError, UnknownObjectError

from appserver import EDGETAM, app_checkpoint
from tests.clips import moving_disc_frames
from tests.parity import build_reference, save_official_checkpoint

REPO = Path(__file__).resolve().parents[1]
PACKAGE = REPO / "plugins" / "comfyui"
OVERRIDES = "++model.image_size=256"
COMFY_TYPES = {"IMAGE", "MASK", "STRING", "INT", "FLOAT", "BOOLEAN", "SAM2WEB_MODEL"}


def load_like_comfyui(folder: Path, name: str = "sam2_web_nodes"):
    """Import a custom-node folder as ComfyUI's ``load_custom_node`` does: by path, as a package."""
    spec = importlib.util.spec_from_file_location(name, folder / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def nodes():
    return load_like_comfyui(PACKAGE)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A random-weight sam2.1 tiny checkpoint in the official format (image_size 256 for speed)."""
    path = tmp_path_factory.mktemp("comfy") / "sam2.1_hiera_t_random.pt"
    return save_official_checkpoint(build_reference("sam2.1_hiera_t", [OVERRIDES], video=True), path)


@pytest.fixture(scope="module")
def clip():
    frames, _ = moving_disc_frames(n_frames=5, size=(96, 64), radius=12)
    return frames


@pytest.fixture(scope="module")
def model(nodes, checkpoint):
    loader = nodes.NODE_CLASS_MAPPINGS["SAM2WebModelLoader"]()
    (loaded,) = getattr(loader, loader.FUNCTION)(model="sam2.1_hiera_t", device="cpu",
                                                 checkpoint=str(checkpoint), overrides=OVERRIDES)
    return loaded


@pytest.fixture(scope="module")
def edgetam_checkpoint(tmp_path_factory):
    """A random-weight EdgeTAM checkpoint in the official format (256 px), its presence head
    biased to "present" so the masks are not empty (``tests/appserver.py``)."""
    return app_checkpoint(tmp_path_factory.mktemp("comfy_edgetam") / "edgetam_random.pt", EDGETAM)


def engine_predictor(model: str, checkpoint, overrides) -> SimpleNamespace:
    """The oracle's model: our engine built directly from ``checkpoint`` (not through the loader
    node), with the engine settings of ``configs/app.yaml``; ``.predictor`` as ``engine_masks`` takes."""
    from omegaconf import OmegaConf

    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.models import compose_app_config

    engine = OmegaConf.to_container(compose_app_config([]).engine, resolve=True)
    return SimpleNamespace(predictor=build_sam2_video_predictor(
        model, str(checkpoint), device="cpu", hydra_overrides_extra=list(overrides), **engine))


def as_image(frames: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(frames).float() / 255.0


def run_node(nodes, key: str, **inputs):
    node = nodes.NODE_CLASS_MAPPINGS[key]()
    out = getattr(node, node.FUNCTION)(**inputs)
    return out["result"] if isinstance(out, dict) else out


def engine_masks(loaded, frames: np.ndarray, frame: int, points, labels, direction="both") -> np.ndarray:
    """The oracle: the engine's session API on the same uint8 frames, union of objects per frame."""
    out = np.zeros(frames.shape[:3], bool)
    with loaded.predictor.open_session(frames) as session:
        session.add_prompt(frame, 1, points=np.asarray(points, np.float32), labels=np.asarray(labels, np.int32))
        for result in session.propagate(direction=direction):
            out[result.frame_idx] = result.masks.any(axis=0)
    return out


# --------------------------------------------------------------------------- package shape


def test_package_declares_nodes_the_comfyui_way(nodes):
    mappings, names = nodes.NODE_CLASS_MAPPINGS, nodes.NODE_DISPLAY_NAME_MAPPINGS
    assert set(mappings) == {"SAM2WebModelLoader", "SAM2WebVideoSegment", "SAM2WebMatteExport"}
    assert set(names) == set(mappings)
    for key, cls in mappings.items():
        declared = cls.INPUT_TYPES()
        assert set(declared) <= {"required", "optional"} and declared["required"], key
        for section in declared.values():
            for input_name, spec in section.items():
                assert isinstance(spec, tuple) and 1 <= len(spec) <= 2, (key, input_name)
                kind = spec[0]
                # A type name, or a list of choices (a dropdown) whose default is one of them.
                if isinstance(kind, list):
                    assert kind and all(isinstance(c, str) for c in kind), (key, input_name)
                    if len(spec) == 2 and "default" in spec[1]:
                        assert spec[1]["default"] in kind, (key, input_name)
                else:
                    assert kind in COMFY_TYPES, (key, input_name, kind)
        assert isinstance(cls.RETURN_TYPES, tuple) and all(t in COMFY_TYPES for t in cls.RETURN_TYPES)
        assert len(cls.RETURN_NAMES) == len(cls.RETURN_TYPES)
        assert callable(getattr(cls(), cls.FUNCTION)) and isinstance(cls.CATEGORY, str)
    assert mappings["SAM2WebMatteExport"].OUTPUT_NODE is True


def test_model_dropdown_lists_the_registry(nodes):
    from sam2_web.registry import list_models

    choices, options = nodes.NODE_CLASS_MAPPINGS["SAM2WebModelLoader"].INPUT_TYPES()["required"]["model"]
    assert choices == [m.name for m in list_models()]
    assert options["default"] == "sam2.1_hiera_t"


def test_loader_builds_the_model_as_the_app_config_says(model):
    from sam2_web.models import compose_app_config

    engine = compose_app_config([]).engine
    assert model.predictor.image_size == 256  # the override reached the network
    assert model.predictor.default_options.fill_hole_area == engine.fill_hole_area
    assert model.predictor.default_options.read_ahead == engine.read_ahead


def test_images_round_trip_to_uint8_exactly(nodes, clip):
    module = sys.modules["sam2_web_nodes.nodes"]
    assert np.array_equal(module.images_to_frames(as_image(clip)), clip)
    with pytest.raises(PromptError, match=r"\[B, H, W, 3\]"):
        module.images_to_frames(torch.zeros(4, 8, 8))


# --------------------------------------------------------------------------- segmenting


def test_segment_json_prompts_match_the_engine(nodes, model, clip):
    prompts = {"version": 1, "objects": [{"id": 1, "frames": [{"frame": 1, "points": [[40, 28]], "labels": [1]}]}]}
    masks, preview = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, images=as_image(clip),
                              prompts=json.dumps(prompts), direction="both")
    n, h, w = clip.shape[:3]
    assert masks.shape == (n, h, w) and masks.dtype == torch.float32
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    assert preview.shape == (n, h, w, 3) and 0.0 <= float(preview.min()) and float(preview.max()) <= 1.0
    expected = engine_masks(model, clip, 1, [[40, 28]], [1])
    diff = int((masks.numpy().astype(bool) != expected).sum())
    print(f"segment vs engine: {diff} differing pixels of {expected.size}; mask coverage {expected.mean():.3f}")
    assert diff == 0
    # The preview is the source frame wherever there is no mask, and coloured where there is.
    shown = (preview.numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(shown[~expected], clip[~expected])
    if expected.any():
        assert np.any(shown[expected] != clip[expected], axis=-1).mean() > 0.9


def test_segment_on_edgetam_matches_the_engine(nodes, edgetam_checkpoint, clip):
    """EdgeTAM, one of the new models, through the loader and the segmenter: two overrides in the
    loader's one text field (space-separated) both reach the network, and the masks equal those of
    our engine built directly from the same checkpoint."""
    (loaded,) = run_node(nodes, "SAM2WebModelLoader", model="edgetam", device="cpu",
                         checkpoint=str(edgetam_checkpoint), overrides=" ".join(EDGETAM.overrides))
    net = loaded.predictor
    assert loaded.name == "edgetam" and type(net.image_encoder.trunk).__name__ == "TimmBackbone"
    assert net.image_size == 256
    assert net.memory_attention.layers[0].cross_attn_image.q_sizes == (16, 16)  # the second override
    prompts = {"version": 1, "objects": [{"id": 1, "frames": [{"frame": 1, "points": [[40, 28]], "labels": [1]}]}]}
    masks, preview = run_node(nodes, "SAM2WebVideoSegment", sam2_model=loaded, images=as_image(clip),
                              prompts=json.dumps(prompts), direction="both")
    n, h, w = clip.shape[:3]
    assert masks.shape == (n, h, w) and preview.shape == (n, h, w, 3)
    assert set(torch.unique(masks).tolist()) <= {0.0, 1.0}
    oracle = engine_predictor("edgetam", edgetam_checkpoint, EDGETAM.overrides)
    expected = engine_masks(oracle, clip, 1, [[40, 28]], [1])
    diff = int((masks.numpy().astype(bool) != expected).sum())
    print(f"EdgeTAM segment vs engine: {diff} differing pixels of {expected.size}; coverage {expected.mean():.3f}")
    assert diff == 0
    assert expected.any() and not expected.all()  # foreground and background: the comparison compares something


def test_nodes_work_inside_torch_inference_mode(nodes, checkpoint, model, clip, tmp_path):
    """ComfyUI runs every prompt inside torch.inference_mode(): the loader then builds the
    model's parameters as inference tensors. Loading and segmenting that way gives the same
    masks as outside it, and a model loaded inside may be used outside and the other way round."""
    inputs = dict(images=as_image(clip), prompts="", direction="both", points="40,28; 70,40", labels="1,0", frame=1)
    outside, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, **inputs)
    # The same weights under another path: a new cache entry, so the model is built here.
    copy = tmp_path / "same_weights.pt"
    copy.write_bytes(checkpoint.read_bytes())
    with torch.inference_mode():
        (inside_model,) = run_node(nodes, "SAM2WebModelLoader", model="sam2.1_hiera_t", device="cpu",
                                   checkpoint=str(copy), overrides=OVERRIDES)
        assert any(torch.is_inference(p) for p in inside_model.predictor.parameters())
        inside, preview = run_node(nodes, "SAM2WebVideoSegment", sam2_model=inside_model, **inputs)
        with_outside_model, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, **inputs)
    inside_model_outside, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=inside_model, **inputs)
    assert outside.any() and preview.shape == (*clip.shape[:3], 3)
    for other in (inside, with_outside_model, inside_model_outside):
        assert torch.equal(other, outside)


def test_plain_points_equal_the_same_json(nodes, model, clip):
    json_prompts = json.dumps([{"frame": 2, "object": 1, "points": [[50, 30], [10, 10]], "labels": [1, 0]}])
    from_json, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, images=as_image(clip),
                            prompts=json_prompts, direction="forward")
    from_text, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, images=as_image(clip), prompts="",
                            direction="forward", points="50,30; 10,10", labels="1,0", frame=2)
    assert torch.equal(from_json, from_text)
    # Forward from frame 2: frames before it are never visited and stay empty.
    assert not from_text[:2].any()


@pytest.mark.parametrize(
    "inputs, error, message",
    [
        ({"prompts": '{"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[5, 5]]}]}], "colour": 1}'},
         PromptError, "unknown key"),
        ({"prompts": '{"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[500, 5]]}]}]}'},
         PromptError, "outside the"),
        ({"prompts": '{"objects": [{"id": 1, "frames": [{"frame": 9, "points": [[5, 5]]}]}]}'},
         PromptError, "outside the clip"),
        ({"points": "5,-2"}, PromptError, "negative"),
        ({"points": "5,2,7"}, PromptError, "odd"),
        ({"prompts": "{not json"}, PromptError, "not valid JSON"),
        ({}, PromptError, "no prompts"),
        ({"prompts": '[{"frame": 0, "object": 1, "points": [[5, 5]]}]', "object_id": 3},
         UnknownObjectError, "object_id 3"),
    ],
)
def test_bad_prompts_are_reported_before_any_tracking(nodes, model, clip, inputs, error, message):
    args = {"sam2_model": model, "images": as_image(clip), "prompts": "", "direction": "both", **inputs}
    with pytest.raises(error, match=message):
        run_node(nodes, "SAM2WebVideoSegment", **args)


class FakeComfy:
    """Stand-ins for the two ComfyUI hooks the segmenter calls: the progress bar and the
    interrupt flag (ComfyUI's own modules are not installed here)."""

    class Interrupted(Exception):
        pass

    def __init__(self, interrupt_after: int | None = None):
        self.updates: list[tuple[int, int]] = []
        self.checks = 0
        self.interrupt_after = interrupt_after

    def install(self, monkeypatch) -> None:
        import types

        fake = self

        class ProgressBar:
            def __init__(self, total):
                self.total = total

            def update_absolute(self, value, total=None):
                fake.updates.append((value, total))

        def interrupted() -> bool:
            fake.checks += 1
            return fake.interrupt_after is not None and fake.checks > fake.interrupt_after

        def throw_if_interrupted() -> None:
            if fake.interrupt_after is not None and fake.checks > fake.interrupt_after:
                raise FakeComfy.Interrupted()

        comfy = types.ModuleType("comfy")
        utils = types.ModuleType("comfy.utils")
        utils.ProgressBar = ProgressBar
        management = types.ModuleType("comfy.model_management")
        management.processing_interrupted = interrupted
        management.throw_exception_if_processing_interrupted = throw_if_interrupted
        comfy.utils, comfy.model_management = utils, management
        for name, module in (("comfy", comfy), ("comfy.utils", utils), ("comfy.model_management", management)):
            monkeypatch.setitem(sys.modules, name, module)


def test_progress_reaches_comfyuis_bar_and_cancel_stops_between_frames(nodes, model, clip, monkeypatch):
    inputs = dict(sam2_model=model, images=as_image(clip), prompts="", direction="forward", points="40,28", frame=0)
    host = FakeComfy()
    host.install(monkeypatch)
    run_node(nodes, "SAM2WebVideoSegment", **inputs)
    assert host.updates and host.updates[-1][0] == host.updates[-1][1] == len(clip)
    # Cancel after two frames: ComfyUI's own interrupt exception comes out, not a failure.
    host = FakeComfy(interrupt_after=2)
    host.install(monkeypatch)
    with pytest.raises(FakeComfy.Interrupted):
        run_node(nodes, "SAM2WebVideoSegment", **inputs)
    assert len(host.updates) == 2


# --------------------------------------------------------------------------- exporting


def test_export_png_reads_back_exactly(nodes, tmp_path, clip):
    rng = np.random.default_rng(0)
    masks = torch.from_numpy(rng.random(clip.shape[:3]) > 0.5).float()
    (path,) = run_node(nodes, "SAM2WebMatteExport", masks=masks, format="png", folder=str(tmp_path),
                       filename_prefix="shot", fps=12.0, start_frame=100)
    # <folder>/<prefix>_<format>/matte/<prefix>_<frame>.png: the prefix is not doubled into a folder.
    assert Path(path) == tmp_path / "shot_png"
    assert [p.name for p in Path(path).iterdir() if not p.name.startswith(".")] == ["matte"]
    files = sorted((Path(path) / "matte").glob("*.png"))
    assert [f.name for f in files] == [f"shot_{100 + i:05d}.png" for i in range(len(clip))]
    back = np.stack([np.asarray(Image.open(f)) for f in files])
    assert back.dtype == np.uint8 and np.array_equal(back > 127, masks.numpy() > 0.5)
    assert set(np.unique(back)) <= {0, 255}


def test_export_rgba_uses_the_images_and_relative_folders_land_in_the_output_dir(nodes, tmp_path, monkeypatch, clip):
    monkeypatch.chdir(tmp_path)  # outside ComfyUI the "output folder" is the working directory
    masks = torch.zeros(clip.shape[:3])
    masks[:, 10:30, 20:60] = 1.0
    out = nodes.NODE_CLASS_MAPPINGS["SAM2WebMatteExport"]().export(
        masks=masks, format="rgba_png", folder="mattes", filename_prefix="rgba", fps=25.0, images=as_image(clip))
    path = Path(out["result"][0])
    assert out["ui"]["text"] == [str(path)] and path == tmp_path / "mattes" / "rgba_rgba_png"
    assert sorted(p.name for p in path.glob("*.png"))[0] == "rgba_00000.png"
    first = np.asarray(Image.open(sorted(path.glob("*.png"))[0]))
    assert first.shape == (*clip.shape[1:3], 4)
    assert np.array_equal(first[..., :3], clip[0]) and np.array_equal(first[..., 3] > 0, masks[0].numpy() > 0)


def test_export_prefix_may_hold_subfolders_but_not_leave_the_folder(nodes, tmp_path, clip):
    masks = torch.zeros(clip.shape[:3])
    (path,) = run_node(nodes, "SAM2WebMatteExport", masks=masks, format="prores", folder=str(tmp_path),
                       filename_prefix="shots/ball", fps=24.0, images=as_image(clip))
    assert Path(path) == tmp_path / "shots" / "ball_prores.mov" and Path(path).is_file()
    with pytest.raises(ExportError, match="inside the folder"):
        run_node(nodes, "SAM2WebMatteExport", masks=masks, format="png", folder=str(tmp_path),
                 filename_prefix="../escape", fps=24.0)
    assert not (tmp_path.parent / "escape_png").exists()


def test_export_errors_are_clear(nodes, tmp_path, clip):
    masks = torch.ones(clip.shape[:3])
    with pytest.raises(ExportError, match="pass frames"):
        run_node(nodes, "SAM2WebMatteExport", masks=masks, format="prores", folder=str(tmp_path),
                 filename_prefix="x", fps=24.0)
    with pytest.raises(ExportError, match="connect the frames"):
        run_node(nodes, "SAM2WebMatteExport", masks=masks, format="rgba_png", folder=str(tmp_path),
                 filename_prefix="x", fps=24.0, images=as_image(clip[:2]))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(ExportError):
        run_node(nodes, "SAM2WebMatteExport", masks=masks, format="png", folder=str(blocker / "sub"),
                 filename_prefix="x", fps=24.0)
    assert blocker.read_text() == "not a folder"


def test_segment_soft_edges_give_a_float_mask_from_matte_stream(nodes, model, clip):
    from sam2_web.matting import MatteStream

    prompts = {"version": 1, "objects": [{"id": 1, "frames": [{"frame": 1, "points": [[40, 28]], "labels": [1]}]}]}
    masks, _ = run_node(nodes, "SAM2WebVideoSegment", sam2_model=model, images=as_image(clip),
                        prompts=json.dumps(prompts), direction="both", soft_edges=True, edge_band_px=3.0)
    hard = engine_masks(model, clip, 1, [[40, 28]], [1])
    stream = MatteStream(mask_resolution=model.predictor.image_size // 4, band_px=3)
    want = np.stack([stream.update(f, m) for f, m in zip(clip, hard)])
    assert masks.dtype == torch.float32 and masks.shape == hard.shape
    np.testing.assert_array_equal(masks.numpy(), want)
    if hard.any() and not hard.all():
        assert ((want > 0) & (want < 1)).any()  # soft values, not the mask again


def test_export_soft_edges_write_16_bit_alpha(nodes, tmp_path, clip):
    from sam2_web.matting import MatteStream

    masks = torch.zeros(clip.shape[:3])
    yy, xx = np.mgrid[:clip.shape[1], :clip.shape[2]]
    masks[:] = torch.from_numpy(((xx - 48) ** 2 + (yy - 32) ** 2 <= 15**2).astype(np.float32))
    (path,) = run_node(nodes, "SAM2WebMatteExport", masks=masks, format="png", folder=str(tmp_path),
                       filename_prefix="soft", fps=12.0, images=as_image(clip), bit_depth="16", soft_edges=True,
                       edge_band_px=3.0)
    files = sorted((Path(path) / "matte").glob("*.png"))
    stream = MatteStream(band_px=3)
    for f, frame, m in zip(files, clip, masks.numpy() > 0.5):
        got = np.asarray(Image.open(f)).astype(np.uint16)
        np.testing.assert_array_equal(got, np.round(stream.update(frame, m) * 65535).astype(np.uint16))
    with pytest.raises(ExportError, match="frames="):
        run_node(nodes, "SAM2WebMatteExport", masks=masks, format="png", folder=str(tmp_path),
                 filename_prefix="nope", fps=12.0, soft_edges=True)
