"""Model comparison: SAM 2.1 tiny, EdgeTAM and every EfficientTAM variant, ours against the authors'.

    python -m bench.models [--models sam2.1_hiera_t edgetam ...] [--frames 11] [--size PX]
                           [--rss-frames 200] [--rss-size PX] [--skip-authors] [--threads 2]
                           [--json OUT] [--write-speeds]

Prints one markdown table, one row per model, measured side by side in one run on this CPU:

* s/frame with 1 and with 3 objects once the memory is full (the median over the frames after
  the first ``num_maskmem + 1``; the clip is ``--frames`` long);
* a click on a frame that is not encoded yet (image encoder + prompt decoding) and a second click
  on that same frame (decoding only), each repeated ``--clicks`` times on different frames;
* our peak RSS over a ``--rss-frames`` clip with one object (a fresh process per model).

Every model runs in our engine and in its authors' code: the reference ``sam2`` for SAM 2.1 (this
venv), the EdgeTAM and EfficientTAM packages in their oracle venvs (``.oracles/``, built by
``scripts/dev.sh install``). Each implementation is a worker process driven over a pipe, one
call at a time, ours and the authors' alternating (ours, authors, ours ...) so that load from
other processes hits both alike; the times are taken inside the workers. The authors' worker
builds the model with seeded random weights and saves them as the official checkpoint
(``{"model": state_dict}``) that ours then loads with strict keys. Defaults: each model's native
resolution (1024 px, 512 px for the ``_512x512`` variants), 2 torch threads.

Both sides run as shipped: ours fills small holes (``fill_hole_area=8``) on the CPU too, the
authors' code skips it without its CUDA extension. The authors' memory attention gets float32
copies of its bf16 memories (on a CPU it fails on all-bf16 input; ours does the same cast).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

MODELS = (
    "sam2.1_hiera_t", "edgetam",
    "efficienttam_ti", "efficienttam_ti_1", "efficienttam_ti_2", "efficienttam_ti_512x512",
    "efficienttam_s", "efficienttam_s_1", "efficienttam_s_2", "efficienttam_s_512x512",
)
BASELINE = "sam2.1_hiera_t"
CLIP_SIZE = (640, 360)  # width, height of the generated clip (frames are resized to the model's size)
# Clicks (clip pixels) for objects 1..3: the moving disc's start, and two background spots.
OBJECT_CLICKS = {1: None, 2: [520.0, 80.0], 3: [150.0, 290.0]}


def native_size(model: str) -> int:
    """The input side a model was trained at."""
    return 512 if model.endswith("_512x512") else 1024


def size_overrides(model: str, size: int) -> list[str]:
    """Hydra overrides for ``size`` px (both implementations take the same ones)."""
    if size == native_size(model):
        return []
    overrides = [f"++model.image_size={size}"]
    if model.startswith("edgetam"):
        side = size // 16
        overrides.append(f"++model.memory_attention.layer.cross_attention.q_sizes=[{side},{side}]")
    return overrides


def family(model: str) -> str:
    """Whose code is the yardstick: ``sam2`` (this venv), ``edgetam`` or ``efficienttam`` (oracle venvs)."""
    for name in ("edgetam", "efficienttam"):
        if model.startswith(name):
            return name
    return "sam2"


# ============================================================================ worker side
# Runs in this venv (ours, the reference) or in an oracle venv: only stdlib, numpy and torch
# are imported at module level; each builder imports its own package.


def _authors_edgetam(model: str, overrides: list[str]):
    import inspect
    import textwrap

    # The oracle's two traps (see ../shared/ORACLES.md), patched in this process only.
    import sam2.modeling.backbones.timm as authors_timm
    import sam2.modeling.perceiver as authors_perceiver

    create_model = authors_timm.create_model

    def offline_create_model(*args, **kwargs):
        kwargs["pretrained"] = False  # the checkpoint carries the backbone's weights
        return create_model(*args, **kwargs)

    authors_timm.create_model = offline_create_model
    src = textwrap.dedent(inspect.getsource(authors_perceiver.PerceiverResampler.forward_2d))
    namespace: dict = {}
    exec(src.replace(".view(-1, 1, C)", ".reshape(-1, 1, C)"), authors_perceiver.__dict__, namespace)
    authors_perceiver.PerceiverResampler.forward_2d = namespace["forward_2d"]
    from sam2.build_sam import build_sam2_video_predictor

    return build_sam2_video_predictor("configs/edgetam.yaml", None, device="cpu", hydra_overrides_extra=overrides)


def _authors_efficienttam(model: str, overrides: list[str]):
    from hydra import compose
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    import efficient_track_anything  # noqa: F401  (points hydra at the package's configs)

    # What build_efficienttam_video_predictor adds; it drops the caller's overrides on a CPU.
    base = [
        "++model._target_=efficient_track_anything.efficienttam_video_predictor.EfficientTAMVideoPredictor",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
        "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
        "++model.binarize_mask_from_pts_for_mem_enc=true",
        "++model.fill_hole_area=8",
        "++model.compile_image_encoder=false",
    ]
    cfg = compose(config_name=f"configs/efficienttam/{model}.yaml", overrides=base + overrides)
    OmegaConf.resolve(cfg)
    return instantiate(cfg.model, _recursive_=True)


def _authors_sam2(model: str, overrides: list[str]):
    from sam2.build_sam import build_sam2_video_predictor

    fam = "sam2.1" if model.startswith("sam2.1") else "sam2"
    return build_sam2_video_predictor(f"configs/{fam}/{model}.yaml", None, device="cpu",
                                      hydra_overrides_extra=overrides)


def _build_worker_model(impl: str, model: str, overrides: list[str], ckpt: str, seed: int):
    import torch

    if impl == "ours":
        from sam2_web.build import build_sam2_video_predictor

        return build_sam2_video_predictor(model, ckpt, device="cpu", hydra_overrides_extra=overrides).eval()
    torch.manual_seed(seed)
    builder = {"sam2": _authors_sam2, "edgetam": _authors_edgetam, "efficienttam": _authors_efficienttam}[impl]
    predictor = builder(model, overrides).eval()
    torch.save({"model": predictor.state_dict()}, ckpt)
    # Memories are stored as bf16; on a CPU an all-bf16 memory meets float weights and fails.
    sys.path.insert(0, str(ROOT))  # oracle venvs run this file without the repo on their path
    from tests.oracle_venv import float_memories

    return float_memories(predictor)


def _peak_rss_mb() -> float:
    """This process's peak RSS. Linux keeps ``ru_maxrss`` across fork + exec (a worker would
    report its parent's peak if higher), so read the high-water mark of this process's own memory."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # ru_maxrss: bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def worker(args) -> int:
    """Serve one implementation: build it, then answer JSON commands from stdin, one per line,
    with one JSON line each on stdout ({"s": seconds taken} or what was asked)."""
    import torch

    torch.set_num_threads(args.threads)
    out = sys.stdout
    sys.stdout = sys.stderr  # stray prints of the model code must not break the protocol

    def reply(obj) -> None:
        out.write(json.dumps(obj) + "\n")
        out.flush()

    start = time.perf_counter()
    predictor = _build_worker_model(args.impl, args.model, json.loads(args.overrides), args.ckpt, args.seed)
    reply({"build_s": time.perf_counter() - start, "num_maskmem": int(predictor.num_maskmem)})
    state, frames = None, None
    with torch.inference_mode():
        for line in sys.stdin:
            cmd = json.loads(line)
            op = cmd["op"]
            start = time.perf_counter()
            if op == "init":
                if state is not None and hasattr(state, "close"):
                    state.close()
                state = None
                state = predictor.init_state(cmd["clip"])
            elif op == "click":
                predictor.add_new_points_or_box(
                    state, frame_idx=cmd["frame"], obj_id=cmd["obj"], points=[cmd["point"]], labels=[1],
                    clear_old_points=cmd.get("clear", True),
                )
            elif op == "propagate":
                frames = predictor.propagate_in_video(state, start_frame_idx=0,
                                                      max_frame_num_to_track=cmd.get("max_frames"))
            elif op == "next":
                next(frames)
            elif op == "drain":
                count = sum(1 for _ in frames)
                reply({"s": time.perf_counter() - start, "frames": count, "peak_rss_mb": _peak_rss_mb()})
                continue
            elif op == "quit":
                reply({"peak_rss_mb": _peak_rss_mb()})
                return 0
            else:
                raise ValueError(f"unknown op {op!r}")
            reply({"s": time.perf_counter() - start})
    return 0


