"""Per-user state of the web app: what one browser tab (or one API client) has built so far.

Gradio keeps only a session id in ``gr.State``; the heavy things (the engine session with its
feature caches, temp files) live in a :class:`SessionStore` on the server, so they can be removed
after an idle time-to-live even when the tab never says goodbye. What the user built on the clip
(objects, prompts, masks) is the engine session's; :class:`AppSession` adds the UI's own state.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import secrets
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Literal

from sam2_web.errors import LimitExceededError, Sam2WebError

if TYPE_CHECKING:
    from sam2_web.media.frames import FrameSource
    from sam2_web.media.probe import VideoInfo
    from sam2_web.video.session import VideoSession

log = logging.getLogger(__name__)

CLOSE_WAIT_S = 60.0  # how long closing a session waits for its Track to stop after the current frame

ClickMode = Literal["positive", "negative", "box"]
CLICK_MODES: tuple[ClickMode, ...] = ("positive", "negative", "box")


class SessionExpiredError(Sam2WebError, KeyError):
    """The session id is unknown: it expired after the idle time-to-live, or never existed."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class SessionBusyError(Sam2WebError, RuntimeError):
    """Another operation (usually tracking) is running on this session."""


@dataclass(frozen=True)
class PendingCorner:
    """The first corner of a box, waiting for the second click."""

    frame_idx: int
    obj_id: int
    x: float
    y: float


@dataclass(frozen=True)
class Candidates:
    """Objects "Find objects" proposed on a frame, waiting for the user to pick (UI state: nothing
    is tracked until a candidate becomes an object).

    Attributes:
        frame_idx: the frame they were found on.
        records: the generator's records (``segmentation`` an (H, W) bool mask), largest first.
    """

    frame_idx: int
    records: tuple


@dataclass
class AppSession:
    """What one user has that is the app's own: the clip's files and the UI state.

    The clip's objects, their names, prompts (with their undo history) and masks are the engine
    session's (``video``, a :class:`~sam2_web.video.session.VideoSession`); the app asks it.

    Attributes:
        sid: random id (also a capability token for the API: unguessable).
        workdir: this session's temp folder; removed with the session.
        model: registry name of the model the engine session runs on.
        source_path: the uploaded clip or image (inside ``workdir``) or None before an upload.
        source_name: the uploaded file's name as the user knows it (messages, export names).
        video: the engine session on the clip (None before an upload).
        frames: the clip's frame source, opened (and checked) once; the engine reads it.
        current: the selected object (the next clicks go to it), or None.
        mode: what a click does (``positive``/``negative`` point, ``box`` corner).
        pending: the first corner of a box being drawn.
        candidates: what "Find objects" proposed on a frame, until picked or dismissed.
        frame_idx: the frame on screen.
        cancel: set by Stop; checked by the tracker between frames.
        lock: held by every edit and by Track (see :meth:`exclusive`).
        last_used: ``time.monotonic()`` of the last request; the TTL counts from here.
        feature_mb: the share of the server's feature-cache budget this session holds.
        history_bytes_per_frame: disk one tracked frame of one object takes (see ``limits``).
        disk_budget_mb: what this session's temp files may take (0: no limit).
        ttl_s: this session's own idle time-to-live (None: the store's).
        client: who opened it (``sam2_web.ui.fair.client_of``): sessions per client are capped.
        created: ``time.monotonic()`` when it was opened (the maximum lifetime counts from here).
        samurai: the "Robust to occlusion (SAMURAI)" switch: True / False, or None for the
            server's setting (``memory=``; see ``sam2_web.video.options.SessionOptions.samurai``).
    """

    sid: str
    workdir: Path
    model: str
    client: str = "local"
    created: float = field(default_factory=time.monotonic)
    source_path: Path | None = None
    source_name: str = ""
    video: "VideoSession | None" = None
    frames: "FrameSource | None" = None
    current: int | None = None
    mode: ClickMode = "positive"
    pending: PendingCorner | None = None
    candidates: Candidates | None = None
    frame_idx: int = 0
    cancel: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    last_used: float = field(default_factory=time.monotonic)
    feature_mb: float = 0.0
    history_bytes_per_frame: int = 0
    disk_budget_mb: float = 0.0
    ttl_s: float | None = None
    samurai: bool | None = None
    _grant: Callable[[float], float] | None = field(default=None, repr=False)

    def reserve_features(self, want_mb: float) -> float:
        """Take up to ``want_mb`` of the server's feature-cache budget (see
        :meth:`SessionStore.grant_features`); returns the grant in MB."""
        if self._grant is None:  # a session outside a store: no shared budget
            self.feature_mb = float(want_mb)
            return self.feature_mb
        return self._grant(want_mb)

    @property
    def has_clip(self) -> bool:
        """True once a clip has been opened."""
        return self.video is not None

    @property
    def info(self) -> "VideoInfo | None":
        """The clip's ``VideoInfo`` (None before an upload)."""
        return None if self.video is None else self.video.info

    @property
    def busy(self) -> bool:
        """True while an operation (usually Track) holds the session."""
        return self.lock.locked()

    @contextlib.contextmanager
    def exclusive(self) -> Iterator["AppSession"]:
        """Hold the session for one operation; refuse at once (never wait) while another holds it.

        Every edit, export and Track goes through here, so a click never lands in the middle of
        a Track and two Tracks never run on one session.

        Raises:
            SessionBusyError: the session is tracking (or busy with another operation).
        """
        if not self.lock.acquire(blocking=False):
            raise SessionBusyError("already tracking: this session is tracking right now; wait for Track to finish "
                                   "or press Stop")
        try:
            yield self
        finally:
            self.lock.release()

    def close_video(self) -> None:
        """Free the engine session (its caches and temp files) and the clip's decoder."""
        try:
            if self.video is not None:
                self.video.close()
        finally:
            self.video = None
            self.feature_mb = 0.0
            frames, self.frames = self.frames, None
            if frames is not None:
                frames.close()

    def close(self, wait_s: float = CLOSE_WAIT_S) -> None:
        """Free everything this session holds, including its temp folder.

        A running Track is asked to stop and waited for (up to ``wait_s``; it stops after its
        current frame), so the engine is never closed under a frame being computed.
        """
        self.cancel.set()
        held = self.lock.acquire(timeout=wait_s)
        try:
            self.close_video()
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            if held:
                self.lock.release()


