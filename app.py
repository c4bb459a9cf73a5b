"""The web demo: ``python app.py [hydra overrides...]``.

With no arguments it starts on the default model (``configs/app.yaml``). Anything else is a
hydra override of that config, for example::

    python app.py model=sam2.1_hiera_s server.port=7861 limits.max_objects=8
    python app.py device=cpu ++model.image_size=512 server.session_ttl_s=600
    python app.py ++server.preload=false      # do not load the model before the first visitor

This is also the Hugging Face Spaces entry point (``app_file: app.py``).
"""

from __future__ import annotations

import logging
import sys

log = logging.getLogger("sam2_web.app")


def main(argv: list[str] | None = None) -> int:
    """Parse overrides from ``argv``, preload the model, build the UI and serve it (blocks).

    Returns:
        The exit status: 0 after a normal shutdown, 2 for a bad override.
    """
    args = sys.argv[1:] if argv is None else argv
    if any(a in ("-h", "--help") for a in args):
        print(__doc__)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from sam2_web.errors import Sam2WebError
    from sam2_web.ui.context import AppContext
    from sam2_web.ui.layout import launch

    try:
        ctx = AppContext.from_overrides(args)
    except (HydraException, OmegaConfBaseException, Sam2WebError) as error:
        print(f"app.py: bad configuration: {error}\n(see `python app.py --help`)", file=sys.stderr)
        return 2
    if ctx.cfg.server.get("preload", True):
        try:
            # Download and build the default model now, so the first visitor does not wait for it.
            ctx.predictor()
        except Sam2WebError as error:
            # Start anyway: the page then shows this message when someone opens a clip.
            log.warning("could not preload %s: %s", ctx.default_model, error)
    launch(ctx)
    return 0


if __name__ == "__main__":
    sys.exit(main())
