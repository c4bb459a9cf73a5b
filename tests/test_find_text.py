"""Text prompts: "person, dog" → an OWLv2 detector's boxes on a frame → objects named after their
phrase, tracked exactly as the same boxes given by hand; the detector comes through the Hub
machinery (``sam2_web.hub``), and every way it can fail says what to do and writes nothing.

Offline: the detector is built here from a small OWLv2 config with random weights and a CLIP
tokenizer over a 60-token vocabulary (single characters), saved, and served by the loopback Hub
(``tests/hubserver.py``) like the checkpoints.
"""

from __future__ import annotations

import json
import os
import string
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from appserver import OVERRIDES, app_checkpoint
from clips import make_moving_disc_clip
from hubserver import serve_hub

from sam2_web.errors import CheckpointError, HubUnavailableError, MissingExtraError, PromptError
from sam2_web.find import text as text_module
from sam2_web.find.objects import Detection, objects_from_detections
from sam2_web.find.run import FindSettings, find_by_text

REPO = Path(__file__).resolve().parents[1]
REPO_ID = "test/owlv2-tiny"
N_FRAMES, SIZE = 4, (128, 96)
THRESHOLD = 0.6  # random weights score many boxes near 0.5-1.0; this keeps a few


def build_detector_files(folder: Path) -> dict:
    """A tiny OWLv2 (random weights) with its processor, saved as ``from_pretrained`` reads it;
    returns ``{(REPO_ID, "main", file name): bytes}`` for the loopback Hub."""
    from transformers import CLIPTokenizer, Owlv2Config, Owlv2ForObjectDetection, Owlv2ImageProcessor, Owlv2Processor

    folder.mkdir(parents=True, exist_ok=True)
    vocab = {c: k for k, c in enumerate(string.ascii_lowercase + "!.,")}
    vocab.update({c + "</w>": len(vocab) + k for k, c in enumerate(string.ascii_lowercase)})
    vocab.update({"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1})
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")  # no merges: words are spelled out
    tokenizer = CLIPTokenizer(str(folder / "vocab.json"), str(folder / "merges.txt"), pad_token="!",
                              model_max_length=16)
    config = Owlv2Config(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, pad_token_id=0,
                         bos_token_id=vocab["<|startoftext|>"], eos_token_id=vocab["<|endoftext|>"]),
        vision_config=dict(image_size=64, patch_size=16, hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4),
        projection_dim=32,
    )
    torch.manual_seed(0)
    model = Owlv2ForObjectDetection(config).eval()
    with torch.no_grad():
        # Random box-head outputs saturate the box sigmoids (zero-size boxes at the border); damped,
        # each patch predicts a box near the prior around itself, as a trained head mostly does.
        model.box_head.dense2.weight.mul_(0.01)
        model.box_head.dense2.bias.mul_(0.01)
    repo = folder / "repo"
    model.save_pretrained(repo)
    Owlv2Processor(image_processor=Owlv2ImageProcessor(size={"height": 64, "width": 64}),
                   tokenizer=tokenizer).save_pretrained(repo)
    return {(REPO_ID, "main", p.name): p.read_bytes() for p in repo.iterdir() if p.is_file()}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return build_detector_files(tmp_path_factory.mktemp("owlv2"))


@pytest.fixture
def hub(files, monkeypatch, tmp_path):
    text_module._loaded.clear()  # each test downloads into its own cache
    with serve_hub(files) as server:
        server.use(monkeypatch, tmp_path)
        yield server
    text_module._loaded.clear()


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("text")


@pytest.fixture(scope="module")
def checkpoint(work) -> Path:
    return app_checkpoint(work / "tiny256.pt")


@pytest.fixture(scope="module")
def clip(work) -> Path:
    path, _ = make_moving_disc_clip(work / "disc.mp4", n_frames=N_FRAMES, size=SIZE, radius=14)
    return path


def frame_of(clip: Path, index: int) -> np.ndarray:
    from sam2_web.media.frames import open_frames

    with open_frames(clip) as frames:
        return frames.get(index)


def run_cli(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "sam2_web.cli", *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True)


def model_args(checkpoint: Path) -> list[str]:
    return [*OVERRIDES, f"checkpoint={checkpoint}", "device=cpu", f"find.text.detector={REPO_ID}"]


def coco(out: Path) -> dict:
    (path,) = out.glob("*_coco_rle.json")
    return json.loads(path.read_text())


# --------------------------------------------------------------------------- detector → objects


def test_detector_boxes_become_exactly_the_objects(hub, clip):
    detector = text_module.load_detector(REPO_ID, device="cpu")
    assert any(r.path.endswith("/model.safetensors") for r in hub.requests)
    image = frame_of(clip, 1)
    detections = detector.detect(image, ["person", "dog"], box_threshold=THRESHOLD)
    assert detections, "the random detector keeps some boxes at this threshold"
    for d in detections:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= SIZE[0] and 0 <= y0 < y1 <= SIZE[1] and d.score > THRESHOLD
    found = find_by_text(image, "person, dog", 1, first_id=3, detector=detector,
                         settings=FindSettings(box_threshold=THRESHOLD, max_objects=0))
    assert sorted(o.box for o in found.objects) == sorted(d.box for d in detections)
    assert [o.obj_id for o in found.objects] == list(range(3, 3 + len(detections)))
    assert all(o.frame == 1 and o.mask is None for o in found.objects)
    names = [o.name for o in found.objects]
    for phrase in ("person", "dog"):
        mine = [n for n in names if n.split(" ")[0] == phrase]
        assert mine == ([phrase] + [f"{phrase} {k}" for k in range(2, len(mine) + 1)])[:len(mine)]
    # Served from memory the second time, and from the disk cache after that: no new requests.
    before = len(hub.requests)
    assert text_module.load_detector(REPO_ID, device="cpu") is detector
    text_module._loaded.clear()
    text_module.load_detector(REPO_ID, device="cpu")
    assert len(hub.requests) == before


def test_loading_the_detector_leaves_download_bars_as_they_were(hub, monkeypatch):
    """Its weight-loading bars are hidden for the load only: our checkpoint downloads keep theirs."""
    import importlib

    from transformers.utils import logging as transformers_logging

    hf_tqdm = importlib.import_module("huggingface_hub.utils.tqdm")
    # conftest turns every bar off for the run; a user's process has them on.
    monkeypatch.setattr(hf_tqdm, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setattr(hf_tqdm, "progress_bar_states", {})
    monkeypatch.setattr(transformers_logging, "_tqdm_active", True)
    seen = []
    real = transformers_logging.tqdm.__class__.__call__
    monkeypatch.setattr(transformers_logging.tqdm.__class__, "__call__",
                        lambda self, *a, **k: seen.append(transformers_logging.is_progress_bar_enabled()) or real(self, *a, **k))
    text_module.load_detector(REPO_ID, device="cpu")
    assert not hf_tqdm.are_progress_bars_disabled() and transformers_logging.is_progress_bar_enabled()
    assert seen and not any(seen)  # transformers drew its loading bars while they were off


def test_detections_are_named_limited_and_missing_phrases_noted():
    dets = [Detection("dog", (0, 0, 5, 5), 0.4), Detection("person", (1, 1, 9, 9), 0.9),
            Detection("dog", (2, 2, 8, 8), 0.7)]
    found = objects_from_detections(dets, 2, ["person", "dog", "cat"], first_id=5, max_objects=2)
    assert [(o.obj_id, o.name, o.score) for o in found.objects] == [(5, "person", 0.9), (6, "dog", 0.7)]
    assert found.found == 3
    assert any('nothing found for "cat" on frame 2' in n for n in found.notes)
    assert any("tracking the 2 most confident" in n for n in found.notes)


def test_cli_text_tracks_like_the_same_boxes_given_by_hand(hub, work, checkpoint, clip):
    detector = text_module.load_detector(REPO_ID, device="cpu")
    found = find_by_text(frame_of(clip, 1), "person, dog", 1, detector=detector,
                         settings=FindSettings(box_threshold=THRESHOLD, max_objects=32))
    assert len(found) >= 1
    by_hand = {"objects": [{"id": o.obj_id, "name": o.name, "frames": [{"frame": 1, "box": list(o.box)}]}
                           for o in found.objects]}
    (work / "boxes.json").write_text(json.dumps(by_hand))
    text = run_cli("mask", clip, "--text", "person, dog", "--text-frame", 1, "--out", work / "text", "--format",
                   "coco_rle", "--progress", "none", *model_args(checkpoint), f"find.text.box_threshold={THRESHOLD}")
    assert text.returncode == 0, text.stderr
    hand = run_cli("mask", clip, "--prompts", work / "boxes.json", "--out", work / "hand", "--format", "coco_rle",
                   "--progress", "none", *model_args(checkpoint))
    assert hand.returncode == 0, hand.stderr
    got, expected = coco(work / "text"), coco(work / "hand")
    assert got["categories"] == expected["categories"]
    assert [c["name"] for c in got["categories"]] == [o.name.replace(" ", "_") for o in found.objects]
    assert got["annotations"] == expected["annotations"]
    assert sum(a["area"] for a in got["annotations"]) > 0


# --------------------------------------------------------------------------- bad input


def test_without_the_extra_the_cli_says_how_to_install(monkeypatch, tmp_path, clip, capsys):
    from sam2_web.cli import main

    monkeypatch.setattr(text_module, "text_available", lambda: False)
    with pytest.raises(MissingExtraError, match=r"pip install 'sam2_web\[text\]'"):
        find_by_text(np.zeros((8, 8, 3), np.uint8), "dog")
    code = main(["mask", str(clip), "--text", "dog", "--out", str(tmp_path / "out"), "device=cpu"])
    assert code == 4
    assert "pip install 'sam2_web[text]'" in capsys.readouterr().err
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_a_phrase_that_finds_nothing_exits_2_and_writes_nothing(hub, tmp_path, checkpoint, clip):
    out = tmp_path / "out"
    result = run_cli("mask", clip, "--text", "zebra", "--out", out, "--format", "coco_rle",
                     *model_args(checkpoint), "find.text.box_threshold=1.0")
    assert result.returncode == 2, result.stderr
    assert 'nothing found for "zebra" on frame 0' in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_detector_that_cannot_be_downloaded_says_so(hub, tmp_path, checkpoint, clip):
    with pytest.raises(CheckpointError, match="test/missing was not found"):
        text_module.load_detector("test/missing", device="cpu")
    hub.outage = 503
    with pytest.raises(HubUnavailableError, match="text detector"):
        text_module.load_detector(REPO_ID, device="cpu")
    out = tmp_path / "out"
    result = run_cli("mask", clip, "--text", "dog", "--out", out, "--format", "coco_rle", *model_args(checkpoint))
    assert result.returncode == 4 and "could not download the text detector" in result.stderr, result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_offline_with_a_cold_cache_and_a_model_that_is_not_owlv2(hub, tmp_path, files, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match="offline"):
        text_module.load_detector(REPO_ID, device="cpu")
    folder = tmp_path / "not_owl"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(CheckpointError, match="must name an OWLv2 model"):
        text_module.load_detector(str(folder), device="cpu")
    with pytest.raises(PromptError, match="empty"):
        find_by_text(np.zeros((8, 8, 3), np.uint8), " , ", settings=FindSettings())
