"""The ``vos_optimized`` preset: the five networks of a video predictor compiled for static shapes.

What the reference's ``SAM2VideoPredictorVOS`` compiles (with ``torch.compile``, full graph,
``max-autotune``): the image encoder, the memory encoder, the prompt encoder and the mask decoder
with static shapes, and the memory attention with a dynamic number of memories. Two things
differ here:

* objects are padded to a bucket of :attr:`CompileSettings.buckets` (the tracker's batch of
  objects runs as 1, 2, 4, 8 ... rows; the padding rows repeat the last object and are
  dropped), so adding an object reuses a graph instead of compiling a new one;
* the prompt encoder and mask decoder use their compiled graphs only for the prompt layout of
  tracking (no mask prompt, two sparse tokens); clicks with more points run eagerly instead of
  compiling a graph per point count.

The compiled functions live on the model, so every session on that model reuses them (dynamo's
own cache, keyed by the guards on shapes and dtypes). Compilation happens at the first call of
each shape; the time spent in calls that compiled is added up in :attr:`CompiledModel.compile_seconds`
so benchmarks can report it apart from the steady state. ``max-autotune`` replays CUDA graphs,
whose outputs are overwritten by the next replay: outputs are cloned, as the reference does.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

import torch
from torch.utils._pytree import tree_map

# Object counts the tracker's batch is padded to; above the last, the count itself is used.
DEFAULT_BUCKETS = (1, 2, 4, 8, 16, 32, 64)


@dataclass(frozen=True)
class CompileSettings:
    """How :func:`compile_model` compiles.

    Args:
        backend: ``torch.compile`` backend (``inductor``; tests use ``aot_eager`` or ``eager``).
        mode: ``torch.compile`` mode (``max-autotune`` as the reference; None for the backend's default).
        buckets: object counts the tracker pads its batch to.
    """

    backend: str = "inductor"
    mode: Optional[str] = "max-autotune"
    buckets: tuple[int, ...] = DEFAULT_BUCKETS

    def bucket(self, objects: int) -> int:
        """The padded batch size for ``objects`` objects (the smallest bucket that holds them)."""
        return next((b for b in sorted(self.buckets) if b >= objects), objects)


@dataclass
class CompiledModel:
    """What :func:`compile_model` attached to a model (``model.compiled``).

    Attributes:
        settings: how it was compiled.
        compile_seconds: time spent in calls that compiled a new graph (lazily, on first use).
        graphs: how many graphs those calls compiled.
    """

    settings: CompileSettings
    compile_seconds: float = 0.0
    graphs: int = 0
    parts: dict[str, "_Compiled"] = field(default_factory=dict)


def _unique_graphs() -> int:
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])


class _Compiled:
    """A module's forward with a compiled twin, used when ``use(*args, **kwargs)`` says so."""

    def __init__(self, eager: Callable, owner: CompiledModel, dynamic: bool, use: Callable[..., bool]):
        settings = owner.settings
        options: dict[str, Any] = {"backend": settings.backend, "fullgraph": True, "dynamic": dynamic}
        if settings.mode is not None:
            options["mode"] = settings.mode
        self.eager = eager
        self.compiled = torch.compile(eager, **options)
        self.owner = owner
        self.use = use

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if not self.use(*args, **kwargs):
            return self.eager(*args, **kwargs)
        before, start = _unique_graphs(), time.perf_counter()
        out = self.compiled(*args, **kwargs)
        new = _unique_graphs() - before
        if new:
            self.owner.compile_seconds += time.perf_counter() - start
            self.owner.graphs += new
        # CUDA-graph outputs are overwritten by the next replay: keep our own copies.
        return tree_map(lambda x: x.clone() if isinstance(x, torch.Tensor) else x, out)


def _always(*args: Any, **kwargs: Any) -> bool:
    return True


def compile_model(model: Any, settings: Optional[CompileSettings] = None) -> CompiledModel:
    """Compile ``model``'s image encoder, memory encoder, memory attention, prompt encoder and
    mask decoder in place (their ``forward``; parameters and state-dict keys are untouched) and
    make its tracker pad objects to ``settings.buckets``. Calling it again returns the existing
    :class:`CompiledModel` (a model is compiled once).

    Args:
        model: a ``SAM2Base`` (usually the video predictor).
        settings: backend, mode and buckets (default :class:`CompileSettings`).
    Returns:
        The :class:`CompiledModel`, also kept as ``model.compiled``.
    """
    existing = getattr(model, "compiled", None)
    if isinstance(existing, CompiledModel):
        return existing
    settings = settings or CompileSettings()
    compiled = CompiledModel(settings)
    tracking_multimask = model.use_multimask(False, None)

    def tracking_prompt(points: Any = None, boxes: Any = None, masks: Any = None) -> bool:
        return masks is None and boxes is None and points is not None and points[0].shape[1] == 1

    def tracking_decoder(*args: Any, **kwargs: Any) -> bool:
        sparse = kwargs.get("sparse_prompt_embeddings")
        return (sparse is not None and sparse.shape[1] == 2
                and kwargs.get("multimask_output") == tracking_multimask)

    parts = {
        "image_encoder": (False, _always),
        "memory_encoder": (False, _always),
        "memory_attention": (True, _always),  # the number of memories grows over the first frames
        "sam_prompt_encoder": (False, tracking_prompt),
        "sam_mask_decoder": (False, tracking_decoder),
    }
    for name, (dynamic, use) in parts.items():
        module = getattr(model, name)
        # An encoder the config already compiled (compile_image_encoder) is compiled again from
        # its original forward, so it is not wrapped twice.
        eager = getattr(module.forward, "_torchdynamo_orig_callable", module.forward)
        part = _Compiled(eager, compiled, dynamic, use)
        module.forward = part
        compiled.parts[name] = part
    model.object_bucket = settings.bucket
    model.compiled = compiled
    return compiled
