"""Devices and mixed precision in one place: what a `device` option ("auto", "cpu", "cuda:1")
means, which low-precision dtype a device gets, and the context manager that turns autocast on
(or does nothing, so the fp32 path has no special cases).

CUDA runs fp16 by default (tensor cores on every generation; the networks clamp activations to
`conv_clamp` so fp16 cannot overflow) or bf16 on request where the GPU supports it. CPUs only
accelerate bf16. Full fp32 is the default everywhere; the networks opt in per block.
"""

from __future__ import annotations

import contextlib

import torch


def resolve_device(option: str | torch.device) -> torch.device:
    """ "auto" -> the first CUDA device if there is one, else the CPU; anything else as torch reads it."""
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(option)


def autocast_dtype(device: torch.device | str, prefer_bf16: bool = False) -> torch.dtype:
    """The autocast dtype for `device`: CPU -> bf16; CUDA -> fp16, or bf16 if asked and supported."""
    device = torch.device(device)
    if device.type == "cpu":
        return torch.bfloat16
    if device.type == "cuda" and prefer_bf16 and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def autocast(
    device: torch.device | str, enabled: bool, dtype: torch.dtype | None = None
) -> contextlib.AbstractContextManager:
    """`torch.autocast` for `device` (dtype from `autocast_dtype` unless given), or a no-op."""
    if not enabled:
        return contextlib.nullcontext()
    device = torch.device(device)
    return torch.autocast(device.type, dtype=dtype or autocast_dtype(device))
