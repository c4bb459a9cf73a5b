"""Shared fixtures. Tests never touch the network: Hub traffic goes to a loopback server."""

from __future__ import annotations

import os

import pytest

# Nothing in the test run may reach the real Hub; tests that need it start tests/hubserver.py.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
# No shipped bench figures (model=auto is SAM 2.1 tiny off CUDA, as with no figures); tests that
# need figures write their own. The speed cache goes to a temp file (see isolated_speed_cache).
os.environ["SAM2_WEB_BENCH_SPEEDS"] = ""


@pytest.fixture(scope="session", autouse=True)
def isolated_speed_cache(tmp_path_factory):
    """Speed figures the tests' runs record go to a temp file, never the user's cache."""
    os.environ["SAM2_WEB_SPEEDS_CACHE"] = str(tmp_path_factory.mktemp("speeds") / "speeds.json")


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny-input tests on one torch thread, then restore the count.

    With small tensors, OpenMP threads mostly spin-wait for each other; on a shared 2-core
    machine that made such tests up to ~10x slower than one thread.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def parity_dir(tmp_path_factory):
    """A session folder for generated checkpoints shared by the parity tests."""
    return tmp_path_factory.mktemp("parity")


def pytest_report_header(config):
    import torch

    return f"torch {torch.__version__}, threads {torch.get_num_threads()}"


@pytest.fixture(scope="session")
def hardened_app(tmp_path_factory):
    """``python app.py`` on loopback with the small limits of ``tests/hostile.py``, shared by the
    hardening tests (hostile media, malformed API input); ``.workdir`` is its temp folder."""
    from appserver import app_checkpoint, run_app
    from hostile import HARDENED

    workdir = tmp_path_factory.mktemp("hardened")
    checkpoint = app_checkpoint(workdir / "ckpt" / "t256.pt")
    with run_app(workdir, checkpoint, extra=HARDENED) as running:
        running.workdir = workdir
        yield running
        print(running.log()[-3000:])
