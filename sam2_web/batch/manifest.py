"""The batch manifest (``docs/batch.schema.json``): a JSON or YAML list of mask jobs, each the
job ``sam2-web mask`` runs, turned into typed :class:`BatchJob` entries.

    version: 1
    defaults: {out: mattes, formats: [png, prores], model: sam2.1_hiera_s}
    overrides: ["++model.image_size=1024"]
    jobs:
      - {clip: shots/sh010.mov, prompts: prompts/sh010.json}
      - {clip: shots/sh020.mov, prompts: prompts/sh020.json, feather: 2, start: 10}
      - {clip: shots/sh030.mov, auto: {frame: 0, min_area: 500}}
      - {clip: shots/sh040.mov, text: {query: "person, dog", frame: 12}}

``auto`` / ``text`` (as in a prompts file, see ``sam2_web.find.spec``) find the objects when the job
runs, with or without ``prompts``; in ``defaults`` they apply to every job.

Relative paths (clip, prompts, out, checkpoint) resolve against the manifest's folder. A job
field wins over ``defaults``; hydra ``overrides`` apply to every job (a job's own ``overrides``
come after them). Two checks, as for prompts: the manifest's shape (unknown keys, types, two
jobs writing the same outputs) is a :class:`ManifestError` that stops the batch before
anything runs; a job whose prompts file is missing or invalid only fails that job.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Optional

from sam2_web.documents import DocumentError, LongNumber, read_document, short_repr
from sam2_web.errors import Sam2WebError
from sam2_web.find.spec import parse_auto, parse_text
from sam2_web.jobs import DIRECTIONS, FrameRange, MaskJob, OutputSpec, PromptSet, load_prompts, parse_prompts

SCHEMA_VERSION = 1
_TOP_KEYS = {"$schema", "version", "defaults", "overrides", "split_objects", "jobs"}
# Job fields are named after the `sam2-web mask` options they stand for.
_JOB_KEYS = {"id", "clip", "prompts", "out", "formats", "name", "feather", "grow", "invert", "bit_depth",
             "soft_edges", "edge_band",
             "start", "end", "direction", "model", "checkpoint", "device", "overrides", "split_objects",
             "auto", "text"}
_DEFAULT_KEYS = _JOB_KEYS - {"id", "clip", "name"}


class ManifestError(Sam2WebError, ValueError):
    """A manifest that cannot be read or has the wrong shape; the message names the entry."""


@dataclass(frozen=True)
class JobProblem:
    """Why a job failed: the error's type name and its message."""

    kind: str
    message: str

    @classmethod
    def of(cls, exc: BaseException) -> "JobProblem":
        """The problem an exception describes."""
        return cls(type(exc).__name__, str(exc) or repr(exc))


@dataclass(frozen=True)
class BatchJob:
    """One entry of the manifest.

    Attributes:
        id: unique name of the job in reports (the manifest's ``id``, else the output stem).
        index: position in the manifest (0-based).
        clip: the clip, absolute.
        out_dir: the output folder, absolute.
        stem: file stem of the outputs.
        job: the mask job, or None when it could not be built (see ``problem``).
        problem: why the job cannot run (e.g. its prompts file is invalid), or None.
        split_objects: the manifest allows splitting this job by object over workers.
    """

    id: str
    index: int
    clip: Path
    out_dir: Path
    stem: str
    job: Optional[MaskJob]
    problem: Optional[JobProblem] = None
    split_objects: bool = False


@dataclass(frozen=True)
class Manifest:
    """A loaded manifest: where it is and its jobs in file order."""

    path: Path
    jobs: tuple[BatchJob, ...]


@dataclass(frozen=True)
class CommandLineSettings:
    """What the ``sam2-web batch`` command line says about every job.

    Attributes:
        model, checkpoint, device: replace every job's (None: keep the manifest's).
        overrides: more hydra overrides, applied after the manifest's.
        split_objects: True/False forces splitting by object on/off for every job; None keeps
            the manifest's setting.
    """

    model: Optional[str] = None
    checkpoint: Optional[Path] = None
    device: Optional[str] = None
    overrides: tuple[str, ...] = ()
    split_objects: Optional[bool] = None


# --------------------------------------------------------------------------- reading


def load_manifest(path: str | Path, settings: CommandLineSettings = CommandLineSettings()) -> Manifest:
    """Read a JSON (``.json``) or YAML (anything else) manifest and build its jobs.

    The file is read by the bounded loader (``sam2_web.documents``): at most 16 MB, YAML aliases
    counted as the values they stand for (a "billion laughs" is refused, not expanded).

    Args:
        path: the manifest file.
        settings: command-line settings applied to every job.
    Returns:
        A :class:`Manifest`; jobs whose prompts cannot be used carry a ``problem`` instead of a job.
    Raises:
        ManifestError: the file is missing, unreadable, too large, not JSON/YAML, or not a valid
            manifest.
    """
    path = Path(path).absolute()
    try:
        data = read_document(path, what="manifest")
    except DocumentError as exc:
        raise ManifestError(str(exc)) from None
    return parse_manifest(data, base_dir=path.parent, path=path, settings=settings)


