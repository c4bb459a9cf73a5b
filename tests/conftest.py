"""Shared fixtures. Tests never touch the network: Hub traffic goes to a loopback server."""

from __future__ import annotations

import os

import pytest

# Nothing in the test run may reach the real Hub; tests that need it start tests/hubserver.py.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


@pytest.fixture(scope="session")
def parity_dir(tmp_path_factory):
    """A session folder for generated checkpoints shared by the parity tests."""
    return tmp_path_factory.mktemp("parity")


def pytest_report_header(config):
    import torch

    return f"torch {torch.__version__}, threads {torch.get_num_threads()}"
