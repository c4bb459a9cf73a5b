"""SAMURAI parity: our engine with SAMURAI's motion-aware memory against the authors' code.

The oracle is the ``sam2`` fork in yangchris11/samurai at 76ba195 (``.oracles/samurai``, built by
``scripts/dev.sh install``; its package is called ``sam2`` too, so it runs in a subprocess through
``tests/oracle_venv.run_oracle``). There, with a fixed seed, it builds SAM 2.1 tiny from its own
``configs/samurai/sam2.1_hiera_t.yaml`` with random weights, perturbs every parameter, raises the
object-score bias (random weights judge every object absent, and the filter only engages on
confident present masks), saves the official checkpoint format and plays the session. We load
that same YAML **by path** and the checkpoint with strict keys, and play the same session.

The clip: a disc moves right, passes behind a grey bar and comes out again, longer than
``stable_frames_threshold`` (15) so that the Kalman filter steers the mask choice. The oracle
process records which candidate its heads kept on each frame and which plain SAM 2 (highest
predicted IoU) would have kept; the test asserts they differ on some frames, so the comparison
covers the motion-aware path and not only SAM 2's.

Traps of the oracle (../shared/ORACLES.md): its filter lives on the model, so it tracks one object
per process: every object of our multi-object session is compared with its own one-object run
(a fresh model each). Its hole filling needs CUDA: both run ``fill_hole_area=0``. Its memories are
bf16 and crash its CPU memory attention: float32 copies are fed (``float_memories``).

Bound: worst relative difference of mask logits ``|ours - theirs| / max(1, |theirs|)`` <= 1e-3.
CI runs 128 px; 1024 px is marked ``slow``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.oracle_venv import ORACLES, require_installed, run_oracle
from tests.parity import perturb, sharpen_masks

TOL = 1e-3
IOU_GAIN = 0.1
N_FRAMES = 26
CONFIG = "sam2.1_hiera_t.yaml"

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module", autouse=True)
def _oracle_installed():
    """Skip (fail with CI=true) where the install step could not build the SAMURAI oracle."""
    require_installed("samurai")


def samurai_yaml() -> Path:
    """The authors' SAMURAI config for SAM 2.1 tiny, inside the oracle's installed package."""
    found = sorted(ORACLES.glob(f"samurai/lib/python3*/site-packages/sam2/configs/samurai/{CONFIG}"))
    assert found, "the samurai oracle has no configs/samurai/ (its package data)"
    return found[0]


@torch.no_grad()
def reveal_objects(model, lift: float = 2.0) -> None:
    """Raise the object-score bias: random weights judge every object absent (logits near -0.2)."""
    model.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(lift)


@torch.no_grad()
def level_ious(model, gain: float = IOU_GAIN) -> None:
    """Bring the predicted IoUs of the three candidates close to 0.5 (random weights make one
    candidate win every frame by a wide margin): then the filter's box IoU decides between them,
    as it does on real footage when candidates are alike, and some frames fall below SAMURAI's
    memory threshold (0.5) while staying above its stability threshold (0.3)."""
    last = model.sam_mask_decoder.iou_prediction_head.layers[-1]
    last.weight.mul_(gain)
    last.bias.zero_()


def occlusion_frames(n_frames: int, size: tuple[int, int], radius: int):
    """Two discs (red moving right through a grey bar and out again; blue moving left along the
    bottom) on black. Returns (frames (N, H, W, 3) uint8, red masks, blue masks)."""
    width, height = size
    yy, xx = np.mgrid[0:height, 0:width]
    # Bright shapes on black: with sharpened random weights the candidates are then shape-like
    # masks (tests/parity.sharpen_masks) whose boxes differ, which the filter can tell apart.
    background = np.zeros((height, width, 3), np.uint8)
    bar = (np.abs(xx - width // 2) <= radius + 2) & (yy < height * 2 // 3)
    frames = np.empty((n_frames, height, width, 3), np.uint8)
    red, blue = np.empty((n_frames, height, width), bool), np.empty((n_frames, height, width), bool)
    for i in range(n_frames):
        t = i / (n_frames - 1)
        red_disc = (xx - (radius + t * (width - 2 * radius - 1))) ** 2 + (yy - height // 3) ** 2 <= radius**2
        blue_disc = (xx - (width - radius - 1 - t * (width // 2))) ** 2 + (yy - height * 5 // 6) ** 2 <= (radius * 3 // 4) ** 2
        frame = background.copy()
        frame[red_disc] = (220, 30, 30)
        frame[blue_disc] = (30, 60, 220)
        frame[bar] = (128, 128, 128)  # in front of the red disc
        frames[i], red[i], blue[i] = frame, red_disc & ~bar, blue_disc
    return frames, red, blue


def _box(mask: np.ndarray) -> list[float]:
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max()), float(ys.max())]


# ---------------------------------------------------------------- the oracle's side

_ORACLE_SCRIPT = """
import inspect, json
import numpy as np
import torch
from hydra import compose
from hydra.utils import instantiate
from omegaconf import OmegaConf

import sam2  # noqa: F401  (points hydra at the package's configs)
IOU_GAIN = {gain}

{functions}

