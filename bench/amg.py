"""Automatic mask generation ("segment everything"): ours against the reference's
``SAM2AutomaticMaskGenerator``, same weights, same picture, same settings, one run.

    python -m bench.amg [--model sam2.1_hiera_t] [--size 1024] [--picture 720x1280]
                        [--points 16] [--repeats 3] [--warmup 1] [--threads 0]

Prints one markdown table with a row per setting: seconds per ``generate`` (median of the runs,
which alternate between the two implementations so background load hits both alike), the ratio
ours/reference of the medians, of the minimums and the median of the per-pair ratios (steadiest
on a busy machine), and the number of masks each returned (they must be equal; the bench
also checks the masks are identical and stops otherwise).

Settings: the reference's defaults (IoU 0.8, stability 0.95), and a permissive one (IoU 0.5,
stability 0.5, small-region clean-up 8 px, one crop layer) under which random weights keep masks,
so every stage has work. Random weights (seeded) with the decoder's mask logits sharpened (see
``tests/parity.py: sharpen_masks``) and a synthetic video-frame-sized picture of flat shapes on
a textured background. The reference's small-region clean-up needs its CUDA extension; on the
CPU it skips it with a warning, so the bench gives it an OpenCV connected-components function in
that extension's place (``tests/parity.py: opencv_connected_components``, as the parity test
does), so both do the same work.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import build_pair, markdown_table, median, time_interleaved  # noqa: E402

SETTINGS = {
    "defaults": {},
    "permissive + 1 crop layer + clean-up": dict(pred_iou_thresh=0.5, stability_score_thresh=0.5,
                                                 crop_n_layers=1, min_mask_region_area=8),
}


def picture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """Flat bright shapes on a dark, lightly textured background (a stand-in for a video frame)."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 40, size=(h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    for k in range(6):
        cy, cx = rng.integers(h // 8, h - h // 8), rng.integers(w // 8, w - w // 8)
        r = int(rng.integers(min(h, w) // 16, min(h, w) // 7))
        shape = (np.abs(yy - cy) < r) & (np.abs(xx - cx) < r * 1.4) if k % 2 else (yy - cy) ** 2 + (xx - cx) ** 2 < r * r
        img[shape] = rng.integers(150, 256, size=3, dtype=np.uint8)
    return img


def same_records(a: list, b: list) -> bool:
    """Equal counts, identical masks and boxes, scores within 1e-4."""
    if len(a) != len(b):
        return False
    for x, y in zip(a, b):
        if not np.array_equal(x["segmentation"], y["segmentation"]) or x["bbox"] != y["bbox"]:
            return False
        if abs(x["predicted_iou"] - y["predicted_iou"]) > 1e-4 or abs(x["stability_score"] - y["stability_score"]) > 1e-4:
            return False
    return True


def main(argv=None) -> int:
    """Parse arguments, time both generators per setting, print the table. Returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--size", type=int, default=1024, help="model image_size")
    ap.add_argument("--picture", default="720x1280", help="HEIGHTxWIDTH of the picture")
    ap.add_argument("--points", type=int, default=16, help="points_per_side")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    ap.add_argument("--only", choices=sorted(SETTINGS), action="append", help="run only these settings")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore")  # the reference warns about its missing extension on every call

    from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator as Reference

    from sam2_web import SAM2AutomaticMaskGenerator
    import sam2.utils.misc

    from tests.parity import opencv_connected_components, sharpen_masks

    # Without its CUDA kernel the reference would skip the clean-up that ours does.
    sam2.utils.misc.get_connected_components = opencv_connected_components
    overrides = [] if args.size == 1024 else [f"++model.image_size={args.size}"]
    ref_model, our_model = build_pair(args.model, overrides)
    for m in (ref_model, our_model):
        sharpen_masks(m)
    h, w = (int(v) for v in args.picture.lower().split("x"))
    image = picture(h, w)
    s = args.size
    rows = []
    for label, options in SETTINGS.items():
        if args.only and label not in args.only:
            continue
        kwargs = dict(points_per_side=args.points, **options)
        ref = Reference(ref_model, **kwargs)
        ref.predictor._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]
        ours = SAM2AutomaticMaskGenerator(our_model, **kwargs)
        out = {}
        times = time_interleaved(
            {"ref": lambda: out.__setitem__("ref", ref.generate(image)),
             "ours": lambda: out.__setitem__("ours", ours.generate(image))},
            warmup=args.warmup, repeats=args.repeats,
        )
        if not same_records(out["ref"], out["ours"]):
            print(f"{label}: the records differ ({len(out['ref'])} vs {len(out['ours'])} masks)", file=sys.stderr)
            return 1
        r_med, o_med = median(times["ref"]), median(times["ours"])
        # Each ours run follows its reference run: the ratio within a pair sees the same load.
        paired = median([o / r for o, r in zip(times["ours"], times["ref"])])
        rows.append([label, len(out["ours"]), f"{r_med:.2f}", f"{o_med:.2f}", f"{o_med / r_med:.2f}",
                     f"{min(times['ours']) / min(times['ref']):.2f}", f"{paired:.2f}"])
    print(f"automatic mask generation, {args.model} at {args.size} px, picture {w}x{h}, "
          f"{args.points}x{args.points} points, CPU, {torch.get_num_threads()} threads, "
          f"{args.repeats} runs each after {args.warmup} warm-up (interleaved); identical records\n")
    print(markdown_table(["setting", "masks", "reference s (median)", "sam2_web s (median)",
                          "ours/ref (medians)", "ours/ref (mins)", "ours/ref (median of pairs)"], rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