def parse_manifest(data: Any, *, base_dir: str | Path = ".", path: Optional[Path] = None,
                   settings: CommandLineSettings = CommandLineSettings()) -> Manifest:
    """Validate a decoded manifest and build its jobs.

    Args:
        data: the decoded JSON/YAML value.
        base_dir: folder that relative paths are relative to.
        path: the manifest file (for the :class:`Manifest`; default ``base_dir/manifest``).
        settings: command-line settings applied to every job.
    Raises:
        ManifestError: naming the entry (``jobs[2].formats``) and what to write instead.
    """
    base_dir = Path(base_dir).absolute()
    if not isinstance(data, dict):
        raise ManifestError(f'a manifest is a mapping with a "jobs" list, got {_kind(data)}')
    _no_unknown(data, _TOP_KEYS, "the manifest")
    version = data.get("version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise ManifestError(f"version: this sam2_web reads manifest version {SCHEMA_VERSION}, "
                            f"got {short_repr(version)}")
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ManifestError(f"defaults: must be a mapping of job fields, got {_kind(defaults)}")
    _no_unknown(defaults, _DEFAULT_KEYS, "defaults")
    overrides = _overrides(data.get("overrides") or [], "overrides")
    split_default = _bool(data.get("split_objects", False), "split_objects")
    jobs = data.get("jobs")
    if not isinstance(jobs, list) or not jobs:
        raise ManifestError('jobs: the manifest needs a non-empty "jobs" list, e.g. jobs: [{clip: a.mov, prompts: a.json}]')
    built = [_job(entry, k, defaults, overrides, split_default, base_dir, settings) for k, entry in enumerate(jobs)]
    _unique(built)
    return Manifest(path or base_dir / "manifest", tuple(built))


def _job(entry: Any, index: int, defaults: dict, overrides: tuple[str, ...], split_default: bool, base_dir: Path,
         settings: CommandLineSettings) -> BatchJob:
    where = f"jobs[{index}]"
    if not isinstance(entry, dict):
        raise ManifestError(f"{where}: must be a mapping with at least clip and prompts, got {_kind(entry)}")
    _no_unknown(entry, _JOB_KEYS, where)
    merged = {**defaults, **entry}

    def field(key: str) -> str:
        return f"{where}.{key}" if key in entry else f"defaults.{key}"

    finds = merged.get("auto") is not None or merged.get("text") is not None
    for key in ("clip", "prompts", "out"):
        if merged.get(key) is None and not (key == "prompts" and finds):
            hint = "" if key == "clip" else " (in the job or in defaults)"
            if key == "prompts":
                hint += ', or find the objects with auto: {frame: 0} or text: {query: "person"}'
            raise ManifestError(f"{where}: missing {short_repr(key)}{hint}")
    clip = _path(merged["clip"], base_dir, field("clip"))
    out_dir = _path(merged["out"], base_dir, field("out"))
    formats = _formats(merged.get("formats", ["png"]), field("formats"))
    name = _text(merged["name"], field("name")) if merged.get("name") is not None else None
    bit_depth = merged.get("bit_depth", 8)
    if bit_depth not in (8, 16) or isinstance(bit_depth, bool):
        raise ManifestError(f"{field('bit_depth')}: must be 8 or 16, got {short_repr(bit_depth)}")
    feather = _number(merged.get("feather", 0.0), field("feather"))
    if feather < 0:
        raise ManifestError(f"{field('feather')}: must be >= 0 pixels, got {feather}")
    edge_band = None if merged.get("edge_band") is None else _number(merged["edge_band"], field("edge_band"))
    if edge_band is not None and edge_band < 0:
        raise ManifestError(f"{field('edge_band')}: must be >= 0 pixels, got {edge_band}")
    output = OutputSpec(out_dir=out_dir, formats=formats, feather_px=feather,
                        grow_px=_whole(merged.get("grow", 0), field("grow"), minimum=None),
                        invert=_bool(merged.get("invert", False), field("invert")), bit_depth=bit_depth, name=name,
                        soft_edges=_bool(merged.get("soft_edges", False), field("soft_edges")), edge_band_px=edge_band)
    start = _whole(merged.get("start", 0), field("start"))
    end = None if merged.get("end") is None else _whole(merged["end"], field("end"))
    direction = merged.get("direction", "both")
    if direction not in DIRECTIONS:
        raise ManifestError(f"{field('direction')}: must be one of {', '.join(DIRECTIONS)}, "
                            f"got {short_repr(direction)}")
    model = settings.model or (_text(merged["model"], field("model")) if merged.get("model") is not None else None)
    if model is not None:
        _known_model(model, "model=" if settings.model else field("model"))
    device = settings.device or (_text(merged["device"], field("device")) if merged.get("device") is not None else None)
    checkpoint = settings.checkpoint
    if checkpoint is None and merged.get("checkpoint") is not None:
        checkpoint = _path(merged["checkpoint"], base_dir, field("checkpoint"))
    job_overrides = (*overrides, *_overrides(defaults.get("overrides") or [], "defaults.overrides"),
                     *_overrides(entry.get("overrides") or [], f"{where}.overrides"), *settings.overrides)
    split = settings.split_objects
    if split is None:
        split = _bool(merged.get("split_objects", split_default), field("split_objects"))
    stem = _stem(output.stem(clip), field("name") if merged.get("name") is not None else f"{where}.clip")
    job_id = _text(entry["id"], f"{where}.id") if entry.get("id") is not None else stem

    problem = None
    job = None
    try:
        prompts = merged.get("prompts")
        if prompts is None:
            prompt_set = PromptSet(())
        elif isinstance(prompts, (dict, list)):  # written inline in the manifest
            prompt_set = parse_prompts(prompts, base_dir=base_dir)
        else:
            prompt_set = load_prompts(_path(prompts, base_dir, field("prompts")))
        for key, parse in (("auto", parse_auto), ("text", parse_text)):  # the job's own win over the file's
            if merged.get(key) is not None:
                prompt_set = replace(prompt_set, **{key: parse(merged[key], field(key))})
        job = MaskJob(clip=clip, objects=prompt_set.objects, normalized=prompt_set.normalized, output=output,
                      model=model, checkpoint=checkpoint, device=device, overrides=job_overrides,
                      frame_range=FrameRange(start, end), direction=direction, auto=prompt_set.auto,
                      text=prompt_set.text)
    except ManifestError:
        raise
    except Sam2WebError as exc:  # bad prompts fail this job alone
        problem = JobProblem.of(exc)
    return BatchJob(job_id, index, clip, out_dir, stem, job, problem, split)


