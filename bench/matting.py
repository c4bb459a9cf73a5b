"""Soft edges: matting quality on composites with a known alpha, steadiness, and cost next to tracking.

    python -m bench.matting [--size 1280x720] [--composites 3] [--frames 8] [--threads 1] [--skip-speed]
    python -m bench.matting --device cuda --device-only     # ms per object at 1080p on a GPU

Prints markdown tables:

* quality: SAD / MSE / gradient / connectivity errors (see ``bench.matting_data``) of the hard mask
  (what a perfect tracker gives at a quarter of the resolution), a feathered mask, our methods
  (``guided``; ``vitmatte`` when its weights are at hand, else the reason it did not run) and, when
  installed, other libraries' solvers on the same band (pymatting closed-form, OpenCV's guided
  filter): the measurements behind the choice of the default. Targets: SAD <= 0.6x the hard mask's
  and <= 0.8x the feathered mask's.
* foreground colour at the edges: the source pixels, ours (``estimate_foreground``) and, when
  installed, pymatting's multi-level estimate; the error is against the composite's true foreground.
* temporal steadiness on a static shot (sensor noise, a mask edge that hops by a grid cell):
  mean |alpha_t - alpha_t-1| over the edge band, per-frame ``alpha_matte`` against ``MatteStream``.
* speed: the default CPU model (``model=auto`` on a CPU, random weights: speed does not depend on
  them) tracking 3 objects through a clip of this size, and ``alpha_matte`` for those 3 objects, the
  two alternating frame by frame in one process so background load hits both alike.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import markdown_table, median  # noqa: E402
from bench.matting_data import errors, make_composite, tracker_mask  # noqa: E402
from sam2_web.errors import MattingUnavailableError  # noqa: E402
from sam2_web.export.matte import feather  # noqa: E402
from sam2_web.matting import MatteStream, alpha_matte, estimate_foreground  # noqa: E402
from sam2_web.matting.alpha import MatteOptions, band_of  # noqa: E402

MASK_FACTOR = 4  # the tracker's mask grid is a quarter of the frame, as the composites' masks are


def _band_limited(solver):
    """A library solver run on the same crop and trimap as ours (so only the solver differs)."""
    def run(image, mask, options):
        band = band_of(mask, options)
        if band is None:
            return mask.astype(np.float32)
        crop = image[band.rows, band.cols].astype(np.float64) / 255
        trimap = np.where(band.unknown, 0.5, band.known)
        solved = np.clip(solver(crop, trimap, band, mask[band.rows, band.cols]), 0, 1)
        out = mask.astype(np.float32)
        out[band.rows, band.cols] = np.where(band.unknown, solved, band.known)
        return out
    return run


def candidates() -> dict:
    """Other libraries' solvers that are installed here (none is a dependency of sam2_web)."""
    found = {}
    try:
        import pymatting

        found["pymatting closed-form"] = _band_limited(lambda img, tri, band, m: pymatting.estimate_alpha_cf(img, tri))
    except ImportError:
        pass
    try:
        import cv2

        if hasattr(cv2, "ximgproc"):
            def cv_guided(img, tri, band, m):
                # The same filter as ours (radius = band, eps 1e-4 in 0..1 units), OpenCV's implementation;
                # on 0..1 float colours with so small an eps it loses precision, on 0..255 it does not.
                return cv2.ximgproc.guidedFilter((img * 255).astype(np.float32), m.astype(np.float32), band.width,
                                                 1e-4 * 255 ** 2)
            found["OpenCV ximgproc guided filter"] = _band_limited(cv_guided)
    except ImportError:
        pass
    return found


