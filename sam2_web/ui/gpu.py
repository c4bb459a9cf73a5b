"""Hugging Face ZeroGPU leases: how long each GPU call asks for, and Tracks longer than one lease.

On a ZeroGPU Space a GPU is attached only while a function decorated with ``spaces.GPU(duration=...)``
runs, and a call that outlives its ``duration`` is killed. Elsewhere (CPU Spaces, a laptop, CI)
``spaces`` is absent or its decorator returns the function unchanged, and everything here runs
as plain calls. So:

* every call asks for what its work needs: :func:`track_lease_seconds` is frames x this device's
  measured s/frame for that many objects (``sam2_web.speeds``) x a margin, plus a fixed start-up,
  capped at the lease limit; a click or a model load asks for :attr:`LeasePolicy.short_s`;
* a Track that does not fit one lease runs as several (:func:`track_in_leases`): each lease runs
  the engine's resumable pass until its frame budget is spent, the next one resumes where it
  stopped (finished frames are read back from the store, not recomputed), progress goes on
  from where it was, and Stop still ends the whole Track.

The numbers are settings (``gpu:`` in ``configs/app.yaml``, read by :meth:`LeasePolicy.from_config`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Optional

from sam2_web.errors import CancelledError
from sam2_web.video.cancel import Cancel, cancel_check

try:  # only present on Hugging Face Spaces (and in the dev extra, where it is a no-op)
    import spaces  # type: ignore[import-not-found]
except ImportError:
    spaces = None

# Upper bound of one GPU lease in seconds when nothing else is configured.
GPU_SECONDS = 120


@dataclass(frozen=True)
class LeasePolicy:
    """How long GPU leases are (the ``gpu:`` settings of ``configs/app.yaml``).

    Args:
        max_s: the longest lease this Space may ask for; a longer Track runs as several leases.
        short_s: a click, a model load, anything that is one model call or so.
        margin: the measured time is multiplied by this (the device may be shared or throttled).
        startup_s: added to every lease: the ZeroGPU worker start, moving the model to the GPU,
            the first frame's features.
        fallback_s_per_frame: seconds per frame and object when this device has not measured the
            model yet (a cautious GPU figure).
    Raises:
        ValueError: (from :meth:`validate`) settings that cannot make a lease.
    """

    max_s: float = GPU_SECONDS
    short_s: float = 30.0
    margin: float = 1.5
    startup_s: float = 10.0
    fallback_s_per_frame: float = 0.15

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ValueError for settings that cannot make a lease."""
        if not (self.max_s > 0 and 0 < self.short_s and self.margin >= 1 and self.startup_s >= 0
                and self.fallback_s_per_frame > 0):
            raise ValueError(
                "gpu settings: max_s and short_s must be > 0, margin >= 1, startup_s >= 0, "
                f"fallback_s_per_frame > 0; got {self}"
            )
        if self.startup_s >= self.max_s:
            raise ValueError(f"gpu.startup_s ({self.startup_s}) must be below gpu.max_s ({self.max_s})")

    @classmethod
    def from_config(cls, section: Any) -> "LeasePolicy":
        """The policy of a config's ``gpu`` section (a mapping; missing keys keep their defaults).

        Raises:
            ValueError: unknown keys or settings that cannot make a lease.
        """
        values = dict(section or {})
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown gpu setting(s) {unknown}; known: {sorted(known)}")
        return cls(**{k: float(v) for k, v in values.items()})

    def short(self) -> int:
        """Seconds for a click or a model load."""
        return int(math.ceil(min(self.short_s, self.max_s)))


def seconds_per_frame(speed: Any, objects: int, policy: LeasePolicy) -> float:
    """Seconds one tracked frame with ``objects`` objects takes: the measured figure of ``speed``
    (a :class:`sam2_web.speeds.Speed`, or None) or ``objects x policy.fallback_s_per_frame``."""
    measured = speed.per_frame(objects) if speed is not None else None
    return measured if measured else max(1, objects) * policy.fallback_s_per_frame


def track_lease_seconds(frames: int, objects: int, s_per_frame: float, policy: LeasePolicy) -> int:
    """The ``duration`` to ask for to track ``frames`` frames: ``frames x s_per_frame x margin +
    startup``, rounded up, at least :meth:`LeasePolicy.short` and at most ``max_s``.

    Raises:
        ValueError: a negative frame count or a non-positive ``s_per_frame``.
    """
    if frames < 0 or s_per_frame <= 0:
        raise ValueError(f"frames must be >= 0 and s_per_frame > 0, got {frames}, {s_per_frame}")
    need = frames * s_per_frame * policy.margin + policy.startup_s
    return int(math.ceil(min(max(need, policy.short()), policy.max_s)))


def frames_per_lease(s_per_frame: float, policy: LeasePolicy) -> int:
    """How many frames one full-length lease tracks with its margin (at least 1)."""
    return max(1, int((policy.max_s - policy.startup_s) / (s_per_frame * policy.margin)))


