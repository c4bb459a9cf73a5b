"""Module-level parity of the image encoder (Hiera trunk + FPN neck) and of the position
encodings and shared blocks against the reference (PyPI ``sam2``, used only as an oracle).

For every published config, the ``model.image_encoder`` node of our YAML is instantiated twice:
as is (ours) and with the targets pointed back at ``sam2.`` (the reference). The reference's
seeded random weights are perturbed (so zero-initialised ones such as ``pos_embed`` matter),
round-tripped through an official-format checkpoint into ours with ``strict=True``, and every
FPN level and positional encoding is compared. Large models run at 512 px to keep CI time down;
Hiera resizes its positional embedding to any multiple of 32.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Dict, Tuple

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from parity import MODEL_NAMES, as_reference, perturb, reference_config, save_official_checkpoint

REPO = Path(__file__).resolve().parents[1]
TOL = 1e-4
# Full resolution for the small models, reduced for the big ones (CI time on 2 shared cores).
IMAGE_SIZE = {"t": 1024, "s": 1024, "b+": 512, "l": 512}




def _encoder_node(name: str) -> dict:
    cfg = OmegaConf.load(REPO / reference_config(name))
    return OmegaConf.to_container(cfg.model.image_encoder, resolve=True)


def _build_pair(node: dict, ckpt: Path) -> Tuple[torch.nn.Module, torch.nn.Module]:
    """(reference, ours) encoders with the same perturbed seeded weights, in eval mode."""
    torch.manual_seed(0)
    ref = instantiate(as_reference(node)).eval()
    perturb(ref, seed=0)
    save_official_checkpoint(ref, ckpt)
    ours = instantiate(node).eval()
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    ours.load_state_dict(state, strict=True)
    return ref, ours


def _worst(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape and a.dtype == b.dtype
    return (a - b).abs().max().item()


@functools.lru_cache(maxsize=None)
def _encoder_diffs(node_yaml: str, size: int, workdir: str) -> Dict[str, float]:
    """Worst abs diff per output of one encoder config (cached: sam2 and sam2.1 share them)."""
    node = OmegaConf.to_container(OmegaConf.create(node_yaml))
    ref, ours = _build_pair(node, Path(workdir) / f"encoder-{abs(hash(node_yaml))}.pt")
    assert ours.trunk.channel_list == ref.trunk.channel_list
    image = torch.randn(1, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        want, got = ref(image), ours(image)
    assert len(got["backbone_fpn"]) == len(want["backbone_fpn"])
    assert len(got["vision_pos_enc"]) == len(want["vision_pos_enc"])
    diffs = {"vision_features": _worst(want["vision_features"], got["vision_features"])}
    for key in ("backbone_fpn", "vision_pos_enc"):
        for level, (w, g) in enumerate(zip(want[key], got[key])):
            diffs[f"{key}[{level}] {tuple(w.shape)}"] = _worst(w, g)
    return diffs


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_image_encoder_matches_reference(name, parity_dir):
    size = IMAGE_SIZE[name.split("_")[-1]]
    node = _encoder_node(name)
    diffs = _encoder_diffs(OmegaConf.to_yaml(OmegaConf.create(node)), size, str(parity_dir))
    for key, diff in diffs.items():
        print(f"{name} @{size}: {key} max abs diff {diff:.2e}")
    assert max(diffs.values()) <= TOL, diffs


def test_training_path_and_batch_match_reference(parity_dir):
    """The autograd path (no in-place tricks) and a batch of 2 at a non-square size."""
    node = _encoder_node("sam2.1_hiera_t")
    ref, ours = _build_pair(node, parity_dir / "encoder-grad.pt")
    image = torch.randn(2, 3, 256, 320, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = ref(image)
    got = ours(image)  # grad enabled: the plain path
    got["vision_features"].sum().backward()
    assert ours.trunk.patch_embed.proj.weight.grad is not None
    with torch.inference_mode():
        fast = ours(image)  # fast path, per-image bands
    for level, w in enumerate(want["backbone_fpn"]):
        plain_diff = _worst(w, got["backbone_fpn"][level].detach())
        fast_diff = _worst(w, fast["backbone_fpn"][level])
        print(f"level {level}: grad-path diff {plain_diff:.2e}, batched fast-path diff {fast_diff:.2e}")
        assert plain_diff <= TOL and fast_diff <= TOL


def test_autocast_bfloat16_matches_reference(parity_dir):
    """Under autocast the inference shortcuts step aside; outputs keep the reference's dtypes."""
    ref, ours = _build_pair(_encoder_node("sam2.1_hiera_t"), parity_dir / "encoder-autocast.pt")
    image = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(3))
    with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = ref(image), ours(image)
    for level, (w, g) in enumerate(zip(want["backbone_fpn"], got["backbone_fpn"])):
        diff = _worst(w.float(), g.float())
        print(f"autocast level {level} ({g.dtype}): {diff:.2e}")
        assert g.dtype == w.dtype and diff <= 1e-3


def test_image_size_not_multiple_of_32_is_refused():
    from sam2_web.modeling.backbones.hieradet import Hiera

    trunk = Hiera(embed_dim=8, num_heads=1, stages=(1, 1, 1, 1), global_att_blocks=(2,),
                  window_pos_embed_bkg_spatial_size=(7, 7))
    with pytest.raises(ValueError, match="multiple of 32"):
        trunk(torch.zeros(1, 3, 100, 96))


# --- position encodings ------------------------------------------------------------------------


