"""The web demo: ``python app.py [hydra overrides...]``.

With no arguments it starts on the default model (``configs/app.yaml``). Anything else is a
hydra override of that config, for example::

    python app.py model=sam2.1_hiera_s server.port=7861 limits.max_objects=8
    python app.py device=cpu ++model.image_size=512 server.session_ttl_s=600

This is also the Hugging Face Spaces entry point (``app_file: app.py``).
"""

from __future__ import annotations

import logging
import sys


def main(argv: list[str] | None = None) -> None:
    """Parse overrides from ``argv``, preload the model, build the UI and serve it (blocks)."""
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from sam2_web.ui.context import AppContext
    from sam2_web.ui.layout import launch

    ctx = AppContext.from_overrides(args)
    if ctx.cfg.server.get("preload", True):
        # Download and build the default model now, so the first visitor does not wait for it.
        ctx.predictor()
    launch(ctx)


if __name__ == "__main__":
    main()
