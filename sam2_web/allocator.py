"""Giving freed memory back to the operating system.

glibc's malloc keeps what a process frees for reuse: per-thread arenas (a server's request
threads each get one) and, once a large block has been freed, a raised mmap threshold (up to
32 MiB), so later tensors of that size come from the arenas too and stay there when freed. A
long-running server whose sessions come and go then holds the high-water mark of every thread
for good. ``malloc_trim`` hands the free pages of every arena back; the engine calls it when a
session closes, when a whole session's tensors have just been freed.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from typing import Any, Optional

_LIBC: Optional[Any] = None
_LOADED = False


def _libc() -> Optional[Any]:
    global _LIBC, _LOADED
    if not _LOADED:
        _LOADED = True
        if sys.platform.startswith("linux"):
            try:
                libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
                _LIBC = libc if hasattr(libc, "malloc_trim") else None  # glibc only (not musl)
            except OSError:
                _LIBC = None
    return _LIBC


def return_free_memory() -> bool:
    """Give the C allocator's free memory back to the operating system (glibc ``malloc_trim``).

    Returns:
        True when glibc released some memory, False when it had none to release or the C library
        is not glibc (macOS, Windows, musl: their allocators return memory on their own terms).
    """
    libc = _libc()
    return bool(libc.malloc_trim(0)) if libc is not None else False
