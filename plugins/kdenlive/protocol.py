"""Kdenlive's "Object Mask" script protocol (Kdenlive 25.04+), as data.

Kdenlive exports the clip's zone as ``<folder>/00000.jpg, 00001.jpg, ...`` and starts its mask
script with

    python sam-objectmask.py -I <frames> -O <preview folder> -M <model .pt> -C <config> -F <frame>
        [-P "<f>=x,y,x,y..."] [-L "<f>=1,0..."] [-B "<f>=x0,y0,x1,y1"] [-D cpu|cuda|mps] [--offload]
        [--color r,g,b,a] [--border N] [--bordercolor r,g,b,a]

then talks to it line by line on stdin:

* ``preview=<the same flags>``: the prompts of one frame changed; write
  ``<preview folder>/preview-<frame:05d>.png`` (the mask drawn in ``--color``) and print
  ``preview ok <frame>``;
* ``edit=--color ... --border ... --bordercolor ...``: new drawing colours;
* ``render=<folder>`` (``rerender=<folder>`` to correct a saved mask): track through the zone,
  write ``<folder>/<frame:05d>.png`` for every frame, print ``mask ok``. Meanwhile ``INFO:<text>``
  messages are shown to the user and ``<percent>%|`` on stderr drives the progress bar (the
  newer Kdenlive also reads ``frame_done <n>/<total>`` on stdout; the earlier one would take
  it for a message of its own, so the backend does not send it);
* ``finish`` (sent after ``mask ok`` by the newer Kdenlive) or ``q``: exit.

Kdenlive's Object Mask code exists in two generations. The earlier takes each read of stdout
as one message, whitespace collapsed: ``preview ok`` (the frame is the last word),
``mask ok`` (exactly) or ``INFO:`` (the text up to the next ':'). The newer one splits lines.
``--offload`` is Kdenlive's "keep video frames in CPU memory".

Kdenlive then encodes the render folder with ffmpeg (``%05d.png`` → FFV1 with alpha) and uses
it as a shape mask. Point coordinates are frame pixels; the frame index is relative to the
exported zone (0 = the first exported frame). Prompts accumulate per frame: a ``-P`` entry for
frame f replaces frame f's clicks, other frames keep theirs.
"""

from __future__ import annotations

import argparse
import os
import shlex
from dataclasses import dataclass, field
from typing import Optional, Union

from sam2_web.errors import LimitExceededError, PromptError

# Longest stdin line read as a command. Kdenlive's preview line carries the clicks of the zone's
# keyframes (at most limits.max_points per frame, ~12 characters each); a longer line is
# answered with INFO and dropped unread, so a hostile line cannot hold the process's memory.
MAX_LINE_CHARS = 2**20
DEFAULT_COLOR = (255, 100, 100, 180)
DEFAULT_BORDER_COLOR = (255, 100, 100, 100)
OVERLAY_MODES = {0: "color", 1: "boundary", 2: "alpha"}


@dataclass
class Style:
    """How masks are drawn: fill colour, border width and colour (RGBA 0..255), preview mode."""

    color: tuple[int, int, int, int] = DEFAULT_COLOR
    border: int = 0
    border_color: tuple[int, int, int, int] = DEFAULT_BORDER_COLOR
    overlay_mode: int = 0


@dataclass
class FramePrompts:
    """Clicks and box of the one Kdenlive object on one frame (frame pixels)."""

    points: list[tuple[float, float]] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    box: Optional[tuple[float, float, float, float]] = None

    def empty(self) -> bool:
        """No click and no box."""
        return not self.points and self.box is None


@dataclass
class Preview:
    """``preview=...``: update the prompts of some frames, then preview ``frame``."""

    frame: int
    prompts: dict[int, FramePrompts]
    style: Optional[Style]


@dataclass
class Edit:
    """``edit=...``: change the drawing style only."""

    style: Style


@dataclass
class Render:
    """``render=<folder>`` / ``rerender=<folder>``: track the zone and write every frame."""

    folder: str
    again: bool = False


@dataclass
class Quit:
    """``q``, ``finish`` or the end of stdin."""


Command = Union[Preview, Edit, Render, Quit]


def _env_number(name: str) -> Optional[float]:
    text = os.environ.get(name, "").strip()
    try:
        return float(text) if text else None
    except ValueError:
        return None  # a malformed value falls back to the automatic band rather than failing Kdenlive's launch


class _LineParser(argparse.ArgumentParser):
    """The flags of a ``preview=``/``edit=`` line: every problem is a PromptError, never an exit.

    argparse's ``exit_on_error=False`` still exits on some errors (an ambiguous or incomplete
    option calls ``error()``, ``-h`` prints help and exits 0); on a line that would end the
    editor's session, so both ways out raise instead.
    """

    def error(self, message: str):
        raise PromptError(message)

    def exit(self, status: int = 0, message: str | None = None):
        raise PromptError(message or "this is not a mask command")


