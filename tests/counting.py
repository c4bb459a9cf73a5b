"""Counting calls of a model method in engine tests (the real method still runs)."""

from __future__ import annotations


class Counter:
    """Counts calls of ``model.<name>`` while the context is open; the real method still runs."""

    def __init__(self, model, name):
        self.model, self.name, self.calls = model, name, 0
        self.original = getattr(model, name)

        def counted(*args, **kwargs):
            self.calls += 1
            return self.original(*args, **kwargs)

        setattr(model, name, counted)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        delattr(self.model, self.name)  # back to the class's method
