"""Build SAM 2 models from hydra configs, the way the reference's ``build_sam`` is used.

``build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", ckpt)`` works unchanged; so do bare names
(``"sam2.1_hiera_t"``), any YAML file on disk, and official YAML whose targets name the reference's
``sam2.`` classes (they are mapped onto ours, so fine-tuned checkpoints come with their configs).
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Sequence

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from omegaconf import DictConfig, ListConfig, OmegaConf, open_dict

from sam2_web.device import pick_device
from sam2_web.errors import ConfigNotFoundError, Sam2WebError
from sam2_web.registry import configs_dir

if TYPE_CHECKING:
    from sam2_web.compiled import CompileSettings

logger = logging.getLogger(__name__)

# Overrides the reference applies when apply_postprocessing=True.
_IMAGE_POSTPROCESSING = (
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_via_stability=true",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_delta=0.05",
    "++model.sam_mask_decoder_extra_args.dynamic_multimask_stability_thresh=0.98",
)
_VIDEO_POSTPROCESSING = _IMAGE_POSTPROCESSING + (
    "++model.binarize_mask_from_pts_for_mem_enc=true",
    "++model.fill_hole_area=8",
)
VIDEO_PREDICTOR_TARGET = "sam2_web.video.predictor.SAM2VideoPredictor"
_POOLED_ATTENTION = "sam2_web.modeling.efficient_attention.EfficientRoPEAttention"

# Official configs name the reference's classes; these are ours.
_TARGET_MAP = {
    "sam2.sam2_video_predictor.SAM2VideoPredictor": VIDEO_PREDICTOR_TARGET,
    "sam2.sam2_video_predictor.SAM2VideoPredictorVOS": VIDEO_PREDICTOR_TARGET,
    # EdgeTAM's configs (its package is also `sam2`); its other classes map by the default rule.
    "sam2.modeling.backbones.timm.TimmBackbone": "sam2_web.modeling.backbones.timm_backbone.TimmBackbone",
    # EfficientTAM's configs (package `efficient_track_anything`): the classes whose module or
    # name differs from ours; the others map by the default rule.
    "efficient_track_anything.modeling.efficienttam_base.EfficientTAMBase": "sam2_web.modeling.sam2_base.SAM2Base",
    "efficient_track_anything.modeling.backbones.vitdet.ViT": "sam2_web.modeling.backbones.vit.ViT",
    "efficient_track_anything.modeling.backbones.image_encoder.ViTDetNeck": "sam2_web.modeling.backbones.vit.ViTDetNeck",
    "efficient_track_anything.modeling.sam.transformer.EfficientRoPEAttention1": _POOLED_ATTENTION,
    "efficient_track_anything.modeling.sam.transformer.EfficientRoPEAttention2": _POOLED_ATTENTION,
    "efficient_track_anything.efficienttam_video_predictor.EfficientTAMVideoPredictor": VIDEO_PREDICTOR_TARGET,
    "efficient_track_anything.efficienttam_video_predictor.EfficientTAMVideoPredictorVOS": VIDEO_PREDICTOR_TARGET,
}
# Official classes that are one of ours with a setting: the arguments the mapping adds.
_TARGET_ARGS = {
    "efficient_track_anything.modeling.sam.transformer.EfficientRoPEAttention1": {"pool_correction": "logits"},
    "efficient_track_anything.modeling.sam.transformer.EfficientRoPEAttention2": {"pool_correction": "keys"},
}
# Packages of official configs whose targets map onto ours (``PACKAGE.X`` -> ``sam2_web.X``).
_OFFICIAL_PACKAGES = ("sam2.", "efficient_track_anything.")


def available_configs() -> list[str]:
    """Names of the network configs shipped with sam2_web, e.g. ``sam2.1/sam2.1_hiera_t.yaml``
    (every family folder; ``model/`` holds the registry entries and ``memory/`` the app's memory
    choice, not networks)."""
    root = configs_dir()
    return sorted(
        str(p.relative_to(root))
        for p in root.glob("*/*.yaml")
        if p.parent.name not in ("model", "memory")
    )


def resolve_config(config_file: str | Path) -> tuple[Path, str]:
    """Find a config: return ``(config_dir, config_name)`` for hydra's compose.

    Accepts a YAML path on disk, a name relative to ``configs/`` with or without the ``configs/``
    prefix and ``.yaml`` suffix (the reference's strings), or a bare file/model name such as
    ``sam2.1_hiera_t`` or ``facebook/sam2.1-hiera-tiny``.

    Raises:
        ConfigNotFoundError: nothing matches; the message lists the configs that exist.
    """
    text = str(config_file)
    path = Path(text).expanduser()
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path.resolve().parent, path.stem
    root = configs_dir()
    name = text[len("configs/"):] if text.startswith("configs/") else text
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    if (root / f"{name}.yaml").is_file():
        return root, name
    by_stem = {Path(c).stem: c for c in available_configs()}
    if Path(name).name in by_stem:
        return root, by_stem[Path(name).name][: -len(".yaml")]
    with contextlib.suppress(ImportError, KeyError):
        from sam2_web.registry import get_model  # registry aliases, e.g. Hub repo ids

        return root, get_model(text).config[: -len(".yaml")]
    listing = "\n  ".join(available_configs())
    raise ConfigNotFoundError(
        f"no SAM 2 config named {text!r}. Pass a path to a .yaml file, or one of:\n  {listing}"
    )


@contextlib.contextmanager
def _hydra_at(config_dir: Path) -> Iterator[None]:
    """Compose from ``config_dir`` without disturbing any hydra state the caller already has.

    The reference package (or a user's own app) may have initialised hydra globally; we step it
    aside and put it back afterwards, so both can be used in one process.
    """
    gh = GlobalHydra.instance()
    saved = gh.hydra if gh.is_initialized() else None
    gh.clear()
    try:
        with initialize_config_dir(config_dir=str(config_dir), version_base="1.2"):
            yield
    finally:
        # initialize_config_dir's exit may replace the singleton: ask for it again.
        gh = GlobalHydra.instance()
        gh.clear()
        if saved is not None:
            gh.initialize(saved)


def compose_config(
    config_file: str | Path, overrides: Sequence[str] = (), *, config_dir: Path | None = None
) -> DictConfig:
    """Compose a config with hydra and resolve it; reference class targets are mapped onto ours.

    Args:
        config_file: see :func:`resolve_config`; or a config name inside ``config_dir``.
        overrides: hydra overrides such as ``"++model.image_size=512"``.
        config_dir: compose from this folder instead of resolving ``config_file``.
    """
    if config_dir is None:
        config_dir, name = resolve_config(config_file)
    else:
        name = str(config_file)
    with _hydra_at(config_dir):
        cfg = compose(config_name=name, overrides=list(overrides))
    OmegaConf.resolve(cfg)
    _map_targets(cfg)
    return cfg


def _map_targets(node) -> None:
    """Point ``_target_: sam2.…`` (and ``efficient_track_anything.…``) entries at the matching
    ``sam2_web.…`` classes, in place."""
    if isinstance(node, DictConfig):
        target = node.get("_target_") if "_target_" in node else None
        package = next((p for p in _OFFICIAL_PACKAGES if isinstance(target, str) and target.startswith(p)), None)
        if package is not None:
            node["_target_"] = _TARGET_MAP.get(target, "sam2_web." + target[len(package):])
            with open_dict(node):
                node.update(_TARGET_ARGS.get(target, {}))
        for key in node.keys():
            _map_targets(node[key])
    elif isinstance(node, ListConfig):
        for item in node:
            _map_targets(item)


def _compile_pays_off(device: torch.device) -> bool:
    """Whether ``torch.compile`` of the image encoder is worth it on ``device``: CUDA GPUs of
    compute capability 8+ only, as EfficientTAM's own builder decides (its YAMLs all ask for it).
    Elsewhere the first frame would wait minutes for compilation, and on CPU the graph breaks."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 8


def _instantiate(cfg: DictConfig, ckpt_path, device, mode: str, **kwargs) -> torch.nn.Module:
    device = pick_device(device)
    if cfg.model.get("compile_image_encoder", False) and not _compile_pays_off(device):
        logger.info("compile_image_encoder is ignored on %s (used on CUDA GPUs of compute capability 8+)", device)
        cfg.model.compile_image_encoder = False
    try:
        model = instantiate(cfg.model, _recursive_=True, **kwargs)
    except InstantiationException as exc:
        # A bad setting is the user's to fix: our own error (naming it), not hydra's wrapper.
        if isinstance(exc.__cause__, Sam2WebError):
            raise exc.__cause__ from None
        raise
    if ckpt_path is not None:
        from sam2_web.checkpoint import load_checkpoint

        load_checkpoint(model, ckpt_path)
    model = model.to(device)
    if mode == "eval":
        model.eval()
    return model


def build_sam2(
    config_file: str | Path,
    ckpt_path: str | Path | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    **kwargs,
) -> torch.nn.Module:
    """Build the image model (``SAM2Base``), as the reference's function of the same name.

    Args:
        config_file: config name or YAML path (see :func:`resolve_config`).
        ckpt_path: an official-format checkpoint (``{"model": state_dict}``) loaded with strict keys.
        device: ``None``/``"auto"`` picks cuda > mps > cpu.
        mode: ``"eval"`` puts the model in eval mode.
        hydra_overrides_extra: extra hydra overrides, e.g. ``["++model.image_size=512"]``.
        apply_postprocessing: add the dynamic multimask-via-stability overrides the reference adds.
        kwargs: accepted for compatibility with the reference and ignored.

    Raises:
        ConfigNotFoundError, sam2_web.errors.CheckpointError.
    """
    # The user's overrides go last so they win over the post-processing defaults.
    overrides = list(_IMAGE_POSTPROCESSING) if apply_postprocessing else []
    overrides += list(hydra_overrides_extra)
    cfg = compose_config(config_file, overrides)
    return _instantiate(cfg, ckpt_path, device, mode)


def build_sam2_video_predictor(
    config_file: str | Path,
    ckpt_path: str | Path | None = None,
    device: str | torch.device | None = None,
    mode: str = "eval",
    hydra_overrides_extra: Sequence[str] = (),
    apply_postprocessing: bool = True,
    vos_optimized: "bool | CompileSettings" = False,
    **engine_opts,
) -> torch.nn.Module:
    """Build the video predictor (``sam2_web.video.predictor.SAM2VideoPredictor``).

    Same arguments as :func:`build_sam2`; ``apply_postprocessing`` also sets
    ``binarize_mask_from_pts_for_mem_enc=true`` and ``fill_hole_area=8`` as the reference does.
    ``engine_opts`` are passed to the predictor's constructor (e.g. ``memory_dtype``,
    ``feature_cache_mb``, ``precision``).

    ``vos_optimized=True`` is the fast preset (see :mod:`sam2_web.compiled`): on a CUDA GPU of
    compute capability 8+ the image encoder, memory encoder, memory attention, prompt encoder
    and mask decoder are compiled (objects padded to buckets) and sessions run under bf16
    autocast (``precision="bf16"`` unless ``precision`` is given). Elsewhere it is ignored with
    a log line (compiling on a CPU costs minutes and gains little); a
    :class:`~sam2_web.compiled.CompileSettings` instead of True compiles on any device (tests).
    """
    overrides = []
    if apply_postprocessing:
        overrides += _VIDEO_POSTPROCESSING
    # The user's overrides go last so they win (e.g. ``++model.fill_hole_area=0``); the reference
    # appends its defaults after them, silently replacing the user's value.
    overrides += list(hydra_overrides_extra)
    cfg = compose_config(config_file, overrides)
    # Model configs name SAM2Base; the video predictor is that plus the tracking engine.
    cfg.model["_target_"] = VIDEO_PREDICTOR_TARGET
    settings = None
    if vos_optimized:
        from sam2_web.compiled import CompileSettings

        if isinstance(vos_optimized, CompileSettings):
            settings = vos_optimized
        elif _compile_pays_off(pick_device(device)):
            settings = CompileSettings()
            engine_opts.setdefault("precision", "bf16")
        else:
            logger.info("vos_optimized is ignored on %s (used on CUDA GPUs of compute capability 8+)",
                        pick_device(device))
    model = _instantiate(cfg, ckpt_path, device, mode, **engine_opts)
    if settings is not None:
        from sam2_web.compiled import compile_model

        compile_model(model, settings)
    return model