@pytest.mark.parametrize("normalize,scale", [(True, None), (True, 3.0), (False, None)])
def test_sine_position_encoding_matches_reference(normalize, scale):
    from sam2.modeling.position_encoding import PositionEmbeddingSine as Ref

    from sam2_web.modeling.position_encoding import PositionEmbeddingSine

    ref, ours = Ref(256, normalize=normalize, scale=scale), PositionEmbeddingSine(256, normalize=normalize, scale=scale)
    for shape in [(1, 256, 64, 64), (2, 32, 16, 16), (3, 8, 7, 12), (1, 8, 64, 64)]:
        x = torch.zeros(shape)
        worst = _worst(ref(x), ours(x))
        print(f"sine {shape}: {worst:.2e}")
        assert worst <= 1e-6
    gen = torch.Generator().manual_seed(0)
    px, py, w, h = (torch.rand(2, 5, generator=gen) for _ in range(4))
    labels = torch.randint(0, 4, (2, 5), generator=gen).float()
    assert _worst(ref.encode_points(px, py, labels), ours.encode_points(px, py, labels)) <= 1e-6
    bx, by, bw, bh = px[0], py[0], w[0], h[0]
    assert _worst(ref.encode_boxes(bx, by, bw, bh), ours.encode_boxes(bx, by, bw, bh)) <= 1e-6


def test_random_position_encoding_matches_reference():
    from sam2.modeling.position_encoding import PositionEmbeddingRandom as Ref

    from sam2_web.modeling.position_encoding import PositionEmbeddingRandom

    torch.manual_seed(0)
    ref = Ref(128)
    ours = PositionEmbeddingRandom(128)
    ours.load_state_dict(ref.state_dict(), strict=True)
    assert _worst(ref((64, 48)), ours((64, 48))) <= 1e-6
    coords = torch.rand(2, 7, 2) * 1000
    assert _worst(ref.forward_with_coords(coords, (1024, 768)), ours.forward_with_coords(coords, (1024, 768))) <= 1e-6


@pytest.mark.parametrize("repeat", [False, True])
def test_rope_helpers_match_reference(repeat):
    from sam2.modeling import position_encoding as R

    from sam2_web.modeling import position_encoding as O

    tx_ref, ty_ref = R.init_t_xy(12, 5)
    tx, ty = O.init_t_xy(12, 5)
    assert torch.equal(tx_ref, tx) and torch.equal(ty_ref, ty)
    want_cis, cis = R.compute_axial_cis(64, 16, 16, 10000.0), O.compute_axial_cis(64, 16, 16, 10000.0)
    assert cis.dtype == want_cis.dtype and _worst(want_cis, cis) == 0.0
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(2, 1, 256, 64, generator=gen)
    k = torch.randn(2, 1, 256 * (3 if repeat else 1), 64, generator=gen)
    (wq, wk), (gq, gk) = R.apply_rotary_enc(q, k, want_cis, repeat), O.apply_rotary_enc(q, k, cis, repeat)
    print(f"rope q {_worst(wq, gq):.2e} k {_worst(wk, gk):.2e}")
    assert _worst(wq, gq) <= 1e-6 and _worst(wk, gk) <= 1e-6
    empty = k[:, :, :0]
    _, k_out = O.apply_rotary_enc(q, empty, cis, repeat)
    assert k_out.shape == empty.shape
    with pytest.raises(ValueError, match="feat_sizes"):
        O.apply_rotary_enc(q[:, :, :100], k, cis)


# --- shared blocks -----------------------------------------------------------------------------


def test_shared_blocks_match_reference():
    from sam2.modeling import sam2_utils as R

    from sam2_web.modeling import common as O

    torch.manual_seed(0)
    ref_mlp = R.MLP(32, 64, 16, 3, sigmoid_output=True)
    mlp = O.MLP(32, 64, 16, 3, sigmoid_output=True)
    mlp.load_state_dict(ref_mlp.state_dict(), strict=True)
    x = torch.randn(4, 9, 32)
    assert _worst(ref_mlp(x), mlp(x)) == 0.0

    ref_norm, norm = R.LayerNorm2d(8), O.LayerNorm2d(8)
    perturb(ref_norm)
    norm.load_state_dict(ref_norm.state_dict(), strict=True)
    x = torch.randn(2, 8, 5, 6)
    assert _worst(ref_norm(x), norm(x)) <= 1e-6

    pos = torch.tensor([0.0, 1.0, 5.0, -3.0])
    assert _worst(R.get_1d_sine_pe(pos, 64), O.get_1d_sine_pe(pos, 64)) == 0.0

    outputs = {t: f"out{t}" for t in (0, 3, 5, 9, 12, 20)}
    for frame in (0, 4, 10, 25):
        for limit in (-1, 2, 3, 4, 10):
            want = R.select_closest_cond_frames(frame, outputs, limit)
            got = O.select_closest_cond_frames(frame, outputs, limit)
            assert [list(d.items()) for d in got] == [list(d.items()) for d in want]

    assert O.get_activation_fn("gelu") is torch.nn.functional.gelu
    with pytest.raises(ValueError, match="relu"):
        O.get_activation_fn("swish")
    drop = O.DropPath(0.5).train()
    y = drop(torch.ones(1000, 4))
    assert set(y[:, 0].tolist()) <= {0.0, 2.0} and 0 < (y[:, 0] == 0).sum() < 1000
    assert torch.equal(drop.eval()(torch.ones(3)), torch.ones(3))
