"""Find objects without clicking: segment everything on a frame (``SAM2AutomaticMaskGenerator``)
or name them ("person, dog") for an open-vocabulary detector; what is found becomes objects with
prompts on that frame, tracked like any other.

* ``sam2_web.find.spec``: what a job asks for (``auto`` / ``text`` in prompts, manifests, the CLI);
* ``sam2_web.find.objects``: records and boxes → numbered, named objects within the limit;
* ``sam2_web.find.run``: the searches with the app config's settings, for the app and the jobs;
* ``sam2_web.find.text``: the detector (optional extra ``pip install 'sam2_web[text]'``).
"""

from __future__ import annotations

# Resolved on first use: the prompts parser imports ``find.spec`` and must stay light.
_LAZY = {
    "AutoFind": "sam2_web.find.spec",
    "TextFind": "sam2_web.find.spec",
    "Detection": "sam2_web.find.objects",
    "FoundObject": "sam2_web.find.objects",
    "FoundObjects": "sam2_web.find.objects",
    "objects_from_records": "sam2_web.find.objects",
    "objects_from_detections": "sam2_web.find.objects",
    "find_candidates": "sam2_web.find.run",
    "pick_candidate": "sam2_web.find.run",
    "find_by_text": "sam2_web.find.run",
    "find_settings": "sam2_web.find.run",
    "text_available": "sam2_web.find.text",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'sam2_web.find' has no attribute {name!r}")
