"""Pictures and labels the UI shows: a frame with its masks and clicks, the object legend,
the frame/timecode line and the progress bar. Pure functions of the session state.
"""

from __future__ import annotations

import html
import math

import numpy as np
from PIL import Image, ImageDraw

from sam2_web.export.preview import color_of, overlay
from sam2_web.ui.actions import TrackStep, format_step, mask_dict
from sam2_web.ui.state import AppSession
from sam2_web.video.edits import Box, Click

# Frames are shown with their long side in this range: big ones shrink (less to send per click),
# small ones grow (a 160 px frame is too small to click on). Clicks are mapped back.
DISPLAY_MIN_SIDE = 640
DISPLAY_MAX_SIDE = 1280
POSITIVE = (40, 220, 80)
NEGATIVE = (235, 50, 50)


def display_scale(width: int, height: int, max_side: int = DISPLAY_MAX_SIDE,
                  min_side: int = DISPLAY_MIN_SIDE) -> float:
    """Original pixels per displayed pixel: > 1 for frames shrunk to ``max_side``, < 1 for
    frames enlarged to ``min_side``, 1.0 in between."""
    long_side = max(width, height)
    shown = min(max(long_side, min_side), max_side)
    return long_side / shown


def frame_image(session: AppSession, frame_idx: int, max_side: int = DISPLAY_MAX_SIDE,
                min_side: int = DISPLAY_MIN_SIDE) -> np.ndarray:
    """Frame ``frame_idx`` with every object's mask in its colour and the clicks drawn on top.

    Returned at the display size (see :func:`display_scale`); clicks are drawn after scaling so
    they stay crisp.
    """
    frame = session.video.frame(frame_idx)
    masks = mask_dict(session, frame_idx)
    ids = [o for o in session.video.object_names if o in masks]
    shown = overlay(frame, masks, ids, alpha=0.5) if ids else np.asarray(frame)
    candidates = session.candidates
    if candidates is not None and candidates.frame_idx == frame_idx:
        shown = _outlined(shown, [r["segmentation"] for r in candidates.records])
    scale = display_scale(shown.shape[1], shown.shape[0], max_side, min_side)
    img = Image.fromarray(shown)
    if scale != 1.0:
        img = img.resize((round(img.width / scale), round(img.height / scale)), Image.BILINEAR)
    _draw_prompts(img, session, frame_idx, scale)
    return np.asarray(img)


CANDIDATE = (255, 255, 255)  # outline of an object "Find objects" proposed


def _outlined(picture: np.ndarray, masks: list) -> np.ndarray:
    """``picture`` with every mask's outline (its pixels with a neighbour outside it) drawn in
    :data:`CANDIDATE`: proposed objects, not yet objects."""
    out = np.array(picture, copy=True)
    for mask in masks:
        m = np.asarray(mask, dtype=bool)
        inner = m.copy()
        inner[1:, :] &= m[:-1, :]
        inner[:-1, :] &= m[1:, :]
        inner[:, 1:] &= m[:, :-1]
        inner[:, :-1] &= m[:, 1:]
        out[m & ~inner] = CANDIDATE
    return out


