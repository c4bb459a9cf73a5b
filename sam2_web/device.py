"""Device and precision choice: one place decides where the model runs and in which dtype."""

from __future__ import annotations

import contextlib
from typing import ContextManager

import torch

PRECISIONS = ("fp32", "bf16")


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """Return the device to run on.

    Args:
        device: ``None`` or ``"auto"`` picks CUDA, then Apple MPS, then CPU; anything else is passed
            to ``torch.device`` (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``).

    Raises:
        ValueError: a device that this machine does not have (e.g. ``"cuda"`` with no GPU).
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} was asked for but this machine has no CUDA GPU; use device=auto or cpu")
    if dev.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device={device!r} was asked for but MPS is not available here; use device=auto or cpu")
    return dev


def check_precision(precision: str) -> str:
    """Return ``precision`` if it is one of :data:`PRECISIONS`.

    Raises:
        ValueError: an unknown precision name.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


def autocast_context(device: torch.device, precision: str = "fp32") -> ContextManager:
    """Return the autocast context for ``precision`` on ``device``.

    bf16 is opt-in (it changes numbers) and only used on CUDA; everywhere else this is a no-op
    context, so CPU runs keep the reference's float32 numbers.

    Raises:
        ValueError: an unknown precision name.
    """
    if check_precision(precision) == "bf16" and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def enable_fast_cuda_math(device: torch.device) -> None:
    """Turn on TF32 matmuls on Ampere+ GPUs (the reference's demos do the same); no-op elsewhere."""
    if device.type == "cuda" and torch.cuda.get_device_properties(device).major >= 8:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