# ============================================================================ driver side


class Worker:
    """One implementation of one model in a subprocess, driven one command at a time."""

    def __init__(self, impl: str, model: str, overrides: list[str], ckpt: str, args):
        if impl == "ours" or impl == "sam2":
            python, env = sys.executable, dict(os.environ, PYTHONPATH=str(ROOT))
        else:
            from tests.oracle_venv import oracle_python

            python = str(oracle_python(impl))
            env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the oracle's own package wins
        env.update(HF_HUB_OFFLINE="1", OMP_NUM_THREADS=str(args.threads))
        self.name = f"{impl}:{model}"
        self._log = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(
            [python, str(ROOT / "bench" / "models.py"), "--worker", "--impl", impl, "--model", model,
             "--overrides", json.dumps(overrides), "--ckpt", ckpt, "--seed", str(args.seed),
             "--threads", str(args.threads)],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True,
        )
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self._log.seek(0)
            raise RuntimeError(f"worker {self.name} died ({self.proc.returncode}):\n{self._log.read()[-4000:]}")
        return json.loads(line)

    def __call__(self, op: str, **kwargs) -> dict:
        self.proc.stdin.write(json.dumps({"op": op, **kwargs}) + "\n")
        self.proc.stdin.flush()
        return self._read()

    def close(self) -> dict:
        result = self("quit")
        self.proc.wait()
        self._log.close()
        return result


