"""Checkpoints from the Hugging Face Hub, with huggingface_hub's cache.

``huggingface_hub.hf_hub_download`` does the caching, revision pins, ``HF_ENDPOINT`` mirrors,
``HF_HUB_OFFLINE`` and progress bars. This module adds three things on top:

* a file already in the cache is used without asking the Hub again (the published checkpoints do
  not change, and the app should start offline and without a round trip);
* an unreachable Hub fails at once with a message saying what to do, instead of the library's
  ~20 s of retries that end in a generic "check your connection";
* download progress can be reported to a callback, so the web app can draw its own bar.
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Callable
from pathlib import Path

import huggingface_hub
from huggingface_hub import constants as hf_constants
from huggingface_hub.errors import (
    FileMetadataError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import tqdm as hf_tqdm

from sam2_web.errors import CheckpointError, HubUnavailableError, UnknownModelError
from sam2_web.registry import ModelSpec, get_model, list_models

try:  # huggingface_hub 2.x talks through httpx2, 1.x through httpx
    from httpx2 import TransportError
except ImportError:  # pragma: no cover - depends on the installed huggingface_hub
    from httpx import TransportError

ProgressCallback = Callable[[int, "int | None"], None]
"""Called as ``on_progress(downloaded_bytes, total_bytes)``; total is None if the server hides it."""

_CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors")


def _env_flag(name: str) -> bool:
    return os.environ.get(name, "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def _offline_mode() -> bool:
    # huggingface_hub reads HF_HUB_OFFLINE once at import; an app that sets it later must count too.
    return hf_constants.is_offline_mode() or _env_flag("HF_HUB_OFFLINE") or _env_flag("TRANSFORMERS_OFFLINE")


def _endpoint(endpoint: str | None) -> str:
    # Same reason: HF_ENDPOINT is read at import into constants.ENDPOINT; the environment wins.
    return (endpoint or os.environ.get("HF_ENDPOINT") or hf_constants.ENDPOINT).rstrip("/")


def _progress_bar_class(show: bool, on_progress: ProgressCallback | None) -> type[hf_tqdm]:
    """A tqdm class for ``hf_hub_download`` that optionally hides itself and reports to a callback."""

    class ReportingBar(hf_tqdm):
        def __init__(self, *args, **kwargs):
            if not show:
                kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            # A disabled tqdm stops counting, so count here: the callback must work without a bar.
            self._done = int(self.n)
            if on_progress is not None:
                on_progress(self._done, self.total)

        def update(self, n: float | None = 1):
            self._done += int(n or 0)
            if on_progress is not None:
                on_progress(self._done, self.total)
            return super().update(n)

    return ReportingBar


def _unavailable(spec: ModelSpec, endpoint: str, why: str) -> HubUnavailableError:
    return HubUnavailableError(
        f"could not reach the Hub at {endpoint} ({why}) and {spec.repo_id}/{spec.filename} is not "
        "cached; connect, or pass a local checkpoint path with checkpoint=..."
    )


def _offline_error(spec: ModelSpec, cache_dir: str) -> HubUnavailableError:
    return HubUnavailableError(
        f"offline mode is on (HF_HUB_OFFLINE=1 or local_files_only=True) and {spec.repo_id}/"
        f"{spec.filename} is not in the cache at {cache_dir}; unset HF_HUB_OFFLINE once to download "
        "it, or pass a local checkpoint path with checkpoint=..."
    )


def _as_our_error(error: Exception, spec: ModelSpec, revision: str, endpoint: str) -> Exception:
    """Translate a huggingface_hub/httpx error into the sam2_web error a user can act on."""
    where = f"{spec.repo_id}@{revision} on {endpoint}"
    if isinstance(error, RevisionNotFoundError):
        return CheckpointError(
            f"revision {revision!r} does not exist in {spec.repo_id} on {endpoint}; "
            "pin an existing branch, tag or commit with revision=..., or leave it unset for main"
        )
    if isinstance(error, RemoteEntryNotFoundError):
        return CheckpointError(
            f"{spec.filename} is not in {where}; pick another revision, or pass a local checkpoint "
            "path with checkpoint=..."
        )
    if isinstance(error, RepositoryNotFoundError):  # also GatedRepoError
        return CheckpointError(
            f"repository {spec.repo_id} was not found on {endpoint} (or it is private/gated); check "
            "HF_ENDPOINT, log in with `hf auth login` if it is gated, or pass checkpoint=..."
        )
    if isinstance(error, OfflineModeIsEnabled):  # HF_HUB_OFFLINE was set before import
        return _offline_error(spec, "the Hugging Face cache")
    if isinstance(error, HfHubHTTPError):  # 5xx, 403, ...: the Hub is there but will not serve
        status = error.response.status_code if error.response is not None else "an error"
        return _unavailable(spec, endpoint, f"it answered HTTP {status}")
    if isinstance(error, FileMetadataError):
        return _unavailable(spec, endpoint, "it does not answer like a Hub; check HF_ENDPOINT and any proxy")
    if isinstance(error, (TransportError, LocalEntryNotFoundError)):
        return _unavailable(spec, endpoint, f"{type(error).__name__}: {error}")
    return error


def _cached_file(spec: ModelSpec, revision: str | None, cache_dir: str) -> Path | None:
    hit = huggingface_hub.try_to_load_from_cache(
        spec.repo_id, spec.filename, cache_dir=cache_dir, revision=revision
    )
    return Path(hit) if isinstance(hit, str) else None  # the other non-None value means "known absent"


def fetch_checkpoint(
    model: str | ModelSpec,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    progress: bool = True,
    local_files_only: bool | None = None,
    on_progress: ProgressCallback | None = None,
    endpoint: str | None = None,
    force_download: bool = False,
) -> Path:
    """Return the local path of a model's checkpoint, downloading it from the Hub if not cached.

    A cached copy (for ``revision``, default ``main``) is returned without any request. Otherwise
    one quick metadata request checks the Hub answers, then ``hf_hub_download`` fetches the file
    into huggingface_hub's cache (so other tools share it).

    Args:
        model: a registry name or alias (``sam2.1_hiera_t``, ``facebook/sam2.1-hiera-tiny``,
            ``tiny``) or a ``ModelSpec``.
        revision: Hub branch, tag or commit to pin; None means ``main``.
        cache_dir: cache root; None means huggingface_hub's (``HF_HUB_CACHE`` / ``HF_HOME``).
        progress: show the console progress bar (``HF_HUB_DISABLE_PROGRESS_BARS=1`` also hides it).
        local_files_only: never touch the network; None means "if ``HF_HUB_OFFLINE`` is set".
        on_progress: called as ``on_progress(downloaded_bytes, total_bytes)`` while downloading;
            raise from it (e.g. ``sam2_web.errors.CancelledError``) to stop the download.
        endpoint: Hub URL; None means ``HF_ENDPOINT`` or https://huggingface.co.
        force_download: download even if cached (replaces a damaged cached file).
    Returns:
        Path of the checkpoint inside the cache.
    Raises:
        UnknownModelError: ``model`` is not in the registry.
        HubUnavailableError: offline or unreachable, and the file is not cached.
        CheckpointError: the repository, revision or file does not exist on the Hub.
    """
    spec = get_model(model)
    cache_root = str(Path(cache_dir).expanduser() if cache_dir is not None else hf_constants.HF_HUB_CACHE)
    offline = _offline_mode() if local_files_only is None else local_files_only

    cached = None if force_download else _cached_file(spec, revision, cache_root)
    if cached is not None:
        return cached
    if offline:
        raise _offline_error(spec, cache_root)

    hub_url = _endpoint(endpoint)
    wanted = revision or hf_constants.DEFAULT_REVISION
    show_bar = progress and not _env_flag("HF_HUB_DISABLE_PROGRESS_BARS")
    try:
        # hf_hub_download retries an unreachable Hub with backoff for ~20 s before giving up when
        # nothing is cached; one HEAD without retries tells us the same thing at once.
        huggingface_hub.get_hf_file_metadata(
            huggingface_hub.hf_hub_url(spec.repo_id, spec.filename, revision=wanted, endpoint=hub_url),
            endpoint=hub_url,
        )
        path = huggingface_hub.hf_hub_download(
            spec.repo_id,
            spec.filename,
            revision=wanted,
            cache_dir=cache_root,
            endpoint=hub_url,
            tqdm_class=_progress_bar_class(show_bar, on_progress),
            force_download=force_download,
        )
    except (HfHubHTTPError, FileMetadataError, LocalEntryNotFoundError, OfflineModeIsEnabled, TransportError) as error:
        raise _as_our_error(error, spec, wanted, hub_url) from error
    return Path(path)


def _looks_like_path(text: str) -> bool:
    return text.lower().endswith(_CHECKPOINT_SUFFIXES) or text.startswith((".", "~", os.sep)) or os.sep in text


def resolve_checkpoint(model_or_path: str | os.PathLike | ModelSpec, **fetch_options) -> Path:
    """Turn what a user typed into a checkpoint file: a local path, or a model fetched from the Hub.

    An existing file is returned as is. Otherwise a registry name/alias is fetched with
    ``fetch_checkpoint(model_or_path, **fetch_options)``.

    Args:
        model_or_path: a path to a ``.pt`` file, a model name/alias/Hub repo id, or a ``ModelSpec``.
        fetch_options: keyword arguments for ``fetch_checkpoint`` (revision, cache_dir, ...).
    Returns:
        Path of an existing checkpoint file.
    Raises:
        CheckpointError: a path that does not exist or is a folder.
        UnknownModelError: neither an existing file nor a known model name.
        HubUnavailableError: see ``fetch_checkpoint``.
    """
    if isinstance(model_or_path, ModelSpec):
        return fetch_checkpoint(model_or_path, **fetch_options)
    text = os.fspath(model_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    if candidate.is_dir():
        raise CheckpointError(f"{candidate} is a folder; pass the checkpoint file inside it (a .pt file)")
    if isinstance(model_or_path, os.PathLike):
        raise CheckpointError(f"no such file: {candidate}; check the path, or pass a model name instead")
    try:
        spec = get_model(text)
    except UnknownModelError:
        if not _looks_like_path(text):
            raise
        known = ", ".join(spec.name for spec in list_models())
        raise CheckpointError(
            f"no such file: {candidate}; check the path, or pass a model name ({known})"
        ) from None
    return fetch_checkpoint(spec, **fetch_options)


def fetch_repo(
    repo_id: str,
    *,
    revision: str | None = None,
    cache_dir: str | Path | None = None,
    allow_patterns: list[str] | None = None,
    progress: bool = True,
    local_files_only: bool | None = None,
    on_progress: ProgressCallback | None = None,
    endpoint: str | None = None,
    what: str = "the model",
) -> Path:
    """Return the local folder of a whole Hub repository (config, weights, tokenizer ...), as
    ``transformers``' ``from_pretrained`` reads it, downloading what is not cached.

    The same rules as :func:`fetch_checkpoint`: a cached snapshot is used without any request,
    offline mode never touches the network, an unreachable Hub fails at once with a message.

    Args:
        repo_id: e.g. ``IDEA-Research/grounding-dino-tiny``; a local folder is returned as is.
        revision, cache_dir, progress, local_files_only, on_progress, endpoint: as for
            :func:`fetch_checkpoint`.
        allow_patterns: only the files matching these globs (default: all).
        what: how messages name the repository's model ("the text detector").
    Returns:
        The snapshot folder.
    Raises:
        HubUnavailableError: offline or unreachable, and the repository is not cached.
        CheckpointError: the repository or revision does not exist on the Hub.
    """
    local = Path(repo_id).expanduser()
    if local.is_dir():
        return local
    cache_root = str(Path(cache_dir).expanduser() if cache_dir is not None else hf_constants.HF_HUB_CACHE)
    offline = _offline_mode() if local_files_only is None else local_files_only
    try:
        cached = huggingface_hub.snapshot_download(repo_id, revision=revision, cache_dir=cache_root,
                                                   allow_patterns=allow_patterns, local_files_only=True)
        if (Path(cached) / "config.json").is_file():
            return Path(cached)
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, FileNotFoundError):
        pass
    if offline:
        raise HubUnavailableError(
            f"offline mode is on (HF_HUB_OFFLINE=1) and {what} ({repo_id}) is not in the cache at {cache_root}; "
            "unset HF_HUB_OFFLINE once to download it, or give a local folder of it instead of the Hub id"
        )
    hub_url = _endpoint(endpoint)
    wanted = revision or hf_constants.DEFAULT_REVISION
    bar = _progress_bar_class(progress and not _env_flag("HF_HUB_DISABLE_PROGRESS_BARS"), on_progress)
    try:
        # One request without retries says at once whether the Hub answers (see fetch_checkpoint),
        # and lists the files; each is then fetched as fetch_checkpoint fetches a checkpoint.
        info = huggingface_hub.HfApi(endpoint=hub_url).model_info(repo_id, revision=wanted)
        names = [f.rfilename for f in info.siblings or []
                 if allow_patterns is None or any(fnmatch.fnmatch(f.rfilename, p) for p in allow_patterns)]
        if "config.json" not in names:
            raise CheckpointError(f"{what}: {repo_id} on {hub_url} has no config.json; name a transformers model "
                                  "repository, or give a local folder of one")
        for name in names:
            path = huggingface_hub.hf_hub_download(repo_id, name, revision=wanted, cache_dir=cache_root,
                                                   endpoint=hub_url, tqdm_class=bar)
            if name == "config.json":
                folder = Path(path).parent
    except RevisionNotFoundError as error:
        raise CheckpointError(f"revision {wanted!r} does not exist in {repo_id} on {hub_url}; pin an existing "
                              "branch, tag or commit, or leave it unset for main") from error
    except RepositoryNotFoundError as error:
        raise CheckpointError(f"{what}: repository {repo_id} was not found on {hub_url} (or it is private/gated); "
                              "check the name and HF_ENDPOINT, or give a local folder of it") from error
    except (HfHubHTTPError, FileMetadataError, LocalEntryNotFoundError, OfflineModeIsEnabled, TransportError) as error:
        why = (f"it answered HTTP {error.response.status_code}" if isinstance(error, HfHubHTTPError)
               and error.response is not None else f"{type(error).__name__}: {error}")
        raise HubUnavailableError(f"could not download {what} ({repo_id}) from the Hub at {hub_url} ({why}) and it "
                                  "is not cached; connect, or give a local folder of it") from error
    return folder
