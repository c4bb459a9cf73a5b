"""Building models from configs: the reference's strings, names, YAML paths anywhere, official YAML."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from hydra.core.global_hydra import GlobalHydra
from omegaconf import OmegaConf

import sam2
from sam2_web import build_sam2, build_sam2_video_predictor
from sam2_web.build import available_configs, compose_config, resolve_config
from sam2_web.errors import ConfigNotFoundError
from sam2_web.models import compose_app_config, model_overrides
from sam2_web.registry import configs_dir, list_models

SMALL = ("++model.image_size=256",)
REFERENCE_CONFIGS = Path(sam2.__file__).parent / "configs"


@pytest.mark.parametrize("spelling", [
    "configs/sam2.1/sam2.1_hiera_t.yaml",  # the reference's string
    "sam2.1/sam2.1_hiera_t.yaml",
    "sam2.1/sam2.1_hiera_t",
    "sam2.1_hiera_t",
    "facebook/sam2.1-hiera-tiny",  # a Hub repo id, through the registry
])
def test_every_spelling_of_a_config_resolves_to_the_same_file(spelling):
    root, name = resolve_config(spelling)
    assert (root / f"{name}.yaml").resolve() == (configs_dir() / "sam2.1" / "sam2.1_hiera_t.yaml").resolve()


def test_all_eight_configs_ship_and_compose_with_our_targets():
    assert len(available_configs()) >= 8  # the SAM 2 / 2.1 sizes, then EdgeTAM and EfficientTAM
    assert sorted(m.config for m in list_models()) == available_configs()
    for name in available_configs():
        cfg = compose_config(name)
        assert cfg.model._target_ == "sam2_web.modeling.sam2_base.SAM2Base"
        assert cfg.model.image_encoder.trunk._target_.startswith("sam2_web.modeling.")


def test_unknown_config_lists_the_ones_that_exist():
    with pytest.raises(ConfigNotFoundError) as info:
        resolve_config("sam2.1_hiera_huge")
    message = str(info.value)
    assert "sam2.1_hiera_huge" in message and "sam2.1/sam2.1_hiera_t.yaml" in message
    assert ".yaml" in message and "path" in message


def test_official_yaml_from_anywhere_on_disk_builds_our_classes(tmp_path):
    # An official config (targets say sam2.modeling...) copied to a user folder, as people
    # ship fine-tuned checkpoints with their configs.
    official = tmp_path / "my_finetune" / "sam2.1_hiera_t_custom.yaml"
    official.parent.mkdir()
    shutil.copy(REFERENCE_CONFIGS / "sam2.1" / "sam2.1_hiera_t.yaml", official)
    assert "sam2.modeling" in official.read_text()
    model = build_sam2(str(official), device="cpu", hydra_overrides_extra=list(SMALL))
    assert type(model).__module__ == "sam2_web.modeling.sam2_base"
    assert type(model.image_encoder.trunk).__module__ == "sam2_web.modeling.backbones.hieradet"
    assert model.image_size == 256


def test_official_video_predictor_target_maps_to_ours():
    cfg = compose_config(
        str(REFERENCE_CONFIGS / "sam2" / "sam2_hiera_t.yaml"),
        ["++model._target_=sam2.sam2_video_predictor.SAM2VideoPredictor"],
    )
    assert cfg.model._target_ == "sam2_web.video.predictor.SAM2VideoPredictor"


def test_postprocessing_overrides_and_user_overrides_win():
    image = build_sam2("sam2.1_hiera_t", device="cpu", hydra_overrides_extra=list(SMALL))
    args = image.sam_mask_decoder
    assert args.dynamic_multimask_via_stability is True
    assert args.dynamic_multimask_stability_delta == pytest.approx(0.05)
    assert args.dynamic_multimask_stability_thresh == pytest.approx(0.98)
    plain = build_sam2("sam2.1_hiera_t", device="cpu", hydra_overrides_extra=list(SMALL), apply_postprocessing=False)
    assert plain.sam_mask_decoder.dynamic_multimask_via_stability is False

    video = build_sam2_video_predictor("sam2.1_hiera_t", device="cpu", hydra_overrides_extra=list(SMALL))
    assert video.fill_hole_area == 8 and video.binarize_mask_from_pts_for_mem_enc is True
    mine = build_sam2_video_predictor(
        "sam2.1_hiera_t", device="cpu", hydra_overrides_extra=[*SMALL, "++model.fill_hole_area=0"]
    )
    assert mine.fill_hole_area == 0


def test_strict_checkpoint_round_trip_through_build(tmp_path):
    torch.manual_seed(0)
    first = build_sam2("sam2_hiera_t", device="cpu", hydra_overrides_extra=list(SMALL))
    path = tmp_path / "ckpt.pt"
    torch.save({"model": first.state_dict()}, path)
    torch.manual_seed(1)
    second = build_sam2("sam2_hiera_t", path, device="cpu", hydra_overrides_extra=list(SMALL))
    for (name, a), (_, b) in zip(first.state_dict().items(), second.state_dict().items()):
        assert torch.equal(a, b), name


def test_composing_leaves_the_callers_hydra_state_alone():
    # `import sam2` initialised hydra for the reference; our builds must not break it.
    from hydra import compose

    assert GlobalHydra.instance().is_initialized()
    compose_config("sam2.1_hiera_s")
    ref_cfg = compose(config_name="configs/sam2.1/sam2.1_hiera_s.yaml")
    assert ref_cfg.model._target_ == "sam2.modeling.sam2_base.SAM2Base"


def test_app_config_picks_the_model_by_override():
    overrides = ["model=sam2_hiera_b+", "device=cpu", "++model.image_size=512", "engine.read_ahead=2"]
    cfg = compose_app_config(overrides)
    assert cfg.weights.name == "sam2_hiera_b+" and cfg.weights.repo_id == "facebook/sam2-hiera-base-plus"
    assert cfg.model.image_encoder.trunk.embed_dim == 112
    assert cfg.model.image_size == 512 and cfg.engine.read_ahead == 2 and cfg.device == "cpu"
    assert model_overrides(overrides) == ["++model.image_size=512"]
    default = compose_app_config()
    assert default.weights.name == "sam2.1_hiera_t"
    assert OmegaConf.select(default, "limits.max_objects") > 3  # no 3-object cap like the reference demo
