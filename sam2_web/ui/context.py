"""The app-wide pieces every request shares: config, limits, session store and loaded models."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig

from sam2_web.ui import speed
from sam2_web.ui.fair import FairShare, FrameTurns, TokenBuckets, TrackSlots, client_of
from sam2_web.ui.gpu import LeasePolicy, zero_gpu
from sam2_web.ui.limits import Limits
from sam2_web.ui.state import SessionStore

if TYPE_CHECKING:
    from sam2_web.find.run import FindSettings
    from sam2_web.video.predictor import SAM2VideoPredictor

log = logging.getLogger(__name__)

DownloadProgress = Callable[[int, "int | None"], None]


def with_host_defaults(overrides: Sequence[str], environ: Any = None) -> tuple[str, ...]:
    """``overrides`` plus what the host the app runs on implies, unless given explicitly: on a
    Hugging Face Space (``SPACE_ID`` is set) every request comes through Spaces' proxy, which sets
    ``X-Forwarded-For``, so ``server.trusted_proxy=true`` (else all visitors would be one client)."""
    import os

    environ = os.environ if environ is None else environ
    named = {o.partition("=")[0].lstrip("+") for o in overrides}
    if environ.get("SPACE_ID") and "server.trusted_proxy" not in named:
        return (*overrides, "server.trusted_proxy=true")
    return tuple(overrides)


@dataclass
class AppContext:
    """Shared state of one running app.

    Attributes:
        cfg: the composed app config (``configs/app.yaml`` + the command-line overrides).
        overrides: those overrides, re-applied when another model is chosen.
        store: the per-session store (TTL ``server.session_ttl_s``, at most ``server.max_sessions``
            sessions, ``server.feature_cache_total_mb`` of feature cache shared by them).
        limits: input limits (``limits.*``).
    """

    cfg: DictConfig
    overrides: tuple[str, ...]
    store: SessionStore
    limits: Limits
    fair: FairShare = field(default_factory=FairShare)
    buckets: TokenBuckets = field(default_factory=lambda: TokenBuckets(0, 0))
    tracks: TrackSlots = field(default_factory=TrackSlots)
    leases: LeasePolicy = field(default_factory=LeasePolicy)
    turns: FrameTurns = field(default_factory=lambda: FrameTurns(0))

    @classmethod
    def from_overrides(cls, overrides: Sequence[str] = ()) -> "AppContext":
        """Compose the app config with hydra overrides and build the context.

        Raises:
            hydra/omegaconf errors for a bad override (the model group lists valid choices).
        """
        from sam2_web.loading import set_cache_size
        from sam2_web.models import compose_app_config

        overrides = with_host_defaults(overrides)
        cfg = compose_app_config(list(overrides))
        set_cache_size(int(cfg.server.get("models_cached", 2)))
        server = cfg.server
        fair = FairShare.from_config(server)
        store = SessionStore(ttl_s=float(server.session_ttl_s), max_sessions=int(server.get("max_sessions", 0)),
                             feature_budget_mb=float(server.get("feature_cache_total_mb", 0)),
                             max_per_client=fair.sessions_per_client,
                             max_age_s=float(server.get("session_max_age_s", 0)))
        # On a ZeroGPU Space frames are computed inside GPU leases, whose clock must not run while
        # a Track waits for its turn: there, Tracks run one after another (server.concurrency).
        turns = FrameTurns(0 if zero_gpu() else int(server.concurrency), fair.turn_half_life_s)
        return cls(cfg=cfg, overrides=tuple(overrides), store=store, limits=Limits.from_config(cfg.get("limits")),
                   fair=fair, buckets=TokenBuckets(fair.heavy_burst, fair.heavy_per_minute),
                   tracks=TrackSlots(fair.track_wait_s), leases=LeasePolicy.from_config(cfg.get("gpu") or {}),
                   turns=turns)

    @property
    def tracks_at_once(self) -> int:
        """Tracks in progress at once (Gradio's concurrency for Track): ``server.tracks_at_once``
        when they take turns frame by frame, else ``server.concurrency``."""
        if self.turns.slots > 0:
            return max(1, self.fair.tracks_at_once)
        return int(self.cfg.server.concurrency)

    def client(self, request: Any) -> str:
        """Who made ``request`` (a ``gr.Request``, None in this process), as the limits count clients."""
        return client_of(request, self.fair.trusted_proxy)

    def admit(self, request: Any, what: str, track_sid: str | None = None) -> None:
        """Let a heavy call in, before it waits in the queue: it spends one of its client's tokens
        (``server.heavy_burst``/``heavy_per_minute``); a Track also takes its session's one slot.

        Raises:
            RateLimitedError: the client is over its rate (the message says when to retry).
            SessionBusyError: the session has a Track waiting or running already.
        """
        if track_sid:
            self.tracks.claim(track_sid)
        try:
            self.buckets.take(self.client(request), what)
        except BaseException:
            if track_sid:
                self.tracks.release(track_sid)
            raise

    @property
    def default_model(self) -> str:
        """The model named by the config (``model=...``; ``auto`` is already resolved in ``cfg``)."""
        return str(self.cfg.weights.name)

    @property
    def auto_picked(self) -> bool:
        """True when the default model was picked by ``model=auto`` (not named by the user)."""
        from sam2_web.models import AUTO, requested_model

        return requested_model(self.overrides) == AUTO

    @cached_property
    def where(self) -> speed.Where:
        """The device models run on here, as the speed figures name it."""
        try:
            return speed.where(self.cfg.get("device", "auto"), str(self.cfg.get("precision", "fp32")))
        except ValueError:  # a device this machine lacks: loading will say so; label it as asked
            device = str(self.cfg.get("device"))
            return speed.Where(device, device.split(":")[0])

    @cached_property
    def find(self) -> "FindSettings":
        """How "Find objects" and text prompts search (``find`` and ``limits.max_objects``)."""
        from sam2_web.find.run import find_settings

        return find_settings(cfg=self.cfg)

    @cached_property
    def text_search(self) -> bool:
        """Whether text prompts can run here (the ``text`` extra is installed)."""
        from sam2_web.find.text import text_available

        return text_available()

    def samurai_default(self) -> bool:
        """Whether sessions start with SAMURAI's memory: the config's ``engine.samurai``
        (``memory=samurai``); unset means the model's own setting, off for SAM 2."""
        return bool((self.cfg.get("engine") or {}).get("samurai") or False)

    def model_choices(self) -> list[tuple[str, str]]:
        """(label, name) of every registered model for the dropdown, with its published J&F and its
        s/frame on this device (see ``ui.speed.model_choices``)."""
        return speed.model_choices(self.where)

    def model_info(self) -> str:
        """The line under the model dropdown (what the figures are; why the default was picked)."""
        from sam2_web.registry import get_model

        return speed.picker_info(self.where, get_model(self.default_model).label if self.auto_picked else None)

    def models_markdown(self) -> str:
        """Every model with its published quality and source, speed, Hub repo and licence."""
        return speed.models_markdown(self.where)

    def model_name(self, model: str | None = None) -> str:
        """The registry name of ``model`` (aliases, Hub ids and ``auto`` resolved for this server's
        device); None or empty: the server's default."""
        from sam2_web.models import resolve_model

        return resolve_model(model, self.cfg.get("device", "auto")) if model else self.default_model

    def predictor(self, model: str | None = None,
                  on_progress: DownloadProgress | None = None) -> "SAM2VideoPredictor":
        """The video predictor for ``model`` (default: the configured one), through the one loader
        (loaded once, cached). The checkpoint download (if not cached) reports to
        ``on_progress(done_bytes, total_bytes)``.

        Raises:
            UnknownModelError, HubUnavailableError, CheckpointError.
        """
        from sam2_web.models import load_app_predictor

        name = self.model_name(model)
        # A local checkpoint given on the command line belongs to the configured model only.
        dropped = ("model=",)
        if name != self.default_model:
            dropped += ("checkpoint=", "+checkpoint=", "++checkpoint=")
        overrides = [o for o in self.overrides if not o.startswith(dropped)] + [f"model={name}"]
        cfg = self.cfg if name == self.default_model else None  # composed once at start-up
        return load_app_predictor(overrides, cfg=cfg, progress=on_progress or False)
