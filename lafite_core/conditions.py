"""The training settings: how a batch becomes the generator's conditions (language-free, standard,
mixed), and the contrastive loss whose negatives come from every process's batch.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from lafite_core.distributed import Distributed, all_gather
from lafite_core.losses import LafiteLoss, Passes
from lafite_core.registry import Registry

ConditionFn = Callable[[dict, Callable, float], Tensor]
SETTINGS: Registry[ConditionFn] = Registry("training setting")


@SETTINGS.register("language_free")
def language_free_conditions(batch: dict, perturb: Callable, mixing_prob: float) -> Tensor:
    """Pseudo text features h' from the cached CLIP image features (paper Sec. 3.1)."""
    return perturb(batch["image_feature"], source="image")


@SETTINGS.register("standard")
def standard_conditions(batch: dict, perturb: Callable, mixing_prob: float) -> Tensor:
    """The feature of one random caption per sample (drawn by the dataset each time an item is
    read), with the official code's small perturbation (perturbation.text_alpha; 0 turns it off)."""
    if not bool(batch["has_caption"].all()):
        raise ValueError(
            "setting 'standard' needs a caption for every image; this batch has images "
            "without captions (use setting 'mixed' for partly captioned data)"
        )
    return perturb(batch["caption_feature"], source="text")


@SETTINGS.register("mixed")
def mixed_conditions(batch: dict, perturb: Callable, mixing_prob: float) -> Tensor:
    """Per sample: the pseudo feature with probability mixing_prob, else its caption feature
    (samples without a caption always take the pseudo feature)."""
    pseudo = perturb(batch["image_feature"], source="image")
    text = perturb(batch["caption_feature"], source="text")
    has_caption = batch["has_caption"].to(pseudo.device).bool()
    use_pseudo = (torch.rand(len(pseudo), device=pseudo.device) < mixing_prob) | ~has_caption
    return torch.where(use_pseudo[:, None], pseudo, text)


class _ScaleGradient(torch.autograd.Function):
    """Identity forward; multiplies the gradient by `scale` on the way back."""

    @staticmethod
    def forward(ctx, x: Tensor, scale: float) -> Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: Tensor):
        return grad * ctx.scale, None


class GatheredNegativesLoss(LafiteLoss):
    """LafiteLoss whose contrastive terms use the global batch of all processes as negatives.

    Each process all-gathers x and y, puts its own slice back with its gradient, and computes the
    loss of the whole global batch. Only the local slice carries gradient there, so summing over
    processes gives the full gradient; the gradient average (division by world_size) is undone by
    scaling the gradient by world_size. Reported values are the global means."""

    def __init__(self, G, D, encoder, cfg, dist: Distributed, main: Passes | None = None):
        super().__init__(G, D, encoder, cfg, main)
        self.dist = dist

    def _gather(self, x: Tensor) -> Tensor:
        parts = all_gather(x.detach(), self.dist)
        parts[self.dist.rank] = x
        return torch.cat(parts)

    def _contrastive(self, x: Tensor, y: Tensor) -> Tensor:
        losses = super()._contrastive(self._gather(x), self._gather(y))
        return _ScaleGradient.apply(losses, float(self.dist.world_size))
