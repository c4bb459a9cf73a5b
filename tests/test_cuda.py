"""The CUDA paths, run where a GPU exists (``pytest -m cuda``; deselected on CPU-only machines).

CI has no GPU, so these run on a lent GPU machine; the CPU runs of every other test go through
the same code with ``device="cpu"``. Checked here: the model and both predictors on CUDA equal
the reference on CUDA (same random weights, float32), the device choice picks CUDA, and the
opt-in bf16 autocast runs and stays close to float32 (it changes numbers, so it is only
compared loosely).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.clips import make_moving_disc_clip
from tests.parity import make_pair

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run with -m cuda there)"),
]

SIZE = ("++model.image_size=1024",)
TOL = 1e-3


@pytest.fixture(autouse=True)
def exact_float32():
    """TF32 convolutions/matmuls would differ between two equal models by ~1e-3: turn them off."""
    before = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_device_choice_picks_cuda():
    from sam2_web.device import pick_device

    assert pick_device("auto").type == "cuda"


def test_image_predictor_on_cuda_equals_the_reference(parity_dir):
    from sam2.sam2_image_predictor import SAM2ImagePredictor as RefPredictor

    from sam2_web import SAM2ImagePredictor

    pair = make_pair("sam2.1_hiera_t", SIZE, workdir=parity_dir)
    ref, ours = pair.ref.to("cuda"), pair.ours.to("cuda")
    image = (np.random.default_rng(0).random((480, 640, 3)) * 255).astype(np.uint8)
    rp, op = RefPredictor(ref), SAM2ImagePredictor(ours)
    with torch.inference_mode():
        rp.set_image(image)
        op.set_image(image)
        for kwargs in (
            dict(point_coords=np.array([[320, 240]]), point_labels=np.array([1]), multimask_output=True),
            dict(box=np.array([100, 80, 400, 300]), multimask_output=False),
        ):
            _, r_scores, r_logits = rp.predict(**kwargs)
            _, o_scores, o_logits = op.predict(**kwargs)
            assert np.abs(r_logits - o_logits).max() < TOL
            assert np.abs(r_scores - o_scores).max() < TOL
    pair.ref.to("cpu"), pair.ours.to("cpu")


def test_video_on_cuda_equals_the_reference(parity_dir, tmp_path):
    folder, _ = make_moving_disc_clip(tmp_path / "clip", n_frames=6, size=(256, 192), radius=30)
    pair = make_pair("sam2.1_hiera_t", ("++model.image_size=512",), video=True, workdir=parity_dir)
    ref, ours = pair.ref.to("cuda"), pair.ours.to("cuda")
    for model in (ref, ours):
        model.fill_hole_area = 0  # the reference's filling needs its own CUDA extension
    worst = 0.0
    with torch.inference_mode():
        rs, os_ = ref.init_state(str(folder)), ours.init_state(str(folder))
        for obj_id, point in ((1, [128, 96]), (2, [40, 40])):
            _, _, r = ref.add_new_points_or_box(rs, 0, obj_id, points=np.array([point]), labels=np.array([1]))
            _, _, o = ours.add_new_points_or_box(os_, 0, obj_id, points=np.array([point]), labels=np.array([1]))
            worst = max(worst, (r.float().cpu() - o.float().cpu()).abs().max().item())
        ref_frames = {f: m.float().cpu() for f, _, m in ref.propagate_in_video(rs)}
        our_frames = {f: m.float().cpu() for f, _, m in ours.propagate_in_video(os_)}
    assert sorted(ref_frames) == sorted(our_frames) == list(range(6))
    for f in ref_frames:
        worst = max(worst, (ref_frames[f] - our_frames[f]).abs().max().item())
    print(f"worst |diff| on CUDA: {worst:.3g}")
    assert worst < TOL
    pair.ref.to("cpu"), pair.ours.to("cpu")


def test_bf16_autocast_runs_and_stays_close(parity_dir):
    from sam2_web import SAM2ImagePredictor
    from sam2_web.build import build_sam2

    pair = make_pair("sam2.1_hiera_t", SIZE, workdir=parity_dir)
    image = (np.random.default_rng(1).random((480, 640, 3)) * 255).astype(np.uint8)
    masks = {}
    for precision in ("fp32", "bf16"):
        model = build_sam2("sam2.1_hiera_t", pair.ckpt, device="cuda", hydra_overrides_extra=list(SIZE))
        predictor = SAM2ImagePredictor(model, precision=precision)
        with torch.inference_mode():
            predictor.set_image(image)
            m, _, _ = predictor.predict(box=np.array([100, 80, 400, 300]), multimask_output=False)
        masks[precision] = m[0] > 0
    inter = np.logical_and(masks["fp32"], masks["bf16"]).sum()
    union = max(np.logical_or(masks["fp32"], masks["bf16"]).sum(), 1)
    assert inter / union > 0.9


# ---------------------------------------------------------------- the GPU path (issue 17)


def test_small_components_on_cuda_match_the_definition():
    from oracles import bfs_components
    from sam2_web.components import small_components

    rng = np.random.default_rng(5)
    masks = rng.random((4, 1, 40, 56)) < 0.5
    got = small_components(torch.from_numpy(masks).cuda(), 8).cpu().numpy()
    for i in range(4):
        labels, areas = bfs_components(masks[i, 0])
        np.testing.assert_array_equal(got[i, 0], (labels > 0) & (areas <= 8))


def _tiny_video(parity_dir, size=512):
    pair = make_pair("sam2.1_hiera_t", (f"++model.image_size={size}",), video=True, workdir=parity_dir)
    return pair.ckpt, (f"++model.image_size={size}",)


def _track_session(model, folder, objects=3, frames=None):
    with model.open_session(str(folder), fill_hole_area=8) as session:
        for obj, point in enumerate(([128, 96], [40, 40], [200, 150])[:objects]):
            session.add_prompt(0, obj + 1, points=[point], labels=[1])
        yielded = list(session.propagate(direction="forward", max_frames=frames))
        return yielded, list(session.results())


def test_the_propagation_loop_on_cuda_never_syncs(parity_dir, tmp_path):
    import warnings

    from host_syncs import HostSyncs
    from sam2_web.build import build_sam2_video_predictor

    folder, _ = make_moving_disc_clip(tmp_path / "clip", n_frames=10, size=(256, 192), radius=30)
    ckpt, size = _tiny_video(parity_dir)
    model = build_sam2_video_predictor("sam2.1_hiera_t", ckpt, device="cuda", hydra_overrides_extra=list(size))
    with model.open_session(str(folder), fill_hole_area=8, history="disk") as session:
        for obj, point in enumerate(([128, 96], [40, 40], [200, 150])):
            session.add_prompt(0, obj + 1, points=[point], labels=[1])
        session.tracker.preflight()
        assert session.tracker.features._host_input(1).is_pinned()
        torch.cuda.synchronize()
        with warnings.catch_warnings(record=True) as caught, HostSyncs() as syncs:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                results = list(session.propagate(direction="forward"))
            finally:
                torch.cuda.set_sync_debug_mode("default")
        synced = [str(w.message) for w in caught if "synchroniz" in str(w.message)]
        assert syncs.total == 0 and not synced, (dict(syncs.places), synced[:3])
        stored = {r.frame_idx: r.masks for r in session.results()}
        for r in results:
            np.testing.assert_array_equal(r.masks, stored[r.frame_idx])


def test_preset_on_cuda_is_close_to_exact_and_compiles_once(parity_dir, tmp_path):
    """bf16 + compiled (inductor) against the exact float32 path; the bound is on IoU, since bf16
    changes numbers. A second session on the model compiles no new graph."""
    from torch._dynamo.utils import counters

    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.compiled import CompileSettings
    from sam2_web.video.agreement import mask_agreement

    folder, _ = make_moving_disc_clip(tmp_path / "clip", n_frames=12, size=(256, 192), radius=30)
    ckpt, size = _tiny_video(parity_dir)
    exact = build_sam2_video_predictor("sam2.1_hiera_t", ckpt, device="cuda", hydra_overrides_extra=list(size))
    preset = build_sam2_video_predictor("sam2.1_hiera_t", ckpt, device="cuda", hydra_overrides_extra=list(size),
                                        vos_optimized=CompileSettings(mode=None), precision="bf16")
    _, want = _track_session(exact, folder)
    _, got = _track_session(preset, folder)
    agreement = mask_agreement(want, got)
    print(f"preset vs exact: {agreement}; compile {preset.compiled.compile_seconds:.0f} s")
    assert min(agreement.mean_iou.values()) >= 0.9 and agreement.worst_iou >= 0.5
    assert any(r.masks.any() and not r.masks.all() for r in want)
    graphs = int(counters["stats"]["unique_graphs"])
    _track_session(preset, folder)
    assert int(counters["stats"]["unique_graphs"]) == graphs


def test_vos_optimized_true_compiles_on_this_gpu(parity_dir):
    from sam2_web.build import build_sam2_video_predictor

    ckpt, size = _tiny_video(parity_dir)
    model = build_sam2_video_predictor("sam2.1_hiera_t", ckpt, device="cuda", hydra_overrides_extra=list(size),
                                       vos_optimized=True)
    if torch.cuda.get_device_capability()[0] >= 8:
        assert model.compiled.settings.mode == "max-autotune" and model.precision == "bf16"
        assert model.object_bucket(3) == 4
