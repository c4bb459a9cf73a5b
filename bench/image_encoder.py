"""Image-encoder speed: ours against the reference, same weights, same input, one run.

    python -m bench.image_encoder [--model sam2.1_hiera_t] [--size 1024] [--repeats 7] [--warmup 2]

Prints a markdown table of seconds per forward and the ratios ours/reference of the medians and of the
minimums (target <= 1.05; on a busy machine the minimum is the steadier figure).
Runs alternate between the two models so background load affects both alike.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import build_pair, markdown_table, median, time_interleaved  # noqa: E402


def main(argv=None) -> int:
    """Parse arguments, time both encoders, print the table. Returns the process exit code."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="sam2.1_hiera_t")
    ap.add_argument("--size", type=int, default=1024, help="model image_size")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    overrides = [] if args.size == 1024 else [f"++model.image_size={args.size}"]
    ref, ours = build_pair(args.model, overrides)
    x = torch.randn(1, 3, args.size, args.size, generator=torch.Generator().manual_seed(0))

    with torch.inference_mode():
        diff = max(
            (a - b).abs().max().item()
            for a, b in zip(ref.image_encoder(x)["backbone_fpn"], ours.image_encoder(x)["backbone_fpn"])
        )
        times = time_interleaved(
            {"reference (sam2 1.1.0)": lambda: ref.image_encoder(x), "sam2_web": lambda: ours.image_encoder(x)},
            warmup=args.warmup,
            repeats=args.repeats,
        )
    ref_s = median(times["reference (sam2 1.1.0)"])
    our_s = median(times["sam2_web"])
    rows = [
        [name, f"{median(t):.3f}", f"{min(t):.3f}", f"{max(t):.3f}"] for name, t in times.items()
    ]
    print(f"image encoder, {args.model} at {args.size}x{args.size}, CPU, {torch.get_num_threads()} threads, "
          f"{args.repeats} repeats after {args.warmup} warm-up; max |diff| of FPN outputs {diff:.2e}\n")
    print(markdown_table(["implementation", "median s", "min s", "max s"], rows))
    ref_min, our_min = min(times["reference (sam2 1.1.0)"]), min(times["sam2_web"])
    # On a shared machine the minimum is the least disturbed run; report both.
    print(f"\nratio ours/reference: median {our_s / ref_s:.3f}, min {our_min / ref_min:.3f}  (target <= 1.05)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
