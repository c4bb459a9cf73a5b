"""Clicks from the Movie Clip Editor: keyed tracking markers → the job's object prompts.

Conventions (documented in plugins/README.md):

* each tracking object of the clip is one object to segment (the default "Camera" object is
  object 1, objects added in the Clip Editor's *Objects* panel are 2, 3, ...);
* every *keyed* marker of a track is a click on that frame (markers the tracker computed are
  not keyed and are ignored, so tracking a point does not flood the job with clicks);
* a track whose name starts with ``-`` or ``neg`` is a background (negative) click.
"""

from __future__ import annotations

import os

from .jobs import SetupError

NEGATIVE_PREFIXES = ("-", "neg")


def movie_index(clip, marker_frame: int) -> int:
    """0-based frame of the movie file shown at clip frame ``marker_frame``.

    Markers count clip frames from 1; ``frame_offset`` shifts which file frame is frame 1
    (Blender decodes file frame ``scene_frame - start_frame + frame_offset`` and clip frame
    1 is scene frame ``start_frame``).
    """
    return int(marker_frame) - 1 + int(clip.frame_offset)


def is_negative(track_name: str) -> bool:
    """Whether a track marks background: its name starts with ``-`` or ``neg`` (any case)."""
    return track_name.strip().lower().startswith(NEGATIVE_PREFIXES)


def find_clip(data, movie_path: str):
    """The MovieClip that opens ``movie_path`` (compared as absolute paths), or None."""
    import bpy

    wanted = os.path.normcase(os.path.abspath(movie_path))
    for clip in data.movieclips:
        if os.path.normcase(os.path.abspath(bpy.path.abspath(clip.filepath, library=clip.library))) == wanted:
            return clip
    return None


def marker_prompts(clip) -> dict:
    """The clip's keyed, unmuted markers as prompts JSON (``docs/prompts.schema.json``).

    Coordinates are ``normalized``: fractions of the frame from the top-left corner (Blender's
    marker ``co`` counts from the bottom-left).

    Raises:
        SetupError: the clip has no keyed marker (the message says how to place one), or a
            keyed marker lies outside the frame.
    """
    objects = []
    for number, tracking_object in enumerate(clip.tracking.objects, start=1):
        clicks: dict[int, list[tuple[list[float], int]]] = {}
        for track in tracking_object.tracks:
            label = 0 if is_negative(track.name) else 1
            for marker in track.markers:
                if marker.mute or not marker.is_keyed:
                    continue
                x, y = float(marker.co[0]), 1.0 - float(marker.co[1])
                if not (0.0 <= x <= 1.0 and 0.0 <= y <= 1.0):
                    raise SetupError(
                        f"the marker of track '{track.name}' on clip frame {marker.frame} lies outside the "
                        "frame; move it onto the picture or mute it"
                    )
                clicks.setdefault(movie_index(clip, marker.frame), []).append(([x, y], label))
        if not clicks:
            continue
        entry: dict = {"id": number, "frames": [
            {"frame": frame, "points": [p for p, _ in items], "labels": [lab for _, lab in items]}
            for frame, items in sorted(clicks.items())
        ]}
        if not tracking_object.is_camera:
            entry["name"] = tracking_object.name
        objects.append(entry)
    if not objects:
        raise SetupError(
            f"the Movie Clip '{clip.name}' has no keyed markers; in the Movie Clip Editor Ctrl+click on the "
            "object to place one (name a track '-…' for a background click), or use a prompts file"
        )
    return {"version": 1, "coordinates": "normalized", "objects": objects}
