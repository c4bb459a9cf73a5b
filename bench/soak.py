"""Soak check on loopback: does the server give memory back, and what does an idle session cost?

    python -m bench.soak [--cycles 50] [--idle 6] [--frames 24] [--size 320x240]

Starts ``python app.py`` on a loopback port (random-weight ``sam2.1_hiera_t`` at image_size 256
from a loopback Hub, as the tests do; the model is named, so ``model=auto`` does not pick one the
Hub does not serve), then:

* cycles: ``--cycles`` times one client does what a visitor does: ``/open_clip``, three clicks
  (``/set_prompts``), ``/track``, ``/export`` (png_zip), ``/close_clip``. The server's resident
  memory (RSS) is read after every cycle. Target: RSS after the last cycle within 10% of RSS
  after cycle 5 (the first cycles load lazily imported code and fill allocator pools once);
* idle: ``--idle`` sessions opened, clicked and tracked, then left open. RSS per idle session
  is set against the per-session budget ``sam2_web.video.budget`` documents (feature-cache
  share + tracking window + recent frames + results + slack), then they are closed and RSS read
  again (it should come back).

Prints markdown tables (RSS by cycle, idle sessions) and exits 1 when a target is missed.
``--env KEY=VALUE`` passes an environment variable to the server (e.g. ``MALLOC_ARENA_MAX=2``)
to compare allocator settings.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # loopback app + clip helpers

from bench._common import markdown_table  # noqa: E402

CLICKS = ((0.2, 0.22), (0.25, 0.25), (0.75, 0.75))  # fractions of the frame: two on the disc, one off


def _mb(n: float) -> str:
    return f"{n / 2**20:.0f}"


def one_visit(client, clip: Path, width: int, height: int, keep_open: bool = False) -> str:
    """open -> 3 clicks -> track -> export -> close (unless ``keep_open``); returns the session id."""
    from gradio_client import handle_file

    sid = client.predict(handle_file(str(clip)), "", api_name="/open_clip")["session"]
    points = [[x * width, y * height] for x, y in CLICKS]
    for k in range(len(points)):
        labels = [1, 1, 0][: k + 1]
        client.predict(sid, 0, 1, json.dumps(points[: k + 1]), json.dumps(labels), "", "", api_name="/set_prompts")
    client.predict(sid, api_name="/track")
    exported = Path(client.predict(sid, "png_zip", api_name="/export"))
    if exported.is_file():
        exported.unlink()  # the client's copy: the bench's own disk stays flat
    if not keep_open:
        client.predict(sid, api_name="/close_clip")
    return sid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cycles", type=int, default=50, help="open/click/track/export/close cycles")
    parser.add_argument("--idle", type=int, default=6, help="idle sessions left open at the end")
    parser.add_argument("--frames", type=int, default=24, help="frames of the clip")
    parser.add_argument("--size", default="320x240", help="clip size WxH")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS growth, cycle 5 to the last")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE", help="server environment")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="more app overrides (e.g. engine.feature_cache_mb=64)")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))

    import psutil
    from gradio_client import Client

    from appserver import TINY, app_checkpoint, run_app
    from clips import make_moving_disc_clip
    from hostile import media_children

    for item in args.env:
        key, _, value = item.partition("=")
        os.environ[key] = value  # run_app hands os.environ to the server
    with tempfile.TemporaryDirectory(prefix="sam2web-soak-") as tmp:
        work = Path(tmp)
        checkpoint = app_checkpoint(work / "ckpt" / "t256.pt")
        clip = make_moving_disc_clip(work / "disc.mp4", args.frames, (width, height), radius=height // 5)[0]
        extra = (f"model={TINY.name}", f"server.max_sessions={max(8, args.idle + 1)}", *args.overrides)
        with run_app(work, checkpoint, extra=extra) as app:
            server = psutil.Process(app.process.pid)
            client = Client(app.url, verbose=False, download_files=str(work / "downloads"))
            rss = [server.memory_info().rss]  # rss[k]: after cycle k (0: started, model loaded)
            seconds = []
            for cycle in range(1, args.cycles + 1):
                start = time.perf_counter()
                try:
                    one_visit(client, clip, width, height)
                except Exception:
                    print(f"cycle {cycle} failed; the app's log ends:\n{app.log()[-3000:]}", file=sys.stderr)
                    raise
                seconds.append(time.perf_counter() - start)
                rss.append(server.memory_info().rss)
                print(f"cycle {cycle}: {seconds[-1]:.1f} s, server RSS {_mb(rss[-1])} MB", file=sys.stderr, flush=True)
            left = media_children(app.process.pid)
            before_idle = server.memory_info().rss
            sessions = [one_visit(client, clip, width, height, keep_open=True) for _ in range(args.idle)]
            time.sleep(1.0)
            with_idle = server.memory_info().rss
            for sid in sessions:
                client.predict(sid, api_name="/close_clip")
            time.sleep(1.0)
            after_idle = server.memory_info().rss
            client.close()
            budget = _idle_budget(checkpoint, args, width, height)
    base = rss[min(5, args.cycles)]
    growth = rss[-1] / base - 1
    marks = sorted({1, 2, 5, 10, 20, 30, 40, args.cycles} & set(range(1, args.cycles + 1)))
    print(f"{args.cycles} cycles of open -> 3 clicks -> track -> export png_zip -> close on a {args.frames}-frame "
          f"{width}x{height} clip (SAM 2.1 tiny, 256 px, CPU); median cycle {sorted(seconds)[len(seconds) // 2]:.1f} s; "
          f"load average {psutil.getloadavg()[0]:.1f} on {psutil.cpu_count()} CPUs (a shared machine)"
          + (f"; server env {' '.join(args.env)}" if args.env else "") + "\n")
    print(markdown_table(("after cycle", *map(str, marks)), [("server RSS (MB)", *(_mb(rss[k]) for k in marks))]))
    print(f"\nstarted (model loaded): {_mb(rss[0])} MB; cycle {min(5, args.cycles)} -> {args.cycles}: "
          f"{100 * growth:+.1f}% (target within {100 * args.tolerance:.0f}%)\n")
    per_session = (with_idle - before_idle) / max(1, args.idle)
    rows = [("RSS before (MB)", _mb(before_idle)), (f"RSS with {args.idle} idle sessions (MB)", _mb(with_idle)),
            ("per idle session (MB)", _mb(per_session)),
            ("per-session budget (MB, sam2_web.video.budget): features + tracking window + frames + results "
             "+ slack", f"{_mb(budget.total)} = {_mb(budget.features)} + {_mb(budget.tracking_window)} + "
             f"{_mb(budget.frames)} + {_mb(budget.results)} + {_mb(budget.slack)}"),
            ("RSS after closing them (MB)", _mb(after_idle))]
    print(markdown_table(("idle sessions", ""), rows))
    missed = []
    if growth > args.tolerance:
        missed.append(f"RSS grew {100 * growth:.1f}% from cycle 5 to {args.cycles}")
    if per_session > budget.total:
        missed.append(f"an idle session takes {_mb(per_session)} MB, over its budget of {_mb(budget.total)} MB")
    if after_idle > before_idle * (1 + args.tolerance):
        missed.append(f"closing the idle sessions left RSS at {_mb(after_idle)} MB, {_mb(before_idle)} MB before")
    if left:
        missed.append(f"ffmpeg/ffprobe left running: {left}")
    for line in missed:
        print("MISSED:", line)
    return 1 if missed else 0


def _idle_budget(checkpoint: Path, args, width: int, height: int):
    """The per-session budget for the bench's clip, one object (``sam2_web.video.budget``)."""
    from sam2_web.build import build_sam2_video_predictor
    from sam2_web.video.budget import session_ram_budget

    predictor = build_sam2_video_predictor("sam2.1_hiera_t", checkpoint, device="cpu",
                                           hydra_overrides_extra=["++model.image_size=256"])
    return session_ram_budget(predictor, width=width, height=height, num_frames=args.frames, objects=1,
                              feature_cache_mb=_feature_mb(args.overrides))


def _feature_mb(overrides: list[str]) -> float:
    for item in overrides:
        key, _, value = item.partition("=")
        if key.lstrip("+") == "engine.feature_cache_mb":
            return float(value)
    from sam2_web.video.options import SessionOptions

    return SessionOptions().feature_cache_mb


if __name__ == "__main__":
    sys.exit(main())
