"""Losses with an ignore mask: Dice + cross-entropy (softmax), BCE and Dice + BCE (sigmoid)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from emseg.errors import EmsegValueError


def soft_dice_loss(
    probs: torch.Tensor, onehot: torch.Tensor, mask: torch.Tensor, *, eps: float = 1e-5
) -> torch.Tensor:
    """1 - mean over channels of the soft Dice, summed over the batch and space (masked).

    `probs`, `onehot` (N, C, ...); `mask` broadcastable to them. A channel
    absent from both prediction and truth scores Dice 1 (eps / eps).
    """
    dims = (0, *range(2, probs.ndim))
    inter = (probs * onehot * mask).sum(dims)
    denom = ((probs + onehot) * mask).sum(dims)
    return 1.0 - ((2 * inter + eps) / (denom + eps)).mean()


def segmentation_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    *,
    kind: str,
    dice_weight: float = 1.0,
    class_weights: Sequence[float] | None = None,
) -> torch.Tensor:
    """Loss of one output.

    Parameters
    ----------
    logits : (N, C, ...) tensor
    target : tensor
        ``dice_ce`` / ``ce``: (N, ...) int64 classes, -1 = ignore;
        ``bce`` / ``dice_bce``: (N, C, ...) float in [0, 1].
    mask : tensor of float
        (N, ...) for softmax kinds, (N, C, ...) for sigmoid kinds; 0 = ignore.
    kind : {"dice_ce", "ce", "bce", "dice_bce"}
    class_weights : sequence of float, optional
        Per class (softmax) or per channel (sigmoid) weights of the CE / BCE term.
    """
    logits = logits.float()
    if kind in ("dice_ce", "ce"):
        w = (
            torch.as_tensor(class_weights, dtype=torch.float32, device=logits.device)
            if class_weights is not None
            else None
        )
        ce = F.cross_entropy(logits, target, weight=w, ignore_index=-1, reduction="none")
        if w is not None:
            norm = (w[target.clamp(min=0)] * mask).sum().clamp(min=1e-8)
        else:
            norm = mask.sum().clamp(min=1.0)
        loss = (ce * mask).sum() / norm
        if kind == "dice_ce" and dice_weight > 0:
            probs = torch.softmax(logits, dim=1)
            onehot = F.one_hot(target.clamp(min=0), logits.shape[1]).movedim(-1, 1).float()
            loss = loss + dice_weight * soft_dice_loss(probs, onehot, mask.unsqueeze(1))
        return loss
    if kind in ("bce", "dice_bce"):
        bce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        if class_weights is not None:
            shape = (1, -1) + (1,) * (logits.ndim - 2)
            bce = bce * torch.as_tensor(class_weights, dtype=torch.float32).view(shape)
        loss = (bce * mask).sum() / mask.sum().clamp(min=1.0)
        if kind == "dice_bce" and dice_weight > 0:
            loss = loss + dice_weight * soft_dice_loss(torch.sigmoid(logits), target, mask)
        return loss
    raise EmsegValueError(f"`kind` must be one of dice_ce, ce, bce, dice_bce; got {kind!r}.")


def downsample_target(
    target: torch.Tensor, mask: torch.Tensor, size: Sequence[int], *, softmax: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest-neighbour target and mask at a coarser deep-supervision output size."""
    if softmax:
        t = F.interpolate(target[:, None].float(), size=tuple(size), mode="nearest")[:, 0].long()
        m = F.interpolate(mask[:, None], size=tuple(size), mode="nearest")[:, 0]
    else:
        t = F.interpolate(target, size=tuple(size), mode="nearest")
        m = F.interpolate(mask, size=tuple(size), mode="nearest")
    return t, m
