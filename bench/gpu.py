"""GPU figures, ours vs the reference in the same run: ``python -m bench.gpu [--e2e] [--json OUT]``.

* image encoder (SAM 2.1 tiny, 1024 px): median ms per image, float32 and bf16 autocast;
* the model loop, exact path (float32, TF32 off): SAM 2.1 tiny s/frame with 1 and 3 objects,
  ours and the reference interleaved frame by frame (targets: <= 0.9x and <= 0.8x);
* the fast preset (``vos_optimized=True``: compiled, bf16): ours against the reference's own
  ``vos_optimized`` predictor under bf16 autocast, frames/s (targets: tiny >= 100 frames/s and
  <= 0.9x the reference, EdgeTAM >= 150 frames/s), then the other families (ours only);
  compilation is reported apart (the warm-up frames, and ours' compile seconds);
* how far the preset's masks are from the exact path's (mean IoU per object, worst frame);
* ``--e2e``: the whole ``sam2-web mask`` job (``sam2_web.jobs.run_job``) on a generated 720p H.264
  clip of 300 frames with 3 objects, ProRes 4444 + PNG out: frames/s of the job, GPU
  utilisation, and where the time goes (decode, track, each export).

Random weights through official-format checkpoints (no download). Every section records an
error instead of ending the run, so one failure on a lent GPU machine costs only its rows.
``--json`` writes every measure (ours / reference / ratio) with the device, torch, CUDA and the
commit. ``--dry-run`` runs every section at toy sizes on whatever device there is (CPU: no
compilation, no bf16), to test the script itself without a GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    __package__ = "bench"

from bench._common import markdown_table, median, reference_config  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
POINTS = ([[300, 300]], [[600, 400]], [[800, 200]])  # on the 1024 x 768 bench clip
STEADY_FROM = 8  # frames after the memory is full (7 memories) and one-off costs
SECTIONS = ("image", "exact", "preset", "agreement", "families", "e2e")


@dataclass
class Row:
    """One measure: ours, the reference's (None when there is none) and what is better."""

    measure: str
    unit: str
    ours: Optional[float]
    reference: Optional[float] = None
    target: str = ""
    higher_is_better: bool = False

    @property
    def ratio(self) -> Optional[float]:
        if self.ours is None or not self.reference:
            return None
        return self.ours / self.reference

    def cells(self) -> list[str]:
        def fmt(x: Optional[float]) -> str:
            return "-" if x is None else (f"{x:.4f}" if abs(x) < 1 else f"{x:.1f}")
        ratio = self.ratio
        return [f"{self.measure} ({self.unit})", fmt(self.reference), fmt(self.ours),
                "-" if ratio is None else f"{ratio:.2f}", self.target or "-"]


@dataclass
class Report:
    rows: list[Row] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    def section(self, name: str, fn: Callable[[], None]) -> None:
        """Run one section; an exception is recorded (and printed) instead of ending the run."""
        start = time.perf_counter()
        try:
            fn()
        except Exception:  # noqa: BLE001 - the other sections still run
            self.errors[name] = traceback.format_exc(limit=8)
            print(f"[{name}] FAILED:\n{self.errors[name]}", file=sys.stderr, flush=True)
        print(f"[{name}] {time.perf_counter() - start:.0f} s", file=sys.stderr, flush=True)

    def table(self) -> str:
        return markdown_table(["measure", "reference", "ours", "ours / reference", "target"],
                              [r.cells() for r in self.rows])


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# --------------------------------------------------------------------------- image encoder


