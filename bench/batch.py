"""Batch throughput: jobs/hour in this process against ``--ray local`` with 1 and 2 workers, and
the memory each worker holds.

    python -m bench.batch [--jobs 4] [--frames 8] [--size 1024] [--model sam2.1_hiera_t]
                          [--workers 1 2] [--processes 2] [--device cpu] [--clip-size 320x240]
                          [--no-ray] [--skip-ray-overhead]

Every configuration runs the same manifest (``--jobs`` clips of ``--frames`` frames, one object
each) as a fresh ``sam2-web batch ... --force`` process, so its peak RSS is its own.
``--processes N`` adds a line for N in-process batches run side by side, each with its share of
the jobs: N workers without Ray (what Ray's workers do on one node, minus Ray), e.g. N workers
sharing one GPU on a machine without Ray (``--device cuda --no-ray``). Prints one markdown table:

* wall: the whole command; start: until the workers were ready (Ray start-up, actors; the
  model loads on each worker's first job and is counted in the jobs' time, see ``load``);
* jobs/h: jobs x 3600 / wall; jobs/h after start: the same without the start-up, which is what a
  long batch converges to;
* s/frame: mean over jobs of the job's time per frame on its worker (model loading excluded);
* RSS/worker: peak resident memory of each worker process (in-process: the whole process);
  GPU/worker: the GPU memory each one reserved at most (with ``--device cuda``).

And, unless ``--skip-ray-overhead``, the resident memory of Ray's own processes on this node
(GCS, raylet, ...) right after ``ray.init`` — paid once per node, besides the workers.

Random weights (seeded) in an official-format checkpoint, with the object-presence bias raised
so that masks are non-empty and the exports do real work. No reference here: this compares our
engines with each other.
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

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import markdown_table  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PRESENCE_BIAS = 8.0


def make_clip(folder: Path, n_frames: int, seed: int, size: tuple[int, int]) -> Path:
    """A JPEG folder of a disc moving over a textured background (a different path per seed)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    background = rng.integers(40, 200, size=(height, width, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:height, :width]
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n_frames):
        frame = background.copy()
        cx, cy = (60 + 12 * i + seed * 3) % width, 90 + (4 * i) % (height - 120)
        frame[(xx - cx) ** 2 + (yy - cy) ** 2 < 30 ** 2] = (230, 60, 40)
        Image.fromarray(frame).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


def make_checkpoint(path: Path, model: str, size: int) -> Path:
    """Seeded random weights for ``model`` at input ``size`` in the official checkpoint format."""
    import torch

    from sam2_web.build import build_sam2
    from sam2_web.registry import get_model

    torch.manual_seed(0)
    net = build_sam2(get_model(model).config, None, device="cpu", hydra_overrides_extra=[f"++model.image_size={size}"])
    state = net.state_dict()
    state["sam_mask_decoder.pred_obj_score_head.layers.2.bias"] += PRESENCE_BIAS
    torch.save({"model": state}, path)
    return path


def write_manifests(root: Path, args: argparse.Namespace, checkpoint: Path, shares: int = 1) -> list[Path]:
    """The bench's jobs as ``shares`` manifests (round-robin), each writing its own folder."""
    jobs = []
    for k in range(args.jobs):
        clip = root / f"shot{k:02d}"
        if not clip.exists():
            make_clip(clip, args.frames, seed=k, size=args.clip_size)
        jobs.append({"clip": str(clip), "prompts": {"objects": [
            {"id": 1, "frames": [{"frame": 0, "points": [[60 + k * 3, 90]]}]}]}})
    paths = []
    for share in range(shares):
        manifest = {
            "defaults": {"out": str(root / f"out{shares}-{share}"), "formats": ["png"], "model": args.model,
                         "checkpoint": str(checkpoint), "device": args.device},
            "overrides": [f"++model.image_size={args.size}"],
            "jobs": jobs[share::shares],
        }
        paths.append(root / f"bench{shares}-{share}.json")
        paths[-1].write_text(json.dumps(manifest))
    return paths


