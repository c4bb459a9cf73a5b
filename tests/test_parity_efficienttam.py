"""EfficientTAM parity: our models give the authors' numbers (yformer/EfficientTAM at abcd061).

The authors' package runs in its own venv (``.oracles/efficienttam``, see tests/oracle_venv.py and
../shared/ORACLES.md). There it builds each model from its official YAML with seeded random
weights, perturbs every parameter and buffer (``tests.parity.perturb``: trivial initial values
such as zero biases or unit norms could hide a wrong path), saves them as an official checkpoint
(``{"model": state_dict}``) and plays a scripted session. Here our model loads that checkpoint
with strict keys and plays the same session; every output is compared.

* Video (bound 1e-3): three objects from a click, a box and a mask; a propagation; a correction
  click on a tracked frame and a re-propagation; an object added on a middle frame; a reverse
  pass from the last frame. Memories pile up from the third frame on, so the ``_1``/``_2``
  variants read them through their pooled cross-attention.
* Image (bound 1e-4): the embedding, then clicks (multimask and single), a box, clicks + box and
  a mask prompt, with logits at the picture's resolution.

Sizes (CI time): every variant's video runs reduced (``image_size=128``: 8x8 maps pooled to 4x4)
in one oracle process, and the image predictor of both 512-px variants at their native size. Full
size is ``slow``: video of ``efficienttam_s_2`` at 1024 px (the pooled attention on 64x64 maps)
and of ``efficienttam_ti_512x512`` at 512, the image predictor of ``_ti``/``_s`` at 1024.

Random weights make the score head call every object absent, so every mask would be the constant
no-object logit and hide the network: ``reveal_objects`` lifts that score, and each comparison
first checks that the oracle's masks are informative.

Traps of the oracle, worked around in its script:
* ``build_efficienttam_video_predictor`` *replaces* the caller's hydra overrides with
  ``["++model.compile_image_encoder=False"]`` on any machine without an Ampere-class GPU, so the
  script composes the config itself with the overrides that builder adds;
* like SAM 2 it stores memories as bfloat16 and, on CPU, fails when a memory attention sees only
  bf16 memories: its memory attention gets float32 copies (the values it uses otherwise);
* its hole filling needs a CUDA kernel and is skipped on CPU: both sides run ``fill_hole_area=0``
  (ours is tested in test_efficienttam_engine.py).
"""

from __future__ import annotations

import contextlib
import inspect
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

from sam2_web.modeling.efficient_attention import EfficientRoPEAttention
from tests.clips import make_moving_disc_clip
from tests.oracle_venv import ORACLES, require_installed, run_oracle
from tests.parity import perturb

VIDEO_TOL = 1e-3
IMAGE_TOL = 1e-4