def argument_parser(exit_on_error: bool = True) -> argparse.ArgumentParser:
    """Kdenlive's flags (same names and spellings as its own script), plus ``--set`` for our
    hydra overrides. Also parses the arguments of ``preview=`` and ``edit=`` lines (then with
    ``exit_on_error=False``: a bad line raises PromptError and never ends the process; ``-h``
    is not an option there, and options are never abbreviated)."""
    cls = argparse.ArgumentParser if exit_on_error else _LineParser
    parser = cls(
        "sam2_web_objectmask", description="Kdenlive Object Mask backend running the sam2_web engine.",
        exit_on_error=exit_on_error, add_help=exit_on_error, allow_abbrev=exit_on_error,
    )
    parser.add_argument("-P", "--point_coordinates", help="clicks per frame: '0=200,250,300,255;100=10,50'")
    parser.add_argument("-L", "--labels", help="labels per frame, 1 include / 0 exclude: '0=1,0;100=1'")
    parser.add_argument("-B", "--box_coordinates", help="box per frame: '0=10,20,150,255' (x0,y0,x1,y1)")
    parser.add_argument("-F", "--preview_frame", default=-1, help="frame index of the preview")
    parser.add_argument("-I", "--inputFolder", default="/tmp/src-frames", help="folder of the zone's JPEG frames")
    parser.add_argument("-O", "--output", default="/tmp/", help="folder of the preview images")
    parser.add_argument("-M", "--model", help="checkpoint (.pt) path, or a model name (sam2.1_hiera_t, tiny...)")
    parser.add_argument("-C", "--config", help="model config as Kdenlive names it (configs/sam2.1/sam2.1_hiera_t.yaml)")
    parser.add_argument("-D", "--device", help="cpu, cuda, cuda:1 or mps (default: the best available)")
    parser.add_argument("--offload", action="store_true",
                        help="Kdenlive's: keep video frames in CPU memory (the engine always does)")
    parser.add_argument("--spill-features", dest="spill_features", action="store_true",
                        help="keep cached image features in a temporary folder on disk instead of in memory")
    parser.add_argument("--color", default=None, help="mask colour r,g,b,a")
    parser.add_argument("--bordercolor", default=None, help="mask border colour r,g,b,a")
    parser.add_argument("--border", default=None, help="mask border width in pixels")
    parser.add_argument("--overlay-mode", dest="overlay_mode", default=None,
                        help="preview drawing: 0 colour fill, 1 outline, 2 alpha (hide the frame outside)")
    # Kdenlive starts the script with its own flags, so the soft-edge switches also read the
    # environment Kdenlive passes on (SAM2_WEB_SOFT_EDGES=1, SAM2_WEB_EDGE_BAND=PX).
    parser.add_argument("--soft-edges", dest="soft_edges", action="store_true",
                        default=os.environ.get("SAM2_WEB_SOFT_EDGES", "").strip().lower() in ("1", "true", "yes", "on"),
                        help="ours: solve soft alpha (hair, motion blur) around the mask's edge from the frame's "
                             "colours; also SAM2_WEB_SOFT_EDGES=1")
    parser.add_argument("--edge-band", dest="edge_band", type=float, default=_env_number("SAM2_WEB_EDGE_BAND"),
                        metavar="PX", help="ours: half-width of the soft-edge band (default: from the model's mask "
                                           "grid); also SAM2_WEB_EDGE_BAND")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="sam2_web hydra override of configs/app.yaml (e.g. ++model.image_size=512); repeatable")
    return parser


def parse_per_frame(text: Optional[str], width: int, what: str) -> dict[int, list[float]]:
    """``"0=1,2,3,4;10=5,6"`` → ``{0: [1, 2, 3, 4], 10: [5, 6]}``, each list a multiple of ``width`` long.

    Raises:
        PromptError: malformed text.
    """
    out: dict[int, list[float]] = {}
    if not text:
        return out
    for part in text.split(";"):
        if not part.strip():
            continue
        frame_text, sep, values_text = part.partition("=")
        shown = _shown(part)
        if len(frame_text.strip()) > 9:  # no clip has a billion frames (and int() of 5000 digits fails)
            raise PromptError(f"{what}: the frame of {shown} is out of range")
        try:
            frame = int(frame_text)
            values = [float(v) for v in values_text.split(",") if v.strip()]
        except ValueError:
            raise PromptError(f"{what}: cannot read {shown}; expected '<frame>=<number>,<number>...'") from None
        if not sep or frame < 0 or len(values) % width:
            raise PromptError(f"{what}: {shown} must be '<frame>=' followed by groups of {width} numbers")
        out[frame] = values
    return out


def _shown(text: str, most: int = 60) -> str:
    """``text`` quoted for a message, cut to ``most`` characters (a line may be a megabyte)."""
    return repr(text if len(text) <= most else text[: most - 3] + "...")