def _both(workers: dict, op: str, **kwargs) -> dict:
    """Run ``op`` on every worker in turn (ours first); returns {impl: reply}."""
    return {impl: w(op, **kwargs) for impl, w in workers.items()}


def _disc_click(masks, frame: int) -> list[float]:
    import numpy as np

    ys, xs = np.nonzero(masks[frame])
    return [float(xs.mean()), float(ys.mean())]


def measure_model(model: str, size: int, clip: str, masks, tmp: Path, args) -> dict:
    """Speed of ``model`` in our engine and (unless skipped) in its authors' code, interleaved."""
    overrides = size_overrides(model, size)
    ckpt = str(tmp / f"{model}-{size}.pt")
    workers: dict = {}
    if not args.skip_authors:
        workers["authors"] = Worker(family(model), model, overrides, ckpt, args)  # writes the checkpoint
    else:
        import torch

        from sam2_web.build import build_sam2

        torch.manual_seed(args.seed)
        torch.save({"model": build_sam2(model, None, device="cpu", hydra_overrides_extra=overrides).state_dict()},
                   ckpt)
    workers = {"ours": Worker("ours", model, overrides, ckpt, args), **workers}
    num_maskmem = workers["ours"].ready["num_maskmem"]
    n = args.frames
    result: dict = {impl: {} for impl in workers}
    try:
        for objects in (1, 3):
            _both(workers, "init", clip=clip)
            for obj in range(1, objects + 1):
                point = OBJECT_CLICKS[obj] or _disc_click(masks, 0)
                _both(workers, "click", frame=0, obj=obj, point=point)
            _both(workers, "propagate", max_frames=n - 1)
            times = {impl: [] for impl in workers}
            for _ in range(n):
                for impl, reply in _both(workers, "next").items():
                    times[impl].append(reply["s"])
            for impl in workers:
                steady = times[impl][num_maskmem + 1 :] or times[impl][1:]
                result[impl][f"frame_{objects}obj"] = steady
        # Clicks after the 3-object propagation, on frames never encoded (the clip is longer).
        new, encoded = {impl: [] for impl in workers}, {impl: [] for impl in workers}
        for r in range(args.clicks):
            frame = n + r
            point = _disc_click(masks, frame)
            for impl, reply in _both(workers, "click", frame=frame, obj=1, point=point).items():
                new[impl].append(reply["s"])
            point = [point[0] + 6.0, point[1] + 4.0]
            for impl, reply in _both(workers, "click", frame=frame, obj=1, point=point, clear=False).items():
                encoded[impl].append(reply["s"])
        for impl in workers:
            result[impl]["click_new"], result[impl]["click_encoded"] = new[impl], encoded[impl]
            result[impl]["build_s"] = workers[impl].ready["build_s"]
    finally:
        for w in workers.values():
            try:
                w.close()
            except Exception:  # a dead worker already raised its own error above
                w.proc.kill()
    return result