VARIANTS = (
    "efficienttam_ti", "efficienttam_ti_1", "efficienttam_ti_2", "efficienttam_ti_512x512",
    "efficienttam_s", "efficienttam_s_1", "efficienttam_s_2", "efficienttam_s_512x512",
)
REDUCED = ["++model.image_size=128"]
NO_HOLE_FILLING = ["++model.fill_hole_area=0"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _oracle_installed():
    """A clone without shared/ has no EfficientTAM snapshot: skip with the install step's reason
    (with CI=true, fail)."""
    require_installed("efficienttam")


@torch.no_grad()
def reveal_objects(model, lift: float = 1.0) -> None:
    """Raise the object-score bias so the objects are judged present.

    With random weights the score head says "absent" (logits near -0.2) on every decoded frame,
    which turns each mask into the constant no-object logit and would leave the decoder, the
    memory attention and everything feeding it out of the comparison. Scores of order 1 keep a
    wide margin from 0, so the two sides cannot disagree on presence by rounding.
    """
    model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(lift)


# ---------------------------------------------------------------- sessions played on both sides
# These two functions run here on our predictors and, shipped as source, in the oracle's venv on
# the authors' (the APIs are the same), so both sides play exactly the same calls.


def play_video(predictor, video_dir, steps, arrays):
    """Play ``steps`` (``[op, kwargs]``) on a video predictor; return every output as numpy."""
    import numpy as np
    import torch

    def logits_of(x):
        return x.float().cpu().numpy()

    out = {}
    with torch.inference_mode():
        state = predictor.init_state(video_dir)
        for i, (op, kwargs) in enumerate(steps):
            tag = f"{i:02d}-{op}"
            if op == "prompt":
                frame, ids, logits = predictor.add_new_points_or_box(state, **kwargs)
            elif op == "mask":
                kwargs = dict(kwargs, mask=arrays[kwargs["mask"]])
                frame, ids, logits = predictor.add_new_mask(state, **kwargs)
            elif op == "propagate":
                steps_out = list(predictor.propagate_in_video(state, **kwargs))
                out[tag + "-frames"] = np.array([s[0] for s in steps_out])
                out[tag + "-ids"] = np.array([list(s[1]) for s in steps_out])
                out[tag + "-logits"] = np.stack([logits_of(s[2]) for s in steps_out])
                continue
            else:
                raise ValueError(op)
            out[tag + "-frame"] = np.array(frame)
            out[tag + "-ids"] = np.array(list(ids))
            out[tag + "-logits"] = logits_of(logits)
    return out


def play_image(predictor, image, prompts):
    """Embed ``image`` and predict each prompt (return_logits); then refine the first result
    with its low-res logits as a mask prompt. Returns every output as numpy."""
    import numpy as np
    import torch

    out = {}
    with torch.inference_mode():
        predictor.set_image(image)
        out["embedding"] = predictor.get_image_embedding().float().cpu().numpy()
        first = None
        for name, kwargs in prompts.items():
            kwargs = {k: np.asarray(v) if isinstance(v, list) else v for k, v in kwargs.items()}
            masks, ious, low_res = predictor.predict(return_logits=True, **kwargs)
            out[name + "-masks"], out[name + "-ious"], out[name + "-low_res"] = masks, ious, low_res
            if first is None:
                first = (kwargs, low_res[int(np.argmax(ious))][None])
        kwargs, mask_input = first
        masks, ious, low_res = predictor.predict(
            **kwargs, mask_input=mask_input, multimask_output=False, return_logits=True
        )
        out["mask prompt-masks"], out["mask prompt-ious"], out["mask prompt-low_res"] = masks, ious, low_res
    return out


# ---------------------------------------------------------------- the oracle's side

_ORACLE_SCRIPT = """
import inspect, json, time
import numpy as np
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf

import efficient_track_anything  # noqa: F401  (points hydra at the package's configs)
from efficient_track_anything.efficienttam_image_predictor import EfficientTAMImagePredictor

{functions}

IMAGE_OVERRIDES = [
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
]
# What build_efficienttam_video_predictor adds (it would drop ours on a CPU machine).
VIDEO_OVERRIDES = [
    "++model._target_=efficient_track_anything.efficienttam_video_predictor.EfficientTAMVideoPredictor",
    *IMAGE_OVERRIDES,
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
]


def build(job):
    base = VIDEO_OVERRIDES if job["kind"] == "video" else IMAGE_OVERRIDES
    overrides = base + ["++model.compile_image_encoder=false"] + job["overrides"]
    cfg = compose(config_name=f"configs/efficienttam/{{job['name']}}.yaml", overrides=overrides)
    OmegaConf.resolve(cfg)
    torch.manual_seed(job["seed"])
    model = instantiate(cfg.model, _recursive_=True)
    perturb(model, job["seed"])
    reveal_objects(model)
    model = model.eval()
    torch.save({{"model": model.state_dict()}}, job["ckpt"])
    if job["kind"] == "image":
        return EfficientTAMImagePredictor(model)
    return float_memories(model)


torch.set_num_threads(int(ARGS[1]))
jobs = json.loads(open(ARGS[0]).read())
arrays = load_inputs()
results = {{}}
for job in jobs:
    predictor = build(job)
    start = time.perf_counter()
    if job["kind"] == "video":
        out = play_video(predictor, job["video_dir"], job["steps"], arrays)
    else:
        out = play_image(predictor, arrays[job["image"]], job["prompts"])
    results[job["key"] + "__seconds"] = np.array(time.perf_counter() - start)
    results.update({{job["key"] + "__" + k: v for k, v in out.items()}})
save_outputs(**results)
"""


def run_efficienttam_oracle(jobs, arrays, workdir: Path, threads: int = 1) -> dict:
    """Run ``jobs`` in the oracle venv (one process); returns ``{job key: {output: array}}``.

    Each job: ``key``, ``name`` (variant), ``kind`` (video/image), ``overrides``, ``seed``,
    ``ckpt`` (where the oracle saves the weights) and the session (``steps`` + ``video_dir``, or
    ``prompts`` + ``image``, an entry of ``arrays``).
    """
    functions = "\n\n".join(inspect.getsource(f) for f in (perturb, reveal_objects, play_video, play_image))
    script = _ORACLE_SCRIPT.format(functions=functions)
    spec = workdir / f"jobs-{abs(hash(tuple(j['key'] for j in jobs)))}.json"
    spec.write_text(json.dumps(jobs))
    flat = run_oracle("efficienttam", script, arrays, workdir, args=[str(spec), str(threads)])
    results: dict = {job["key"]: {} for job in jobs}
    for name, value in flat.items():
        key, output = name.split("__", 1)
        results[key][output] = value
    return results


# ---------------------------------------------------------------- sessions and our side


def video_steps(masks: np.ndarray, last: int) -> list:
    """The scripted video session on the moving-disc clip (frame 0's disc mask is ``disc0``)."""
    cy, cx = np.argwhere(masks[last // 2 + 1]).mean(axis=0)
    return [
        ["prompt", dict(frame_idx=0, obj_id=1, points=[[26.0, 22.0]], labels=[1])],
        ["prompt", dict(frame_idx=0, obj_id=2, box=[60.0, 50.0, 120.0, 90.0])],
        ["mask", dict(frame_idx=0, obj_id=3, mask="disc0")],
        ["propagate", {}],
        # A correction on a tracked frame, then tracking again with it.
        ["prompt", dict(frame_idx=last // 2 + 1, obj_id=3, points=[[float(cx), float(cy)]], labels=[1],
                        clear_old_points=False)],
        ["propagate", {}],
        # A new object on a middle frame, then a pass backwards from the last frame.
        ["prompt", dict(frame_idx=last // 2, obj_id=4, points=[[100.0, 30.0], [20.0, 80.0]], labels=[1, 0])],
        ["propagate", dict(start_frame_idx=last, reverse=True)],
    ]


def picture(h: int = 480, w: int = 640, seed: int = 0) -> np.ndarray:
    """A non-square picture (the resize path) with flat shapes and texture, reproducible."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 80, size=(h, w, 3), dtype=np.uint8)
    img[h // 8 : h * 13 // 24, w // 8 : w * 15 // 32] = (200, 60, 40)
    yy, xx = np.mgrid[:h, :w]
    img[(yy - h * 2 // 3) ** 2 + (xx - w * 45 // 64) ** 2 < (min(h, w) * 3 // 16) ** 2] = (40, 180, 220)
    return img


IMAGE_PROMPTS = {
    "click/multimask": dict(point_coords=[[180.0, 150.0]], point_labels=[1]),
    "clicks/single": dict(point_coords=[[180.0, 150.0], [450.0, 320.0], [100.0, 400.0]], point_labels=[1, 1, 0],
                          multimask_output=False),
    "box": dict(box=[70.0, 50.0, 310.0, 270.0], multimask_output=False),
    "clicks+box": dict(point_coords=[[180.0, 150.0], [290.0, 60.0]], point_labels=[1, 0], box=[70.0, 50.0, 310.0, 270.0]),
}


def our_video_predictor(job):
    from sam2_web.build import build_sam2_video_predictor

    return build_sam2_video_predictor(
        f"configs/efficienttam/{job['name']}.yaml", job["ckpt"], device="cpu",
        hydra_overrides_extra=job["overrides"],
    )


def our_image_predictor(job):
    from sam2_web.build import build_sam2
    from sam2_web.image_predictor import SAM2ImagePredictor

    model = build_sam2(f"configs/efficienttam/{job['name']}.yaml", job["ckpt"], device="cpu",
                       hydra_overrides_extra=job["overrides"])
    return SAM2ImagePredictor(model)


def compare(theirs: dict, ours: dict, tol: float, case: str) -> float:
    """Assert equal keys, equal ids/frames and logits within ``tol``; return the worst difference."""
    theirs = {k: v for k, v in theirs.items() if k != "seconds"}
    assert sorted(theirs) == sorted(ours), case
    worst = 0.0
    for key, expected in theirs.items():
        got = ours[key]
        assert got.shape == expected.shape, f"{case} {key}: {got.shape} vs {expected.shape}"
        if expected.dtype.kind in "iub":
            assert np.array_equal(got, expected), f"{case} {key}"
            continue
        diff = float(np.abs(got.astype(np.float64) - expected.astype(np.float64)).max()) if got.size else 0.0
        assert diff <= tol, f"{case} {key}: max |diff| {diff:.3g} > {tol}"
        worst = max(worst, diff)
    print(f"{case}: {len(theirs)} outputs, worst |diff| {worst:.3g}")
    return worst


def assert_informative(outputs: dict, case: str) -> None:
    """The compared logits must carry information: objects decoded as present and masks with
    both foreground and background (constant no-object logits would compare equal trivially)."""
    for key, value in outputs.items():
        if key.endswith("logits"):
            maps = value.reshape(-1, value.shape[-2] * value.shape[-1])
            assert (maps.max(axis=1) > -1000).all(), f"{case} {key}: an object was decoded as absent"
            assert 0.0 < (maps > 0).mean() < 1.0, f"{case} {key}: masks are all one label"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A JPEG folder of a disc moving over texture, 128x96, 6 frames."""
    path, masks = make_moving_disc_clip(tmp_path_factory.mktemp("etam") / "clip", n_frames=6, size=(128, 96), radius=14)
    return str(path), masks


def _video_job(name, overrides, clip, workdir):
    video_dir, masks = clip
    return dict(
        key=name, name=name, kind="video", seed=0, overrides=list(overrides) + NO_HOLE_FILLING,
        ckpt=str(workdir / f"{name}-video.pt"), video_dir=video_dir, steps=video_steps(masks, last=len(masks) - 1),
    )


def _image_job(name, overrides, workdir):
    return dict(key=name, name=name, kind="image", seed=1, overrides=list(overrides),
                ckpt=str(workdir / f"{name}-image.pt"), image="picture", prompts=IMAGE_PROMPTS)


def _check_video(job, theirs, clip, predictor=None) -> float:
    assert_informative(theirs, job["key"])
    predictor = predictor or our_video_predictor(job)
    ours = play_video(predictor, job["video_dir"], job["steps"], {"disc0": clip[1][0]})
    return compare(theirs, ours, VIDEO_TOL, f"{job['key']} video {job['overrides']}")


def _check_image(job, theirs) -> float:
    assert_informative({k: v for k, v in theirs.items() if k.endswith("masks")}, job["key"])
    ours = play_image(our_image_predictor(job), picture(), job["prompts"])
    return compare(theirs, ours, IMAGE_TOL, f"{job['key']} image {job['overrides']}")


@pytest.fixture(scope="module")
def reduced_runs(clip, tmp_path_factory):
    """Every variant at image_size 128, played by the oracle in one process."""
    workdir = tmp_path_factory.mktemp("etam-reduced")
    jobs = {name: _video_job(name, REDUCED, clip, workdir) for name in VARIANTS}
    return jobs, run_efficienttam_oracle(list(jobs.values()), {"disc0": clip[1][0]}, workdir)


@pytest.mark.parametrize("name", VARIANTS)
def test_video_reduced(name, reduced_runs, clip):
    jobs, theirs = reduced_runs
    _check_video(jobs[name], theirs[name], clip)


@pytest.fixture(scope="module")
def native_512_images(tmp_path_factory):
    """The image predictor of both 512-px variants at their native size (the ViT's windows pad
    32 -> 42 tokens, its position table is resized 14 -> 32)."""
    workdir = tmp_path_factory.mktemp("etam-image")
    jobs = {name: _image_job(name, [], workdir) for name in ("efficienttam_ti_512x512", "efficienttam_s_512x512")}
    return jobs, run_efficienttam_oracle(list(jobs.values()), {"picture": picture()}, workdir)


@pytest.mark.parametrize("name", ["efficienttam_ti_512x512", "efficienttam_s_512x512"])
def test_image_predictor_native_512(name, native_512_images):
    jobs, theirs = native_512_images
    _check_image(jobs[name], theirs[name])


@contextlib.contextmanager
def every_core():
    """Full-size runs use all cores (the module's tiny runs are on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficienttam_ti", "efficienttam_s"])
def test_image_predictor_1024(name, tmp_path):
    job = _image_job(name, [], tmp_path)
    with every_core() as threads:
        theirs = run_efficienttam_oracle([job], {"picture": picture()}, tmp_path, threads=threads)
        _check_image(job, theirs[name])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["efficienttam_s_2", "efficienttam_ti_512x512"])
def test_video_full_size(name, clip, tmp_path):
    """Full resolution: the pooled attention at 1024 px (64x64 maps), a 512-px model at 512."""
    job = _video_job(name, [], clip, tmp_path)
    with every_core() as threads:
        theirs = run_efficienttam_oracle([job], {"disc0": clip[1][0]}, tmp_path, threads=threads)
        _check_video(job, theirs[name], clip)


def test_official_yaml_by_path(reduced_runs, clip, tmp_path):
    """The authors' own YAML (targets ``efficient_track_anything.modeling...``, torch.compile on),
    copied anywhere, builds our classes, loads their checkpoint and gives their numbers."""
    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.modeling.backbones.vit import ViT

    name = "efficienttam_s_1"
    jobs, theirs = reduced_runs
    source = ORACLES / "src" / "EfficientTAM" / "efficient_track_anything" / "configs" / "efficienttam" / f"{name}.yaml"
    official = tmp_path / f"{name}.yaml"
    official.write_text(source.read_text())
    assert "efficient_track_anything.modeling.sam.transformer.EfficientRoPEAttention1" in official.read_text()
    predictor = build_sam2_video_predictor(str(official), jobs[name]["ckpt"], device="cpu",
                                           hydra_overrides_extra=jobs[name]["overrides"])
    assert isinstance(predictor.image_encoder.trunk, ViT)
    attention = predictor.memory_attention.layers[0].cross_attn_image
    assert isinstance(attention, EfficientRoPEAttention) and attention.pool_correction == "logits"
    _check_video(jobs[name], theirs[name], clip, predictor)


def test_checkpoint_from_the_hub_by_model_name(reduced_runs, clip, monkeypatch, tmp_path):
    """The loopback Hub serves the oracle's checkpoint as yunyangx/efficient-track-anything
    efficienttam_ti_2.pt; our loader fetches it by model name (strict keys) and gives their numbers."""
    from hubserver import serve_hub

    from sam2_web import models
    from sam2_web.registry import get_model

    name = "efficienttam_ti_2"
    jobs, theirs = reduced_runs
    spec = get_model(name)
    assert (spec.repo_id, spec.filename, spec.license) == ("yunyangx/efficient-track-anything", f"{name}.pt", "Apache-2.0")
    assert spec.quality is None  # the paper publishes no score for this variant
    assert get_model("efficienttam_s").quality.score("SA-V test") == 74.5
    with serve_hub({(spec.repo_id, "main", spec.filename): Path(jobs[name]["ckpt"]).read_bytes()}) as hub:
        hub.use(monkeypatch, tmp_path)
        predictor = models.load_predictor(name, kind="video", device="cpu", overrides=jobs[name]["overrides"],
                                          progress=False)
        assert ("GET", f"/{spec.repo_id}/resolve/main/{spec.filename}") in hub.requests
    _check_video(jobs[name], theirs[name], clip, predictor)
