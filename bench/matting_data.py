"""Composites with a known alpha, and the standard matting errors, for ``bench.matting``.

A composite is a generated foreground texture laid over another texture through a ground-truth
alpha that has what editors struggle with: a soft (anti-aliased, slightly defocused) border, thin
semi-transparent hair-like strands, and a motion-blurred side (the colour is blurred with the
alpha, as a moving object smears on the sensor). The mask handed to a matting method is what a
perfect tracker gives at SAM's mask resolution: the ground truth averaged down 4x, upsampled
bilinearly (as SAM upsamples its logits) and cut at 0.5.

The errors follow the alpha matting benchmark (Rhemann et al., CVPR 2009) as the matting papers
report them: SAD and the gradient and connectivity errors summed over the frame and divided by
1000, MSE as a mean over the frame times 1000.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class Composite:
    """One test picture: ``image = fg * alpha + bg * (1 - alpha)`` (motion blur aside, see module doc).

    Attributes:
        image: (H, W, 3) uint8 composite.
        alpha: (H, W) float32 ground truth.
        foreground: (H, W, 3) float32 true foreground colour in [0, 1] (valid where alpha > 0).
        background: (H, W, 3) float32 background in [0, 1].
        mask: (H, W) bool, the perfect tracker's mask at a quarter of the resolution.
    """

    image: np.ndarray
    alpha: np.ndarray
    foreground: np.ndarray
    background: np.ndarray
    mask: np.ndarray


def texture(rng: np.random.Generator, height: int, width: int, base: np.ndarray, contrast: float) -> np.ndarray:
    """(H, W, 3) float32 texture in [0, 1]: smooth noise at several scales around colour ``base``."""
    out = torch.zeros(1, 3, height, width)
    for cell, weight in ((96, 1.0), (24, 0.6), (6, 0.35), (2, 0.15)):
        grid = torch.from_numpy(rng.standard_normal((1, 3, height // cell + 2, width // cell + 2)).astype(np.float32))
        out += weight * F.interpolate(grid, size=(height, width), mode="bicubic", align_corners=False)
    # Mostly luminance variation with a little hue, like real surfaces.
    luma = out.mean(dim=1, keepdim=True)
    out = 0.75 * luma + 0.25 * out
    img = torch.from_numpy(base.astype(np.float32)).view(1, 3, 1, 1) + contrast * out
    return img[0].permute(1, 2, 0).clamp(0, 1).numpy()


def _splat(canvas: np.ndarray, ys: np.ndarray, xs: np.ndarray, values: np.ndarray) -> None:
    """Anti-aliased points: each (y, x) spreads its value bilinearly; overlaps keep the maximum."""
    h, w = canvas.shape
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = ys - y0, xs - x0
    for dy, dx, wgt in ((0, 0, (1 - fy) * (1 - fx)), (0, 1, (1 - fy) * fx), (1, 0, fy * (1 - fx)), (1, 1, fy * fx)):
        yy, xx = y0 + dy, x0 + dx
        ok = (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w)
        np.maximum.at(canvas, (yy[ok], xx[ok]), (values * wgt * 1.6).clip(0, 1)[ok])


def _box_blur_x(img: np.ndarray, length: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    pad = length // 2
    t = F.avg_pool2d(F.pad(t, (pad, pad, 0, 0), mode="replicate"), (1, length), stride=1)
    out = t[0].permute(1, 2, 0) if img.ndim == 3 else t[0, 0]
    return out.numpy()


def ground_truth(rng: np.random.Generator, height: int, width: int) -> tuple[np.ndarray, np.ndarray, int]:
    """A blob with a soft border and hair-like strands: ((H, W) alpha, (H, W) motion-blur weight, blur length)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cy, cx = height * rng.uniform(0.45, 0.6), width * rng.uniform(0.4, 0.6)
    ry, rx = height * rng.uniform(0.22, 0.3), width * rng.uniform(0.14, 0.2)
    theta = np.arctan2((yy - cy) / ry, (xx - cx) / rx)
    wobble = 1 + 0.08 * np.sin(3 * theta + rng.uniform(0, 6)) + 0.04 * np.sin(7 * theta + rng.uniform(0, 6))
    rho = np.hypot((yy - cy) / ry, (xx - cx) / rx) / wobble
    # Signed distance to the outline in pixels (approximately), positive outside.
    dist = (rho - 1.0) * min(ry, rx)
    soft = rng.uniform(1.0, 2.0)  # width of the defocus ramp
    alpha = np.clip(0.5 - dist / (2 * soft), 0, 1).astype(np.float32)
    # Hair: thin curved strands leaving the upper outline, each a little transparent.
    strands = np.zeros_like(alpha)
    unit = min(height, width) / 360.0
    for _ in range(40):
        t0 = rng.uniform(-2.6, -0.5)  # upper half of the outline (image y grows downwards)
        y, x = cy + ry * np.sin(t0) * 0.97, cx + rx * np.cos(t0) * 0.97
        heading = t0 + rng.normal(0, 0.35)
        length = rng.uniform(8, 40) * unit
        curve = rng.normal(0, 0.008 / max(unit, 0.5))
        steps = int(length * 3)
        headings = heading + curve * np.arange(steps)
        ys = y + np.cumsum(np.sin(headings)) / 3
        xs = x + np.cumsum(np.cos(headings)) / 3
        fade = np.linspace(rng.uniform(0.6, 0.95), rng.uniform(0.2, 0.5), steps)
        _splat(strands, ys, xs, fade)
    alpha = np.maximum(alpha, strands)
    # The object moves sideways: its right third is smeared over ``length`` px.
    blur_len = int(round(rng.uniform(12, 22) * unit)) | 1
    start = cx + 0.3 * rx
    weight = np.clip((xx - start) / (0.3 * rx), 0, 1).astype(np.float32)
    return alpha, weight, blur_len


