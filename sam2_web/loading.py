"""The one cache of loaded models, and the one place a checkpoint becomes a network.

``sam2_web.models.load_predictor`` (by model name, the app config, jobs, batch workers, plugins)
and ``SAM2ImagePredictor.from_pretrained`` both come through :func:`load_cached`, so a model is
loaded once per process whoever asks for it. It keeps the video predictor itself (sessions are
separate objects, so callers share it) or, for image predictors, the network they wrap (an image
predictor holds the image it was given, so each caller gets its own around the shared network).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch

from sam2_web.build import build_sam2, build_sam2_video_predictor

_cache: "OrderedDict[tuple, Any]" = OrderedDict()
_cache_lock = threading.Lock()
_load_lock = threading.Lock()
_cache_size = 2
_loads = {"count": 0, "seconds": 0.0}  # cache misses of this process (see load_stats)


def load_cached(spec: Any, kind: str, *, checkpoint: str | Path | None = None,
                device: str | torch.device | None = None, overrides: Sequence[str] = (), precision: str = "fp32",
                revision: Optional[str] = None, cache_dir: str | Path | None = None,
                progress: bool | Callable[[int, int], None] = True, options: Optional[dict] = None) -> Any:
    """The video predictor (``kind="video"``) or image network (``"image"``) of registry entry
    ``spec``, from the cache or loaded now (the checkpoint from ``checkpoint`` or the Hub).

    Two callers asking for a model that is not loaded yet load it once; a cached model never waits
    for another one being loaded.

    Args:
        spec: a ``sam2_web.registry.ModelSpec``.
        options: the video predictor's session options (part of what is cached).
        checkpoint, device, overrides, precision, revision, cache_dir, progress: see
            ``sam2_web.models.load_predictor``.
    Raises:
        HubUnavailableError, CheckpointError, ConfigNotFoundError.
    """
    options = dict(options or {})
    key = (spec.name, kind, str(checkpoint), str(device), tuple(overrides), precision, revision,
           tuple(sorted(options.items())))
    loaded = _cached(key)
    if loaded is None:
        with _load_lock:
            loaded = _cached(key)
            if loaded is None:
                loaded = _load(spec, kind, key, checkpoint, device, overrides, precision, revision, cache_dir,
                               progress, options)
    return loaded


def set_cache_size(n: int) -> None:
    """How many loaded models stay in memory (least recently used are dropped first)."""
    global _cache_size
    _cache_size = max(1, int(n))
    with _cache_lock:
        while len(_cache) > _cache_size:
            _cache.popitem(last=False)


def clear_cache() -> None:
    """Forget every loaded model (the next request loads again); frees their memory once nothing
    else holds them."""
    with _cache_lock:
        _cache.clear()


def load_stats() -> tuple[int, float]:
    """``(loads, seconds)``: models built in this process (cache misses) and the time they took,
    downloads included."""
    with _cache_lock:
        return _loads["count"], _loads["seconds"]


def _cached(key: tuple) -> Any:
    with _cache_lock:
        loaded = _cache.get(key)
        if loaded is not None:
            _cache.move_to_end(key)
        return loaded


def _load(spec: Any, kind: str, key: tuple, checkpoint: Any, device: Any, overrides: Sequence[str],
          precision: str, revision: Optional[str], cache_dir: Any, progress: Any, options: dict) -> Any:
    from sam2_web.hub import resolve_checkpoint

    start = time.perf_counter()
    ckpt = resolve_checkpoint(  # a local file as is, else the Hub download
        checkpoint if checkpoint is not None else spec, revision=revision, cache_dir=cache_dir,
        progress=bool(progress), on_progress=progress if callable(progress) else None,
    )
    if kind == "video":
        loaded = build_sam2_video_predictor(
            spec.config, ckpt, device=device, hydra_overrides_extra=overrides, precision=precision, **options
        )
    else:
        loaded = build_sam2(spec.config, ckpt, device=device, hydra_overrides_extra=overrides)
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > _cache_size:
            _cache.popitem(last=False)
        _loads["count"] += 1
        _loads["seconds"] += time.perf_counter() - start
    return loaded