def image_encoder_rows(report: Report, device: torch.device, size: int, repeats: int) -> None:
    from bench._common import build_pair

    ref, ours = build_pair("sam2.1_hiera_t", [f"++model.image_size={size}"])
    ref, ours = ref.to(device), ours.to(device)
    x = torch.randn(1, 3, size, size, device=device)
    for precision in ("fp32", "bf16") if device.type == "cuda" else ("fp32",):
        def ctx():
            return torch.autocast("cuda", dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext()

        def run(model):
            with torch.inference_mode(), ctx():
                model.forward_image(x)

        times = {"ref": [], "ours": []}
        for _ in range(3):
            run(ref), run(ours)
        for _ in range(repeats):
            for key, model in (("ref", ref), ("ours", ours)):
                _sync(device)
                start = time.perf_counter()
                run(model)
                _sync(device)
                times[key].append(time.perf_counter() - start)
        report.rows.append(Row(f"image encoder {precision}, {size} px", "ms", 1000 * median(times["ours"]),
                               1000 * median(times["ref"])))


# --------------------------------------------------------------------------- the model loop


def make_clip(folder: Path, n: int, size: tuple[int, int] = (1024, 768)) -> str:
    """A JPEG folder of a textured picture sliding sideways (the reference reads JPEG folders)."""
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    width, height = size
    base = (rng.random((height, width, 3)) * 255).astype(np.uint8)
    for i in range(n):
        Image.fromarray(np.roll(base, 8 * i, axis=1)).save(folder / f"{i:05d}.jpg", quality=90)
    return str(folder)


def _points(obj: int, size: tuple[int, int]) -> np.ndarray:
    scale = np.array([size[0] / 1024, size[1] / 768])
    return np.array(POINTS[obj]) * scale


def frame_times(predictor, clip: str, objects: int, size: tuple[int, int], device: torch.device,
                autocast: bool = False) -> Iterator[float]:
    """Seconds of each propagated frame (a generator, so two predictors can be interleaved)."""
    def ctx():
        return torch.autocast("cuda", dtype=torch.bfloat16) if autocast else contextlib.nullcontext()

    with torch.inference_mode():
        with ctx():
            state = predictor.init_state(clip)
            for obj in range(objects):
                predictor.add_new_points_or_box(state, 0, obj + 1, points=_points(obj, size), labels=np.array([1]))
        frames = predictor.propagate_in_video(state)
        while True:
            _sync(device)
            start = time.perf_counter()
            with ctx():  # entered per frame: a suspended generator must not leak autocast
                if next(frames, None) is None:
                    return
            _sync(device)
            yield time.perf_counter() - start


def interleaved(gens: dict[str, Iterator[float]]) -> dict[str, list[float]]:
    """Advance the generators in turn (so load hits them alike) until they end."""
    times = {k: [] for k in gens}
    live = dict(gens)
    while live:
        for key in list(live):
            value = next(live[key], None)
            if value is None:
                del live[key]
            else:
                times[key].append(value)
    return times


def _steady(times: list[float]) -> float:
    return median(times[STEADY_FROM:] or times[1:] or times)


def _warmup(times: list[float]) -> float:
    return sum(times[:STEADY_FROM])


@dataclass
class Models:
    """Builders of the compared predictors from one random-weight checkpoint."""

    name: str
    ckpt: str
    overrides: list[str]
    device: torch.device

    def reference(self, vos: bool = False):
        from sam2.build_sam import build_sam2_video_predictor as ref_build

        model = ref_build(reference_config(self.name), self.ckpt, device=self.device, vos_optimized=vos,
                          hydra_overrides_extra=list(self.overrides))
        if self.device.type == "cpu":  # the reference's memory is bf16 only where its own tests cast it
            from tests.oracle_venv import float_memories

            float_memories(model)
        model.fill_hole_area = 0  # its filling needs its CUDA extension; ours is measured apart
        return model

    compile_mode: Optional[str] = "max-autotune"

    def preset(self) -> Any:
        """What ``vos_optimized`` gets: True (the product's default), or settings with another mode."""
        from sam2_web.compiled import CompileSettings

        if self.device.type != "cuda":
            return True  # ignored off CUDA: the dry run times the uncompiled path
        return True if self.compile_mode == "max-autotune" else CompileSettings(mode=self.compile_mode)

    def ours(self, vos: bool = False, fill: bool = False):
        from sam2_web.build import build_sam2_video_predictor

        extra = {"precision": "bf16"} if vos and self.device.type == "cuda" else {}
        model = build_sam2_video_predictor(reference_config(self.name), self.ckpt, device=self.device,
                                           vos_optimized=self.preset() if vos else False,
                                           hydra_overrides_extra=list(self.overrides), **extra)
        if not fill:
            model.fill_hole_area = 0
        return model


def exact_rows(report: Report, models: Models, clip: str, size: tuple[int, int]) -> None:
    """Float32 (TF32 off), ours vs the reference, 1 and 3 objects, frames interleaved."""
    device = models.device
    targets = {1: "<= 0.9x", 3: "<= 0.8x"}
    for objects in (1, 3):
        ref, ours = models.reference(), models.ours()
        times = interleaved({"ref": frame_times(ref, clip, objects, size, device),
                             "ours": frame_times(ours, clip, objects, size, device)})
        report.rows.append(Row(f"SAM 2.1 tiny exact fp32, {objects} obj", "s/frame", _steady(times["ours"]),
                               _steady(times["ref"]), targets[objects]))
        del ref, ours
    ours = models.ours(fill=True)
    t = list(frame_times(ours, clip, 3, size, device))
    report.rows.append(Row("SAM 2.1 tiny exact fp32, 3 obj, hole filling on (ours only)", "s/frame", _steady(t)))


def preset_rows(report: Report, models: Models, clip: str, size: tuple[int, int], reference_vos: bool) -> None:
    """The fast preset vs the reference's vos_optimized, frames/s."""
    device = models.device
    compile_s = report.extra.setdefault("compile_seconds", {})
    for objects in (1, 3):
        gens = {"ours": None, "ref": None}
        ours = models.ours(vos=True)
        gens["ours"] = frame_times(ours, clip, objects, size, device)
        ref = None
        if reference_vos:
            ref = models.reference(vos=True)
            gens["ref"] = frame_times(ref, clip, objects, size, device, autocast=device.type == "cuda")
        times = interleaved({k: g for k, g in gens.items() if g is not None})
        fps = {k: 1.0 / _steady(v) for k, v in times.items()}
        target = ">= 100 frames/s, >= 1/0.9 of the reference" if objects == 1 else ""
        report.rows.append(Row(f"SAM 2.1 tiny preset, {objects} obj", "frames/s", fps["ours"], fps.get("ref"),
                               target, higher_is_better=True))
        report.rows.append(Row(f"SAM 2.1 tiny preset warm-up, first {STEADY_FROM} frames, {objects} obj", "s",
                               _warmup(times["ours"]), _warmup(times["ref"]) if "ref" in times else None))
        compiled = getattr(ours, "compiled", None)
        if compiled is not None:
            compile_s[f"sam2.1_hiera_t, {objects} obj"] = round(compiled.compile_seconds, 1)
        del ours, ref


def family_rows(report: Report, models: Models, clip: str, size: tuple[int, int], families: list[str]) -> None:
    """The preset of the other families (ours only: random weights of each config)."""
    from sam2_web.build import build_sam2_video_predictor

    device = models.device
    compile_s = report.extra.setdefault("compile_seconds", {})
    for name in families:
        extra = {"precision": "bf16"} if device.type == "cuda" else {}
        model = build_sam2_video_predictor(name, None, device=device, vos_optimized=models.preset(),
                                           hydra_overrides_extra=list(models.overrides), **extra)
        model.fill_hole_area = 0
        for objects in (1, 3):
            t = list(frame_times(model, clip, objects, size, device))
            target = ">= 150 frames/s" if name == "edgetam" and objects == 1 else ""
            report.rows.append(Row(f"{name} preset, {objects} obj", "frames/s", 1.0 / _steady(t), None, target,
                                   higher_is_better=True))
        compiled = getattr(model, "compiled", None)
        if compiled is not None:
            compile_s[name] = round(compiled.compile_seconds, 1)
        del model


def agreement_rows(report: Report, models: Models, clip: str, size: tuple[int, int]) -> None:
    """The preset's masks against the exact path's on the clip, 3 objects."""
    from sam2_web.video.agreement import mask_agreement

    runs = {}
    for key, vos in (("exact", False), ("preset", True)):
        model = models.ours(vos=vos, fill=True)
        with model.open_session(clip) as session:
            for obj in range(3):
                session.add_prompt(0, obj + 1, points=_points(obj, size), labels=[1])
            for _ in session.propagate(direction="forward"):
                pass
            runs[key] = list(session.results())
        del model
    agreement = mask_agreement(runs["exact"], runs["preset"])
    report.extra["preset_vs_exact"] = {
        "mean_iou": {str(k): round(v, 4) for k, v in agreement.mean_iou.items()},
        "worst_iou": round(agreement.worst_iou, 4), "worst_frame": agreement.worst_frame,
        "worst_obj": agreement.worst_obj, "frames": agreement.frames,
    }
    report.rows.append(Row("preset vs exact, lowest mean IoU of an object", "IoU", min(agreement.mean_iou.values())))
    report.rows.append(Row(f"preset vs exact, worst frame ({agreement.worst_frame}, object {agreement.worst_obj})",
                           "IoU", agreement.worst_iou))


# --------------------------------------------------------------------------- end to end


class Utilisation:
    """GPU utilisation samples (percent) while open: torch.cuda.utilization, else nvidia-smi."""

    def __init__(self, device: torch.device, every_s: float = 0.2):
        self.device, self.every_s, self.samples = device, every_s, []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> Optional[float]:
        try:
            return float(torch.cuda.utilization(self.device))
        except Exception:  # noqa: BLE001 - pynvml missing: ask nvidia-smi
            out = subprocess.run(["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits",
                                  "-i", str(self.device.index or 0)], capture_output=True, text=True, timeout=5)
            return float(out.stdout.strip().splitlines()[0]) if out.returncode == 0 and out.stdout.strip() else None

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            try:
                value = self._sample()
            except Exception:  # noqa: BLE001 - no way to read it here
                return
            if value is not None:
                self.samples.append(value)

    def __enter__(self) -> "Utilisation":
        if self.device.type == "cuda":
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def mean(self) -> Optional[float]:
        return float(np.mean(self.samples)) if self.samples else None


def make_video(path: Path, frames: int, size: tuple[int, int], fps: int = 30) -> list[list[float]]:
    """An H.264 clip of three discs moving over a textured background; returns a point on each
    disc in frame 0."""
    from tests.clips import ffmpeg_exe

    width, height = size
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:height, 0:width]
    texture = (rng.random((height // 8 + 1, width // 8 + 1, 3)) * 120 + 60).astype(np.uint8)
    background = np.kron(texture, np.ones((8, 8, 1), np.uint8))[:height, :width]
    centres = [(0.25, 0.3), (0.55, 0.6), (0.8, 0.3)]
    colours = [(230, 40, 40), (40, 200, 60), (50, 80, 230)]
    radius = max(4, height // 10)
    cmd = [ffmpeg_exe(), "-y", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
           "-r", str(fps), "-i", "-", "-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt",
           "yuv420p", str(path)]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE)
    for i in range(frames):
        frame = background.copy()
        for k, ((cx, cy), colour) in enumerate(zip(centres, colours)):
            x = cx * width + 0.1 * width * np.sin(2 * np.pi * (i / max(frames, 1)) + k)
            y = cy * height
            frame[(xx - x) ** 2 + (yy - y) ** 2 <= radius**2] = colour
        proc.stdin.write(frame.tobytes())
    proc.stdin.close()
    if proc.wait() != 0:
        raise RuntimeError("ffmpeg could not encode the bench clip")
    return [[cx * width + 0.1 * width * np.sin(k), cy * height] for k, (cx, cy) in enumerate(centres)]


def e2e_rows(report: Report, models: Models, tmp: Path, frames: int, size: tuple[int, int], preset: bool) -> None:
    """``sam2-web mask`` (run_job) on a generated H.264 clip: 3 objects, ProRes 4444 + PNG."""
    from sam2_web.jobs import MaskJob, OutputSpec, parse_prompts, run_job
    from sam2_web.media.frames import open_frames

    clip = tmp / "e2e.mp4"
    points = make_video(clip, frames, size)
    prompts = parse_prompts({"version": 1, "objects": [
        {"id": k + 1, "frames": [{"frame": 0, "points": [p], "labels": [1]}]} for k, p in enumerate(points)]})
    label = "preset" if preset else "exact"
    model = models.ours(vos=preset, fill=True)
    total = 0.0

    start = time.perf_counter()
    with open_frames(clip) as source:
        for _ in source.iter_range(0, frames):
            pass
    decode_s = time.perf_counter() - start

    stages: dict[str, list[float]] = {}

    def progress(stage: str, done: int, total: int) -> None:
        now = time.perf_counter()
        span = stages.setdefault(stage, [now, now])
        span[1] = now

    job = MaskJob(clip=clip, objects=prompts.objects, output=OutputSpec(out_dir=tmp / f"out-{label}",
                  formats=("prores", "png")), direction="forward")
    with Utilisation(models.device) as util:
        start = time.perf_counter()
        result = run_job(job, predictor=model, progress=progress)
        total = time.perf_counter() - start
    assert set(result.outputs) == {"prores", "png"}
    report.rows.append(Row(f"e2e {label}: {size[0]}x{size[1]} H.264, {frames} frames, 3 obj, ProRes 4444 + PNG",
                           "frames/s", frames / total, None, ">= 30 frames/s" if preset else "", True))
    # Exports overlap the tracking: each stage is given as its [first, last] progress report in
    # seconds from the job's start, plus what remained after the last tracked frame.
    where: dict[str, Any] = {"decode alone (one pass over the clip)": round(decode_s, 2)}
    for stage, (a, b) in stages.items():
        where[stage] = [round(a - start, 2), round(b - start, 2)]
    track_end = stages.get("track", [start, start])[1]
    where["after the last tracked frame"] = round(start + total - track_end, 2)
    report.extra[f"e2e_{label}"] = {"total_s": round(total, 2), "frames": frames,
                                    "gpu_utilisation_mean_pct": util.mean(), "seconds": where}
    print(f"e2e {label}: {total:.1f} s, GPU {util.mean()}%, {where}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- main


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"


def to_json(report: Report, device: torch.device, args: argparse.Namespace) -> dict[str, Any]:
    """The report as JSON-ready data (every row with ours / reference / ratio)."""
    return {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__, "cuda": torch.version.cuda, "commit": _commit(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "settings": {k: v for k, v in vars(args).items() if k != "json"},
        "rows": [{"measure": r.measure, "unit": r.unit, "ours": r.ours, "reference": r.reference,
                  "ratio": r.ratio, "target": r.target, "higher_is_better": r.higher_is_better} for r in report.rows],
        **report.extra, "errors": report.errors,
    }


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", type=Path, help="also write the table (and the device, torch, CUDA, commit) here")
    ap.add_argument("--e2e", action="store_true", help="also time the whole sam2-web mask job")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, help="run only these sections (default: all but e2e)")
    ap.add_argument("--compile-mode", default="max-autotune",
                    help="torch.compile mode of our preset (the reference's vos_optimized uses max-autotune)")
    ap.add_argument("--dry-run", action="store_true", help="toy sizes on any device (tests the script)")
    ap.add_argument("--size", type=int, default=1024, help="model image_size")
    ap.add_argument("--frames", type=int, default=40, help="clip length for the model loop")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--families", nargs="*", default=["edgetam", "sam2.1_hiera_s", "sam2.1_hiera_b+",
                                                      "efficienttam_s_512x512", "efficienttam_ti_512x512"])
    ap.add_argument("--no-reference-vos", action="store_true", help="skip the reference's compiled predictor")
    ap.add_argument("--e2e-frames", type=int, default=300)
    ap.add_argument("--e2e-size", default="1280x720")
    args = ap.parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.dry_run:
        raise SystemExit("bench.gpu needs a CUDA GPU (or --dry-run)")
    if args.dry_run:  # every code path, toy sizes
        args.size, args.frames, args.repeats = 256, STEADY_FROM + 3, 2
        args.families = args.families[:1] if device.type == "cuda" else []
        args.e2e_frames, args.e2e_size = 12, "128x96"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    overrides = [f"++model.image_size={args.size}"] if args.size != 1024 else []
    clip_size = (1024, 768) if not args.dry_run else (128, 96)
    e2e_size = tuple(int(v) for v in args.e2e_size.split("x"))
    report = Report()
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        tmp = Path(tmp)
        from tests.parity import build_reference, save_official_checkpoint

        torch.manual_seed(0)
        ref = build_reference("sam2.1_hiera_t", overrides, video=True)
        ckpt = str(save_official_checkpoint(ref, tmp / "t.pt"))
        del ref
        models = Models("sam2.1_hiera_t", ckpt, overrides, device, None if args.compile_mode == "default"
                        else args.compile_mode)
        clip = make_clip(tmp / "clip", args.frames, clip_size)
        wanted = args.sections or [s for s in SECTIONS if s != "e2e" or args.e2e]
        runs = {
            "image": lambda: image_encoder_rows(report, device, args.size, args.repeats),
            "exact": lambda: exact_rows(report, models, clip, clip_size),
            "preset": lambda: preset_rows(report, models, clip, clip_size,
                                          not args.no_reference_vos and device.type == "cuda"),
            "agreement": lambda: agreement_rows(report, models, clip, clip_size),
            "families": lambda: family_rows(report, models, clip, clip_size, args.families),
            "e2e": lambda: [e2e_rows(report, models, tmp, args.e2e_frames, e2e_size, preset) for preset in (True, False)],
        }
        for name in wanted:
            report.section(name, runs[name])
            if args.json:  # after every section: a run cut short still leaves what it measured
                _write_json(args.json, to_json(report, device, args))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU (dry run)"
    print(f"\n{name}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{time.perf_counter() - started:.0f} s in all")
    print(report.table())
    if args.json:
        _write_json(args.json, to_json(report, device, args))
    return 1 if report.errors else 0


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str), encoding="utf-8")
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
