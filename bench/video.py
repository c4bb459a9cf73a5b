"""Video tracking: ours against the reference video predictor, same weights, clip and clicks.

    python -m bench.video [--model sam2.1_hiera_t] [--size 256] [--frames 20]
                          [--rss-size 256] [--rss-frames 50 500] [--threads 1]

Prints one markdown table:
* steady-state seconds per frame (one object, median over the frames after the memory is full);
* time to re-propagate the whole clip after a correction click in its middle (the correction
  is a conditioning frame on both sides, ``add_all_frames_to_correct_as_cond=True``, so it
  really changes every frame and both must recompute them; ours re-uses cached features);
* peak RSS of a fresh process that tracks one object through 50 and through 500 frames.

The speed runs put both predictors in one fresh process and interleave their frames (ref,
ours, ref, ours ...) so load from other processes hits both alike. Each RSS run is a fresh
process of its own, so its peak RSS is that run's. Random weights (seeded), both loaded from the
same official-format checkpoint. Reduced input sizes keep it to minutes on a 2-core CPU
(``--rss-size`` can be lowered for slower machines). The reference's growth comes from holding
every decoded frame at the model's input size plus every frame's memory, so at 1024 px it grows
16x faster per frame than at 256 px. Our
feature cache is bounded by its budget (``--rss-feature-cache-mb``), not by clip length; with the
app's default of 1024 MB a short clip at a small input size would simply fit in it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import markdown_table, median, reference_config  # noqa: E402
from sam2_web.batch.work import peak_rss_mb  # noqa: E402

CLIP_SIZE = (128, 96)  # width, height of the generated clips
RADIUS = 14


def _make_clip(folder: Path, n_frames: int) -> tuple[str, np.ndarray]:
    """A JPEG folder (00000.jpg ...) of a disc crossing a textured background, and its masks."""
    from tests.clips import make_moving_disc_clip

    path, masks = make_moving_disc_clip(folder, n_frames=n_frames, size=CLIP_SIZE, radius=RADIUS)
    return str(path), masks


def _click_at(mask: np.ndarray) -> list[list[float]]:
    ys, xs = np.nonzero(mask)
    return [[float(xs.mean()), float(ys.mean())]]


def _build(impl: str, model: str, size: int, ckpt: str):
    overrides = [f"++model.image_size={size}"]
    if impl == "ref":
        from sam2.build_sam import build_sam2_video_predictor

        predictor = build_sam2_video_predictor(
            reference_config(model), ckpt, device="cpu", hydra_overrides_extra=overrides
        )
        # The reference's memory is all-bf16 when no float pointer joins it; cast as the tests do.
        from tests.oracle_venv import float_memories

        float_memories(predictor)
    else:
        from sam2_web.build import build_sam2_video_predictor

        predictor = build_sam2_video_predictor(
            reference_config(model), ckpt, device="cpu", hydra_overrides_extra=overrides
        )
    predictor.add_all_frames_to_correct_as_cond = True
    return predictor


def _propagate_timed(predictor, state, **kwargs):
    """A generator over propagation that yields the seconds each frame took."""
    start = time.perf_counter()
    for _ in predictor.propagate_in_video(state, **kwargs):
        yield time.perf_counter() - start
        start = time.perf_counter()  # the other predictor ran while this one was suspended


def speed_worker(args) -> dict:
    """Both predictors in this process, their frames interleaved (ref, ours, ref, ours ...) so
    that load from other processes hits both alike."""
    models = {impl: _build(impl, args.model, args.size, args.ckpt) for impl in ("ref", "ours")}
    masks = np.load(args.masks)
    result: dict = {}
    with torch.inference_mode():
        states = {impl: m.init_state(args.clip) for impl, m in models.items()}
        for impl, m in models.items():
            m.add_new_points_or_box(states[impl], 0, 1, points=_click_at(masks[0]), labels=[1])
        gens = {impl: _propagate_timed(m, states[impl]) for impl, m in models.items()}
        times = {impl: [] for impl in models}
        for _ in range(len(masks)):
            for impl in models:
                times[impl].append(next(gens[impl]))
        mid = len(masks) // 2
        repro = {impl: 0.0 for impl in models}
        for impl, m in models.items():
            m.add_new_points_or_box(
                states[impl], mid, 1, points=_click_at(masks[mid]), labels=[1], clear_old_points=False
            )
            gens[impl] = _propagate_timed(m, states[impl])
        for _ in range(len(masks)):
            for impl in models:
                repro[impl] += next(gens[impl])
        for impl, m in models.items():
            # Frame 0 is the prompted frame; the memory is full after num_maskmem frames.
            steady = times[impl][m.num_maskmem + 1 :] or times[impl][1:]
            result[impl] = {"s_per_frame": median(steady), "repropagate_s": repro[impl]}
    return result


def rss_worker(args) -> dict:
    """One predictor tracks one object through the whole clip; reports this process's peak RSS."""
    predictor = _build(args.impl, args.model, args.size, args.ckpt)
    if args.impl == "ours":
        predictor.default_options = predictor.default_options.replace(feature_cache_mb=args.rss_feature_cache_mb)
    masks = np.load(args.masks)
    with torch.inference_mode():
        state = predictor.init_state(args.clip)
        predictor.add_new_points_or_box(state, 0, 1, points=_click_at(masks[0]), labels=[1])
        frames = sum(1 for _ in predictor.propagate_in_video(state))
    return {"frames": frames, "peak_rss_mb": peak_rss_mb()}