def measure_rss(model: str, size: int, clip: str, masks, tmp: Path, args) -> dict:
    """Our peak RSS in a fresh process that tracks one object through the whole RSS clip."""
    ckpt = str(tmp / f"{model}-{size}.pt")
    if not Path(ckpt).exists():
        import torch

        from sam2_web.build import build_sam2

        torch.manual_seed(args.seed)
        torch.save({"model": build_sam2(model, None, device="cpu",
                                        hydra_overrides_extra=size_overrides(model, size)).state_dict()}, ckpt)
    w = Worker("ours", model, size_overrides(model, size), ckpt, args)
    try:
        w("init", clip=clip)
        w("click", frame=0, obj=1, point=_disc_click(masks, 0))
        w("propagate")
        return w("drain")
    finally:
        w.close()


def _stats(xs) -> tuple[float, float]:
    return (statistics.median(xs), min(xs)) if xs else (float("nan"), float("nan"))


def _cell(xs) -> str:
    if not xs:
        return "-"
    med, lo = _stats(xs)
    fmt = "{:.2f}" if med < 10 else "{:.1f}"
    return f"{fmt.format(med)} [{fmt.format(lo)}]"


def _ratio(ours, theirs) -> str:
    if not ours or not theirs:
        return "-"
    return f"{statistics.median(ours) / statistics.median(theirs):.2f}"


def build_table(results: dict, sizes: dict, rss: dict, args) -> tuple[str, list[str]]:
    """The markdown table and the target checks (lines) from the measurements."""
    from bench._common import markdown_table

    header = ["model", "px"]
    for what in ("s/frame 1 obj", "s/frame 3 obj", "click new frame (s)", "click encoded frame (s)"):
        header += [f"{what} ours", "authors", "ours/authors"]
    header += ["peak RSS ours (MB, 1 obj; clip frames, px)", "3 obj: x less time than SAM 2.1 tiny"]
    base = results.get(BASELINE, {}).get("ours", {}).get("frame_3obj")
    rows = []
    for model in list(results) + [m for m in rss if m not in results]:
        res = results.get(model, {"ours": {}})
        ours, theirs = res["ours"], res.get("authors", {})
        row = [model, sizes.get(model, rss.get(model, {}).get("size"))]
        for key in ("frame_1obj", "frame_3obj", "click_new", "click_encoded"):
            row += [_cell(ours.get(key)), _cell(theirs.get(key)), _ratio(ours.get(key), theirs.get(key))]
        r = rss.get(model)
        row.append(f"{r['peak_rss_mb']:.0f} ({r['frames']} fr, {r['size']} px)" if r else "-")
        speedup = statistics.median(base) / statistics.median(ours["frame_3obj"]) if base and ours else None
        row.append(f"{speedup:.1f}" if speedup else "-")
        rows.append(row)
    checks = []
    if base:
        per_frame = {m: statistics.median(r["ours"]["frame_3obj"]) for m, r in results.items()}
        fastest = min(per_frame, key=per_frame.get)
        click = statistics.median(results[fastest]["ours"]["click_new"])
        x = statistics.median(base) / per_frame[fastest]
        checks.append(f"fastest model {fastest}: {x:.1f}x less time per frame (3 obj) than {BASELINE} "
                      f"(target >= 8) -> {'met' if x >= 8 else 'NOT met'}; click on a new frame {click:.2f} s "
                      f"(target <= 0.3) -> {'met' if click <= 0.3 else 'NOT met'}")
        if "edgetam" in per_frame:
            x = statistics.median(base) / per_frame["edgetam"]
            checks.append(f"edgetam: {x:.1f}x less than {BASELINE} (target >= 3) -> {'met' if x >= 3 else 'NOT met'}")
    for model, res in results.items():
        if "authors" in res:
            r = statistics.median(res["ours"]["frame_3obj"]) / statistics.median(res["authors"]["frame_3obj"])
            checks.append(f"{model}: ours/authors {r:.2f} s/frame with 3 objects (target <= 0.9) -> "
                          f"{'met' if r <= 0.9 else 'NOT met'}")
    return markdown_table(header, rows), checks


