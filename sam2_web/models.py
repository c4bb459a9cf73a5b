"""Load ready-to-use predictors: by model name (registry → Hub checkpoint → hydra build, cached),
or as ``configs/app.yaml`` with hydra overrides describes them (:func:`load_app_predictor`).

This is the one loader the web app, the CLI, the jobs and the editor plugins share; the default
model is the one ``configs/app.yaml`` selects (:func:`default_model`).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Callable, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from sam2_web.build import build_sam2, build_sam2_video_predictor, compose_config, configs_dir

KINDS = ("video", "image")

_cache: "OrderedDict[tuple, object]" = OrderedDict()
_cache_lock = threading.Lock()
_cache_size = 2


@lru_cache(maxsize=1)
def default_model() -> str:
    """The model ``configs/app.yaml`` selects (its ``defaults: - model: ...`` entry), e.g. ``sam2.1_hiera_t``.

    Raises:
        ConfigNotFoundError: the app config or its model entry is missing.
    """
    from sam2_web.errors import ConfigNotFoundError

    path = configs_dir() / "app.yaml"
    if not path.is_file():
        raise ConfigNotFoundError(f"{path} is missing; reinstall sam2_web")
    for entry in OmegaConf.load(path).get("defaults") or []:
        if isinstance(entry, Mapping) and "model" in entry:
            return str(entry["model"])
    raise ConfigNotFoundError(f"{path} names no default model; add '- model: <name>' to its defaults")


def compose_app_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/app.yaml`` with hydra overrides, e.g. ``["model=sam2.1_hiera_s", "device=cpu"]``.

    The ``engine`` section starts from the engine's own defaults (every field of
    ``sam2_web.video.options.SessionOptions``), so each default is written once, in that class.

    Raises:
        hydra's errors for a bad override; the model group lists the valid choices itself.
    """
    _register_engine_defaults()
    return compose_config("app", overrides, config_dir=configs_dir())


def _register_engine_defaults() -> None:
    # app.yaml's defaults list names this node (``- engine: session_options``).
    import dataclasses

    from hydra.core.config_store import ConfigStore

    from sam2_web.video.options import SessionOptions

    ConfigStore.instance().store(group="engine", name="session_options", node=dataclasses.asdict(SessionOptions()))


def set_cache_size(n: int) -> None:
    """How many loaded predictors stay in memory (least recently used are dropped first)."""
    global _cache_size
    _cache_size = max(1, int(n))
    with _cache_lock:
        while len(_cache) > _cache_size:
            _cache.popitem(last=False)


def load_predictor(
    model: str | None = None,
    *,
    kind: str = "video",
    checkpoint: str | Path | None = None,
    device: str | torch.device | None = None,
    overrides: Sequence[str] = (),
    precision: str = "fp32",
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool | Callable[[int, int], None] = True,
    **engine_opts,
):
    """Return a predictor for a registered model, fetching its checkpoint from the Hub if needed.

    Args:
        model: a registry name (``sam2.1_hiera_t``), alias or Hub repo id (``facebook/sam2.1-hiera-tiny``);
            None = :func:`default_model`.
        kind: ``"video"`` → ``SAM2VideoPredictor``; ``"image"`` → ``SAM2ImagePredictor``.
        checkpoint: a local ``.pt`` that replaces the Hub download.
        device: ``None``/``"auto"`` picks cuda > mps > cpu.
        overrides: extra hydra overrides for the model config (``++model.image_size=512``).
        precision: ``"fp32"`` (default) or ``"bf16"`` (CUDA autocast; opt-in, changes numbers).
        revision, cache_dir: passed to the Hub download.
        progress: show a download progress bar; or a callback ``(downloaded, total)``.
        engine_opts: video engine options (see ``SAM2VideoPredictor``).

    Raises:
        UnknownModelError, HubUnavailableError, CheckpointError, ConfigNotFoundError, ValueError.
    """
    from sam2_web.hub import resolve_checkpoint
    from sam2_web.registry import get_model

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    spec = get_model(model if model is not None else default_model())
    key = (spec.name, kind, str(checkpoint), str(device), tuple(overrides), precision, revision,
           tuple(sorted(engine_opts.items())))
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    ckpt = resolve_checkpoint(  # a local file as is, else the Hub download
        checkpoint if checkpoint is not None else spec, revision=revision, cache_dir=cache_dir,
        progress=bool(progress), on_progress=progress if callable(progress) else None,
    )
    if kind == "video":
        predictor = build_sam2_video_predictor(
            spec.config, ckpt, device=device, hydra_overrides_extra=overrides, precision=precision, **engine_opts
        )
    else:
        from sam2_web.image_predictor import SAM2ImagePredictor

        predictor = SAM2ImagePredictor(
            build_sam2(spec.config, ckpt, device=device, hydra_overrides_extra=overrides), precision=precision
        )
    with _cache_lock:
        _cache[key] = predictor
        while len(_cache) > _cache_size:
            _cache.popitem(last=False)
    return predictor


def model_overrides(overrides: Sequence[str]) -> list[str]:
    """The subset of app-level overrides that change the network (``++model.image_size=512``)."""
    return [o for o in overrides if o.lstrip("+~").startswith("model.")]


def load_app_predictor(
    overrides: Sequence[str] = (),
    *,
    checkpoint: str | Path | None = None,
    cfg: DictConfig | None = None,
    kind: str = "video",
    progress: bool | Callable[[int, int], None] = False,
):
    """The predictor ``configs/app.yaml`` composed with hydra ``overrides`` describes: its model
    (``model=...``), device, precision, Hub settings and engine options. Cached like :func:`load_predictor`.

    Args:
        overrides: e.g. ``["model=sam2.1_hiera_s", "device=cpu", "++model.image_size=512"]``;
            those under ``model.`` change the network too.
        checkpoint: a local ``.pt`` used instead of the Hub download (set on the composed config,
            since a path is not always valid override syntax).
        cfg: the app config already composed with ``overrides`` (skips composing it again).
        kind: ``"video"`` or ``"image"``.
        progress: download progress bar, or a callback ``(downloaded, total)``; off by default.
    Raises:
        UnknownModelError, CheckpointError, HubUnavailableError, ConfigNotFoundError; hydra's
        errors for a malformed override (the model group lists the valid choices itself).
    """
    cfg = compose_app_config(list(overrides)) if cfg is None else cfg
    if checkpoint is not None:
        cfg = cfg.copy()  # the caller's config stays as it was
        with open_dict(cfg):
            cfg.checkpoint = str(Path(checkpoint).expanduser().absolute())
    engine = OmegaConf.to_container(cfg.engine, resolve=True) if "engine" in cfg else {}
    hub = cfg.get("hub") or {}
    return load_predictor(
        cfg.weights.name,
        kind=kind,
        checkpoint=cfg.get("checkpoint"),
        device=cfg.get("device", "auto"),
        overrides=model_overrides(overrides),
        precision=cfg.get("precision", "fp32"),
        revision=hub.get("revision"),
        cache_dir=hub.get("cache_dir"),
        progress=progress,
        **(engine if kind == "video" else {}),
    )
