"""How the networks' weights move: Adam with StyleGAN2's lazy-regularisation correction, and the
exponential moving average (EMA) of G's weights that gives G_ema (used for samples and evaluation).

A lazily regularised network takes interval + 1 Adam steps per interval instead of interval, so
its Adam gets lr * c and betas ** c with c = interval / (interval + 1) (StyleGAN2, Appendix B):
the effective step size and momentum stay as set.
"""

from __future__ import annotations

import torch


def lazy_adam(params, lr: float, betas: list[float], reg_interval: int | None) -> torch.optim.Adam:
    """Adam with StyleGAN2's lazy-regularisation correction c = interval / (interval + 1)."""
    c = reg_interval / (reg_interval + 1) if reg_interval else 1.0
    return torch.optim.Adam(params, lr=lr * c, betas=(betas[0] ** c, betas[1] ** c), eps=1e-8)


def ema_beta(batch_size: int, nimg: int, ema_kimg: float, ema_rampup: float | None) -> float:
    """Per-step decay for a half-life of ema_kimg thousand images (optionally ramped up early)."""
    ema_nimg = ema_kimg * 1000
    if ema_rampup is not None:
        ema_nimg = min(ema_nimg, nimg * ema_rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


@torch.no_grad()
def update_ema(G_ema: torch.nn.Module, G: torch.nn.Module, beta: float) -> None:
    """G_ema <- beta * G_ema + (1 - beta) * G for parameters; buffers are copied from G."""
    for p_ema, p in zip(G_ema.parameters(), G.parameters()):
        p_ema.copy_(p.detach().lerp(p_ema, beta))
    for b_ema, b in zip(G_ema.buffers(), G.buffers()):
        b_ema.copy_(b)
