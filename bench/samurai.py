"""What SAMURAI's motion-aware memory costs per frame: our engine with ``samurai=True`` against the
same model and clip with SAM 2's memory, in one run.

    python -m bench.samurai [--model sam2.1_hiera_t] [--frames 14] [--size 1024] [--objects 3]
                            [--rounds 2] [--threads 2] [--json OUT] [--write-speeds]

One predictor (seeded random weights, object-score bias raised so objects are present and the
filter engages), a generated clip (a disc passing behind a bar, plus background spots), the same
prompts; each round opens a fresh session per mode (so both encode every frame) and tracks the clip
forward, plain and SAMURAI alternating so that load from other processes hits both alike. s/frame
is the median over the frames after the first ``num_maskmem + 1`` (memory full). SAMURAI's extra
work per frame: the three candidate masks' boxes on the device, one copy to the host, the
filter (numpy, microseconds) and the memory-rule scan. Prints a markdown table;
``--write-speeds`` records the ratio (figure ``samurai_ratio_3obj`` of the model) in the bench
run of this kind of device in ``configs/speeds.yaml``, where ``sam2-web models`` reads it.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch


def _clip(n: int, width: int = 640, height: int = 360) -> np.ndarray:
    yy, xx = np.mgrid[0:height, 0:width]
    frames = np.zeros((n, height, width, 3), np.uint8)
    bar = (np.abs(xx - width // 2) <= 40) & (yy < height * 2 // 3)
    for i in range(n):
        cx = 60 + i * (width - 120) / max(1, n - 1)
        disc = (xx - cx) ** 2 + (yy - height // 3) ** 2 <= 40**2
        frames[i][disc] = (220, 30, 30)
        frames[i][bar] = (128, 128, 128)
        frames[i][(xx - 520) ** 2 + (yy - 280) ** 2 <= 30**2] = (30, 200, 60)
        frames[i][(xx - 150) ** 2 + (yy - 290) ** 2 <= 25**2] = (30, 60, 220)
    return frames


_PROMPTS = [(1, [20, 80, 100, 160]), (2, [490, 250, 550, 310]), (3, [125, 265, 175, 315])]


def _track(predictor, frames, objects: int, samurai: bool) -> list[float]:
    times = []
    with predictor.open_session(frames, samurai=samurai, history="ram") as session:
        for obj_id, box in _PROMPTS[:objects]:
            session.add_prompt(0, obj_id, box=box)
        start = time.perf_counter()
        for fm in session.propagate(direction="forward"):
            _ = fm.masks  # the host copy is part of a frame's cost
            now = time.perf_counter()
            times.append(now - start)
            start = now
    return times


def table(model: str, size: int, objects: int, per_mode: dict[str, list[float]], device: str) -> str:
    """The markdown table: median and fastest s/frame of each mode and their ratios (the fastest
    frame is the one least disturbed by other processes on a shared machine)."""
    plain, sam = per_mode["SAM 2 memory"], per_mode["SAMURAI"]
    med = statistics.median(plain), statistics.median(sam)
    low = min(plain), min(sam)
    return "\n".join([
        "| model | input | objects | SAM 2 memory s/frame (median / fastest) | SAMURAI s/frame (median / fastest) "
        "| ratio (median / fastest) | device |",
        "|---|---|---|---|---|---|---|",
        f"| {model} | {size} px | {objects} | {med[0]:.2f} / {low[0]:.2f} | {med[1]:.2f} / {low[1]:.2f} "
        f"| {med[1] / med[0]:.3f}x / {low[1] / low[0]:.3f}x | {device} |",
    ])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--frames", type=int, default=14)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--objects", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None)
    parser.add_argument("--write-speeds", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from sam2_web.build import build_sam2_video_predictor

    torch.manual_seed(0)
    predictor = build_sam2_video_predictor(
        args.model, None, device=args.device, hydra_overrides_extra=[f"++model.image_size={args.size}"]
    )
    with torch.no_grad():
        predictor.sam_mask_decoder.pred_obj_score_head.layers[-1].bias.add_(2.0)
    frames = _clip(args.frames)
    skip = predictor.num_maskmem + 1
    per_mode: dict[str, list[float]] = {"SAM 2 memory": [], "SAMURAI": []}
    for _ in range(args.rounds):
        for mode, samurai in (("SAM 2 memory", False), ("SAMURAI", True)):
            per_mode[mode] += _track(predictor, frames, args.objects, samurai)[skip:]
    plain, sam = (statistics.median(per_mode[m]) for m in per_mode)
    device = str(predictor.device) + (f", {args.threads} threads" if args.device == "cpu" else "")
    print(table(args.model, args.size, args.objects, per_mode, device))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"model": args.model, "size": args.size, "objects": args.objects, "device": device,
                       "plain_s_per_frame": plain, "samurai_s_per_frame": sam, "ratio": sam / plain,
                       "frames": per_mode}, f, indent=1)
    if args.write_speeds:  # the fastest frames: least disturbed by other load
        _write_ratio(predictor, args, min(per_mode["SAMURAI"]) / min(per_mode["SAM 2 memory"]))
    return 0


def _write_ratio(predictor, args, ratio: float) -> None:
    import dataclasses
    import datetime

    from sam2_web import speeds

    kind = predictor.device.type
    run = speeds.load_bench().get(kind) or speeds.BenchRun(
        kind, speeds.device_label(predictor.device), "", torch.__version__, "python -m bench.samurai", {})
    models = {m: dict(f) for m, f in run.models.items()}
    models.setdefault(args.model, {})["samurai_ratio_3obj"] = round(ratio, 3)
    stamp = f"; samurai_ratio_3obj: python -m bench.samurai {datetime.date.today().isoformat()}, {args.size} px"
    method = run.method if "bench.samurai" in run.method else run.method + stamp
    path = speeds.write_bench_run(dataclasses.replace(run, models=models, method=method,
                                                      date=run.date or datetime.date.today().isoformat()))
    print(f"wrote samurai_ratio_3obj={ratio:.3f} for {args.model} into {path}")


if __name__ == "__main__":
    raise SystemExit(main())
