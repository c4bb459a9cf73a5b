"""Load ready-to-use predictors: by model name (registry → Hub checkpoint → hydra build, cached),
or as ``configs/app.yaml`` with hydra overrides describes them (:func:`load_app_predictor`).

:func:`load_predictor` is the one loader: the web app, the CLI, the jobs, the batch workers and
the editor plugins come through it, and it keeps models in the one cache of loaded models
(``sam2_web.loading``, which ``SAM2ImagePredictor.from_pretrained`` shares). The default model is the one ``configs/app.yaml`` selects
(:func:`default_model`); what a model name stands for, ``model=auto`` included, is decided by
:func:`resolve_model` alone.
"""

from __future__ import annotations

import weakref
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
from omegaconf import DictConfig, OmegaConf, open_dict

from sam2_web.build import compose_config, configs_dir
from sam2_web.loading import load_cached

KINDS = ("video", "image")

# Registry name of each predictor load_predictor built with its model's own network: the speed
# figures the app and the CLI record are keyed by it (sam2_web.speeds).
_names: "weakref.WeakKeyDictionary[Any, str]" = weakref.WeakKeyDictionary()

# model=auto: SAM 2.1 tiny on CUDA; elsewhere the fastest model whose published J&F on
# AUTO_BENCHMARK is at most AUTO_MAX_DROP points below AUTO_REFERENCE's (76.5 - 5 = 71.5).
AUTO = "auto"
AUTO_ON_CUDA = "sam2.1_hiera_t"
AUTO_REFERENCE = "sam2.1_hiera_t"
AUTO_BENCHMARK = "SA-V test"
AUTO_MAX_DROP = 5.0


def _app_yaml() -> DictConfig:
    from sam2_web.errors import ConfigNotFoundError

    path = configs_dir() / "app.yaml"
    if not path.is_file():
        raise ConfigNotFoundError(f"{path} is missing; reinstall sam2_web")
    return OmegaConf.load(path)


def _configured_model() -> str:
    """The ``defaults: - model: ...`` entry of ``configs/app.yaml`` as written (may be ``auto``)."""
    from sam2_web.errors import ConfigNotFoundError

    for entry in _app_yaml().get("defaults") or []:
        if isinstance(entry, Mapping) and "model" in entry:
            return str(entry["model"])
    raise ConfigNotFoundError(f"{configs_dir() / 'app.yaml'} names no default model; add '- model: <name>' "
                              "to its defaults")


def _app_device() -> str:
    return str(_app_yaml().get("device", "auto"))


@lru_cache(maxsize=4)
def default_model(device: Optional[str] = None) -> str:
    """The model ``configs/app.yaml`` selects, e.g. ``sam2.1_hiera_t``; its ``model: auto`` is
    resolved for ``device`` (default: the app config's ``device``).

    The answer is kept for the process, so the default does not change under a running app
    while it records new speed figures.

    Raises:
        ConfigNotFoundError: the app config or its model entry is missing.
        ValueError: ``device`` is not a device name.
    """
    return resolve_model(_configured_model(), device)


def resolve_model(model: Optional[str] = None, device: Any = None) -> str:
    """The registry name ``model`` stands for: the one place that decides it.

    Args:
        model: a registry name, alias or Hub repo id; ``auto`` (:func:`auto_model` for ``device``);
            None (:func:`default_model`).
        device: the device ``auto`` picks for (default: the app config's ``device``).
    Raises:
        UnknownModelError: no such model (the message lists them).
        ValueError: ``device`` is not a device name.
    """
    from sam2_web.registry import get_model

    if model is None:
        return default_model(None if device is None else str(device))
    if str(model) == AUTO:
        return auto_model(_app_device() if device is None else device)
    return get_model(model).name


def _override_value(overrides: Sequence[str], key: str) -> Optional[str]:
    """The value of the last ``key=`` / ``+key=`` / ``++key=`` override, or None."""
    value = None
    for item in overrides:
        name, sep, rest = item.partition("=")
        if sep and name.lstrip("+") == key:
            value = rest
    return value


def requested_model(overrides: Sequence[str] = ()) -> str:
    """The model the overrides (else ``configs/app.yaml``) ask for, before ``auto`` is resolved."""
    return _override_value(overrides, "model") or _configured_model()


