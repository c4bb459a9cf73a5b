"""Speed as data: what a model costs per frame and per click, and where that was measured.

Two sources give the same :class:`Speed`:

* **the bench** — ``configs/speeds.yaml``, written by ``python -m bench.models`` through
  :func:`write_bench_run`: per kind of device (``cpu``, ``cuda``, ``mps``) one run that measured
  the models side by side, labelled with the machine it ran on;
* **this server** — a small JSON cache (:func:`cache_path`) that the app and the CLI update every
  time they run a model (:func:`record_frames`, :func:`record_click`), keyed by device and model.

:func:`speed_of` prefers this device's own figures and falls back to the bench's. Nothing here
imports torch at import time; :func:`device_label` imports it when asked.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import tempfile
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)

BENCH_ENV = "SAM2_WEB_BENCH_SPEEDS"  # another bench file; set to "" for none (tests do)
CACHE_ENV = "SAM2_WEB_SPEEDS_CACHE"  # another per-device cache file
KINDS = ("cpu", "cuda", "mps")
# The first frames of a run are cheaper (the memory is not full yet) and pay one-off costs; the
# figures describe the steady state, as the bench does ("memory full": 7 memory frames).
WARMUP_FRAMES = 8
MIN_TIMED_FRAMES = 4
# Old figures count as at most this many frames (clicks) against a new run, so the cache follows
# a server that got faster or slower instead of averaging forever.
KEEP_FRAMES = 100
KEEP_CLICKS = 20

_BENCH_HEADER = """\
# Measured speed of each model, written by `python -m bench.models` (sam2_web.speeds.write_bench_run).
# One run per kind of device (cpu | cuda | mps), its models measured side by side in that run:
#   device:  the machine, as sam2_web.speeds.device_label names it, e.g. "2-thread CPU (AMD EPYC 7R13)"
#   date, torch: when, and with which torch
#   method:  how (weights, resolution, objects, memory)
#   models:  per model name, every figure in seconds:
#     s_per_frame_1obj, s_per_frame_3obj: one tracked frame once the memory is full, 1 / 3 objects
#     click_new_frame_s: a click on a frame that is not encoded yet (image encoder + mask decoder)
#     samurai_ratio_3obj: s/frame with SAMURAI's memory over SAM 2's, 3 objects (python -m bench.samurai)
# A figure that was not measured is left out; the app and `sam2-web models` then say "not measured".
# A server replaces these with its own figures once it has run a model (see sam2_web/speeds.py).
"""


# --------------------------------------------------------------------------- the figures


@dataclass(frozen=True)
class Speed:
    """What one model costs on one device.

    Args:
        device: where it was measured (a :func:`device_label`), e.g. ``2-thread CPU (AMD EPYC 7R13)``.
        s_per_frame: ``(objects, seconds per tracked frame)`` pairs, fewest objects first.
        click_new_frame_s: seconds for a click on a frame not encoded yet, or None.
        here: True for this server's own figures, False for the bench's.
    """

    device: str
    s_per_frame: tuple[tuple[int, float], ...] = ()
    click_new_frame_s: Optional[float] = None
    here: bool = False

    def per_frame(self, objects: int) -> Optional[float]:
        """Seconds per tracked frame with ``objects`` objects, or None when nothing was measured.

        The measured count itself is exact. Between or beyond two counts the figure follows the
        line through the nearest two (the image encoder is shared, so cost grows less than the
        object count; a falling line, which is noise, is read as flat). With one count only, it
        scales with the number of objects (frames × objects × s/frame per object).
        """
        points = dict(self.s_per_frame)
        if objects in points:
            return points[objects]
        if not points:
            return None
        counts = sorted(points)
        if len(counts) == 1:
            c = counts[0]
            return points[c] * max(1, objects) / c
        near = sorted(counts, key=lambda c: (abs(c - objects), c))[:2]
        (n1, s1), (n2, s2) = sorted((c, points[c]) for c in near)
        slope = max(0.0, (s2 - s1) / (n2 - n1))
        line = s1 + slope * (objects - n1)
        # Below the measured counts the line may dip under a fair share of s1; never go under that.
        return max(line, s1 * objects / n1) if objects < n1 else line

    @property
    def source(self) -> str:
        """``measured on this server`` or ``bench, <device>``: how to label a figure."""
        return "measured on this server" if self.here else f"bench, {self.device}"


@dataclass(frozen=True)
class BenchRun:
    """One bench run: the models measured side by side on one machine.

    Args:
        kind: ``cpu``, ``cuda`` or ``mps`` — which servers these figures stand in for.
        device: the machine (a :func:`device_label`).
        date: ISO date of the run.
        torch: torch version.
        method: how it was measured (weights, resolution, objects, memory).
        models: model name → ``{"s_per_frame_1obj": s, "s_per_frame_3obj": s, "click_new_frame_s": s}``
            (any subset).
    """

    kind: str
    device: str
    date: str
    torch: str
    method: str
    models: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def speed(self, model: str) -> Optional[Speed]:
        """The figures of ``model`` in this run, or None when it was not measured."""
        figures = self.models.get(model)
        if not figures:
            return None
        per_frame = tuple((n, float(figures[key])) for n, key in ((1, "s_per_frame_1obj"), (3, "s_per_frame_3obj"))
                          if figures.get(key) is not None)
        click = figures.get("click_new_frame_s")
        return Speed(self.device, per_frame, None if click is None else float(click), here=False)


def seconds_text(value: float) -> str:
    """``0.42`` under a second, ``10.8`` above: the precision a timing deserves."""
    return f"{value:.2f}" if value < 1 else f"{value:.1f}"


def per_frame_text(speed: Optional[Speed], objects: int = 3) -> str:
    """``10.8 s/frame`` with ``objects`` objects, or ``not measured``."""
    value = speed.per_frame(objects) if speed is not None else None
    return "not measured" if value is None else f"{seconds_text(value)} s/frame"


# --------------------------------------------------------------------------- where


def bench_path() -> Optional[Path]:
    """The bench file: ``$SAM2_WEB_BENCH_SPEEDS`` if set (empty = none), else ``configs/speeds.yaml``."""
    if BENCH_ENV in os.environ:
        return Path(os.environ[BENCH_ENV]) if os.environ[BENCH_ENV] else None
    from sam2_web.registry import configs_dir

    return configs_dir() / "speeds.yaml"


def cache_path() -> Path:
    """This server's figures: ``$SAM2_WEB_SPEEDS_CACHE`` if set, else ``sam2_web/speeds.json`` in the
    Hugging Face cache folder (``$HF_HOME``, else ``$XDG_CACHE_HOME/huggingface``, else
    ``~/.cache/huggingface``) — on a Space with persistent storage that folder survives restarts."""
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV]).expanduser()
    if os.environ.get("HF_HOME"):
        root = Path(os.environ["HF_HOME"]).expanduser()
    else:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache").expanduser() / "huggingface"
    return root / "sam2_web" / "speeds.json"


def device_label(device: Any, precision: str = "fp32") -> str:
    """A name for the device figures are measured on, e.g. ``2-thread CPU (AMD EPYC 7R13)``,
    ``NVIDIA H100 80GB HBM3``, ``Apple MPS``; ``precision`` other than fp32 is appended.

    The CPU label counts torch's threads, which is what sets the speed. A CUDA label asks the
    driver for the card's name.

    Raises:
        RuntimeError: (torch) ``device`` is not a device string.
    """
    import torch

    dev = torch.device(device)
    if dev.type == "cuda":
        label = torch.cuda.get_device_name(dev)
    elif dev.type == "mps":
        label = "Apple MPS"
    else:
        name = _cpu_name()
        label = f"{torch.get_num_threads()}-thread CPU" + (f" ({name})" if name else "")
    return label if precision == "fp32" else f"{label}, {precision}"


def _cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.startswith("model name"):
                    return " ".join(line.split(":", 1)[1].split())
    except OSError:
        pass
    import platform

    return platform.processor() if platform.system() == "Darwin" else ""


# --------------------------------------------------------------------------- the bench file


def load_bench(path: Optional[Path] = None) -> dict[str, BenchRun]:
    """The bench runs by kind of device (``cpu``/``cuda``/``mps``) from ``path`` (default
    :func:`bench_path`); an absent file or an empty one gives ``{}``.

    Raises:
        ValueError: a malformed file (the message names it and the field).
    """
    path = bench_path() if path is None else Path(path)
    if path is None or not path.is_file():
        return {}
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a mapping of cpu/cuda/mps runs")
    runs = {}
    for kind, run in data.items():
        if kind not in KINDS or not isinstance(run, dict):
            raise ValueError(f"{path}: {kind!r} is not one of {', '.join(KINDS)} with a run under it")
        missing = [k for k in ("device", "date", "torch", "method") if not run.get(k)]
        if missing:
            raise ValueError(f"{path}: the {kind} run lacks {', '.join(missing)}")
        models = {}
        for name, figures in (run.get("models") or {}).items():
            if not isinstance(figures, dict):
                raise ValueError(f"{path}: {kind}.models.{name} must be a mapping of figures")
            models[str(name)] = {str(k): float(v) for k, v in figures.items() if v is not None}
        runs[kind] = BenchRun(kind, str(run["device"]), str(run["date"]), str(run["torch"]), str(run["method"]),
                              models)
    return runs


def bench_run_for(kind: str, runs: Optional[Mapping[str, BenchRun]] = None) -> Optional[BenchRun]:
    """The bench run that stands in for a ``kind`` device: its own, else (for mps) the CPU run."""
    runs = load_bench() if runs is None else runs
    return runs.get(kind) or (runs.get("cpu") if kind == "mps" else None)


def samurai_ratio(kind: str, runs: Optional[Mapping[str, BenchRun]] = None) -> Optional[tuple[str, float]]:
    """``(model, ratio)``: s/frame with SAMURAI's memory over SAM 2's, 3 objects, as ``python -m
    bench.samurai --write-speeds`` recorded it (figure ``samurai_ratio_3obj``) in the bench run for a
    ``kind`` device; None when not measured."""
    run = bench_run_for(kind, runs)
    for model, figures in (run.models.items() if run is not None else ()):
        if figures.get("samurai_ratio_3obj") is not None:
            return model, float(figures["samurai_ratio_3obj"])
    return None


def write_bench_run(run: BenchRun, path: Optional[Path] = None) -> Path:
    """Put ``run`` into the bench file (replacing that kind's previous run, keeping the others),
    written to a temp file and renamed. Returns the path written.

    Raises:
        ValueError: an unknown ``run.kind``; OSError: the folder is not writable.
    """
    import yaml

    if run.kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {run.kind!r}")
    path = Path(path) if path is not None else bench_path()
    if path is None:
        raise ValueError(f"no bench file: {BENCH_ENV} is set to an empty path")
    runs = load_bench(path)
    runs[run.kind] = run
    data = {kind: {"device": r.device, "date": r.date, "torch": r.torch, "method": r.method,
                   "models": {m: dict(f) for m, f in r.models.items()}}
            for kind, r in sorted(runs.items(), key=lambda kv: KINDS.index(kv[0]))}
    _write_atomic(path, _BENCH_HEADER + yaml.safe_dump(data, sort_keys=False, width=120))
    return path


# --------------------------------------------------------------------------- this server's cache


_cache_lock = threading.Lock()


def _read_cache(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {"version": 1, "devices": {}}
    except (OSError, ValueError) as exc:
        # A damaged cache only costs its figures; it must never stop the app.
        log.warning("ignoring the speed cache %s (%s); it will be rewritten", path, exc)
        return {"version": 1, "devices": {}}
    if not isinstance(data, dict) or not isinstance(data.get("devices"), dict):
        return {"version": 1, "devices": {}}
    return data


def local_speed(model: str, device: str, path: Optional[Path] = None) -> Optional[Speed]:
    """This server's figures for ``model`` on ``device`` (a :func:`device_label`), or None."""
    entry = _read_cache(path or cache_path())["devices"].get(device, {}).get(model)
    if not isinstance(entry, dict):
        return None
    try:
        per_frame = tuple(sorted((int(n), float(s)) for n, s in (entry.get("s_per_frame") or {}).items()))
        click = entry.get("click_new_frame_s")
        return Speed(device, per_frame, None if click is None else float(click), here=True)
    except (TypeError, ValueError):
        return None


def _update(model: str, device: str, change, path: Optional[Path]) -> None:
    path = path or cache_path()
    with _cache_lock:
        data = _read_cache(path)
        entry = data["devices"].setdefault(device, {}).setdefault(model, {})
        change(entry)
        entry["updated"] = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        try:
            _write_atomic(path, json.dumps(data, indent=1, sort_keys=True))
        except OSError as exc:  # a read-only home still runs the app; it just cannot remember
            log.warning("could not write the speed cache %s: %s", path, exc)


def record_frames(model: str, device: str, objects: int, seconds: Iterable[float],
                  path: Optional[Path] = None) -> Optional[float]:
    """Fold one run's per-frame times into this server's figure for ``objects`` objects.

    Args:
        model: registry name; device: a :func:`device_label`; objects: objects tracked.
        seconds: the time of each tracked frame of the run, in order.
        path: the cache file (default :func:`cache_path`).
    Returns:
        The run's steady s/frame (frames after the first :data:`WARMUP_FRAMES`), or None when
        the run was too short to tell (nothing is recorded then).
    """
    times = list(seconds)[WARMUP_FRAMES:]
    if len(times) < MIN_TIMED_FRAMES or objects < 1:
        return None
    rate = sum(times) / len(times)

    def change(entry: dict) -> None:
        rates, frames = entry.setdefault("s_per_frame", {}), entry.setdefault("frames", {})
        key = str(objects)
        old_n = min(int(frames.get(key, 0)), KEEP_FRAMES)
        old = float(rates.get(key, rate))
        rates[key] = round((old * old_n + rate * len(times)) / (old_n + len(times)), 4)
        frames[key] = old_n + len(times)

    _update(model, device, change, path)
    return rate


def record_click(model: str, device: str, seconds: float, path: Optional[Path] = None) -> None:
    """Fold the time of one click on a frame that was not encoded yet into this server's figure."""
    def change(entry: dict) -> None:
        n = min(int(entry.get("clicks", 0)), KEEP_CLICKS)
        old = float(entry.get("click_new_frame_s", seconds))
        entry["click_new_frame_s"] = round((old * n + seconds) / (n + 1), 4)
        entry["clicks"] = n + 1

    _update(model, device, change, path)


class FrameClock:
    """Times the frames of one run as they finish: call :meth:`tick` after each frame.

    Args:
        clock: seconds from a monotonic clock (``time.monotonic``; tests pass their own).
    """

    def __init__(self, clock: Optional[Any] = None):
        import time

        self._clock = clock or time.monotonic
        self._last = self._clock()
        self.seconds: list[float] = []

    def tick(self) -> None:
        """One more frame is done."""
        now = self._clock()
        self.seconds.append(now - self._last)
        self._last = now

    def skip(self) -> None:
        """One more frame is done but cost nothing to speak of (read from a cache): not timed."""
        self._last = self._clock()


def speed_of(model: str, device: str, kind: str, *, bench: Optional[Mapping[str, BenchRun]] = None,
             cache: Optional[Path] = None) -> Optional[Speed]:
    """The figures to show for ``model`` on this server: its own when it has measured the model on
    ``device`` (a :func:`device_label`), else the bench run for ``kind`` devices, else None.

    Figures are not mixed across devices: until the server has tracked with the model (it may
    have timed clicks only), the bench's figures are shown, labelled with the bench's device.
    """
    here = local_speed(model, device, cache)
    if here is not None and here.s_per_frame:
        return here
    run = bench_run_for(kind, bench)
    there = run.speed(model) if run is not None else None
    return there or here


def _write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
