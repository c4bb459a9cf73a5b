"""Module-level parity of the SAM heads and the memory modules against the reference.

Each test builds the reference module and ours with the kwargs our configs (or the reference's
``SAM2Base._build_sam_heads``) give them, perturbs the reference's seeded random weights so every
parameter matters, round-trips them through an official-format checkpoint into ours with
``strict=True``, feeds both the same random inputs and compares outputs. Sizes are reduced
(256-pixel images, 16x16 feature maps) to stay fast on a shared CPU.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from parity import as_reference, perturb, save_official_checkpoint

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "configs/sam2.1/sam2.1_hiera_t.yaml"
# Model flags that shape the SAM heads (SAM2Base._build_sam_heads passes them on).
HEAD_FLAGS = (
    "use_high_res_features_in_sam",
    "iou_prediction_use_sigmoid",
    "pred_obj_scores",
    "pred_obj_scores_mlp",
    "use_multimask_token_for_obj_ptr",
)
IMAGE_SIZE = 256
FEAT = IMAGE_SIZE // 16  # stride-16 feature map side
DIM = 256  # hidden_dim of every published model
MEM_DIM = 64


# --- helpers -------------------------------------------------------------------------------


pytestmark = pytest.mark.usefixtures("one_torch_thread")





def _model_cfg(path: Path = CONFIG) -> dict:
    return OmegaConf.to_container(OmegaConf.load(path).model, resolve=True)


def test_all_models_share_these_modules():
    """Every shipped config builds the heads and memory modules tested here, so one suffices."""
    paths = sorted(REPO.glob("configs/sam2*/sam2*_hiera_*.yaml"))
    assert len(paths) == 8
    base = _model_cfg()
    for path in paths:
        cfg = _model_cfg(path)
        for section in ("memory_attention", "memory_encoder"):
            assert cfg[section] == base[section], f"{path.name}: {section} differs; test it too"
        for flag in HEAD_FLAGS:
            assert cfg.get(flag) == base.get(flag), f"{path.name}: {flag} differs; test it too"


def _pair(ref: torch.nn.Module, ours: torch.nn.Module, tmp_path: Path, seed: int = 0):
    """Perturb ``ref``'s weights, load them into ``ours`` through a checkpoint file (strict)."""
    perturb(ref, seed)
    ckpt = save_official_checkpoint(ref, tmp_path / "module.pt")
    state = torch.load(ckpt, map_location="cpu", weights_only=True)["model"]
    ours.load_state_dict(state, strict=True)
    return ref.eval(), ours.eval()


def _check(name: str, ref_out: torch.Tensor, our_out: torch.Tensor, tol: float = 1e-5) -> float:
    assert ref_out.shape == our_out.shape, f"{name}: shape {our_out.shape} != {ref_out.shape}"
    assert ref_out.dtype == our_out.dtype, f"{name}: dtype {our_out.dtype} != {ref_out.dtype}"
    if ref_out.numel() == 0:
        print(f"{name}: empty")
        return 0.0
    diff = (ref_out.float() - our_out.float()).abs().max().item()
    print(f"{name}: max abs diff {diff:.3g} (|ref| max {ref_out.abs().max().item():.3g})")
    assert diff <= tol, f"{name}: max abs diff {diff} > {tol}"
    return diff


