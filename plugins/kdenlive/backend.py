"""The Kdenlive Object Mask backend: Kdenlive's script protocol (``plugins.kdenlive.protocol``)
mapped onto a sam2_web video session.

Differences from Kdenlive's own script, all invisible to Kdenlive: frames are read from the
``-I`` folder a few at a time (not all loaded up front), rendered frames are written as they
are tracked (not collected first), previews come from the same session that renders (so the
render starts from exactly the masks the user saw), and ``-M``/``-C`` accept our model names as
well as Kdenlive's checkpoint-path + config pair.

Kdenlive reads the answers in two ways, depending on its version (see ``plugins/README.md``):
the earlier Object Mask code takes each read of stdout as one message (``preview ok <f>``,
``mask ok``, ``INFO:<text>``), the newer splits lines. So that both understand every answer,
each stdout message is written in one piece and at least ``MESSAGE_GAP_S`` after the previous
one (two messages arriving together would read as one), progress goes to stderr only (both
read ``<n>%|`` there), and nothing else reaches stdout: stray prints from libraries go to stderr.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Optional, TextIO

import numpy as np

from sam2_web.errors import CheckpointError, LimitExceededError, PromptError, Sam2WebError, UnknownModelError

from plugins.kdenlive.protocol import (
    MAX_LINE_CHARS, OVERLAY_MODES, Command, Edit, FramePrompts, Preview, Quit, Render, Style, argument_parser,
    parse_command, prompts_from, style_from,
)

OBJ_ID = 1  # Kdenlive tracks one object per mask
# Time between two stdout messages: Kdenlive's earlier reader takes whatever arrived since its
# last read (10-30 ms of GUI latency) as one message.
MESSAGE_GAP_S = 0.25


# --------------------------------------------------------------------------- model


def resolve_model(model: Optional[str], config: Optional[str]) -> tuple[str, Optional[Path]]:
    """Kdenlive's ``-M``/``-C`` → (our registry name, local checkpoint or None).

    ``-M`` is a checkpoint path (Kdenlive's style) or a model name/alias/Hub repo id (ours);
    ``-C`` is Kdenlive's config name (``configs/sam2.1/sam2.1_hiera_t.yaml``) and, when given,
    decides the network. Without either the app config's default model is used.

    Raises:
        CheckpointError: ``-M`` names a ``.pt`` file that does not exist.
        UnknownModelError: neither names a known model.
    """
    from sam2_web.models import default_model
    from sam2_web.registry import get_model

    checkpoint = None
    if model:
        path = Path(model).expanduser()
        if path.is_file():
            checkpoint = path.absolute()
        elif path.suffix.lower() in (".pt", ".pth"):
            raise CheckpointError(f"the model file {model} does not exist; download it again in Kdenlive's settings")
    candidates = [c for c in (config, checkpoint.name if checkpoint else model) if c]
    for candidate in candidates:
        try:
            return get_model(candidate).name, checkpoint
        except UnknownModelError:
            continue
    if candidates:
        raise UnknownModelError(
            f"cannot tell which SAM 2 model {' / '.join(candidates)} is; pass -C with Kdenlive's config name "
            "(e.g. configs/sam2.1/sam2.1_hiera_t.yaml) or -M with a model name such as sam2.1_hiera_t"
        )
    return default_model(), None


# --------------------------------------------------------------------------- drawing


def _edge_band(mask: np.ndarray, width: int) -> np.ndarray:
    from sam2_web.export.matte import grow_shrink

    return mask & ~grow_shrink(mask, -max(1, width))


def draw_mask(mask: np.ndarray, style: Style, mode: str = "color", alpha: Optional[np.ndarray] = None) -> np.ndarray:
    """An (H, W, 4) uint8 RGBA picture of ``mask`` as Kdenlive shows it.

    ``color``: the mask filled with ``style.color`` (and a ``style.border``-wide edge in
    ``style.border_color``), transparent elsewhere; this is also what rendered frames look like.
    ``boundary``: only the edge. ``alpha``: opaque black outside the mask, clear inside.
    With a soft ``alpha`` (H, W) in [0, 1] the fill's opacity is ``style.color``'s times it, at
    the PNG's 8 bits, which Kdenlive's FFV1 mask clip keeps; ``alpha`` mode hides by 1 - alpha.
    """
    mask = np.asarray(mask, dtype=bool)
    out = np.zeros((*mask.shape, 4), dtype=np.uint8)
    if alpha is not None and mode != "boundary":
        soft = np.asarray(alpha, dtype=np.float32)
        if mode == "alpha":
            out[..., 3] = np.round(255.0 * (1.0 - soft)).astype(np.uint8)
            return out
        covered = soft > 0
        out[covered, :3] = style.color[:3]
        out[..., 3] = np.round(style.color[3] * soft).astype(np.uint8)
        if style.border > 0:
            out[_edge_band(mask, style.border)] = style.border_color
        return out
    if mode == "alpha":
        out[~mask] = (0, 0, 0, 255)
        return out
    if mode == "boundary":
        color = style.border_color if style.border > 0 else style.color
        out[_edge_band(mask, max(2, style.border))] = color
        return out
    out[mask] = style.color
    if style.border > 0:
        out[_edge_band(mask, style.border)] = style.border_color
    return out


def write_png(path: Path, image: np.ndarray) -> None:
    """Write an RGBA PNG under a temporary name, then rename: Kdenlive never reads half a file."""
    from sam2_web.export.images import encode_png

    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_bytes(encode_png(image))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the backend


class ObjectMaskBackend:
    """Answers Kdenlive's commands for one clip zone.

    Args:
        predictor: a sam2_web video predictor.
        frames_dir: Kdenlive's ``-I`` folder of ``00000.jpg ...``.
        preview_dir: Kdenlive's ``-O`` folder for ``preview-<frame>.png``.
        style: initial drawing style.
        spill_features: keep cached image features in a temporary folder on disk instead of in
            memory (our ``--spill-features``; Kdenlive's ``--offload`` means something else).
        soft_edges: draw previews and rendered frames with a soft alpha solved around the mask's
            edge (``sam2_web.matting``); rendered frames are steady over time (``MatteStream``).
        edge_band_px: the soft-edge band's half-width; None = from the model's mask grid.
        out, err: Kdenlive's stdout (protocol messages) and stderr (progress and logs).
    """

    def __init__(self, predictor: Any, frames_dir: str, preview_dir: str, style: Style, *,
                 spill_features: bool = False, out: TextIO = sys.stdout, err: TextIO = sys.stderr,
                 soft_edges: bool = False, edge_band_px: Optional[float] = None):
        self.predictor = predictor
        self.frames_dir = frames_dir
        self.preview_dir = Path(preview_dir)
        self.style = style
        self.spill_features = spill_features
        self.soft_edges = soft_edges
        self.edge_band_px = edge_band_px
        self.prompts: dict[int, FramePrompts] = {}
        self.last_preview = 0  # frame of the latest preview (what a garbled preview line is answered with)
        self._out, self._err = out, err
        self._last_said = float("-inf")
        self._session: Any = None
        self._spill: Optional[tempfile.TemporaryDirectory] = None

    # ---------------------------------------------------------------- protocol output

    def say(self, message: str) -> None:
        """One protocol message on stdout: a single flushed write, ``MESSAGE_GAP_S`` after the
        previous one, so that no Kdenlive reads two messages as one."""
        wait = self._last_said + MESSAGE_GAP_S - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        self._out.write(message + "\n")
        self._out.flush()
        self._last_said = time.monotonic()

    def info(self, text: str) -> None:
        """``INFO:<text>``, which Kdenlive shows in its mask panel. Kdenlive keeps the text up to
        its first ':' and collapses whitespace, so neither survives in the text."""
        self.say("INFO:" + " ".join(text.replace(":", " -").split()))

    def log(self, line: str) -> None:
        """A line on stderr: Kdenlive shows it if the process fails."""
        print(line, file=self._err, flush=True)

    # ---------------------------------------------------------------- session

    def _matte_options(self) -> Any:
        from sam2_web.matting.band import mask_resolution_of
        from sam2_web.matting import MatteOptions

        return MatteOptions(band_px=self.edge_band_px, mask_resolution=mask_resolution_of(self.predictor))

    def session(self) -> Any:
        """The tracking session on the frames folder, opened on first use.

        Raises:
            VideoReadError: the folder is missing or holds no frames.
        """
        if self._session is None:
            opts: dict[str, Any] = {}
            if self.spill_features:
                self._spill = tempfile.TemporaryDirectory(prefix="sam2web-kdenlive-")
                opts["feature_cache_dir"] = self._spill.name
            self._session = self.predictor.open_session(self.frames_dir, **opts)
        return self._session

    def close(self) -> None:
        """Free the session and its temporary files."""
        if self._session is not None:
            self._session.close()
            self._session = None
        if self._spill is not None:
            self._spill.cleanup()
            self._spill = None

    def _apply(self, session: Any, frame: int, prompt: FramePrompts) -> Any:
        return session.add_prompt(
            frame, OBJ_ID,
            points=np.asarray(prompt.points, np.float32) if prompt.points else None,
            labels=np.asarray(prompt.labels, np.int32) if prompt.points else None,
            box=np.asarray(prompt.box, np.float32) if prompt.box is not None else None,
        )

    # ---------------------------------------------------------------- commands

    def handle(self, command: Command) -> bool:
        """Run one command; False when the process should exit."""
        if isinstance(command, Quit):
            return False
        if isinstance(command, Edit):
            self.style = command.style
        elif isinstance(command, Preview):
            self.preview(command)
        elif isinstance(command, Render):
            self.render(command)
            return False  # as Kdenlive's own script: one render per process
        return True

    def preview(self, command: Preview) -> None:
        """Update the prompts, segment the preview frame, write ``preview-<frame>.png``, say ``preview ok``.

        The line carries the whole state of the preview frame: no clicks and no box for it means
        the user removed them.

        Raises:
            PromptError: a frame of the line is outside the zone (nothing is changed).
        """
        session = self.session()
        total = session.info.num_frames
        outside = [f for f in (command.frame, *command.prompts) if f >= total]
        if outside:
            raise PromptError(f"frame {outside[0]} is outside the zone, which has {total} frames (0..{total - 1})")
        if command.style is not None:
            self.style = command.style
        for frame, prompt in command.prompts.items():
            self.prompts[frame] = prompt
        if command.frame not in command.prompts:
            self.prompts.pop(command.frame, None)
        frame = self.last_preview = command.frame
        mask = np.zeros((session.info.height, session.info.width), dtype=bool)
        try:
            prompt = self.prompts.get(frame)
            if prompt is not None and not prompt.empty():
                result = self._apply(session, frame, prompt)
                mask = result.mask(OBJ_ID)
            elif OBJ_ID in session.object_ids:
                session.clear_frame(frame, OBJ_ID)
        except (PromptError, IndexError) as exc:
            # Kdenlive waits for "preview ok" to leave its busy state: answer with an empty preview.
            self.prompts.pop(frame, None)
            self.info(str(exc))
        self.preview_dir.mkdir(parents=True, exist_ok=True)
        alpha = None
        if self.soft_edges:
            from sam2_web.matting import alpha_matte

            alpha = alpha_matte(session.frame(frame), mask, self._matte_options())
        write_png(self.preview_dir / f"preview-{frame:05d}.png",
                  draw_mask(mask, self.style, OVERLAY_MODES[self.style.overlay_mode], alpha))
        self.say(f"preview ok {frame}")

    def unreadable_preview(self, line: str, problem: Sam2WebError) -> None:
        """Answer a ``preview=`` line that cannot be read or used: the reason as ``INFO:``, then
        ``preview ok`` for its frame (Kdenlive stays busy until it gets one; the last preview's
        frame when the line names none inside the zone), showing the frame's last preview or an
        empty one."""
        self.info(str(problem))
        session = self.session()
        found = re.search(r"(?:^|\s|^preview=)(?:-F|--preview_frame)[ =](\d{1,9})(?:\s|$)", line)
        frame = int(found.group(1)) if found else self.last_preview
        if frame >= session.info.num_frames:
            frame = self.last_preview
        picture = self.preview_dir / f"preview-{frame:05d}.png"
        if not picture.exists():
            self.preview_dir.mkdir(parents=True, exist_ok=True)
            write_png(picture, np.zeros((session.info.height, session.info.width, 4), dtype=np.uint8))
        self.say(f"preview ok {frame}")

    def render(self, command: Render) -> None:
        """Track the zone from every keyframe and write ``<folder>/<frame:05d>.png`` as frames finish,
        with progress on stderr; say ``mask ok`` when all are written.

        The keyframes are Kdenlive's: the frames its launch line and its ``preview=`` lines named
        (each preview line carries the whole state of its frame). ``rerender=`` (a correction of a
        saved mask, in a process Kdenlive started for it) is the same: the launch line holds the
        mask data Kdenlive restored, the previews the corrections; the tracking state the
        previews built is dropped and the zone is tracked again from those keyframes alone.

        Raises:
            PromptError: there is no prompt at all.
        """
        prompted = {f: p for f, p in sorted(self.prompts.items()) if not p.empty()}
        if not prompted:
            raise PromptError("no clicks or box on any frame; add include points on the first frame, then generate")
        folder = Path(command.folder)
        folder.mkdir(parents=True, exist_ok=True)
        session = self.session()
        session.reset()  # the prompts below are the whole truth (a rerender follows edits)
        for frame, prompt in prompted.items():
            self._apply(session, frame, prompt)
        total = session.info.num_frames
        self.info("Propagating in video")
        written: set[int] = set()
        last_percent = [-1]

        def report(done: int, of: int) -> None:
            # Kdenlive reads the number between the last space and the first "%|" of a stderr read.
            percent = int(100 * done / max(1, of))
            if percent != last_percent[0]:
                last_percent[0] = percent
                self.log(f"Propagating {percent}%|")

        stream = None
        if self.soft_edges:
            from sam2_web.matting import MatteStream

            stream = MatteStream(self._matte_options())
        for result in session.propagate(direction="both", progress=report):
            mask = result.mask(OBJ_ID)
            alpha = stream.update(session.frame(result.frame_idx), mask) if stream is not None else None
            write_png(folder / f"{result.frame_idx:05d}.png", draw_mask(mask, self.style, alpha=alpha))
            written.add(result.frame_idx)
        # Kdenlive encodes %05d.png from 0: every frame must exist, untracked ones transparent.
        empty = np.zeros((session.info.height, session.info.width, 4), dtype=np.uint8)
        for frame in range(total):
            if frame not in written:
                write_png(folder / f"{frame:05d}.png", empty)
        self.say("mask ok")


# --------------------------------------------------------------------------- entry point


def read_lines(stream: TextIO, limit: int) -> Iterator[tuple[str, bool]]:
    """The lines of ``stream`` as ``(line, whole)``; a line longer than ``limit`` characters comes
    as its first ``limit`` characters with ``whole=False``, the rest read in pieces and dropped
    (memory stays bounded however long a line is)."""
    while True:
        line = stream.readline(limit + 1)
        if not line:
            return
        if len(line) <= limit or line.endswith("\n"):
            yield line, True
            continue
        while True:
            rest = stream.readline(65536)
            if not rest or rest.endswith("\n"):
                break
        yield line[:limit], False


def max_points_of(overrides: list[str]) -> int:
    """``limits.max_points`` of the app config composed with ``overrides`` (0: no limit)."""
    from sam2_web.models import compose_app_config

    limits = compose_app_config(overrides).get("limits") or {}
    return max(0, int(limits.get("max_points", 0) or 0))


def main(argv: Optional[list[str]] = None, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout,
         stderr: TextIO = sys.stderr, load: Optional[Callable[..., Any]] = None) -> int:
    """Run the backend as Kdenlive does: flags on the command line, commands on stdin.

    Returns the process exit code: 0 after ``mask ok``, ``q``/``finish`` or the end of stdin;
    1 after an error (its message is on stderr, which Kdenlive shows). A line that cannot be
    used (malformed, over ``MAX_LINE_CHARS``, more clicks on a frame than ``limits.max_points``,
    frames outside the zone) is answered with ``INFO:`` (and ``preview ok`` for a preview) and
    the session goes on.
    """
    args = argument_parser().parse_args(argv)

    def fail(exc: BaseException) -> int:
        print(f"sam2_web: {exc}", file=stderr, flush=True)
        return 1

    backend = None
    # stdout carries the protocol only: whatever a library prints goes to stderr instead.
    real_stdout, sys.stdout = sys.stdout, stderr
    try:
        style = style_from(args, Style())
        initial = prompts_from(args)
        name, checkpoint = resolve_model(args.model, args.config)
        overrides = [f"model={name}"] + ([f"device={args.device}"] if args.device else []) + list(args.overrides)
        max_points = max_points_of(overrides)
        if 0 < max_points < max((len(p.points) for p in initial.values()), default=0):
            raise LimitExceededError(f"more than {max_points} clicks on a frame of the launch line (limits.max_points)")
        if load is None:
            from sam2_web.models import load_app_predictor as load
        predictor = load(overrides, checkpoint=checkpoint)
        # Kdenlive's --offload asks to keep video frames in CPU memory rather than on the GPU; the
        # engine always does (it decodes frames on demand on the CPU), so it needs no switch.
        backend = ObjectMaskBackend(predictor, args.inputFolder, args.output, style,
                                    spill_features=args.spill_features, out=stdout, err=stderr,
                                    soft_edges=args.soft_edges, edge_band_px=args.edge_band)
        backend.prompts.update(initial)
        backend.last_preview = max(0, int(args.preview_frame))
        for line, whole in read_lines(stdin, MAX_LINE_CHARS):
            try:  # one line that cannot be used must not end the user's session
                if not whole:
                    raise LimitExceededError(f"a line of more than {MAX_LINE_CHARS} characters was ignored")
                command = parse_command(line, backend.style, max_points)
                if isinstance(command, (Preview, Edit)):
                    backend.handle(command)
                    continue
            except (PromptError, LimitExceededError) as exc:
                if line.lstrip().startswith("preview="):
                    backend.unreadable_preview(line.strip(), exc)
                else:
                    backend.info(str(exc))
                continue
            # A render that fails ends the process with its message, as Kdenlive's own script does.
            if command is not None and not backend.handle(command):
                break
        return 0
    except (Sam2WebError, OSError, ValueError) as exc:
        return fail(exc)
    finally:
        sys.stdout = real_stdout
        if backend is not None:
            backend.close()
