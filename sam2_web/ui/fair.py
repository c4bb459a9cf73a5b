"""Fair share of a public server: who a request comes from, a rate limit per client on the heavy
calls, and at most one Track waiting or running per session.

Gradio's queue has one size for everything; a client that could fill it would make every other
user's clicks fail. So heavy calls are admitted before they are queued (Gradio runs an event's
``validator`` before it enters the queue): a client gets a token bucket of heavy calls, and a
session one Track slot. Clicks and reads go through their own concurrency lane and are never
rate-limited.

Admitted Tracks of several sessions then take turns frame by frame (:class:`FrameTurns`): a free
turn goes to the client that tracked least lately, so one client's long or back-to-back Tracks
cannot make another client's Track wait for them to finish.
"""

from __future__ import annotations

import itertools
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, TypeVar

from sam2_web.errors import LimitExceededError
from sam2_web.ui.state import SessionBusyError

LOCAL = "local"  # the client of calls made in this process (tests, scripts)
MAX_CLIENTS_TRACKED = 10000  # token buckets (and tracking usage) kept; the oldest idle ones are forgotten first
T = TypeVar("T")


class RateLimitedError(LimitExceededError):
    """A client sent more heavy requests than the server's rate allows; the message says when to retry."""


@dataclass(frozen=True)
class FairShare:
    """How the server shares itself (``server.*`` in ``configs/app.yaml``).

    Attributes:
        trusted_proxy: the app sits behind a proxy that sets ``X-Forwarded-For`` (Hugging Face
            Spaces does): a client is that header's first address. Off: the connection's address.
        sessions_per_client: sessions one client may hold open at once (0: no limit).
        heavy_burst: heavy calls (open a clip, Track, export, /segment) a client may make at once.
        heavy_per_minute: the rate at which a client's heavy calls come back.
        track_wait_s: how long a Track that is queued but not started holds its session's slot
            (a client that went away frees it after this).
        tracks_at_once: Tracks in progress at once (more wait in the queue); they take turns frame
            by frame, ``server.concurrency`` frames computing at a time.
        turn_half_life_s: how fast a client's past tracking time stops counting against its turns.
    """

    trusted_proxy: bool = False
    sessions_per_client: int = 2
    heavy_burst: int = 12
    heavy_per_minute: float = 12.0
    track_wait_s: float = 900.0
    tracks_at_once: int = 4
    turn_half_life_s: float = 60.0

    @classmethod
    def from_config(cls, server: Any) -> "FairShare":
        """Read the ``server`` node of the app config (missing keys keep their defaults)."""
        known = cls.__dataclass_fields__
        return cls(**{k: server[k] for k in known if server is not None and k in server})


def client_of(request: Any, trusted_proxy: bool) -> str:
    """Who made ``request`` (a ``gr.Request``; None for calls made in this process).

    Behind a trusted proxy, the first address of ``X-Forwarded-For`` (the proxy appends the
    addresses it saw; the first is the visitor's); else the connection's own address. Without a
    trusted proxy the header is ignored: anyone can write it.
    """
    if request is None:
        return LOCAL
    if trusted_proxy:
        headers = {str(k).lower(): v for k, v in dict(getattr(request, "headers", {}) or {}).items()}
        forwarded = str(headers.get("x-forwarded-for", "")).split(",")[0].strip()
        if forwarded:
            return forwarded[:64]
    client = getattr(request, "client", None)
    host = getattr(client, "host", None) if client is not None else None
    return str(host) if host else "unknown"