torch.set_num_threads(1)
job = json.loads(open(ARGS[0]).read())
# What its build_sam2_video_predictor adds (with the post-processing), hole filling off (CPU).
overrides = [
    "++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=0",
] + job["overrides"]
cfg = compose(config_name="configs/samurai/{config}", overrides=overrides)
OmegaConf.resolve(cfg)
results = {{}}
for run, box in enumerate(job["boxes"]):
    # The filter lives on the model: a fresh model (same weights) for every object.
    torch.manual_seed(job["seed"])
    model = instantiate(cfg.model, _recursive_=True)
    perturb(model, job["seed"])
    reveal_objects(model)
    level_ious(model)
    sharpen_masks(model)
    model = float_memories(model.eval())
    if run == 0:
        torch.save({{"model": model.state_dict()}}, job["ckpt"])
    chosen, plain = [], []
    heads = model._forward_sam_heads

    def recording_heads(*args, **kwargs):
        out = heads(*args, **kwargs)
        low_multi, ious, low = out[0], out[2], out[3]
        if low_multi.shape[1] > 1:
            match = [bool(torch.equal(low_multi[0, k], low[0, 0])) for k in range(low_multi.shape[1])]
            chosen.append(match.index(True))
            plain.append(int(torch.argmax(ious[0])))
        return out

    model._forward_sam_heads = recording_heads
    with torch.inference_mode():
        state = model.init_state(job["video_dir"])
        model.add_new_points_or_box(state, frame_idx=0, obj_id=1, box=box)
        logits = [l[0].float().numpy() for _, _, l in model.propagate_in_video(state)]
    results[f"{{run}}-logits"] = np.stack(logits)
    results[f"{{run}}-chosen"] = np.array(chosen)
    results[f"{{run}}-plain"] = np.array(plain)
save_outputs(**results)
"""


def run_samurai_oracle(boxes, video_dir: str, overrides, workdir: Path, seed: int = 0) -> tuple[dict, Path]:
    """One one-object oracle run per box; returns its outputs and the checkpoint it saved."""
    import inspect

    ckpt = workdir / f"samurai-{seed}.pt"
    job = dict(boxes=boxes, video_dir=video_dir, overrides=list(overrides), seed=seed, ckpt=str(ckpt))
    spec = workdir / "samurai-job.json"
    spec.write_text(json.dumps(job))
    functions = "\n\n".join(inspect.getsource(f) for f in (perturb, reveal_objects, level_ious, sharpen_masks))
    script = _ORACLE_SCRIPT.format(functions=functions, config=CONFIG, gain=IOU_GAIN)
    return run_oracle("samurai", script, {}, workdir, args=[str(spec)]), ckpt


# ---------------------------------------------------------------- our side


def our_session(ckpt: Path, overrides, video_dir: str, boxes) -> np.ndarray:
    """All objects in one session of our engine, from the authors' YAML loaded by path;
    returns (frames, objects, H, W) logits."""
    from sam2_web.build import build_sam2_video_predictor

    predictor = build_sam2_video_predictor(
        samurai_yaml(), ckpt, device="cpu", hydra_overrides_extra=["++model.fill_hole_area=0", *overrides]
    )
    assert predictor.samurai_mode and predictor.motion_config.kf_score_weight == 0.25
    with torch.inference_mode():
        state = predictor.init_state(video_dir)
        for k, box in enumerate(boxes):
            predictor.add_new_points_or_box(state, frame_idx=0, obj_id=k + 1, box=box)
        out = [logits[:, 0].float().numpy() for _, _, logits in predictor.propagate_in_video(state)]
    return np.stack(out)


def relative_diff(ours: np.ndarray, theirs: np.ndarray) -> float:
    """Worst ``|ours - theirs| / max(1, |theirs|)``."""
    theirs = theirs.astype(np.float64)
    return float((np.abs(ours.astype(np.float64) - theirs) / np.maximum(1.0, np.abs(theirs))).max())


def check_parity(tmp_path: Path, image_size: int, size: tuple[int, int], radius: int, *, steer: bool = True) -> None:
    frames, red, blue = occlusion_frames(N_FRAMES, size, radius)
    video_dir = tmp_path / "clip"
    video_dir.mkdir()
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(video_dir / f"{i:05d}.jpg", quality=95)
    boxes = [_box(red[0]), _box(blue[0])]
    overrides = [f"++model.image_size={image_size}"]
    theirs, ckpt = run_samurai_oracle(boxes, str(video_dir), overrides, tmp_path)
    ours = our_session(ckpt, overrides, str(video_dir), boxes)
    assert ours.shape[:2] == (N_FRAMES, len(boxes))

    steered = sum(int((theirs[f"{k}-chosen"] != theirs[f"{k}-plain"]).sum()) for k in range(len(boxes)))
    if steer:
        assert steered > 0, "the Kalman filter never changed the mask choice: the clip does not test SAMURAI"
    worst = 0.0
    for k in range(len(boxes)):
        expected = theirs[f"{k}-logits"][:, 0]
        got = ours[:, k]
        assert got.shape == expected.shape
        fg = (expected > 0).mean()
        assert 0.0 < fg < 1.0, f"object {k + 1}: masks are all one label"
        worst = max(worst, relative_diff(got, expected))
    print(f"SAMURAI {image_size}px: {steered} frames steered by the filter, worst relative diff {worst:.3g}")
    assert worst <= TOL


def test_samurai_matches_authors_code_reduced(tmp_path):
    """128 px: two objects in one session, each equal to its own one-object oracle run."""
    check_parity(tmp_path, 128, (160, 120), 14)


@pytest.mark.slow
def test_samurai_matches_authors_code_1024(tmp_path):
    """1024 px (the published input size), same scenario. With these random weights the filter
    engages but its box IoUs did not overturn the predicted IoUs at this size (the candidates'
    boxes coincide), so only the reduced run asserts a changed choice (TODO: a 1024 px scenario
    where it changes)."""
    check_parity(tmp_path, 1024, (320, 240), 24, steer=False)
