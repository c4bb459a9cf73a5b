"""Text prompts: an open-vocabulary detector turns phrases ("person", "dog") into boxes on a picture.

The detector is OWLv2 (``google/owlv2-base-patch16-ensemble``, Apache-2.0) run through
``transformers``. It was picked over Grounding DINO (``IDEA-Research/grounding-dino-tiny``) by
measured CPU speed: at their published sizes on a 1280x720 frame it took half the time
(``python -m bench.text_detector``; figures in the README). Any OWLv2 checkpoint on the Hub, or a
local folder of one, can be set as ``find.text.detector``.

``transformers`` is an optional extra (``pip install 'sam2_web[text]'``); without it
:func:`load_detector` raises :class:`~sam2_web.errors.MissingExtraError` saying so, and
:func:`text_available` lets a user interface hide the feature.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from typing import Any, Callable, Optional, Sequence

import numpy as np

from sam2_web.errors import CheckpointError, MissingExtraError, PromptError
from sam2_web.find.objects import Detection

DEFAULT_DETECTOR = "google/owlv2-base-patch16-ensemble"
ARCHITECTURES = ("owlv2",)
INSTALL_HINT = "pip install 'sam2_web[text]'"
# What from_pretrained reads; the Hub repositories also carry other frameworks' weights.
_FILES = ["*.json", "*.txt", "*.safetensors"]
# Overlapping boxes of one phrase above this IoU are one object (OWLv2 answers per image patch,
# so an object is usually covered by several boxes; the library's post-processing keeps them all).
NMS_IOU = 0.3

_loaded: dict[tuple, "TextDetector"] = {}
_lock = threading.Lock()


def text_available() -> bool:
    """Whether the text-prompt extra (``transformers``) is installed."""
    return importlib.util.find_spec("transformers") is not None


def require_transformers() -> None:
    """Raise :class:`MissingExtraError` (with the pip command) unless ``transformers`` is installed."""
    if not text_available():
        raise MissingExtraError(f"text prompts need the optional 'text' extra (transformers): {INSTALL_HINT}")


class TextDetector:
    """A loaded OWLv2 detector: :meth:`detect` gives the boxes of phrases on a picture."""

    def __init__(self, model: Any, processor: Any, name: str):
        """
        Args:
            model: a ``transformers`` ``Owlv2ForObjectDetection`` in eval mode.
            processor: its ``Owlv2Processor`` (image processor and tokenizer).
            name: where it came from (Hub id or folder), for messages.
        """
        self.model = model
        self.processor = processor
        self.name = name

    @property
    def default_threshold(self) -> float:
        """The box-score threshold the detector's own post-processing uses by default."""
        import inspect

        fn = self.processor.post_process_grounded_object_detection
        return float(inspect.signature(fn).parameters["threshold"].default)

    def detect(self, image: np.ndarray, phrases: Sequence[str], *,
               box_threshold: Optional[float] = None) -> list[Detection]:
        """Boxes of ``phrases`` in ``image``, each labelled with the phrase it scores highest for.

        Args:
            image: (H, W, 3) uint8 RGB.
            phrases: what to look for, e.g. ``["person", "dog"]``.
            box_threshold: keep boxes scoring above this (None: :attr:`default_threshold`).
        Returns:
            Detections with boxes inside the picture, most confident first within a phrase;
            overlapping boxes of one phrase merged (:data:`NMS_IOU`).
        Raises:
            PromptError: no phrase, or not an (H, W, 3) uint8 picture.
        """
        import torch
        from PIL import Image

        from sam2_web.amg import nms

        if not phrases:
            raise PromptError('no phrase to look for; give e.g. "person, dog"')
        if not (isinstance(image, np.ndarray) and image.ndim == 3 and image.shape[2] == 3 and image.dtype == np.uint8):
            raise PromptError("the picture must be an (H, W, 3) uint8 RGB array")
        height, width = image.shape[:2]
        inputs = self.processor(text=[list(phrases)], images=Image.fromarray(image), return_tensors="pt")
        device = next(self.model.parameters()).device
        inputs = {k: v.to(device) for k, v in inputs.items()}
        with torch.no_grad():
            outputs = self.model(**inputs)
        threshold = self.default_threshold if box_threshold is None else float(box_threshold)
        # The processor pads the picture to a square at the bottom/right: boxes are scaled back
        # against that square and then clipped to the picture.
        side = max(height, width)
        result = self.processor.post_process_grounded_object_detection(
            outputs, threshold=threshold, target_sizes=[(side, side)])[0]
        boxes = result["boxes"].detach().float().cpu()
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, width)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, height)
        scores, labels = result["scores"].detach().float().cpu(), result["labels"].cpu()
        found = []
        for k, phrase in enumerate(phrases):
            rows = torch.nonzero((labels == k) & (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1))
            rows = rows.flatten()
            for i in rows[nms(boxes[rows], scores[rows], NMS_IOU)]:
                found.append(Detection(phrase, tuple(float(v) for v in boxes[i]), float(scores[i])))
        return found


