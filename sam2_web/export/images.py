"""Writers of per-frame files: PNG matte sequences (folder or zip), RGBA PNG cut-outs, the
combined index matte with its legend, OpenEXR mattes with named channels, and COCO RLE JSON.

Each takes an ``ExportJob`` and the final target path, writes under a temporary name via
``atomic_output`` and returns the target once it is complete.
"""

from __future__ import annotations

import datetime
import json
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np

from sam2_web.errors import ExportError
from sam2_web.export import rle
from sam2_web.export.common import ExportJob
from sam2_web.export.output import atomic_output
from sam2_web.export.matte import quantize

_PNG_COLOR_TYPE = {1: 0, 2: 4, 3: 2, 4: 6}  # channels -> grey, grey+alpha, RGB, RGBA


def encode_png(image: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) / (H, W, C) uint8 or uint16 image (C = 1..4).

    Our own small encoder because Pillow cannot write 16-bit RGBA; every row uses the "Sub"
    filter, which suits both flat mattes and photos.
    """
    img = np.asarray(image)
    if img.ndim == 2:
        img = img[..., None]
    h, w, c = img.shape
    if img.dtype == np.uint16:
        depth, raw = 16, img.astype(">u2").view(np.uint8).reshape(h, w * c * 2)
    elif img.dtype == np.uint8:
        depth, raw = 8, img.reshape(h, w * c)
    else:
        raise ValueError(f"PNG needs uint8 or uint16 pixels, got {img.dtype}")
    bpp = c * depth // 8
    rows = raw.copy()
    rows[:, bpp:] = raw[:, bpp:] - raw[:, :-bpp]  # uint8 arithmetic wraps, as the filter wants
    body = np.concatenate([np.ones((h, 1), np.uint8), rows], axis=1).tobytes()

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", w, h, depth, _PNG_COLOR_TYPE[c], 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(body, 6)) + chunk(b"IEND", b"")


def _frame_name(job: ExportJob, stem: str, index: int, ext: str) -> str:
    return f"{stem}_{job.frame_number(index):05d}.{ext}"


def write_matte_pngs(job: ExportJob, target: Path) -> Path:
    """Folder ``target/<object>/<stem>_<frame>.png``: one grey matte per object and frame."""
    stem = job.stem(target)
    with atomic_output(target, folder=True) as tmp:
        for o in job.obj_ids:
            (tmp / job.labels[o]).mkdir()
        for i, masks in enumerate(job.masks):
            for o in job.obj_ids:
                data = encode_png(quantize(job.object_matte(masks, o), job.options.bit_depth))
                (tmp / job.labels[o] / _frame_name(job, stem, i, "png")).write_bytes(data)
    return target


def write_matte_zip(job: ExportJob, target: Path) -> Path:
    """Zip of the matte PNG sequence (same layout as ``write_matte_pngs``) for one download."""
    stem = job.stem(target)
    with atomic_output(target) as tmp:
        # PNGs are already deflated: storing them avoids recompressing for no gain.
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            for i, masks in enumerate(job.masks):
                for o in job.obj_ids:
                    data = encode_png(quantize(job.object_matte(masks, o), job.options.bit_depth))
                    zf.writestr(f"{job.labels[o]}/{_frame_name(job, stem, i, 'png')}", data)
    return target


def write_rgba_pngs(job: ExportJob, target: Path) -> Path:
    """Folder ``target/<stem>_<frame>.png``: source RGB with the union of the objects as alpha."""
    assert job.frames is not None
    stem = job.stem(target)
    depth = job.options.bit_depth
    with atomic_output(target, folder=True) as tmp:
        for i, (masks, frame) in enumerate(zip(job.masks, job.frames)):
            colour, matte = job.cutout(masks, frame)
            alpha = quantize(matte, depth)
            rgb = colour.astype(np.uint16) * 257 if depth == 16 else colour
            (tmp / _frame_name(job, stem, i, "png")).write_bytes(encode_png(np.dstack([rgb, alpha])))
    return target


def index_legend(job: ExportJob) -> dict:
    """The index matte's legend: pixel value -> object, plus the clip's timing."""
    return {
        "background": 0,
        "overlap": "later object wins (objects are drawn in the order listed)",
        "objects": [{"index": k + 1, "obj_id": int(o), "name": job.labels[o]} for k, o in enumerate(job.obj_ids)],
        "num_frames": job.clip.num_frames,
        "fps": job.clip.rate,
        "width": job.clip.width,
        "height": job.clip.height,
        "start_frame": job.clip.start_frame,
        "start_timecode": job.clip.start_timecode,
    }


def write_index_pngs(job: ExportJob, target: Path) -> Path:
    """Folder with ``<stem>_<frame>.png`` (8-bit, value k = k-th object, 0 = background) and
    ``legend.json``. Overlaps go to the later object in ``job.obj_ids``; binary by definition:
    soft edges, feather and invert do not apply (an id is not a blend)."""
    if len(job.obj_ids) > 255:
        raise ExportError(f"an 8-bit index matte holds at most 255 objects, got {len(job.obj_ids)}; export fewer objects")
    stem = job.stem(target)
    with atomic_output(target, folder=True) as tmp:
        for i, masks in enumerate(job.masks):
            index = np.zeros(job.clip.shape, dtype=np.uint8)
            for k, o in enumerate(job.obj_ids):
                index[masks[o]] = k + 1
            (tmp / _frame_name(job, stem, i, "png")).write_bytes(encode_png(index))
        (tmp / "legend.json").write_text(json.dumps(index_legend(job), indent=2))
    return target


def write_exr(job: ExportJob, target: Path) -> Path:
    """Folder ``target/<stem>_<frame>.exr``: half-float mattes, one channel ``<object>.mask`` per
    object; the header carries ``framesPerSecond`` and, when known, a ``timecode`` string."""
    try:
        import OpenEXR
    except ImportError as exc:
        raise ExportError("OpenEXR export needs the 'OpenEXR' package (pip install OpenEXR)") from exc
    stem = job.stem(target)
    header: dict = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage,
                    "framesPerSecond": job.clip.fps}
    if job.clip.start_timecode:
        header["timecode"] = job.clip.start_timecode
    with atomic_output(target, folder=True) as tmp:
        for i, masks in enumerate(job.masks):
            channels = {f"{job.labels[o]}.mask": job.object_matte(masks, o).astype(np.float16) for o in job.obj_ids}
            OpenEXR.File(header, channels).write(str(tmp / _frame_name(job, stem, i, "exr")))
    return target


def write_coco_rle(job: ExportJob, target: Path) -> Path:
    """COCO-style JSON: one image per frame (id = frame number), one category and track per
    object (id = obj_id), and one annotation per object per frame with a compressed RLE
    ``segmentation``, ``area`` and ``bbox`` (empty frames have area 0). Binary by definition: soft
    edges and feather are ignored (invert applies)."""
    images: list[dict] = []
    annotations: list[dict] = []
    with atomic_output(target) as tmp:
        _collect_rle(job, images, annotations)
        tmp.write_text(json.dumps(_coco_document(job, images, annotations)))
    return target


def _collect_rle(job: ExportJob, images: list[dict], annotations: list[dict]) -> None:
    clip = job.clip
    for i, masks in enumerate(job.masks):
        image_id = job.frame_number(i)
        images.append({"id": image_id, "frame_index": i, "video_id": 1, "width": clip.width, "height": clip.height})
        for o in job.obj_ids:
            m = ~masks[o] if job.options.invert else masks[o]
            area, bbox = rle.area_and_bbox(m)
            annotations.append({
                "id": len(annotations) + 1, "image_id": image_id, "category_id": int(o), "track_id": int(o),
                "segmentation": rle.encode(m), "area": area, "bbox": bbox, "iscrowd": 0,
            })


def _coco_document(job: ExportJob, images: list[dict], annotations: list[dict]) -> dict:
    clip = job.clip
    return {
        "info": {
            "description": "sam2_web masks", "date_created": datetime.datetime.now(datetime.timezone.utc).isoformat(),
            "num_frames": clip.num_frames, "fps": clip.rate, "width": clip.width, "height": clip.height,
            "start_frame": clip.start_frame, "start_timecode": clip.start_timecode,
        },
        "videos": [{"id": 1, "width": clip.width, "height": clip.height, "length": clip.num_frames, "fps": clip.rate}],
        "images": images,
        "categories": [{"id": int(o), "name": job.labels[o]} for o in job.obj_ids],
        "annotations": annotations,
    }
