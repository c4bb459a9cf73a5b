"""Checkpoints from the Hub: download, cache, offline mode, pins and errors, against a loopback Hub."""

from __future__ import annotations

import io
import sys

import pytest
import torch
from huggingface_hub import constants as hf_constants
from hubserver import commit_for, serve_hub

from sam2_web.errors import CancelledError, CheckpointError, HubUnavailableError, UnknownModelError
from sam2_web.hub import fetch_checkpoint, resolve_checkpoint
from sam2_web.registry import get_model

SPEC = get_model("sam2.1_hiera_t")
MAIN_PATH = f"/{SPEC.repo_id}/resolve/main/{SPEC.filename}"


def _checkpoint_bytes(seed: int) -> bytes:
    """A real (small) checkpoint in the official {"model": state_dict} layout."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict()}, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def main_bytes() -> bytes:
    return _checkpoint_bytes(0)


@pytest.fixture
def hub(monkeypatch, tmp_path, main_bytes):
    with serve_hub({(SPEC.repo_id, "main", SPEC.filename): main_bytes}) as server:
        server.use(monkeypatch, tmp_path)
        yield server


def _go_offline(monkeypatch) -> None:
    # huggingface_hub reads HF_HUB_OFFLINE at import; a real user sets it before starting Python.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)


def test_first_fetch_downloads_and_reports_progress(hub, main_bytes):
    reports: list[tuple[int, int | None]] = []
    path = fetch_checkpoint("sam2.1_hiera_t", on_progress=lambda done, total: reports.append((done, total)))

    assert path.read_bytes() == main_bytes
    assert ("GET", MAIN_PATH) in hub.requests
    assert path.is_relative_to(hf_constants.HF_HUB_CACHE)  # the isolated cache, not the user's
    assert reports[0] == (0, len(main_bytes))
    assert reports[-1] == (len(main_bytes), len(main_bytes))
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert set(loaded["model"]) == {"0.weight", "0.bias", "2.weight", "2.bias"}


def test_second_fetch_is_served_from_cache_without_any_request(hub, main_bytes):
    first = fetch_checkpoint("tiny")
    before = len(hub.requests)

    second = fetch_checkpoint("facebook/sam2.1-hiera-tiny")

    assert second == first
    assert second.read_bytes() == main_bytes
    assert len(hub.requests) == before, hub.requests[before:]


def test_offline_with_warm_cache_works_without_any_request(hub, main_bytes, monkeypatch):
    fetch_checkpoint(SPEC)
    before = len(hub.requests)
    _go_offline(monkeypatch)

    path = fetch_checkpoint(SPEC)

    assert path.read_bytes() == main_bytes
    assert len(hub.requests) == before


def test_offline_with_cold_cache_says_what_to_do(hub, monkeypatch):
    _go_offline(monkeypatch)

    with pytest.raises(HubUnavailableError) as caught:
        fetch_checkpoint(SPEC)

    message = str(caught.value)
    assert "offline" in message and "HF_HUB_OFFLINE" in message
    assert SPEC.filename in message and "checkpoint=" in message
    assert hub.requests == []


def test_local_files_only_with_cold_cache_raises_without_request(hub):
    with pytest.raises(HubUnavailableError, match="not in the cache"):
        fetch_checkpoint(SPEC, local_files_only=True)
    assert hub.requests == []


def test_unreachable_hub_with_cold_cache_raises_hub_unavailable(hub):
    endpoint = hub.endpoint
    hub.stop()  # the port is closed: connection refused

    with pytest.raises(HubUnavailableError) as caught:
        fetch_checkpoint(SPEC)

    message = str(caught.value)
    assert f"could not reach the Hub at {endpoint}" in message
    assert "is not cached" in message and "checkpoint=" in message


def test_unreachable_hub_with_warm_cache_still_works(hub, main_bytes):
    fetch_checkpoint(SPEC)
    hub.stop()

    assert fetch_checkpoint(SPEC).read_bytes() == main_bytes


def test_revision_pin_requests_that_revision(hub, main_bytes):
    pinned = _checkpoint_bytes(1)
    hub.files[(SPEC.repo_id, "v1", SPEC.filename)] = pinned

    path = fetch_checkpoint(SPEC, revision="v1")

    assert path.read_bytes() == pinned != main_bytes
    assert ("GET", f"/{SPEC.repo_id}/resolve/v1/{SPEC.filename}") in hub.requests
    assert not any("/resolve/main/" in request.path for request in hub.requests)
    assert commit_for(SPEC.repo_id, "v1") in str(path)  # the cache snapshot is that commit


def test_commit_pin_is_served_from_cache_after_first_download(hub):
    commit = commit_for(SPEC.repo_id, "main")
    first = fetch_checkpoint(SPEC, revision=commit)
    before = len(hub.requests)

    assert fetch_checkpoint(SPEC, revision=commit) == first
    assert ("HEAD", f"/{SPEC.repo_id}/resolve/{commit}/{SPEC.filename}") in hub.requests
    assert len(hub.requests) == before


def test_lfs_redirect_downloads_from_the_cdn_origin(monkeypatch, tmp_path, main_bytes):
    with serve_hub({(SPEC.repo_id, "main", SPEC.filename): main_bytes}, lfs=True) as server:
        server.use(monkeypatch, tmp_path)

        path = fetch_checkpoint(SPEC)

    assert path.read_bytes() == main_bytes
    cdn_gets = [r for r in server.requests if r.origin == "cdn" and r.method == "GET"]
    assert len(cdn_gets) == 1
    assert not any(r.origin == "hub" and r.method == "GET" for r in server.requests)


def test_unknown_model_lists_known_names(hub):
    with pytest.raises(UnknownModelError) as caught:
        fetch_checkpoint("sam3_hiera_huge")

    message = str(caught.value)
    assert "sam3_hiera_huge" in message
    assert "sam2.1_hiera_t" in message and "sam2_hiera_l" in message
    assert hub.requests == []


def test_file_missing_on_the_hub_is_a_checkpoint_error(hub):
    hub.files = {(SPEC.repo_id, "main", "README.md"): b"# tiny"}

    with pytest.raises(CheckpointError) as caught:
        fetch_checkpoint(SPEC)

    assert SPEC.filename in str(caught.value) and "is not in" in str(caught.value)


def test_missing_repository_is_a_checkpoint_error(hub):
    with pytest.raises(CheckpointError, match="sam2.1-hiera-small was not found"):
        fetch_checkpoint("sam2.1_hiera_s")


def test_missing_revision_is_a_checkpoint_error(hub):
    with pytest.raises(CheckpointError, match="revision 'v9' does not exist"):
        fetch_checkpoint(SPEC, revision="v9")


def test_cancel_from_progress_callback_leaves_nothing_cached(hub):
    def cancel(done: int, total: int | None) -> None:
        if done > 0:
            raise CancelledError("stopped by the user")

    with pytest.raises(CancelledError):
        fetch_checkpoint(SPEC, on_progress=cancel)

    with pytest.raises(HubUnavailableError):
        fetch_checkpoint(SPEC, local_files_only=True)


def test_console_progress_bar_shows_and_can_be_disabled(hub, monkeypatch, capfd, main_bytes):
    # The module, not the class that huggingface_hub.utils re-exports under the same name.
    hf_tqdm_module = sys.modules["huggingface_hub.utils.tqdm"]

    # conftest disables bars for the whole run; undo that here, and force tqdm on without a TTY.
    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    monkeypatch.setattr(hf_tqdm_module, "HF_HUB_DISABLE_PROGRESS_BARS", None)
    monkeypatch.setenv("TQDM_POSITION", "-1")
    fetch_checkpoint(SPEC)
    shown = capfd.readouterr().err
    assert SPEC.filename in shown and "100%" in shown

    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    other = _checkpoint_bytes(2)
    hub.files[(SPEC.repo_id, "v2", SPEC.filename)] = other
    reports: list[tuple[int, int | None]] = []
    fetch_checkpoint(SPEC, revision="v2", on_progress=lambda *a: reports.append(a))
    assert "100%" not in capfd.readouterr().err
    assert reports[-1] == (len(other), len(other))  # the callback works without a bar


def test_resolve_checkpoint_returns_an_existing_local_path_untouched(hub, tmp_path, main_bytes):
    local = tmp_path / "mine.pt"
    local.write_bytes(main_bytes)

    assert resolve_checkpoint(local) == local
    assert resolve_checkpoint(str(local)) == local
    assert hub.requests == []


def test_resolve_checkpoint_missing_path_is_a_checkpoint_error(hub, tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(tmp_path / "missing.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        resolve_checkpoint(str(tmp_path / "missing.pt"))
    with pytest.raises(CheckpointError, match="is a folder"):
        resolve_checkpoint(tmp_path)
    assert hub.requests == []


def test_resolve_checkpoint_fetches_a_model_name(hub, main_bytes):
    assert resolve_checkpoint("sam2.1-tiny").read_bytes() == main_bytes
    with pytest.raises(UnknownModelError):
        resolve_checkpoint("not-a-model")


def test_damaged_cached_file_is_explained_and_force_download_repairs_it(hub, main_bytes):
    from sam2_web.checkpoint import load_checkpoint

    path = fetch_checkpoint(SPEC)
    path.write_bytes(main_bytes[: len(main_bytes) // 2])  # writes through the snapshot link to the blob
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))

    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(net, path)
    assert f"hf download {SPEC.repo_id} {SPEC.filename} --force-download" in str(caught.value)

    repaired = fetch_checkpoint(SPEC, force_download=True)
    assert repaired.read_bytes() == main_bytes
    load_checkpoint(net, repaired)


def test_hub_answering_503_with_cold_cache_raises_hub_unavailable(hub):
    hub.outage = 503

    with pytest.raises(HubUnavailableError, match="answered HTTP 503") as caught:
        fetch_checkpoint(SPEC)

    assert "checkpoint=" in str(caught.value)
    assert len(hub.requests) == 1  # one HEAD, no retry storm


def test_no_token_is_sent_to_the_test_hub(hub, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_placeholder_for_this_test")  # would be sent without HubServer.use

    fetch_checkpoint(SPEC)

    assert all("authorization" not in {name.lower() for name in r.headers} for r in hub.requests)
