"""What the web app does, as plain functions of an :class:`~sam2_web.ui.state.AppSession`.

No Gradio here: the callbacks in ``layout.py`` and the endpoints in ``api.py`` only translate
components to these calls and errors to ``gr.Error``, so all of it is tested without a browser.
The functions live in three modules, gathered here under one name:

* ``limits``     — input limits and "is there a clip" guards;
* ``editing``    — open a clip, objects, clicks/boxes, undo, the masks of a frame;
* ``whole_clip`` — tracking with progress and cancel, exports.
"""

from sam2_web.ui.editing import (
    MAX_OBJECT_ID,
    MIN_BOX_SIDE,
    add_object,
    clear_frame,
    click,
    ensure_object,
    mask_dict,
    masks_at,
    open_clip,
    prompts_on,
    remove_object,
    rename_object,
    select_object,
    set_mode,
    set_prompts,
    switch_model,
    undo,
)
from sam2_web.ui.limits import (
    Limits,
    check_clip,
    check_frame,
    check_job_prompts,
    check_name,
    check_track_room,
    check_upload,
    check_uploaded_clip,
    history_bytes_per_frame,
    open_checked,
    require_clip,
)
from sam2_web.ui.whole_clip import TrackStep, export_masks, format_step, hex_colour, track

__all__ = [
    "MAX_OBJECT_ID", "MIN_BOX_SIDE", "Limits", "check_job_prompts", "check_name", "check_track_room",
    "history_bytes_per_frame", "open_checked", "TrackStep", "add_object", "check_clip", "check_frame", "check_upload",
    "check_uploaded_clip", "clear_frame", "click", "ensure_object", "export_masks", "format_step", "hex_colour", "mask_dict",
    "masks_at", "open_clip", "prompts_on", "remove_object", "rename_object", "require_clip",
    "select_object", "set_mode", "set_prompts", "switch_model", "track", "undo",
]
