"""ComfyUI nodes over the sam2_web engine: load a model, segment an IMAGE batch, export mattes.

ComfyUI's conventions, which these classes follow:

* ``INPUT_TYPES`` (a classmethod) returns ``{"required": {...}, "optional": {...}}`` where each
  input is ``(TYPE, {options})`` or ``([choices],)`` for a dropdown;
* ``RETURN_TYPES`` / ``RETURN_NAMES`` name the outputs, ``FUNCTION`` the method ComfyUI calls
  with the inputs as keyword arguments, ``CATEGORY`` the menu;
* IMAGE is a ``[B, H, W, C]`` float tensor in 0..1, MASK a ``[B, H, W]`` float tensor in 0..1.

The nodes only translate: tensors to/from uint8 frames and bool masks, text to prompts. The
tracking is the engine's (``predictor.open_session`` over an in-memory frame source), the
prompts are parsed by ``sam2_web.jobs.prompts`` and files are written by ``sam2_web.export.formats``.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np
import torch

from sam2_web.errors import CancelledError, ExportError, PromptError, UnknownObjectError
from sam2_web.export.formats import FORMATS, ExportOptions, export, overlay

from sam2_web.jobs.job import DIRECTIONS
from sam2_web.jobs.prompts import ObjectPrompts, check_prompts, parse_prompts, prompts_from_json
from sam2_web.jobs.runner import add_prompts

CATEGORY = "sam2_web"
MODEL_TYPE = "SAM2WEB_MODEL"
DEVICES = ["auto", "cpu", "cuda", "mps"]
ALL_OBJECTS = -1


@dataclass
class LoadedModel:
    """What flows along a ``SAM2WEB_MODEL`` wire: the video predictor, the name it was loaded by and
    the find settings (``find.*`` / ``limits.max_objects``) of the same app config (None: the defaults)."""

    predictor: Any
    name: str
    find: Any = None


def model_names() -> list[str]:
    """Names for the model dropdown, from the registry (``configs/model/*.yaml``)."""
    from sam2_web.registry import list_models

    return [spec.name for spec in list_models()]


# --------------------------------------------------------------------------- tensors <-> arrays


def images_to_frames(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE ``[B, H, W, C]`` float 0..1 → ``(B, H, W, 3)`` uint8 RGB (alpha dropped).

    Raises:
        PromptError: the input is not a 4-D image batch with 3 or 4 channels.
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[-1] not in (3, 4):
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise PromptError(f"images must be a ComfyUI IMAGE batch [B, H, W, 3], got {shape}")
    rgb = images[..., :3].detach().to("cpu", torch.float32).clamp(0, 1)
    # Round, not truncate: a frame that went uint8 → float → uint8 comes back unchanged.
    return (rgb * 255.0).round().to(torch.uint8).numpy()


def masks_to_bool(masks: torch.Tensor) -> np.ndarray:
    """ComfyUI MASK ``[B, H, W]`` (or a single ``[H, W]``) float → ``(B, H, W)`` bool (> 0.5)."""
    if not isinstance(masks, torch.Tensor) or masks.ndim not in (2, 3):
        shape = tuple(masks.shape) if isinstance(masks, torch.Tensor) else type(masks).__name__
        raise ExportError(f"masks must be a ComfyUI MASK batch [B, H, W], got {shape}")
    if masks.ndim == 2:
        masks = masks[None]
    return (masks.detach().to("cpu", torch.float32) > 0.5).numpy()


# --------------------------------------------------------------------------- prompts from text


def _numbers(text: str, where: str) -> list[float]:
    parts = [p for p in text.replace(";", ",").replace(" ", ",").split(",") if p]
    try:
        return [float(p) for p in parts]
    except ValueError:
        raise PromptError(f"{where}: {text!r} must be numbers separated by commas, e.g. '120,80; 200,95'") from None


def simple_prompts(points: str, labels: str, box: str, frame: int, obj_id: int) -> Optional[ObjectPrompts]:
    """One object's prompt from the node's plain text fields, or None when they are all empty.

    Args:
        points: ``"x,y; x,y"`` pixel clicks; labels: ``"1,0"`` (default: all positive);
        box: ``"x0,y0,x1,y1"``; frame: the frame they are on; obj_id: the object's number.
    Raises:
        PromptError: odd coordinate count, negative values, labels not 0/1 or not one per point.
    """
    points, labels, box = (points or "").strip(), (labels or "").strip(), (box or "").strip()
    if not points and not box:
        if labels:
            raise PromptError("labels were given without points; add points like '120,80; 200,95'")
        return None
    coords = _numbers(points, "points")
    if len(coords) % 2:
        raise PromptError(f"points: {points!r} has an odd count of numbers; write x,y pairs like '120,80; 200,95'")
    pairs = [[coords[k], coords[k + 1]] for k in range(0, len(coords), 2)]
    entry: dict[str, Any] = {"frame": int(frame), "object": max(0, int(obj_id))}
    if pairs:
        entry["points"] = pairs
        entry["labels"] = [int(v) for v in _numbers(labels, "labels")] if labels else [1] * len(pairs)
    if box:
        entry["box"] = _numbers(box, "box")
    # Reuse the prompts JSON validator so both inputs fail the same way on the same mistakes.
    return parse_prompts([entry]).objects[0]


def read_finds(prompts: str, auto_frame: int, min_area: int, text: str, text_frame: int) -> tuple[Any, Any]:
    """``(AutoFind | None, TextFind | None)``: the prompts JSON's ``auto`` / ``text`` and the node's
    fields (``auto_frame`` >= 0 turns segment-everything on; a non-empty ``text`` asks the detector).

    Raises:
        PromptError: invalid JSON, or an ``auto``/``text`` entry that is not valid.
    """
    from sam2_web.find.spec import AutoFind, TextFind, check_query

    parsed = prompts_from_json(prompts, source="prompts") if (prompts or "").strip() else None
    auto = parsed.auto if parsed is not None else None
    found_text = parsed.text if parsed is not None else None
    if auto_frame is not None and auto_frame >= 0:
        auto = AutoFind(frame=int(auto_frame), min_area=max(0, int(min_area or 0)))
    if (text or "").strip():
        check_query(text, "text")
        found_text = TextFind(query=text, frame=max(0, int(text_frame or 0)))
    return auto, found_text


def read_prompts(prompts: str, points: str, labels: str, box: str, frame: int, obj_id: int,
                 width: int, height: int, num_frames: int, allow_empty: bool = False) -> tuple[ObjectPrompts, ...]:
    """All objects from the JSON text (our prompts schema) plus the plain fields, checked against the clip.

    ``allow_empty``: no object is fine (objects will be found with ``auto`` / ``text``).

    Raises:
        PromptError: invalid JSON or prompts, nothing given at all, or prompts outside the clip.
    """
    objects: list[ObjectPrompts] = []
    text = (prompts or "").strip()
    if text:
        parsed = prompts_from_json(text, source="prompts")
        for obj in parsed.objects:
            if parsed.normalized:  # fractions of the frame -> pixels, as the engine takes them
                obj = replace(obj, frames=tuple(p.scaled(width, height) for p in obj.frames))
            objects.append(obj)
    extra = simple_prompts(points, labels, box, frame, obj_id if obj_id >= 0 else 1)
    if extra is not None:
        same = [o for o in objects if o.obj_id == extra.obj_id]
        if same:
            raise PromptError(f"object {extra.obj_id} is in the prompts JSON and in the points/box fields; use one")
        objects.append(extra)
    if not objects and not allow_empty:
        raise PromptError("no prompts: give points (e.g. '120,80') or a box, a prompts JSON, or find the objects "
                          "with auto_frame / text")
    check_prompts(tuple(objects), num_frames=num_frames, width=width, height=height)
    return tuple(objects)


# --------------------------------------------------------------------------- ComfyUI host hooks


def _progress_bar(total: int) -> Callable[[int, int], None]:
    """ComfyUI's progress bar when running inside ComfyUI, else a no-op."""
    try:
        from comfy.utils import ProgressBar  # only inside ComfyUI
    except ImportError:
        return lambda done, total: None
    bar = ProgressBar(total)
    return lambda done, total: bar.update_absolute(done, total)


def _interrupted() -> bool:
    """True once the user pressed Cancel in ComfyUI (never outside it)."""
    try:
        from comfy.model_management import processing_interrupted
    except ImportError:
        return False
    return bool(processing_interrupted())


def _raise_comfy_interrupt() -> None:
    """Inside ComfyUI, raise its own interrupt exception, which it shows as "stopped", not failed."""
    try:
        from comfy.model_management import throw_exception_if_processing_interrupted
    except ImportError:
        return
    throw_exception_if_processing_interrupted()


def _output_dir() -> Path:
    """ComfyUI's output folder inside ComfyUI, else the working directory."""
    try:
        import folder_paths  # ComfyUI's module
    except ImportError:
        return Path.cwd()
    return Path(folder_paths.get_output_directory())


def export_target(folder: str, filename_prefix: str, fmt: str) -> tuple[Path, str]:
    """Where the export node writes: ``(<folder>/<prefix>_<format>, <prefix>)``, as the CLI names
    ``<clip>_<format>``; frames of image sequences are ``<prefix>_00000.png ...``.

    A relative ``folder`` goes under ComfyUI's output folder; ``filename_prefix`` may hold
    subfolders (``shots/ball``), as ComfyUI's own save nodes allow.

    Raises:
        ExportError: the prefix is absolute or climbs out of the folder (``..``).
    """
    base = Path(folder or ".").expanduser()
    root = base if base.is_absolute() else _output_dir() / base
    prefix = Path(filename_prefix.strip() or "matte")
    if prefix.is_absolute() or ".." in prefix.parts:
        raise ExportError(f"filename_prefix {filename_prefix!r} must be a name inside the folder, like 'shots/ball'")
    return root / prefix.parent / f"{prefix.name}_{fmt}", prefix.name


# --------------------------------------------------------------------------- nodes


class SAM2WebModelLoader:
    """Load a SAM 2 / 2.1 video model by name (downloaded once from the Hugging Face Hub)."""

    @classmethod
    def INPUT_TYPES(cls):
        from sam2_web.models import default_model

        names = model_names()
        default = default_model() if default_model() in names else names[0]
        return {
            "required": {
                "model": (names, {"default": default}),
                "device": (DEVICES, {"default": "auto"}),
            },
            "optional": {
                "checkpoint": ("STRING", {"default": "", "tooltip": "a local .pt instead of the Hub download"}),
                "overrides": ("STRING", {"default": "", "tooltip": "hydra overrides of configs/app.yaml, "
                                                                   "e.g. engine.read_ahead=8 ++model.image_size=512"}),
            },
        }

    RETURN_TYPES = (MODEL_TYPE,)
    RETURN_NAMES = ("sam2_model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY
    DESCRIPTION = "Load a SAM 2 video model (cached in memory; fetched from the Hub the first time)."

    def load(self, model: str, device: str = "auto", checkpoint: str = "", overrides: str = ""):
        """Return ``(LoadedModel,)``: the model built as the CLI and the web app build it
        (``configs/app.yaml`` with this model, device and overrides, engine options included).

        Raises:
            UnknownModelError, HubUnavailableError, CheckpointError; hydra's errors for a bad override.
        """
        from sam2_web.models import load_app_predictor
        from sam2_web.registry import get_model

        from sam2_web.find.run import find_settings

        settings = [f"model={get_model(model).name}", f"device={device}", *shlex.split(overrides or "")]
        predictor = load_app_predictor(settings, checkpoint=checkpoint.strip() or None)
        return (LoadedModel(predictor, model, find_settings(settings)),)


def soft_masks(frames: np.ndarray, masks: np.ndarray, predictor: Any, edge_band_px: float = 0.0) -> torch.Tensor:
    """(B, H, W) bool masks of (B, H, W, 3) uint8 frames → a float MASK of soft alphas, frame after frame."""
    from sam2_web.matting.band import mask_resolution_of
    from sam2_web.matting import MatteStream

    stream = MatteStream(mask_resolution=mask_resolution_of(predictor), band_px=float(edge_band_px) or None)
    return torch.from_numpy(np.stack([stream.update(f, m) for f, m in zip(frames, masks)]))


class SAM2WebVideoSegment:
    """Track objects through an IMAGE batch (the frames of a clip) from clicks, boxes or a prompts JSON."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "sam2_model": (MODEL_TYPE,),
                "images": ("IMAGE",),
                "prompts": ("STRING", {"multiline": True, "default": "",
                                       "tooltip": "prompts JSON (see plugins/README.md); "
                                                  "may stay empty when points/box are set"}),
                "direction": (list(DIRECTIONS), {"default": "both"}),
            },
            "optional": {
                "points": ("STRING", {"default": "", "tooltip": "clicks in pixels: x,y; x,y"}),
                "labels": ("STRING", {"default": "", "tooltip": "1 = object, 0 = background, one per point"}),
                "box": ("STRING", {"default": "", "tooltip": "x0,y0,x1,y1 in pixels"}),
                "frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "frame of points/box"}),
                "object_id": ("INT", {"default": ALL_OBJECTS, "min": ALL_OBJECTS, "max": 1_000_000,
                                      "tooltip": "object to output; -1 = all objects merged"}),
                "soft_edges": ("BOOLEAN", {"default": False,
                                           "tooltip": "a float MASK with soft alpha (hair, motion blur) solved "
                                                      "around the tracked edge from the images' colours"}),
                "edge_band_px": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                           "tooltip": "half-width of the soft-edge band; 0 = from the model"}),
                "auto_frame": ("INT", {"default": -1, "min": -1, "max": 1_000_000,
                                       "tooltip": "track every object found on this frame (-1 = off)"}),
                "min_area": ("INT", {"default": 0, "min": 0, "max": 100_000_000,
                                     "tooltip": "with auto_frame: leave out objects of fewer pixels"}),
                "text": ("STRING", {"default": "", "tooltip": "track what these phrases name, e.g. 'person, dog' "
                                                              "(needs pip install 'sam2_web[text]')"}),
                "text_frame": ("INT", {"default": 0, "min": 0, "max": 1_000_000, "tooltip": "frame the text searches"}),
            },
        }

    RETURN_TYPES = ("MASK", "IMAGE")
    RETURN_NAMES = ("masks", "preview")
    FUNCTION = "segment"
    CATEGORY = CATEGORY
    DESCRIPTION = "Segment and track objects through a video given as an IMAGE batch; outputs one mask per frame."

    def segment(self, sam2_model: LoadedModel, images: torch.Tensor, prompts: str = "", direction: str = "both",
                points: str = "", labels: str = "", box: str = "", frame: int = 0, object_id: int = ALL_OBJECTS,
                soft_edges: bool = False, edge_band_px: float = 0.0,
                auto_frame: int = -1, min_area: int = 0, text: str = "", text_frame: int = 0):
        """Return ``(masks [B, H, W] float 0/1, preview [B, H, W, 3])``; with ``soft_edges`` the masks
        are soft alphas in 0..1 (``sam2_web.matting.MatteStream`` through the frames in order).

        Objects found with ``auto_frame`` / ``text`` (or the prompts JSON's ``auto`` / ``text``) are
        numbered after the prompted ones ("object N", or the phrase).

        Raises:
            PromptError: bad prompts, a search frame outside the batch, or a search that found
            nothing; UnknownObjectError: ``object_id`` has no prompt; MissingExtraError: ``text``
            without ``pip install 'sam2_web[text]'``; ComfyUI's InterruptProcessingException
            (CancelledError outside ComfyUI): the user cancelled the queue.
        """
        from sam2_web.find.run import find_objects
        from sam2_web.find.spec import check_frame

        frames = images_to_frames(images)
        num, height, width = frames.shape[:3]
        auto, found_text = read_finds(prompts, auto_frame, min_area, text, text_frame)
        searches = [(what, f) for what, f in (("auto_frame", auto), ("text_frame", found_text)) if f is not None]
        objects = read_prompts(prompts, points, labels, box, frame, object_id, width, height, num,
                               allow_empty=bool(searches))
        for what, search in searches:
            check_frame(search.frame, num, what)
        found = ()
        if searches:
            found = find_objects(sam2_model.predictor, lambda i: frames[i], auto=auto, text=found_text,
                                 existing_ids=[o.obj_id for o in objects], settings=getattr(sam2_model, "find", None),
                                 cancel=_interrupted).objects
        ids = [o.obj_id for o in objects] + [o.obj_id for o in found]
        if object_id != ALL_OBJECTS and object_id not in ids:
            raise UnknownObjectError(f"object_id {object_id} has no prompt; the prompted objects are {ids} (-1 = all)")
        out = torch.zeros((num, height, width), dtype=torch.float32)
        preview = frames.copy()
        session = sam2_model.predictor.open_session(frames)
        try:
            add_prompts(session, objects)
            for obj in found:
                obj.add_to(session)
            for result in session.propagate(direction=direction, progress=_progress_bar(num), cancel=_interrupted):
                picked = result.masks if object_id == ALL_OBJECTS else result.masks[[result.obj_ids.index(object_id)]]
                out[result.frame_idx] = torch.from_numpy(picked.any(axis=0))
                preview[result.frame_idx] = overlay(frames[result.frame_idx], result.masks, result.obj_ids)
        except CancelledError:
            _raise_comfy_interrupt()
            raise
        finally:
            session.close()
        if soft_edges:
            out = soft_masks(frames, out.numpy() > 0.5, sam2_model.predictor, edge_band_px)
        return (out, torch.from_numpy(preview).float() / 255.0)


class SAM2WebMatteExport:
    """Write a MASK batch as mattes editors read (PNG sequence, ProRes 4444, EXR, ...)."""

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "masks": ("MASK",),
                "format": (list(FORMATS), {"default": "png"}),
                "folder": ("STRING", {"default": "sam2_web",
                                      "tooltip": "relative paths go under ComfyUI's output folder"}),
                "filename_prefix": ("STRING", {"default": "matte"}),
                "fps": ("FLOAT", {"default": 24.0, "min": 0.001, "max": 1000.0, "step": 0.001}),
            },
            "optional": {
                "images": ("IMAGE", {"tooltip": "the source frames; needed by RGBA, ProRes, WebM, FFV1 and previews"}),
                "feather_px": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 100.0, "step": 0.5}),
                "grow_px": ("INT", {"default": 0, "min": -100, "max": 100}),
                "invert": ("BOOLEAN", {"default": False}),
                "bit_depth": (["8", "16"], {"default": "8"}),
                "start_frame": ("INT", {"default": 0, "min": 0, "max": 10_000_000,
                                        "tooltip": "number of the first frame in file names"}),
                "soft_edges": ("BOOLEAN", {"default": False,
                                           "tooltip": "solve soft alpha around the masks' edges from the images "
                                                      "(needs images); index_png and coco_rle stay binary"}),
                "edge_band_px": ("FLOAT", {"default": 0.0, "min": 0.0, "max": 256.0, "step": 1.0,
                                           "tooltip": "half-width of the soft-edge band; 0 = automatic"}),
            },
        }

    RETURN_TYPES = ("STRING",)
    RETURN_NAMES = ("path",)
    FUNCTION = "export"
    OUTPUT_NODE = True
    CATEGORY = CATEGORY
    DESCRIPTION = "Export masks with sam2_web's writers; returns the written file or folder."

    def export(self, masks: torch.Tensor, format: str, folder: str, filename_prefix: str, fps: float,
               images: Optional[torch.Tensor] = None, feather_px: float = 0.0, grow_px: int = 0,
               invert: bool = False, bit_depth: str = "8", start_frame: int = 0, soft_edges: bool = False,
               edge_band_px: float = 0.0):
        """Write the masks; return ``{"ui": ..., "result": (path,)}``.

        Raises:
            ExportError: unknown format, frames needed but missing or of another size/count,
                an unwritable folder, an encoder failure (nothing is left at the target).
        """
        stack = masks_to_bool(masks)
        num, height, width = stack.shape
        frames = None
        if images is not None:
            frames = images_to_frames(images)
            if frames.shape[:3] != stack.shape:
                raise ExportError(
                    f"images are {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} but masks are "
                    f"{num} of {width}x{height}; connect the frames the masks were made from"
                )
        target, stem = export_target(folder, filename_prefix, format)
        # The MASK is one matte: formats that keep objects apart name its folder/channel "matte".
        options = ExportOptions(feather_px=float(feather_px), grow_px=int(grow_px), invert=bool(invert),
                                bit_depth=int(bit_depth), names={1: "matte"}, name=stem, soft_edges=bool(soft_edges),
                                edge_band_px=float(edge_band_px) or None)
        written = export(
            format, target, stack[:, None], num_frames=num, fps=fps, width=width, height=height, obj_ids=[1],
            start_frame=int(start_frame), frames=(lambda i: frames[i]) if frames is not None else None,
            options=options,
        )
        return {"ui": {"text": [str(written)]}, "result": (str(written),)}


NODE_CLASS_MAPPINGS = {
    "SAM2WebModelLoader": SAM2WebModelLoader,
    "SAM2WebVideoSegment": SAM2WebVideoSegment,
    "SAM2WebMatteExport": SAM2WebMatteExport,
}

NODE_DISPLAY_NAME_MAPPINGS = {
    "SAM2WebModelLoader": "SAM 2 Model Loader (sam2_web)",
    "SAM2WebVideoSegment": "SAM 2 Video Segment (sam2_web)",
    "SAM2WebMatteExport": "SAM 2 Matte Export (sam2_web)",
}