class TokenBuckets:
    """One token bucket per client: ``burst`` heavy calls at once, refilled at ``per_minute``.

    Args:
        burst: the bucket's size; 0 turns the limit off.
        per_minute: tokens added per minute.
        clock: the time source (tests pass their own).
    """

    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float] = time.monotonic):
        self.burst = int(burst)
        self.rate = float(per_minute) / 60.0
        self._clock = clock
        self._buckets: "OrderedDict[str, tuple[float, float]]" = OrderedDict()  # client -> (tokens, at)
        self._lock = threading.Lock()

    def take(self, client: str, what: str = "heavy") -> None:
        """Spend one of ``client``'s tokens.

        Raises:
            RateLimitedError: none left; the message says in how many seconds one is back.
        """
        if self.burst <= 0:
            return
        with self._lock:
            now = self._clock()
            tokens, at = self._buckets.pop(client, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[client] = (tokens, now)
                wait = math.ceil((1.0 - tokens) / self.rate) if self.rate > 0 else None
                later = f"try again in {wait} s" if wait is not None else "try again later"
                raise RateLimitedError(
                    f"too many {what} requests from your address ({self.burst} at once, "
                    f"{self.rate * 60:g} a minute on this server): {later}"
                )
            self._buckets[client] = (tokens - 1.0, now)
            while len(self._buckets) > MAX_CLIENTS_TRACKED:
                self._buckets.popitem(last=False)


class TrackSlots:
    """At most one Track waiting or running per session.

    A slot is claimed when a Track is admitted (before it waits in the queue) and released when
    it ends; a claim older than ``wait_s`` that never started is given up (its client went away).
    """

    def __init__(self, wait_s: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self.wait_s = float(wait_s)
        self._clock = clock
        self._claims: dict[str, tuple[float, bool]] = {}  # sid -> (claimed at, started)
        self._lock = threading.Lock()

    def claim(self, sid: str) -> None:
        """Reserve ``sid``'s Track slot.

        Raises:
            SessionBusyError: a Track of this session is already waiting or running.
        """
        with self._lock:
            now = self._clock()
            held = self._claims.get(sid)
            if held is not None and (held[1] or now - held[0] < self.wait_s):
                raise SessionBusyError("already tracking: this session has a Track waiting or running; wait "
                                       "for it to finish (or stop it) before asking again")
            self._claims[sid] = (now, False)

    def started(self, sid: str) -> None:
        """The claimed Track of ``sid`` runs now (its slot no longer expires)."""
        with self._lock:
            self._claims[sid] = (self._clock(), True)

    def release(self, sid: str) -> None:
        """``sid``'s Track ended (or was refused after its claim)."""
        with self._lock:
            self._claims.pop(sid, None)


class FrameTurns:
    """Tracks in progress take turns: ``slots`` frames compute at once, and a free turn goes to
    the waiting client that has used the least tracking time lately (each frame's seconds, halved
    every ``half_life_s``; the first to wait among equals).

    One Track at a time in arrival order would let a client that tracks long clips back to back
    (one Track per session, as many as its rate allows) make every other client's Track wait for
    a whole one of its own; taking turns, another client's short Track runs almost as if alone.

    Args:
        slots: frames computing at once (``server.concurrency``); 0 turns the turns off.
        half_life_s: how fast past usage stops counting.
        clock: the time source (tests pass their own).
    """

    def __init__(self, slots: int = 1, half_life_s: float = 60.0, clock: Callable[[], float] = time.monotonic):
        self.slots = int(slots)
        self.half_life_s = float(half_life_s)
        self._clock = clock
        self._cond = threading.Condition()
        self._busy = 0
        self._waiting: list[tuple[int, str]] = []  # (arrival, client)
        self._used: "OrderedDict[str, tuple[float, float]]" = OrderedDict()  # client -> (seconds, at)
        self._arrivals = itertools.count()

    def usage(self, client: str) -> float:
        """``client``'s tracking seconds, decayed to now."""
        with self._cond:
            return self._usage(client, self._clock())

    def _usage(self, client: str, now: float) -> float:
        seconds, at = self._used.get(client, (0.0, now))
        if self.half_life_s <= 0:
            return seconds
        return seconds * 0.5 ** (max(0.0, now - at) / self.half_life_s)

    def _next(self) -> tuple[int, str]:
        now = self._clock()
        return min(self._waiting, key=lambda w: (self._usage(w[1], now), w[0]))

    def acquire(self, client: str) -> None:
        """Wait for ``client``'s turn (at once when a slot is free and nobody is ahead)."""
        if self.slots <= 0:
            return
        with self._cond:
            me = (next(self._arrivals), client)
            self._waiting.append(me)
            try:
                while not (self._busy < self.slots and self._next() == me):
                    self._cond.wait()
            finally:
                self._waiting.remove(me)
                self._cond.notify_all()  # whoever is next now may go (or may go on waiting)
            self._busy += 1

    def release(self, client: str, seconds: float) -> None:
        """``client``'s turn ended after ``seconds`` of work (counted against its next turns)."""
        if self.slots <= 0:
            return
        with self._cond:
            now = self._clock()
            used = self._usage(client, now) + max(0.0, seconds)
            self._used.pop(client, None)
            self._used[client] = (used, now)
            while len(self._used) > MAX_CLIENTS_TRACKED:
                self._used.popitem(last=False)
            self._busy -= 1
            self._cond.notify_all()

    @contextmanager
    def turn(self, client: str) -> Iterator[None]:
        """Hold one turn of ``client`` for a block of work (a Track's preview render)."""
        self.acquire(client)
        start = self._clock()
        try:
            yield
        finally:
            self.release(client, self._clock() - start)

    def each(self, client: str, steps: Iterator[T]) -> Iterator[T]:
        """Yield ``steps`` (a Track's frames), computing each in a turn of ``client``; the turn is
        let go while the caller handles the step. ``steps`` is closed when this ends."""
        try:
            while True:
                self.acquire(client)
                start = self._clock()
                try:
                    step = next(steps)
                except StopIteration:
                    return
                finally:
                    self.release(client, self._clock() - start)
                yield step
        finally:
            close = getattr(steps, "close", None)
            if close is not None:
                close()
