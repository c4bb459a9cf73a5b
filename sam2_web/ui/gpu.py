"""Hugging Face ZeroGPU support: ``spaces.GPU`` when the ``spaces`` package is there, else nothing.

On a ZeroGPU Space a GPU is attached only while a function decorated with ``spaces.GPU`` runs;
elsewhere (CPU Spaces, a laptop, CI) the package is absent and functions run unchanged.
"""

from __future__ import annotations

from collections.abc import Callable

try:  # only present on Hugging Face Spaces
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

# Upper bound of one GPU lease in seconds; tracking a long clip needs more than a click.
GPU_SECONDS = 120


def on_gpu(fn: Callable, duration: int = GPU_SECONDS) -> Callable:
    """Return ``fn`` decorated with ``spaces.GPU(duration=...)`` on Spaces, ``fn`` itself otherwise."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)