def _resolve_model_override(overrides: Sequence[str]) -> list[str]:
    """``overrides`` with the model they ask for (else the app config's default, ``auto`` included)
    given by its registry name, as the config's model group names it (:func:`resolve_model`, for
    the device the overrides, else the app config, name)."""
    overrides = list(overrides)
    device = _override_value(overrides, "device") or _app_device()
    kept = [o for o in overrides if o.partition("=")[0].lstrip("+") != "model"]
    return kept + [f"model={resolve_model(requested_model(overrides), device)}"]


def auto_model(device: Any = "auto", *, specs: Optional[Sequence[Any]] = None, bench: Any = None,
               cache: Optional[Path] = None) -> str:
    """The model ``model=auto`` stands for on ``device``.

    * CUDA (``cuda``, ``cuda:1`` ...): :data:`AUTO_ON_CUDA` (SAM 2.1 tiny).
    * Elsewhere: among the models whose published ``SA-V test`` J&F is at least SAM 2.1 tiny's
      minus :data:`AUTO_MAX_DROP` (76.5 - 5 = 71.5; a model without that figure never
      qualifies), the one with the least seconds per frame with 3 objects. The figures are
      compared within one source: this server's own (``sam2_web.speeds``) when it has measured
      every qualifying model the bench measured, else the bench run for this kind of device.
      A qualifying model with no figure in that source is not picked. Ties go to the higher
      published J&F, then to registry order. With no figures at all, SAM 2.1 tiny: nothing
      says another model is faster.

    Args:
        device: ``auto`` (cuda > mps > cpu, as loading picks), ``cpu``, ``cuda``, ``cuda:1``, ``mps``;
            only its type is read, so no GPU is needed to ask about ``cuda``.
        specs, bench, cache: the registry's models, bench runs (``sam2_web.speeds.load_bench``) and
            speed cache file to use instead of the installed ones (tests).
    Returns:
        A registry name.
    Raises:
        ValueError: ``device`` is not a device name.
    """
    from sam2_web import speeds
    from sam2_web.device import pick_device
    from sam2_web.registry import list_models

    try:
        dev = pick_device(None) if str(device).lower() == AUTO else torch.device(device)
    except RuntimeError:
        raise ValueError(f"device={device!r} is not a device; use auto, cpu, cuda, cuda:N or mps") from None
    if dev.type == "cuda":
        return AUTO_ON_CUDA
    specs = list(list_models() if specs is None else specs)
    scores = {s.name: s.quality.score(AUTO_BENCHMARK) if s.quality is not None else None for s in specs}
    reference = scores.get(AUTO_REFERENCE)
    if reference is None:
        return AUTO_REFERENCE
    floor = reference - AUTO_MAX_DROP - 1e-9
    qualified = [s.name for s in specs if scores[s.name] is not None and scores[s.name] >= floor]
    run = speeds.bench_run_for(dev.type, speeds.load_bench() if bench is None else bench)
    there = {n: sp.per_frame(3) for n in qualified if run is not None and (sp := run.speed(n)) is not None}
    label = speeds.device_label(dev)
    here = {n: sp.per_frame(3) for n in qualified
            if (sp := speeds.local_speed(n, label, cache)) is not None and sp.s_per_frame}
    figures = here if here and set(there) <= set(here) else there
    timed = [n for n in qualified if figures.get(n) is not None]
    if not timed:
        return AUTO_REFERENCE
    return min(timed, key=lambda n: (figures[n], -scores[n], qualified.index(n)))


def compose_app_config(overrides: Sequence[str] = ()) -> DictConfig:
    """Compose ``configs/app.yaml`` with hydra overrides, e.g. ``["model=sam2.1_hiera_s", "device=cpu"]``.

    ``model=auto`` (the default) becomes the model :func:`auto_model` picks for the configured
    device, so ``cfg.weights`` always describes a real model. The ``engine`` section starts from
    the engine's own defaults (every field of ``sam2_web.video.options.SessionOptions``), so each
    default is written once, in that class.

    Raises:
        hydra's errors for a bad override; the model group lists the valid choices itself.
        ValueError: ``model=auto`` with a device that is not a device name.
    """
    _register_engine_defaults()
    cfg = compose_config("app", _resolve_model_override(overrides), config_dir=configs_dir())
    _check_sections(cfg, overrides)
    return cfg


