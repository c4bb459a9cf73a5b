"""GPU figures, ours vs the reference in the same run: ``python -m bench.gpu`` on a CUDA machine.

* image encoder (SAM 2.1 tiny, 1024 px): median ms per image, float32 and the opt-in bf16 autocast;
* video tracking at 1024 px with 3 objects: median s/frame once the memory is full, for SAM 2.1
  tiny (ours and the reference, frames interleaved) and, ours only, for the fast families.

Random weights (the reference's, through an official checkpoint), TF32 off for float32 so both
run the same arithmetic. CI has no GPU; the figures go into the README by hand, with the card.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench._common import build_pair, markdown_table, median, reference_config


def _sync_timer(fn, warmup: int, repeats: int) -> list[float]:
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return times


def image_encoder_rows(repeats: int) -> list[list[object]]:
    ref, ours = build_pair("sam2.1_hiera_t")
    ref, ours = ref.cuda(), ours.cuda()
    x = torch.randn(1, 3, 1024, 1024, device="cuda")
    rows = []
    for precision in ("fp32", "bf16"):
        ctx = (lambda: torch.autocast("cuda", dtype=torch.bfloat16)) if precision == "bf16" else contextlib.nullcontext
        def run(model):
            with torch.inference_mode(), ctx():
                model.forward_image(x)
        t_ref = _sync_timer(lambda: run(ref), 3, repeats)
        t_ours = _sync_timer(lambda: run(ours), 3, repeats)
        rows.append([f"image encoder {precision} (ms)", f"{1000 * median(t_ref):.1f}", f"{1000 * median(t_ours):.1f}",
                     f"{median(t_ours) / median(t_ref):.2f}"])
    return rows


def _clip(folder: Path, n: int) -> str:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    base = (rng.random((768, 1024, 3)) * 255).astype(np.uint8)
    for i in range(n):
        frame = np.roll(base, 8 * i, axis=1)
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=90)
    return str(folder)


POINTS = ([[300, 300]], [[600, 400]], [[800, 200]])


def _track_times(predictor, clip: str, objects: int):
    """A generator yielding the seconds of each propagated frame (memory fills after 7)."""
    with torch.inference_mode():
        state = predictor.init_state(clip)
        for obj in range(objects):
            predictor.add_new_points_or_box(state, 0, obj + 1, points=np.array(POINTS[obj]), labels=np.array([1]))
        start = time.perf_counter()
        for _ in predictor.propagate_in_video(state):
            torch.cuda.synchronize()
            yield time.perf_counter() - start
            start = time.perf_counter()


def video_rows(frames: int, objects: int, families: list[str]) -> list[list[object]]:
    from sam2.build_sam import build_sam2_video_predictor as ref_build

    from sam2_web.build import build_sam2_video_predictor

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        clip = _clip(Path(tmp) / "clip", frames)
        torch.manual_seed(0)
        ref = ref_build(reference_config("sam2.1_hiera_t"), None, device="cuda")
        ckpt = Path(tmp) / "t.pt"
        torch.save({"model": ref.state_dict()}, ckpt)
        ours = build_sam2_video_predictor(reference_config("sam2.1_hiera_t"), ckpt, device="cuda")
        for m in (ref, ours):
            m.fill_hole_area = 0
        gens = {"ref": _track_times(ref, clip, objects), "ours": _track_times(ours, clip, objects)}
        times = {k: [] for k in gens}
        for _ in range(frames):
            for k, g in gens.items():
                times[k].append(next(g))
        r, o = median(times["ref"][8:]), median(times["ours"][8:])
        rows.append([f"SAM 2.1 tiny, s/frame ({objects} objects)", f"{r:.4f}", f"{o:.4f}", f"{o / r:.2f}"])
        del ref, ours
        for name in families:
            model = build_sam2_video_predictor(name, None, device="cuda")
            model.fill_hole_area = 0
            t = list(_track_times(model, clip, objects))
            rows.append([f"{name}, s/frame ({objects} objects)", "-", f"{median(t[8:]):.4f}", "-"])
            del model
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--frames", type=int, default=24)
    ap.add_argument("--objects", type=int, default=3)
    ap.add_argument("--families", nargs="*", default=["edgetam", "efficienttam_s_512x512", "efficienttam_ti_512x512"])
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench.gpu needs a CUDA GPU")
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    rows = image_encoder_rows(args.repeats)
    print(markdown_table(["measure", "reference", "ours", "ours / reference"], rows), flush=True)
    rows += video_rows(args.frames, args.objects, args.families)
    print(f"\n{torch.cuda.get_device_name()}, torch {torch.__version__}")
    print(markdown_table(["measure", "reference", "ours", "ours / reference"], rows))


if __name__ == "__main__":
    main()
