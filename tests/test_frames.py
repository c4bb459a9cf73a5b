"""Frame sources: every format gives the right frames, forward, backward and by random jumps,
with the right count/size/fps/timing, bounded memory, and clear errors for bad inputs."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import threading

import numpy as np
import pytest
from clips import (
    has_encoder, make_audio_only, make_clip, make_jpeg_folder, make_moving_disc_clip, make_zero_frame_video,
    marked_frame, read_marker,
)

from sam2_web.errors import FrameIndexError, VideoReadError
from sam2_web.media import VideoInfo, find_tools, open_frames, probe_video
from sam2_web.media.decoder import FfmpegReader, decode_command
from sam2_web.media.frames import VideoFileSource, natural_key

N = 20
JUMPS = [0, N - 1, N // 2, 3, 4, 17, 2, N - 1, 9, 0, 15]

# (id, file name, encoder, pix_fmt, size): one per container/codec family, plus odd sizes where
# the pixel format allows them (4:4:4 H.264, RGB FFV1; 4:2:0 needs even sizes).
FORMATS = [
    ("mp4-h264", "clip.mp4", "libx264", "yuv420p", (160, 120)),
    ("mov-prores", "clip.mov", "prores_ks", "yuv422p10le", (160, 120)),
    ("mkv-h265", "clip.mkv", "libx265", "yuv420p", (160, 120)),
    ("webm-vp9", "clip.webm", "libvpx-vp9", "yuv420p", (160, 120)),
    ("avi-mjpeg", "clip.avi", "mjpeg", "yuvj420p", (160, 120)),
    ("avi-ffv1", "clip.avi", "ffv1", "bgr0", (160, 120)),
    ("gif", "clip.gif", "gif", None, (160, 120)),
    ("mp4-h264-444-odd", "clip.mp4", "libx264", "yuv444p", (161, 97)),
    ("mkv-ffv1-rgb-odd", "clip.mkv", "ffv1", "bgr0", (161, 97)),
]


def markers(frames) -> list[int]:
    return [read_marker(f) for f in frames]


@pytest.mark.parametrize("name,filename,codec,pix_fmt,size", FORMATS, ids=[f[0] for f in FORMATS])
def test_format_gives_every_frame_in_order(tmp_path, name, filename, codec, pix_fmt, size):
    if not has_encoder(codec):
        pytest.skip(f"this ffmpeg cannot encode {codec}")
    path = make_clip(tmp_path / filename, n_frames=N, size=size, fps=10, codec=codec, pix_fmt=pix_fmt)
    with open_frames(path) as src:
        info = src.info
        assert (len(src), info.num_frames) == (N, N)
        assert (info.width, info.height) == size
        assert info.fps == pytest.approx(10.0, rel=1e-3)
        assert info.timestamps[0] == 0.0
        assert info.timestamps[-1] == pytest.approx((N - 1) / 10, abs=0.011)
        assert not info.is_vfr and info.rotation == 0
        first = src.get(0)
        assert first.shape == (size[1], size[0], 3) and first.dtype == np.uint8
        assert not first.flags.writeable
        # The pixels are the encoded ones, not just the marker (lossy codecs stay close).
        assert np.abs(first.astype(int) - marked_frame(0, size)).mean() < 6
        assert markers(src.get(i) for i in JUMPS) == JUMPS
        assert read_marker(src[-1]) == N - 1
        forward = [(i, f.copy()) for i, f in src.iter_range(0, N)]
        backward = list(src.iter_range(N - 1, -1, -1))
    assert [i for i, _ in forward] == list(range(N))
    assert markers(f for _, f in forward) == list(range(N))
    assert [i for i, _ in backward] == list(range(N - 1, -1, -1))
    # Same decoder, same frames: a backward scan is bit-identical to the forward one reversed.
    for (i, f), (j, g) in zip(reversed(forward), backward):
        assert i == j and np.array_equal(f, g)


def test_every_start_frame_is_exact_after_a_seek(tmp_path):
    # H.264 with B-frames and a short GOP: every seek target lands mid-GOP or on a keyframe.
    path = make_clip(tmp_path / "gop.mp4", n_frames=N, codec="libx264", extra=("-g", "5", "-bf", "2"))
    for k in range(N):
        with open_frames(path) as src:
            assert read_marker(src.get(k)) == k, f"seeking to frame {k}"


def test_rotation_metadata_rotates_frames_and_swaps_size(tmp_path):
    path = make_clip(tmp_path / "rot.mp4", n_frames=8, size=(160, 120), rotate=90)
    with open_frames(path) as src:
        info = src.info
        assert info.rotation in (90, 270)
        assert (info.width, info.height) == (120, 160)
        for i in (0, 5, 7, 2):
            frame = src.get(i)
            assert frame.shape == (160, 120, 3)
            upright = np.rot90(frame, -(info.rotation // 90))
            assert read_marker(upright) == i
            assert np.abs(upright.astype(int) - marked_frame(i)).mean() < 6
        backward = [np.rot90(f, -(info.rotation // 90)) for _, f in src.iter_range(7, -1, -1)]
    assert markers(backward) == list(range(7, -1, -1))


def test_variable_frame_rate_keeps_each_frame_once_with_its_own_time(tmp_path):
    path = make_clip(tmp_path / "vfr.mkv", n_frames=12, fps=10, vfr=True)
    with open_frames(path) as src:
        info = src.info
        assert info.num_frames == 12
        assert info.is_vfr
        durations = np.diff(info.timestamps)
        print("VFR durations", durations)
        assert durations[:5] == pytest.approx([0.1] * 5, abs=2e-3)
        assert durations[6:] == pytest.approx([0.25] * 5, abs=2e-3)
        assert markers(src.get(i) for i in [11, 0, 6, 7, 3, 10]) == [11, 0, 6, 7, 3, 10]
        assert markers(f for _, f in src.iter_range(0, 12)) == list(range(12))
        assert markers(f for _, f in src.iter_range(11, -1, -1)) == list(range(11, -1, -1))
        assert info.fps == pytest.approx(11 / 1.85, rel=1e-3)  # measured: the average over the clip
        assert info.timecode(11) == "00:00:01:05"  # 1.85 s, at a nominal rate of 6 fps


def test_mp4_vfr_timestamps_come_from_packets(tmp_path):
    path = make_clip(tmp_path / "vfr.mp4", n_frames=12, fps=10, vfr=True)
    with open_frames(path) as src:
        assert src.info.is_vfr and src.info.num_frames == 12
        assert src.info.timestamps[-1] == pytest.approx(0.6 + 5 * 0.25, abs=2e-3)
        assert markers(src.get(i) for i in [7, 11, 6]) == [7, 11, 6]


def test_image_folder_natural_sort_and_default_fps(tmp_path):
    folder = make_jpeg_folder(tmp_path / "frames", n=12)
    (folder / "notes.txt").write_text("not a frame")
    with open_frames(folder) as src:
        assert src.paths[:3] == [str(folder / f"frame{i}.jpg") for i in range(3)]
        assert os.path.basename(src.paths[10]) == "frame10.jpg"
        info = src.info
        assert (info.num_frames, info.width, info.height, info.fps) == (12, 160, 120, 30.0)
        assert info.timestamps[3] == pytest.approx(0.1)
        assert markers(src.get(i) for i in JUMPS if i < 12) == [i for i in JUMPS if i < 12]
        assert markers(f for _, f in src.iter_range(11, -1, -1)) == list(range(11, -1, -1))
    with open_frames(folder, fps=24) as src:
        assert src.info.fps == 24.0 and src.info.timestamps[-1] == pytest.approx(11 / 24)


def test_natural_key_orders_numbers_by_value():
    names = ["frame10.jpg", "frame2.jpg", "Frame1.png", "frame02b.jpg", "a.jpg"]
    assert sorted(names, key=natural_key) == ["a.jpg", "Frame1.png", "frame2.jpg", "frame02b.jpg", "frame10.jpg"]


def test_png_list_and_array_sources(tmp_path):
    from PIL import Image

    frames = np.stack([marked_frame(i) for i in range(6)])
    paths = []
    for i, frame in enumerate(frames):
        paths.append(str(tmp_path / f"p{i}.png"))
        Image.fromarray(frame).save(paths[-1])
    with open_frames(paths[::-1]) as src:  # a list keeps the caller's order
        assert markers(src.get(i) for i in range(6)) == [5, 4, 3, 2, 1, 0]
        assert np.array_equal(src.get(0), frames[5])  # PNG is lossless
    with open_frames(paths[3]) as src:  # a single image is a one-frame clip
        assert len(src) == 1 and read_marker(src.get(0)) == 3
    with open_frames(frames, fps=12) as src:
        assert (len(src), src.info.fps, src.info.codec) == (6, 12.0, "array")
        assert np.array_equal(src.get(4), frames[4])
        assert not src.get(4).flags.writeable and frames.flags.writeable
        assert [i for i, _ in src.iter_range(5, 0, -2)] == [5, 3, 1]


def test_strided_scans(tmp_path):
    path = make_clip(tmp_path / "s.mp4", n_frames=N)
    with open_frames(path) as src:
        assert markers(f for _, f in src.iter_range(1, N, 3)) == list(range(1, N, 3))
        assert markers(f for _, f in src.iter_range(N - 1, 0, -3)) == list(range(N - 1, 0, -3))
        assert list(src.iter_range(5, 5)) == []


def test_get_resized(tmp_path):
    with open_frames(make_jpeg_folder(tmp_path / "f", n=3)) as src:
        assert src.get_resized(1, 64).shape == (64, 64, 3)
        assert src.get_resized(2, (80, 50)).shape == (50, 80, 3)


def test_long_clip_keeps_buffers_bounded(tmp_path):
    n = 300
    path = make_clip(tmp_path / "long.mp4", n_frames=n, size=(320, 240), fps=30, extra=("-preset", "ultrafast"))
    with open_frames(path, readahead=6, cache=4, reverse_block=16) as src:
        assert len(src) == n
        forward_bound = 4 + 6
        worst = 0
        for i in range(n):
            assert read_marker(src.get(i)) == i
            worst = max(worst, src.buffered_frames)
            assert src.buffered_frames <= forward_bound
        print(f"forward: at most {worst} frames buffered over {n} frames (bound {forward_bound})")
        backward_bound = 4 + src.block_size
        worst = 0
        for i, frame in src.iter_range(n - 1, -1, -1):
            assert read_marker(frame) == i
            worst = max(worst, src.buffered_frames)
            assert src.buffered_frames <= backward_bound
        print(f"backward: at most {worst} frames buffered (bound {backward_bound})")
        # get() walking backward one frame at a time is recognised and served from blocks too.
        for i in range(100, 60, -1):
            assert read_marker(src.get(i)) == i
            assert src.buffered_frames <= backward_bound


def test_moving_disc_clip_round_trips(tmp_path):
    path, masks = make_moving_disc_clip(tmp_path / "disc.mp4", n_frames=8)
    with open_frames(path) as src:
        frame = src.get(5).astype(int)
        red = (frame[..., 0] > 150) & (frame[..., 1] < 90)
        assert (red == masks[5]).mean() > 0.99
    folder, masks = make_moving_disc_clip(tmp_path / "disc_jpg", n_frames=4)
    with open_frames(folder) as src:
        assert len(src) == 4 and src.paths[0].endswith("00000.jpg")


def test_timecodes():
    info = VideoInfo(
        num_frames=100, fps=25.0, width=8, height=8, timestamps=tuple(i / 25 for i in range(100)),
        start_timecode="01:00:00:00", codec="h264", rotation=0, path=None, is_vfr=False,
    )
    assert info.timecode(0) == "01:00:00:00"
    assert info.timecode(26) == "01:00:01:01"
    dropframe = VideoInfo(
        num_frames=10, fps=30000 / 1001, width=8, height=8, timestamps=tuple(i * 1001 / 30000 for i in range(10)),
        start_timecode="00:00:59;28", codec="h264", rotation=0, path=None, is_vfr=False,
    )
    assert [dropframe.timecode(i) for i in range(4)] == ["00:00:59;28", "00:00:59;29", "00:01:00;02", "00:01:00;03"]
    plain = VideoInfo(
        num_frames=50, fps=24.0, width=8, height=8, timestamps=tuple(i / 24 for i in range(50)),
        start_timecode=None, codec="h264", rotation=0, path=None, is_vfr=False,
    )
    assert plain.timecode(49) == "00:00:02:01"
    with pytest.raises(FrameIndexError):
        plain.timecode(50)


def test_container_timecode_is_read(tmp_path):
    path = make_clip(tmp_path / "tc.mov", n_frames=4, fps=25, extra=("-timecode", "10:00:00:00"))
    with open_frames(path) as src:
        assert src.info.start_timecode == "10:00:00:00"
        assert src.info.timecode(3) == "10:00:00:03"


# ---- errors -----------------------------------------------------------------------------------


def test_frame_index_out_of_range_message():
    with open_frames(np.zeros((100, 4, 4, 3), np.uint8)) as src:
        with pytest.raises(FrameIndexError, match="frame 120 is outside the clip \\(0–99\\)"):
            src.get(120)
        with pytest.raises(FrameIndexError):
            src.get(-101)
        with pytest.raises(FrameIndexError):
            list(src.iter_range(99, 101))


def test_video_index_out_of_range(tmp_path):
    with open_frames(make_clip(tmp_path / "a.mp4", n_frames=5)) as src:
        with pytest.raises(FrameIndexError, match="frame 5 is outside the clip"):
            src.get(5)
        assert read_marker(src.get(4)) == 4  # still usable afterwards


def _truncate(path, keep: float):
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    return path


@pytest.mark.parametrize("case", ["missing", "text", "empty", "truncated", "wav", "m4a", "zero_frames",
                                  "empty_dir", "no_images_dir"])
def test_unreadable_inputs_raise_video_read_error(tmp_path, case):
    if case == "missing":
        target, expect = tmp_path / "nope.mp4", "does not exist"
    elif case == "text":
        target = tmp_path / "notes.mp4"
        target.write_text("this is not a video\n" * 50)
        expect = "cannot be read as a video"
    elif case == "empty":
        target = tmp_path / "zero.mp4"
        target.write_bytes(b"")
        expect = "empty"
    elif case == "truncated":  # moov atom at the end is lost
        target, expect = _truncate(make_clip(tmp_path / "t.mp4", n_frames=N), 0.6), "corrupt or truncated"
    elif case in ("wav", "m4a"):
        target, expect = make_audio_only(tmp_path / f"tone.{case}"), "no video stream"
    elif case == "zero_frames":
        target = make_zero_frame_video(tmp_path / "zero.mkv", make_clip(tmp_path / "src.mp4", n_frames=3))
        expect = "no frames"
    elif case == "empty_dir":
        target, expect = tmp_path / "empty", "it is empty"
        target.mkdir()
    else:
        target, expect = tmp_path / "docs", "no .jpg/.jpeg/.png"
        target.mkdir()
        (target / "readme.txt").write_text("hi")
    with pytest.raises(VideoReadError, match=expect) as excinfo:
        open_frames(target)
    print(case, "->", excinfo.value)


def test_truncated_faststart_mp4_is_reported_at_open(tmp_path):
    # The index (moov) is up front and intact, the frames behind it are cut off.
    path = make_clip(tmp_path / "fs.mp4", n_frames=N, extra=("-movflags", "+faststart", "-crf", "0"))
    _truncate(path, 0.7)
    with pytest.raises(VideoReadError, match=f"truncated: its index lists {N} frames but only"):
        open_frames(path)


def test_decoder_reports_pts_and_ends_cleanly(tmp_path):
    path = make_clip(tmp_path / "short.mp4", n_frames=5)
    probed = probe_video(str(path), find_tools())
    cmd = decode_command(find_tools(), str(path), probed.stream_index, None, 160, 120)
    reader = FfmpegReader(cmd, width=160, height=120, readahead=2)
    try:
        got = [reader.read() for _ in range(5)]
        assert [read_marker(frame) for _, frame in got] == [0, 1, 2, 3, 4]
        assert [ticks * probed.time_base for (ticks, _), _ in got] == pytest.approx(probed.pts)
        with pytest.raises(VideoReadError, match="end of stream"):
            reader.read()
    finally:
        reader.close()


def test_index_promising_more_frames_than_decode_is_an_error(tmp_path):
    # What a damaged file does mid-way: the index lists a frame the decoder never delivers.
    path = make_clip(tmp_path / "short.mp4", n_frames=5)
    tools = find_tools()
    probed = probe_video(str(path), tools)
    lying = dataclasses.replace(
        probed, pts=probed.pts + (probed.pts[-1] + 0.1,),
        info=dataclasses.replace(probed.info, num_frames=6, timestamps=probed.info.timestamps + (0.5,)),
    )
    with VideoFileSource(lying, tools) as src:
        assert read_marker(src.get(4)) == 4
        with pytest.raises(VideoReadError, match="stopped before frame 5"):
            src.get(5)
        assert read_marker(src.get(2)) == 2  # a later request starts a fresh decoder


@pytest.mark.parametrize("container", ["ts", "mts-start-offset", "mp4-with-audio", "mkv-delayed-video"])
def test_seeks_are_exact_in_containers_with_odd_timing(tmp_path, container):
    # MPEG-TS seeks land on the *next* keyframe and start at 1.4 s; audio priming and delayed
    # video shift the container start away from the first frame. Every start frame must still
    # be the one asked for.
    base = make_clip(tmp_path / "base.mp4", n_frames=N, extra=("-g", "6"))
    out = tmp_path / {"ts": "c.ts", "mts-start-offset": "c.mts", "mp4-with-audio": "c.mp4",
                      "mkv-delayed-video": "c.mkv"}[container]
    args = {
        "ts": ["-i", base, "-f", "lavfi", "-i", "sine=d=2", "-map", "0:v", "-map", "1:a", "-c:v", "copy",
               "-c:a", "aac"],
        "mts-start-offset": ["-i", base, "-c:v", "copy", "-f", "mpegts", "-output_ts_offset", "7.3"],
        "mp4-with-audio": ["-i", base, "-f", "lavfi", "-i", "sine=d=2", "-map", "0:v", "-map", "1:a",
                           "-c:v", "copy", "-c:a", "aac"],
        "mkv-delayed-video": ["-itsoffset", "0.7", "-i", base, "-f", "lavfi", "-i", "sine=d=3", "-map", "0:v",
                              "-map", "1:a", "-c:v", "copy", "-c:a", "libvorbis"],
    }[container]
    subprocess.run(["ffmpeg", "-v", "error", "-y", *map(str, args), str(out)], check=True)
    seeks = 0
    for k in (0, 1, 5, 6, 7, 11, 12, 13, 17, 18, 19):  # around the keyframes at 0, 6, 12, 18
        with open_frames(out) as src:
            assert len(src) == N
            assert read_marker(src.get(k)) == k, f"seeking to frame {k}"
            seeks += src.seeks
    with open_frames(out) as src:
        assert markers(f for _, f in src.iter_range(N - 1, -1, -1)) == list(range(N - 1, -1, -1))
    print(f"{container}: {seeks} decoder starts for 11 single-frame opens")


def test_mismatched_image_sizes(tmp_path):
    from PIL import Image

    Image.fromarray(marked_frame(0, (160, 120))).save(tmp_path / "f1.png")
    Image.fromarray(marked_frame(1, (200, 120))).save(tmp_path / "f2.png")
    with pytest.raises(VideoReadError, match="differ in size"):
        open_frames(tmp_path)


def _decode_threads() -> int:
    return sum(t.name.startswith("sam2_web-") for t in threading.enumerate())


def test_closed_source_refuses_reads_and_leaves_no_threads(tmp_path):
    before = _decode_threads()
    src = open_frames(make_clip(tmp_path / "c.mp4", n_frames=6))
    src.get(3)
    assert _decode_threads() == before + 2  # the frame pump and the log reader
    src.close()
    assert _decode_threads() == before
    assert src.buffered_frames == 0
    with pytest.raises(VideoReadError, match="closed"):
        src.get(0)
    src.close()  # twice is fine


def test_released_buffers_leave_the_recent_frames_and_no_decoder(tmp_path):
    """What a session does when a pass ends: the backward block and the decoder running ahead go
    (an idle session would hold them), the few recent frames stay, and reads go on."""
    before = _decode_threads()
    with open_frames(make_clip(tmp_path / "c.mp4", n_frames=40), readahead=6, cache=4, reverse_block=16) as src:
        for i in range(39, 20, -1):  # a backward walk keeps a block of frames
            src.get(i)
        assert src.buffered_frames > 4
        src.release_buffers()
        assert src.buffered_frames <= 4
        src.get(0)
        src.get(1)  # a forward read starts a decoder that runs ahead
        assert _decode_threads() == before + 2
        src.release_buffers()
        assert src.buffered_frames <= 4 and _decode_threads() == before
        assert [read_marker(src.get(i)) for i in (1, 30, 2)] == [1, 30, 2]


def test_exif_orientation_is_applied_to_folder_frames(tmp_path):
    from PIL import Image

    folder = tmp_path / "phone"
    folder.mkdir()
    for i in range(3):
        image = Image.fromarray(marked_frame(i, (160, 120)))
        exif = image.getexif()
        exif[0x0112] = 6  # stored sideways: rotate 90° clockwise to view
        image.save(folder / f"IMG_{i}.jpg", exif=exif.tobytes(), quality=95)
    with open_frames(folder) as src:
        assert (src.info.width, src.info.height) == (120, 160)
        frame = src.get(2)
        assert frame.shape == (160, 120, 3)
        assert read_marker(np.rot90(frame, 1)) == 2


def test_missing_ffmpeg_explains_how_to_install():
    with pytest.raises(VideoReadError, match="Install it"):
        find_tools(search_path="", allow_bundled=False)


def test_bundled_ffmpeg_without_ffprobe_probes_by_decoding(tmp_path):
    bundled = find_tools(search_path="")  # nothing on this PATH: imageio-ffmpeg's binary
    assert bundled.ffmpeg != shutil.which("ffmpeg")
    no_probe = dataclasses.replace(bundled, ffprobe=None)
    full = find_tools()
    for path in (make_clip(tmp_path / "r.mp4", n_frames=8, rotate=90),
                 make_clip(tmp_path / "v.mkv", n_frames=12, vfr=True)):
        a, b = probe_video(str(path), full).info, probe_video(str(path), no_probe).info
        assert (b.num_frames, b.width, b.height, b.rotation, b.is_vfr) == (
            a.num_frames, a.width, a.height, a.rotation, a.is_vfr)
        assert b.timestamps == pytest.approx(a.timestamps, abs=1e-3)
        with open_frames(path, tools=no_probe) as src:
            assert markers(np.rot90(src.get(i), -(src.info.rotation // 90)) for i in (5, 1)) == [5, 1]
    with pytest.raises(VideoReadError, match="no video stream"):
        probe_video(str(make_audio_only(tmp_path / "a.wav")), no_probe)


def test_ffprobe_sees_the_same_count_as_a_full_decode(tmp_path):
    # Cross-check the packet-index count against ffmpeg actually decoding every frame.
    for path in (make_clip(tmp_path / "a.gif", n_frames=9, codec="gif", pix_fmt=None),
                 make_clip(tmp_path / "b.webm", n_frames=9, codec="libvpx-vp9")):
        out = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(path), "-fps_mode", "passthrough", "-f", "rawvideo",
             "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout
        with open_frames(path) as src:
            assert len(src) == len(out) // (src.info.width * src.info.height) == 9
