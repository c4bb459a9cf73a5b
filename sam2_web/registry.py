"""The published SAM 2 / 2.1 models, read as data from ``configs/model/*.yaml``.

Each model group entry carries a ``weights:`` block (name, label, Hub repo, file, network config,
size; optionally the licence and the published quality with its source). Adding a model is adding
a YAML file; nothing here names a model.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Optional

from omegaconf import OmegaConf

from sam2_web.errors import ConfigNotFoundError, Sam2WebError, UnknownModelError

_WEIGHT_FIELDS = ("name", "label", "repo_id", "filename", "config", "params_m")
_QUALITY_FIELDS = ("metric", "scores", "source")


@dataclass(frozen=True)
class PublishedQuality:
    """Benchmark scores the model's authors published, and where.

    Args:
        metric: what the scores measure, e.g. ``J&F``.
        scores: ``(benchmark, score)`` pairs in the order the source lists them,
            e.g. ``(("SA-V test", 71.7), ...)``.
        source: where the figures come from (paper table or README section, with a link).
    """

    metric: str
    scores: tuple[tuple[str, float], ...]
    source: str

    def score(self, benchmark: str) -> Optional[float]:
        """The score on ``benchmark`` (e.g. ``SA-V test``), or None when it was not published."""
        return dict(self.scores).get(benchmark)


@dataclass(frozen=True)
class ModelSpec:
    """One published checkpoint and the network config it fits.

    Args:
        name: our short name, e.g. ``sam2.1_hiera_t`` (also the ``model=`` hydra choice).
        label: human-readable name for menus, e.g. ``SAM 2.1 tiny``.
        repo_id: Hugging Face Hub repository, e.g. ``facebook/sam2.1-hiera-tiny``.
        filename: checkpoint file inside the repository.
        config: network config relative to ``configs_dir()``, e.g. ``sam2.1/sam2.1_hiera_t.yaml``.
        params_m: parameter count in millions (for menus and memory estimates).
        license: licence of the weights (SPDX id), or None when the entry does not say.
        quality: the published benchmark scores, or None when the entry does not give them.
    """

    name: str
    label: str
    repo_id: str
    filename: str
    config: str
    params_m: float
    license: Optional[str] = None
    quality: Optional[PublishedQuality] = None

    @property
    def config_path(self) -> Path:
        """Absolute path of the network config YAML."""
        return configs_dir() / self.config

    @property
    def family(self) -> str:
        """``sam2`` or ``sam2.1``: the part of the name before ``_hiera_``."""
        return self.name.split("_hiera_")[0]


def configs_dir() -> Path:
    """Return the ``configs/`` folder: next to the package in a checkout, inside it in a wheel.

    Raises:
        ConfigNotFoundError: neither location has a ``configs/model`` folder.
    """
    package_dir = Path(__file__).resolve().parent
    for candidate in (package_dir.parent / "configs", package_dir / "configs"):
        if (candidate / "model").is_dir():
            return candidate
    raise ConfigNotFoundError(
        f"no configs/model folder next to or inside {package_dir}; reinstall sam2_web "
        "(the wheel ships its configs) or run from a checkout of the repository"
    )


def _read_spec(path: Path) -> ModelSpec | None:
    """Read the ``weights:`` block of one model group entry; None if it has none."""
    weights = OmegaConf.load(path).get("weights")
    if weights is None:
        return None
    missing = [key for key in _WEIGHT_FIELDS if weights.get(key) is None]
    if missing:
        # A packaging mistake, not a user one: say which file to fix.
        raise Sam2WebError(f"{path}: the weights block lacks {', '.join(missing)}")
    return ModelSpec(
        name=str(weights.name),
        label=str(weights.label),
        repo_id=str(weights.repo_id),
        filename=str(weights.filename),
        config=str(weights.config),
        params_m=float(weights.params_m),
        license=None if weights.get("license") is None else str(weights.license),
        quality=_read_quality(path, weights.get("quality")),
    )


def _read_quality(path: Path, quality) -> PublishedQuality | None:
    """The optional ``quality:`` block: ``metric``, ``scores`` (benchmark: score) and ``source``."""
    if quality is None:
        return None
    missing = [key for key in _QUALITY_FIELDS if quality.get(key) is None]
    if missing:
        raise Sam2WebError(f"{path}: the weights.quality block lacks {', '.join(missing)}")
    scores = tuple((str(bench), float(value)) for bench, value in quality.scores.items())
    return PublishedQuality(metric=str(quality.metric), scores=scores, source=str(quality.source))


@lru_cache(maxsize=1)
def _load_registry(root: Path) -> tuple[ModelSpec, ...]:
    specs = [spec for path in sorted((root / "model").glob("*.yaml")) if (spec := _read_spec(path))]
    return tuple(specs)


def list_models() -> list[ModelSpec]:
    """Return every model that has a ``weights:`` block, sorted by file name.

    Raises:
        ConfigNotFoundError: the configs folder cannot be found.
    """
    return list(_load_registry(configs_dir()))


def _key(text: str) -> str:
    """Fold spelling differences away: case, ``-``/``_``/space, an org prefix, a file suffix."""
    text = text.strip().lower()
    text = text.rsplit("/", 1)[-1]  # facebook/sam2.1-hiera-tiny, sam2.1/sam2.1_hiera_t.yaml
    text = re.sub(r"\.(pt|pth|yaml|yml)$", "", text)
    return re.sub(r"[-_\s]", "", text)


def _family_version(family: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", family))


def _aliases() -> dict[str, ModelSpec]:
    """Map every accepted spelling (folded by ``_key``) to its model."""
    specs = list_models()
    # Sizes ("t", "tiny") are SAM 2's naming: only its Hiera models (``*_hiera_*``) take part,
    # so other families' names (efficienttam_s_512x512) neither get size aliases nor count as
    # the newest release.
    hiera = [spec for spec in specs if "_hiera_" in spec.name]
    newest = max((spec.family for spec in hiera), key=_family_version, default="")
    repos = Counter(spec.repo_id for spec in specs)
    table: dict[str, ModelSpec] = {}
    for spec in specs:
        # A Hub repo holding several models (yunyangx/efficient-track-anything) names none of them.
        repo = [spec.repo_id] if repos[spec.repo_id] == 1 else []
        spellings = [spec.name, *repo, spec.filename, spec.config]
        if spec in hiera:
            code = spec.name.split("_hiera_")[-1]  # t, s, b+, l
            word = spec.repo_id.rsplit("hiera-", 1)[-1]  # tiny, small, base-plus, large
            spellings += [f"{spec.family}_hiera_{word}", f"{spec.family}_{code}", f"{spec.family}_{word}"]
            if spec.family == newest:
                # A bare size means the newest release: that is what a user asking for "tiny" wants.
                spellings += [code, word]
        for spelling in spellings:
            table.setdefault(_key(spelling), spec)
    return table


def get_model(name: str | ModelSpec) -> ModelSpec:
    """Look a model up by our name, its Hub repo id, its file name or an obvious alias.

    ``sam2.1_hiera_t``, ``facebook/sam2.1-hiera-tiny``, ``sam2.1-tiny``, ``sam2.1_hiera_tiny`` and
    ``tiny`` all name the same model; a bare size means the newest family (SAM 2.1).

    Args:
        name: the spelling to look up (a ``ModelSpec`` is returned as is).
    Returns:
        The matching ``ModelSpec``.
    Raises:
        UnknownModelError: no model matches; the message lists the known names.
    """
    if isinstance(name, ModelSpec):
        return name
    spec = _aliases().get(_key(str(name)))
    if spec is None:
        known = ", ".join(spec.name for spec in list_models())
        raise UnknownModelError(
            f"unknown model {name!r}; pick one of: {known} "
            "(Hub repo ids such as facebook/sam2.1-hiera-tiny and sizes such as 'tiny' work too)"
        )
    return spec
