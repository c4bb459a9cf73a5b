"""sam2_web custom nodes for ComfyUI: model loader, video segmenter, matte export.

Install: link (or copy) this folder into ``ComfyUI/custom_nodes/`` and install sam2_web into
ComfyUI's Python (``pip install -e /path/to/sam2_web``). ComfyUI imports this file by path and
reads ``NODE_CLASS_MAPPINGS`` / ``NODE_DISPLAY_NAME_MAPPINGS``.
"""

from __future__ import annotations

import sys
from pathlib import Path


def _ensure_checkout_on_path() -> None:
    """Make ``sam2_web.jobs`` importable when this folder is a link into a sam2_web checkout.

    ComfyUI loads custom nodes by file path, so the checkout that holds ``sam2_web/jobs`` is not
    on ``sys.path`` unless we put it there. An importable ``sam2_web.jobs`` is left alone.
    """
    try:
        import sam2_web.jobs  # noqa: F401
        return
    except ImportError:
        pass
    checkout = Path(__file__).resolve().parents[2]
    if (checkout / "sam2_web" / "jobs").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
        sys.modules.pop("sam2_web", None)  # a failed import may have left a stub behind


_ensure_checkout_on_path()

from .nodes import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS  # noqa: E402

__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
