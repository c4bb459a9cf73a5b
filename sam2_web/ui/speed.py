"""What the app says about speed and quality: the model picker's labels and table, the time a
Track will take, and the figures it records while people use it (the data is ``sam2_web.speeds``).

Plain functions of the registry, the speed data and an :class:`~sam2_web.ui.state.AppSession`;
``layout.py`` only wires them to components.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Optional

from sam2_web import speeds
from sam2_web.registry import ModelSpec, list_models
from sam2_web.speeds import Speed, per_frame_text, seconds_text
from sam2_web.ui.state import AppSession

BENCHMARK = "SA-V test"  # the published score the picker shows (the one model=auto compares)
SHOWN_OBJECTS = 3  # the picker's s/frame is for this many objects, as the bench measures


@dataclass(frozen=True)
class Where:
    """The device the app runs models on, as the speed data names it.

    Args:
        label: a ``sam2_web.speeds.device_label`` (``2-thread CPU (AMD EPYC 7R13)``).
        kind: ``cpu``, ``cuda`` or ``mps``.
    """

    label: str
    kind: str


def where(device: Any = "auto", precision: str = "fp32") -> Where:
    """The device the app config names (``auto`` picks as loading does)."""
    from sam2_web.device import pick_device

    dev = pick_device(device)
    return Where(speeds.device_label(dev, precision), dev.type)


# --------------------------------------------------------------------------- the picker


def quality_text(spec: ModelSpec) -> str:
    """``SA-V test J&F 76.5`` (the published score model=auto compares), or ``... not published``."""
    score = spec.quality.score(BENCHMARK) if spec.quality is not None else None
    metric = spec.quality.metric if spec.quality is not None else "J&F"
    return f"{BENCHMARK} {metric} " + (f"{score:.1f}" if score is not None else "not published")


def model_choices(at: Where, **data: Any) -> list[tuple[str, str]]:
    """``(label, name)`` of every model for the dropdown: name, size, published SA-V test J&F and
    s/frame with 3 objects, marked ``here`` when measured on this server, ``bench`` otherwise.

    Args:
        at: this server's device. data: ``bench``/``cache`` for ``sam2_web.speeds.speed_of`` (tests).
    """
    out = []
    for m in list_models():
        speed = speeds.speed_of(m.name, at.label, at.kind, **data)
        timed = per_frame_text(speed, SHOWN_OBJECTS)
        if speed is not None and speed.per_frame(SHOWN_OBJECTS) is not None:
            timed += " here" if speed.here else " bench"
        out.append((f"{m.label} ({m.params_m:g} M) · {quality_text(m)} · {timed}", m.name))
    return out


def picker_info(at: Where, auto_picked: Optional[str] = None) -> str:
    """The line under the dropdown: what its figures are, and why the default was picked."""
    text = (f"J&F: published {BENCHMARK} score; s/frame: {SHOWN_OBJECTS} objects on this server ({at.label}) "
            "when measured here, else the bench's. Sources under 'About the models'.")
    if auto_picked:
        text = f"Picked for this {at.kind.upper()} (model=auto): {auto_picked}. " + text
    return text


def models_markdown(at: Where, **data: Any) -> str:
    """A table of every model: size, published scores with their source, speed and where it was
    measured, click latency, Hub repo, licence."""
    rows = ["| model | params | published J&F | s/frame (3 obj) | click, new frame | measured on | Hub repo "
            "| licence |", "|---|---|---|---|---|---|---|---|"]
    sources: dict[str, int] = {}
    for m in list_models():
        speed = speeds.speed_of(m.name, at.label, at.kind, **data)
        if m.quality is not None:
            ref = sources.setdefault(m.quality.source, len(sources) + 1)
            scores = ", ".join(f"{bench} {score:.1f}" for bench, score in m.quality.scores) + f" [{ref}]"
        else:
            scores = "not published"
        click = speed.click_new_frame_s if speed is not None else None
        click_text = "—" if click is None else f"{seconds_text(click)} s"
        measured = "—" if speed is None else ("this server" if speed.here else speed.device)
        rows.append(f"| {_md(m.label)} (`{m.name}`) | {m.params_m:g} M | {_md(scores)} | "
                    f"{per_frame_text(speed, SHOWN_OBJECTS)} | {click_text} | {_md(measured)} | "
                    f"[{m.repo_id}](https://huggingface.co/{m.repo_id}) | {m.license or '—'} |")
    notes = [f"[{n}] {_md(source)}" for source, n in sources.items()]
    return "\n".join(rows) + "\n\n" + "  \n".join(notes)


def duration_text(seconds: float) -> str:
    """``42 s``, ``4 min 05 s``, ``1 h 07 min``."""
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def _md(text: str) -> str:
    return text.replace("|", "\\|")


# --------------------------------------------------------------------------- the estimate


@dataclass(frozen=True)
class TrackEstimate:
    """How long a Track of the whole clip should take, and from what.

    Attributes:
        frames: frames to track; objects: objects with prompts.
        s_per_frame: seconds per frame with that many objects; seconds: the total.
        source: ``measured on this server`` or ``bench, <device>``.
    """

    frames: int
    objects: int
    s_per_frame: float
    seconds: float
    source: str


def session_speed(session: AppSession) -> Optional[Speed]:
    """The figures for the session's model on the device it runs on; None when its network is not
    a published one (changed by ``model.*`` overrides) or nothing was measured."""
    from sam2_web.models import speed_key

    if session.video is None:
        return None
    key = speed_key(session.video.model)
    if key is None:
        return None
    name, label = key
    return speeds.speed_of(name, label, session.video.device.type)


def estimate(session: AppSession, speed: Optional[Speed]) -> Optional[TrackEstimate]:
    """The time a Track of the session's clip should take: frames × s/frame for the number of
    prompted objects (``Speed.per_frame``); None before a clip, a prompt or any figure."""
    if session.info is None or speed is None:
        return None
    objects = len(session.video.prompted_objects())
    per_frame = speed.per_frame(objects) if objects else None
    if per_frame is None:
        return None
    frames = session.info.num_frames
    return TrackEstimate(frames, objects, per_frame, frames * per_frame, speed.source)


def estimate_text(session: AppSession, speed: Optional[Speed]) -> str:
    """``Track: about 4 min 20 s (24 frames × 2 objects at 10.8 s/frame; bench, 2-thread CPU).``
    or what to do first, or why there is no estimate."""
    if session.info is None:
        return ""
    if not session.video.prompted_objects():
        return "Click on the object to segment, then press Track."
    est = estimate(session, speed)
    if est is None:
        return ("Press Track. Its time is not measured for this model on this device yet; "
                "the progress bar shows the rate and ETA as frames come in.")
    plural = "s" if est.objects != 1 else ""
    return (f"Press Track: about {duration_text(est.seconds)} ({est.frames} frames × {est.objects} object{plural} "
            f"at {seconds_text(est.s_per_frame)} s/frame; {est.source}).")


def starting_text(session: AppSession, speed: Optional[Speed]) -> str:
    """``Starting… (estimated about 4 min 20 s)`` until the first frame brings the live rate."""
    est = estimate(session, speed)
    return "Starting…" if est is None else f"Starting… (estimated about {duration_text(est.seconds)})"


def estimate_html(session: AppSession | None, speed: Optional[Speed], before: str = "") -> str:
    """:func:`estimate_text` in the status box, after ``before`` (e.g. ``Model ... ready.``)."""
    text = " ".join(t for t in (before, "" if session is None else estimate_text(session, speed)) if t)
    return f"<div class='sam2-progress'>{html.escape(text)}</div>"


# --------------------------------------------------------------------------- recording


def encoded_frames(session: AppSession) -> set[int]:
    """Frames whose features are cached now (tracking them again skips the encoder)."""
    return {i for i in range(session.info.num_frames) if session.video.is_encoded(i)}


@contextmanager
def timed_click(session: AppSession, frame_idx: int) -> Iterator[None]:
    """Time the click done inside; record it as this server's click latency when it encoded a
    new frame (a click on an encoded frame, or a first box corner, is not that figure)."""
    from sam2_web.models import speed_key

    video = session.video
    new = not video.is_encoded(frame_idx)
    start = time.monotonic()
    yield
    seconds = time.monotonic() - start
    if new and video.is_encoded(frame_idx):
        key = speed_key(video.model)
        if key is not None:
            speeds.record_click(*key, seconds)


def record_track(session: AppSession, objects: int, clock: speeds.FrameClock) -> Optional[float]:
    """Fold a Track's frame times into this server's figures for the session's model; returns the
    run's steady s/frame, or None when nothing was recorded (short run, changed network)."""
    from sam2_web.models import speed_key

    key = speed_key(session.video.model) if session.video is not None else None
    if key is None:
        return None
    return speeds.record_frames(*key, objects, clock.seconds)
