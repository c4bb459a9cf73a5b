"""Users choose knowingly: model=auto's rule, the speed figures (bench file and this server's
cache) and `sam2-web models` showing published quality and measured speed.

No GPU is needed: the rule reads only the device's type, and every figure here is written by the
test itself (conftest hides the shipped bench file and sends the cache to a temp file).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sam2_web import speeds
from sam2_web.cli import main
from sam2_web.models import auto_model, compose_app_config, requested_model, resolve_model
from sam2_web.registry import ModelSpec, PublishedQuality, list_models
from sam2_web.speeds import BenchRun, FrameClock, Speed

CPU = "2-thread CPU (Test CPU)"
# Figures shaped like the measurements: the fastest model overall has no published SA-V
# test score, the next fastest is 5.8 points below SAM 2.1 tiny; neither may be picked.
BENCH_CPU = {
    "sam2.1_hiera_t": {"s_per_frame_1obj": 4.1, "s_per_frame_3obj": 10.8, "click_new_frame_s": 1.9},
    "edgetam": {"s_per_frame_1obj": 1.6, "s_per_frame_3obj": 4.0, "click_new_frame_s": 0.84},
    "efficienttam_s_512x512": {"s_per_frame_1obj": 0.5, "s_per_frame_3obj": 1.2, "click_new_frame_s": 0.42},
    "efficienttam_ti_512x512": {"s_per_frame_3obj": 1.06, "click_new_frame_s": 0.14},  # no SA-V test score
    "efficienttam_ti": {"s_per_frame_3obj": 0.9},  # SA-V test 70.7 < 71.5
}


def bench(models=None, kind="cpu", device=CPU) -> dict[str, BenchRun]:
    return {kind: BenchRun(kind, device, "2026-11-26", "2.14.1", "test figures",
                           BENCH_CPU if models is None else models)}


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache" / "speeds.json"


# --- model=auto -------------------------------------------------------------------------------------

def test_auto_is_sam21_tiny_on_cuda_and_the_fastest_good_enough_model_elsewhere(cache):
    for device in ("cuda", "cuda:1"):
        assert auto_model(device, bench=bench(), cache=cache) == "sam2.1_hiera_t"
    # SA-V test 71.5 is exactly 5 points below 76.5: still within; 1.2 s beats EdgeTAM's 4.0.
    assert auto_model("cpu", bench=bench(), cache=cache) == "efficienttam_s_512x512"
    assert auto_model("mps", bench=bench(), cache=cache) == "efficienttam_s_512x512"  # the CPU run stands in


def test_a_model_without_a_published_sa_v_test_score_is_never_auto_picked(cache):
    fast = {"efficienttam_ti_512x512": {"s_per_frame_3obj": 0.01}, "efficienttam_s_1": {"s_per_frame_3obj": 0.01},
            "edgetam": {"s_per_frame_3obj": 4.0}}
    assert auto_model("cpu", bench=bench(fast), cache=cache) == "edgetam"
    specs = [m for m in list_models() if m.name in ("sam2.1_hiera_t", "edgetam")]
    no_quality = ModelSpec("mystery", "Mystery", "x/y", "m.pt", "edgetam/edgetam.yaml", 1.0)
    figures = bench({"mystery": {"s_per_frame_3obj": 0.01}, "sam2.1_hiera_t": {"s_per_frame_3obj": 10.8}})
    assert auto_model("cpu", specs=[*specs, no_quality], bench=figures, cache=cache) == "sam2.1_hiera_t"


def test_auto_without_figures_ties_and_partial_figures(cache, tmp_path):
    # No figures at all: nothing says another model is faster, so SAM 2.1 tiny.
    assert auto_model("cpu", bench={}, cache=cache) == "sam2.1_hiera_t"
    # Only some qualifying models measured: the fastest of those (unmeasured ones are not guessed).
    assert auto_model("cpu", bench=bench({"sam2.1_hiera_s": {"s_per_frame_3obj": 9.0},
                                          "sam2.1_hiera_t": {"s_per_frame_3obj": 10.8}}), cache=cache) \
        == "sam2.1_hiera_s"
    # A tie goes to the higher published J&F (EfficientTAM-S 74.5 over EdgeTAM 71.7).
    tie = {"edgetam": {"s_per_frame_3obj": 2.0}, "efficienttam_s": {"s_per_frame_3obj": 2.0}}
    assert auto_model("cpu", bench=bench(tie), cache=cache) == "efficienttam_s"
    # A run with 1-object figures only still ranks (scaled to 3 objects).
    assert auto_model("cpu", bench=bench({"edgetam": {"s_per_frame_1obj": 1.0},
                                          "sam2.1_hiera_t": {"s_per_frame_1obj": 4.0}}), cache=cache) == "edgetam"


def test_this_servers_figures_rank_only_when_they_cover_what_the_bench_measured(cache):
    label = speeds.device_label("cpu")
    # The server has tracked with SAM 2.1 tiny only: comparing its own 0.5 s with the bench's
    # figures of other models would mix two machines, so the bench ranks.
    speeds.record_frames("sam2.1_hiera_t", label, 3, [0.5] * 20, path=cache)
    two = {"sam2.1_hiera_t": {"s_per_frame_3obj": 10.8}, "edgetam": {"s_per_frame_3obj": 4.0}}
    assert auto_model("cpu", bench=bench(two), cache=cache) == "edgetam"
    # Once it has measured both, its own figures decide.
    speeds.record_frames("edgetam", label, 3, [0.9] * 20, path=cache)
    assert auto_model("cpu", bench=bench(two), cache=cache) == "sam2.1_hiera_t"


def test_the_app_config_resolves_auto_in_one_place_and_an_explicit_model_wins(tmp_path, monkeypatch):
    path = speeds.write_bench_run(bench()["cpu"], tmp_path / "speeds.yaml")
    monkeypatch.setenv(speeds.BENCH_ENV, str(path))
    assert requested_model() == "auto"  # configs/app.yaml's default
    assert compose_app_config(["device=cpu"]).weights.name == "efficienttam_s_512x512"
    assert compose_app_config(["model=auto", "device=cuda"]).weights.name == "sam2.1_hiera_t"  # no GPU needed
    assert compose_app_config(["model=sam2.1_hiera_s", "device=cpu"]).weights.name == "sam2.1_hiera_s"
    assert compose_app_config(["model=facebook/EdgeTAM", "device=cpu"]).weights.name == "edgetam"  # aliases too
    # The one place a model name is resolved: aliases, Hub ids, auto (for the device), None (the default).
    assert resolve_model("edgetam", "cpu") == "edgetam" and resolve_model("tiny") == "sam2.1_hiera_t"
    assert resolve_model("auto", "cpu") == "efficienttam_s_512x512" and resolve_model("auto", "cuda:1") == "sam2.1_hiera_t"
    with pytest.raises(ValueError, match="not a device"):
        compose_app_config(["device=gpu0"])


def test_a_job_may_ask_for_auto():
    from sam2_web.jobs import MaskJob, OutputSpec, prompts_from_json

    objects = prompts_from_json(json.dumps(
        {"objects": [{"id": 1, "frames": [{"frame": 0, "points": [[1, 1]], "labels": [1]}]}]})).objects
    job = MaskJob(Path("clip.mp4"), objects, OutputSpec(Path("out")), model="auto", device="cpu")
    assert job.app_overrides() == ["model=auto", "device=cpu"]
    assert compose_app_config(job.app_overrides()).weights.name == "sam2.1_hiera_t"  # no figures: tiny


# --- the figures -------------------------------------------------------------------------------------

def test_per_frame_figures_for_any_number_of_objects():
    both = Speed(CPU, ((1, 4.0), (3, 10.0)))
    assert both.per_frame(1) == 4.0 and both.per_frame(3) == 10.0
    assert both.per_frame(2) == pytest.approx(7.0) and both.per_frame(5) == pytest.approx(16.0)
    assert Speed(CPU, ((3, 9.0),)).per_frame(2) == pytest.approx(6.0)  # one count: scales with objects
    assert Speed(CPU, ((1, 5.0), (3, 4.0))).per_frame(3) == 4.0  # measured stays exact
    assert Speed(CPU, ((1, 5.0), (3, 4.0))).per_frame(5) == pytest.approx(5.0)  # a falling line reads flat
    assert Speed(CPU, ((2, 1.0), (3, 3.0))).per_frame(1) == pytest.approx(0.5)  # never under a fair share
    assert Speed(CPU).per_frame(3) is None
    assert speeds.per_frame_text(Speed(CPU, ((3, 10.84),))) == "10.8 s/frame"
    assert speeds.per_frame_text(Speed(CPU, ((3, 0.4171),))) == "0.42 s/frame"
    assert speeds.per_frame_text(None) == "not measured"


def test_the_bench_file_round_trips_and_keeps_the_other_kinds(tmp_path):
    path = tmp_path / "speeds.yaml"
    speeds.write_bench_run(bench()["cpu"], path)
    speeds.write_bench_run(bench({"sam2.1_hiera_t": {"s_per_frame_3obj": 0.05}}, "cuda", "NVIDIA H100")["cuda"], path)
    runs = speeds.load_bench(path)
    assert set(runs) == {"cpu", "cuda"} and runs["cpu"].device == CPU
    assert runs["cpu"].speed("edgetam") == Speed(CPU, ((1, 1.6), (3, 4.0)), 0.84, here=False)
    assert runs["cuda"].speed("edgetam") is None
    assert path.read_text().startswith("# Measured speed of each model")
    assert [p.name for p in tmp_path.iterdir()] == ["speeds.yaml"]  # no temp file left
    path.write_text("gpu:\n  device: x\n")
    with pytest.raises(ValueError, match="not one of cpu, cuda, mps"):
        speeds.load_bench(path)


def test_the_shipped_bench_file_reads_and_names_registered_models():
    from sam2_web.registry import configs_dir

    names = {m.name for m in list_models()}
    for run in speeds.load_bench(configs_dir() / "speeds.yaml").values():
        assert run.kind in speeds.KINDS and set(run.models) <= names
        for figures in run.models.values():
            assert set(figures) <= {"s_per_frame_1obj", "s_per_frame_3obj", "click_new_frame_s", "samurai_ratio_3obj"}


def test_a_run_is_recorded_per_model_and_device_after_its_warmup(cache):
    times = [9.0] * speeds.WARMUP_FRAMES + [2.0] * 6
    assert speeds.record_frames("edgetam", CPU, 3, times, path=cache) == pytest.approx(2.0)
    assert speeds.record_frames("edgetam", CPU, 3, [1.0] * (speeds.WARMUP_FRAMES + 2), path=cache) is None
    assert speeds.local_speed("edgetam", CPU, cache) == Speed(CPU, ((3, 2.0),), None, here=True)
    assert speeds.local_speed("edgetam", "NVIDIA H100", cache) is None
    assert speeds.local_speed("sam2.1_hiera_t", CPU, cache) is None
    # A second run is weighted by its frames: 6 at 2.0 and 12 at 5.0.
    speeds.record_frames("edgetam", CPU, 3, [0.0] * speeds.WARMUP_FRAMES + [5.0] * 12, path=cache)
    assert speeds.local_speed("edgetam", CPU, cache).per_frame(3) == pytest.approx(4.0)
    speeds.record_click("edgetam", CPU, 0.8, path=cache)
    speeds.record_click("edgetam", CPU, 0.4, path=cache)
    assert speeds.local_speed("edgetam", CPU, cache).click_new_frame_s == pytest.approx(0.6)
    data = json.loads(cache.read_text())
    assert data["devices"][CPU]["edgetam"]["frames"] == {"3": 18}
    assert sorted(p.name for p in cache.parent.iterdir()) == ["speeds.json"]


def test_the_cache_is_replaced_whole_or_not_at_all(cache, monkeypatch):
    speeds.record_frames("edgetam", CPU, 1, [1.0] * 12, path=cache)
    before = cache.read_text()

    def crash(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", crash)
    speeds.record_frames("edgetam", CPU, 1, [3.0] * 12, path=cache)  # logged, not raised
    monkeypatch.undo()
    assert cache.read_text() == before
    assert sorted(p.name for p in cache.parent.iterdir()) == ["speeds.json"]
    cache.write_text("{not json")  # a damaged cache only costs its figures
    assert speeds.local_speed("edgetam", CPU, cache) is None
    speeds.record_frames("edgetam", CPU, 1, [3.0] * 12, path=cache)
    assert speeds.local_speed("edgetam", CPU, cache).per_frame(1) == pytest.approx(3.0)


def test_this_servers_figure_wins_and_the_bench_figure_says_where_it_was_measured(cache):
    label = speeds.device_label("cpu")
    shown = speeds.speed_of("edgetam", label, "cpu", bench=bench(), cache=cache)
    assert not shown.here and shown.source == f"bench, {CPU}" and shown.per_frame(3) == 4.0
    speeds.record_click("edgetam", label, 0.3, path=cache)  # clicks only: the bench still shows
    assert not speeds.speed_of("edgetam", label, "cpu", bench=bench(), cache=cache).here
    speeds.record_frames("edgetam", label, 3, [2.5] * 20, path=cache)
    shown = speeds.speed_of("edgetam", label, "cpu", bench=bench(), cache=cache)
    assert shown.here and shown.source == "measured on this server" and shown.per_frame(3) == 2.5
    assert speeds.speed_of("edgetam", label, "cuda", bench=bench(), cache=cache.with_name("none.json")) is None


def test_frame_clock_times_each_frame_and_skips_cached_ones():
    now = iter([0.0, 1.0, 3.0, 3.5, 7.5])
    clock = FrameClock(lambda: next(now))
    clock.tick()
    clock.tick()
    clock.skip()
    clock.tick()
    assert clock.seconds == [1.0, 2.0, 4.0]


def test_device_labels():
    import torch

    assert speeds.device_label("cpu").startswith(f"{torch.get_num_threads()}-thread CPU")
    assert speeds.device_label("cpu", "bf16").endswith(", bf16")


def test_a_predictor_loaded_by_name_is_known_by_its_model_and_device(tmp_path):
    import torch

    from sam2_web.build import build_sam2
    from sam2_web.models import load_predictor, model_name_of, speed_key

    ckpt = tmp_path / "t.pt"
    torch.save({"model": build_sam2("sam2.1/sam2.1_hiera_t.yaml", device="cpu").state_dict()}, ckpt)
    predictor = load_predictor("sam2.1_hiera_t", checkpoint=ckpt, device="cpu")
    assert model_name_of(predictor) == "sam2.1_hiera_t"
    assert speed_key(predictor) == ("sam2.1_hiera_t", speeds.device_label("cpu"))
    # A network changed by overrides is not the model the figures describe.
    changed = load_predictor("sam2.1_hiera_t", checkpoint=ckpt, device="cpu", overrides=["++model.image_size=512"])
    assert model_name_of(changed) is None and speed_key(changed) is None
    assert model_name_of(object()) is None


def test_one_cache_for_every_loader(tmp_path):
    """Video predictors come back from the one cache; the image predictor (from_pretrained too)
    is new each time around the cached network, and nothing loads twice."""
    import torch

    from sam2_web import SAM2ImagePredictor
    from sam2_web.build import build_sam2
    from sam2_web.loading import clear_cache, load_stats
    from sam2_web.models import load_predictor

    ckpt = tmp_path / "t.pt"
    torch.save({"model": build_sam2("sam2.1/sam2.1_hiera_t.yaml", device="cpu").state_dict()}, ckpt)
    clear_cache()
    loads, _ = load_stats()
    video = load_predictor("tiny", checkpoint=ckpt, device="cpu")
    assert load_predictor("facebook/sam2.1-hiera-tiny", checkpoint=ckpt, device="cpu") is video  # aliases
    one = SAM2ImagePredictor.from_pretrained("sam2.1_hiera_t", checkpoint=ckpt, device="cpu", mask_threshold=0.5)
    two = load_predictor("sam2.1_hiera_t", kind="image", checkpoint=ckpt, device="cpu")
    assert one is not two and one.model is two.model and one.mask_threshold == 0.5
    assert load_stats()[0] - loads == 2  # the video predictor and the image network, once each
    clear_cache()


def test_each_setting_has_one_place_in_the_app_config():
    from sam2_web.errors import ConfigError

    base = ["model=sam2.1_hiera_t", "device=cpu"]
    with pytest.raises(ConfigError, match="use engine.fill_hole_area=0"):
        compose_app_config([*base, "++model.fill_hole_area=0"])  # the engine section would win silently
    with pytest.raises(ConfigError, match="not a setting of the engine"):
        compose_app_config([*base, "+engine.max_cond_frames_in_attn=2"])
    cfg = compose_app_config([*base, "++model.max_cond_frames_in_attn=2", "engine.fill_hole_area=0"])
    assert cfg.engine.fill_hole_area == 0 and "max_cond_frames_in_attn" not in cfg.engine


# --- sam2-web models -----------------------------------------------------------------------------------

def test_models_lists_quality_speed_hub_repo_and_licence(tmp_path, monkeypatch, capsys):
    label = speeds.device_label("cpu")
    path = speeds.write_bench_run(bench()["cpu"], tmp_path / "speeds.yaml")
    monkeypatch.setenv(speeds.BENCH_ENV, str(path))
    monkeypatch.setenv(speeds.CACHE_ENV, str(tmp_path / "cache.json"))
    speeds.record_frames("sam2.1_hiera_s", label, 3, [3.25] * 20)
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = lines[0]
    for column in ("name", "label", "params", "SA-V test J&F", "s/frame (3 obj)", "measured on", "hub repo",
                   "licence"):
        assert column in header
    rows = {line.split()[0]: line for line in lines[1:] if line and not line.startswith(("[", "This", "memory="))}
    assert set(rows) == {m.name for m in list_models()}
    assert "71.7 [" in rows["edgetam"] and " 4.0 " in rows["edgetam"] and CPU in rows["edgetam"]
    assert "facebook/EdgeTAM" in rows["edgetam"] and "Apache-2.0" in rows["edgetam"]
    assert "76.5 [" in rows["sam2.1_hiera_t"] and "10.8" in rows["sam2.1_hiera_t"]
    assert "3.2" in rows["sam2.1_hiera_s"] and "this machine" in rows["sam2.1_hiera_s"]
    assert "not measured" in rows["sam2_hiera_l"]
    assert "model=auto (the default) picks efficienttam_s_512x512 here" in out
    assert "facebookresearch/EdgeTAM README" in out  # the source of the J&F figures
    # SAMURAI's cost: the bench run's samurai_ratio_3obj figure (these test figures have none).
    assert "memory=samurai (robust to occlusion" in out and "s/frame not measured" in out


def test_quality_data_is_what_the_rule_needs():
    tiny = next(m for m in list_models() if m.name == "sam2.1_hiera_t")
    assert isinstance(tiny.quality, PublishedQuality) and tiny.quality.score("SA-V test") == 76.5
