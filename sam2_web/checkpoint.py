"""Load a checkpoint into a model with strict keys, and explain what is wrong when it does not fit.

Files are read with ``torch.load(..., weights_only=True)``: a checkpoint is data, never code.
Both the official layout ``{"model": state_dict}`` and a bare state dict are accepted; keys saved
through ``nn.DataParallel`` (``module.``) or ``torch.compile`` (``_orig_mod.``) are remapped by
``filter_state_dict`` instead of bending module names.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import torch
from omegaconf import OmegaConf

from sam2_web.errors import CheckpointError
from sam2_web.registry import get_model, list_models

logger = logging.getLogger(__name__)

StateDict = dict[str, torch.Tensor]

_WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # nn.DataParallel / DistributedDataParallel, torch.compile
_LIST_LIMIT = 10  # keys named per category in a mismatch message
_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's format since PyTorch 1.6
_PICKLE_MAGIC = 0x80  # the legacy format starts with a pickle protocol opcode
_LFS_POINTER = b"version https://git-lfs"
_WEIGHTS_ONLY = "Weights only load failed"  # torch's prefix when weights_only refuses a pickle
# Modules whose globals in a pickle mean "run this": a payload, never a layout mistake.
_CODE_MODULES = frozenset({
    "os", "posix", "nt", "subprocess", "builtins", "__builtin__", "sys", "shutil", "socket", "runpy",
    "importlib", "pty", "code", "codeop", "ctypes", "webbrowser", "pickle", "_pickle", "marshal",
    "types", "functools", "operator",
    # torch names builtins without their module: "GLOBAL eval"
    "eval", "exec", "compile", "getattr", "setattr", "__import__", "open", "input", "breakpoint",
})


def filter_state_dict(state_dict: Mapping[str, torch.Tensor]) -> StateDict:
    """Remap keys saved by a wrapped model onto the plain module's keys.

    Strips ``module.`` (``nn.DataParallel``/DDP) and ``_orig_mod.`` (``torch.compile``) prefixes;
    other keys pass unchanged.

    Args:
        state_dict: tensors by parameter/buffer name.
    Returns:
        A new dict with the remapped keys, in the same order.
    """
    remapped: StateDict = {}
    for key, value in state_dict.items():
        stripped = key
        while stripped.startswith(_WRAPPER_PREFIXES):
            stripped = stripped.split(".", 1)[1]
        remapped[stripped] = value
    return remapped


def _redo(path: Path) -> str:
    """What to do about a broken file: for one in the Hugging Face cache, how to fetch it afresh."""
    parts = path.parts
    if "snapshots" in parts:
        at = parts.index("snapshots")
        if at >= 1 and parts[at - 1].startswith("models--") and len(parts) > at + 2:
            repo = parts[at - 1][len("models--") :].replace("--", "/")
            filename = "/".join(parts[at + 2 :])
            return (
                f"it is in the Hugging Face cache: fetch it again with `hf download {repo} {filename} "
                "--force-download` (or fetch_checkpoint(..., force_download=True)), or pass another checkpoint"
            )
    return "download it again, or pass another checkpoint"


def _read_head(path: Path) -> bytes:
    if not path.exists():
        raise CheckpointError(f"no such file: {path}; check the path, or pass a model name to download one")
    if path.is_dir():
        raise CheckpointError(f"{path} is a folder; pass the checkpoint file inside it (a .pt file)")
    with path.open("rb") as handle:
        return handle.read(64)


def _torch_load(path: Path) -> object:
    """``torch.load`` with every way a bad file fails turned into a ``CheckpointError``."""
    head = _read_head(path)
    if not head:
        raise CheckpointError(f"{path} is empty (an interrupted download?); {_redo(path)}")
    if head.startswith(_LFS_POINTER):
        raise CheckpointError(
            f"{path} is a Git LFS pointer, not the weights; fetch the real file (git lfs pull, or "
            "pass the model name so sam2_web downloads it from the Hub)"
        )
    if path.suffix == ".safetensors":
        raise CheckpointError(f"{path}: safetensors files are not supported; pass the official .pt checkpoint")
    if not head.startswith(_ZIP_MAGIC) and head[0] != _PICKLE_MAGIC:
        raise CheckpointError(f"{path} is not a PyTorch checkpoint (it starts with {head[:16]!r}); {_redo(path)}")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        text = str(error)
        found = re.search(r"GLOBAL ([\w.]+)", text)
        if found and found[1].split(".")[0] in _CODE_MODULES:
            # A payload that would run a program or Python code when unpickled (torch 2.6+ says
            # "... GLOBAL posix.system whose module posix is blocked"): not damaged, dangerous.
            raise CheckpointError(
                f"{path} is unsafe: it holds pickled code ({found[1]}) that would run when loaded, "
                "so it was refused without running it. Do not use this file; get the checkpoint "
                "from its official source"
            ) from error
        if found or _WEIGHTS_ONLY in text:
            # torch refused an object that is not a tensor (a class, a function, a custom type).
            what = f" ({found[1]})" if found else ""
            raise CheckpointError(
                f"{path} holds pickled Python objects{what}, not just tensors, and sam2_web only "
                "loads plain weights (objects could run code when unpickled); re-save it with "
                "torch.save({'model': model.state_dict()}, path)"
            ) from error
        raise CheckpointError(
            f"{path} is corrupt or not a PyTorch checkpoint (it cannot be unpickled); {_redo(path)}"
        ) from error
    except (RuntimeError, EOFError, ValueError) as error:
        # The zip reader raises RuntimeError ("PytorchStreamReader failed ..."), a cut legacy file EOFError.
        # Keep torch's first sentence: the rest is generic advice that repeats ours.
        detail = re.split(r"(?<=\.)\s", str(error).strip(), maxsplit=1)[0] or type(error).__name__
        raise CheckpointError(f"{path} is truncated or corrupt ({detail}); {_redo(path)}") from error


def _unwrap(payload: object, path: Path) -> StateDict:
    """Find the state dict in a loaded payload: ``{"model": sd}``, ``{"state_dict": sd}`` or ``sd``."""
    if not isinstance(payload, Mapping):
        raise CheckpointError(
            f"{path} holds a {type(payload).__name__}, not a state dict; expected "
            "{'model': state_dict} (the official layout) or a bare state dict"
        )
    for wrapper in ("model", "state_dict"):
        if isinstance(payload.get(wrapper), Mapping):
            payload = payload[wrapper]
            break
    expected_layout = "expected {'model': state_dict} (the official layout) or a bare state dict"
    if not payload:
        raise CheckpointError(f"{path} holds an empty dict; {expected_layout}")
    odd = [key for key, value in payload.items() if not (isinstance(key, str) and isinstance(value, torch.Tensor))]
    if odd:
        shown = ", ".join(map(repr, odd[:_LIST_LIMIT]))
        raise CheckpointError(f"{path} has no state dict ({shown} are not named tensors); {expected_layout}")
    return dict(payload)


def read_state_dict(path: str | os.PathLike) -> StateDict:
    """Read a checkpoint file and return its state dict (keys remapped by ``filter_state_dict``).

    Args:
        path: a ``.pt`` file, official layout ``{"model": state_dict}`` or a bare state dict.
    Returns:
        Tensors (on CPU) by parameter name.
    Raises:
        CheckpointError: missing, empty, truncated or corrupt file; pickled objects; no state dict.
    """
    path = Path(path).expanduser()
    return filter_state_dict(_unwrap(_torch_load(path), path))


# -- telling which model a state dict belongs to --------------------------------------------


@dataclass(frozen=True)
class _Shape:
    """What tells the published models apart: trunk width, trunk depth, and the SAM 2.1 extras."""

    embed_dim: int
    blocks: int
    sam21: bool


def _shape_of_state(state: Mapping[str, torch.Tensor]) -> _Shape | None:
    patch = state.get("image_encoder.trunk.patch_embed.proj.weight")
    if patch is None:
        return None  # not a SAM 2 checkpoint: nothing to suggest
    blocks = {key.split(".")[3] for key in state if key.startswith("image_encoder.trunk.blocks.")}
    return _Shape(int(patch.shape[0]), len(blocks), "no_obj_embed_spatial" in state)


def _shape_of_config(config_path: Path) -> _Shape | None:
    cfg = OmegaConf.load(config_path)
    trunk = str(OmegaConf.select(cfg, "model.image_encoder.trunk._target_", default=""))
    if not trunk.endswith(".Hiera"):
        return None  # another family (EdgeTAM, EfficientTAM): these shapes do not describe it
    stages = OmegaConf.select(cfg, "model.image_encoder.trunk.stages", default=None) or (2, 3, 16, 3)
    return _Shape(
        embed_dim=int(OmegaConf.select(cfg, "model.image_encoder.trunk.embed_dim", default=96)),
        blocks=int(sum(stages)),  # the defaults above are the Hiera constructor's
        sam21=bool(OmegaConf.select(cfg, "model.no_obj_embed_spatial", default=False)),
    )


def guess_model_name(state: Mapping[str, torch.Tensor]) -> str | None:
    """Name the registry model whose config fits ``state`` (e.g. ``sam2.1_hiera_s``), or None.

    Compares trunk width, trunk depth and SAM 2.1's extra parameters with each shipped config.
    """
    shape = _shape_of_state(state)
    if shape is None:
        return None
    for spec in list_models():
        if spec.config_path.is_file() and _shape_of_config(spec.config_path) == shape:
            return spec.name
    return None


def _family_hint(file_state: Mapping[str, torch.Tensor], model_state: Mapping[str, torch.Tensor]) -> str:
    file_shape, model_shape = _shape_of_state(file_state), _shape_of_state(model_state)
    if file_shape is None or model_shape is None:
        return (
            "build the model with the config the checkpoint was saved from, or pass strict=False "
            "to load only the keys that fit"
        )
    file_name, model_name = guess_model_name(file_state), guess_model_name(model_state)
    if file_name and file_name != model_name:
        built = f" but the model was built as {model_name}" if model_name else ""
        return f"the file looks like {file_name}{built}; build it with config {get_model(file_name).config}"
    if file_shape.sam21 != model_shape.sam21:
        file_family, model_family = ("SAM 2.1", "SAM 2") if file_shape.sam21 else ("SAM 2", "SAM 2.1")
        return (
            f"this looks like a {file_family} checkpoint (no_obj_embed_spatial is "
            f"{'present' if file_shape.sam21 else 'absent'}) and you used a {model_family} config; "
            f"use a {file_family} config of the same size"
        )
    return "build the model with the config the checkpoint was saved from (same size and overrides)"


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:_LIST_LIMIT])
    return shown + (f", ... ({len(keys) - _LIST_LIMIT} more)" if len(keys) > _LIST_LIMIT else "")


def load_checkpoint(model: torch.nn.Module, path: str | os.PathLike, *, strict: bool = True) -> None:
    """Load the weights in ``path`` into ``model`` (in place).

    Args:
        model: the network, built from the config the checkpoint belongs to.
        path: a ``.pt`` file, official layout ``{"model": state_dict}`` or a bare state dict.
        strict: every model key must be in the file and vice versa; with False, keys present on
            only one side are skipped (and logged), but shapes must still agree.
    Raises:
        CheckpointError: the file is unreadable (see ``read_state_dict``), or its keys/shapes do
            not fit the model; the message names the keys and suggests the config that fits.
    """
    path = Path(path).expanduser()
    state = read_state_dict(path)
    expected = model.state_dict()

    missing = [key for key in expected if key not in state]
    unexpected = [key for key in state if key not in expected]
    reshaped = [
        f"{key}: file {tuple(state[key].shape)} vs model {tuple(expected[key].shape)}"
        for key in expected
        if key in state and state[key].shape != expected[key].shape
    ]
    if reshaped or (strict and (missing or unexpected)):
        parts = [f"{len(missing)} missing", f"{len(unexpected)} unexpected", f"{len(reshaped)} wrong shape"]
        lines = [f"checkpoint {path} does not fit the model ({', '.join(parts)} keys):"]
        if missing:
            lines.append(f"  missing (in the model, not in the file): {_listing(missing)}")
        if unexpected:
            lines.append(f"  unexpected (in the file, not in the model): {_listing(unexpected)}")
        if reshaped:
            lines.append(f"  wrong shape: {_listing(reshaped)}")
        lines.append(f"  fix: {_family_hint(state, expected)}")
        raise CheckpointError("\n".join(lines))

    if missing or unexpected:
        logger.warning(
            "loading %s non-strictly: %d model keys left at their initial values (%s), %d file keys ignored (%s)",
            path, len(missing), _listing(missing), len(unexpected), _listing(unexpected),
        )
    fitting = {key: value for key, value in state.items() if key in expected}
    model.load_state_dict(fitting, strict=strict)
