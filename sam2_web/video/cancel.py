"""How callers stop long work: an Event or a callable, checked between frames."""

from __future__ import annotations

import threading
from typing import Callable, Union

Cancel = Union[threading.Event, Callable[[], bool], None]


def cancel_check(cancel: Cancel) -> Callable[[], bool]:
    """A no-argument callable telling whether ``cancel`` is set.

    Args:
        cancel: a ``threading.Event``, a callable returning a truth value, or None (never set).
    Raises:
        TypeError: ``cancel`` is none of these.
    """
    if cancel is None:
        return lambda: False
    if isinstance(cancel, threading.Event):
        return cancel.is_set
    if callable(cancel):
        return lambda: bool(cancel())
    raise TypeError("cancel must be a threading.Event or a callable returning bool")
