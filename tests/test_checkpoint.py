"""Checkpoint loading: strict keys, and messages that say what is wrong and what to do."""

from __future__ import annotations

import pickle

import pytest
import torch
from torch import nn

from sam2_web.checkpoint import filter_state_dict, guess_model_name, load_checkpoint, read_state_dict
from sam2_web.errors import CheckpointError


class Tiny(nn.Module):
    """A small network with parameters and a buffer, standing in for SAM 2 where keys are all that matter."""

    def __init__(self, width: int = 4):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, width, 3), nn.BatchNorm2d(width))
        self.head = nn.Linear(width, 2)


class FakeSam(nn.Module):
    """Only the parameters that tell published SAM 2 / 2.1 models apart, under their official names."""

    def __init__(self, embed_dim: int, blocks: int, sam21: bool):
        super().__init__()
        self.image_encoder = nn.Module()
        self.image_encoder.trunk = nn.Module()
        self.image_encoder.trunk.patch_embed = nn.Module()
        self.image_encoder.trunk.patch_embed.proj = nn.Conv2d(3, embed_dim, 1)
        self.image_encoder.trunk.blocks = nn.ModuleList(nn.LayerNorm(2) for _ in range(blocks))
        if sam21:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, 4))


def _seeded(module: nn.Module, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    for parameter in module.parameters():
        nn.init.normal_(parameter)
    return module


@pytest.fixture
def official(tmp_path):
    """A valid checkpoint in the official layout, and the network it came from."""
    source = _seeded(Tiny())
    path = tmp_path / "tiny.pt"
    torch.save({"model": source.state_dict()}, path)
    return path, source


def _assert_same_weights(a: nn.Module, b: nn.Module) -> None:
    worst = max((x - y).abs().max().item() for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    print(f"worst abs diff after load: {worst}")
    assert worst == 0.0


def test_official_layout_loads_exactly(official):
    path, source = official
    target = Tiny()
    load_checkpoint(target, path)
    _assert_same_weights(target, source)


def test_bare_state_dict_is_accepted(tmp_path):
    source = _seeded(Tiny())
    path = tmp_path / "bare.pt"
    torch.save(source.state_dict(), path)
    target = Tiny()
    load_checkpoint(target, path)
    _assert_same_weights(target, source)


def test_data_parallel_prefix_is_stripped(tmp_path):
    source = _seeded(Tiny())
    path = tmp_path / "dp.pt"
    torch.save({"model": {f"module.{k}": v for k, v in source.state_dict().items()}}, path)
    target = Tiny()
    load_checkpoint(target, path)
    _assert_same_weights(target, source)


def test_filter_state_dict_remaps_wrapper_prefixes_only():
    weight = torch.ones(1)
    remapped = filter_state_dict(
        {"module.a.weight": weight, "_orig_mod.b.bias": weight, "module._orig_mod.c": weight, "modules.d": weight}
    )
    assert list(remapped) == ["a.weight", "b.bias", "c", "modules.d"]


def test_missing_file_says_no_such_file(tmp_path):
    with pytest.raises(CheckpointError, match="no such file") as caught:
        load_checkpoint(Tiny(), tmp_path / "nope.pt")
    assert "nope.pt" in str(caught.value)


def test_truncated_file_says_truncated_and_to_download_again(official, tmp_path):
    path, _ = official
    cut = tmp_path / "cut.pt"
    data = path.read_bytes()
    cut.write_bytes(data[: len(data) // 2])

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(Tiny(), cut)

    message = str(caught.value)
    assert "truncated or corrupt" in message and "download it again" in message
    assert isinstance(caught.value.__cause__, RuntimeError)  # torch's zip reader error is kept as the cause


def test_empty_file_says_interrupted_download(tmp_path):
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(CheckpointError, match="is empty"):
        load_checkpoint(Tiny(), empty)


def test_garbage_bytes_are_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"<html>404 not found</html>" * 10)
    with pytest.raises(CheckpointError, match="is not a PyTorch checkpoint"):
        load_checkpoint(Tiny(), junk)


def test_corrupt_pickle_stream_is_reported_as_corrupt(tmp_path):
    broken = tmp_path / "broken.pt"
    broken.write_bytes(bytes([0x80, 0x02]) + b"\xff" * 200)
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(Tiny(), broken)


def test_git_lfs_pointer_is_recognised(tmp_path):
    pointer = tmp_path / "pointer.pt"
    pointer.write_bytes(b"version https://git-lfs.github.com/spec/v1\noid sha256:ab\nsize 1\n")
    with pytest.raises(CheckpointError, match="Git LFS pointer"):
        load_checkpoint(Tiny(), pointer)


def test_pickled_module_is_refused_with_how_to_resave(tmp_path):
    whole = tmp_path / "whole.pt"
    torch.save(Tiny(), whole)  # pickles the class, not just tensors
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(Tiny(), whole)
    message = str(caught.value)
    assert "pickled Python objects" in message and "Tiny" in message
    assert "state_dict()" in message
    assert isinstance(caught.value.__cause__, pickle.UnpicklingError)


class _RunsCode:
    """Unpickling this would call ``os.system``: a pickle "payload"."""

    def __reduce__(self):
        import os

        return (os.system, ("echo should-never-run",))


@pytest.mark.parametrize("legacy", [False, True], ids=["zip", "legacy-pickle"])
def test_pickle_with_a_code_payload_is_reported_unsafe_not_corrupt(tmp_path, legacy):
    evil = tmp_path / "evil.pt"
    if legacy:
        with evil.open("wb") as handle:
            pickle.dump({"model": _RunsCode()}, handle, protocol=2)
    else:
        torch.save({"model": _RunsCode()}, evil)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(Tiny(), evil)
    message = str(caught.value)
    print(message)
    assert "unsafe" in message and "system" in message
    assert "corrupt" not in message and "download" not in message.replace("official source", "")


@pytest.mark.parametrize(
    "payload, says",
    [
        (torch.zeros(3), "holds a Tensor, not a state dict"),
        ([torch.zeros(3)], "holds a list, not a state dict"),
        ({}, "empty dict"),
        ({"model": {"w": 3}, "epoch": 3}, "not named tensors"),
        ({"weights": [torch.zeros(1)]}, "not named tensors"),
    ],
)
def test_payload_without_state_dict_is_refused(tmp_path, payload, says):
    path = tmp_path / "odd.pt"
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match=says) as caught:
        load_checkpoint(Tiny(), path)
    assert "{'model': state_dict}" in str(caught.value)


def test_wrong_keys_name_missing_and_unexpected(tmp_path):
    state = Tiny().state_dict()
    state["extra.weight"] = state.pop("head.weight")
    path = tmp_path / "renamed.pt"
    torch.save({"model": state}, path)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(Tiny(), path)

    message = str(caught.value)
    assert "1 missing, 1 unexpected, 0 wrong shape" in message
    assert "missing (in the model, not in the file): head.weight" in message
    assert "unexpected (in the file, not in the model): extra.weight" in message


def test_long_key_lists_are_cut_with_a_count(tmp_path):
    path = tmp_path / "other.pt"
    torch.save({f"layer{i}.weight": torch.zeros(1) for i in range(25)}, path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(Tiny(), path)
    message = str(caught.value)
    assert "25 unexpected" in message and "(15 more)" in message
    assert "layer9.weight" in message and "layer10.weight" not in message


def test_shape_mismatch_is_named_even_when_not_strict(tmp_path):
    path = tmp_path / "wide.pt"
    torch.save({"model": Tiny(width=8).state_dict()}, path)

    for strict in (True, False):
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(Tiny(width=4), path, strict=strict)
        message = str(caught.value)
        assert "head.weight: file (2, 8) vs model (2, 4)" in message
        assert "encoder.0.weight: file (8, 3, 3, 3) vs model (4, 3, 3, 3)" in message


def test_not_strict_loads_the_keys_that_fit(tmp_path):
    source = _seeded(Tiny())
    state = source.state_dict()
    del state["head.bias"]
    state["unused.weight"] = torch.zeros(2)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    target = Tiny()
    before = target.head.bias.detach().clone()

    load_checkpoint(target, path, strict=False)

    assert torch.equal(target.head.weight, source.head.weight)
    assert torch.equal(target.head.bias, before)  # missing: left as it was


def test_sam21_checkpoint_into_sam2_config_suggests_the_config(tmp_path):
    path = tmp_path / "sam21_t.pt"
    torch.save({"model": FakeSam(96, 12, sam21=True).state_dict()}, path)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(FakeSam(96, 12, sam21=False), path)

    message = str(caught.value)
    assert "unexpected (in the file, not in the model): no_obj_embed_spatial" in message
    assert "looks like sam2.1_hiera_t but the model was built as sam2_hiera_t" in message
    assert "config sam2.1/sam2.1_hiera_t.yaml" in message


def test_bigger_checkpoint_into_tiny_config_suggests_its_size(tmp_path):
    path = tmp_path / "bplus.pt"
    torch.save({"model": FakeSam(112, 24, sam21=True).state_dict()}, path)

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(FakeSam(96, 12, sam21=True), path)

    message = str(caught.value)
    assert "image_encoder.trunk.patch_embed.proj.weight: file (112, 3, 1, 1) vs model (96, 3, 1, 1)" in message
    assert "looks like sam2.1_hiera_b+" in message and "sam2.1/sam2.1_hiera_b+.yaml" in message


def test_family_hint_when_the_size_is_not_a_published_one(tmp_path):
    path = tmp_path / "custom.pt"
    torch.save({"model": FakeSam(64, 3, sam21=False).state_dict()}, path)
    with pytest.raises(CheckpointError, match="looks like a SAM 2 checkpoint .* you used a SAM 2.1 config"):
        load_checkpoint(FakeSam(64, 3, sam21=True), path)


def test_read_state_dict_returns_cpu_tensors(official):
    path, source = official
    state = read_state_dict(path)
    assert list(state) == list(source.state_dict())
    assert all(tensor.device.type == "cpu" for tensor in state.values())


@pytest.mark.parametrize("config", ["sam2.1/sam2.1_hiera_t.yaml", "sam2/sam2_hiera_t.yaml"])
def test_guess_model_name_on_real_reference_models(config):
    """The size/family signature works on the real key sets (reference model, random weights)."""
    build_sam = pytest.importorskip("sam2.build_sam")
    torch.manual_seed(0)
    reference = build_sam.build_sam2(f"configs/{config}", None, device="cpu")
    expected = config.rsplit("/", 1)[-1].removesuffix(".yaml")
    assert guess_model_name(reference.state_dict()) == expected


@pytest.fixture(scope="module")
def reference_sam21_tiny(tmp_path_factory):
    """The reference sam2.1_hiera_t with random weights (seed 0), saved in the official layout."""
    build_sam = pytest.importorskip("sam2.build_sam")
    torch.manual_seed(0)
    reference = build_sam.build_sam2("configs/sam2.1/sam2.1_hiera_t.yaml", None, device="cpu")
    path = tmp_path_factory.mktemp("reference") / "sam2.1_hiera_tiny.pt"
    torch.save({"model": reference.state_dict()}, path)
    return path, reference


def test_real_sam21_checkpoint_into_real_sam2_model(reference_sam21_tiny):
    """End to end on real SAM 2 modules: the official 2.1-into-2 mistake gets the right advice."""
    build_sam = pytest.importorskip("sam2.build_sam")
    path, _ = reference_sam21_tiny
    sam2_model = build_sam.build_sam2("configs/sam2/sam2_hiera_t.yaml", None, device="cpu")

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(sam2_model, path)

    message = str(caught.value)
    assert "0 missing, 3 unexpected, 0 wrong shape" in message
    for key in ("no_obj_embed_spatial", "obj_ptr_tpos_proj.weight", "obj_ptr_tpos_proj.bias"):
        assert key in message
    assert "config sam2.1/sam2.1_hiera_t.yaml" in message


def test_reference_checkpoint_loads_strictly_into_our_model(reference_sam21_tiny):
    build = pytest.importorskip("sam2_web.build")
    path, reference = reference_sam21_tiny

    ours = build.build_sam2("sam2.1_hiera_t", path, device="cpu")

    theirs = reference.state_dict()
    worst = max((tensor - theirs[key]).abs().max().item() for key, tensor in ours.state_dict().items())
    print(f"reference -> ours, worst abs diff over {len(theirs)} tensors: {worst}")
    assert set(ours.state_dict()) == set(theirs) and worst == 0.0


def test_our_sam2_config_with_a_sam21_checkpoint_names_the_fitting_config(reference_sam21_tiny):
    build = pytest.importorskip("sam2_web.build")
    path, _ = reference_sam21_tiny

    with pytest.raises(CheckpointError) as caught:
        build.build_sam2("sam2_hiera_t", path, device="cpu")

    assert "looks like sam2.1_hiera_t but the model was built as sam2_hiera_t" in str(caught.value)