def _check_sections(cfg: DictConfig, overrides: Sequence[str]) -> None:
    """Each setting has one place in the app config: the engine's under ``engine.``, the
    network's under ``model.`` (those change the network, so speeds are not recorded for it).

    Raises:
        ConfigError: an ``engine.`` key that is not an engine setting, or an engine setting given
            as a ``model.`` override (the engine section would silently win over it).
    """
    from sam2_web.errors import ConfigError
    from sam2_web.video.options import SessionOptions

    names = SessionOptions.names()
    unknown = sorted(set(cfg.get("engine") or {}) - names)
    if unknown:
        raise ConfigError(
            f"engine.{unknown[0]} is not a setting of the engine; its settings are {', '.join(sorted(names))}. "
            f"Arguments of the network go under model. (e.g. ++model.{unknown[0]}=...)"
        )
    for override in model_overrides(overrides):
        key = override.lstrip("+~").partition("=")[0][len("model."):]
        if key in names:
            raise ConfigError(f"{override.partition('=')[0]} is an engine setting in the app config: "
                              f"use engine.{key}={override.partition('=')[2]}")


def _register_engine_defaults() -> None:
    # app.yaml's defaults list names this node (``- engine: session_options``).
    import dataclasses

    from hydra.core.config_store import ConfigStore

    from sam2_web.video.options import SessionOptions

    ConfigStore.instance().store(group="engine", name="session_options", node=dataclasses.asdict(SessionOptions()))


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
    **options,
):
    """Return a predictor for a registered model, fetching its checkpoint from the Hub if needed.

    Loaded models stay in this process's one cache (``sam2_web.loading``, the most recently used):
    asking again for the same model, checkpoint, device, overrides and options returns the same
    video predictor (sessions are separate objects, so callers share it safely), or a new image
    predictor around the same network (an image predictor holds the image it was given).

    Args:
        model: a registry name (``sam2.1_hiera_t``), alias or Hub repo id (``facebook/sam2.1-hiera-tiny``),
            or ``auto``; None = :func:`default_model` (see :func:`resolve_model`).
        kind: ``"video"`` → ``SAM2VideoPredictor``; ``"image"`` → ``SAM2ImagePredictor``.
        checkpoint: a local ``.pt`` that replaces the Hub download.
        device: ``None``/``"auto"`` picks cuda > mps > cpu.
        overrides: extra hydra overrides for the model config (``++model.image_size=512``).
        precision: ``"fp32"`` (default) or ``"bf16"`` (CUDA autocast; opt-in, changes numbers).
        revision, cache_dir: passed to the Hub download.
        progress: show a download progress bar; or a callback ``(downloaded, total)``.
        options: video: the engine's session options (``sam2_web.video.options.SessionOptions``
            fields); image: ``SAM2ImagePredictor`` options (``mask_threshold``, ``max_hole_area``,
            ``max_sprinkle_area``).

    Raises:
        UnknownModelError, HubUnavailableError, CheckpointError, ConfigNotFoundError, ValueError.
    """
    from sam2_web.registry import get_model

    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    spec = get_model(resolve_model(model, device))
    loaded = load_cached(spec, kind, checkpoint=checkpoint, device=device, overrides=overrides, precision=precision,
                         revision=revision, cache_dir=cache_dir, progress=progress,
                         options=options if kind == "video" else {})
    if kind == "video":
        if not overrides:  # the published network: its speed is the model's
            _names[loaded] = spec.name
        return loaded
    from sam2_web.image_predictor import SAM2ImagePredictor

    return SAM2ImagePredictor(loaded, precision=precision, **options)


def speed_key(predictor: Any) -> Optional[tuple[str, str]]:
    """``(model name, device label)`` under which this predictor's speed is recorded
    (``sam2_web.speeds.record_frames``); None when it is not a published network loaded here."""
    from sam2_web.speeds import device_label

    name = model_name_of(predictor)
    if name is None:
        return None
    return name, device_label(predictor.device, getattr(predictor, "precision", "fp32"))


def model_name_of(predictor: Any) -> Optional[str]:
    """The registry name of a predictor :func:`load_predictor` built with its model's own
    network; None for anything else (a network changed by ``model.*`` overrides, or built elsewhere)."""
    try:
        return _names.get(predictor)
    except TypeError:  # not weak-referenceable: not one of ours
        return None


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
