"""Helpers shared by the benchmarks: identical random weights for the reference and for us.

The reference (PyPI ``sam2``) is only a yardstick here; product code never imports it.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import torch


def reference_config(name: str) -> str:
    """The reference's config string for a model name such as ``sam2.1_hiera_t``."""
    family = "sam2.1" if name.startswith("sam2.1") else "sam2"
    return f"configs/{family}/{name}.yaml"


def build_pair(name: str, overrides: Sequence[str] = (), seed: int = 0):
    """Return ``(reference_model, our_model)`` with the same seeded random weights, on CPU, eval mode.

    The weights travel through an official-format checkpoint (``{"model": state_dict}``), the way
    real weights reach our model.
    """
    from sam2.build_sam import build_sam2 as ref_build

    from sam2_web.build import build_sam2

    torch.manual_seed(seed)
    ref = ref_build(reference_config(name), None, device="cpu", hydra_overrides_extra=list(overrides)).eval()
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / f"{name}.pt"
        torch.save({"model": ref.state_dict()}, ckpt)
        ours = build_sam2(reference_config(name), ckpt, device="cpu", hydra_overrides_extra=list(overrides))
    return ref, ours.eval()


def time_interleaved(fns: Dict[str, Callable[[], object]], warmup: int, repeats: int) -> Dict[str, List[float]]:
    """Time each callable ``repeats`` times after ``warmup`` untimed calls, alternating between them
    so that load from other processes hits all of them alike. Returns seconds per call."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    times: Dict[str, List[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return times


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def median(xs: Sequence[float]) -> float:
    """Median of a non-empty sequence."""
    return statistics.median(xs)