@contextlib.contextmanager
def _no_loading_bars():
    """Hide transformers' weight-loading bars (they would cut through ours) for one load only.

    transformers' switch is global to the process and also turns off huggingface_hub's bars, which
    our own checkpoint downloads draw: a process-wide switch left off hid them after a text search.
    Left alone when bars are off already (HF_HUB_DISABLE_PROGRESS_BARS, or the user's choice).
    """
    from huggingface_hub.utils import are_progress_bars_disabled
    from transformers.utils import logging as transformers_logging

    if are_progress_bars_disabled() or not transformers_logging.is_progress_bar_enabled():
        yield
        return
    transformers_logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers_logging.enable_progress_bar()


def load_detector(detector: str = DEFAULT_DETECTOR, *, revision: Optional[str] = None,
                  cache_dir: Optional[str] = None, device: Any = None,
                  progress: Optional[Callable[[int, int], None]] = None) -> TextDetector:
    """The detector ``detector`` names (a Hub id or a local folder), downloaded once through
    ``sam2_web.hub`` and kept in memory for the next call.

    Args:
        detector: e.g. ``google/owlv2-base-patch16-ensemble``, or a folder holding its files.
        revision, cache_dir: Hub revision and cache (None: main, huggingface_hub's cache).
        device: where it runs (None: cuda > mps > cpu, as the models pick).
        progress: download progress callback ``(done, total)``.
    Raises:
        MissingExtraError: ``transformers`` is not installed.
        HubUnavailableError: offline or unreachable and not cached.
        CheckpointError: the repository does not exist, or is not an OWLv2 model.
    """
    require_transformers()
    from sam2_web.device import pick_device
    from sam2_web.hub import fetch_repo

    dev = pick_device(device)
    key = (detector, revision, cache_dir, str(dev))
    with _lock:
        if key in _loaded:
            return _loaded[key]
    folder = fetch_repo(detector, revision=revision, cache_dir=cache_dir, allow_patterns=_FILES,
                        progress=progress is None, on_progress=progress, what="the text detector")
    from transformers import AutoConfig, AutoProcessor, Owlv2ForObjectDetection

    try:
        config = AutoConfig.from_pretrained(folder)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"the text detector {detector} has no readable config.json ({exc})") from None
    if config.model_type not in ARCHITECTURES:
        raise CheckpointError(f"the text detector {detector} is a {config.model_type!r} model; find.text.detector "
                              f"must name an OWLv2 model such as {DEFAULT_DETECTOR}")
    try:
        with _no_loading_bars():
            processor = AutoProcessor.from_pretrained(folder)
            model = Owlv2ForObjectDetection.from_pretrained(folder).to(dev).eval()
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"the text detector {detector} could not be loaded ({exc}); its download may be "
                              "incomplete: remove it from the Hugging Face cache and try again") from None
    loaded = TextDetector(model, processor, detector)
    with _lock:
        _loaded[key] = loaded
    return loaded