def quality(size: tuple[int, int], n: int) -> tuple[str, dict]:
    width, height = size
    comps = [make_composite(seed, height, width) for seed in range(n)]
    options = MatteOptions(mask_resolution=width // MASK_FACTOR)
    band = band_of(comps[0].mask, options).width
    feather_px = band / 2  # a Gaussian edge about as wide as the solved band
    methods = {
        "hard mask": lambda img, m, o: m.astype(np.float32),
        f"feathered mask ({feather_px:g} px)": lambda img, m, o: feather(m, feather_px),
        "**guided (ours, default)**": lambda img, m, o: alpha_matte(img, m, o),
        "vitmatte (ours, optional)": lambda img, m, o: alpha_matte(img, m, o, method="vitmatte"),
        **candidates(),
    }
    rows, totals = [], {}
    outside = []  # where every method keeps the mask's value: beyond the band
    for c in comps:
        region = np.ones(c.mask.shape, bool)
        b = band_of(c.mask, options)
        region[b.rows, b.cols] = ~b.unknown
        outside.append(region)
    for name, fn in methods.items():
        sums = {"SAD": 0.0, "MSE": 0.0, "Grad": 0.0, "Conn": 0.0, "out": 0.0}
        seconds = []
        try:
            for c, region in zip(comps, outside):
                fn(c.image, c.mask, options)  # warm-up at this size: kernels, caches, numba compilation
                start = time.perf_counter()
                alpha = fn(c.image, c.mask, options)
                seconds.append(time.perf_counter() - start)
                for k, v in errors(alpha, c.alpha).items():
                    sums[k] += v
                sums["out"] += float(np.abs(alpha - c.alpha)[region].sum() / 1000)
        except MattingUnavailableError as exc:
            rows.append([name, *["-"] * 7, f"not run: {str(exc).split('(')[0].strip()}"])
            continue
        totals[name] = sums
        rows.append([name, *(f"{sums[k] / n:.3f}" for k in sums), "", "", f"{median(seconds) * 1000:.0f} ms"])
    hard, soft = totals["hard mask"]["SAD"], totals[f"feathered mask ({feather_px:g} px)"]["SAD"]
    for row in rows:
        if row[0] in totals:
            row[6] = f"{totals[row[0]]['SAD'] / hard:.2f}x"
            row[7] = f"{totals[row[0]]['SAD'] / soft:.2f}x"
    header = ["alpha from", "SAD", "MSE x1e3", "Grad", "Conn", "SAD beyond the band", "SAD / hard",
              "SAD / feathered", "time / object"]
    note = (f"{n} composites at {width}x{height}, mask from a {width // MASK_FACTOR}-cell grid, band {band} px; "
            "errors per composite (SAD, Grad, Conn in thousands); 'SAD beyond the band' is the part of SAD "
            "where the band-limited methods keep the mask (hair strands reaching further out, the far end "
            "of the motion blur)")
    return note + "\n\n" + markdown_table(header, rows), totals


def foreground_table(size: tuple[int, int], n: int) -> str:
    width, height = size
    rows = {"source pixels": [], "estimate_foreground (ours)": [], "pymatting estimate_foreground_ml": []}
    times = {k: [] for k in rows}
    try:
        import pymatting
    except ImportError:
        pymatting = None
    estimate_foreground(np.zeros((64, 64, 3), np.uint8), np.full((64, 64), 0.5, np.float32))  # warm-up
    for seed in range(n):
        c = make_composite(seed, height, width)
        edge = c.alpha * ((c.alpha > 0) & (c.alpha < 0.99))

        def err(fg):
            return float((np.abs(np.asarray(fg, np.float32) - c.foreground).sum(-1) * edge).sum() / edge.sum())

        rows["source pixels"].append(err(c.image / 255.0))
        start = time.perf_counter()
        ours = estimate_foreground(c.image, c.alpha)
        times["estimate_foreground (ours)"].append(time.perf_counter() - start)
        rows["estimate_foreground (ours)"].append(err(ours / 255.0))
        if pymatting is not None:
            start = time.perf_counter()
            ml = pymatting.estimate_foreground_ml(c.image / 255.0, c.alpha.astype(np.float64))
            times["pymatting estimate_foreground_ml"].append(time.perf_counter() - start)
            rows["pymatting estimate_foreground_ml"].append(err(ml))
    table = [[k, f"{np.mean(v):.4f}", f"{median(times[k]) * 1000:.0f} ms" if times[k] else "-"]
             for k, v in rows.items() if v]
    return markdown_table(["edge colour from", "mean abs(F - F_true), RGB summed, alpha-weighted", "time / frame"], table)


def steadiness(size: tuple[int, int], frames: int) -> str:
    """A static shot: the same composite with fresh sensor noise and a mask edge that hops by a cell."""
    width, height = size
    base = make_composite(0, height, width)
    rng = np.random.default_rng(1)
    options = MatteOptions(mask_resolution=width // MASK_FACTOR)
    shots = []
    for t in range(frames):
        noisy = np.clip(base.image + rng.normal(0, 2.0, base.image.shape), 0, 255).astype(np.uint8)
        # The tracker's edge moves by up to a grid cell although the object stands still.
        shift = int(rng.integers(-MASK_FACTOR, MASK_FACTOR + 1))
        shots.append((noisy, tracker_mask(np.roll(base.alpha, shift, axis=1)) if shift else base.mask))
    region = np.zeros((height, width), bool)
    band = band_of(base.mask, options)
    region[band.rows, band.cols] = True
    stream = MatteStream(options)
    per_frame = [alpha_matte(img, m, options) for img, m in shots]
    streamed = [stream.update(img, m) for img, m in shots]

    def flicker(seq):
        return float(np.mean([np.abs(b - a)[region].mean() for a, b in zip(seq, seq[1:])]))

    rows = [["per-frame alpha_matte", f"{flicker(per_frame):.5f}"],
            ["MatteStream", f"{flicker(streamed):.5f}"],
            ["hard mask", f"{flicker([m.astype(np.float32) for _, m in shots]):.5f}"]]
    return (f"{frames} frames of a static {width}x{height} shot, mean over the band's crop\n\n"
            + markdown_table(["alpha from", "mean abs(alpha_t - alpha_t-1)"], rows))


def speed(size: tuple[int, int], frames: int) -> str:
    """The default CPU model tracking 3 objects, and alpha_matte for them, frame by frame in turn."""
    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.models import auto_model
    from sam2_web.registry import get_model

    width, height = size
    model = auto_model(torch.device("cpu"))
    spec = get_model(model)
    torch.manual_seed(0)
    predictor = build_sam2_video_predictor(spec.config, None, device="cpu")
    comps = [make_composite(seed, height, width) for seed in range(3)]
    # Three objects on one clip: each composite's object, moved to its own third of the frame.
    shifts = (-width // 3, 0, width // 3)
    masks = [np.roll(c.mask, s, axis=1) for c, s in zip(comps, shifts)]
    clip = np.stack([np.roll(comps[1].image, 4 * t, axis=1) for t in range(frames)])
    options = MatteOptions(mask_resolution=predictor.image_size // 4)
    track_s, matte_s = [], []
    with predictor.open_session(clip) as session:
        for k, m in enumerate(masks):
            session.add_mask(0, k + 1, m)
        last = time.perf_counter()
        for result in session.propagate(direction="forward"):
            track_s.append(time.perf_counter() - last)
            start = time.perf_counter()
            frame = clip[result.frame_idx]
            for m in masks:
                alpha_matte(frame, np.roll(m, 4 * result.frame_idx, axis=1), options)
            matte_s.append(time.perf_counter() - start)
            last = time.perf_counter()
    # The first frames fill the memory; steady state is what a long clip costs.
    skip = min(len(track_s) - 1, 2)
    t, a = median(track_s[skip:]), median(matte_s[skip:])
    rows = [[f"{model} tracking 3 objects (s/frame)", f"{t:.3f}"],
            ["alpha_matte for the 3 objects (s/frame)", f"{a:.3f}"],
            ["job time with soft edges / without", f"{(t + a) / t:.2f}x"]]
    return (f"{width}x{height}, {frames} frames, {torch.get_num_threads()} torch thread(s), CPU\n\n"
            + markdown_table(["", "median"], rows))


def device_cost(device: str, repeats: int = 10) -> str:
    """ms per object for ``alpha_matte`` on ``device`` at 1080p (the GPU target: <= 10 ms)."""
    comp = make_composite(0, 1080, 1920)
    options = MatteOptions(mask_resolution=1920 // MASK_FACTOR, device=device)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    alpha_matte(comp.image, comp.mask, options)  # warm-up: kernels, cuDNN choices
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        alpha_matte(comp.image, comp.mask, options)
        sync()
        times.append(time.perf_counter() - start)
    name = torch.cuda.get_device_name(device) if device.startswith("cuda") else device
    return markdown_table(["device", "alpha_matte, 1 object, 1920x1080 (ms, median of %d)" % repeats],
                          [[name, f"{median(times) * 1000:.1f}"]])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", default="1280x720", help="WIDTHxHEIGHT of the composites and the clip")
    parser.add_argument("--composites", type=int, default=3)
    parser.add_argument("--frames", type=int, default=8, help="frames of the steadiness and speed clips")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--skip-speed", action="store_true", help="leave out the tracking comparison")
    parser.add_argument("--device", default=None, help="also time alpha_matte at 1080p on this device (cuda)")
    parser.add_argument("--device-only", action="store_true", help="only the --device timing")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    torch.set_num_threads(args.threads)
    if args.device:
        print("## Device\n\n" + device_cost(args.device) + "\n", flush=True)
        if args.device_only:
            return 0
    table, totals = quality((width, height), args.composites)
    print("## Quality\n\n" + table + "\n", flush=True)
    print("## Foreground colour\n\n" + foreground_table((width, height), args.composites) + "\n", flush=True)
    print("## Steadiness\n\n" + steadiness((width, height), args.frames) + "\n", flush=True)
    if not args.skip_speed:
        print("## Speed\n\n" + speed((width, height), args.frames) + "\n", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
