"""Processes and devices for training: torchrun's process group, and the gradient, buffer and
tensor exchanges between processes.

Gradients are averaged with one all-reduce per phase (explicit, like StyleGAN2-ADA, rather than a
DDP wrapper, because the loss calls G.mapping / G.synthesis directly), so every process keeps
identical weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist
from torch import Tensor

from lafite_core.precision import resolve_device


@dataclass
class Distributed:
    """Where this process sits: rank among world_size processes, and its device."""

    rank: int
    world_size: int
    device: torch.device
    owns_group: bool = False  # this module created the process group and must destroy it

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_option: str) -> Distributed:
    """Read torchrun's environment; start the process group (nccl on CUDA, gloo on CPU) if needed."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(device_option)
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"parameter device = {device_option!r}, but this machine has no CUDA device")
        if device.index is None:
            device = torch.device("cuda", local_rank if world_size > 1 else torch.cuda.current_device())
        torch.cuda.set_device(device)
    owns = False
    if world_size > 1 and not torch_dist.is_initialized():
        torch_dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        owns = True
    return Distributed(rank, world_size, device, owns)


def average_gradients(module: torch.nn.Module, dist: Distributed, sanitize: bool) -> None:
    """Mean of every parameter's gradient over processes (one flat all-reduce).

    `sanitize` replaces NaN/inf gradients (rare fp16 overflows under mixed precision) by finite
    values, as StyleGAN2-ADA does; the loss itself is checked before backward, so a diverging run
    is still stopped."""
    params = [p for p in module.parameters() if p.requires_grad]
    if dist.world_size > 1:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
        flat = torch.cat([g.flatten() for g in grads])
        torch_dist.all_reduce(flat)
        flat /= dist.world_size
        for p, g in zip(params, flat.split([p.numel() for p in params])):
            p.grad = g.view_as(p)
    if sanitize:
        for p in params:
            if p.grad is not None:
                torch.nan_to_num(p.grad, nan=0.0, posinf=1e5, neginf=-1e5, out=p.grad)


def average_buffers(module: torch.nn.Module, dist: Distributed) -> None:
    """Float buffers (w_avg) are updated from each process's own samples; keep them identical."""
    if dist.world_size == 1:
        return
    for buffer in module.buffers():
        if buffer.is_floating_point():
            torch_dist.all_reduce(buffer)
            buffer /= dist.world_size


def broadcast_module(module: torch.nn.Module, dist: Distributed) -> None:
    """Start every process from rank 0's weights and buffers."""
    if dist.world_size == 1:
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        torch_dist.broadcast(tensor.data, src=0)


def all_gather(x: Tensor, dist: Distributed) -> list[Tensor]:
    out = [torch.empty_like(x) for _ in range(dist.world_size)]
    torch_dist.all_gather(out, x.contiguous())
    return out


def mean_over_processes(values: Tensor, dist: Distributed) -> Tensor:
    """The mean of `values` over processes (in place; unchanged with one process)."""
    if dist.world_size > 1:
        torch_dist.all_reduce(values)
        values /= dist.world_size
    return values


def broadcast_from_main(value: Tensor, dist: Distributed) -> Tensor:
    """Rank 0's `value` on every process (in place)."""
    if dist.world_size > 1:
        torch_dist.broadcast(value, src=0)
    return value


def close_distributed(dist: Distributed) -> None:
    """End the process group if init_distributed started it."""
    if dist.owns_group and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
        dist.owns_group = False