class SessionStore:
    """Sessions by id, each with its own temp folder, dropped after ``ttl_s`` idle seconds.

    The store also holds the server-wide budgets: at most ``max_sessions`` sessions at once, and
    ``max_per_client`` of them for one client (a new one is refused, the open ones keep working),
    and ``feature_budget_mb`` of image-feature cache shared by all sessions (see
    :meth:`grant_features`). The idle clock counts from a session's last user action (reads do not
    reset it), and no session outlives ``max_age_s``.

    Args:
        ttl_s: idle seconds after which a session and its files are removed.
        root: parent folder of the session folders (a fresh temp folder by default).
        clock: the time source (``time.monotonic``); tests pass their own to age sessions.
        max_sessions: sessions open at once (``server.max_sessions``); 0 = no limit.
        feature_budget_mb: feature cache of all sessions together (``server.feature_cache_total_mb``);
            0 = no shared limit (each session gets what it asks for).
        max_per_client: sessions one client may hold (``server.sessions_per_client``); 0 = no limit.
        max_age_s: a session's longest life, active or not (``server.session_max_age_s``); 0 = no limit.
    """

    def __init__(self, ttl_s: float, root: Path | None = None, clock: Callable[[], float] = time.monotonic,
                 max_sessions: int = 0, feature_budget_mb: float = 0, max_per_client: int = 0,
                 max_age_s: float = 0):
        self.ttl_s = float(ttl_s)
        self.max_sessions = int(max_sessions)
        self.feature_budget_mb = float(feature_budget_mb)
        self.max_per_client = int(max_per_client)
        self.max_age_s = float(max_age_s)
        self.root = Path(root) if root is not None else Path(tempfile.mkdtemp(prefix="sam2_web_ui_"))
        self.root.mkdir(parents=True, exist_ok=True)
        self._clock = clock
        self._sessions: dict[str, AppSession] = {}
        self._lock = threading.Lock()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, sid: object) -> bool:
        return sid in self._sessions

    def create(self, model: str, client: str = "local") -> AppSession:
        """Start a new empty session for ``model`` opened by ``client``; old idle sessions are swept first.

        Raises:
            LimitExceededError: ``max_per_client`` sessions of this client, or ``max_sessions``
                sessions in all, are open already.
        """
        self.sweep()
        sid = secrets.token_urlsafe(16)
        with self._lock:
            # Sessions that only wait for a finished file to be fetched (see expire_after) hold
            # no decoder or model state: they do not count.
            live = [s for s in self._sessions.values() if s.ttl_s is None]
            mine = sum(1 for s in live if s.client == client)
            if self.max_per_client > 0 and mine >= self.max_per_client:
                raise LimitExceededError(
                    f"you have {mine} sessions open, the most one visitor may hold here "
                    f"(server.sessions_per_client); close one (or let it expire after "
                    f"{self.ttl_s / 60:.0f} min idle) and try again"
                )
            if self.max_sessions > 0 and len(live) >= self.max_sessions:
                raise LimitExceededError(
                    f"the server is busy: {len(live)} sessions are open, its limit (server.max_sessions); "
                    "try again in a few minutes"
                )
            workdir = self.root / sid
            workdir.mkdir()
            now = self._clock()
            session = AppSession(sid=sid, workdir=workdir, model=model, client=client, last_used=now, created=now)
            session._grant = functools.partial(self.grant_features, session)
            self._sessions[sid] = session
        return session

    def grant_features(self, session: AppSession, want_mb: float) -> float:
        """Reserve up to ``want_mb`` of the shared feature-cache budget for ``session`` (replacing
        what it held) and return the grant; 0 when the budget is spent (the session then works
        without a cache: re-tracking encodes frames again)."""
        with self._lock:
            if self.feature_budget_mb <= 0:
                grant = float(want_mb)
            else:
                others = sum(s.feature_mb for s in self._sessions.values() if s is not session)
                grant = max(0.0, min(float(want_mb), self.feature_budget_mb - others))
            session.feature_mb = grant
        return grant

    def feature_mb_held(self) -> float:
        """Feature-cache budget held by all sessions together."""
        with self._lock:
            return sum(s.feature_mb for s in self._sessions.values())

    def expire_after(self, session: AppSession, seconds: float) -> None:
        """Let ``session`` expire ``seconds`` after its last use instead of the store's TTL
        (one-call clients such as ``/segment`` only need their file fetched)."""
        session.ttl_s = float(seconds)
        session.last_used = self._clock()

    def get(self, sid: str | None, *, touch: bool = True) -> AppSession:
        """Return the live session ``sid``; a user action (``touch``) restarts its idle clock, a
        read (``touch=False``: showing a frame, fetching masks) does not.

        Raises:
            SessionExpiredError: no such session (expired, closed, or never created).
        """
        with self._lock:
            session = self._sessions.get(sid) if sid else None
        if session is None:
            raise SessionExpiredError(
                "this session has expired or was closed (idle sessions are removed after "
                f"{self.ttl_s / 60:.0f} min); upload the clip again"
            )
        if touch:
            session.last_used = self._clock()
        return session

    def touch(self, session: AppSession) -> None:
        """Mark ``session`` used now (long jobs call this so the TTL counts from their end)."""
        session.last_used = self._clock()

    def find(self, sid: str | None, *, touch: bool = True) -> AppSession | None:
        """The session ``sid`` or None, for callers where "no session yet" is normal (see :meth:`get`)."""
        try:
            return self.get(sid, touch=touch)
        except SessionExpiredError:
            return None

    def close(self, sid: str | None) -> None:
        """Remove session ``sid`` and its files (unknown ids are ignored); never blocks.

        The id is gone at once. A session that is tracking right now is asked to stop and
        freed by a helper thread once its current frame is done (Gradio calls this from its
        event loop when a tab goes away: waiting there would stall every user).
        """
        with self._lock:
            session = self._sessions.pop(sid, None) if sid else None
        if session is None:
            return
        if not session.busy:
            session.close()
            return
        session.cancel.set()
        threading.Thread(target=session.close, name="sam2_web-session-close", daemon=True).start()

    def sweep(self) -> list[str]:
        """Remove sessions idle for longer than the TTL, or older than ``max_age_s``; returns their ids.

        A session whose lock is held (tracking right now) is never swept.
        """
        now = self._clock()
        with self._lock:
            stale = [
                sid for sid, s in self._sessions.items()
                if not s.busy and (now - s.last_used > (self.ttl_s if s.ttl_s is None else s.ttl_s)
                                   or (self.max_age_s > 0 and now - s.created > self.max_age_s))
            ]
            dropped = [self._sessions.pop(sid) for sid in stale]
        for session in dropped:
            log.info("removing idle session %s", session.sid[:6])
            session.close()
        return stale

    def start_sweeper(self, every_s: float | None = None) -> None:
        """Sweep in a daemon thread every ``every_s`` seconds (default: a quarter of the TTL, ≤ 60 s)."""
        if self._sweeper is not None:
            return
        interval = every_s if every_s is not None else max(1.0, min(60.0, self.ttl_s / 4))

        def loop() -> None:
            while not self._stop.wait(interval):
                self.sweep()

        self._sweeper = threading.Thread(target=loop, name="sam2_web-session-sweeper", daemon=True)
        self._sweeper.start()

    def close_all(self) -> None:
        """Stop the sweeper and remove every session and the root folder."""
        self._stop.set()
        with self._lock:
            sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            session.close()
        shutil.rmtree(self.root, ignore_errors=True)