def _run_worker(impl: str, task: str, clip: str, masks: str, ckpt: str, args) -> dict:
    cmd = [
        sys.executable, "-m", "bench.video", "--worker", "--impl", impl, "--task", task, "--clip", clip,
        "--masks", masks, "--ckpt", ckpt, "--model", args.model, "--threads", str(args.threads),
        "--size", str(args.size if task == "speed" else args.rss_size),
        "--rss-feature-cache-mb", str(args.rss_feature_cache_mb),
    ]
    root = Path(__file__).resolve().parent.parent
    env = dict(os.environ, PYTHONPATH=str(root))
    out = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{impl} {task} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    """Parse arguments, run the measurements in subprocesses, print the table."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--size", type=int, default=256, help="model image_size for the speed runs")
    ap.add_argument("--frames", type=int, default=20, help="clip length for the speed runs")
    ap.add_argument("--rss-size", type=int, default=256, help="model image_size for the RSS runs")
    ap.add_argument("--rss-frames", type=int, nargs="+", default=[50, 500])
    ap.add_argument(
        "--rss-feature-cache-mb", type=float, default=64,
        help="our feature-cache budget in the RSS runs (the cache is bounded by this, not by clip length)",
    )
    ap.add_argument(
        "--skip-reference-rss", action="store_true", help="measure the reference's RSS at the shortest clip only"
    )
    ap.add_argument(
        "--threads", type=int, default=1,
        help="torch threads for both (0 = torch's default); "
        "on a shared machine OpenMP spinning makes more threads slower",
    )
    # Worker mode (internal).
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", choices=["ref", "ours", "both"], help=argparse.SUPPRESS)
    ap.add_argument("--task", choices=["speed", "rss"], help=argparse.SUPPRESS)
    ap.add_argument("--clip", help=argparse.SUPPRESS)
    ap.add_argument("--masks", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        if args.threads:
            torch.set_num_threads(args.threads)
        print(json.dumps(speed_worker(args) if args.task == "speed" else rss_worker(args)))
        return 0

    from tests.parity import build_reference, save_official_checkpoint

    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-video-") as tmp:
        tmp = Path(tmp)
        ckpts = {}
        for size in {args.size, args.rss_size}:
            ref = build_reference(args.model, [f"++model.image_size={size}"], video=True)
            ckpts[size] = str(save_official_checkpoint(ref, tmp / f"{args.model}-{size}.pt"))
            del ref

        def clip_of(n: int) -> tuple[str, str]:
            clip, masks = _make_clip(tmp / f"clip{n}", n)
            np.save(tmp / f"masks{n}.npy", masks)
            return clip, str(tmp / f"masks{n}.npy")

        clip, masks = clip_of(args.frames)
        speed = _run_worker("both", "speed", clip, masks, ckpts[args.size], args)
        rss: dict = {}
        for n in args.rss_frames:
            clip, masks = clip_of(n)
            impls = ("ref", "ours") if not (args.skip_reference_rss and n != min(args.rss_frames)) else ("ours",)
            for impl in impls:
                rss[(impl, n)] = _run_worker(impl, "rss", clip, masks, ckpts[args.rss_size], args)

    def ratio(a, b):
        return f"{a / b:.2f}" if a and b else "-"

    rows = [
        [
            f"steady-state s/frame ({args.size} px, 1 object)",
            f"{speed['ref']['s_per_frame']:.3f}", f"{speed['ours']['s_per_frame']:.3f}",
            ratio(speed["ours"]["s_per_frame"], speed["ref"]["s_per_frame"]),
        ],
        [
            f"re-propagate {args.frames} frames after a correction (s)",
            f"{speed['ref']['repropagate_s']:.1f}", f"{speed['ours']['repropagate_s']:.1f}",
            ratio(speed["ours"]["repropagate_s"], speed["ref"]["repropagate_s"]),
        ],
    ]
    for n in args.rss_frames:
        ref_mb = rss.get(("ref", n), {}).get("peak_rss_mb")
        ours_mb = rss[("ours", n)]["peak_rss_mb"]
        rows.append([
            f"peak RSS, {n} frames ({args.rss_size} px; our feature cache {args.rss_feature_cache_mb:g} MB) (MB)",
            f"{ref_mb:.0f}" if ref_mb else "-", f"{ours_mb:.0f}", ratio(ours_mb, ref_mb),
        ])
    lo, hi = min(args.rss_frames), max(args.rss_frames)
    growth = {
        impl: ratio(rss.get((impl, hi), {}).get("peak_rss_mb"), rss.get((impl, lo), {}).get("peak_rss_mb"))
        for impl in ("ref", "ours")
    }
    rows.append([f"RSS growth {hi} / {lo} frames", growth["ref"], growth["ours"], "-"])
    print(f"model {args.model}, random weights, clip {CLIP_SIZE[0]}x{CLIP_SIZE[1]} JPEG folder, "
          f"torch threads {args.threads or torch.get_num_threads()}, total {time.perf_counter() - started:.0f} s\n")
    print(markdown_table(["measure", "reference", "ours", "ours / reference"], rows))
    print("\ntargets: s/frame ratio <= 1.0; re-propagation ratio <= 0.6; ours RSS growth <= 1.15")
    return 0


if __name__ == "__main__":
    sys.exit(main())
