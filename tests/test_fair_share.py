"""Fair share on a public server: no client can lock the others out.

Each attack seen against the app has a test here that reproduces it against a real ``python
app.py`` on loopback (``server.trusted_proxy=true``, so clients are told apart by the first address
of ``X-Forwarded-For``, as behind Spaces' proxy): a queue flood of ``/track`` calls, one client
holding every session slot, a burst of heavy calls. The rules themselves (token buckets, Track
slots, who a client is, the idle clock and a session's lifetime) are also checked in this process.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from appserver import app_checkpoint, run_app
from clips import make_moving_disc_clip

from sam2_web.errors import LimitExceededError
from sam2_web.ui.fair import FrameTurns, RateLimitedError, TokenBuckets, TrackSlots, client_of
from sam2_web.ui.state import SessionBusyError, SessionExpiredError, SessionStore

gradio_client = pytest.importorskip("gradio_client")
from gradio_client import Client, handle_file  # noqa: E402
from gradio_client.exceptions import AppError, ValidationError  # noqa: E402

CLICK = [30.0, 26.0]
BURST = 4


# --------------------------------------------------------------------------- the rules, in this process


def test_token_bucket_refuses_a_burst_and_says_when_to_retry():
    now = [0.0]
    buckets = TokenBuckets(burst=3, per_minute=6, clock=lambda: now[0])
    for _ in range(3):
        buckets.take("attacker")
    with pytest.raises(RateLimitedError, match=r"try again in 10 s"):
        buckets.take("attacker", "Track")
    buckets.take("honest")  # another client has its own bucket
    now[0] = 10.0  # 6 a minute: one token back every 10 s
    buckets.take("attacker")
    with pytest.raises(RateLimitedError):
        buckets.take("attacker")
    TokenBuckets(burst=0, per_minute=0).take("anyone")  # 0: no limit


def test_one_track_slot_per_session():
    now = [0.0]
    slots = TrackSlots(wait_s=60, clock=lambda: now[0])
    slots.claim("s1")
    with pytest.raises(SessionBusyError, match="already tracking"):
        slots.claim("s1")
    slots.claim("s2")
    slots.started("s1")
    now[0] = 1000.0  # a running Track holds its slot however long it runs
    with pytest.raises(SessionBusyError):
        slots.claim("s1")
    slots.release("s1")
    slots.claim("s1")
    now[0] = 2000.0  # s2's Track never started (its client went away): the slot expires
    slots.claim("s2")


def test_tracks_take_turns_and_the_client_that_tracked_least_goes_first():
    import threading

    now = [0.0]
    turns = FrameTurns(slots=1, half_life_s=60, clock=lambda: now[0])
    order: list[str] = []
    gate = threading.Event()

    def frames(who: str, n: int):
        for _ in range(n):
            order.append(who)
            now[0] += 1.0  # each frame takes a second of the clock
            yield who

    # The attacker's long Track holds the one slot; meanwhile an honest Track and more of the
    # attacker's wait. When the slot frees, the honest client (no usage yet) goes first.
    turns.acquire("attacker")
    waiting = []
    for who in ("attacker", "honest"):
        t = threading.Thread(target=lambda w=who: (gate.set(), list(turns.each(w, frames(w, 3)))))
        t.start()
        waiting.append(t)
        gate.wait()
        gate.clear()
    deadline = time.monotonic() + 10
    while len(turns._waiting) < 2 and time.monotonic() < deadline:  # both are waiting for the slot
        time.sleep(0.01)
    turns.release("attacker", 30.0)
    for t in waiting:
        t.join(10)
    assert order[:3] == ["honest"] * 3 and order[3:] == ["attacker"] * 3
    assert turns.usage("attacker") > 30 > turns.usage("honest") == pytest.approx(3.0, rel=0.1)
    now[0] += 600  # ten half-lives: the past hardly counts any more
    assert turns.usage("attacker") < 0.05
    # Without slots, taking turns is off: steps pass straight through.
    assert list(FrameTurns(slots=0).each("x", iter([1, 2]))) == [1, 2]


def test_a_client_is_the_connection_unless_a_trusted_proxy_says_otherwise():
    request = SimpleNamespace(client=SimpleNamespace(host="127.0.0.1"),
                              headers={"X-Forwarded-For": "203.0.113.7, 10.1.1.1"})
    assert client_of(request, trusted_proxy=False) == "127.0.0.1"  # anyone can write the header
    assert client_of(request, trusted_proxy=True) == "203.0.113.7"
    assert client_of(SimpleNamespace(client=SimpleNamespace(host="198.51.100.2"), headers={}), True) == "198.51.100.2"
    assert client_of(None, True) == "local"


def test_on_a_space_the_proxy_is_trusted_unless_said_otherwise():
    from sam2_web.ui.context import with_host_defaults

    assert with_host_defaults(["device=cpu"], {}) == ("device=cpu",)
    assert with_host_defaults(["device=cpu"], {"SPACE_ID": "me/app"}) == ("device=cpu", "server.trusted_proxy=true")
    assert with_host_defaults(["server.trusted_proxy=false"], {"SPACE_ID": "me/app"}) == ("server.trusted_proxy=false",)


def test_sessions_per_client_idle_clock_and_lifetime(tmp_path):
    now = [0.0]
    store = SessionStore(ttl_s=100, root=tmp_path / "s", clock=lambda: now[0], max_per_client=2, max_age_s=1000)
    a, b = store.create("m", "10.0.0.1"), store.create("m", "10.0.0.1")
    with pytest.raises(LimitExceededError, match="you have 2 sessions open"):
        store.create("m", "10.0.0.1")
    c = store.create("m", "10.0.0.2")  # another visitor is not held back
    # Reads do not keep a session alive; user actions do.
    for t in range(0, 200, 5):
        now[0] = float(t)
        store.get(a.sid, touch=False)
        store.get(b.sid)
        store.get(c.sid)
    assert store.sweep() == [a.sid]
    with pytest.raises(SessionExpiredError):
        store.get(a.sid)
    d = store.create("m", "10.0.0.1")  # its slot is free again (created at t=195)
    # However active, no session outlives the lifetime (unless it is tracking right now).
    now[0] = 1001.0
    for session in (b, c, d):
        store.get(session.sid)
    b.lock.acquire()
    assert store.sweep() == [c.sid]  # b is as old but tracking right now; d is younger
    b.lock.release()
    assert store.sweep() == [b.sid] and d.sid in store
    store.close_all()


# --------------------------------------------------------------------------- the attacks, against the app


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("fair")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    return make_moving_disc_clip(work / "disc.mp4", 6, (160, 120), radius=20)[0]


@pytest.fixture(scope="module")
def app(work):
    checkpoint = app_checkpoint(work / "ckpt" / "t256.pt")
    extra = ("server.trusted_proxy=true", f"server.heavy_burst={BURST}", "server.heavy_per_minute=6",
             "server.sessions_per_client=2", "server.max_sessions=8", "server.max_queue=16")
    with run_app(work, checkpoint, extra=extra) as running:
        yield running
        print(running.log()[-3000:])


def client_at(app, address: str, folder: Path) -> Client:
    """A gradio client that the app, behind its "proxy", sees as ``address``."""
    return Client(app.url, verbose=False, headers={"X-Forwarded-For": f"{address}, 127.0.0.1"},
                  download_files=str(folder))


def open_and_click(client: Client, clip: Path) -> str:
    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    client.predict(sid, 0, 1, json.dumps([CLICK]), "[1]", "", "", api_name="/set_prompts")
    return sid


def test_a_track_flood_is_refused_at_once_and_others_keep_clicking(app, clip, tmp_path):
    attacker = client_at(app, "198.51.100.66", tmp_path / "a")
    honest = client_at(app, "203.0.113.10", tmp_path / "h")
    sid = open_and_click(attacker, clip)
    jobs = [attacker.submit(sid, api_name="/track") for _ in range(18)]
    refusals, finished = [], 0
    for job in jobs:
        try:
            job.result(timeout=300)
            finished += 1
        except (ValidationError, AppError) as error:
            refusals.append(str(error))
    print("18 /track calls:", finished, "ran;", len(refusals), "refused, e.g.", refusals[:1])
    assert finished == 1 and len(refusals) == 17
    assert all("already tracking" in r or "try again in" in r for r in refusals)
    # Meanwhile (and after) another visitor opens a clip and clicks: nothing of theirs is refused.
    start = time.monotonic()
    other = open_and_click(honest, clip)
    masks = honest.predict(other, 0, api_name="/frame_masks")
    assert masks["objects"] and time.monotonic() - start < 120
    for c, s in ((attacker, sid), (honest, other)):
        c.predict(s, api_name="/close_clip")
        c.close()


def test_one_client_cannot_hold_every_session_or_hammer_heavy_calls(app, clip, tmp_path):
    hog = client_at(app, "198.51.100.77", tmp_path / "hog")
    honest = client_at(app, "203.0.113.20", tmp_path / "h")
    first = hog.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    second = hog.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    with pytest.raises((ValidationError, AppError), match="2 sessions open"):
        hog.predict(handle_file(str(clip)), "", api_name="/open_clip")
    mine = honest.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]  # not held back
    # Heavy calls beyond the burst are refused before they queue, saying when to retry.
    messages = []
    for _ in range(BURST + 1):
        try:
            hog.predict(first, "png_zip", api_name="/export")
        except (ValidationError, AppError) as error:
            messages.append(str(error))
    print("hog's heavy calls refused:", messages[-1:])
    assert any("too many" in m and "try again in" in m for m in messages)
    for c, sids in ((hog, (first, second)), (honest, (mine,))):
        for s in sids:
            c.predict(s, api_name="/close_clip")
        c.close()
