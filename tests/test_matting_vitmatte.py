"""The optional learned soft-edge method, ViTMatte through ``transformers``, offline: a tiny model built
from its config (random weights) is served by the loopback Hub; ``alpha_matte(method="vitmatte")``
must fetch it through ``sam2_web.hub``, feed it what ``VitMatteImageProcessor`` makes of the crop and
its trimap, and say clearly what to do when the package or the weights are missing."""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

from hubserver import serve_hub

from sam2_web.errors import MattingUnavailableError
from sam2_web.matting import alpha_matte
from sam2_web.matting import vitmatte as vitmatte_module
from sam2_web.matting.alpha import MatteOptions, band_of, check_mask

transformers = pytest.importorskip("transformers", reason="the 'vitmatte' extra (transformers) is not installed")

REPO_ID = "hustvl/vitmatte-tiny-test"
H, W = 80, 100


def _tiny_model(folder):
    config = transformers.VitMatteConfig(
        backbone_config=transformers.VitDetConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                                  mlp_ratio=2, num_channels=4, image_size=64, pretrain_image_size=64,
                                                  out_features=["stage2"]),
        hidden_size=32, convstream_hidden_sizes=[8, 16, 32], fusion_hidden_sizes=[32, 16, 8, 8])
    torch.manual_seed(0)
    model = transformers.VitMatteForImageMatting(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
    folder = tmp_path_factory.mktemp("vitmatte")
    model = _tiny_model(folder)
    files = {(REPO_ID, "main", name): (folder / name).read_bytes() for name in ("config.json", "model.safetensors")}
    return folder, model, files


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    monkeypatch.setattr(vitmatte_module, "_cache", {})


def _scene():
    yy, xx = np.mgrid[:H, :W]
    mask = (xx - 50) ** 2 + (yy - 40) ** 2 <= 22**2
    rng = np.random.default_rng(0)
    image = np.where(mask[..., None], [200, 120, 60], [40, 90, 180]).astype(np.float64)
    image = np.clip(image + rng.normal(0, 8, image.shape), 0, 255).astype(np.uint8)
    return image, mask


def _processor_alpha(model, image, mask, options):
    """The oracle: transformers' own processor on the crop and trimap alpha_matte solves."""
    band = band_of(check_mask(mask, (H, W)), options)
    crop = image[band.rows, band.cols]
    trimap = np.where(band.unknown, 128, band.known * 255).astype(np.uint8)
    inputs = transformers.VitMatteImageProcessor()(images=crop, trimaps=trimap, return_tensors="pt")
    with torch.inference_mode():
        alphas = model(**inputs).alphas[0, 0, :crop.shape[0], :crop.shape[1]].clamp(0, 1).numpy()
    out = mask.astype(np.float32)
    solved = np.where(band.unknown, alphas, band.known)
    solved[solved < 0.05] = 0
    solved[solved > 0.95] = 1
    out[band.rows, band.cols] = solved
    return out, band


def test_vitmatte_weights_come_from_the_hub_and_match_the_processor(tmp_path, monkeypatch, weights):
    _, model, files = weights
    image, mask = _scene()
    with serve_hub(files) as hub:
        hub.use(monkeypatch, tmp_path)
        alpha = alpha_matte(image, mask, method="vitmatte", vitmatte_model=REPO_ID, band_px=6)
        fetched = len(hub.requests.paths("GET"))
        again = alpha_matte(image, mask, method="vitmatte", vitmatte_model=REPO_ID, band_px=6)
        assert len(hub.requests.paths("GET")) == fetched  # loaded once per process
    assert ("GET", f"/{REPO_ID}/resolve/main/model.safetensors") in hub.requests
    want, band = _processor_alpha(model, image, mask, MatteOptions(band_px=6))
    assert alpha.shape == (H, W) and alpha.dtype == np.float32
    np.testing.assert_allclose(alpha, want, atol=1e-5)
    np.testing.assert_array_equal(alpha, again)
    # Outside the band the mask stands; inside, the (random) model decided.
    outside = np.ones((H, W), bool)
    outside[band.rows, band.cols] = ~band.unknown
    np.testing.assert_array_equal(alpha[outside], mask[outside].astype(np.float32))


def test_vitmatte_from_a_local_folder(weights):
    folder, model, _ = weights
    image, mask = _scene()
    alpha = alpha_matte(image, mask, method="vitmatte", vitmatte_model=str(folder), band_px=6)
    np.testing.assert_allclose(alpha, _processor_alpha(model, image, mask, MatteOptions(band_px=6))[0], atol=1e-5)


def test_missing_weights_say_what_to_do(tmp_path, monkeypatch, weights):
    image, mask = _scene()
    with serve_hub(weights[2]) as hub:
        hub.use(monkeypatch, tmp_path)
        with pytest.raises(MattingUnavailableError, match="guided") as info:
            alpha_matte(image, mask, method="vitmatte", vitmatte_model="hustvl/not-there")
        assert "not-there" in str(info.value)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(MattingUnavailableError, match="offline"):
        alpha_matte(image, mask, method="vitmatte", vitmatte_model=REPO_ID)


def test_missing_transformers_says_what_to_install(monkeypatch):
    image, mask = _scene()
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MattingUnavailableError, match=r"pip install 'sam2_web\[vitmatte\]'"):
        alpha_matte(image, mask, method="vitmatte")
    # The default method needs none of it.
    assert alpha_matte(image, mask).shape == (H, W)