def main(argv=None) -> int:
    """Parse arguments; run the workers, print the table (and write the JSON / speeds file)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", nargs="+", default=list(MODELS), help="registry names (default: all ten)")
    ap.add_argument("--frames", type=int, default=11,
                    help="frames tracked per speed run (the memory is full after num_maskmem + 1)")
    ap.add_argument("--clicks", type=int, default=3, help="clicks on new frames (and re-clicks) per model")
    ap.add_argument("--size", type=int, default=0, help="input side for every model (0: each model's native)")
    ap.add_argument("--rss-frames", type=int, default=200, help="clip length of the RSS runs (0: none)")
    ap.add_argument("--rss-size", type=int, default=0, help="input side of the RSS runs (0: as --size)")
    ap.add_argument("--skip-authors", action="store_true", help="measure our engine only")
    ap.add_argument("--threads", type=int, default=2, help="torch threads of every worker")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="also write every measurement here (after each model)")
    ap.add_argument("--resume", help="a --json file of an earlier run: its models' figures are kept, not re-measured")
    ap.add_argument("--skip-speed", action="store_true", help="only the RSS runs")
    ap.add_argument("--note", default="", help="appended to the method written with --write-speeds (e.g. machine load)")
    ap.add_argument("--write-speeds", action="store_true",
                    help="write our figures as the cpu run of configs/speeds.yaml (sam2_web.speeds)")
    # Worker mode (internal).
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--impl", help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--overrides", default="[]", help=argparse.SUPPRESS)
    ap.add_argument("--ckpt", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        return worker(args)

    sys.path.insert(0, str(ROOT))
    import numpy as np
    import torch

    from tests.clips import make_moving_disc_clip

    torch.set_num_threads(args.threads)
    unknown = [m for m in args.models if m not in MODELS]
    if unknown:
        ap.error(f"unknown models {unknown}; choose from {', '.join(MODELS)}")
    started = time.perf_counter()
    results, rss, sizes = {}, {}, {}
    if args.resume:
        earlier = json.loads(Path(args.resume).read_text())
        results, rss, sizes = earlier["results"], earlier["rss"], earlier["sizes"]

    def save() -> None:
        if args.json:
            Path(args.json).write_text(json.dumps({"results": results, "rss": rss, "sizes": sizes}, indent=1))

    with tempfile.TemporaryDirectory(prefix="bench-models-") as tmp:
        tmp = Path(tmp)
        clip, masks = make_moving_disc_clip(tmp / "clip", n_frames=args.frames + args.clicks, size=CLIP_SIZE,
                                            radius=40)
        rss_clip = rss_masks = None
        if args.rss_frames:
            rss_clip, rss_masks = make_moving_disc_clip(tmp / "rss-clip", n_frames=args.rss_frames, size=CLIP_SIZE,
                                                        radius=40)
        for model in args.models:
            size = args.size or native_size(model)
            if not args.skip_speed and model not in results:
                sizes[model] = size
                t0 = time.perf_counter()
                results[model] = measure_model(model, size, str(clip), masks, tmp, args)
                print(f"# {model}: speed runs {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                save()
            if args.rss_frames and model not in rss:
                rss_size = args.rss_size or size
                t0 = time.perf_counter()
                rss[model] = dict(measure_rss(model, rss_size, str(rss_clip), rss_masks, tmp, args), size=rss_size)
                print(f"# {model}: RSS run {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
                save()
    table, checks = build_table(results, sizes, rss, args)
    from sam2_web.speeds import device_label

    device = device_label("cpu")
    print(f"{device}, torch {torch.__version__}, random weights, clip {CLIP_SIZE[0]}x{CLIP_SIZE[1]} JPEG folder, "
          f"{args.frames} frames tracked per run (s/frame: median [min] over the frames after the memory is full), "
          f"{args.clicks} clicks per model; total {time.perf_counter() - started:.0f} s\n")
    print(table)
    print()
    for line in checks:
        print(line)
    if args.write_speeds:
        import datetime

        from sam2_web.speeds import BenchRun, write_bench_run

        figures = {
            model: {"s_per_frame_1obj": round(statistics.median(r["ours"]["frame_1obj"]), 3),
                    "s_per_frame_3obj": round(statistics.median(r["ours"]["frame_3obj"]), 3),
                    "click_new_frame_s": round(statistics.median(r["ours"]["click_new"]), 3)}
            for model, r in results.items()
        }
        method = (f"python -m bench.models: random weights, each model at "
                  f"{'its native size' if not args.size else f'{args.size} px'}, median over the frames after the "
                  f"memory is full ({args.frames} tracked), clicks on never-encoded frames" + (
                      f"; {args.note}" if args.note else ""))
        path = write_bench_run(BenchRun("cpu", device, datetime.date.today().isoformat(), str(torch.__version__), method,
                                        figures))
        print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