def make_composite(seed: int, height: int, width: int) -> Composite:
    """The ``seed``-th composite at ``height`` x ``width`` (deterministic)."""
    rng = np.random.default_rng(seed)
    fg_colour = rng.uniform(0.25, 0.75, 3)
    bg_colour = np.clip(fg_colour + rng.choice([-1, 1], 3) * rng.uniform(0.1, 0.3, 3), 0.05, 0.95)
    fg = texture(rng, height, width, fg_colour, 0.18)
    bg = texture(rng, height, width, bg_colour, 0.25)
    alpha, weight, blur_len = ground_truth(rng, height, width)
    # Motion blur acts on premultiplied colour; blend the blurred and sharp versions across the side.
    premult = fg * alpha[..., None]
    alpha_blur = _box_blur_x(alpha, blur_len)
    premult_blur = _box_blur_x(premult, blur_len)
    a = alpha * (1 - weight) + alpha_blur * weight
    pm = premult * (1 - weight[..., None]) + premult_blur * weight[..., None]
    fg_true = np.where(a[..., None] > 1e-4, pm / np.maximum(a[..., None], 1e-4), fg).clip(0, 1)
    noise = rng.normal(0, 1.5 / 255, (height, width, 3))  # sensor noise
    image = np.clip(np.round((pm + (1 - a[..., None]) * bg + noise) * 255), 0, 255).astype(np.uint8)
    return Composite(image, a.astype(np.float32), fg_true.astype(np.float32), bg, tracker_mask(a))


def tracker_mask(alpha: np.ndarray, factor: int = 4) -> np.ndarray:
    """What a perfect tracker gives: ``alpha`` averaged down ``factor``x, upsampled bilinearly, cut at 0.5."""
    h, w = alpha.shape
    t = torch.from_numpy(alpha)[None, None]
    low = F.adaptive_avg_pool2d(t, (max(1, h // factor), max(1, w // factor)))
    up = F.interpolate(low, size=(h, w), mode="bilinear", align_corners=False)
    return (up[0, 0] > 0.5).numpy()


# --------------------------------------------------------------------------- errors


def sad(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of absolute differences, in thousands."""
    return float(np.abs(pred - gt).sum() / 1000.0)


def mse(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean squared error over the frame, times 1000."""
    return float(((pred - gt) ** 2).mean() * 1000.0)


def _gauss_grad_mag(img: np.ndarray, sigma: float = 1.4) -> np.ndarray:
    radius = int(np.ceil(3 * sigma))
    x = np.arange(-radius, radius + 1, dtype=np.float32)
    g = np.exp(-x**2 / (2 * sigma**2))
    g /= g.sum()
    dg = -x / sigma**2 * g
    dg /= np.abs(dg).sum() / 2  # unit response to a unit ramp
    t = torch.from_numpy(img.astype(np.float32))[None, None]
    pad = (radius, radius, radius, radius)
    tp = F.pad(t, pad, mode="replicate")
    gx = F.conv2d(F.conv2d(tp, torch.from_numpy(dg).view(1, 1, 1, -1)), torch.from_numpy(g).view(1, 1, -1, 1))
    gy = F.conv2d(F.conv2d(tp, torch.from_numpy(g).view(1, 1, 1, -1)), torch.from_numpy(dg).view(1, 1, -1, 1))
    return torch.hypot(gx, gy)[0, 0].numpy()


def gradient_error(pred: np.ndarray, gt: np.ndarray) -> float:
    """Sum of squared differences of Gaussian-derivative (sigma 1.4) gradient magnitudes, in thousands."""
    return float(((_gauss_grad_mag(pred) - _gauss_grad_mag(gt)) ** 2).sum() / 1000.0)


def _largest_component(binary: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(binary, structure=np.ones((3, 3)))  # 8-connected
    if count == 0:
        return np.zeros_like(binary)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return labels == sizes.argmax()


def connectivity_error(pred: np.ndarray, gt: np.ndarray, step: float = 0.1) -> float:
    """Connectivity error (threshold step 0.1, theta 0.15), in thousands."""
    thresholds = np.arange(0, 1 + step, step)
    level = np.full(pred.shape, -1.0, dtype=np.float32)
    for i in range(1, len(thresholds)):
        omega = _largest_component((pred >= thresholds[i]) & (gt >= thresholds[i]))
        newly = (level == -1) & ~omega
        level[newly] = thresholds[i - 1]
    level[level == -1] = 1.0
    d_pred, d_gt = pred - level, gt - level
    phi_pred = 1 - d_pred * (d_pred >= 0.15)
    phi_gt = 1 - d_gt * (d_gt >= 0.15)
    return float(np.abs(phi_pred - phi_gt).sum() / 1000.0)


def errors(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """``{"SAD", "MSE", "Grad", "Conn"}`` of a predicted alpha against the ground truth."""
    p = np.asarray(pred, dtype=np.float32)
    return {"SAD": sad(p, gt), "MSE": mse(p, gt), "Grad": gradient_error(p, gt), "Conn": connectivity_error(p, gt)}
