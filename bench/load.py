"""Load check on loopback: well-behaved clients with and without a hostile one.

    python -m bench.load [--clients 3] [--rounds 2] [--frames 8] [--repeats 2] [--max-seconds 240]

Starts ``python app.py`` on a loopback port (random-weight ``sam2.1_hiera_t`` at image_size 256
from a loopback Hub, as the tests do; the model is named on the command line, since ``model=auto``
picks from the shipped speed figures a model the loopback Hub does not serve), then runs two
phases of the same work:

* baseline: ``--clients`` clients at once, each ``--rounds`` times: ``/open_clip`` a small clip,
  three clicks (``/set_prompts``), ``/track``, ``/close_clip``;
* hostile: the same, while one more client keeps uploading hostile files (an HLS live playlist,
  a playlist pulling a file from elsewhere on the server, an ffconcat list, a 20000-frame mkv,
  a raw H.264 stream 4112 px wide, a decompression-bomb PNG) for as long as the others run.

The phases alternate (``--repeats`` of each) so that load from other processes hits both alike.
Bounded in count (clients x rounds x repeats) and in time (``--max-seconds`` per phase: a phase
stops starting new rounds after it). Prints one markdown table: the latency of the well-behaved
clients' calls in each phase (median, 90th percentile, max), the hostile uploads' refusals, and
whether any ffmpeg/ffprobe process was left behind.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # loopback app + clip helpers

from bench._common import markdown_table  # noqa: E402

CLICKS = ([30.0, 26.0], [40.0, 30.0], [120.0, 90.0])


def _well_behaved(url: str, clip: Path, rounds: int, deadline: float, folder: Path, times: dict, lock) -> int:
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=str(folder))
    done = 0
    try:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break

            def timed(op: str, *args, api_name: str):
                start = time.perf_counter()
                result = client.predict(*args, api_name=api_name)
                with lock:
                    times[op].append(time.perf_counter() - start)
                return result

            sid = timed("open_clip", handle_file(str(clip)), "", api_name="/open_clip")["session"]
            for k, point in enumerate(CLICKS):
                labels = [1] * (k + 1)
                timed("set_prompts", sid, 0, 1, json.dumps(list(CLICKS[:k + 1])), json.dumps(labels), "", "",
                      api_name="/set_prompts")
            timed("track", sid, api_name="/track")
            timed("close_clip", sid, api_name="/close_clip")
            done += 1
    finally:
        client.close()
    return done


def _hostile(url: str, files: list[Path], stop: threading.Event, folder: Path, refusals: list, lock) -> None:
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(url, verbose=False, download_files=str(folder))
    try:
        k = 0
        while not stop.is_set():
            path = files[k % len(files)]
            start = time.perf_counter()
            try:
                client.predict(handle_file(str(path)), "", api_name="/open_clip")
                outcome = "ACCEPTED"
            except AppError as error:
                outcome = str(error)[:60]
            with lock:
                refusals.append((path.name, time.perf_counter() - start, outcome))
            k += 1
    finally:
        client.close()


def _hostile_files(folder: Path) -> list[Path]:
    from hostile import bomb_png, concat_list, hls_live_playlist, hls_playlist, tiny_frame_mkv, ts_segment, wide_clip

    (folder / "server_media").mkdir(parents=True)
    secret = ts_segment(folder / "server_media" / "secret.ts")
    up = folder / "uploads"
    up.mkdir()
    return [
        hls_live_playlist(up / "live.mp4", "../server_media/secret.ts"),
        hls_playlist(up / "relative.mkv", ["../server_media/secret.ts"], repeat=400),
        concat_list(up / "concat.mp4", [str(secret)] * 3),
        tiny_frame_mkv(up / "tiny.mkv", 20000),
        wide_clip(up / "raw.mp4", 4112, fmt="h264"),
        bomb_png(up / "bomb.png"),
    ]


def _phase(url: str, clip: Path, args, folder: Path, hostile_files: list[Path] | None) -> tuple[dict, list, float]:
    times: dict = defaultdict(list)
    refusals: list = []
    lock = threading.Lock()
    stop = threading.Event()
    deadline = time.monotonic() + args.max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients + 1) as pool:
        attacker = None
        if hostile_files:
            attacker = pool.submit(_hostile, url, hostile_files, stop, folder / "hostile", refusals, lock)
        good = [pool.submit(_well_behaved, url, clip, args.rounds, deadline, folder / f"c{k}", times, lock)
                for k in range(args.clients)]
        rounds = sum(f.result() for f in good)
        stop.set()
        if attacker is not None:
            attacker.result()
    times["rounds completed"] = [rounds]
    return times, refusals, time.perf_counter() - start


def _cpu_seconds(process) -> float:
    """CPU time of ``process`` and of its children that have ended (ffprobe runs, ffmpeg decoders)."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return f"{statistics.median(ordered):.2f} / {p90:.2f} / {ordered[-1]:.2f}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3, help="well-behaved clients at once")
    parser.add_argument("--rounds", type=int, default=2, help="open/click/track/close rounds per client")
    parser.add_argument("--frames", type=int, default=8, help="frames of the small clip")
    parser.add_argument("--max-seconds", type=float, default=240, help="per phase: no new round after this")
    parser.add_argument("--repeats", type=int, default=2, help="phases per condition, alternating")
    args = parser.parse_args(argv)

    import psutil

    from appserver import TINY, app_checkpoint, run_app
    from clips import make_moving_disc_clip
    from hostile import media_children

    with tempfile.TemporaryDirectory(prefix="sam2web-load-") as tmp:
        work = Path(tmp)
        checkpoint = app_checkpoint(work / "ckpt" / "t256.pt")
        clip = make_moving_disc_clip(work / "disc.mp4", args.frames, (160, 120), radius=20)[0]
        files = _hostile_files(work / "hostile_files")
        base: dict = defaultdict(list)
        hostile: dict = defaultdict(list)
        refusals: list = []
        wall = [0.0, 0.0]
        cpu = [0.0, 0.0, 0.0, 0.0]  # server and clients, without and with the hostile client
        with run_app(work, checkpoint, extra=(f"model={TINY.name}", "limits.max_frames=1000")) as app:
            server, here = psutil.Process(app.process.pid), psutil.Process()
            # Phases alternate (without, with, without, with ...) so that load from other
            # processes on the machine hits both conditions alike.
            for k in range(args.repeats):
                for with_hostile, into in ((False, base), (True, hostile)):
                    before = (_cpu_seconds(server), _cpu_seconds(here))
                    times, refused, seconds = _phase(app.url, clip, args, work / f"p{k}{int(with_hostile)}",
                                                     files if with_hostile else None)
                    for op, values in times.items():
                        into[op] += values
                    refusals += refused
                    wall[with_hostile] += seconds
                    cpu[2 * with_hostile] += _cpu_seconds(server) - before[0]
                    cpu[2 * with_hostile + 1] += _cpu_seconds(here) - before[1]
            left = media_children(app.process.pid)
            rss_mb = server.memory_info().rss / 2**20
            load = psutil.getloadavg()[0]
    rows = [(f"{op} (s: median / p90 / max)", _stats(base[op]), _stats(hostile[op]))
            for op in ("open_clip", "set_prompts", "track", "close_clip")]
    rows.append(("calls", sum(len(base[o]) for o in ("open_clip", "set_prompts", "track", "close_clip")),
                 sum(len(hostile[o]) for o in ("open_clip", "set_prompts", "track", "close_clip"))))
    rows.append(("rounds completed", sum(base["rounds completed"]), sum(hostile["rounds completed"])))
    rows.append(("wall time of the phases (s)", f"{wall[0]:.1f}", f"{wall[1]:.1f}"))
    rows.append(("CPU s: server (with its ffmpeg/ffprobe) / clients", f"{cpu[0]:.1f} / {cpu[1]:.1f}",
                 f"{cpu[2]:.1f} / {cpu[3]:.1f}"))
    accepted = [r for r in refusals if r[2] == "ACCEPTED"]
    rows.append(("hostile uploads refused (s: median / p90 / max)", "-",
                 f"{len(refusals) - len(accepted)} of {len(refusals)}: {_stats([r[1] for r in refusals])}"))
    rows.append(("ffmpeg/ffprobe left running after", "-", len(left)))
    print(f"{args.clients} well-behaved clients x {args.rounds} rounds ({args.frames}-frame 160x120 clip, "
          f"3 clicks, track, close), {args.repeats} alternating phases per condition; app RSS at the end "
          f"{rss_mb:.0f} MB; load average {load:.1f} on {psutil.cpu_count()} CPUs\n")
    print(markdown_table(("", "without hostile client", "with one hostile client"), rows))
    by_file: dict = defaultdict(list)
    for name, seconds, outcome in refusals:
        by_file[name].append((seconds, outcome))
    print()
    print(markdown_table(("hostile upload", "tries", "refusal time (s: median / p90 / max)", "answer"),
                         [(n, len(v), _stats([s for s, _ in v]), v[0][1]) for n, v in by_file.items()]))
    return 1 if accepted or left else 0


if __name__ == "__main__":
    sys.exit(main())
