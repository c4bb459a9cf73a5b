"""COCO run-length encoding of binary masks (the compressed string form pycocotools reads),
both ways: :func:`encode` for the COCO RLE export and the API's masks, :func:`decode` for
masks that come back from a server.

Layout, as COCO defines it: the mask is read column by column (Fortran order), runs alternate
background/foreground starting with background (so the first count may be 0), and the counts
are packed into printable ASCII: each count from the third on is stored as the difference to
the count two places before, then written as signed 5-bit groups, low group first, with bit
0x20 meaning "more groups follow", each group offset by 48 ('0').
"""

from __future__ import annotations

import numpy as np

from sam2_web.runlength import from_run_lengths, run_lengths


def _pack(counts: list[int]) -> str:
    out: list[str] = []
    for i, count in enumerate(counts):
        value = count - counts[i - 2] if i > 2 else count
        while True:
            group = value & 0x1F
            value >>= 5  # arithmetic shift: negative deltas end at -1
            sign_ok = value == -1 if group & 0x10 else value == 0
            if not sign_ok:
                group |= 0x20
            out.append(chr(group + 48))
            if sign_ok:
                break
    return "".join(out)


def _unpack(text: bytes) -> list[int]:
    counts: list[int] = []
    pos = 0
    while pos < len(text):
        value, shift, more = 0, 0, True
        while more:
            group = text[pos] - 48
            value |= (group & 0x1F) << shift
            more = bool(group & 0x20)
            pos += 1
            shift += 5
            if not more and group & 0x10:
                value |= -1 << shift  # sign-extend the last group
        if len(counts) > 2:
            value += counts[-2]  # counts from the third on are stored as deltas
        counts.append(value)
    return counts


def encode(mask: np.ndarray) -> dict:
    """Encode a (H, W) binary mask as a COCO compressed RLE.

    Args:
        mask: (H, W) array; any non-zero value counts as foreground.

    Returns:
        ``{"size": [H, W], "counts": str}`` as ``pycocotools.mask.decode`` expects (after the
        counts string is encoded to bytes, which pycocotools also accepts as str in JSON).
    """
    m = np.asarray(mask)
    if m.ndim != 2:
        raise ValueError(f"expected a (H, W) mask, got shape {m.shape}")
    return {"size": [int(m.shape[0]), int(m.shape[1])], "counts": _pack(run_lengths(m, order="F").tolist())}


def decode(rle: dict) -> np.ndarray:
    """Decode a COCO compressed RLE ``{"size": [H, W], "counts": str}`` into an (H, W) bool mask.

    Raises:
        ValueError: counts that do not add up to H*W.
    """
    height, width = (int(v) for v in rle["size"])
    text = rle["counts"]
    counts = _unpack(text.encode() if isinstance(text, str) else bytes(text))
    if sum(counts) != height * width or min(counts, default=0) < 0:
        raise ValueError(f"RLE counts add up to {sum(counts)}, not {height}x{width}")
    return from_run_lengths(counts, (height, width), order="F")  # COCO runs go down the columns


def area_and_bbox(mask: np.ndarray) -> tuple[int, list[int]]:
    """Foreground pixel count and COCO bbox ``[x, y, w, h]`` (all zeros for an empty mask)."""
    m = np.asarray(mask, dtype=bool)
    area = int(m.sum())
    if area == 0:
        return 0, [0, 0, 0, 0]
    ys = np.flatnonzero(m.any(axis=1))
    xs = np.flatnonzero(m.any(axis=0))
    return area, [int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1)]