def _randn(*shape, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- prompt encoder ------------------------------------------------------------------------


def _prompt_encoders(tmp_path):
    from sam2.modeling.sam.prompt_encoder import PromptEncoder as RefPromptEncoder

    from sam2_web.modeling.sam.prompt_encoder import PromptEncoder

    # The values SAM2Base._build_sam_heads uses (mask_in_chans=16 comes from SAM).
    kwargs = dict(
        embed_dim=DIM,
        image_embedding_size=(FEAT, FEAT),
        input_image_size=(IMAGE_SIZE, IMAGE_SIZE),
        mask_in_chans=16,
    )
    torch.manual_seed(0)
    ref = RefPromptEncoder(**kwargs)
    return _pair(ref, PromptEncoder(**kwargs), tmp_path)


def _points(batch: int, n: int, seed: int):
    coords = torch.rand(batch, n, 2, generator=torch.Generator().manual_seed(seed)) * IMAGE_SIZE
    # Every label the model knows, padding included.
    labels = torch.tensor([[1, 0, -1, 2, 3, 1][:n]] * batch, dtype=torch.int32)
    return coords, labels


@pytest.mark.parametrize("prompt", ["points", "box", "points+box", "mask", "points+mask"])
@torch.no_grad()
def test_prompt_encoder(prompt, tmp_path):
    ref, ours = _prompt_encoders(tmp_path)
    batch = 2
    points = _points(batch, 6, seed=1) if "points" in prompt else None
    if "box" in prompt:
        xy = torch.rand(batch, 2, 2, generator=torch.Generator().manual_seed(2)) * IMAGE_SIZE
        boxes = torch.cat([xy.min(dim=1).values, xy.max(dim=1).values], dim=1)
    else:
        boxes = None
    masks = _randn(batch, 1, 4 * FEAT, 4 * FEAT, seed=3) if "mask" in prompt else None

    ref_sparse, ref_dense = ref(points, boxes, masks)
    our_sparse, our_dense = ours(points, boxes, masks)
    _check(f"prompt encoder [{prompt}] sparse", ref_sparse, our_sparse)
    _check(f"prompt encoder [{prompt}] dense", ref_dense, our_dense)
    # Points alone get a padding token appended; with a box they do not.
    expected = (6 + (boxes is None) if points is not None else 0) + (2 if boxes is not None else 0)
    assert our_sparse.shape == (batch, expected, DIM)


@torch.no_grad()
def test_prompt_encoder_dense_pe_and_sizes(tmp_path):
    ref, ours = _prompt_encoders(tmp_path)
    _check("prompt encoder dense pe", ref.get_dense_pe(), ours.get_dense_pe())
    assert ours.mask_input_size == ref.mask_input_size == (4 * FEAT, 4 * FEAT)
    # No prompt at all: empty sparse tokens, the "no mask" embedding everywhere.
    ref_sparse, ref_dense = ref(None, None, None)
    our_sparse, our_dense = ours(None, None, None)
    assert our_sparse.shape == ref_sparse.shape == (1, 0, DIM)
    _check("prompt encoder no prompt dense", ref_dense, our_dense)


# --- mask decoder --------------------------------------------------------------------------


def _decoder_kwargs(**overrides) -> dict:
    """MaskDecoder kwargs as SAM2Base._build_sam_heads derives them from a model config."""
    cfg = _model_cfg()
    kwargs = dict(
        num_multimask_outputs=3,
        transformer_dim=DIM,
        iou_head_depth=3,
        iou_head_hidden_dim=256,
        use_high_res_features=cfg.get("use_high_res_features_in_sam", False),
        iou_prediction_use_sigmoid=cfg.get("iou_prediction_use_sigmoid", False),
        pred_obj_scores=cfg.get("pred_obj_scores", False),
        pred_obj_scores_mlp=cfg.get("pred_obj_scores_mlp", False),
        use_multimask_token_for_obj_ptr=cfg.get("use_multimask_token_for_obj_ptr", False),
    )
    kwargs.update(overrides)
    return kwargs


def _decoders(tmp_path, **kwargs):
    from sam2.modeling.sam.mask_decoder import MaskDecoder as RefMaskDecoder
    from sam2.modeling.sam.transformer import TwoWayTransformer as RefTwoWayTransformer

    from sam2_web.modeling.sam.mask_decoder import MaskDecoder
    from sam2_web.modeling.sam.transformer import TwoWayTransformer

    tkw = dict(depth=2, embedding_dim=DIM, mlp_dim=2048, num_heads=8)
    torch.manual_seed(0)
    ref = RefMaskDecoder(transformer=RefTwoWayTransformer(**tkw), **kwargs)
    ours = MaskDecoder(transformer=TwoWayTransformer(**tkw), **kwargs)
    return _pair(ref, ours, tmp_path)


def _decoder_inputs(num_prompts: int, high_res: bool, repeat_image: bool, seed: int = 10):
    image_batch = 1 if repeat_image else num_prompts
    inputs = dict(
        image_embeddings=_randn(image_batch, DIM, FEAT, FEAT, seed=seed),
        image_pe=_randn(1, DIM, FEAT, FEAT, seed=seed + 1),
        sparse_prompt_embeddings=_randn(num_prompts, 3, DIM, seed=seed + 2),
        dense_prompt_embeddings=_randn(num_prompts, DIM, FEAT, FEAT, seed=seed + 3),
        repeat_image=repeat_image,
    )
    if high_res:
        # Already through conv_s0/conv_s1, as SAM2Base.forward_image hands them over.
        s0 = _randn(image_batch, DIM // 8, 4 * FEAT, 4 * FEAT, seed=seed + 4)
        s1 = _randn(image_batch, DIM // 4, 2 * FEAT, 2 * FEAT, seed=seed + 5)
        if repeat_image:
            s0, s1 = s0.expand(num_prompts, -1, -1, -1), s1.expand(num_prompts, -1, -1, -1)
        inputs["high_res_features"] = [s0, s1]
    return inputs


def _check_decoder_outputs(tag, ref_out, our_out, tol=1e-4):
    names = ("masks", "iou_pred", "sam_tokens_out", "object_score_logits")
    for name, r, o in zip(names, ref_out, our_out):
        # Mask logits are dot products over 32 channels of O(1) features: allow accumulation.
        _check(f"mask decoder [{tag}] {name}", r, o, tol)


@pytest.mark.parametrize("multimask", [False, True])
@torch.no_grad()
def test_mask_decoder_as_configured(multimask, tmp_path):
    ref, ours = _decoders(tmp_path, **_decoder_kwargs())
    assert ours.use_high_res_features and ours.pred_obj_scores  # what the configs ask for
    # conv_s0/conv_s1 live on the decoder (checkpoint keys sam_mask_decoder.conv_s*)
    assert {"conv_s0.weight", "conv_s1.weight"} <= set(ours.state_dict())
    inputs = _decoder_inputs(num_prompts=3, high_res=True, repeat_image=True)
    ref_out = ref(multimask_output=multimask, **inputs)
    our_out = ours(multimask_output=multimask, **inputs)
    _check_decoder_outputs(f"configured multimask={multimask}", ref_out, our_out)
    assert our_out[0].shape == (3, 3 if multimask else 1, 4 * FEAT, 4 * FEAT)
    # use_multimask_token_for_obj_ptr: three tokens with multimask output, else the single one.
    assert our_out[2].shape == (3, 3 if multimask else 1, DIM)


@pytest.mark.parametrize("multimask", [False, True])
@torch.no_grad()
def test_mask_decoder_plain_sam_heads(multimask, tmp_path):
    """No high-res features, linear IoU output, no object-score head (constant logit)."""
    kwargs = _decoder_kwargs(
        use_high_res_features=False,
        iou_prediction_use_sigmoid=False,
        pred_obj_scores=False,
        pred_obj_scores_mlp=False,
        use_multimask_token_for_obj_ptr=False,
    )
    ref, ours = _decoders(tmp_path, **kwargs)
    inputs = _decoder_inputs(num_prompts=2, high_res=False, repeat_image=False)
    ref_out = ref(multimask_output=multimask, **inputs)
    our_out = ours(multimask_output=multimask, **inputs)
    _check_decoder_outputs(f"plain multimask={multimask}", ref_out, our_out)
    assert torch.all(our_out[3] == 10.0)
    assert our_out[2].shape == (2, 1, DIM)


@torch.no_grad()
def test_mask_decoder_linear_object_score_head(tmp_path):
    ref, ours = _decoders(tmp_path, **_decoder_kwargs(pred_obj_scores_mlp=False))
    assert isinstance(ours.pred_obj_score_head, torch.nn.Linear)
    inputs = _decoder_inputs(num_prompts=2, high_res=True, repeat_image=False)
    ref_out = ref(multimask_output=False, **inputs)
    _check_decoder_outputs("linear obj head", ref_out, ours(multimask_output=False, **inputs))


@torch.no_grad()
def test_mask_decoder_dynamic_stability_fallback(tmp_path):
    """Single-mask output falls back to the best multimask output where it is unstable."""
    # The video predictor's sam_mask_decoder_extra_args.
    kwargs = _decoder_kwargs(
        dynamic_multimask_via_stability=True,
        dynamic_multimask_stability_delta=0.05,
        dynamic_multimask_stability_thresh=0.98,
    )
    ref, ours = _decoders(tmp_path, **kwargs)
    inputs = _decoder_inputs(num_prompts=4, high_res=True, repeat_image=True, seed=20)

    # Put the threshold between the prompts' stability scores so both branches are taken.
    all_masks, all_ious, _, _ = ref.predict_masks(**inputs)
    stability = ref._get_stability_scores(all_masks[:, 0:1]).flatten()
    ours_stability = ours._get_stability_scores(all_masks[:, 0:1]).flatten()
    _check("stability scores", stability, ours_stability, 0.0)
    thresh = stability.median().item()
    ref.dynamic_multimask_stability_thresh = ours.dynamic_multimask_stability_thresh = thresh
    stable = stability >= thresh
    assert stable.any() and not stable.all(), f"stability scores do not split: {stability.tolist()}"

    ref_out = ref(multimask_output=False, **inputs)
    our_out = ours(multimask_output=False, **inputs)
    _check_decoder_outputs("dynamic stability", ref_out, our_out)
    masks, ious = our_out[0], our_out[1]
    best = all_ious[:, 1:].argmax(dim=-1) + 1
    for i in range(len(stable)):
        source = 0 if stable[i] else best[i].item()
        assert torch.allclose(masks[i, 0], all_masks[i, source], atol=1e-4)
        assert torch.allclose(ious[i, 0], all_ious[i, source], atol=1e-5)

    # Training mode ignores the fallback and returns the single-mask token's output.
    ours.train()
    train_masks = ours(multimask_output=False, **inputs)[0]
    assert torch.allclose(train_masks[:, 0], all_masks[:, 0], atol=1e-4)


# --- memory attention ----------------------------------------------------------------------


def _memory_attentions(tmp_path, feat: int = FEAT):
    cfg = _model_cfg()["memory_attention"]
    for attn in ("self_attention", "cross_attention"):
        cfg["layer"][attn]["feat_sizes"] = [feat, feat]
    torch.manual_seed(0)
    ref = instantiate(as_reference(cfg), _convert_="all")
    ours = instantiate(cfg, _convert_="all")
    assert type(ours).__module__ == "sam2_web.modeling.memory_attention"
    return _pair(ref, ours, tmp_path)


def _memory_inputs(batch, num_frames, num_ptr_tokens, side=FEAT, seed=30):
    n = side * side
    m = num_frames * n + num_ptr_tokens
    return dict(
        curr=_randn(n, batch, DIM, seed=seed),
        curr_pos=_randn(n, batch, DIM, seed=seed + 1),
        memory=_randn(m, batch, MEM_DIM, seed=seed + 2),
        memory_pos=_randn(m, batch, MEM_DIM, seed=seed + 3),
        num_obj_ptr_tokens=num_ptr_tokens,
    )


@pytest.mark.parametrize("num_frames,num_ptr_tokens", [(1, 0), (3, 16), (7, 64)])
@torch.no_grad()
def test_memory_attention(num_frames, num_ptr_tokens, tmp_path):
    ref, ours = _memory_attentions(tmp_path)
    inputs = _memory_inputs(batch=2, num_frames=num_frames, num_ptr_tokens=num_ptr_tokens)
    ref_out = ref(**inputs)
    our_out = ours(**inputs)
    _check(f"memory attention [frames={num_frames} ptrs={num_ptr_tokens}]", ref_out, our_out, 1e-4)
    assert our_out.shape == (FEAT * FEAT, 2, DIM)


@torch.no_grad()
def test_memory_attention_other_feature_size_and_list_input(tmp_path):
    """Inputs of another (square) size recompute the rotations; list inputs are unwrapped."""
    ref, ours = _memory_attentions(tmp_path, feat=FEAT)
    for side in (8, FEAT, 8):  # back and forth: the cache must serve both sizes correctly
        inputs = _memory_inputs(batch=1, num_frames=2, num_ptr_tokens=4, side=side, seed=40 + side)
        inputs["curr"], inputs["curr_pos"] = [inputs["curr"]], [inputs["curr_pos"]]
        _check(f"memory attention [side={side}]", ref(**inputs), ours(**inputs), 1e-4)


@pytest.mark.parametrize(
    "num_heads,dtype", [(1, torch.float32), (2, torch.float32), (1, torch.bfloat16)]
)
@torch.no_grad()
def test_rope_attention(num_heads, dtype, tmp_path):
    """Several heads (strided rotations) and half precision (rotation done in float32)."""
    from sam2.modeling.sam.transformer import RoPEAttention as RefRoPEAttention

    from sam2_web.modeling.sam.transformer import RoPEAttention

    kwargs = dict(embedding_dim=128, num_heads=num_heads, kv_in_dim=MEM_DIM)
    kwargs.update(rope_k_repeat=True, feat_sizes=(8, 8))
    torch.manual_seed(0)
    ref, ours = _pair(RefRoPEAttention(**kwargs), RoPEAttention(**kwargs), tmp_path)
    ref, ours = ref.to(dtype), ours.to(dtype)
    q = _randn(2, 64, 128, seed=60).to(dtype)
    k = _randn(2, 3 * 64 + 8, MEM_DIM, seed=61).to(dtype)
    v = _randn(2, 3 * 64 + 8, MEM_DIM, seed=62).to(dtype)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    for excluded in (0, 8):
        k_in, v_in = (k, v) if excluded else (k[:, :-8], v[:, :-8])
        _check(
            f"rope attention [heads={num_heads} {dtype} excluded={excluded}]",
            ref(q, k_in, v_in, num_k_exclude_rope=excluded),
            ours(q, k_in, v_in, num_k_exclude_rope=excluded),
            tol,
        )


@torch.no_grad()
def test_rope_attention_rejects_unplaceable_tokens():
    from sam2_web.modeling.sam.transformer import RoPEAttention

    attn = RoPEAttention(embedding_dim=64, num_heads=1, feat_sizes=(4, 4)).eval()
    with pytest.raises(ValueError, match="square"):
        attn(_randn(1, 15, 64, seed=0), _randn(1, 15, 64, seed=1), _randn(1, 15, 64, seed=2))
    with pytest.raises(ValueError, match="rope_k_repeat"):
        attn(_randn(1, 16, 64, seed=0), _randn(1, 32, 64, seed=1), _randn(1, 32, 64, seed=2))
    repeat = RoPEAttention(embedding_dim=64, num_heads=1, feat_sizes=(4, 4), rope_k_repeat=True)
    with pytest.raises(ValueError, match="num_k_exclude_rope"):
        repeat(_randn(1, 16, 64, seed=0), _randn(1, 36, 64, seed=1), _randn(1, 36, 64, seed=2))


# --- memory encoder ------------------------------------------------------------------------


@pytest.mark.parametrize("skip_mask_sigmoid", [False, True])
@torch.no_grad()
def test_memory_encoder(skip_mask_sigmoid, tmp_path):
    cfg = _model_cfg()["memory_encoder"]
    torch.manual_seed(0)
    ref = instantiate(as_reference(cfg), _convert_="all")
    ours = instantiate(cfg, _convert_="all")
    assert type(ours).__module__ == "sam2_web.modeling.memory_encoder"
    ref, ours = _pair(ref, ours, tmp_path)
    assert ours.out_proj.weight.shape[0] == MEM_DIM  # SAM2Base reads mem_dim from here

    pix_feat = _randn(2, DIM, FEAT, FEAT, seed=50)
    masks = _randn(2, 1, IMAGE_SIZE, IMAGE_SIZE, seed=51) * 10
    if skip_mask_sigmoid:
        masks = (masks > 0).float()
    ref_out = ref(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    our_out = ours(pix_feat, masks, skip_mask_sigmoid=skip_mask_sigmoid)
    assert set(our_out) == {"vision_features", "vision_pos_enc"}
    assert len(our_out["vision_pos_enc"]) == 1
    tag = f"skip_sigmoid={skip_mask_sigmoid}"
    feats, pos = our_out["vision_features"], our_out["vision_pos_enc"][0]
    _check(f"memory encoder [{tag}] features", ref_out["vision_features"], feats)
    _check(f"memory encoder [{tag}] pos", ref_out["vision_pos_enc"][0], pos)
    assert our_out["vision_features"].shape == (2, MEM_DIM, FEAT, FEAT)
    # The flag matters: the same logits read as probabilities give another memory.
    flipped = ours(pix_feat, masks, skip_mask_sigmoid=not skip_mask_sigmoid)["vision_features"]
    assert not torch.allclose(flipped, our_out["vision_features"])