def zero_gpu() -> bool:
    """True on a ZeroGPU Space (``SPACES_ZERO_GPU``), where a GPU comes in leases of bounded length;
    elsewhere a Track runs in one go."""
    return spaces is not None and bool(getattr(getattr(spaces, "config", None), "Config", None)
                                       and spaces.config.Config.zero_gpu)


def on_gpu(fn: Callable, duration: Any = GPU_SECONDS) -> Callable:
    """``fn`` decorated with ``spaces.GPU(duration=duration)`` where ``spaces`` is installed, else
    ``fn`` itself. ``duration`` is seconds, or a callable taking ``fn``'s arguments and returning
    seconds (``spaces`` evaluates it per call); outside ZeroGPU ``spaces`` returns ``fn`` unchanged."""
    if spaces is None:
        return fn
    return spaces.GPU(duration=duration)(fn)


def short_call(fn: Callable, policy: Optional[LeasePolicy] = None) -> Callable:
    """``fn`` on a short lease (a click, a model load)."""
    return on_gpu(fn, (policy or LeasePolicy()).short())


@dataclass
class LeasePlan:
    """The leases a Track will take (for the UI to say so, and for tests).

    Attributes:
        frames: frames the Track computes (those not resumed from the store).
        s_per_frame: the estimate used.
        per_lease: frames one lease tracks.
        durations: the seconds each lease asks for, in order.
    """

    frames: int
    s_per_frame: float
    per_lease: int
    durations: list[int]


def plan_track(frames: int, objects: int, speed: Any, policy: LeasePolicy) -> LeasePlan:
    """Split ``frames`` tracked frames with ``objects`` objects into leases (see :func:`track_in_leases`)."""
    s = seconds_per_frame(speed, objects, policy)
    per_lease = frames_per_lease(s, policy)
    counts = [per_lease] * (frames // per_lease) + ([frames % per_lease] if frames % per_lease else [])
    return LeasePlan(frames, s, per_lease, [track_lease_seconds(n, objects, s, policy) for n in counts or [0]])


def track_in_leases(
    session: Any,
    *,
    frames: int,
    objects: int,
    speed: Any = None,
    policy: Optional[LeasePolicy] = None,
    progress: Optional[Callable[[int, int], None]] = None,
    cancel: Cancel = None,
    lease: Optional[Callable[[Callable, int], Callable]] = None,
    **propagate_args: Any,
) -> Iterator[Any]:
    """Track through as many GPU leases as the work needs, yielding what ``session.propagate`` yields.

    Each lease is ``lease(run, duration)(...)``, a generator that runs
    ``session.propagate(**propagate_args)`` until it has computed its share of frames, then
    stops the pass (the engine keeps what it finished); the next lease calls ``propagate`` with
    the same arguments and the engine resumes at the first unfinished frame. Frames a lease
    takes back from the store are yielded again but not reported twice to ``progress``.

    Args:
        session: has ``propagate(progress=..., cancel=..., **propagate_args)`` that resumes a
            cancelled pass (``sam2_web.video.session.VideoSession`` does).
        frames: frames the Track will go through (e.g. 2 x clip length - 1 for both directions).
        objects: objects tracked (the speed depends on it).
        speed: this device's :class:`~sam2_web.speeds.Speed` for the model, or None.
        policy: lease settings (default: :class:`LeasePolicy` defaults).
        progress: ``progress(done, total)`` after every frame, never going back across leases.
        cancel: the user's Stop (an Event or a callable); ends the Track with CancelledError.
        lease: wraps a generator function into a GPU call of ``duration`` seconds (default
            :func:`on_gpu`; tests pass a recorder).
        propagate_args: passed to ``session.propagate`` (``direction``, ``start_frame`` ...).
    Yields:
        Each frame's result, in the engine's order.
    Raises:
        CancelledError: the user stopped the Track (finished frames stay stored).
    """
    policy = policy or LeasePolicy()
    lease = lease or on_gpu
    user_cancelled = cancel_check(cancel)
    s = seconds_per_frame(speed, objects, policy)
    per_lease = frames_per_lease(s, policy)
    reported = 0

    def report(done: int, total: int) -> None:
        nonlocal reported
        if done > reported:
            reported = done
            if progress:
                progress(done, total)

    def run(budget: int) -> Iterator[Any]:
        computed = 0

        def spent() -> bool:
            return user_cancelled() or computed >= budget

        def counted(done: int, total: int) -> None:
            nonlocal computed
            if done > reported:  # a frame this pass computed (not one read back from the store)
                computed += 1
            report(done, total)

        yield from session.propagate(progress=counted, cancel=spent, **propagate_args)

    while True:
        remaining = max(frames - reported, 0)
        budget = min(per_lease, remaining) if remaining else per_lease
        call = lease(run, track_lease_seconds(budget, objects, s, policy))
        try:
            yield from call(budget)
            return
        except CancelledError:
            if user_cancelled():
                raise
            # This lease's budget is spent: the next lease resumes the pass.
