"""Counting host syncs: the tensor calls that make the host wait for a GPU, counted on the CPU.

On CUDA, ``.item()``, ``.cpu()``, ``.tolist()``, ``.numpy()``, ``float(t)``, ``if t:``, a
blocking ``.to(device)``, ``torch.tensor(..., device=...)``, boolean-mask indexing and
``nonzero`` all wait until the device has finished everything queued. On the CPU the very same
calls run (and cost nothing), so wrapping them while the CPU engine runs finds every place the
GPU engine would stall, through the same code path.
"""

from __future__ import annotations

import sys
import threading
from collections import Counter
from typing import Any

import torch

_METHODS = ("item", "tolist", "cpu", "numpy", "__bool__", "__float__", "__int__", "__index__", "__array__",
            "nonzero", "unique")
_FUNCTIONS = ("equal", "allclose", "is_nonzero", "nonzero", "masked_select", "unique")
_FACTORIES = ("tensor", "as_tensor")


class HostSyncs:
    """While open, counts host-sync calls made on the thread that opened it (other threads, such
    as the engine's workers, may wait: that is what they are for).

    Attributes:
        calls: ``Counter`` of call names.
        places: ``Counter`` of ``name @ file:line`` (the first caller outside torch), for messages.
    """

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.places: Counter[str] = Counter()
        self._thread = threading.get_ident()
        self._saved: list[tuple[Any, str, Any, bool]] = []

    @property
    def total(self) -> int:
        """Calls counted so far."""
        return sum(self.calls.values())

    def _count(self, name: str) -> None:
        if threading.get_ident() == self._thread:
            self.calls[name] += 1
            frame = sys._getframe(2)
            while frame is not None and ("/torch/" in frame.f_code.co_filename or frame.f_code.co_filename == __file__):
                frame = frame.f_back
            where = f"{frame.f_code.co_filename.split('/')[-1]}:{frame.f_lineno}" if frame else "?"
            self.places[f"{name} @ {where}"] += 1

    def _patch(self, owner: Any, name: str, wrapper_of) -> None:
        had = name in vars(owner)
        original = getattr(owner, name)
        self._saved.append((owner, name, vars(owner).get(name), had))
        setattr(owner, name, wrapper_of(original))

    def __enter__(self) -> "HostSyncs":
        def counted(name):
            def wrap(original):
                def call(*args, **kwargs):
                    self._count(name)
                    return original(*args, **kwargs)
                return call
            return wrap

        for name in _METHODS:
            self._patch(torch.Tensor, name, counted(f"Tensor.{name}"))
        for name in _FUNCTIONS:
            self._patch(torch, name, counted(f"torch.{name}"))

        def blocking_to(original):
            def to(tensor, *args, **kwargs):
                first = args[0] if args else None
                moves = "device" in kwargs or isinstance(first, (str, torch.device, torch.Tensor))
                if moves and not kwargs.get("non_blocking", False):
                    self._count("Tensor.to(device) blocking")
                return original(tensor, *args, **kwargs)
            return to

        self._patch(torch.Tensor, "to", blocking_to)

        def factory(name):
            def wrap(original):
                def make(*args, **kwargs):
                    if kwargs.get("device") is not None:
                        self._count(f"torch.{name}(device=...)")
                    return original(*args, **kwargs)
                return make
            return wrap

        for name in _FACTORIES:
            self._patch(torch, name, factory(name))

        def getitem(original):
            def index(tensor, key):
                keys = key if isinstance(key, tuple) else (key,)
                if any(isinstance(k, torch.Tensor) and k.dtype == torch.bool for k in keys):
                    self._count("Tensor[bool mask]")
                return original(tensor, key)
            return index

        self._patch(torch.Tensor, "__getitem__", getitem)
        return self

    def __exit__(self, *exc: Any) -> None:
        for owner, name, value, had in reversed(self._saved):
            if had:
                setattr(owner, name, value)
            else:
                delattr(owner, name)
        self._saved.clear()
