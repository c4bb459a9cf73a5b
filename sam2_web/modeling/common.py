"""Small building blocks shared by the encoder, the heads and the memory modules, and the
mask-logit ops that the model and the video engine both apply.

Parameter names (``layers.{i}``, ``weight``/``bias``) follow the official checkpoints, so the
modules that embed these load official weights without key remapping.
"""

from __future__ import annotations

import copy
from typing import Callable, Dict, Tuple, Type, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

_T = TypeVar("_T")

_ACTIVATIONS: Dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "relu": F.relu,
    "gelu": F.gelu,
    "glu": F.glu,
}


def get_activation_fn(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    """Map an activation name from a config to its functional form.

    Args:
        name: one of ``"relu"``, ``"gelu"``, ``"glu"``.
    Returns:
        The matching ``torch.nn.functional`` callable.
    Raises:
        ValueError: for any other name (a broken model config).
    """
    try:
        return _ACTIVATIONS[name]
    except KeyError:
        known = ", ".join(sorted(_ACTIVATIONS))
        raise ValueError(
            f"Unknown activation {name!r} in the model config; use one of: {known}."
        ) from None


def get_clones(module: nn.Module, n: int) -> nn.ModuleList:
    """Return ``n`` independent deep copies of ``module`` (no shared parameters)."""
    return nn.ModuleList(copy.deepcopy(module) for _ in range(n))


class DropPath(nn.Module):
    """Stochastic depth: drop whole residual branches per sample while training.

    In eval mode (and with ``drop_prob == 0``) it is the identity, which is all inference needs.
    """

    def __init__(self, drop_prob: float = 0.0, scale_by_keep: bool = True) -> None:
        """
        Args:
            drop_prob: probability of zeroing the branch of one sample.
            scale_by_keep: divide kept branches by the keep probability so the expectation holds.
        """
        super().__init__()
        self.drop_prob = drop_prob
        self.scale_by_keep = scale_by_keep

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return ``x`` with the branch of random samples zeroed (training only)."""
        if not self.training or self.drop_prob == 0.0:
            return x
        keep = 1.0 - self.drop_prob
        # One Bernoulli draw per sample, broadcast over every other dim.
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        if keep > 0.0 and self.scale_by_keep:
            mask.div_(keep)
        return x * mask


class MLP(nn.Module):
    """A stack of ``num_layers`` linear layers with an activation between them."""

    def __init__(
        self,
        input_dim: int,
        hidden_dim: int,
        output_dim: int,
        num_layers: int,
        activation: Type[nn.Module] = nn.ReLU,
        sigmoid_output: bool = False,
    ) -> None:
        """
        Args:
            input_dim: width of the input features.
            hidden_dim: width of every hidden layer.
            output_dim: width of the output.
            num_layers: number of ``nn.Linear`` layers (>= 1).
            activation: activation class, instantiated once and applied after every hidden layer.
            sigmoid_output: squash the output through a sigmoid.
        """
        super().__init__()
        self.num_layers = num_layers
        widths = [input_dim] + [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList(
            nn.Linear(w_in, w_out) for w_in, w_out in zip(widths[:-1], widths[1:])
        )
        self.sigmoid_output = sigmoid_output
        self.act = activation()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stack to the last dim of ``x``."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = self.act(x)
        if self.sigmoid_output:
            x = torch.sigmoid(x)
        return x


class LayerNorm2d(nn.Module):
    """LayerNorm over the channel dim of a ``(B, C, H, W)`` tensor."""

    def __init__(self, num_channels: int, eps: float = 1e-6) -> None:
        """
        Args:
            num_channels: C, the size of the normalised dim.
            eps: added to the variance before the square root.
        """
        super().__init__()
        self.weight = nn.Parameter(torch.ones(num_channels))
        self.bias = nn.Parameter(torch.zeros(num_channels))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Normalise ``x`` (B, C, H, W) per pixel across channels, then scale and shift."""
        # Written out (rather than permuting to channels-last for F.layer_norm) to keep the
        # exact arithmetic of the original and stay channels-first.
        centred = x - x.mean(1, keepdim=True)
        var = centred.pow(2).mean(1, keepdim=True)
        normed = centred / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * normed + self.bias[:, None, None]


def get_1d_sine_pe(pos_inds: torch.Tensor, dim: int, temperature: float = 10000) -> torch.Tensor:
    """Sinusoidal embedding of scalar positions (used for temporal object-pointer positions).

    Args:
        pos_inds: positions, any shape ``S`` (float).
        dim: embedding width (even): the first half holds sines, the second half cosines.
        temperature: base of the geometric frequency progression.
    Returns:
        Tensor of shape ``S + (dim,)``.
    """
    half = dim // 2
    steps = torch.arange(half, dtype=torch.float32, device=pos_inds.device)
    # Consecutive pairs share a frequency, as in the original Transformer.
    freqs = temperature ** (2 * (steps // 2) / half)
    angles = pos_inds.unsqueeze(-1) / freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def select_closest_cond_frames(
    frame_idx: int, cond_frame_outputs: Dict[int, _T], max_cond_frame_num: int
) -> Tuple[Dict[int, _T], Dict[int, _T]]:
    """Pick the conditioning (prompted) frames nearest in time to ``frame_idx``.

    The pick always includes the nearest frame before ``frame_idx`` and the nearest at or after
    it (when they exist), then fills up with the temporally closest remaining ones.

    Args:
        frame_idx: the frame being tracked.
        cond_frame_outputs: frame index -> that frame's output.
        max_cond_frame_num: how many to keep; ``-1`` keeps them all. Otherwise must be >= 2.
    Returns:
        ``(selected, unselected)``: two dicts partitioning ``cond_frame_outputs``.
    Raises:
        ValueError: if ``max_cond_frame_num`` is 0 or 1 (cannot hold both neighbours).
    """
    if max_cond_frame_num == -1 or len(cond_frame_outputs) <= max_cond_frame_num:
        return cond_frame_outputs, {}
    if max_cond_frame_num < 2:
        raise ValueError(
            f"max_cond_frame_num must be -1 or at least 2, got {max_cond_frame_num}; "
            "fix the model config."
        )

    selected: Dict[int, _T] = {}
    before = [t for t in cond_frame_outputs if t < frame_idx]
    after = [t for t in cond_frame_outputs if t >= frame_idx]
    if before:
        selected[max(before)] = cond_frame_outputs[max(before)]
    if after:
        selected[min(after)] = cond_frame_outputs[min(after)]

    # sorted() is stable, so ties in distance keep the dict's insertion order.
    rest = sorted(
        (t for t in cond_frame_outputs if t not in selected),
        key=lambda t: abs(t - frame_idx),
    )
    for t in rest[: max_cond_frame_num - len(selected)]:
        selected[t] = cond_frame_outputs[t]
    unselected = {t: v for t, v in cond_frame_outputs.items() if t not in selected}
    return selected, unselected


def non_overlapping(scores: torch.Tensor, suppressed_max: float = -10.0) -> torch.Tensor:
    """Keep, at every pixel, only the highest-scoring object as foreground.

    Args:
        scores: (N, 1, H, W) mask logits of N objects on one frame.
        suppressed_max: the other objects' logits are clamped to at most this value
            (sigmoid(-10) ~ 4.5e-5: firmly background).
    Returns:
        A tensor like ``scores``; ``scores`` itself when N <= 1.
    """
    if scores.size(0) <= 1:
        return scores
    winner = scores.argmax(dim=0, keepdim=True)
    index = torch.arange(scores.size(0), device=scores.device).view(-1, 1, 1, 1)
    return torch.where(winner == index, scores, scores.clamp(max=suppressed_max))
