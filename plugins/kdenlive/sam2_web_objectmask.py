#!/usr/bin/env python3
"""Drop-in replacement for Kdenlive's ``sam-objectmask.py`` that runs the sam2_web engine.

Install (see plugins/README.md): link this file as
``~/.local/share/kdenlive/scripts/automask/sam-objectmask.py`` and let Kdenlive's SAM setting use
a Python that has sam2_web installed. Kdenlive then starts it with its usual flags
(``-I frames -O previews -M model.pt -C config ...``) and talks to it on stdin/stdout.

Extra flags Kdenlive does not send but a user may add for testing: ``-M sam2.1_hiera_s`` (a
model name instead of a checkpoint path) and ``--set KEY=VALUE`` (hydra overrides).
"""

import sys
from pathlib import Path


def _import_backend():
    try:
        from plugins.kdenlive.backend import main
    except ImportError:
        # Running from a checkout (or through a symlink into one): the repository root holds
        # both sam2_web and plugins.
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
        from plugins.kdenlive.backend import main
    return main


if __name__ == "__main__":
    sys.exit(_import_backend()())
