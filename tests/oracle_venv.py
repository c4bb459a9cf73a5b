"""Run an oracle (another family's authors' code) in its own venv, in a subprocess.

Several oracles install a package called ``sam2`` and so cannot share the test process with the
reference. ``scripts/dev.sh install`` builds each in ``.oracles/NAME`` (a venv that also sees the dev
venv's packages, after its own). A test writes its inputs to an ``.npz``, runs a script there that
reads them and writes its outputs to another ``.npz``, and compares.

    out = run_oracle("edgetam", SCRIPT, {"image": img}, tmp_path, args=[str(ckpt)])
    out["masks"]  # numpy arrays the script saved with save_outputs(...)
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
ORACLES = ROOT / ".oracles"


def float_memories(model):
    """Hand ``model``'s memory attention float32 copies of its memories; returns ``model``.

    The authors' video predictors (the reference and the other families) store memories as
    bfloat16; on a CPU, all-bf16 memory meets float weights and fails. The copies hold the same
    rounded values, which is what our engine does. Idempotent. Needs only torch tensors, so oracle
    scripts get it through the prelude and the bench workers import it.
    """
    attention = model.memory_attention
    if getattr(attention, "_casts_memory", False):
        return model
    forward = attention.forward

    def float_memory_forward(*args, **kwargs):
        kwargs["memory"], kwargs["memory_pos"] = kwargs["memory"].float(), kwargs["memory_pos"].float()
        return forward(*args, **kwargs)

    attention.forward = float_memory_forward
    attention._casts_memory = True
    return model


# Prepended to every oracle script: load_inputs() / save_outputs(**arrays), float_memories(model)
# and ARGS.
_PRELUDE = textwrap.dedent(
    """
    import sys
    import numpy as np
    _IN, _OUT, ARGS = sys.argv[1], sys.argv[2], sys.argv[3:]

    def load_inputs():
        with np.load(_IN, allow_pickle=False) as data:
            return {k: data[k] for k in data.files}

    def save_outputs(**arrays):
        np.savez(_OUT, **{k: np.asarray(v) for k, v in arrays.items()})
    """
) + "\n" + inspect.getsource(float_memories)


def require_installed(name: str) -> Path:
    """The folder of oracle or host ``name`` under ``.oracles/`` once ``scripts/dev.sh install`` finished it.

    A clone without the team's ``shared/`` (and without GitHub) cannot install the oracles and hosts
    that come as snapshots: there the calling test skips with the reason the install step wrote
    (``.oracles/missing/NAME``). With ``CI=true`` (CI has ``shared/``) it fails instead, so parity can
    never be skipped silently.
    """
    folder = ORACLES / name
    if (folder / ".ready").is_file():
        return folder
    why_file = ORACLES / "missing" / name
    why = why_file.read_text().strip() if why_file.is_file() else "not installed: run `bash scripts/dev.sh install`"
    message = f"oracle/host {name!r}: {why}"
    if os.environ.get("CI") == "true":
        pytest.fail(message + " (CI=true: nothing may skip)", pytrace=False)
    pytest.skip(message)


def oracle_python(name: str) -> Path:
    """The interpreter of oracle venv ``name`` (see :func:`require_installed`)."""
    return require_installed(name) / "bin" / "python"


def run_oracle(
    name: str,
    script: str,
    inputs: Mapping[str, np.ndarray],
    workdir: Path,
    *,
    args: Sequence[str] = (),
    env: Optional[Mapping[str, str]] = None,
    timeout: float = 1800,
) -> dict[str, np.ndarray]:
    """Run ``script`` (Python source) with oracle ``name``'s interpreter and return what it saved.

    Args:
        name: the venv under ``.oracles/``.
        script: source run after a prelude defining ``load_inputs()``, ``save_outputs(**arrays)``
            and ``ARGS`` (the extra ``args``).
        inputs: arrays the script reads with ``load_inputs()``.
        workdir: where the exchange files go.
        env: extra environment variables.
    Raises:
        RuntimeError: the script failed; the message carries its stderr.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    tag = f"{name}-{os.getpid()}-{abs(hash(script)) % 10**8}"
    src, fin, fout = workdir / f"{tag}.py", workdir / f"{tag}-in.npz", workdir / f"{tag}-out.npz"
    src.write_text(_PRELUDE + textwrap.dedent(script))
    np.savez(fin, **{k: np.asarray(v) for k, v in inputs.items()})
    run_env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}
    run_env.pop("PYTHONPATH", None)  # the oracle's own package must win over the repo's paths
    proc = subprocess.run(
        [str(oracle_python(name)), str(src), str(fin), str(fout), *args],
        capture_output=True, text=True, env=run_env, timeout=timeout, cwd=str(workdir),
    )
    if proc.returncode != 0:
        raise RuntimeError(f"oracle {name} failed ({proc.returncode}):\n{proc.stderr[-6000:]}")
    with np.load(fout, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}


__all__ = ["ORACLES", "float_memories", "oracle_python", "require_installed", "run_oracle"]
