"""Load check on loopback: honest clients' latency, quiet and under each attack on fair share.

    python -m bench.load [--clients 3] [--rounds 3] [--frames 8] [--repeats 2] [--max-seconds 90]
                         [--phases quiet,flood,hog,hostile] [--flood-frames 32] [--set KEY=VALUE ...]

Starts ``python app.py`` on a loopback port (random-weight ``sam2.1_hiera_t`` at image_size 256
from a loopback Hub, as the tests do; the model is named on the command line, since ``model=auto``
picks from the shipped speed figures a model the loopback Hub does not serve) with its shipped
fair-share settings and ``server.trusted_proxy=true``: every client sends its own first address in
``X-Forwarded-For``, so loopback clients are as many visitors as behind Spaces' proxy. Then runs
the same honest work in each phase:

* honest clients: ``--clients`` visitors at once, each ``--rounds`` times: ``/open_clip`` a small
  clip, three clicks (``/set_prompts``), ``/track``, ``/close_clip``;

and, next to them, one attacker per phase (a new address each phase):

* quiet: none;
* flood: one session on a longer clip (``--flood-frames``), one click, then ``FLOOD_BURST``
  ``/track`` calls outstanding at all times, each sent again ``FLOOD_PAUSE_S`` after its answer
  (one runs; the rest are refused: "already tracking" or rate-limited);
* hog: opens sessions up to its cap and keeps them alive with a ``/frame_masks`` read every
  ``HOG_READ_S`` seconds, trying to open one more each time;
* hostile: uploads hostile files (an HLS live playlist, a playlist pulling a file from elsewhere
  on the server, an ffconcat list, a 20000-frame mkv, a raw H.264 stream 4112 px wide, a
  decompression-bomb PNG) one after another.

The attacker runs in a process of its own at the lowest CPU priority (its client would run on its
own machine; what the server does for it competes at normal priority). Phases run in turn,
``--repeats`` times (quiet, flood, hog, hostile, quiet, flood, ...), so that load from other
processes hits all alike, and the quiet phases' spread shows that noise. Bounded in count
(clients x rounds x phases x repeats) and in time (``--max-seconds`` per phase: no new round
after it). Prints markdown tables: per phase the honest clients' click and Track latency (median /
p90 / max) and p90 as a ratio to the quiet phases', honest requests refused (must be 0) and the
attacker's refusals; the hostile uploads' refusals, and any ffmpeg/ffprobe process left behind.
Exits 1 if an honest request was refused, a hostile upload accepted or a decoder left running.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import tempfile
import threading
import time
from collections import defaultdict
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repo importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))  # loopback app + clip helpers

from bench._common import markdown_table  # noqa: E402

CLICKS = ([30.0, 26.0], [40.0, 30.0], [120.0, 90.0])
PHASES = ("quiet", "flood", "hog", "hostile")
FLOOD_BURST = 8  # /track calls the flooder sends at once
FLOOD_PAUSE_S = 0.5  # between an answer and the flooder's next call in its place
HOG_READ_S = 2.0  # the hog's keep-alive reads
CALL_TIMEOUT_S = 300  # an honest call not answered by then counts as refused (and the bench goes on)
TARGET = 1.5  # honest p90 under attack / quiet p90


@dataclass
class Record:
    """What one phase measured: honest latencies per call, refusals of honest and attacker calls."""

    times: dict = field(default_factory=lambda: defaultdict(list))
    honest_refused: list = field(default_factory=list)
    attacker: list = field(default_factory=list)  # (what, seconds, outcome): outcome "ok" or the refusal
    rounds: int = 0
    seconds: float = 0.0
    server_cpu: float = 0.0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, into: str, *item) -> None:
        with self.lock:
            if into == "times":
                self.times[item[0]].append(item[1])
            else:
                getattr(self, into).append(item)


def _client(url: str, address: str, folder: Path):
    """A gradio client the app (trusting its "proxy") sees as the visitor ``address``."""
    from gradio_client import Client

    return Client(url, verbose=False, headers={"X-Forwarded-For": f"{address}, 127.0.0.1"},
                  download_files=str(folder))


def _refusals():
    from gradio_client.exceptions import AppError, ValidationError

    return AppError, ValidationError


def _honest(url: str, address: str, clip: Path, rounds: int, deadline: float, folder: Path, rec: Record) -> int:
    from gradio_client import handle_file

    refused = _refusals()
    client = _client(url, address, folder)
    done = 0

    def timed(op: str, *args, api_name: str):
        start = time.perf_counter()
        try:
            result = client.submit(*args, api_name=api_name).result(timeout=CALL_TIMEOUT_S)
        except (*refused, TimeoutError) as error:
            rec.add("honest_refused", op, str(error)[:100])
            raise
        rec.add("times", op, time.perf_counter() - start)
        return result

    try:
        for _ in range(rounds):
            if time.monotonic() > deadline:
                break
            try:
                sid = timed("open_clip", handle_file(str(clip)), "", api_name="/open_clip")["session"]
            except (*refused, TimeoutError):
                continue
            try:
                for k in range(len(CLICKS)):
                    timed("set_prompts", sid, 0, 1, json.dumps(list(CLICKS[:k + 1])), json.dumps([1] * (k + 1)),
                          "", "", api_name="/set_prompts")
                timed("track", sid, api_name="/track")
                done += 1
            except (*refused, TimeoutError):
                pass
            finally:
                timed("close_clip", sid, api_name="/close_clip")
    finally:
        client.close()
    return done


def _attempt(rec: Record, what: str, call) -> object:
    """Run one attacker call; record its outcome; the result, or None when it was refused."""
    start = time.perf_counter()
    try:
        result = call()
        outcome = "ok"
    except (*_refusals(), TimeoutError) as error:
        result, outcome = None, str(error)[:80]
    rec.add("attacker", what, time.perf_counter() - start, outcome)
    return result


class StopFile:
    """The phase's end, seen from the attacker's process: a file the bench writes."""

    def __init__(self, path: Path):
        self.path = path

    def is_set(self) -> bool:
        return self.path.exists()

    def wait(self, seconds: float) -> None:
        end = time.monotonic() + seconds
        while not self.is_set() and time.monotonic() < end:
            time.sleep(0.05)


def _attack(kind: str, url: str, address: str, target, stop: Path, ready: Path, folder: Path) -> list:
    """Run one attacker in this (child) process until ``stop`` exists; returns its calls'
    outcomes ``(what, seconds, outcome)``. The process runs at the lowest CPU priority: an
    attacker's own client runs on its own machine, so only what the server does for it should
    compete with the honest clients here."""
    os.nice(19)
    rec = Record()
    {"flood": _flood, "hog": _hog, "hostile": _hostile}[kind](url, address, target, StopFile(stop), folder, rec,
                                                              lambda: ready.touch())
    return list(rec.attacker)


def _flood(url: str, address: str, clip: Path, stop: StopFile, folder: Path, rec: Record, ready) -> None:
    from gradio_client import handle_file

    client = _client(url, address, folder)
    sid = _attempt(rec, "open_clip", lambda: client.predict(handle_file(str(clip)), "", api_name="/open_clip"))
    try:
        if sid is None:
            return
        sid = sid["session"]
        client.predict(sid, 0, 1, json.dumps([CLICKS[0]]), "[1]", "", "", api_name="/set_prompts")
        ready()
        # FLOOD_BURST calls outstanding at all times: each one answered is sent again. (A gradio
        # Job is a Future wrapping the one that completes: wait on that.)
        jobs = [client.submit(sid, api_name="/track") for _ in range(FLOOD_BURST)]
        outstanding = {job.future: job for job in jobs}
        while not stop.is_set():
            done, _ = wait(list(outstanding), timeout=FLOOD_PAUSE_S, return_when=FIRST_COMPLETED)
            for future in done:
                job = outstanding.pop(future)
                _attempt(rec, "track", lambda: job.result(timeout=0))
            if done:
                stop.wait(FLOOD_PAUSE_S)  # a real flooder's client is elsewhere: keep ours light
                for job in (client.submit(sid, api_name="/track") for _ in done):
                    outstanding[job.future] = job
        for job in outstanding.values():
            job.cancel()
    finally:
        if sid is not None:
            client.predict(sid, api_name="/close_clip")
        client.close()


def _hog(url: str, address: str, clip: Path, stop: StopFile, folder: Path, rec: Record, ready) -> None:
    from gradio_client import handle_file

    client = _client(url, address, folder)
    held: list[str] = []
    try:
        while not stop.is_set():
            opened = _attempt(rec, "open_clip",
                              lambda: client.predict(handle_file(str(clip)), "", api_name="/open_clip"))
            if opened is not None:
                held.append(opened["session"])
                continue  # open up to the cap at once
            ready()
            for sid in held:
                _attempt(rec, "frame_masks", lambda: client.predict(sid, 0, api_name="/frame_masks"))
            stop.wait(HOG_READ_S)
    finally:
        for sid in held:
            client.predict(sid, api_name="/close_clip")
        client.close()


def _hostile(url: str, address: str, files: list[Path], stop: StopFile, folder: Path, rec: Record, ready) -> None:
    from gradio_client import handle_file

    client = _client(url, address, folder)
    try:
        k = 0
        while not stop.is_set():
            path = files[k % len(files)]
            opened = _attempt(rec, path.name, lambda: client.predict(handle_file(str(path)), "", api_name="/open_clip"))
            if opened is not None:
                client.predict(opened["session"], api_name="/close_clip")
            ready()
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


def _phase(kind: str, index: int, url: str, clip: Path, long_clip: Path, args, folder: Path, files: list[Path],
           pool) -> Record:
    """One phase: the honest clients' rounds, next to the attacker of ``kind`` (none when quiet),
    which runs in ``pool`` (a process of its own). Addresses are new each phase, so no rate
    bucket carries over from one phase to the next."""
    rec = Record()
    folder.mkdir(parents=True)
    stop, ready = folder / "stop", folder / "ready"
    attacker = None
    if kind != "quiet":
        target = {"flood": long_clip, "hog": clip, "hostile": files}[kind]
        attacker = pool.submit(_attack, kind, url, f"198.51.100.{index + 1}", target, stop, ready, folder / "a")
        end = time.monotonic() + 120
        while not ready.exists() and not attacker.done() and time.monotonic() < end:
            time.sleep(0.05)  # the attack is under way before the first honest call
        if attacker.done():
            attacker.result()  # it failed: say why
    deadline = time.monotonic() + args.max_seconds
    start = time.perf_counter()
    with ThreadPoolExecutor(args.clients) as honest:
        good = [honest.submit(_honest, url, f"203.0.{index}.{k + 1}", clip, args.rounds, deadline, folder / f"c{k}",
                              rec) for k in range(args.clients)]
        rec.rounds = sum(f.result() for f in good)
    rec.seconds = time.perf_counter() - start
    stop.touch()
    if attacker is not None:
        rec.attacker = attacker.result()
    return rec


def _cpu_seconds(process) -> float:
    """CPU time of ``process`` and of its children that have ended (ffprobe runs, ffmpeg decoders)."""
    t = process.cpu_times()
    return t.user + t.system + t.children_user + t.children_system


def _p90(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]


def _stats(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.median(values):.2f} / {_p90(values):.2f} / {max(values):.2f}"


def _merge(records: list[Record]) -> Record:
    out = Record()
    for r in records:
        for op, values in r.times.items():
            out.times[op] += values
        out.honest_refused += r.honest_refused
        out.attacker += r.attacker
        out.rounds += r.rounds
        out.seconds += r.seconds
        out.server_cpu += r.server_cpu
    return out


def _attacker_summary(kind: str, rec: Record) -> str:
    if kind == "quiet":
        return "-"
    refused = [a for a in rec.attacker if a[2] != "ok"]
    ran = {what: sum(1 for a in rec.attacker if a[0] == what and a[2] == "ok") for what in ("track", "open_clip")}
    if kind == "flood":
        busy = sum("already tracking" in a[2] for a in refused)
        return (f"{len(refused)} of {len(rec.attacker)} refused ({busy} already tracking, "
                f"{sum('too many' in a[2] for a in refused)} rate-limited); {ran['track']} Tracks finished")
    if kind == "hog":
        return f"{len(refused)} of {len(rec.attacker)} refused; {ran['open_clip']} sessions opened"
    return f"{len(refused)} of {len(rec.attacker)} uploads refused"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=3, help="honest clients at once")
    parser.add_argument("--rounds", type=int, default=3, help="open/click/track/close rounds per client and phase")
    parser.add_argument("--frames", type=int, default=8, help="frames of the honest clients' clip")
    parser.add_argument("--flood-frames", type=int, default=32, help="frames of the flooder's clip")
    parser.add_argument("--max-seconds", type=float, default=90, help="per phase: no new round after this")
    parser.add_argument("--repeats", type=int, default=2, help="times each phase runs, in turn")
    parser.add_argument("--phases", default=",".join(PHASES), help=f"which of {','.join(PHASES)}")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="an app override (repeatable), e.g. server.tracks_at_once=1: Tracks one after another")
    args = parser.parse_args(argv)
    kinds = [k.strip() for k in args.phases.split(",") if k.strip()]
    if not kinds or any(k not in PHASES for k in kinds) or "quiet" not in kinds:
        parser.error(f"--phases: a comma-separated list of {', '.join(PHASES)}, with quiet (the yardstick)")

    import psutil

    from appserver import TINY, app_checkpoint, run_app
    from clips import make_moving_disc_clip
    from hostile import media_children

    records: dict[str, list[Record]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory(prefix="sam2web-load-") as tmp:
        work = Path(tmp)
        checkpoint = app_checkpoint(work / "ckpt" / "t256.pt")
        clip = make_moving_disc_clip(work / "disc.mp4", args.frames, (160, 120), radius=20)[0]
        long_clip = make_moving_disc_clip(work / "long.mp4", args.flood_frames, (160, 120), radius=20)[0]
        files = _hostile_files(work / "hostile_files") if "hostile" in kinds else []
        extra = (f"model={TINY.name}", "limits.max_frames=1000", "server.trusted_proxy=true", *args.set)
        with run_app(work, checkpoint, extra=extra) as app, \
                ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            server = psutil.Process(app.process.pid)
            index = 0
            for _ in range(args.repeats):
                for kind in kinds:
                    before = _cpu_seconds(server)
                    rec = _phase(kind, index, app.url, clip, long_clip, args, work / f"p{index}", files, pool)
                    rec.server_cpu = _cpu_seconds(server) - before
                    records[kind].append(rec)
                    clicks, tracks = rec.times["set_prompts"] or [0.0], rec.times["track"] or [0.0]
                    print(f"phase {index} {kind}: {rec.rounds} rounds in {rec.seconds:.1f} s; clicks p90 "
                          f"{_p90(clicks):.2f} s, Track p90 {_p90(tracks):.2f} s", file=sys.stderr)
                    index += 1
            left = media_children(app.process.pid)
            rss_mb = server.memory_info().rss / 2**20
            load = psutil.getloadavg()[0]

    merged = {k: _merge(v) for k, v in records.items()}
    quiet = merged["quiet"]
    ops = (("clicks", "set_prompts"), ("Track", "track"))
    rows = []
    for kind in kinds:
        rec = merged[kind]
        row = [kind]
        for _, op in ops:
            row.append(_stats(rec.times[op]))
            if kind == "quiet" or not rec.times[op] or not quiet.times[op]:
                row.append("1.00" if kind == "quiet" else "-")
            else:
                row.append(f"{_p90(rec.times[op]) / _p90(quiet.times[op]):.2f}")
        row += [_stats(rec.times["open_clip"]), f"{rec.server_cpu / rec.seconds:.2f}", len(rec.honest_refused),
                rec.rounds, _attacker_summary(kind, rec)]
        rows.append(row)
    # The quiet phases one by one: how far apart the same work lands on this machine (noise).
    for n, rec in enumerate(records["quiet"]):
        ratios = [f"{_p90(rec.times[op]) / _p90(quiet.times[op]):.2f}" if rec.times[op] else "-" for _, op in ops]
        cells = [v for (_, op), r in zip(ops, ratios) for v in (_stats(rec.times[op]), r)]
        rows.append([f"quiet #{n + 1} alone"] + cells
                    + [_stats(rec.times["open_clip"]), f"{rec.server_cpu / rec.seconds:.2f}", len(rec.honest_refused),
                       rec.rounds, "-"])
    print(f"{args.clients} honest clients x {args.rounds} rounds per phase ({args.frames}-frame 160x120 clip, "
          f"3 clicks, Track, close; the flooder's clip {args.flood_frames} frames), phases {', '.join(kinds)} "
          f"in turn x {args.repeats}{'; ' + ' '.join(args.set) if args.set else ''}; app RSS at the end "
          f"{rss_mb:.0f} MB; load average {load:.1f} on {psutil.cpu_count()} CPUs\n")
    print(markdown_table(("phase", "clicks (s: median / p90 / max)", "clicks p90 / quiet",
                          "Track (s: median / p90 / max)", "Track p90 / quiet", "open (s)", "server CPU (cores)",
                          "honest refused",
                          "honest rounds", "attacker"), rows))
    missed = [f"{kind} {name}" for kind in kinds if kind != "quiet" for name, op in ops
              if merged[kind].times[op] and quiet.times[op]
              and _p90(merged[kind].times[op]) > TARGET * _p90(quiet.times[op])]
    print(f"\ntarget: honest p90 within {TARGET}x of quiet, none refused: "
          + ("met" if not missed and not any(m.honest_refused for m in merged.values()) else
             "missed (" + ", ".join(missed + [f"{k}: {len(m.honest_refused)} refused" for k, m in merged.items()
                                              if m.honest_refused]) + ")"))
    for kind, rec in merged.items():
        for op, message in rec.honest_refused[:3]:
            print(f"honest {op} refused in {kind}: {message}")
    accepted = []
    if "hostile" in kinds:
        by_file: dict = defaultdict(list)
        for name, seconds, outcome in merged["hostile"].attacker:
            by_file[name].append((seconds, outcome))
        accepted = [n for n, v in by_file.items() if any(o == "ok" for _, o in v)]
        print()
        def answer(outcomes: list) -> str:  # what the file itself got, when not refused by the rate limit
            return next((o for _, o in outcomes if "too many" not in o), outcomes[0][1])

        print(markdown_table(("hostile upload", "tries", "of them rate-limited", "refusal time (s: median / p90 / max)",
                              "answer"),
                             [(n, len(v), sum("too many" in o for _, o in v), _stats([s for s, _ in v]), answer(v))
                              for n, v in by_file.items()]))
        print(f"\nffmpeg/ffprobe left running after: {len(left)}")
    failed = accepted or left or any(m.honest_refused for m in merged.values())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