def _rgba(text: Optional[str], default: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    if text is None:
        return default
    try:
        values = [int(float(v)) for v in text.split(",")]
    except ValueError:
        raise PromptError(f"colour {_shown(text)} must be r,g,b,a numbers 0..255") from None
    if len(values) == 3:
        values.append(255)
    if len(values) != 4 or not all(0 <= v <= 255 for v in values):
        raise PromptError(f"colour {_shown(text)} must be r,g,b,a numbers 0..255")
    return (values[0], values[1], values[2], values[3])


def style_from(args: argparse.Namespace, base: Style) -> Style:
    """``base`` with the colour/border/overlay flags present in ``args`` applied.

    Raises:
        PromptError: a colour that is not r,g,b[,a] in 0..255; ValueError/OverflowError: a border
            or overlay mode that is not a number.
    """
    border = base.border if args.border is None else max(0, int(float(args.border)))
    mode = base.overlay_mode if args.overlay_mode is None else int(args.overlay_mode)
    return Style(color=_rgba(args.color, base.color), border=border,
                 border_color=_rgba(args.bordercolor, base.border_color),
                 overlay_mode=mode if mode in OVERLAY_MODES else 0)


def prompts_from(args: argparse.Namespace, max_points: int = 0) -> dict[int, FramePrompts]:
    """The per-frame prompts named by ``-P``/``-L``/``-B`` (only the frames they mention).

    Args:
        args: parsed flags.
        max_points: most clicks on one frame (the app's ``limits.max_points``); 0: no limit.
    Raises:
        PromptError: malformed lists, or a different number of labels and clicks on a frame.
        LimitExceededError: more than ``max_points`` clicks on a frame.
    """
    points = parse_per_frame(args.point_coordinates, 2, "-P")
    labels = parse_per_frame(args.labels, 1, "-L")
    boxes = parse_per_frame(args.box_coordinates, 4, "-B")
    frames: dict[int, FramePrompts] = {}
    for frame, flat in points.items():
        if 0 < max_points < len(flat) // 2:
            raise LimitExceededError(f"frame {frame}: {len(flat) // 2} clicks; the backend takes up to {max_points} "
                                     "per frame (limits.max_points): use fewer, or a box")
        pairs = [(flat[k], flat[k + 1]) for k in range(0, len(flat), 2)]
        frame_labels = [int(v) for v in labels.get(frame, [1.0] * len(pairs))]
        if len(frame_labels) != len(pairs):
            raise PromptError(f"frame {frame}: {len(pairs)} clicks but {len(frame_labels)} labels")
        frames[frame] = FramePrompts(points=pairs, labels=frame_labels)
    for frame, flat in boxes.items():
        if len(flat) != 4:
            raise PromptError(f"-B: frame {frame} must have one box of 4 numbers")
        frames.setdefault(frame, FramePrompts()).box = (flat[0], flat[1], flat[2], flat[3])
    return frames


def parse_command(line: str, base_style: Style, max_points: int = 0) -> Optional[Command]:
    """One stdin line as a command; None for a blank or unknown line (ignored, as Kdenlive's own
    script does, so newer Kdenlive commands do not break an older backend). Unknown flags of a
    ``preview=``/``edit=`` line are ignored for the same reason; ``-h`` is refused.

    Args:
        line: the line.
        base_style: the drawing style the line's flags change.
        max_points: most clicks on one frame (see :func:`prompts_from`).
    Raises:
        PromptError: a ``preview=``/``edit=`` line with malformed values, ``-h``/``--help``, or
            a preview without a frame (``-F``).
        LimitExceededError: more than ``max_points`` clicks on a frame.
    """
    line = line.strip()
    if line in ("q", "finish"):
        return Quit()
    for prefix, again in (("render=", False), ("rerender=", True)):
        if line.startswith(prefix):
            return Render(folder=line[len(prefix):].strip(), again=again)
    if line.startswith("preview=") or line.startswith("edit="):
        name, _, rest = line.partition("=")
        shown = _shown(line, 80)
        try:
            args, unknown = argument_parser(exit_on_error=False).parse_known_args(shlex.split(rest))
            if {"-h", "--help"} & set(unknown):
                raise PromptError("-h/--help is not a mask command; the line takes Kdenlive's -F/-P/-L/-B "
                                  "and style flags")
            style = style_from(args, base_style)
            frame_text = str(args.preview_frame).strip()
            if len(frame_text) > 9:
                raise PromptError(f"-F {_shown(frame_text, 12)} is out of range")
            frame = int(frame_text)
        except (argparse.ArgumentError, PromptError, ValueError, OverflowError) as exc:
            raise PromptError(f"cannot read the {name} line {shown}: {exc}") from None
        if name == "edit":
            return Edit(style)
        if frame < 0:
            raise PromptError(f"the preview line {shown} needs -F <frame>, a frame of the zone (0 = its first)")
        return Preview(frame=frame, prompts=prompts_from(args, max_points), style=style)
    return None