def _draw_prompts(img: Image.Image, session: AppSession, frame_idx: int, scale: float) -> None:
    draw = ImageDraw.Draw(img)
    r = max(3, round(min(img.size) / 60))
    for p in session.video.prompts(frame_idx):
        if isinstance(p, Click):
            x, y = p.x / scale, p.y / scale
            draw.ellipse((x - r, y - r, x + r, y + r), fill=POSITIVE if p.positive else NEGATIVE,
                         outline=(255, 255, 255), width=max(1, r // 3))
        elif isinstance(p, Box):
            draw.rectangle((p.x0 / scale, p.y0 / scale, p.x1 / scale, p.y1 / scale),
                           outline=color_of(p.obj_id), width=max(2, r // 2))
    corner = session.pending
    if corner is not None and corner.frame_idx == frame_idx:
        x, y = corner.x / scale, corner.y / scale
        colour = color_of(corner.obj_id)
        draw.line((x - 2 * r, y, x + 2 * r, y), fill=colour, width=2)
        draw.line((x, y - 2 * r, x, y + 2 * r), fill=colour, width=2)


def frame_label(session: AppSession, frame_idx: int) -> str:
    """``"Frame 3 / 23 · 00:00:00:03 · 24 frames at 12 fps, 320×192"`` (frames counted from 0)."""
    info = session.info
    if info is None:
        return "No clip yet: upload a video or an image, or pick an example."
    return (f"**Frame {frame_idx} / {info.num_frames - 1}** · `{info.timecode(frame_idx)}` · "
            f"{info.num_frames} frames at {info.fps:g} fps, {info.width}×{info.height}")


def objects_html(session: AppSession | None) -> str:
    """A legend of the objects: colour swatch, name, id, clicks; the selected one in bold."""
    names = session.video.object_names if session is not None and session.video is not None else {}
    if not names:
        return "<div class='sam2-objects'>No objects yet.</div>"
    rows = []
    for obj_id, name in names.items():
        r, g, b = color_of(obj_id)
        n = len(session.video.prompts(obj_id=obj_id))
        weight = "bold" if obj_id == session.current else "normal"
        rows.append(
            f"<span class='sam2-object' data-obj='{obj_id}' style='font-weight:{weight};margin-right:1em'>"
            f"<span style='display:inline-block;width:0.9em;height:0.9em;border-radius:2px;"
            f"background:rgb({r},{g},{b});vertical-align:middle'></span> "
            f"{html.escape(name)} <small>(#{obj_id}, {n} click{'s' if n != 1 else ''})</small></span>"
        )
    return "<div class='sam2-objects'>" + "".join(rows) + "</div>"


def object_choices(session: AppSession | None) -> list[tuple[str, int]]:
    """(label, id) pairs for the object selector."""
    if session is None or session.video is None:
        return []
    return [(f"{name} (#{obj_id})", obj_id) for obj_id, name in session.video.object_names.items()]


def progress_html(step: TrackStep | None, message: str = "") -> str:
    """A progress bar with frames done/total, seconds per frame and ETA (or just ``message``)."""
    if step is None:
        return f"<div class='sam2-progress'>{html.escape(message)}</div>"
    pct = 0 if step.total == 0 else math.floor(100 * step.done / step.total)
    text = html.escape(format_step(step) + (f" · {message}" if message else ""))
    return (f"<div class='sam2-progress'><progress max='{step.total}' value='{step.done}' "
            f"style='width:100%'>{pct}%</progress><div class='sam2-progress-text'>{text}</div></div>")


def cutout_image(session: AppSession, frame_idx: int, band_px: float | None = None,
                 max_side: int = DISPLAY_MAX_SIDE) -> np.ndarray:
    """Frame ``frame_idx``'s objects cut out with soft edges over a checkerboard (what the soft-edge
    exports will hold): the alpha of every object's mask solved around its edge
    (``sam2_web.matting.alpha_matte``; ``band_px`` None: from the model), the colour decontaminated.
    Returned at most ``max_side`` on the long side.
    """
    from sam2_web.matting import alpha_matte, cutout_preview, estimate_foreground
    from sam2_web.matting.band import mask_resolution_of

    frame = session.video.frame(frame_idx)
    alpha = np.zeros(frame.shape[:2], dtype=np.float32)
    for mask in mask_dict(session, frame_idx).values():
        solved = alpha_matte(frame, mask, band_px=band_px, mask_resolution=mask_resolution_of(session.video.model))
        alpha = np.maximum(alpha, solved)
    picture = cutout_preview(frame, alpha, estimate_foreground(frame, alpha))
    scale = max(1.0, max(picture.shape[:2]) / max_side)
    if scale == 1.0:
        return picture
    img = Image.fromarray(picture)
    return np.asarray(img.resize((round(img.width / scale), round(img.height / scale)), Image.BILINEAR))