def _unique(jobs: list[BatchJob]) -> None:
    ids: dict[str, int] = {}
    targets: dict[tuple[Path, str], int] = {}
    for job in jobs:
        target = (job.out_dir, job.stem)
        if target in targets:
            raise ManifestError(
                f"jobs[{job.index}] and jobs[{targets[target]}] both write {job.out_dir}/{job.stem}_*; "
                "give one of them another name or out"
            )
        targets[target] = job.index
        if job.id in ids:
            raise ManifestError(f"jobs[{job.index}]: the id {short_repr(job.id)} is also jobs[{ids[job.id]}]'s; "
                                "give each job its own id")
        ids[job.id] = job.index


# --------------------------------------------------------------------------- values


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a text", type(None): "nothing"}.get(
        type(value), "a number" if isinstance(value, LongNumber) else type(value).__name__)


def _no_unknown(item: dict, allowed: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(item) - allowed)
    if unknown:
        raise ManifestError(f"{where}: unknown key(s) {short_repr(unknown)}; allowed: {', '.join(sorted(allowed))}")


def _text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ManifestError(f"{where}: must be a non-empty text, got {short_repr(value)}")
    return value.strip()


def _path(value: Any, base_dir: Path, where: str) -> Path:
    path = Path(_text(value, where)).expanduser()
    return path if path.is_absolute() else base_dir / path


def _bool(value: Any, where: str) -> bool:
    if not isinstance(value, bool):
        raise ManifestError(f"{where}: must be true or false, got {short_repr(value)}")
    return value


def _number(value: Any, where: str) -> float:
    if isinstance(value, LongNumber):
        raise ManifestError(f"{where}: out of range, got {value}")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ManifestError(f"{where}: must be a number, got {short_repr(value)}")
    return float(value)


def _whole(value: Any, where: str, minimum: Optional[int] = 0) -> int:
    if isinstance(value, LongNumber):
        raise ManifestError(f"{where}: out of range, got {value}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise ManifestError(f"{where}: must be a whole number, got {short_repr(value)}")
    if minimum is not None and value < minimum:
        raise ManifestError(f"{where}: must be >= {minimum}, got {value}")
    return value


def _stem(stem: str, where: str) -> str:
    from sam2_web.jobs.outputs import check_stem

    try:
        return check_stem(stem)
    except Sam2WebError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _known_model(name: str, where: str) -> None:
    from sam2_web.errors import UnknownModelError
    from sam2_web.registry import get_model

    try:
        get_model(name)
    except UnknownModelError as exc:
        raise ManifestError(f"{where}: {exc}") from None


def _formats(value: Any, where: str) -> tuple[str, ...]:
    from sam2_web.jobs.outputs import check_formats

    items = value.split(",") if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(f, str) for f in items):
        raise ManifestError(f"{where}: must be a list of format names (or one comma-separated text), "
                            f"got {short_repr(value)}")
    formats = tuple(f.strip() for f in items if f.strip())
    try:
        check_formats(formats)
    except Sam2WebError as exc:
        raise ManifestError(f"{where}: {exc}") from None
    return formats


def _overrides(value: Any, where: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise ManifestError(f"{where}: must be a list of KEY=VALUE hydra overrides, got {_kind(value)}")
    for k, item in enumerate(value):
        if not isinstance(item, str) or "=" not in item:
            raise ManifestError(f"{where}[{k}]: must be a KEY=VALUE hydra override (e.g. ++model.image_size=512), "
                                f"got {short_repr(item)}")
    return tuple(value)