def run_configs(manifests: list[Path], extra: list[str]) -> tuple[float, list[dict]]:
    """``sam2-web batch`` processes, one per manifest, side by side; returns (wall seconds, their reports)."""
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    if len(manifests) > 1:  # side by side: share the cores instead of each taking them all
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(manifests)))
    reports = [m.with_name(f"{m.stem}-{time.monotonic_ns()}.report.json") for m in manifests]
    start = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "sam2_web.cli", "batch", str(m), "--force", "--progress", "none",
                               "--report", str(r), *extra], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for m, r in zip(manifests, reports)]
    outputs = [p.communicate() for p in procs]
    wall = time.perf_counter() - start
    for p, (_out, err) in zip(procs, outputs):
        if p.returncode != 0:
            raise SystemExit(f"sam2-web batch {' '.join(extra)} failed ({p.returncode}):\n{err[-3000:]}")
    return wall, [json.loads(r.read_text()) for r in reports]


def ray_overhead_mb() -> float:
    """Resident memory of Ray's own processes on this node, right after ``ray.init``."""
    import psutil
    import ray

    ray.init(address="local", num_cpus=1, include_dashboard=False, logging_level="ERROR")
    try:
        children = psutil.Process().children(recursive=True)
        return sum(p.memory_info().rss for p in children if p.is_running()) / 2 ** 20
    finally:
        ray.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=1024, help="model input size")
    parser.add_argument("--model", default="sam2.1_hiera_t")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to run")
    parser.add_argument("--processes", type=int, nargs="*", default=[],
                        help="also run this many in-process batches side by side (workers without Ray)")
    parser.add_argument("--device", default="cpu", help="the jobs' device (cpu, cuda)")
    parser.add_argument("--clip-size", type=lambda t: tuple(int(v) for v in t.split("x")), default=(320, 240),
                        metavar="WxH", help="size of the generated clips (default 320x240)")
    parser.add_argument("--no-ray", action="store_true", help="skip the Ray lines (a machine without Ray)")
    parser.add_argument("--skip-ray-overhead", action="store_true")
    args = parser.parse_args()

    cpus = os.cpu_count() or 1
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-batch-") as tmp:
        root = Path(tmp)
        checkpoint = make_checkpoint(root / "model.pt", args.model, args.size)
        configs = [("in-process", 1, [])]
        configs += [("in-process, side by side", n, []) for n in args.processes if n > 1]
        if not args.no_ray:
            configs += [("ray local", n, ["--ray", "local", "--workers", str(n)]) for n in args.workers]
        for name, n, extra in configs:
            manifests = write_manifests(root, args, checkpoint, shares=n if name.endswith("side by side") else 1)
            wall, reports = run_configs(manifests, extra)
            jobs = [j for r in reports for j in r["jobs"]]
            workers = [w for r in reports for w in r["workers"]]
            assert all(j["status"] == "done" for j in jobs), jobs
            start = max(r["start_seconds"] for r in reports)
            s_per_frame = sum(j["s_per_frame"] for j in jobs) / len(jobs)
            loads = sum(w["load_seconds"] for w in workers) / max(1, len(workers))
            threads = cpus if name == "in-process" else max(1, cpus // n)
            if args.device != "cpu":
                threads = "-"
            gpu = " / ".join(f"{w['peak_gpu_mb']:.0f}" for w in workers if w.get("peak_gpu_mb")) or "-"
            rows.append((name, n, threads, f"{wall:.1f}", f"{start:.1f}", f"{loads:.1f}",
                         f"{len(jobs) * 3600 / wall:.0f}", f"{len(jobs) * 3600 / (wall - start):.0f}",
                         f"{s_per_frame:.3f}", " / ".join(f"{w['peak_rss_mb']:.0f}" for w in workers), gpu))
            print(f"{name} x{n}: {wall:.1f} s", file=sys.stderr, flush=True)
    print(f"{args.jobs} jobs x {args.frames} frames ({args.clip_size[0]}x{args.clip_size[1]}), {args.model} at {args.size} px, "
          f"random weights, device {args.device}, {cpus} CPU cores (load average {os.getloadavg()[0]:.1f} at the "
          "end), one object per job, PNG mattes")
    print(markdown_table(
        ("pool", "workers", "threads/worker", "wall s", "start s", "load s", "jobs/h", "jobs/h after start",
         "s/frame", "RSS/worker MiB", "GPU/worker MiB"), rows))
    if not args.skip_ray_overhead and not args.no_ray:
        print(f"\nRay's own processes on this node after ray.init: {ray_overhead_mb():.0f} MiB RSS")


if __name__ == "__main__":
    main()
